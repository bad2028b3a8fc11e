"""The per-table phases: mark, archive, verify.

Each phase reads the live schema again (a config or a table may have changed
since the last phase), works on the recovery-state row it holds the lease on,
and leaves the row consistent with the archive's batch ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from django.conf import settings
from django.db import transaction

from archival import rowkeys
from archival.engine import mssql_path, pacing, same_server, streaming
from archival.engine.archive_tables import created_by_first_batch, ensure_archive_table
from archival.engine.errors import TableError, TableWaiting
from archival.engine.faults import checkpoint
from archival.engine.jsonkeys import to_json
from archival.engine.leases import tables as table_leases
from archival.engine.spec import TableSpec
from archival.engine.txn import bounded_transaction, wait_limits
from archival.retry import backoff_delay, is_transient, is_wait_timeout, retry_transient
from governance.models import AuditEvent, BatchLedger, LedgerState, Phase, RecoveryState
from governance.rowsql import insert, select_rows


class MarkCounts(NamedTuple):
    eligible: int
    nulls: int  # rows without a reference date
    low: list | None  # smallest eligible key
    high: list | None  # largest eligible key
    # Rows whose reference value is not a date (never eligible); None where
    # nothing counted them (SQL Server's procedure).
    unreadable: int | None = 0


def _every_row_with_its_reference(spec: TableSpec, on) -> str:
    """FROM of every source row as ``s``, its contract (if any) as ``c``: what the counts scan."""
    frm = f"{spec.source_table(on)} s"
    if spec.is_contract:
        q = on.quote
        frm += (
            f" LEFT JOIN {spec.contract_table(on)} c "
            f"ON c.{q(spec.config.contract_key_column)} = s.{q(spec.config.contract_reference_column)}"
        )
    return frm


def count_eligible(spec: TableSpec) -> MarkCounts:
    """Eligible rows (mark form), rows without a reference date, the key bounds, rows whose date is unreadable.

    A table without configured children counts both in one scan. A parent
    table's rule is a NOT EXISTS per child: inside a CASE every planner runs
    it as a subquery per row (seconds for 20,000 contracts); in a WHERE it
    becomes an anti-join, so a parent's eligible rows get a count of their own.
    A one-column key's bounds come from the same statement; a composite
    key's are two index-ordered lookups.
    """
    if mssql_path.uses_procedures(spec):
        return MarkCounts(*mssql_path.mark_counts(spec), unreadable=None)
    on = spec.count_backend
    pk_s = spec.q(on, "s", spec.pk)
    frm = _every_row_with_its_reference(spec, on)
    ref = spec.reference_raw(on)
    unreadable = spec.unreadable(on)
    where, params = spec.selection(on, at_mark=True)
    one_column = len(pk_s) == 1
    # A one-column key's bounds come with the count (MIN and MAX of the
    # eligible keys); a composite key has no MIN over tuples.
    bounds = f", MIN({pk_s[0]}), MAX({pk_s[0]})" if one_column else ""
    case_bounds = (
        f", MIN(CASE WHEN {where} THEN {pk_s[0]} END), MAX(CASE WHEN {where} THEN {pk_s[0]} END)" if one_column else ""
    )
    # Bounded like a batch: a count waiting on another session's lock gives
    # up (archival.engine.txn) and the table waits instead of hanging.
    with bounded_transaction(on.alias), on.connection.cursor() as cur:
        if spec.children:
            cur.execute(f"SELECT COUNT(*){bounds} FROM {spec.from_clause(on, pin_source=False)} WHERE {where}", params)
            eligible, *found = cur.fetchone()
            cur.execute(f"SELECT COUNT(*) FROM {frm} WHERE {ref} IS NULL")
            nulls = cur.fetchone()[0]
            bad = 0
            if unreadable:
                cur.execute(f"SELECT COUNT(*) FROM {frm} WHERE {unreadable}")
                bad = cur.fetchone()[0]
        else:
            count_bad = f"COALESCE(SUM(CASE WHEN {unreadable} THEN 1 ELSE 0 END), 0)" if unreadable else "0"
            cur.execute(
                f"SELECT COALESCE(SUM(CASE WHEN {where} THEN 1 ELSE 0 END), 0), "
                f"COALESCE(SUM(CASE WHEN {ref} IS NULL THEN 1 ELSE 0 END), 0), {count_bad}{case_bounds} "
                f"FROM {frm}",
                [*params, *(params * 2 if one_column else [])],
            )
            eligible, nulls, bad, *found = cur.fetchone()
        eligible, nulls, bad = int(eligible or 0), int(nulls or 0), int(bad or 0)
        low = high = None
        if eligible and one_column:
            low, high = [found[0]], [found[1]]
        elif eligible:
            # Two index-ordered lookups for a composite key.
            selection_from = spec.from_clause(on)
            cur.execute(first_key_sql(on, pk_s, selection_from, where), params)
            low = list(cur.fetchone())
            cur.execute(first_key_sql(on, pk_s, selection_from, where, descending=True), params)
            high = list(cur.fetchone())
    return MarkCounts(eligible, nulls, low, high, bad)


def unreadable_examples(spec: TableSpec, limit: int = 5) -> list[list]:
    """The first ``limit`` keys (in key order) of rows whose reference value is not a date."""
    on = spec.count_backend
    unreadable = spec.unreadable(on)
    if unreadable is None or mssql_path.uses_procedures(spec):
        return []
    pk_s = spec.q(on, "s", spec.pk)
    frm = _every_row_with_its_reference(spec, on)
    sql = on.limit_sql(
        f"SELECT {', '.join(pk_s)} FROM {frm} WHERE {unreadable} ORDER BY {rowkeys.order_by(pk_s)}", str(int(limit))
    )
    with on.connection.cursor() as cur:
        cur.execute(sql)
        return [to_json(row) for row in cur.fetchall()]


def count_left(spec: TableSpec) -> int:
    """Eligible rows still in the source (mark form): what verify expects to be zero."""
    if mssql_path.uses_procedures(spec):
        return mssql_path.mark_counts(spec)[0]
    on = spec.count_backend
    where, params = spec.selection(on, at_mark=True)
    # SET LOCAL lasts for one transaction: the count gets its own (bounded).
    with bounded_transaction(on.alias), on.connection.cursor() as cur:
        for statement in on.settings_after_bulk_delete:
            cur.execute(statement)
        cur.execute(f"SELECT COUNT(*) FROM {spec.from_clause(on, pin_source=False)} WHERE {where}", params)
        return cur.fetchone()[0]


def first_key_sql(on, pk_s: list[str], frm: str, where: str, descending: bool = False) -> str:
    """The smallest (or largest) eligible key: one row through the backend's LIMIT/TOP."""
    order = rowkeys.order_by(pk_s, descending=descending)
    return on.limit_sql(f"SELECT {', '.join(pk_s)} FROM {frm} WHERE {where} ORDER BY {order}", "1")


