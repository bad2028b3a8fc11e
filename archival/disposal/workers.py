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
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from django.db import transaction
from django.utils import timezone

from archival import stopping
from archival.disposal.engine import execute_batch, plan_disposal
from archival.engine.leases import disposal_batches, process_worker_id

DISPOSE_TASK = "archival.tasks.dispose_slice"


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


def dispose_on_workers(
    *,
    plan: bool = False,
    actor=None,
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
    ``failed``: batch ids that failed earlier in this chain; their tables are
    left alone. Enqueues the continuation, after commit, while executable
    batches remain, unless the scheduler is paused or the cap is full.
    Side effects: those of ``plan_disposal`` and ``execute_batch`` (archive
    deletes, certificates, audit events), and the batch leases.
    """
    from archival.dispatch import slice_seconds
    from governance.models import SchedulerSettings

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
    while not result.executed or (time.monotonic() - started < time_box and not stopping.stop_requested()):
        batch_id, why = _reserve_next(worker, result.failed)
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
    executable = _executable(result.failed)
    result.remaining = executable.filter(disposal_batches.takeable(executable, worker, timezone.now())).count()
    if result.remaining and not (result.busy or result.paused):
        _enqueue_continuation(result.failed)
        result.continued = True
    return result


def _executable(failed: Sequence[int]):
    """Approved batches this chain may still execute: not of a table whose batch failed in it."""
    from governance.models import DisposalBatch

    stopped = DisposalBatch.objects.filter(pk__in=failed).values("config_id")
    return DisposalBatch.objects.executable().exclude(config_id__in=stopped)


def _reserve_next(worker: str, failed: Sequence[int]) -> tuple[int | None, str]:
    """Reserve the next batch for ``worker`` under the scheduler lock: (id, "") or (None, why)."""
    from governance.models import BatchStatus, DisposalBatch, SchedulerSettings
    from governance.models.scheduling import SETTINGS_PK

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
        candidates = _executable(failed)
        for batch_id in (
            candidates.filter(disposal_batches.takeable(candidates, worker, now))
            .order_by("table_label", "plan_id", "batch_no")
            .values_list("pk", flat=True)
        ):
            # The executor's claim, without counting an attempt (execute_batch counts it).
            if disposal_batches.claim(batch_id, worker, count_attempt=False, status=BatchStatus.EXECUTING):
                return batch_id, ""
        return None, "done"


def _enqueue_continuation(failed: Sequence[int]) -> None:
    def push() -> None:
        from django_q.tasks import async_task

        async_task(DISPOSE_TASK, failed=list(failed), q_options={"task_name": "disposal-slice", "group": "disposal"})

    # After commit, so the next slice sees every lease and status this one wrote.
    transaction.on_commit(push, using="default")
