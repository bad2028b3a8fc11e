"""Fan a run out over django-q2 workers: caps, chained slices, sweeper, finalizer.

The engine (``archival.engine``) knows how to move one table; this module
decides *which* table a worker should take next and keeps the record of what
is in flight (``TableDispatch``), because the broker cannot be asked: Redis
hands a task to a cluster without acknowledgement, so a killed cluster's
tasks, prefetched ones included, are simply gone.

How a run flows:

1. :func:`start_scheduled_run` (the weekly schedule, the admin's "run now"
   and ``schedule_archival --run-now`` all call it) creates the run through
   ``archival.engine.start_run`` with the run window as its deadline, writes
   one dispatch row per table (heaviest chain of work first) and calls :func:`pump`.
2. :func:`pump` holds the ``SchedulerSettings`` row locked, counts the tasks
   in flight per stage and per source database, and enqueues waiting tables
   up to the caps (mark 20, archive 10 by default; a parent archives only
   after its child tables are done). When nothing is left in a run it
   enqueues the finalizer once.
3. A table task (:func:`run_slice`) calls ``advance_table`` with a time box
   well under the q2 timeout, then either enqueues its own continuation,
   moves the table to its next stage, or marks it done; then pumps. No task
   ever waits for another.
4. :func:`sweep` (a periodic schedule) re-enqueues tables whose lease expired
   or whose task vanished, alerts on long runs, inconsistent state and
   refused hold violations, and pumps.

Exactly one chain per table: each dispatch row carries a ``ticket``; a task
is enqueued with the ticket it must find, and whoever enqueues the next task
(the chain itself, the pump, the sweeper) first moves the ticket forward with
a conditional UPDATE. A duplicate delivery (q2 is at-least-once) or a task the
sweeper superseded finds a different ticket and does nothing. Within a ticket,
the engine's lease makes sure only one process moves the table.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone
from django_q.conf import Conf
from django_q.tasks import async_task

from archival import alerts, heartbeat, outage, stopping
from archival.backends import backend_for
from archival.engine import advance_table, dependencies, faults, finalize_run, leases, pacing, start_run
from archival.engine.errors import TableError
from archival.engine.runner import reopen_run, retake_waiting, wait_for_database
from archival.engine.table_names import select_configs
from archival.engine.txn import bounded_transaction
from archival.outage import waiting_key
from archival.retry import is_transient
from governance.models import (
    ArchivalRun,
    AuditEvent,
    DispatchStage,
    DispatchStatus,
    Phase,
    RecoveryState,
    RunDispatch,
    RunStatus,
    SchedulerSettings,
    TableDispatch,
    WorkerHeartbeat,
)

logger = logging.getLogger("archival.dispatch")

TABLE_TASK = "archival.tasks.table_slice"
FINALIZE_TASK = "archival.tasks.finalize_run"

# After this many re-enqueues of one table in one run the sweeper stops and
# alerts: something keeps killing that table's worker, a person must look.
MAX_REQUEUES = 10

DONE_PHASES = (Phase.COMPLETED, Phase.FAILED, Phase.ABANDONED, Phase.BLOCKED)
ARCHIVE_PHASES = (Phase.MARKED, Phase.ARCHIVING, Phase.ARCHIVED, Phase.VERIFIED)


def slice_seconds(cfg: SchedulerSettings) -> float:
    """The time box: the configured slice, never more than half the q2 timeout."""
    return float(min(cfg.slice_seconds, settings.ARCHIVAL_SCHEDULER["MAX_SLICE_SECONDS"]))


# --- results -----------------------------------------------------------------


@dataclass
class StartResult:
    run_id: int | None
    tables: int = 0
    blocked: int = 0
    enqueued: int = 0
    continued: list[int] = field(default_factory=list)
    refused: str = ""
    already_started: bool = False  # this schedule firing had started its run before

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PumpResult:
    enqueued: int = 0
    stopped: int = 0
    finalizing: list[int] = field(default_factory=list)
    paused: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SliceResult:
    dispatch_id: int
    outcome: str
    label: str = ""
    phase: str = ""
    moved: int = 0
    continued: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SweepResult:
    requeued: list[str] = field(default_factory=list)
    taken_up: list[str] = field(default_factory=list)
    closed: int = 0
    alerts: int = 0
    pump: PumpResult = field(default_factory=PumpResult)

    def as_dict(self) -> dict:
        return asdict(self)


# --- enqueueing --------------------------------------------------------------


def _enqueue_table(row_id: int, ticket: int, name: str, run_id: int) -> None:
    """Enqueue a slice once the surrounding transaction commits.

    After the commit, so a worker never sees a ticket the database does not
    have yet. If this process dies between commit and push, the row says
    QUEUED with no task: the sweeper finds it by its age and re-enqueues it.
    """

    def push() -> None:
        task_id = async_task(
            TABLE_TASK,
            row_id,
            ticket,
            q_options={
                "task_name": f"{name}#{ticket}",
                "group": f"archival-run-{run_id}",
            },
        )
        TableDispatch.objects.filter(pk=row_id, ticket=ticket).update(task_id=str(task_id or "")[:64])

    transaction.on_commit(push)


def _enqueue_finalize(run_id: int) -> None:
    def push() -> None:
        async_task(
            FINALIZE_TASK,
            run_id,
            q_options={
                "task_name": f"finalize-run-{run_id}",
                "group": f"archival-run-{run_id}",
            },
        )

    transaction.on_commit(push)


def _task_name(row: TableDispatch, label: str) -> str:
    return f"run{row.run_id}-{row.stage.lower()}-{label}"[:90]


# --- adopting a run ----------------------------------------------------------


def _stage_for(phase: str) -> str:
    if phase == Phase.PENDING:
        return DispatchStage.MARK
    if phase in ARCHIVE_PHASES:
        return DispatchStage.ARCHIVE
    return DispatchStage.DONE


def children_map(states: list[RecoveryState], kids: dict[int, list[int]] | None = None) -> dict[int, list[int]]:
    """State id -> state ids of the run's tables that reference it (archival.engine.dependencies).

    ``kids``: the configs' children when the caller has them already (one catalog read per run).
    """
    if kids is None:
        kids = dependencies.children([s.config for s in states])
    state_of = {s.config_id: s.pk for s in states}
    return {state_of[config_id]: sorted(state_of[k] for k in below) for config_id, below in kids.items()}


def _estimated_rows(state: RecoveryState) -> int:
    cfg = state.config
    try:
        with bounded_transaction(cfg.source_db):
            return backend_for(cfg.source_db).estimated_rows(cfg.schema_name, cfg.table_name) or 0
    except Exception as exc:  # noqa: BLE001 (a hint only; the engine reports a broken table on its turn)
        logger.warning("cannot estimate the size of %s: %s", cfg, exc)
        return 0


def longest_work_first(states: list[RecoveryState], kids: dict[int, list[int]]) -> list[RecoveryState]:
    """The states in the order the pump starts them: the heaviest chain of work first.

    A table's weight is its estimated rows (the catalog's figure, no scan)
    plus the heaviest chain of parent tables waiting for it, since a parent
    archives only after all its children. Started in dependency order, the
    run's critical path (Position, then its Contract table) began 25 s into a
    12,000,000-row run on two workers, behind thirty small tables; the
    heaviest chain first is the classic critical-path rule. Children before
    parents is still enforced by the pump at the archive stage; ties keep the
    dependency order.
    """
    size = {s.pk: _estimated_rows(s) for s in states}
    parents_of: dict[int, list[int]] = {}
    for parent, children in kids.items():
        for child in children:
            parents_of.setdefault(child, []).append(parent)
    weight: dict[int, int] = {}

    def chain(pk: int, path: frozenset) -> int:
        if pk not in weight:
            # ``path`` stops a cycle of foreign keys (A -> B -> A) from recursing forever.
            path = path | {pk}
            weight[pk] = size[pk] + max((chain(p, path) for p in parents_of.get(pk, []) if p not in path), default=0)
        return weight[pk]

    order = {s.pk: i for i, s in enumerate(states)}
    return sorted(states, key=lambda s: (-chain(s.pk, frozenset()), order[s.pk]))


def adopt(run: ArchivalRun) -> int:
    """Write the dispatch rows of a run (idempotent); returns how many tables are to be worked on."""
    states = list(RecoveryState.objects.filter(run=run).select_related("config", "run").order_by("pk"))
    by_config = dependencies.children([s.config for s in states])
    states = dependencies.dependency_order(states, by_config, config=lambda s: s.config)
    kids = children_map(states, by_config)
    rows = []
    for position, state in enumerate(longest_work_first(states, kids)):
        stage = _stage_for(state.phase)
        rows.append(
            TableDispatch(
                state=state,
                run=run,
                source_db=state.config.source_db,
                stage=stage,
                status=DispatchStatus.DONE if stage == DispatchStage.DONE else DispatchStatus.WAITING,
                position=position,
                children=kids.get(state.pk, []),
            )
        )
    with transaction.atomic():
        RunDispatch.objects.get_or_create(run=run)
        # ignore_conflicts: adopting twice (a retried task) keeps the first rows.
        TableDispatch.objects.bulk_create(rows, ignore_conflicts=True)
    return sum(r.status == DispatchStatus.WAITING for r in rows)


# --- starting ----------------------------------------------------------------


def start_scheduled_run(
    *,
    actor=None,
    trigger: str = "schedule",
    tables: list[str] | None = None,
    cutoff=None,
    occurrence: str | None = None,
) -> StartResult:
    """Start a run on the workers: the one path for the schedule, "run now" and the CLI flag.

    Refused (audited, nothing created) while the scheduler is paused. Runs
    that an earlier window ended before they finished are continued first,
    with their original cutoff; their tables are blocked in the new run.
    ``occurrence`` (a schedule firing's key) makes the start idempotent: the
    same firing delivered again, at once or after a crash, finds its run and
    only makes sure it is on the workers.
    """
    # A name of no table is refused before anything changes (continued runs included).
    select_configs(tables)
    if occurrence:
        existing = ArchivalRun.objects.filter(occurrence=occurrence).first()
        if existing is not None:
            return _started_before(existing)
    cfg = SchedulerSettings.objects.current()
    if cfg.paused:
        AuditEvent.objects.record(
            "run.refused",
            actor=actor,
            outcome="REFUSED",
            details={"trigger": trigger, "reason": "scheduler paused"},
        )
        return StartResult(run_id=None, refused="the scheduler is paused")
    continued = [
        run.pk
        for run in ArchivalRun.objects.open().filter(
            dispatch__isnull=False, stop_requested=False, deadline__lt=timezone.now()
        )
        if continue_run(run.pk, actor=actor, pump_now=False)
    ]
    deadline = timezone.now() + timedelta(minutes=cfg.max_run_minutes) if cfg.max_run_minutes else None
    try:
        run = start_run(
            cutoff=cutoff, tables=tables, actor=actor, trigger=trigger, deadline=deadline, occurrence=occurrence
        )
    except IntegrityError:
        # Another delivery of the same firing committed its run first.
        existing = ArchivalRun.objects.filter(occurrence=occurrence).first() if occurrence else None
        if existing is None:
            raise
        return _started_before(existing)
    faults.checkpoint("scheduled_run_started")
    todo = adopt(run)
    blocked = RecoveryState.objects.filter(run=run, phase=Phase.BLOCKED).count()
    pumped = pump()
    return StartResult(
        run_id=run.pk,
        tables=todo,
        blocked=blocked,
        enqueued=pumped.enqueued,
        continued=continued,
    )


def _started_before(run: ArchivalRun) -> StartResult:
    """A firing delivered again: its run exists; put it on the workers in case the first delivery died first."""
    todo = adopt(run) if run.status == RunStatus.RUNNING else 0
    AuditEvent.objects.record(
        "run.start_repeated",
        actor="schedule",
        obj=run,
        run_id=run.pk,
        details={"occurrence": run.occurrence, "reason": "this schedule firing already started its run"},
    )
    pumped = pump() if todo else PumpResult()
    return StartResult(run_id=run.pk, tables=todo, enqueued=pumped.enqueued, already_started=True)


def continue_run(run_id: int, *, actor=None, pump_now: bool = True) -> bool:
    """Put an open run back on the workers with a fresh window (its cutoff is unchanged).

    For a run a window or a stop ended with tables unfinished, or one a dead
    CLI process left behind. Failed tables stay failed: retrying them is an
    explicit ``archival resume``. Returns False when the run is not open.
    """
    cfg = SchedulerSettings.objects.current()
    run = ArchivalRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).first()
    if run is None:
        return False
    deadline = timezone.now() + timedelta(minutes=cfg.max_run_minutes) if cfg.max_run_minutes else None
    with transaction.atomic():
        ArchivalRun.objects.filter(pk=run.pk).update(stop_requested=False, deadline=deadline)
        RunDispatch.objects.filter(run=run).update(finalize_enqueued_at=None, finalized_at=None)
    run.refresh_from_db()
    # Tables that waited (a database down, a lock held) get another try in the new window.
    retake_waiting(list(RecoveryState.objects.filter(run=run, phase=Phase.WAITING)), actor=actor)
    adopt(run)
    for row in TableDispatch.objects.filter(run=run, status=DispatchStatus.STOPPED).select_related("state"):
        stage = _stage_for(row.state.phase)
        status = DispatchStatus.DONE if stage == DispatchStage.DONE else DispatchStatus.WAITING
        TableDispatch.objects.filter(pk=row.pk, ticket=row.ticket, status=DispatchStatus.STOPPED).update(
            stage=stage, status=status
        )
    AuditEvent.objects.record(
        "run.continued",
        actor=actor,
        obj=run,
        run_id=run.pk,
        details={"deadline": deadline.isoformat() if deadline else None},
    )
    if pump_now:
        pump()
    return True


@dataclass
class ResumeResult:
    """What ``resume_on_workers`` did with one run."""

    run_id: int
    queued: bool = False
    # Tables to be worked on, and among them the failed ones put back to redo.
    tables: int = 0
    retried: int = 0
    # The run had nothing unfinished but was still open: it was only closed.
    closed: bool = False
    # Why nothing was done, in words; empty otherwise.
    refused: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def resume_on_workers(run_id: int, *, actor=None, pump_now: bool = True) -> ResumeResult:
    """Resume a run on the workers: the engine's resume rules, then ``continue_run``.

    The same rules as ``archival.engine.resume_run`` (``reopen_run``: waiting
    tables taken up, failed tables redone, a closed run with nothing
    unfinished refused), but the tables are enqueued instead of worked on in
    the caller, so an admin request returns at once. Refused, changing
    nothing, while the scheduler is paused and while the run is being worked
    on: a table enqueued or in flight, or a table whose lease a live process
    holds (a CLI run).
    """
    result = ResumeResult(run_id=run_id)
    run = ArchivalRun.objects.filter(pk=run_id).first()
    if run is None:
        result.refused = f"there is no run {run_id}"
        return result
    if SchedulerSettings.objects.current().paused:
        result.refused = "the scheduler is paused; resume the scheduler first"
        return result
    now = timezone.now()
    # Enqueued or in flight on the workers, or leased by a live process (a CLI run).
    busy = TableDispatch.objects.filter(run=run, status=DispatchStatus.QUEUED).count() or (
        RecoveryState.objects.filter(run=run, lease_expires_at__gt=now).exclude(lease_owner="").count()
    )
    if run.status == RunStatus.RUNNING and not run.stop_requested and busy:
        result.refused = (
            f"run {run.pk} is already being worked on ({busy} table{'s' if busy != 1 else ''} in progress); "
            "its page shows the progress"
        )
        return result
    retried = RecoveryState.objects.filter(run=run, phase=Phase.FAILED).count()
    try:
        reopened = reopen_run(run, actor=actor)
    except TableError as exc:
        result.refused = str(exc)
        return result
    if not reopened:
        finalize(run.pk)
        result.closed = True
        return result
    result.retried = retried
    # A run the workers had before: the rows of its failed tables, now to be
    # redone, wait again (continue_run takes the stopped ones, and writes the
    # rows of a run the workers never had).
    for state in RecoveryState.objects.filter(run=run).exclude(phase__in=DONE_PHASES):
        TableDispatch.objects.filter(state=state, status=DispatchStatus.DONE).update(
            stage=_stage_for(state.phase), status=DispatchStatus.WAITING, last_outcome="resumed", touched_at=now
        )
    result.queued = continue_run(run.pk, actor=actor, pump_now=pump_now)
    result.tables = TableDispatch.objects.filter(run=run).exclude(status=DispatchStatus.DONE).count()
    return result


def request_stop(run_id: int, *, actor) -> bool:
    """The stop switch: workers finish their current batch and the run stays resumable."""
    updated = ArchivalRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, stop_requested=False).update(
        stop_requested=True
    )
    if updated:
        AuditEvent.objects.record(
            "run.stop_requested",
            actor=actor,
            obj=ArchivalRun.objects.get(pk=run_id),
            run_id=run_id,
        )
        pump()
    return bool(updated)


def set_paused(paused: bool, *, actor) -> bool:
    """Pause or resume the scheduler; returns True if it changed."""
    cfg = SchedulerSettings.objects.current()
    changed = SchedulerSettings.objects.filter(pk=cfg.pk, paused=not paused).update(paused=paused)
    if changed:
        AuditEvent.objects.record("scheduler.paused" if paused else "scheduler.resumed", actor=actor, obj=cfg)
        if not paused:
            pump()
    return bool(changed)


# --- the pump ----------------------------------------------------------------


def _halted(run: ArchivalRun, now) -> str:
    if run.stop_requested:
        return "stop requested"
    if run.deadline and run.deadline <= now:
        return "run window ended"
    return ""


def pump() -> PumpResult:
    """Enqueue waiting tables up to the caps; enqueue finalizers for finished runs.

    Serialized by a row lock on the SchedulerSettings singleton (on SQLite
    the IMMEDIATE transaction is the lock), so concurrent pumps on several
    machines never overshoot a cap. Cheap: a few queries, no table data.
    """
    result = PumpResult()
    now = timezone.now()
    with transaction.atomic():
        SchedulerSettings.objects.current()
        cfg = SchedulerSettings.objects.select_for_update().get(pk=1)
        result.paused = cfg.paused
        runs = {
            r.pk: r
            for r in ArchivalRun.objects.open().filter(
                dispatch__isnull=False, dispatch__finalize_enqueued_at__isnull=True
            )
        }
        halted = {pk for pk, r in runs.items() if _halted(r, now)}
        if halted:
            result.stopped = TableDispatch.objects.filter(run_id__in=halted, status=DispatchStatus.WAITING).update(
                status=DispatchStatus.STOPPED, last_outcome="not started: run halted"
            )
        in_flight = list(TableDispatch.objects.in_flight().values_list("stage", "source_db"))
        by_stage = Counter(stage for stage, _ in in_flight)
        by_source = Counter(source for _, source in in_flight)
        caps = {
            DispatchStage.MARK: cfg.mark_concurrency,
            DispatchStage.ARCHIVE: cfg.archive_concurrency,
        }
        if not cfg.paused:
            live = [pk for pk in runs if pk not in halted]
            rows = list(
                TableDispatch.objects.filter(
                    run_id__in=live,
                    status__in=[DispatchStatus.WAITING, DispatchStatus.QUEUED],
                )
                .select_related("state")
                .order_by("run_id", "position")
            )
            unfinished = {r.state_id for r in rows}
            # Tables already moving finish first; then new tables get marked.
            waiting = sorted(
                (r for r in rows if r.status == DispatchStatus.WAITING),
                key=lambda r: (r.stage != DispatchStage.ARCHIVE, r.run_id, r.position),
            )
            for row in waiting:
                if (
                    row.stage not in caps
                    or by_stage[row.stage] >= caps[row.stage]
                    or by_source[row.source_db] >= cfg.per_source_concurrency
                ):
                    continue
                if row.stage == DispatchStage.ARCHIVE and any(child in unfinished for child in row.children):
                    continue  # a parent moves only rows no child references: children first
                claimed = TableDispatch.objects.filter(
                    pk=row.pk, status=DispatchStatus.WAITING, ticket=row.ticket
                ).update(
                    status=DispatchStatus.QUEUED,
                    ticket=row.ticket + 1,
                    queued_at=now,
                    touched_at=now,
                    taken_by="",
                )
                if claimed:
                    by_stage[row.stage] += 1
                    by_source[row.source_db] += 1
                    result.enqueued += 1
                    _enqueue_table(
                        row.pk,
                        row.ticket + 1,
                        _task_name(row, row.state.table_label),
                        row.run_id,
                    )
        for pk in runs:
            left = TableDispatch.objects.filter(
                run_id=pk, status__in=[DispatchStatus.WAITING, DispatchStatus.QUEUED]
            ).exists()
            if not left and RunDispatch.objects.filter(run_id=pk, finalize_enqueued_at__isnull=True).update(
                finalize_enqueued_at=now
            ):
                result.finalizing.append(pk)
                _enqueue_finalize(pk)
    return result


# --- one slice of one table --------------------------------------------------


def _move_on(row: TableDispatch, expected_ticket: int, /, **fields) -> bool:
    """Update our dispatch row only if our chain is still the current one.

    ``expected_ticket`` is positional-only: ``fields`` may set a new ``ticket``.
    """
    fields.setdefault("touched_at", timezone.now())
    return bool(TableDispatch.objects.filter(pk=row.pk, ticket=expected_ticket).update(**fields))


def run_slice(dispatch_id: int, ticket: int) -> SliceResult:
    """One time-boxed slice of one table; then continue, advance the stage, or stop.

    A delivery whose ticket is no longer current (a duplicate, or a task the
    sweeper replaced) returns "stale" without touching anything.
    """
    row = TableDispatch.objects.select_related("run", "state").filter(pk=dispatch_id).first()
    if row is None or row.ticket != ticket or row.status != DispatchStatus.QUEUED:
        return SliceResult(dispatch_id, "stale")
    label = row.state.table_label
    # Who runs this task: if this process dies, the sweeper sees it stop beating.
    _move_on(row, ticket, slices=F("slices") + 1, taken_by=leases.process_worker_id())
    cfg = SchedulerSettings.objects.current()
    if row.state.phase in DONE_PHASES:
        _move_on(
            row,
            ticket,
            stage=DispatchStage.DONE,
            status=DispatchStatus.DONE,
            last_outcome=f"phase {row.state.phase}",
        )
        pump()
        return SliceResult(dispatch_id, "done", label, row.state.phase)
    if row.state.phase == Phase.WAITING:
        # Stopped while this task sat in the queue (its database went down):
        # the sweeper takes it up again when the wait is over.
        _move_on(row, ticket, status=DispatchStatus.STOPPED, last_outcome=f"waiting for {row.state.waiting_for}"[:200])
        pump()
        return SliceResult(dispatch_id, "waiting", label, row.state.phase)
    if cfg.paused:
        _move_on(row, ticket, status=DispatchStatus.WAITING, last_outcome="paused")
        return SliceResult(dispatch_id, "paused", label, row.state.phase)
    reason = _halted(row.run, timezone.now()) or (
        "" if row.run.status == RunStatus.RUNNING else f"run {row.run.status}"
    )
    if reason:
        _move_on(row, ticket, status=DispatchStatus.STOPPED, last_outcome=reason)
        pump()
        return SliceResult(dispatch_id, "stopped", label, row.state.phase)

    until = Phase.MARKED if row.stage == DispatchStage.MARK else Phase.COMPLETED
    try:
        table = advance_table(row.state_id, worker=leases.process_worker_id(), until=until, time_box=slice_seconds(cfg))
    except Exception as exc:
        # The engine records table errors itself; what reaches us is the
        # control database failing. Leave the row QUEUED: the sweeper
        # re-enqueues it once it has been quiet for lost_task_seconds.
        _move_on(
            row,
            ticket,
            last_outcome=f"{'transient' if is_transient(exc) else 'error'}: {exc}"[:200],
        )
        raise
    return _after_slice(row, ticket, table)


def _after_slice(row: TableDispatch, ticket: int, table) -> SliceResult:
    label = row.state.table_label
    res = SliceResult(row.pk, "", label, table.phase, table.moved)
    if table.lease_lost or (table.skipped and table.phase not in DONE_PHASES):
        # Another process owns the table (a superseded chain still finishing
        # its batch). The sweeper takes over if that owner dies.
        res.outcome = "lease held elsewhere" if table.skipped else "lease lost"
        _move_on(row, ticket, last_outcome=res.outcome)
        return res
    if table.waiting_for:
        res.outcome = "waiting"
        _move_on(row, ticket, status=DispatchStatus.STOPPED, last_outcome=f"waiting for {table.waiting_for}"[:200])
        if table.waiting_for.startswith("database:"):
            stop_for_outage(row.run_id, table.waiting_for.split(":", 1)[1])
        pump()
        return res
    if table.phase in DONE_PHASES or (table.done and row.stage == DispatchStage.ARCHIVE):
        res.outcome = "done"
        _move_on(
            row,
            ticket,
            stage=DispatchStage.DONE,
            status=DispatchStatus.DONE,
            last_outcome=f"{table.phase} moved={table.moved}",
        )
        pump()
        return res
    if table.done:  # marked: wait for an archive slot
        res.outcome = "marked"
        _move_on(
            row,
            ticket,
            stage=DispatchStage.ARCHIVE,
            status=DispatchStatus.WAITING,
            last_outcome=f"marked eligible={table.eligible}",
        )
        pump()
        return res
    run = ArchivalRun.objects.get(pk=row.run_id)
    reason = _halted(run, timezone.now())
    if reason:
        res.outcome = "stopped"
        _move_on(
            row,
            ticket,
            status=DispatchStatus.STOPPED,
            last_outcome=f"{reason} moved={table.moved}",
        )
        pump()
        return res
    if SchedulerSettings.objects.current().paused:
        res.outcome = "paused"
        _move_on(
            row,
            ticket,
            status=DispatchStatus.WAITING,
            last_outcome=f"paused moved={table.moved}",
        )
        return res
    # Time box used up (or this process got SIGTERM): hand the rest to a fresh task.
    with transaction.atomic():
        if _move_on(
            row,
            ticket,
            ticket=ticket + 1,
            queued_at=timezone.now(),
            taken_by="",
            last_outcome=f"slice moved={table.moved}",
        ):
            _enqueue_table(row.pk, ticket + 1, _task_name(row, label), row.run_id)
            res.continued = True
    res.outcome = "continued" if res.continued else "superseded"
    if stopping.stop_requested():
        res.outcome += " (worker stopping)"
    return res


# --- outages and lock waits --------------------------------------------------


def stop_for_outage(run_id: int, alias: str) -> list[str]:
    """A database of the run does not answer: start none of its tables, alert once, go on with the others.

    The run's unstarted tables that need ``alias`` wait for it (the engine's
    ``wait_for_database``); their dispatch rows stop, so the pump hands
    their slots to other databases' tables. One alert per outage names
    every table waiting for it. Returns the labels of the tables waiting.
    """
    wait_for_database(run_id, alias, reason=f"database {alias} does not answer", worker=leases.process_worker_id())
    waiting = RecoveryState.objects.filter(run_id=run_id, phase=Phase.WAITING, waiting_for=waiting_key(alias))
    TableDispatch.objects.filter(run_id=run_id, state__in=waiting, status=DispatchStatus.WAITING).update(
        status=DispatchStatus.STOPPED, last_outcome=f"waiting for {waiting_key(alias)}", touched_at=timezone.now()
    )
    labels = list(waiting.values_list("table_label", flat=True))
    # Several workers meet the same outage at once: the pump's lock makes
    # "already alerted?" and the alert's audit record one step, so one mail goes.
    with transaction.atomic():
        SchedulerSettings.objects.select_for_update().filter(pk=1).first()
        alerts.database_unreachable(run_id, alias, labels, scheduled=True)
    return labels


def take_up_waiting(now=None) -> list[str]:
    """Put the waiting tables of runs the workers drive back on the workers when their wait is over.

    A table waiting for a database: once a fresh connection to it answers
    (tried once per database per sweep). A table waiting outside its run
    window: once the window is open. A table waiting for a lock or for a
    replica's lag: after ARCHIVAL_LOCK_COOLDOWN_SECONDS. Only within the run window (a halted run's
    tables wait for the next window, ``continue_run``). Returns the labels.
    """
    now = now or timezone.now()
    cooldown = timedelta(seconds=settings.ARCHIVAL["LOCK_COOLDOWN_SECONDS"])
    states = [
        s
        for s in RecoveryState.objects.filter(
            phase=Phase.WAITING, run__status=RunStatus.RUNNING, run__dispatch__isnull=False
        ).select_related("run", "config")
        if not _halted(s.run, now)
    ]
    answers: dict[str, bool] = {}
    ready: dict[int, list[RecoveryState]] = {}
    for state in states:
        if state.waiting_for.startswith("database:"):
            alias = state.waiting_for.split(":", 1)[1]
            if alias not in answers:
                answers[alias] = alias in connections and outage.reachable(alias)
            if not answers[alias]:
                continue
        elif state.waiting_for.startswith("window:"):
            # Outside the table's own run window: taken up once it opens
            # (the run's window still bounds it: ``_halted`` above).
            # The config's window now (an administrator may have changed it meanwhile).
            if not pacing.in_window(pacing.window_of(state.config), now):
                continue
        elif state.updated_at and state.updated_at > now - cooldown:
            # A lock, or a replica's lag: after the cooldown.
            continue
        ready.setdefault(state.run_id, []).append(state)
    labels = []
    for run_id, group in ready.items():
        with transaction.atomic():
            labels += retake_waiting(group, actor="sweeper")
            for state in RecoveryState.objects.filter(pk__in=[s.pk for s in group]).exclude(phase=Phase.WAITING):
                TableDispatch.objects.filter(
                    state=state, status__in=[DispatchStatus.STOPPED, DispatchStatus.DONE]
                ).update(
                    stage=_stage_for(state.phase),
                    status=DispatchStatus.WAITING,
                    last_outcome="taken up again after waiting",
                    touched_at=now,
                )
            # The finalizer may have run while they waited (the run stayed open).
            RunDispatch.objects.filter(run_id=run_id).update(finalize_enqueued_at=None, finalized_at=None)
    return labels


# --- finalizer ---------------------------------------------------------------


def finalize(run_id: int):
    """Close the run (summary, status) through the engine; returns the engine's RunResult."""
    result = finalize_run(run_id)
    RunDispatch.objects.filter(run_id=run_id).update(finalized_at=timezone.now())
    return result