def mark(spec: TableSpec, state: RecoveryState, worker: str) -> None:
    if not created_by_first_batch(spec):
        # Before the count: a table that is not provisioned (SQL Server) or
        # whose columns changed type fails here, before anything is counted.
        # Its row count is not known yet, so a new table's indexes come
        # after its batches (archive_tables.indexes_after_batches).
        ensure_archive_table(spec)
        spec.archive_ready = True
    # Otherwise the first batch checks the archive table (a changed column
    # type stops the table before a row moves) and creates or extends it in
    # its own transaction, knowing Mark's count; ``plan`` shows that DDL
    # beforehand.
    checkpoint("mark_start")
    eligible, nulls, low, high, unreadable = count_eligible(spec)
    spec.eligible_rows = eligible
    with transaction.atomic():
        table_leases.renew(
            state,
            worker,
            phase=Phase.MARKED,
            threshold=spec.threshold,
            eligible_count=eligible,
            null_date_count=nulls,
            unreadable_date_count=unreadable,
            key_low=to_json(low),
            key_high=to_json(high),
            audit=dict(
                action="table.marked",
                actor=worker,
                run_id=state.run_id,
                table_label=spec.label,
                counts={"eligible": eligible, "null_dates": nulls}
                | ({"unreadable_dates": unreadable} if unreadable is not None else {}),
                details={"threshold": spec.threshold.isoformat(), "mode": spec.mode},
            ),
        )


def ledger_progress(run_id: int, config_id: int) -> tuple[int, int, list | None]:
    """(batches, rows taken out of the source, last key) for a table in a run: the ledger is the truth."""
    rows = select_rows(
        BatchLedger, ["batch_no", "deleted_count", "key_high"], where={"run_id": run_id, "config_id": config_id},
        order_by="batch_no",
    )  # fmt: skip
    if not rows:
        return 0, 0, None
    return rows[-1][0], sum(r[1] for r in rows), rows[-1][2]


