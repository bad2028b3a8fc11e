"""Disposal on the django-q2 workers: time-boxed slices, one batch at a time.

The weekly schedule (``archival.tasks.scheduled_disposal``) plans disposal of
every active table and then executes approved batches; each slice executes
batches until its time box passes and, while approved batches remain,
enqueues its own continuation (``archival.tasks.dispose_slice``). No task
waits for another, and q2's timeout never cuts a batch: the time box is the
scheduler's slice (``archival.dispatch.slice_seconds``), well under it.

Concurrency: ``SchedulerSettings.dispose_concurrency`` (1 by default) caps
the batches executing at once over all workers and machines. A batch is
reserved (its lease taken, the same conditional UPDATE the executor uses)
while the pump's lock is held, the ``SchedulerSettings`` row locked
(``select_for_update``; IMMEDIATE transaction on SQLite), and counted by its
live lease, so two slices never overshoot the cap. A slice that finds the cap
full stops without re-enqueueing: the slices holding the leases go on, and
would otherwise ping-pong with it through the queue. Batches a dead worker
left EXECUTING are taken over at once when it is known dead, else once their
lease expires (archival.engine.leases).

A batch that fails stops the later batches of its table for the rest of the
chain (as ``execute_disposal`` does); the chain carries the failed batch ids
so it does not retry them in a loop. The next weekly slice retries them.

The admin's "execute" enqueues a chain restricted to the batches selected
(``enqueue_disposal``), executed in the name of who selected them. Such a
chain cannot count on the slices holding the leases to execute its batches
(theirs may be other selections), so when the cap is full it waits inside
its time box, polling, and then enqueues its continuation.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from archival import stopping
from archival.dispatch import slice_seconds
from archival.disposal.batches import execute_batch, plan_disposal
from archival.engine.leases import disposal_batches, process_worker_id
from governance.actors import actor_name
from governance.models import AuditEvent, BatchStatus, DisposalBatch, SchedulerSettings
from governance.models.scheduling import SETTINGS_PK

DISPOSE_TASK = "archival.tasks.dispose_slice"
# How often a chain restricted to a selection looks again for a free slot.
BUSY_POLL_SECONDS = 1.0


@dataclass
class DisposalSliceResult:
    worker: str
    planned_batches: int = 0
    plan_errors: list[str] = field(default_factory=list)
    executed: list[int] = field(default_factory=list)
    deleted: int = 0
    held: int = 0
    failed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    remaining: int = 0
    busy: bool = False
    paused: bool = False
    continued: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class QueuedDisposal:
    """What ``enqueue_disposal`` did with a selection of batches."""

    queued: list[int] = field(default_factory=list)
    # Executing under a live lease: the worker holding it finishes them.
    executing: list[int] = field(default_factory=list)
    task_id: str = ""
    # Why nothing was queued, in words; empty when something was.
    refused: str = ""


def enqueue_disposal(batch_ids: Sequence[int], *, actor) -> QueuedDisposal:
    """Enqueue the execution of these batches on the workers, in ``actor``'s name.

    Queues one chain (``dispose_on_workers(batches=...)``) for the batches
    that are executable: approved, failed, or left executing by a worker whose
    lease expired. A batch a live worker is executing is left to it. Refused
    while the scheduler is paused (no slice would take the chain). Audited as
    ``disposal.enqueued``. The caller checks the permission to execute.
    """
    result = QueuedDisposal()
    now = timezone.now()
    selected = DisposalBatch.objects.executable().filter(pk__in=list(batch_ids)).order_by("pk")
    result.executing = list(
        selected.filter(status=BatchStatus.EXECUTING, lease_expires_at__gt=now).values_list("pk", flat=True)
    )
    queued = [pk for pk in selected.values_list("pk", flat=True) if pk not in result.executing]
    if not queued:
        result.refused = "none of the selected batches is approved and waiting for execution"
        return result
    if SchedulerSettings.objects.current().paused:
        result.refused = "the scheduler is paused; resume it to execute disposals on the workers"
        return result
    result.queued = queued
    result.task_id = _enqueue(failed=[], batches=queued, actor=actor)
    AuditEvent.objects.record(
        "disposal.enqueued",
        actor=actor,
        details={"batch_ids": queued, "task_id": result.task_id},
    )
    return result


def dispose_on_workers(
    *,
    plan: bool = False,
    actor=None,
    batches: Sequence[int] | None = None,
    failed: Sequence[int] = (),
    time_box: float | None = None,
    today: dt.date | None = None,
) -> DisposalSliceResult:
    """One slice of disposal on a worker; returns what it did.

    ``plan``: first plan every active table (``plan_disposal``): batches of
    table types approved automatically become executable at once, the others
    wait for review. Then executes approved batches one at a time, table by
    table in key order, at least one (so a chain always progresses) and no
    new one after ``time_box`` seconds (default: the scheduler's slice).
    ``batches``: only these batch ids (an administrator's selection); None
    for every approved batch. ``failed``: batch ids that failed earlier in
    this chain; their tables are left alone. Enqueues the continuation, after
    commit, while executable batches remain, unless the scheduler is paused
    or (for an unrestricted chain) the cap is full.
    Side effects: those of ``plan_disposal`` and ``execute_batch`` (archive
    deletes, certificates, audit events), and the batch leases.
    """
    # The process's own id: the one its heartbeat names, so a worker on
    # another host can tell when this one died and take its batch over.
    worker = process_worker_id()
    result = DisposalSliceResult(worker=worker, failed=list(failed))
    if time_box is None:
        time_box = slice_seconds(SchedulerSettings.objects.current())
    started = time.monotonic()
    if plan:
        planned = plan_disposal(actor=actor, today=today)
        result.planned_batches = planned.batch_count
        result.plan_errors = [f"{t.table_label}: {t.error}" for t in planned.tables if t.error]

    # Always one batch (a chain must progress); then none after the time box or
    # a SIGTERM (the continuation carries on, on another worker if need be).
    def in_time() -> bool:
        return time.monotonic() - started < time_box and not stopping.stop_requested()

    while not result.executed or in_time():
        batch_id, why = _reserve_next(worker, result.failed, batches)
        if batch_id is None and why == "busy" and batches is not None and in_time():
            time.sleep(BUSY_POLL_SECONDS)
            continue
        if batch_id is None:
            result.busy, result.paused = why == "busy", why == "paused"
            break
        outcome = execute_batch(batch_id, actor=actor, today=today, worker=worker)
        result.executed.append(batch_id)
        result.deleted += outcome.deleted
        result.held += outcome.held
        if outcome.error or outcome.skipped:
            # Not again in this chain (a skipped batch would be reserved again at once).
            result.failed.append(batch_id)
            result.errors.append(f"batch {batch_id} ({outcome.table_label}): {outcome.error or outcome.skipped}")
    # Batches another live worker holds are its to finish: counting them would
    # re-enqueue this chain in a tight loop until that lease ends.
    executable = _executable(result.failed, batches)
    result.remaining = executable.filter(disposal_batches.takeable(executable, worker, timezone.now())).count()
    # A restricted chain that found the cap full waited its time box: it
    # continues, at most once per time box, rather than leave its selection.
    if result.remaining and not result.paused and (not result.busy or batches is not None):
        _enqueue_continuation(result.failed, batches, actor)
        result.continued = True
    return result


def _executable(failed: Sequence[int], batches: Sequence[int] | None = None):
    """Approved batches this chain may still execute: of its selection, if it has one,
    and not of a table whose batch failed in it."""
    stopped = DisposalBatch.objects.filter(pk__in=failed).values("config_id")
    executable = DisposalBatch.objects.executable().exclude(config_id__in=stopped)
    return executable if batches is None else executable.filter(pk__in=batches)


def _reserve_next(worker: str, failed: Sequence[int], batches: Sequence[int] | None) -> tuple[int | None, str]:
    """Reserve the next batch for ``worker`` under the scheduler lock: (id, "") or (None, why)."""
    with transaction.atomic(using="default"):
        SchedulerSettings.objects.current()
        # The lock every pump takes: counting live leases and taking one must
        # be one step, or two slices each see a free slot and both start.
        cfg = SchedulerSettings.objects.select_for_update().get(pk=SETTINGS_PK)
        if cfg.paused:
            return None, "paused"
        now = timezone.now()
        executing = DisposalBatch.objects.filter(status=BatchStatus.EXECUTING)
        # Batches other live workers hold: a dead worker's batch takes no slot.
        running = executing.exclude(disposal_batches.takeable(executing, worker, now)).count()
        if running >= cfg.dispose_concurrency:
            return None, "busy"
        candidates = _executable(failed, batches)
        for batch_id in (
            candidates.filter(disposal_batches.takeable(candidates, worker, now))
            .order_by("table_label", "plan_id", "batch_no")
            .values_list("pk", flat=True)
        ):
            # The executor's claim, without counting an attempt (execute_batch counts it).
            if disposal_batches.claim(batch_id, worker, count_attempt=False, status=BatchStatus.EXECUTING):
                return batch_id, ""
        return None, "done"


def _enqueue_continuation(failed: Sequence[int], batches: Sequence[int] | None, actor) -> None:
    def push() -> None:
        _enqueue(failed=failed, batches=batches, actor=actor)

    # After commit, so the next slice sees every lease and status this one wrote.
    transaction.on_commit(push, using="default")


def _enqueue(*, failed: Sequence[int], batches: Sequence[int] | None, actor) -> str:
    """One disposal slice on the queue (``archival.tasks.dispose_slice``); returns the task id."""

    selection = {} if batches is None else {"batches": list(batches)}
    task_id = async_task(
        DISPOSE_TASK,
        failed=list(failed),
        actor=actor_name(actor),
        **selection,
        q_options={"task_name": "disposal-slice", "group": "disposal"},
    )
    return str(task_id or "")
