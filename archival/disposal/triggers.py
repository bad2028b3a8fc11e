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

``ensure_triggers(connection)`` is idempotent; the migration runs it, and
running it again after a later migration rebuilt one of the tables (SQLite
rebuilds tables to alter them, dropping their triggers) restores them.
"""

from __future__ import annotations

import contextlib
import contextvars

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

_purge_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar("archival_purge_allowed", default=False)


@contextlib.contextmanager
def allow_test_flush():
    """Let Django's test flush empty protected SQLite tables (tests only)."""
    token = _purge_allowed.set(True)
    try:
        yield
    finally:
        _purge_allowed.reset(token)


def _purge_allowed_sql() -> int:
    return 1 if _purge_allowed.get() else 0


def register_sqlite_function(sender, connection, **kwargs) -> None:
    """connection_created hook: give SQLite connections archival_purge_allowed()."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("archival_purge_allowed", 0, _purge_allowed_sql)


def trigger_name(table: str) -> str:
    return f"{table}_no_delete"


def ensure_triggers(connection, role: str) -> list[str]:
    """Create the DELETE-refusing triggers for ``role`` ("archive"/"default"); returns their names."""
    tables = PROTECTED.get(role, {})
    existing = set(connection.introspection.table_names())
    made = []
    q = connection.ops.quote_name
    with connection.cursor() as cur:
        for table, message in tables.items():
            if table not in existing:
                continue
            name = trigger_name(table)
            if connection.vendor == "sqlite":
                cur.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {q(name)} BEFORE DELETE ON {q(table)} "
                    f"WHEN archival_purge_allowed() = 0 "
                    f"BEGIN SELECT RAISE(ABORT, '{message}: DELETE refused'); END"
                )
            elif connection.vendor == "postgresql":
                cur.execute(
                    "CREATE OR REPLACE FUNCTION governance_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $fn$ "
                    "BEGIN RAISE EXCEPTION '%: DELETE refused on %', TG_ARGV[0], TG_TABLE_NAME "
                    "USING ERRCODE = 'insufficient_privilege'; END $fn$"
                )
                cur.execute(f"DROP TRIGGER IF EXISTS {q(name)} ON {q(table)}")
                cur.execute(
                    f"CREATE TRIGGER {q(name)} BEFORE DELETE ON {q(table)} "
                    f"FOR EACH ROW EXECUTE FUNCTION governance_refuse_delete('{message}')"
                )
            elif connection.vendor == "mysql":
                cur.execute(f"DROP TRIGGER IF EXISTS {q(name)}")
                cur.execute(
                    f"CREATE TRIGGER {q(name)} BEFORE DELETE ON {q(table)} FOR EACH ROW "
                    f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}: DELETE refused'"
                )
            else:
                continue
            made.append(name)
    return made


def drop_triggers(connection, role: str) -> None:
    q = connection.ops.quote_name
    with connection.cursor() as cur:
        for table in PROTECTED.get(role, {}):
            name = trigger_name(table)
            if connection.vendor == "postgresql":
                if table in connection.introspection.table_names():
                    cur.execute(f"DROP TRIGGER IF EXISTS {q(name)} ON {q(table)}")
            else:
                cur.execute(f"DROP TRIGGER IF EXISTS {q(name)}")