def ledger_digest(run_id: int, config_id: int) -> tuple[int, int, str]:
    """(batches, rows taken out of the source, SHA-256 over every batch row: number, key range, counts, state)."""
    rows = select_rows(
        BatchLedger, ["batch_no", "key_low", "key_high", "row_count", "deleted_count", "state"],
        where={"run_id": run_id, "config_id": config_id}, order_by="batch_no",
    )  # fmt: skip
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return len(rows), sum(r[4] for r in rows), digest


logger = logging.getLogger("archival")

# The longest the recovery state's progress lags the ledger while a table
# archives; well inside the shortest lease (ARCHIVAL_LEASE_SECONDS >= 5), so
# the lease is renewed long before it could expire.
PROGRESS_SECONDS = 1.0


@dataclass
class ArchiveOutcome:
    moved: int
    batches: int
    finished: bool
    # Progress of the last batch not yet written to the recovery state: the
    # caller writes it with the next phase, in the same UPDATE.
    unsaved: dict = field(default_factory=dict)


def archive(
    spec: TableSpec,
    state: RecoveryState,
    worker: str,
    *,
    should_stop: Callable[[], bool],
    on_batch: Callable[[int], None] | None = None,
    marked_by_caller: bool = False,
) -> ArchiveOutcome:
    """Move batches until none is left or ``should_stop()``.

    ``marked_by_caller``: the caller committed this table's Mark itself, just
    now, so the ledger holds no batch of this run for it (a batch moves only
    after a committed Mark) and is not read. Were one there, batch 1 would
    collide with it on the ledger's unique batch number and the table would
    fail with nothing moved.
    """
    if spec.eligible_rows is None:
        spec.eligible_rows = state.eligible_count
    if not spec.archive_ready and not created_by_first_batch(spec):
        ensure_archive_table(spec)
        spec.archive_ready = True
    if spec.mode == "streaming":
        streaming.finish_pending(spec, run_id=state.run_id)
    # The ledger is the truth after a crash; the next write of the recovery
    # state (a batch's renewal, or the phase after the last batch) carries the
    # reconciled cursor and counts.
    batch_no, archived, cursor = (0, 0, None) if marked_by_caller else ledger_progress(state.run_id, spec.config.pk)

    def record_ledger(*, batch_no, low, high, rows, deleted, state=LedgerState.MOVED, counted_rows=None):
        """The batch's ledger row.

        ``counted_rows``: a COUNT (SQL, parameters) the INSERT evaluates
        itself; its result replaces ``rows`` as the row's ``row_count``, for
        the caller to check before it commits (see rowsql.insert).
        """
        ledger = BatchLedger(
            run_id=spec_run_id,
            config_id=spec.config.pk,
            table_label=spec.label,
            batch_no=batch_no,
            key_low=to_json(low),
            key_high=to_json(high),
            row_count=rows,
            deleted_count=deleted,
            state=state,
        )
        # Every batch: without the ORM's compiler (governance.rowsql).
        insert(ledger, "archive", computed={"row_count": counted_rows} if counted_rows else None)
        return ledger

    spec_run_id = state.run_id
    # Batch size and pauses adapt to what batches cost (archival.engine.pacing).
    pacer = pacing.for_table(spec, state)
    try:
        return _batches(spec, state, worker, pacer, (batch_no, archived, cursor), record_ledger, should_stop, on_batch)
    finally:
        pacer.close()


