"""Run lifecycle: start, advance a table through its phases, resume, abandon, finalize.

Every entry point (CLI, django-q2 task, admin action) calls these functions
and renders the result objects they return.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime

from django.db import DatabaseError, Error, transaction
from django.utils import timezone

from archival import alerts, outage, stopping
from archival.engine import dependencies, leases, pacing, phases
from archival.engine.archive_tables import build_pending_indexes
from archival.engine.cutoff import resolve_cutoff
from archival.engine.dailylog import log_line
from archival.engine.errors import LeaseLost, TableError, TableWaiting, describe_database_error
from archival.engine.pipeline import Pipeline, pipeline_for
from archival.engine.results import RunResult, TableResult
from archival.engine.spec import build_spec
from archival.engine.table_names import select_configs
from archival.engine.txn import bound_sessions
from archival.retry import is_unreachable, is_wait_timeout
from governance.actors import actor_name
from governance.models import (
    OPEN_PHASES,
    ArchivalRun,
    AuditEvent,
    Phase,
    RecoveryState,
    RestoreStatus,
    RestoreTable,
    RunStatus,
    TableConfig,
)
from governance.models.text import FREE_TEXT_MAX_LENGTH

logger = logging.getLogger("archival")

PHASE_ORDER: list[str] = [
    Phase.PENDING,
    Phase.MARKED,
    Phase.ARCHIVING,
    Phase.ARCHIVED,
    Phase.VERIFIED,
    Phase.COMPLETED,
]


def start_run(
    *,
    cutoff: date | None = None,
    tables: list[str] | None = None,
    actor=None,
    trigger: str = "manual",
    deadline: datetime | None = None,
    occurrence: str | None = None,
) -> ArchivalRun:
    """Create a run with its cutoff fixed now, and one recovery state per table.

    A table whose earlier run is unfinished is BLOCKED in this run until that
    run is resumed or abandoned; so is a table a restore is EXECUTING on
    ("restore N" in its error). The config rows are locked for the check so
    two runs started at once cannot both take the same table.
    ``occurrence``: the schedule firing's key; a second run with the same key
    raises IntegrityError and nothing of it is written.
    """
    configs = select_configs(tables)
    cutoff = resolve_cutoff(cutoff)
    started_by = actor_name(actor)
    with transaction.atomic():
        locked = list(TableConfig.objects.select_for_update().filter(pk__in=[c.pk for c in configs]).order_by("pk"))
        run = ArchivalRun(
            cutoff=cutoff, trigger=trigger, started_by=started_by, deadline=deadline, occurrence=occurrence
        )
        # The occurrence's uniqueness is the database's to decide (two
        # deliveries at once both pass a check made here).
        run.full_clean(validate_unique=False)
        run.save()
        open_elsewhere = dict(
            RecoveryState.objects.filter(config__in=locked, phase__in=OPEN_PHASES)
            .exclude(run=run)
            .values_list("config_id", "run_id")
        )
        # A restore moving rows of a table back to its source (archival.restore)
        # holds the table too: archiving it now would take the rows being
        # restored. The restore's claim locks the same config rows.
        restoring = dict(
            RestoreTable.objects.filter(config__in=locked, request__status=RestoreStatus.EXECUTING).values_list(
                "config_id", "request_id"
            )
        )
        states = []
        for config in locked:
            blocked_by = open_elsewhere.get(config.pk)
            restore = restoring.get(config.pk)
            why = ""
            if blocked_by:
                why = f"run {blocked_by} has not finished this table; resume or abandon it first"
            elif restore:
                why = f"restore {restore} is moving rows of this table back to the source; the next run takes it"
            states.append(
                RecoveryState(
                    run=run,
                    config=config,
                    table_label=str(config),
                    phase=Phase.BLOCKED if why else Phase.PENDING,
                    last_error=why,
                )
            )
        RecoveryState.objects.bulk_create(states)
    AuditEvent.objects.record(
        "run.started",
        actor=actor,
        obj=run,
        run_id=run.pk,
        counts={
            "tables": len(states),
            "blocked": sum(s.phase == Phase.BLOCKED for s in states),
        },
        details={"cutoff": cutoff.isoformat(), "trigger": trigger},
    )
    log_line(f"run {run.pk} started cutoff={cutoff} tables={len(states)} trigger={trigger}")
    return run


def ordered_states(run: ArchivalRun | int) -> list[RecoveryState]:
    """The run's states, children before the tables they reference (archival.engine.dependencies)."""
    run_id = run.pk if isinstance(run, ArchivalRun) else run
    states = list(RecoveryState.objects.filter(run_id=run_id).select_related("config", "run"))
    configs = [s.config for s in states]
    return dependencies.dependency_order(
        sorted(states, key=lambda s: s.pk), dependencies.children(configs), config=lambda s: s.config
    )