# --- the sweeper -------------------------------------------------------------


def _lease_is_lost(state: RecoveryState, now) -> str:
    """Why the table's lease no longer protects a live worker ("" while it does)."""
    if state.lease_expires_at and state.lease_expires_at < now:
        return f"lease of {state.lease_owner} expired at {state.lease_expires_at:%H:%M:%S}"
    if leases.owner_is_dead(state.lease_owner):
        return f"lease owner {state.lease_owner} is dead"
    return ""


def why_lost(row: TableDispatch, now, cfg: SchedulerSettings) -> str:
    """Why an in-flight table task is presumed lost ("" when it is not); the one rule for the sweeper and health.

    Lost: its lease expired or its owner is dead (no beat, or no process on
    this host); the worker that picked it up stopped beating; it was never
    picked up and a worker alive when it was enqueued has died since (its
    cluster may have fetched it from the broker: Redis hands tasks over
    without acknowledgement, the ORM broker re-delivers only after q2's
    retry); or, failing all that, no sign of life for ``lost_task_seconds``.
    Re-enqueueing a task that was not lost after all costs one stale
    delivery (the ticket moved on), never a second chain.
    """
    state = row.state
    if state.lease_owner:
        return _lease_is_lost(state, now)
    if row.taken_by and heartbeat.is_dead(row.taken_by, now):
        return f"worker {row.taken_by} that took it stopped beating"
    if not row.taken_by and row.queued_at:
        dead = heartbeat.died_since(row.queued_at, now)
        if dead:
            return f"not picked up, and worker(s) {', '.join(dead[:3])} died since it was enqueued"
    if row.touched_at is None or row.touched_at < now - timedelta(seconds=cfg.lost_task_seconds):
        return f"no sign of life since {row.touched_at:%H:%M:%S}" if row.touched_at else "never enqueued"
    return ""


