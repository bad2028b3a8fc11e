"""Database triggers refusing DELETE on holds, hold keys and audit events.

Holds are released, never deleted; the audit trail is append-only. The
database itself refuses the DELETE, whatever path issues it (admin, bulk
action, queryset, cascade, raw SQL):

* PostgreSQL: a ``BEFORE DELETE ... FOR EACH ROW`` trigger raising an
  exception. (TRUNCATE is not a row delete; it needs table ownership, which
  the application role should not have in production — see docs/disposal.md.)
* SQLite: a ``BEFORE DELETE`` trigger ``RAISE(ABORT)``. Its ``WHEN`` clause
  calls ``archival_purge_allowed()``, a function this process registers on
  each SQLite connection: it returns 0 except inside ``allow_test_flush()``,
  which only the test suite uses around Django's flush between transactional
  tests. Any other client (the sqlite3 shell, another program) lacks the
  function, so its DELETE fails too: the trigger fails closed.
* MariaDB: ``SIGNAL SQLSTATE '45000'`` in a ``BEFORE DELETE`` trigger.
* SQL Server: ``INSTEAD OF DELETE`` triggers that sql/08_signing_and_grants.sql
  installs as the DBA; the migration adds none.

Each engine's statements come from its backend (``refuse_delete_trigger_sql``).

``ensure_triggers(connection)`` is idempotent; the migration runs it, and
running it again after a later migration rebuilt one of the tables (SQLite
rebuilds tables to alter them, dropping their triggers) restores them.
"""

from __future__ import annotations

import contextlib

from archival.backends import backend_for
from archival.backends.sqlite import purge_allowed

# (database role, table) -> message. Holds live in the archive database, the
# audit trail in the control database.
PROTECTED = {
    "archive": {
        "governance_hold": "holds are never deleted; release them",
        "governance_holdkey": "hold keys are never deleted; release the hold",
    },
    "default": {
        "governance_auditevent": "the audit trail is append-only",
    },
}


@contextlib.contextmanager
def allow_test_flush():
    """Let Django's test flush empty protected SQLite tables (tests only)."""
    token = purge_allowed.set(True)
    try:
        yield
    finally:
        purge_allowed.reset(token)


def trigger_name(table: str) -> str:
    return f"{table}_no_delete"


def _backend(connection):
    # The migration hands in its schema editor's connection: the statements
    # run on that one.
    backend = backend_for(connection.alias)
    backend.connection = connection
    return backend


def ensure_triggers(connection, role: str) -> list[str]:
    """Create the DELETE-refusing triggers for ``role`` ("archive"/"default"); returns their names."""
    tables = PROTECTED.get(role, {})
    existing = set(connection.introspection.table_names())
    backend = _backend(connection)
    made = []
    with connection.cursor() as cur:
        for table, message in tables.items():
            if table not in existing:
                continue
            name = trigger_name(table)
            statements = backend.refuse_delete_trigger_sql(table, name, message)
            for sql in statements:
                cur.execute(sql)
            if statements:
                made.append(name)
    return made


def drop_triggers(connection, role: str) -> None:
    backend = _backend(connection)
    with connection.cursor() as cur:
        for table in PROTECTED.get(role, {}):
            exists = table in connection.introspection.table_names()
            for sql in backend.drop_trigger_sql(table, trigger_name(table), exists):
                cur.execute(sql)