def _run_says_stop(stop_requested: bool, deadline) -> bool:
    return bool(stop_requested or (deadline and timezone.now() >= deadline))


def _stop_check(state: RecoveryState, deadline_monotonic: float | None) -> Callable[[], bool]:
    run_id = state.run_id
    # The run row came with the state: its flags are fresh for the first second.
    last = {"at": time.monotonic(), "stop": _run_says_stop(state.run.stop_requested, state.run.deadline)}

    def should_stop() -> bool:
        if stopping.stop_requested():
            return True
        if deadline_monotonic is not None and time.monotonic() >= deadline_monotonic:
            return True
        # The run's stop switch and window are read at most once a second.
        now = time.monotonic()
        if now - last["at"] >= 1.0:
            last["at"] = now
            run = ArchivalRun.objects.filter(pk=run_id).values("stop_requested", "deadline").first()
            last["stop"] = bool(run and _run_says_stop(run["stop_requested"], run["deadline"]))
        return bool(last["stop"])

    return should_stop


def advance_table(
    state_id: int,
    *,
    worker: str | None = None,
    until: str = Phase.COMPLETED,
    time_box: float | None = None,
    on_batch: Callable[[int], None] | None = None,
    pipeline: Pipeline | None = None,
) -> TableResult:
    """Take one table of a run as far as ``until`` (or until the time box ends).

    Claims the table's lease first (another live worker holding it means this
    call does nothing). A TableError fails this table only; it is recorded
    with its message and the other tables go on.

    With a ``pipeline`` (archival.engine.pipeline), the table may come
    claimed and marked by the pipeline's helper, and once its last batch has
    moved, Verify and completion run there: the result returned is then
    finished there (``pipeline.finishing(state_id)``).
    """
    worker = worker or leases.new_worker_id()
    started = time.monotonic()
    # The claim only takes a table that still has work (not COMPLETED,
    # FAILED, BLOCKED or ABANDONED).
    # The state comes back with its config and run, read once the lease is
    # ours (in the claim's own statement on PostgreSQL): from here on only
    # this worker writes the row, and leases.renew keeps ``state`` in step.
    # The pipeline's helper may have claimed it (and marked it) already.
    ahead = pipeline.take(state_id) if pipeline else None
    state = ahead.state if ahead else leases.tables.claim(state_id, worker, where={"phase": PHASE_ORDER[:-1]})
    if state is None:
        label, phase = RecoveryState.objects.values_list("table_label", "phase").get(pk=state_id)
        result = TableResult(state_id=state_id, label=label, phase=phase)
        if phase not in PHASE_ORDER or phase == Phase.COMPLETED:
            result.skipped = f"phase is {phase}"
            result.done = phase == Phase.COMPLETED
        else:
            result.skipped = "another worker holds the lease"
        return result
    result = TableResult(state_id=state_id, label=state.table_label, phase=state.phase)
    deadline = started + time_box if time_box else None
    should_stop = _stop_check(state, deadline)
    clean_exit = deferred = False
    unsaved: dict = {}  # the last batch's progress, written with the next phase
    marked_here = bool(ahead and ahead.marked)
    try:
        # Every statement from here on waits for locks only so long (archival.engine.txn).
        bound_sessions(["archive", state.config.source_db])
        # Outside the table's own run window nothing starts (not even Mark's count).
        pacing.check_window(state.table_label, pacing.window_of(state.config))
        spec = ahead.spec if ahead else build_spec(state.config, state.run.cutoff)
        target = PHASE_ORDER.index(until)
        while True:
            current = PHASE_ORDER.index(state.phase)
            if current >= target:
                result.done = True
                break
            if should_stop():
                break
            if state.phase == Phase.PENDING:
                phases.mark(spec, state, worker)
                marked_here = True
            elif state.phase in (Phase.MARKED, Phase.ARCHIVING):
                archived = phases.archive(
                    spec, state, worker, should_stop=should_stop, on_batch=on_batch, marked_by_caller=marked_here
                )
                result.moved += archived.moved
                result.batches += archived.batches
                unsaved = archived.unsaved
                if not archived.finished:
                    # Stopped between batches: the progress not yet written goes now.
                    if unsaved:
                        leases.tables.renew(state, worker, **unsaved, phase=Phase.ARCHIVING)
                        unsaved = {}
                    break
                if target <= PHASE_ORDER.index(Phase.ARCHIVED):
                    leases.tables.renew(state, worker, **unsaved, phase=Phase.ARCHIVED)
                elif pipeline is not None and target == PHASE_ORDER.index(Phase.COMPLETED):
                    # The same step as below, on the helper, while this
                    # thread goes on to the next table's batches.
                    wrap_up = _deferred_wrap_up(spec, state, worker, target, unsaved, result, started)
                    pipeline.defer(state.pk, wrap_up)
                    deferred = clean_exit = True
                    return result
                else:
                    # Going on: ARCHIVED, VERIFIED (and COMPLETED) commit as one
                    # control transaction. A crash before it leaves the table
                    # ARCHIVING, and the resume finds no batch left and verifies.
                    _verify_and_complete(spec, state, worker, target, unsaved)
                unsaved = {}
            elif state.phase in (Phase.ARCHIVED, Phase.VERIFIED):
                _verify_and_complete(spec, state, worker, target)
        clean_exit = True
    except LeaseLost:
        result.lease_lost = True
        result.lease_taken_by = leases.tables.holder(state.pk) or "nobody (the lease expired and is free)"
    # Error, not only DatabaseError: pyodbc raises its base Error for SQLSTATE
    # HY000 (a SQL Server lock timeout once its retries are spent), which
    # Django wraps as django.db.Error. It fails this table, not the run.
    except (TableError, TableWaiting, Error) as exc:
        _stop_table(state, worker, exc, getattr(exc, "unsaved_progress", None) or unsaved, result)
    finally:
        if not deferred:
            _release(state, worker, clean_exit)
    return _finished(result, state, clean_exit, started)


