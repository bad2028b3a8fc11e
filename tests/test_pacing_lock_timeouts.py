"""Every statement of a slice is bounded: a locked source table makes the engine back off, not hang.

A second session holds an exclusive lock on the source table (PostgreSQL
LOCK TABLE ... ACCESS EXCLUSIVE, MariaDB LOCK TABLES ... WRITE, SQLite BEGIN
EXCLUSIVE on the source file), as another application's long transaction
would. The engine's batch gives up after ARCHIVAL_LOCK_TIMEOUT_MS, rolls
back, retries with half the rows, and past ARCHIVAL_LOCK_RETRIES leaves the
table WAITING (not FAILED) with a clear reason; a resume then finishes it and
the source ∪ archive is the original.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connections

from archival.engine import advance_table, resume_run, run_cycle, start_run
from archival.engine.txn import bounded_transaction
from archival.monitoring import health_check
from archival.retry import is_wait_timeout
from governance.models import AuditEvent, BatchLedger, Phase, RecoveryState
from tests.admin_fixtures import SOURCE, create_source_table, drop_source_table, make_config
from tests.engine_fixtures import drop_archive_tables, snapshot, union_check
from tests.ops_fixtures import LockHolder

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
TABLE = "locked_trade"
CUTOFF = dt.date(2026, 1, 1)


@pytest.fixture
def bounded(settings):
    settings.ARCHIVAL_LOCK_TIMEOUT_MS = 300
    settings.ARCHIVAL = {**settings.ARCHIVAL, "LOCK_RETRIES": 3, "STATEMENT_TIMEOUT_MS": 5000}
    return settings


@pytest.fixture
def table(transactional_db, bounded):
    create_source_table(table=TABLE)
    schema = {"mysql": connections[SOURCE].settings_dict["NAME"]}.get(connections[SOURCE].vendor)
    config = make_config(
        table_name=TABLE, months_retention_source=1, batch_size=4, **({"schema_name": schema} if schema else {})
    )
    original = snapshot([config])
    yield config, original
    drop_source_table(table=TABLE)
    drop_archive_tables()


def lock_after_first_batch(config, holders: list, seconds: float | None = None):
    def on_batch(_moved):
        if not holders:
            holders.append(LockHolder(SOURCE, TABLE, config.schema_name, seconds=seconds).start())

    return on_batch


def test_a_statement_waiting_on_a_lock_gives_up_after_the_lock_timeout(table):
    config, _ = table
    holder = LockHolder(SOURCE, TABLE, config.schema_name).start()
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as raised:
            with bounded_transaction(SOURCE, write=True), connections[SOURCE].cursor() as cur:
                cur.execute(f"DELETE FROM {connections[SOURCE].ops.quote_name(TABLE)}")
    finally:
        holder.release()
    waited = time.monotonic() - started
    assert is_wait_timeout(raised.value), raised.value
    assert waited < 5, f"waited {waited:.1f}s for a 0.3 s lock timeout"


def test_a_table_whose_locks_stay_taken_waits_with_a_reason_and_a_resume_finishes_it(table):
    config, original = table
    holders: list[LockHolder] = []
    started = time.monotonic()
    try:
        result = run_cycle(cutoff=CUTOFF, on_batch=lock_after_first_batch(config, holders))
        took = time.monotonic() - started
        state = RecoveryState.objects.get(run_id=result.run_id)
        assert state.phase == Phase.WAITING, state.last_error
        assert state.waiting_for == f"lock:{config}"
        assert "could not get its locks within 300 ms" in state.last_error
        assert state.archived_count == 4  # the first batch committed before the lock was taken
        (waiting,) = result.waiting
        assert waiting.waiting_for == f"lock:{config}" and not result.ok
        # Three tries (4, 2, 1 rows) with backoff between them, not a hang.
        assert took < 30
        retries = AuditEvent.objects.filter(action="batch.lock_timeout", run_id=result.run_id)
        assert [e.details["next_batch_size"] for e in retries.order_by("pk")] == [2, 1]
        assert not AuditEvent.objects.filter(action="table.failed").exists()
        assert not AuditEvent.objects.filter(action="alert.sent", details__kind="table_failed").exists()
    finally:
        for holder in holders:
            holder.release()
    resumed = resume_run(result.run_id)
    assert resumed.ok, [(t.label, t.phase, t.error) for t in resumed.tables]
    assert union_check([config], original) == {str(config): (0, 10)}


def test_a_batch_that_gets_its_locks_after_a_timeout_carries_on_smaller_then_grows_back(table, bounded):
    config, original = table
    holders: list[LockHolder] = []
    # The lock outlasts one lock timeout (MariaDB's is whole seconds: 1 s)
    # but not the retries.
    bounded.ARCHIVAL = {**bounded.ARCHIVAL, "LOCK_RETRIES": 8}
    result = run_cycle(cutoff=CUTOFF, on_batch=lock_after_first_batch(config, holders, seconds=1.5))
    for holder in holders:
        holder.release()
    assert result.ok, [(t.label, t.phase, t.error) for t in result.tables]
    state = RecoveryState.objects.get(run_id=result.run_id)
    assert state.phase == Phase.COMPLETED and state.last_error == ""
    assert AuditEvent.objects.filter(action="batch.lock_timeout", run_id=result.run_id).exists()
    assert union_check([config], original) == {str(config): (0, 10)}


def test_a_slice_ends_at_its_time_box_while_the_table_is_locked(table, bounded):
    config, original = table
    bounded.ARCHIVAL = {**bounded.ARCHIVAL, "LOCK_RETRIES": 20}
    run = start_run(cutoff=CUTOFF)
    state = RecoveryState.objects.get(run=run)
    advance_table(state.pk, until=Phase.MARKED)
    holders: list[LockHolder] = []
    try:
        started = time.monotonic()
        result = advance_table(state.pk, time_box=2.0, on_batch=lock_after_first_batch(config, holders))
        took = time.monotonic() - started
    finally:
        for holder in holders:
            holder.release()
    # Back-offs are cut short by the time box: the slice ends within it and
    # one lock timeout, cleanly, with the table resumable by the next slice.
    assert holders and took < 2.0 + 1.5, took
    assert not result.done and not result.error and result.moved == 4
    state.refresh_from_db()
    assert state.phase == Phase.ARCHIVING and state.lease_owner == ""
    assert "could not get its locks within 300 ms" in state.last_error
    # What the operator sees meanwhile.
    check = health_check()
    assert any("backing off" in m and str(config) in m for m in check.messages), check.messages
    # The smaller batch is kept (archival.engine.pacing): the next slice
    # starts with it, not with the configured 4 rows again.
    smaller = state.pacing["batch_size"]
    assert smaller < 4 and state.pacing["doing"] == "lock" and state.pacing["seconds"]["lock"] > 0
    finished = advance_table(state.pk)
    assert finished.done and finished.phase == Phase.COMPLETED
    second = BatchLedger.objects.get(run_id=run.pk, batch_no=2)
    assert second.row_count == smaller
    assert union_check([config], original) == {str(config): (0, 10)}


def test_mark_on_a_locked_table_waits_instead_of_failing(table):
    config, original = table
    holder = LockHolder(SOURCE, TABLE, config.schema_name).start()
    try:
        result = run_cycle(cutoff=CUTOFF)
    finally:
        holder.release()
    state = RecoveryState.objects.get(run_id=result.run_id)
    assert state.phase == Phase.WAITING and state.waiting_for == f"lock:{config}"
    assert "could not get its locks in time during pending" in state.last_error
    assert resume_run(result.run_id).ok
    assert union_check([config], original) == {str(config): (0, 10)}


def test_every_backend_says_how_it_bounds_lock_waits_and_statements():
    from archival.backends.mariadb import MariaDBBackend
    from archival.backends.mssql.backend import MSSQLBackend
    from archival.backends.postgresql import PostgresBackend
    from archival.backends.sqlite import SQLiteBackend

    def statements(cls):
        backend = object.__new__(cls)
        return [sql for sql, _ in backend.session_wait_limits(2500, 30000)], [
            sql for sql, _ in backend.transaction_wait_limits(2500, 30000)
        ]

    # PostgreSQL: for the batch's transaction only (SET LOCAL), before any query.
    assert statements(PostgresBackend) == (
        [],
        ["SET LOCAL lock_timeout = 2500; SET LOCAL statement_timeout = 30000"],
    )
    # MariaDB: whole seconds, rounded up, for row and table locks; statements in seconds.
    session, _ = statements(MariaDBBackend)
    assert "innodb_lock_wait_timeout" in session[0] and "max_statement_time" in session[0]
    assert object.__new__(MariaDBBackend).session_wait_limits(2500, 30000)[0][1] == [3, 3, 30.0]
    # SQLite: the busy timeout, before BEGIN IMMEDIATE waits.
    assert statements(SQLiteBackend) == (["PRAGMA busy_timeout = 2500"], [])
    # SQL Server: SET LOCK_TIMEOUT lasts for the rest of the connection when run as
    # a plain batch (a literal, not a parameter: an sp_executesql batch would end it);
    # https://learn.microsoft.com/sql/t-sql/statements/set-lock-timeout-transact-sql
    assert statements(MSSQLBackend) == (["SET LOCK_TIMEOUT 2500; SET DEADLOCK_PRIORITY LOW;"], [])


def test_lock_timeouts_count_across_short_slices_until_the_table_waits(table, bounded):
    config, original = table
    run = start_run(cutoff=CUTOFF)
    state = RecoveryState.objects.get(run=run)
    advance_table(state.pk, until=Phase.MARKED)
    holders: list[LockHolder] = []
    try:
        # Slices shorter than one back-off: each meets the lock once or twice and ends.
        first = advance_table(state.pk, time_box=0.5, on_batch=lock_after_first_batch(config, holders))
        assert not first.done and holders
        slices = 1
        while RecoveryState.objects.get(pk=state.pk).phase != Phase.WAITING and slices < 10:
            advance_table(state.pk, time_box=0.5)
            slices += 1
    finally:
        for holder in holders:
            holder.release()
    state.refresh_from_db()
    assert state.phase == Phase.WAITING and state.waiting_for == f"lock:{config}", state.last_error
    # PostgreSQL and MariaDB: the third batch in a row; SQLite: any read of the
    # locked file (the schema, at the next slice's start) times out first.
    assert "could not get its locks" in state.last_error
    assert resume_run(run.pk).ok
    assert RecoveryState.objects.get(pk=state.pk).lock_waits == 0
    assert union_check([config], original) == {str(config): (0, 10)}


def test_the_command_lists_the_waiting_tables_and_how_to_resume_them(table):
    from io import StringIO

    from archival.management.commands.archival import Command

    config, _ = table
    holder = LockHolder(SOURCE, TABLE, config.schema_name).start()
    try:
        result = run_cycle(cutoff=CUTOFF)
    finally:
        holder.release()
    command = Command(stdout=StringIO(), stderr=StringIO())
    with pytest.raises(SystemExit) as exited:
        command.render_run(result, {"json": False})
    out = command.stdout.getvalue()
    assert exited.value.code == 1
    assert f"{config}: waiting for lock:{config}" in out
    assert f"manage.py archival resume --run {result.run_id}" in out and "Nothing new" not in out


def test_the_workers_take_a_table_up_again_after_the_lock_is_gone(table, bounded):
    from archival import dispatch
    from governance.models import DispatchStatus, TableDispatch

    config, original = table
    bounded.ARCHIVAL = {**bounded.ARCHIVAL, "LOCK_COOLDOWN_SECONDS": 0}
    holder = LockHolder(SOURCE, TABLE, config.schema_name).start()
    try:
        started = dispatch.start_scheduled_run(trigger="test", cutoff=CUTOFF)
        row = TableDispatch.objects.get(run_id=started.run_id)
        dispatch.run_slice(row.pk, row.ticket)
        row.refresh_from_db()
        assert row.status == DispatchStatus.STOPPED and "waiting for lock:" in row.last_outcome
        assert RecoveryState.objects.get(pk=row.state_id).phase == Phase.WAITING
    finally:
        holder.release()
    assert dispatch.sweep().taken_up == [str(config)]
    row.refresh_from_db()
    assert row.status == DispatchStatus.QUEUED
    for _ in range(20):
        row.refresh_from_db()
        if row.status != DispatchStatus.QUEUED:
            break
        dispatch.run_slice(row.pk, row.ticket)
    assert RecoveryState.objects.get(pk=row.state_id).phase == Phase.COMPLETED
    assert union_check([config], original) == {str(config): (0, 10)}