def lost_tasks(now=None) -> list[tuple[TableDispatch, str]]:
    """In-flight table tasks presumed lost, with why (status --check names them)."""
    now = now or timezone.now()
    cfg = SchedulerSettings.objects.current()
    rows = TableDispatch.objects.in_flight().select_related("state", "run")
    return [(row, why) for row in rows if (why := why_lost(row, now, cfg))]


def requeue(row: TableDispatch, why: str, *, now=None) -> bool:
    """Enqueue a fresh task for a table whose task is lost; the ticket moves on, so the old one is void."""
    now = now or timezone.now()
    with transaction.atomic():
        claimed = TableDispatch.objects.filter(pk=row.pk, ticket=row.ticket, status=DispatchStatus.QUEUED).update(
            ticket=row.ticket + 1,
            requeues=F("requeues") + 1,
            queued_at=now,
            touched_at=now,
            taken_by="",
            last_outcome=f"re-enqueued: {why}"[:200],
        )
        if claimed:
            _enqueue_table(row.pk, row.ticket + 1, _task_name(row, row.state.table_label), row.run_id)
    if claimed:
        AuditEvent.objects.record(
            "table.requeued", run_id=row.run_id, table_label=row.state.table_label, details={"reason": why}
        )
    return bool(claimed)


def on_worker_spawn(sender, proc_name: str = "", **kwargs) -> None:
    """django-q2 ``post_spawn``: a worker process started; it beats from now on, as ``leases.process_worker_id()``.

    Not in sync mode: there q2 runs each task inline in the caller's process
    (and sends ``post_spawn`` there), which is no worker for the sweeper to
    watch, and a beating thread would outlive the caller's databases.
    """
    if Conf.SYNC:
        return
    heartbeat.start(leases.process_worker_id())