def _release(state: RecoveryState, worker: str, clean_exit: bool) -> None:
    # Completing the table released the lease in the same UPDATE (unless
    # that transaction rolled back: then ``state`` is ahead of the row).
    if state.lease_owner or not clean_exit:
        leases.tables.release(state.pk, worker)


def _finished(result: TableResult, state: RecoveryState, clean_exit: bool, started: float) -> TableResult:
    if not clean_exit:
        # A rolled-back step may have left ``state`` ahead of the row.
        state.refresh_from_db()
    result.phase = state.phase
    result.eligible = state.eligible_count
    result.archived_total = state.archived_count
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _deferred_wrap_up(spec, state, worker, target, unsaved, result, started) -> Callable[[], TableResult]:
    """advance_table's last step (verify and complete, or fail) as work for the pipeline's helper."""

    def wrap_up() -> TableResult:
        clean_exit = False
        try:
            _verify_and_complete(spec, state, worker, target, unsaved)
            result.done = clean_exit = True
        except LeaseLost:
            result.lease_lost = True
        except (TableError, TableWaiting, Error) as exc:
            _stop_table(state, worker, exc, unsaved, result)
        finally:
            _release(state, worker, clean_exit)
        return _finished(result, state, clean_exit, started)

    return wrap_up


def _verify_and_complete(spec, state: RecoveryState, worker: str, target: int, unsaved: dict | None = None) -> None:
    """Verify, and complete in the same control transaction when the caller wants both.

    Completing right after Verify writes one UPDATE and one audit event
    (``table.completed`` carrying the proof: archived and batch counts, the
    ledger's digest); Verify alone records ``table.verified``.
    """
    build_pending_indexes(spec)
    with transaction.atomic():
        proof = phases.verify(spec, state) if state.phase != Phase.VERIFIED else None
        if target > PHASE_ORDER.index(Phase.VERIFIED):
            _complete(state, worker, proof, unsaved)
        elif proof is not None:
            phases.record_verified(state, worker, proof, unsaved)


