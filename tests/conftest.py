"""Shared test set-up: data folders, the protected-table flush, connections reopened on the test databases.

Personas, fixtures and helpers of each area live in ``tests/<area>_fixtures.py``
(the demo topology and the engine's invariant checks in ``engine_fixtures``),
registered below as plugins; this file holds the hooks every suite needs.
"""

from __future__ import annotations

import contextlib

import pytest
from django.conf import settings
from django.core.management.commands import flush as flush_command
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.signals import connection_created

# The fixtures of each area, visible to every test module by name (a test
# module imports only the helpers and constants it calls). A fixture name
# means one thing across these modules: pytest would silently pick one of
# two fixtures of the same name.
pytest_plugins = [
    "tests.admin_fixtures",
    "tests.disposal_fixtures",
    "tests.engine_fixtures",
    "tests.pacing_fixtures",
    "tests.restore_fixtures",
    "tests.sched_fixtures",
    "tests.search_fixtures",
]


def pytest_configure(config):
    # SQLite test databases are files under DATA_DIR/test (subprocesses of the
    # crash tests open them too); the folder must exist before Django creates them.
    (settings.DATA_DIR / "test").mkdir(parents=True, exist_ok=True)
    settings.ARCHIVAL["LOG_DIR"].mkdir(parents=True, exist_ok=True)
    # Every persona's password is hashed when it is made, and PBKDF2's
    # million rounds cost about half a second each on our 2-core machines
    # (five personas a test). What is tested is who may do what, not the
    # hasher: a fast one keeps login real and the suite inside its budget.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _ansi_quotes(sender, connection, **kwargs):
    # Tests write their fixture SQL with standard double-quoted identifiers;
    # MariaDB reads them so with ANSI_QUOTES (the engine quotes with backticks).
    if connection.vendor == "mysql":
        with connection.connection.cursor() as cur:
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")


connection_created.connect(_ansi_quotes, dispatch_uid="tests.ansi_quotes")


# Django's flush between transactional tests deletes every row; the triggers
# that protect holds and audit events would refuse it. On SQLite they ask the
# connection (allow_test_flush); on PostgreSQL the flush is a TRUNCATE, which
# fires no row trigger; on MariaDB the flush is a DELETE and the trigger asks
# nothing of the session, so the flush lifts the triggers and puts them back.
_original_flush = flush_command.Command.handle


@contextlib.contextmanager
def _mariadb_triggers_lifted(alias: str):
    from archival.disposal.triggers import drop_triggers, ensure_triggers

    connection = connections[alias]
    if connection.vendor != "mysql":
        yield
        return
    drop_triggers(connection, alias)
    try:
        yield
    finally:
        ensure_triggers(connection, alias)


def _flush_allowed(self, *args, **kwargs):
    from archival.disposal.triggers import allow_test_flush

    with allow_test_flush(), _mariadb_triggers_lifted(kwargs.get("database", DEFAULT_DB_ALIAS)):
        return _original_flush(self, *args, **kwargs)


flush_command.Command.handle = _flush_allowed


@pytest.fixture(autouse=True)
def _fresh_pacing_settings():
    """Each test reads the scheduler settings and watched replicas afresh (a flush sends no signal)."""
    from archival.engine.pacing import forget

    forget()
    yield
    forget()


@pytest.fixture
def workers_running(db):
    """A worker cluster runs: its scheduler has just moved the sweeper's next run forward.

    The test database's schedules are created once per session, so without
    this a test that expects healthy workers fails once the suite has run
    longer than the sweeper's interval.
    """
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone
    from django_q.models import Schedule

    from archival.schedules import SWEEP_SCHEDULE

    minutes = settings.ARCHIVAL_SCHEDULER["SWEEP_MINUTES"]
    Schedule.objects.filter(name=SWEEP_SCHEDULE).update(next_run=timezone.now() + timedelta(minutes=minutes))


@pytest.fixture(scope="session", autouse=True)
def _reattach_after_setup(django_db_setup, django_db_blocker):
    """Reopen connections once every test database exists.

    The archive connection ATTACHes the source files when it opens; if it
    opened while the test databases were still being created, it attached the
    non-test files. Closing makes the next use attach the test files.
    """
    with django_db_blocker.unblock():
        for alias in connections:
            connections[alias].close()
        # On PostgreSQL the read-only alias logs in as a SELECT-only role; it
        # must exist before any test opens that connection.
        readonly = connections["archive_readonly"]
        if readonly.vendor == "postgresql" and readonly.settings_dict.get("USER") != connections[
            "archive"
        ].settings_dict.get("USER"):
            from archival.search.readonly import create_readonly_role

            create_readonly_role(role=readonly.settings_dict["USER"], using="archive")
    yield
    # Subprocesses and live-server threads may leave sessions open on the
    # PostgreSQL test databases; Django cannot drop a database in use.
    # Several aliases share one database: close them all first, then end the
    # other sessions once per database, so no alias of ours is cut mid-use.
    with django_db_blocker.unblock():
        for alias in connections:
            connections[alias].close()
        ended = set()
        for alias in connections:
            conn = connections[alias]
            name = conn.settings_dict["NAME"]
            if conn.vendor != "postgresql" or alias == "archive_readonly" or name in ended:
                continue
            ended.add(name)
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            conn.close()
