"""The scheduler settings stay one row on every engine, MariaDB included, old installs too.

0005_sched used to put CHECK (id = 1) on the table, which MariaDB refuses
(a CHECK on an AUTO_INCREMENT column); 0014 replaces it by a unique column
that can only be true, and drops the old CHECK where an older install has it
(SQLite and PostgreSQL; MariaDB never accepted it).
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
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


def test_an_install_with_the_old_check_loses_it_and_keeps_one_row():
    if connection.vendor == "sqlite":
        pytest.skip("SQLite cannot add a CHECK to an existing table; the PostgreSQL leg runs this")
    migrate_to(BEFORE)
    try:
        add_old_check = (
            f"ALTER TABLE {connection.ops.quote_name(TABLE)} ADD CONSTRAINT schedulersettings_singleton CHECK (id = 1)"
        )
        if connection.vendor == "mysql":
            # The server refuses the old CHECK, so no MariaDB install has it:
            # 0014 finds nothing to drop there and only adds the new rule.
            with pytest.raises(DatabaseError, match="AUTO_INCREMENT"), connection.cursor() as cursor:
                cursor.execute(add_old_check)
        else:
            with connection.schema_editor() as editor:
                editor.execute(add_old_check)
            assert "schedulersettings_singleton" in constraints()
        migrate_to(AFTER)
        assert "schedulersettings_singleton" not in constraints()
        assert "schedulersettings_one_row" in constraints()
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