def _complete(state: RecoveryState, worker: str, proof: phases.VerifyProof | None, unsaved: dict | None = None) -> None:
    # The lease is released in the same UPDATE: a finished table needs no owner.
    archived = proof.archived if proof else state.archived_count
    fields = {
        **(unsaved or {}),
        "phase": Phase.COMPLETED,
        "archived_count": archived,
        "finished_at": timezone.now(),
        "last_error": "",
        "lease_owner": "",
        "lease_expires_at": None,
    }
    # eligible_count is the row's: read with the claim, kept in step by renew.
    counts = {"archived": archived, "eligible": state.eligible_count}
    details = {}
    if proof:
        counts["batches"] = proof.batches
        details = {"verified": True, "ledger_sha256": proof.ledger_sha256}
    audit = dict(
        action="table.completed",
        actor=worker,
        run_id=state.run_id,
        table_label=state.table_label,
        counts=counts,
        details=details,
    )
    leases.tables.renew(state, worker, **fields, audit=audit)
    transaction.on_commit(
        lambda: log_line(f"run {state.run_id} table {state.table_label} completed archived={archived}")
    )


def waiting_reason(exc: Exception, state: RecoveryState) -> TableWaiting | None:
    """The wait an error means for this table, or None when it is a failure.

    A lock or statement timeout means another session held the table's
    locks. An error that looks like a lost server means a wait only when a
    fresh connection to the archive or the table's source database fails
    too: that database is named. Anything else fails the table.
    """
    if isinstance(exc, TableWaiting):
        return exc
    if not isinstance(exc, DatabaseError):
        return None
    if is_wait_timeout(exc):
        return TableWaiting(
            f"lock:{state.table_label}",
            f"{state.table_label} could not get its locks in time during {state.phase.lower()} "
            f"({type(exc).__name__}: {str(exc).strip()[:300]}); it waits for the lock and is taken up again later",
        )
    if is_unreachable(exc):
        alias = outage.unreachable([outage.ARCHIVE, state.config.source_db])
        if alias:
            return TableWaiting(
                outage.waiting_key(alias),
                f"database {alias} does not answer ({type(exc).__name__}: {str(exc).strip()[:300]}); "
                "the table waits for it and is taken up again when it answers",
            )
    return None


def _stop_table(state: RecoveryState, worker: str, exc: Exception, unsaved: dict, result: TableResult) -> None:
    """Record why the table stopped: waiting (a database down, a lock held) or failed."""
    waiting = waiting_reason(exc, state)
    if waiting is not None:
        _wait(state, worker, waiting, unsaved)
        result.waiting_for = waiting.waiting_for
        result.error = str(waiting)
    else:
        _fail(state, worker, exc, unsaved)
        result.error = str(exc)