def requeue_failed_slice(sender, task: dict, **kwargs) -> None:
    """django-q2 ``post_execute`` (in the cluster's monitor): a table slice failed or hit the q2 timeout.

    q2 acknowledges a failed task (``ack_failures``) and never runs it again;
    the table's next slice is enqueued now rather than after the sweeper's
    ``lost_task_seconds``. A table error never gets here (the engine records
    it and the slice returns): this is a worker killed by the timeout or a
    control database that failed under the slice. Must not raise: it runs in
    the monitor process.
    """
    if task.get("success") or task.get("func") != TABLE_TASK:
        return
    try:
        dispatch_id, ticket = task.get("args", (None, None))[:2]
        row = TableDispatch.objects.select_related("state").filter(pk=dispatch_id, ticket=ticket).first()
        if row is None or row.status != DispatchStatus.QUEUED:
            return
        if row.requeues >= MAX_REQUEUES:
            return  # the sweeper stops it and alerts
        requeue(row, f"slice failed in the worker: {str(task.get('result'))[:120]}")
    except Exception as exc:  # noqa: BLE001 (the monitor must go on saving results)
        logger.warning("could not re-enqueue failed slice %s: %s", task.get("id"), exc)


def sweep() -> SweepResult:
    """Periodic: recover lost table tasks, close dispatch rows, alert, pump.

    A table task is lost when its lease expired (the worker died mid-slice:
    SIGKILL, OOM, a machine gone) or, with no lease, when its row has shown no
    sign of life for ``lost_task_seconds`` (the task vanished from Redis with
    a killed cluster, or never reached the broker). Re-enqueueing moves the
    ticket on, so if the presumed-lost task turns up after all it does nothing.
    """
    cfg = SchedulerSettings.objects.current()
    now = timezone.now()
    result = SweepResult()
    lease_seconds = settings.ARCHIVAL["LEASE_SECONDS"]
    # Rows whose table reached a final phase by another path (abandoned by
    # an operator, or a worker killed right after the engine finished).
    result.closed = TableDispatch.objects.filter(
        status__in=[
            DispatchStatus.WAITING,
            DispatchStatus.QUEUED,
            DispatchStatus.STOPPED,
        ],
        state__phase__in=DONE_PHASES,
    ).update(
        stage=DispatchStage.DONE,
        status=DispatchStatus.DONE,
        last_outcome="closed by sweeper: table final",
    )
    for row in TableDispatch.objects.in_flight().select_related("state", "run"):
        state = row.state
        if state.lease_owner and not _lease_is_lost(state, now):
            if state.lease_expires_at and state.lease_expires_at > now + timedelta(seconds=10 * lease_seconds):
                result.alerts += alerts.inconsistent(
                    f"table {state.table_label} in run {row.run_id} has a lease until {state.lease_expires_at}, "
                    f"far beyond the lease length of {lease_seconds}s",
                    key=f"lease_far:{state.pk}:{state.lease_expires_at.isoformat()}",
                    run_id=row.run_id,
                    table_label=state.table_label,
                )
            continue
        why = why_lost(row, now, cfg)
        if not why:
            continue
        if row.requeues >= MAX_REQUEUES:
            if _move_on(
                row,
                row.ticket,
                status=DispatchStatus.STOPPED,
                last_outcome=f"gave up after {row.requeues} re-enqueues",
            ):
                result.alerts += alerts.inconsistent(
                    f"table {state.table_label} in run {row.run_id} was re-enqueued {row.requeues} times ({why}); "
                    "the sweeper stopped trying. Check the workers, then continue the run from the admin.",
                    key=f"gave_up:{row.pk}",
                    run_id=row.run_id,
                    table_label=state.table_label,
                )
            continue
        if requeue(row, why, now=now):
            result.requeued.append(state.table_label)
    # Runs nobody drives (a CLI run whose process died): tell a person.
    orphans = RecoveryState.objects.filter(
        run__status=RunStatus.RUNNING,
        run__dispatch__isnull=True,
        lease_expires_at__lt=now - timedelta(seconds=lease_seconds),
    ).exclude(lease_owner="")
    for state in orphans[:50]:
        result.alerts += alerts.inconsistent(
            f"table {state.table_label} in run {state.run_id} holds an expired lease of {state.lease_owner} and no worker drives "
            f"the run: resume it (archival resume {state.run_id}) or continue it on the workers from the admin.",
            key=f"orphan:{state.pk}:{state.lease_owner}",
            run_id=state.run_id,
            table_label=state.table_label,
        )
    result.taken_up = take_up_waiting(now)
    # Heartbeats of processes gone for a day tell nothing any more.
    WorkerHeartbeat.objects.filter(seen_at__lt=now - timedelta(days=1)).delete()
    result.alerts += alerts.check_long_runs(cfg.long_run_alert_minutes)
    result.alerts += alerts.scan_hold_violations()
    result.pump = pump()
    return result