def _batches(spec, state, worker, pacer, start, record_ledger, should_stop, on_batch) -> ArchiveOutcome:
    """The batch loop of ``archive``: move, reconcile, record; pace between batches.

    ``start``: (last batch number, rows archived, keyset cursor) from the ledger.
    """
    batch_no, archived, cursor = start
    size = pacer.size
    moved_total = batches = 0
    # Progress not yet written to the recovery state (see the end of the loop).
    pending: dict = {}
    renewed_at = time.monotonic()
    # Batches in a row that timed out waiting for locks, counted across
    # slices (a slice's time box may end the back-off before the limit).
    lock_waits = state.lock_waits

    def keepalive() -> None:
        """Renew the lease and show what pacing does, during a long wait between batches."""
        nonlocal pending, renewed_at
        table_leases.renew(state, worker, **pending, **pacer.changes())
        pending = {}
        renewed_at = time.monotonic()

    def unsaved(progress: dict) -> dict:
        return {**progress, **pacer.changes()}

    while True:
        if should_stop():
            return ArchiveOutcome(moved_total, batches, False, unsaved=unsaved(pending))
        # The pause pacing asks for, replica lag, the table's run window.
        if not pacer.before_batch(should_stop, keepalive, pending):
            return ArchiveOutcome(moved_total, batches, False, unsaved=unsaved(pending))
        batch_no += 1
        took = [0.0]

        def one_batch(batch_no=batch_no, cursor=cursor, size=size, took=took):
            started = time.monotonic()
            try:
                if mssql_path.uses_procedures(spec):
                    return mssql_path.move_batch(spec, run_id=state.run_id, batch_no=batch_no, low=cursor, size=size)
                if spec.mode == "streaming":
                    # An earlier attempt of this batch may have committed its copy.
                    earlier = BatchLedger.objects.filter(
                        run_id=state.run_id, config_id=spec.config.pk, batch_no=batch_no
                    ).first()
                    if earlier is not None:
                        return streaming.finish_earlier_attempt(spec, earlier)
                    return streaming.move_batch(
                        spec, run_id=state.run_id, batch_no=batch_no, low=cursor, size=size, record_ledger=record_ledger
                    )
                return same_server.move_batch(
                    spec, run_id=state.run_id, batch_no=batch_no, low=cursor, size=size, record_ledger=record_ledger
                )
            finally:
                # The last attempt's time, without the back-off before it.
                took[0] = time.monotonic() - started

        # A deadlock, lock timeout, lost connection or serialization failure
        # rolled the batch back; it is retried with backoff (a streamed batch
        # whose copy had committed is finished instead of copied again).
        # A lock or statement timeout is not retried as it is: see below.
        try:
            outcome = retry_transient(
                one_batch,
                attempts=5,
                base_delay=0.5,
                on_retry=_retrying(spec, state, worker, pacer),
                retryable=lambda exc: is_transient(exc) and not is_wait_timeout(exc),
            )
        except Exception as exc:
            if not is_wait_timeout(exc):
                # The table fails (or waits for its database): its row
                # carries the progress of the batches that committed.
                exc.unsaved_progress = unsaved(pending)  # type: ignore[attr-defined]  # read by runner._stop_table
                raise
            # Another session held the locks this batch needs past the lock
            # timeout (or the batch ran out of time); it rolled back. Back
            # off and try again with half the rows, a few times, then leave
            # the table waiting for the lock with that reason.
            lock_waits += 1
            batch_no -= 1
            failed_size = size
            lock_ms, _ = wait_limits()
            limit = settings.ARCHIVAL["LOCK_RETRIES"]
            reason = (
                f"batch {batch_no + 1} of {spec.label} ({failed_size} rows) could not get its locks within "
                f"{lock_ms} ms ({type(exc).__name__}: {str(exc).strip()[:200]})"
            )
            pacer.add_lock_wait(took[0])
            if lock_waits >= limit:
                raise TableWaiting(
                    f"lock:{spec.label}",
                    f"{reason}; {limit} batches in a row timed out, so the table waits for the lock to be released "
                    "and is taken up again later (the sweeper, or archival resume)",
                    unsaved_progress=unsaved(pending),
                ) from exc
            delay = backoff_delay(lock_waits, 1.0, 30.0)
            size = pacer.after_lock_timeout(f"lock timeouts: {reason}")
            note = f"{reason}; retrying with {size} rows in {delay:.1f}s (lock wait {lock_waits} of {limit})"
            logger.warning(note)
            _record_lock_wait(spec, state, worker, note, unsaved(pending), lock_waits, delay, size)
            pending = {}
            started = time.monotonic()
            full = _pause(delay, should_stop)
            pacer.add_lock_wait(time.monotonic() - started)
            if not full:
                return ArchiveOutcome(moved_total, batches, False, unsaved=pacer.changes())
            continue
        pacer.after_batch(outcome.moved, took[0])
        size = pacer.size
        if lock_waits:
            # The locks came: say so in the state; the batch size grows back
            # as batches stay quick (archival.engine.pacing).
            lock_waits = 0
            table_leases.renew(state, worker, last_error="", lock_waits=0, **pacer.changes())
        if outcome.high is None:
            return ArchiveOutcome(moved_total, batches, True, unsaved=unsaved(pending))
        checkpoint("batch_after_commit")
        cursor = to_json(outcome.high)
        archived += outcome.moved
        moved_total += outcome.moved
        batches += 1
        progress = {"cursor": cursor, "archived_count": archived, "batches_done": batch_no}
        if on_batch:
            on_batch(outcome.moved)
        if outcome.exhausted:
            # The last batch: its progress goes with the next phase's UPDATE
            # (a crash before that is reconciled from the ledger, like any
            # other). Verify still counts what is left (a row made eligible
            # meanwhile fails it). Streamed batches never say so: one may
            # delete fewer rows than it read (a row changed after its copy stays).
            return ArchiveOutcome(moved_total, batches, True, unsaved=unsaved(progress))
        # Progress and the lease go to the control database with the first
        # batch (the phase becomes ARCHIVING), then at most once every
        # PROGRESS_SECONDS: each write is a durable commit, and the batch's own
        # record is its ledger row, committed with the move in the archive
        # (the truth on resume). The audit trail gets the whole ledger's
        # digest at verify (one chained event per table, not one per batch).
        if state.phase != Phase.ARCHIVING or time.monotonic() - renewed_at >= PROGRESS_SECONDS:
            table_leases.renew(state, worker, phase=Phase.ARCHIVING, **progress, **pacer.changes())
            renewed_at = time.monotonic()
            pending = {}
        else:
            pending = progress