def _wait(state: RecoveryState, worker: str, waiting: TableWaiting, unsaved: dict | None = None) -> None:
    """Leave the table WAITING (not failed): no alert per table, the lease freed for whoever takes it up."""
    message = str(waiting)
    RecoveryState.objects.filter(pk=state.pk).update(
        **(unsaved or {}),
        phase=Phase.WAITING,
        waiting_for=waiting.waiting_for[:200],
        last_error=message[:4000],
        lease_owner="",
        lease_expires_at=None,
        updated_at=timezone.now(),
    )
    AuditEvent.objects.record(
        "table.waiting",
        actor=worker,
        outcome="WAITING",
        run_id=state.run_id,
        table_label=state.table_label,
        details={"waiting_for": waiting.waiting_for, "reason": message[:4000]},
    )
    log_line(f"run {state.run_id} table {state.table_label} WAITING for {waiting.waiting_for}: {message}")
    logger.warning("table %s waits for %s: %s", state.table_label, waiting.waiting_for, message)


def wait_for_database(
    run_id: int, alias: str, *, reason: str, worker: str = "", exclude: Sequence[int] = ()
) -> list[str]:
    """Leave every unfinished table of ``run_id`` that needs ``alias`` WAITING for it, without starting it.

    Only tables no other worker holds (no lease, or this worker's): a table
    another worker is moving meets the outage itself. Returns the labels of
    the tables it stopped.
    """
    states = RecoveryState.objects.filter(
        run_id=run_id, phase__in=PHASE_ORDER[:-1], lease_owner__in=["", worker]
    ).exclude(pk__in=list(exclude))
    if alias != outage.ARCHIVE:
        states = states.filter(config__source_db=alias)
    labels = []
    for state in states.select_related("config"):
        updated = RecoveryState.objects.filter(pk=state.pk, phase=state.phase, lease_owner__in=["", worker]).update(
            phase=Phase.WAITING,
            waiting_for=outage.waiting_key(alias),
            last_error=f"not started: {reason}"[:4000],
            lease_owner="",
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
        if updated:
            labels.append(state.table_label)
    if labels:
        AuditEvent.objects.record(
            "table.waiting",
            actor=worker or "system",
            outcome="WAITING",
            run_id=run_id,
            counts={"tables": len(labels)},
            details={"waiting_for": outage.waiting_key(alias), "reason": reason[:2000], "tables": labels[:500]},
        )
    return labels


def _fail(state: RecoveryState, worker: str, exc: Exception, unsaved: dict | None = None) -> None:
    message = str(exc) if isinstance(exc, TableError) else _database_error_text(exc, state)
    RecoveryState.objects.filter(pk=state.pk).update(
        **(unsaved or {}), phase=Phase.FAILED, last_error=message[:4000], finished_at=timezone.now()
    )
    AuditEvent.objects.record(
        "table.failed",
        actor=worker,
        outcome="FAILED",
        run_id=state.run_id,
        table_label=state.table_label,
        details={"error": message[:4000]},
    )
    log_line(f"run {state.run_id} table {state.table_label} FAILED: {message}")
    logger.warning("table %s failed: %s", state.table_label, message)
    try:
        alerts.table_failed(state, message)
    except ImportError:
        pass


def _database_error_text(exc: Exception, state: RecoveryState) -> str:
    """The error as the operator reads it: the file at fault and what to do, where the error says so."""
    plain = describe_database_error(exc, ["archive", state.config.source_db])
    return plain or f"{type(exc).__name__}: {exc}"


FINAL_PHASES = (Phase.BLOCKED, Phase.ABANDONED, Phase.COMPLETED, Phase.FAILED, Phase.WAITING)


def _process(run: ArchivalRun, *, worker: str, on_table=None, on_batch=None) -> list[TableResult]:
    """Every table of the run that can move, in dependency order, in this process."""
    states = ordered_states(run)
    to_do = [s for s in states if s.phase not in FINAL_PHASES]
    pipeline = pipeline_for(to_do, worker) if len(to_do) > 1 else None
    next_of = {a.pk: b.pk for a, b in itertools.pairwise(to_do)}
    results: list[TableResult] = []
    advanced: list[TableResult] = []  # what on_table is told, in order, once finished
    reported = 0

    def report(wait: bool) -> None:
        nonlocal reported
        while reported < len(advanced):
            result = advanced[reported]
            finishing = pipeline.finishing(result.state_id) if pipeline else None
            if finishing is not None:
                if not (wait or finishing.done()):
                    return
                finishing.result()  # an unexpected error on the helper surfaces here
            if on_table:
                on_table(result)
            reported += 1

    # Databases found down in this pass: the tables that need them are not
    # started (they wait), and one alert per database names them all.
    down: dict[str, list[str]] = {}
    try:
        for state in states:
            alias = _outage_for(state, down)
            if alias and state.phase not in FINAL_PHASES:
                state.refresh_from_db(fields=["phase", "last_error", "waiting_for"])
            if state.phase in FINAL_PHASES:
                results.append(
                    TableResult(
                        state.pk,
                        state.table_label,
                        state.phase,
                        error=state.last_error,
                        done=state.phase == Phase.COMPLETED,
                        waiting_for=state.waiting_for,
                    )
                )
                continue
            if pipeline and state.pk in next_of:
                pipeline.start(next_of[state.pk], PHASE_ORDER[:-1])
            result = advance_table(state.pk, worker=worker, on_batch=on_batch, pipeline=pipeline)
            results.append(result)
            advanced.append(result)
            if result.waiting_for.startswith("database:"):
                alias = result.waiting_for.split(":", 1)[1]
                down.setdefault(alias, []).append(result.label)
                down[alias] += wait_for_database(
                    run.pk, alias, reason=f"database {alias} does not answer", worker=worker
                )
            report(wait=False)
    finally:
        if pipeline:
            pipeline.close()
    report(wait=True)

    for alias, labels in down.items():
        alerts.database_unreachable(run.pk, alias, labels, scheduled=False)
    return results


def _outage_for(state: RecoveryState, down: dict[str, list[str]]) -> str | None:
    """The database found down in this pass that ``state``'s table needs, if any."""
    for alias in down:
        if alias in (outage.ARCHIVE, state.config.source_db):
            return alias
    return None


def retake_waiting(states, *, actor=None) -> list[str]:
    """Put WAITING tables back to the last phase that is safe to redo; returns their labels.

    Archive again (it reconciles with the ledger first, then verifies) or
    mark again if never marked: the same rule as for a failed table.
    """
    labels: dict[str, list[str]] = {}
    now = timezone.now()
    for state in states:
        phase = Phase.PENDING if state.eligible_count is None else Phase.ARCHIVING
        # The time it waited outside its run window or for a replica counts
        # in its pacing record (status shows the time spent per reason).
        reason = {"window": "window", "replica": "lag", "lock": "lock"}.get(state.waiting_for.split(":", 1)[0])
        extra = {}
        if reason and state.updated_at:
            waited = (now - state.updated_at).total_seconds()
            extra["pacing"] = pacing.with_waited(state.pacing, reason, waited)
        if RecoveryState.objects.filter(pk=state.pk, phase=Phase.WAITING).update(
            phase=phase, waiting_for="", last_error="", lock_waits=0, finished_at=None, updated_at=now, **extra
        ):
            labels.setdefault(state.waiting_for, []).append(state.table_label)
    for waiting_for, names in labels.items():
        AuditEvent.objects.record(
            "tables.retaken",
            actor=actor,
            run_id=states[0].run_id if states else None,
            counts={"tables": len(names)},
            details={"waiting_for": waiting_for, "tables": names[:500]},
        )
        log_line(f"run {states[0].run_id} takes up {len(names)} table(s) that waited for {waiting_for}")
    return [name for names in labels.values() for name in names]


def finalize_run(run_id: int) -> RunResult:
    """Close the run when no table can progress any more; write its summary."""
    run = ArchivalRun.objects.get(pk=run_id)
    states = list(run.states.all())
    by_phase: dict[str, int] = {}
    for s in states:
        by_phase[s.phase] = by_phase.get(s.phase, 0) + 1
    working = [
        s
        for s in states
        if s.phase
        in (
            Phase.PENDING,
            Phase.MARKED,
            Phase.ARCHIVING,
            Phase.ARCHIVED,
            Phase.VERIFIED,
            # A waiting table is unfinished work: the run stays open for it.
            Phase.WAITING,
        )
    ]
    summary = {"phases": by_phase, "archived": sum(s.archived_count for s in states)}
    if run.status == RunStatus.RUNNING and not working:
        status = RunStatus.FAILED if by_phase.get(Phase.FAILED) else RunStatus.COMPLETED
        if run.stop_requested and status == RunStatus.COMPLETED and by_phase.get(Phase.COMPLETED, 0) < len(states):
            status = RunStatus.STOPPED
        updated = ArchivalRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=status, finished_at=timezone.now(), summary=summary
        )
        if updated:
            AuditEvent.objects.record(
                "run.finished",
                obj=run,
                run_id=run.pk,
                outcome=status,
                counts={**by_phase, "archived": summary["archived"]},
            )
            log_line(f"run {run.pk} finished status={status} archived={summary['archived']} phases={by_phase}")
    elif working:
        ArchivalRun.objects.filter(pk=run.pk).update(summary=summary)
    run.refresh_from_db()
    return _run_result(run)


