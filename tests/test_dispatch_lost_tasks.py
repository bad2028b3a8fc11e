"""Tasks lost with a dead worker are re-enqueued in minutes, on any machine, and status --check names them.

A worker process beats every ARCHIVAL_HEARTBEAT_SECONDS (archival.heartbeat).
The tests write the beats a worker on another machine would have written,
then stop: the sweeper must re-enqueue what that worker took (a running slice
holding a lease that has not expired, or a task its cluster fetched without
running) at once, instead of after the lease or lost_task_seconds (15 minutes).
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from django_q.signals import post_execute

from archival import dispatch, heartbeat
from archival.engine.leases import owner_is_dead
from archival.monitoring import health_check
from governance.models import DispatchStatus, RecoveryState, TableDispatch, WorkerHeartbeat
from tests.admin_fixtures import create_source_table, drop_source_table, make_config
from tests.engine_fixtures import drop_archive_tables, manage, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
ELSEWHERE = "worker-host-2:4711:5eed5eed"


@pytest.fixture
def queued(transactional_db):
    """A scheduled run whose one table's task is enqueued and not yet run."""
    create_source_table(table="lost_trade")
    make_config(table_name="lost_trade", months_retention_source=1, batch_size=4)
    started = dispatch.start_scheduled_run(trigger="test", cutoff=dt.date(2026, 1, 1))
    row = TableDispatch.objects.select_related("state").get(run_id=started.run_id)
    assert row.status == DispatchStatus.QUEUED
    yield row
    drop_source_table(table="lost_trade")
    drop_archive_tables()


def beat_then_die(worker: str, seconds_ago: float) -> None:
    heartbeat.beat(worker)
    WorkerHeartbeat.objects.filter(worker=worker).update(seen_at=timezone.now() - timedelta(seconds=seconds_ago))


def test_a_worker_that_stopped_beating_on_another_host_is_dead_and_a_beating_one_is_not(db):
    beat_then_die(ELSEWHERE, 3 * heartbeat.interval() + 1)
    assert owner_is_dead(ELSEWHERE)
    heartbeat.beat(ELSEWHERE)
    assert not owner_is_dead(ELSEWHERE)
    # A process that never beat (a CLI run on another machine) keeps its lease until it expires.
    assert not owner_is_dead("cli-host:99:cafe")


def test_a_slice_running_on_a_dead_machine_is_re_enqueued_before_its_lease_expires(queued):
    row = queued
    TableDispatch.objects.filter(pk=row.pk).update(taken_by=ELSEWHERE, touched_at=timezone.now())
    RecoveryState.objects.filter(pk=row.state_id).update(
        lease_owner=ELSEWHERE, lease_expires_at=timezone.now() + timedelta(seconds=100)
    )
    beat_then_die(ELSEWHERE, 3 * heartbeat.interval() + 1)

    check = health_check()
    assert any("stalled" in m and "lost_trade" in m and ELSEWHERE in m for m in check.messages), check.messages

    swept = dispatch.sweep()
    assert swept.requeued == [row.state.table_label]
    moved = TableDispatch.objects.get(pk=row.pk)
    assert moved.ticket == row.ticket + 1 and moved.taken_by == "" and moved.requeues == 1
    # The new task runs the table, taking the dead owner's lease over at once.
    result = dispatch.run_slice(moved.pk, moved.ticket)
    assert result.outcome in ("done", "continued", "marked"), result
    assert RecoveryState.objects.get(pk=row.state_id).lease_owner != ELSEWHERE


def test_a_task_fetched_by_a_cluster_that_died_is_re_enqueued_and_one_nobody_lost_is_left_alone(queued):
    row = queued
    # Nothing died: the task is merely waiting for a worker.
    assert dispatch.sweep().requeued == []
    # A worker alive when the task was enqueued stops beating: its cluster may have fetched it.
    beat_then_die(ELSEWHERE, 0)
    WorkerHeartbeat.objects.filter(worker=ELSEWHERE).update(
        seen_at=timezone.now() - timedelta(seconds=3 * heartbeat.interval() + 1)
    )
    TableDispatch.objects.filter(pk=row.pk).update(queued_at=timezone.now() - timedelta(seconds=40))
    assert dispatch.sweep().requeued == [row.state.table_label]
    # Re-enqueued once, not at every sweep.
    assert dispatch.sweep().requeued == []
    assert TableDispatch.objects.get(pk=row.pk).requeues == 1


def test_a_slice_killed_by_the_q2_timeout_is_re_enqueued_at_once(queued):
    row = queued
    tasks_before = OrmQ.objects.count()
    # What django-q2's monitor sends after a worker's task hit the timeout.
    post_execute.send(
        sender="django_q",
        task={
            "id": "x",
            "func": dispatch.TABLE_TASK,
            "args": (row.pk, row.ticket),
            "success": False,
            "result": "Task exceeded maximum timeout value (30 seconds)",
        },
    )
    moved = TableDispatch.objects.get(pk=row.pk)
    assert moved.ticket == row.ticket + 1 and moved.requeues == 1
    assert "timeout" in moved.last_outcome
    assert OrmQ.objects.count() == tasks_before + 1
    # A successful slice, or another task's failure, re-enqueues nothing.
    post_execute.send(
        sender="django_q", task={"func": dispatch.TABLE_TASK, "args": (row.pk, moved.ticket), "success": True}
    )
    post_execute.send(sender="django_q", task={"func": "archival.tasks.other", "args": (row.pk,), "success": False})
    assert TableDispatch.objects.get(pk=row.pk).ticket == moved.ticket


def test_a_statement_timeout_longer_than_half_a_lease_is_refused_at_start_up(db):
    # A statement that may outlast the lease would let a live worker's table be taken over.
    refused = manage("check", env=subprocess_env(ARCHIVAL_LEASE_SECONDS=60, ARCHIVAL_STATEMENT_TIMEOUT_MS=31000))
    assert refused.returncode != 0 and "half of ARCHIVAL_LEASE_SECONDS" in refused.stderr
    accepted = manage("check", env=subprocess_env(ARCHIVAL_LEASE_SECONDS=60, ARCHIVAL_STATEMENT_TIMEOUT_MS=30000))
    assert accepted.returncode == 0, accepted.stderr


def test_a_task_run_inline_in_sync_mode_starts_no_heartbeat(monkeypatch):
    # q2's sync mode sends post_spawn in the caller's process (a test, a
    # shell): no worker is there to watch, so nothing may start beating.
    from django_q.conf import Conf
    from django_q.signals import post_spawn

    monkeypatch.setattr(Conf, "SYNC", True)
    monkeypatch.setitem(heartbeat._started, "pid", None)
    post_spawn.send(sender="django_q", proc_name="inline")
    assert heartbeat._started["pid"] is None