@dataclass(frozen=True)
class VerifyProof:
    """What Verify established: the ledger's count and digest agree with Mark, nothing eligible is left."""

    archived: int
    batches: int
    ledger_sha256: str


def verify(spec: TableSpec, state: RecoveryState) -> VerifyProof:
    """Marked == archived, and no eligible row left in the source; raise TableError otherwise.

    Writes nothing: the caller records the proof (``record_verified``, or the
    completion that commits with it).
    """
    batches, archived, ledger_sha256 = ledger_digest(state.run_id, spec.config.pk)
    eligible_left = count_left(spec)
    problems = []
    if state.eligible_count is not None and archived != state.eligible_count:
        problems.append(f"marked {state.eligible_count} eligible rows but the ledger records {archived} archived")
    if eligible_left:
        problems.append(f"{eligible_left} eligible rows are still in the source")
    if problems:
        raise TableError(f"verify failed for {spec.label}: " + "; ".join(problems))
    checkpoint("verify")
    return VerifyProof(archived, batches, ledger_sha256)


def record_verified(state: RecoveryState, worker: str, proof: VerifyProof, unsaved: dict | None = None) -> None:
    with transaction.atomic(savepoint=False):
        table_leases.renew(
            state,
            worker,
            **{**(unsaved or {}), "phase": Phase.VERIFIED, "archived_count": proof.archived},
            audit=dict(
                action="table.verified",
                actor=worker,
                run_id=state.run_id,
                table_label=state.table_label,
                counts={"archived": proof.archived, "batches": proof.batches},
                details={"ledger_sha256": proof.ledger_sha256},
            ),
        )


def _pause(seconds: float, should_stop: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` unless the slice must stop first; True when the full pause passed."""
    return pacing.pause(seconds, should_stop)


def _record_lock_wait(spec, state, worker, note, pending, attempt, delay, size) -> None:
    """What the operator sees while a batch waits for locks: the state's last error and an audit event."""
    table_leases.renew(state, worker, **pending, last_error=note[:4000], lock_waits=attempt)
    AuditEvent.objects.record(
        "batch.lock_timeout",
        actor=worker,
        outcome="RETRY",
        run_id=state.run_id,
        table_label=spec.label,
        details={"attempt": attempt, "delay": round(delay, 2), "next_batch_size": size, "error": note[:500]},
    )


def _retrying(spec: TableSpec, state: RecoveryState, worker: str, pacer=None):
    def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
        if pacer is not None:
            # A deadlock or serialization failure: the back-off is time lost to other sessions' locks.
            pacer.add_lock_wait(delay)
        AuditEvent.objects.record(
            "batch.retried",
            actor=worker,
            outcome="RETRY",
            run_id=state.run_id,
            table_label=spec.label,
            details={"attempt": attempt, "error": str(exc)[:500], "delay": round(delay, 2)},
        )

    return on_retry