def _run_result(run: ArchivalRun, results: list[TableResult] | None = None) -> RunResult:
    by_id = {r.state_id: r for r in results or []}
    tables = []
    for s in ordered_states(run):
        r = by_id.get(s.pk) or TableResult(s.pk, s.table_label, s.phase)
        r.phase, r.error, r.waiting_for = s.phase, s.last_error, s.waiting_for
        r.eligible, r.archived_total = s.eligible_count, s.archived_count
        r.unreadable_dates = s.unreadable_date_count
        tables.append(r)
    return RunResult(run.pk, run.status, run.cutoff.isoformat(), tables)


def run_cycle(
    *,
    cutoff: date | None = None,
    tables: list[str] | None = None,
    actor=None,
    trigger: str = "manual",
    on_table=None,
    on_batch=None,
) -> RunResult:
    """Start a run and take every table through it in dependency order, in this process."""
    run = start_run(cutoff=cutoff, tables=tables, actor=actor, trigger=trigger)
    results = _process(run, worker=leases.new_worker_id(), on_table=on_table, on_batch=on_batch)
    finalize_run(run.pk)
    run.refresh_from_db()
    return _run_result(run, results)


def reopen_run(run: ArchivalRun, *, actor=None) -> bool:
    """What every resume does before its tables are worked on, in this process or on the workers.

    Waiting tables are taken up again and failed ones go back to the last
    phase that is safe to redo; the run is RUNNING again with its original
    cutoff (audited ``run.resumed``). Returns False, changing nothing, for a
    run none of whose tables is unfinished but still marked RUNNING (its
    process died before closing it): the caller only closes it. Raises
    TableError (audited ``run.resume_refused``) for a closed run with nothing
    unfinished: resuming it would change nothing but its history.
    """
    retake_waiting(list(RecoveryState.objects.filter(run=run, phase=Phase.WAITING)), actor=actor)
    if not RecoveryState.objects.filter(run=run, phase__in=OPEN_PHASES).exists():
        if run.status == RunStatus.RUNNING:
            return False
        reason = (
            f"run {run.pk} is {run.get_status_display().lower()}: none of its tables is unfinished, "
            "so there is nothing to resume (start a new run instead)"
        )
        AuditEvent.objects.record(
            "run.resume_refused", actor=actor, outcome="REFUSED", obj=run, run_id=run.pk, details={"reason": reason}
        )
        raise TableError(reason)
    retried = RecoveryState.objects.filter(run=run, phase=Phase.FAILED)
    for state in retried:
        # Back to the last phase that is safe to redo: archive again (it
        # reconciles with the ledger first) or mark again if never marked.
        phase = Phase.PENDING if state.eligible_count is None else Phase.ARCHIVING
        RecoveryState.objects.filter(pk=state.pk).update(phase=phase, last_error="", finished_at=None)
    ArchivalRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, finished_at=None, stop_requested=False)
    AuditEvent.objects.record(
        "run.resumed",
        actor=actor,
        obj=run,
        run_id=run.pk,
        details={"cutoff": run.cutoff.isoformat()},
    )
    log_line(f"run {run.pk} resumed")
    return True


