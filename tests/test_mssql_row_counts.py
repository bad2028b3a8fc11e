"""Row counts the engine decides on survive SQL Server's NOCOUNT.

mssql-django sends ``SET NOCOUNT ON`` in front of every ORM insert that
returns its id and never switches it off; its UPDATE and DELETE compilers put
``SET NOCOUNT OFF`` in front of their own statements (mssql/compiler.py,
``SQLInsertCompiler.as_sql``, ``SQLUpdateCompiler.as_sql``). After the first
audit event, every raw UPDATE on that connection then reports
``cursor.rowcount == -1`` through ODBC, while ``@@ROWCOUNT`` in the same batch
still gives the count:
https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql
https://learn.microsoft.com/sql/t-sql/functions/rowcount-transact-sql

No SQL Server runs here. The control database (SQLite) is put behind a
stand-in session that behaves as above, and the real lease and audit-chain
code runs on it with the SQL Server backend selected for that alias.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from django.db import connections
from django.db.models.sql import compiler

from archival import engine
from archival.engine import leases
from archival.engine.errors import LeaseLost
from archival.engine.runner import PHASE_ORDER
from governance.chain_verification import verify_chains
from governance.models import AuditEvent, Phase, RecoveryState

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CONTROL = "default"
ROWCOUNT_SUFFIX = "; SELECT @@ROWCOUNT"
_LEADING_SET = re.compile(r"\s*SET NOCOUNT (ON|OFF)\s*;\s*", re.IGNORECASE)


class NocountSession:
    """The session setting, shared by every cursor of the connection."""

    nocount = False


class NocountCursor:
    """A SQLite cursor reporting row counts as SQL Server does through ODBC.

    Leading ``SET NOCOUNT ON|OFF`` statements change the session; DML under
    NOCOUNT reports ``rowcount`` -1; a trailing ``SELECT @@ROWCOUNT`` answers
    the real count, after a result without columns (the statement's own
    count) when NOCOUNT is off.
    """

    def __init__(self, real, session: NocountSession):
        self.real = real
        self.session = session
        self._dml = False
        self._results: list | None = None

    def execute(self, sql, params=None):
        while match := _LEADING_SET.match(sql):
            self.session.nocount = match.group(1).upper() == "ON"
            sql = sql[match.end() :]
        counted = sql.endswith(ROWCOUNT_SUFFIX)
        if counted:
            sql = sql[: -len(ROWCOUNT_SUFFIX)]
        assert "@@" not in sql and "NOCOUNT" not in sql.upper(), sql
        self.real.execute(sql, params)
        self._dml = sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
        self._results = None
        if counted:
            self._results = ([] if self.session.nocount else ["count"]) + [(self.real.rowcount,)]
        return self

    def executemany(self, sql, param_list):
        assert not _LEADING_SET.match(sql)
        self._dml, self._results = True, None
        return self.real.executemany(sql, param_list)

    @property
    def rowcount(self) -> int:
        return -1 if self._dml and self.session.nocount else self.real.rowcount

    @property
    def description(self):
        if self._results is None:
            return self.real.description
        return None if self._results[0] == "count" else (("", None, None, None, None, None, None),)

    def nextset(self):
        if self._results is None:
            return None
        self._results = self._results[1:]
        return bool(self._results) or None

    def fetchone(self):
        if self._results is None:
            return self.real.fetchone()
        row, self._results = self._results[0], ["done"]
        assert row != "count", "fetchone on a result without rows"
        return row

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def sql_server_control(monkeypatch):
    """The control connection behaves as a mssql-django connection to SQL Server does."""
    connection = connections[CONTROL]
    # Opened as SQLite first: the connection_created hooks register the
    # SQLite functions the control database's triggers call.
    connection.ensure_connection()
    session = NocountSession()
    create_cursor = connection.create_cursor
    monkeypatch.setattr(connection, "create_cursor", lambda name=None: NocountCursor(create_cursor(name), session))
    monkeypatch.setattr(connection, "vendor", "microsoft")  # backend_for: the SQL Server backend

    def prefixed(original, setting):
        def as_sql(self, *args, **kwargs):
            sql = original(self, *args, **kwargs)
            if self.connection.alias != CONTROL:
                return sql
            if isinstance(sql, list):  # the insert compiler: [(sql, params), ...]
                return [(f"{setting}; {s}", p) for s, p in sql]
            return (f"{setting}; {sql[0]}", sql[1]) if sql[0] else sql

        return as_sql

    for name, setting in (
        ("SQLInsertCompiler", "SET NOCOUNT ON"),
        ("SQLUpdateCompiler", "SET NOCOUNT OFF"),
        ("SQLDeleteCompiler", "SET NOCOUNT OFF"),
    ):
        cls = getattr(compiler, name)
        monkeypatch.setattr(cls, "as_sql", prefixed(cls.as_sql, setting))
    yield session
    connection.close()  # the next test opens a plain SQLite connection


def _claimed_run():
    run = engine.start_run(cutoff=date(2026, 11, 25), tables=["PriceHistory"])
    return RecoveryState.objects.get(run=run)


def test_the_stand_in_hides_a_raw_update_count_after_an_orm_insert(demo, sql_server_control):
    state = _claimed_run()
    AuditEvent.objects.record("probe", actor="test")
    assert sql_server_control.nocount
    with connections[CONTROL].cursor() as cur:
        cur.execute(f"UPDATE {RecoveryState._meta.db_table} SET attempts = attempts WHERE id = %s", [state.pk])
        assert cur.rowcount == -1


def test_a_held_lease_is_not_won_by_another_worker_under_nocount(demo, sql_server_control):
    state = _claimed_run()
    working = PHASE_ORDER[:-1]
    assert leases.tables.claim(state.pk, "host:1:a", where={"phase": working}) is not None
    AuditEvent.objects.record("probe", actor="host:1:a")  # an ORM insert: NOCOUNT is on from here
    assert sql_server_control.nocount

    assert leases.tables.claim(state.pk, "host:2:b", where={"phase": working}) is None
    assert RecoveryState.objects.get(pk=state.pk).lease_owner == "host:1:a"


def test_a_lost_lease_is_noticed_on_renewal_under_nocount(demo, sql_server_control):
    state = leases.tables.claim(_claimed_run().pk, "host:1:a", where={"phase": PHASE_ORDER[:-1]})
    AuditEvent.objects.record("probe", actor="host:1:a")
    RecoveryState.objects.filter(pk=state.pk).update(lease_owner="host:2:b")  # taken over meanwhile

    with pytest.raises(LeaseLost):
        leases.tables.renew(state, "host:1:a", archived_count=5)
    assert RecoveryState.objects.get(pk=state.pk).archived_count != 5


def test_a_phase_change_appends_its_audit_event_to_the_chain_under_nocount(demo, sql_server_control):
    state = leases.tables.claim(_claimed_run().pk, "host:1:a", where={"phase": PHASE_ORDER[:-1]})
    AuditEvent.objects.record("probe", actor="host:1:a")
    events = AuditEvent.objects.count()

    leases.tables.renew(
        state, "host:1:a", phase=Phase.MARKED,
        audit=dict(action="table.marked", actor="host:1:a", table_label=state.table_label),
    )  # fmt: skip

    assert RecoveryState.objects.get(pk=state.pk).phase == Phase.MARKED
    assert AuditEvent.objects.count() == events + 1
    assert verify_chains(write_log=False).ok
