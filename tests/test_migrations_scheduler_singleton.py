"""The scheduler settings stay one row on every engine, MariaDB included, old installs too.

0005_sched used to put CHECK (id = 1) on the table, which MariaDB refuses
(a CHECK on an AUTO_INCREMENT column); 0014 replaces it by a unique column
that can only be true, and drops the old CHECK where an older install has it
(SQLite and PostgreSQL; MariaDB never accepted it).
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.db.migrations.executor import MigrationExecutor

from governance.models import SchedulerSettings

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE, AFTER = ("governance", "0013_run_occurrence"), ("governance", "0014_scheduler_singleton")
TABLE = SchedulerSettings._meta.db_table


def migrate_to(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def constraints() -> dict:
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, TABLE)


def model_at(target, *constraints):
    """The scheduler settings model as the migration ``target`` left it, with ``constraints`` added."""
    state = MigrationExecutor(connection).loader.project_state(target)
    for constraint in constraints:
        state.add_constraint("governance", "schedulersettings", constraint)
    return state.apps.get_model("governance", "SchedulerSettings")


def test_an_install_with_the_old_check_loses_it_and_keeps_its_row():
    migrate_to(BEFORE)
    try:
        old_check = models.CheckConstraint(condition=models.Q(pk=1), name="schedulersettings_singleton")
        old_model = model_at(BEFORE, old_check)
        old_model.objects.update_or_create(pk=1, defaults={"paused": True})
        if connection.vendor == "mysql":
            # The server refuses the old CHECK, so no MariaDB install has it:
            # 0014 finds nothing to drop there and only adds the new rule.
            with pytest.raises(DatabaseError, match="AUTO_INCREMENT"), connection.schema_editor() as editor:
                editor.add_constraint(old_model, old_check)
        else:
            with connection.schema_editor() as editor:
                editor.add_constraint(old_model, old_check)
            assert "schedulersettings_singleton" in constraints()
        migrate_to(AFTER)
        assert "schedulersettings_singleton" not in constraints()
        assert "schedulersettings_one_row" in constraints()
        assert list(model_at(AFTER).objects.values_list("pk", "paused", "singleton")) == [(1, True, True)]
    finally:
        migrate_to(("governance", sorted_leaf()))


def sorted_leaf() -> str:
    executor = MigrationExecutor(connection)
    return max(name for app, name in executor.loader.graph.leaf_nodes() if app == "governance")


def test_a_second_row_is_refused_by_the_database():
    SchedulerSettings.objects.current()
    with pytest.raises(IntegrityError), transaction.atomic():
        SchedulerSettings.objects.bulk_create([SchedulerSettings(pk=2)])
    assert SchedulerSettings.objects.count() == 1
