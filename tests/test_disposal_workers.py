"""Disposal on the django-q2 workers (issues 4 and 5): the weekly schedule
plans and executes approved batches one at a time, in time-boxed slices that
re-enqueue themselves; held rows stay.

Runs through django-q2 itself in sync mode (``Conf.SYNC``): the scheduler
picks up the due schedule, each task is signed, run by q2's worker function
and its result saved, as on a cluster but in this process. The real-cluster
tests are tests/test_workers_clusters.py.

Personas: the planner (archival administrator), Alice and Bob (compliance
officers).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule, Task
from django_q.scheduler import scheduler
from django_q.tasks import async_task

from archival.disposal import decide_batch, place_hold, plan_disposal, workers
from archival.disposal.workers import dispose_on_workers, enqueue_disposal
from archival.schedules import DISPOSAL_SCHEDULE
from governance.models import BatchStatus, DisposalBatch, DisposalCertificate, HoldScope, SchedulerSettings
from tests.disposal_fixtures import DATABASES, SOURCE, archived_keys, create_tables, insert_rows, make_config

pytestmark = pytest.mark.django_db(databases=DATABASES)

TODAY = timezone.localdate()
EXPIRED = TODAY - dt.timedelta(days=30)
KEPT = TODAY + dt.timedelta(days=300)


def rows(n: int, retention: dt.date, contract: str, basket: int):
    return [(basket, f"p{i}", dt.date(2012, 1, 1) + dt.timedelta(days=i), contract, retention) for i in range(n)]


@pytest.fixture
def q2_sync(monkeypatch, settings):
    """Tasks run at once, through q2's worker, and each slice takes one batch
    (a zero time box), so a few batches make a chain of continuations."""
    monkeypatch.setattr(Conf, "SYNC", True)
    settings.ARCHIVAL_SCHEDULER = {**settings.ARCHIVAL_SCHEDULER, "MAX_SLICE_SECONDS": 0}


@pytest.fixture
def archive():
    """Archived keys of contracts C1 and C2 (both expired); C3 rows are not expired yet."""
    create_tables()
    insert_rows(rows(7, EXPIRED, "C1", 1) + rows(3, EXPIRED, "C2", 2) + rows(4, KEPT, "C3", 3))
    return {
        "c1": {(1, f"p{i}", dt.date(2012, 1, 1) + dt.timedelta(days=i)) for i in range(7)},
        "c2": {(2, f"p{i}", dt.date(2012, 1, 1) + dt.timedelta(days=i)) for i in range(3)},
    }


def only_the_disposal_schedule_due() -> Schedule:
    Schedule.objects.exclude(name=DISPOSAL_SCHEDULE).update(next_run=timezone.now() + dt.timedelta(days=7))
    schedule = Schedule.objects.get(name=DISPOSAL_SCHEDULE)
    schedule.next_run = timezone.now() - dt.timedelta(minutes=1)
    schedule.save()
    return schedule


def test_the_migration_creates_the_weekly_disposal_schedule():
    schedule = Schedule.objects.get(name=DISPOSAL_SCHEDULE)
    assert (schedule.func, schedule.schedule_type, schedule.cron) == (
        "archival.tasks.scheduled_disposal",
        Schedule.CRON,
        "0 5 * * 0",
    )


def test_the_weekly_schedule_plans_and_disposes_one_batch_per_slice_and_held_rows_stay(
    disposal_personas, archive, q2_sync, django_capture_on_commit_callbacks
):
    # Operational tables are approved automatically (ARCHIVAL_DISPOSAL_POLICY): plan and execute in one go.
    make_config("OPERATIONAL", batch_size=3)
    place_hold(
        scope=HoldScope.CONTRACT,
        actor=disposal_personas["alice"],
        reason="Matter 8",
        source_db=SOURCE,
        contract_value="C2",
    )
    before = archived_keys()
    only_the_disposal_schedule_due()

    # Continuations are enqueued after commit; the test's transaction never
    # commits, so run the callbacks (and the ones they add) as a commit would.
    with django_capture_on_commit_callbacks(execute=True):
        scheduler()

    batches = list(DisposalBatch.objects.order_by("batch_no"))
    assert [b.status for b in batches] == [BatchStatus.EXECUTED] * 3  # 7 rows in batches of 3
    assert all(b.planned_by == "schedule" and b.attempts == 1 for b in batches)
    assert archived_keys() == before - archive["c1"]
    assert archive["c2"] <= archived_keys()
    assert DisposalCertificate.objects.count() == 3
    # The schedule's task, then one continuation per remaining batch, each a q2 success.
    tasks = list(Task.objects.order_by("started"))
    assert [t.func for t in tasks] == ["archival.tasks.scheduled_disposal"] + ["archival.tasks.dispose_slice"] * 2
    assert all(t.success for t in tasks), [t.result for t in tasks]
    assert tasks[0].result["planned_batches"] == 3 and tasks[0].result["continued"]
    assert tasks[-1].result["remaining"] == 0 and not tasks[-1].result["continued"]


def test_approved_batches_run_on_the_workers_and_a_hold_placed_after_approval_still_wins(
    disposal_personas, archive, q2_sync, django_capture_on_commit_callbacks
):
    make_config("FUNCTIONAL", batch_size=4)  # two approvals by people other than the planner
    plan_disposal(actor=disposal_personas["planner"])
    batches = list(DisposalBatch.objects.order_by("batch_no"))
    for batch in batches:
        for officer in ("alice", "bob"):
            decide_batch(
                batch.pk, user=disposal_personas[officer], decision="APPROVE", comment="Expired, no matter open"
            )
    # A matter opens after the approval: contract C1 rows must survive.
    place_hold(
        scope=HoldScope.CONTRACT,
        actor=disposal_personas["alice"],
        reason="Matter 9",
        source_db=SOURCE,
        contract_value="C1",
    )
    before = archived_keys()

    with django_capture_on_commit_callbacks(execute=True):
        async_task("archival.tasks.dispose_slice")

    # Contract C2 had no hold in this story: its expired rows go; every C1 row stays.
    assert archived_keys() == before - archive["c2"]
    assert archive["c1"] <= archived_keys()
    assert set(DisposalBatch.objects.values_list("status", flat=True)) == {BatchStatus.EXECUTED}
    assert sum(DisposalBatch.objects.values_list("held_count", flat=True)) == 7
    assert Task.objects.filter(func="archival.tasks.dispose_slice", success=True).count() == len(batches)


def test_batches_awaiting_review_are_not_executed_by_the_schedule(disposal_personas, archive, q2_sync):
    make_config("FUNCTIONAL", batch_size=4)
    before = archived_keys()
    only_the_disposal_schedule_due()

    scheduler()

    assert archived_keys() == before
    assert set(DisposalBatch.objects.values_list("status", flat=True)) == {BatchStatus.PENDING_REVIEW}
    assert Task.objects.get().result["remaining"] == 0


def test_a_slice_respects_the_concurrency_cap_and_the_pause(disposal_personas, archive):
    make_config("OPERATIONAL", batch_size=3)
    plan_disposal(actor=disposal_personas["planner"])
    first, *_ = DisposalBatch.objects.order_by("batch_no")
    # Another worker is executing a batch (live lease); the cap is one.
    DisposalBatch.objects.filter(pk=first.pk).update(
        status=BatchStatus.EXECUTING,
        lease_owner="elsewhere:1:x",
        lease_expires_at=timezone.now() + dt.timedelta(minutes=2),
    )
    before = archived_keys()
    busy = dispose_on_workers(time_box=60)
    assert busy.busy and busy.executed == [] and not busy.continued
    assert archived_keys() == before

    # Two at a time: this worker may run beside the other one.
    SchedulerSettings.objects.filter(pk=1).update(dispose_concurrency=2)
    beside = dispose_on_workers(time_box=60)
    assert first.pk not in beside.executed and len(beside.executed) == DisposalBatch.objects.count() - 1
    # The other worker's batch is its own to finish: no continuation spins on it.
    assert beside.remaining == 0 and not beside.continued
    assert DisposalBatch.objects.get(pk=first.pk).lease_owner == "elsewhere:1:x"

    # Paused: nothing starts, nothing is enqueued.
    DisposalBatch.objects.filter(pk=first.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    SchedulerSettings.objects.filter(pk=1).update(paused=True)
    paused = dispose_on_workers(time_box=60)
    assert paused.paused and paused.executed == [] and not paused.continued
    assert DisposalBatch.objects.get(pk=first.pk).status == BatchStatus.EXECUTING

    # Resumed: the dead worker's batch is taken over once its lease has expired.
    SchedulerSettings.objects.filter(pk=1).update(paused=False)
    taken_over = dispose_on_workers(time_box=60)
    assert taken_over.executed == [first.pk]
    assert set(DisposalBatch.objects.values_list("status", flat=True)) == {BatchStatus.EXECUTED}


def test_an_administrators_selection_runs_on_the_workers_in_their_name_and_no_other_batch(
    disposal_personas, archive, q2_sync, django_capture_on_commit_callbacks
):
    make_config("OPERATIONAL", batch_size=3)  # approved automatically: every batch is executable
    plan_disposal(actor=disposal_personas["planner"])
    first, second, third, *others = DisposalBatch.objects.order_by("batch_no")

    with django_capture_on_commit_callbacks(execute=True):
        queued = enqueue_disposal([first.pk, third.pk], actor=disposal_personas["planner"])

    assert queued.queued == [first.pk, third.pk] and not queued.refused
    statuses = dict(DisposalBatch.objects.values_list("pk", "status"))
    assert statuses == {
        first.pk: BatchStatus.EXECUTED,
        second.pk: BatchStatus.APPROVED,
        third.pk: BatchStatus.EXECUTED,
        **{b.pk: BatchStatus.APPROVED for b in others},
    }
    assert set(DisposalCertificate.objects.values_list("executed_by", flat=True)) == {"planner"}
    # One batch per slice: the selection's chain is two slices, the continuation carrying the selection.
    tasks = list(Task.objects.order_by("started"))
    assert [t.func for t in tasks] == ["archival.tasks.dispose_slice"] * 2
    assert all(t.kwargs["batches"] == [first.pk, third.pk] and t.kwargs["actor"] == "planner" for t in tasks)
    assert tasks[-1].result["remaining"] == 0 and not tasks[-1].result["continued"]


def test_a_selection_that_finds_the_cap_full_waits_its_time_box_and_continues(
    disposal_personas, archive, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(workers, "BUSY_POLL_SECONDS", 0.01)
    make_config("OPERATIONAL", batch_size=3)
    plan_disposal(actor=disposal_personas["planner"])
    first, second, *_ = DisposalBatch.objects.order_by("batch_no")
    # Another worker executes the first batch (live lease); the cap is one.
    DisposalBatch.objects.filter(pk=first.pk).update(
        status=BatchStatus.EXECUTING,
        lease_owner="elsewhere:1:x",
        lease_expires_at=timezone.now() + dt.timedelta(minutes=2),
    )
    before = archived_keys()

    with django_capture_on_commit_callbacks() as callbacks:
        waited = dispose_on_workers(batches=[second.pk], actor="planner", time_box=0.1)

    # The other worker's chain may never reach this selection: this one goes on.
    assert waited.busy and waited.executed == [] and waited.continued and len(callbacks) == 1
    assert archived_keys() == before
    assert DisposalBatch.objects.get(pk=second.pk).status == BatchStatus.APPROVED