def resume_run(run_id: int | None = None, *, actor=None, on_table=None, on_batch=None) -> RunResult:
    """Continue an unfinished run (the oldest one when ``run_id`` is None) with its original cutoff.

    A run none of whose tables is unfinished (completed, abandoned) is refused
    with a TableError and an audited ``run.resume_refused``: resuming it would
    change nothing but its history (events, finish time). One such run still
    marked RUNNING (its process died before closing it) is only closed.
    """
    if run_id is None:
        run = ArchivalRun.objects.filter(states__phase__in=OPEN_PHASES).distinct().order_by("pk").first()
        if run is None:
            raise TableError("no run has unfinished tables")
    else:
        run = ArchivalRun.objects.get(pk=run_id)
    if not reopen_run(run, actor=actor):
        return finalize_run(run.pk)
    run.refresh_from_db()
    results = _process(run, worker=leases.new_worker_id(), on_table=on_table, on_batch=on_batch)
    finalize_run(run.pk)
    run.refresh_from_db()
    return _run_result(run, results)


def abandon_run(run_id: int, *, actor, reason: str, tables: list[str] | None = None) -> RunResult:
    """Mark a run's unfinished tables ABANDONED (an explicit, audited decision).

    Nothing is lost: committed batches stay archived, unmoved rows stay in the
    source, and a streamed batch caught between copy and delete leaves its rows
    in both places (a later run skips the identical archived copies).
    """
    if not reason.strip():
        raise TableError("abandoning a run needs a reason")
    if len(reason) > FREE_TEXT_MAX_LENGTH:
        raise TableError(f"the reason is limited to {FREE_TEXT_MAX_LENGTH:,} characters (it has {len(reason):,})")
    run = ArchivalRun.objects.get(pk=run_id)
    states = RecoveryState.objects.filter(run=run, phase__in=OPEN_PHASES)
    if tables:
        states = states.filter(config__in=select_configs(tables, active_only=False))
    for state in states:
        RecoveryState.objects.filter(pk=state.pk).update(
            phase=Phase.ABANDONED,
            last_error=f"abandoned: {reason}",
            finished_at=timezone.now(),
        )
        AuditEvent.objects.record(
            "table.abandoned",
            actor=actor,
            run_id=run.pk,
            table_label=state.table_label,
            details={"reason": reason},
        )
    if not RecoveryState.objects.filter(run=run, phase__in=OPEN_PHASES).exists():
        ArchivalRun.objects.filter(
            pk=run.pk,
            status__in=[RunStatus.RUNNING, RunStatus.FAILED, RunStatus.STOPPED],
        ).update(status=RunStatus.ABANDONED, finished_at=timezone.now())
    AuditEvent.objects.record(
        "run.abandoned",
        actor=actor,
        obj=run,
        run_id=run.pk,
        details={"reason": reason, "tables": tables or "all"},
    )
    log_line(f"run {run.pk} abandoned: {reason}")
    run.refresh_from_db()
    return _run_result(run)
