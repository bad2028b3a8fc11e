"""Leases: a table of a run and a disposal batch are owned by the same rules.

Claim (free, expired or already ours), renew (extends, saves progress, or
LeaseLost when another took it), release (only the holder's), and takeover:
an expired lease at once, a dead owner's before its expiry.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys

import pytest
from django.db import transaction
from django.utils import timezone

from archival.disposal import batches as disposal_batches_module
from archival.disposal import execute_disposal, plan_disposal
from archival.disposal.workers import dispose_on_workers
from archival.engine import leases
from archival.engine.errors import LeaseLost
from governance.models import (
    ArchivalRun,
    AuditEvent,
    BatchStatus,
    DisposalBatch,
    Phase,
    RecoveryState,
    TableConfig,
    WorkerHeartbeat,
)
from tests.disposal_fixtures import DATABASES, TODAY, create_tables, insert_rows, make_config

pytestmark = pytest.mark.django_db(databases=DATABASES)

ALICE, BOB, CAROL = "host-a:1:a", "host-b:2:b", "host-c:3:c"


def _table_state() -> int:
    config = TableConfig.objects.create(
        source_db="SourceDB1", schema_name="main", table_name="Leased", table_type="OPERATIONAL", date_column="d"
    )
    run = ArchivalRun.objects.create(cutoff=dt.date(2026, 11, 25), started_by="test")
    return RecoveryState.objects.create(run=run, config=config, table_label=str(config), phase=Phase.PENDING).pk


def _disposal_batch() -> int:
    config = TableConfig.objects.create(
        source_db="SourceDB1", schema_name="main", table_name="Leased", table_type="OPERATIONAL", date_column="d"
    )
    return DisposalBatch.objects.create(
        config=config,
        table_label=str(config),
        table_type="OPERATIONAL",
        batch_no=1,
        plan_id="plan",
        key_low=[1],
        key_high=[9],
        row_count=9,
        held_in_range=0,
        disposable_before=TODAY,
        planned_by="planner",
        required_approvals=0,
        status=BatchStatus.APPROVED,
    ).pk


@pytest.fixture(params=["table of a run", "disposal batch"])
def leased(request):
    """(the Leases of the kind, the row's pk, the claim's ``where``)."""
    if request.param == "table of a run":
        return leases.tables, _table_state(), {"phase": [Phase.PENDING]}
    return leases.disposal_batches, _disposal_batch(), {"status": [BatchStatus.APPROVED, BatchStatus.EXECUTING]}


def _row(kind, pk):
    return kind.model.objects.get(pk=pk)


def _expire(kind, pk) -> None:
    kind.model.objects.filter(pk=pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))


def test_a_free_lease_is_claimed_and_a_live_holder_keeps_it(leased):
    kind, pk, where = leased
    claimed = kind.claim(pk, ALICE, where=where)
    assert claimed is not None and claimed.lease_owner == ALICE and claimed.attempts == 1
    assert claimed.lease_expires_at > timezone.now()

    assert kind.claim(pk, BOB, where=where) is None
    assert kind.holder(pk) == ALICE
    again = kind.claim(pk, ALICE, where=where)  # the holder again
    assert again is not None and again.attempts == 2


def test_a_claim_outside_its_where_wins_nothing(leased):
    kind, pk, _ = leased
    other = {"phase": [Phase.COMPLETED]} if kind is leases.tables else {"status": [BatchStatus.EXECUTED]}
    assert kind.claim(pk, ALICE, where=other) is None
    assert kind.holder(pk) == ""


def test_a_renewal_extends_the_lease_and_saves_progress(leased):
    kind, pk, where = leased
    row = kind.claim(pk, ALICE, where=where)
    kind.model.objects.filter(pk=pk).update(lease_expires_at=timezone.now() + dt.timedelta(seconds=1))

    kind.renew(row, ALICE, last_error="half way")

    saved = _row(kind, pk)
    assert saved.last_error == "half way" and row.last_error == "half way"
    assert saved.lease_expires_at > timezone.now() + dt.timedelta(seconds=2)


def test_an_expired_lease_is_taken_over_and_the_old_owner_learns_it_on_renewal(leased):
    kind, pk, where = leased
    row = kind.claim(pk, ALICE, where=where)
    _expire(kind, pk)

    taken = kind.claim(pk, BOB, where=where)
    assert taken is not None and taken.lease_owner == BOB and taken.attempts == 2
    with pytest.raises(LeaseLost):
        kind.renew(row, ALICE, last_error="written by a worker that lost its lease")
    assert _row(kind, pk).last_error == "" and kind.holder(pk) == BOB


def test_a_lost_lease_writes_neither_the_change_nor_its_audit_event(leased):
    kind, pk, where = leased
    row = kind.claim(pk, ALICE, where=where)
    kind.model.objects.filter(pk=pk).update(lease_owner=BOB)  # taken over meanwhile
    events = AuditEvent.objects.count()

    # The event and the write go in one transaction, the caller's.
    with pytest.raises(LeaseLost), transaction.atomic():
        kind.renew(row, ALICE, last_error="late", audit=dict(action="probe.late", actor=ALICE))

    assert AuditEvent.objects.count() == events and _row(kind, pk).last_error == ""


def test_a_dead_process_on_this_host_loses_its_lease_at_once(leased):
    kind, pk, where = leased
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:x"
    assert kind.claim(pk, dead, where=where) is not None

    # Not expired, but its owner is gone.
    taken = kind.claim(pk, BOB, where=where)
    assert taken is not None and taken.lease_owner == BOB
    assert kind.claim(pk, CAROL, where=where) is None  # a live holder keeps it


def test_a_worker_on_another_host_whose_heartbeat_stopped_loses_its_lease_at_once(leased):
    kind, pk, where = leased
    assert kind.claim(pk, ALICE, where=where) is not None
    long_ago = timezone.now() - dt.timedelta(hours=1)
    WorkerHeartbeat.objects.create(worker=ALICE, host="host-a", pid=1, started_at=long_ago, seen_at=long_ago)

    taken = kind.claim(pk, BOB, where=where)
    assert taken is not None and taken.lease_owner == BOB


def test_only_the_holder_releases(leased):
    kind, pk, where = leased
    kind.claim(pk, ALICE, where=where)
    assert not kind.release(pk, BOB)
    assert kind.holder(pk) == ALICE
    assert kind.release(pk, ALICE, last_error="stopped")
    row = _row(kind, pk)
    assert (row.lease_owner, row.lease_expires_at, row.last_error) == ("", None, "stopped")


# -- the disposal executor on the shared lease ------------------------------------


@pytest.fixture
def approved_batch():
    create_tables()
    expired = TODAY - dt.timedelta(days=30)
    insert_rows([(1, f"p{i}", dt.date(2010, 1, 1) + dt.timedelta(days=i), "C1", expired) for i in range(6)])
    make_config("OPERATIONAL")  # no review: approved at planning
    assert plan_disposal(actor="planner", today=TODAY).ok
    return DisposalBatch.objects.get()


def test_an_executor_that_lost_its_lease_leaves_the_closing_to_the_new_owner(approved_batch, monkeypatch):
    """The batch is closed, and its ``disposal.executed`` event written, once: by the lease's holder."""
    delete_and_certify = disposal_batches_module._delete_and_certify

    def slow_then_overtaken(*args, **kwargs):
        cert = delete_and_certify(*args, **kwargs)
        # This executor outlived its lease; another took the batch over and
        # finalises it (it finds the certificate).
        _expire(leases.disposal_batches, approved_batch.pk)
        monkeypatch.setattr(disposal_batches_module, "_delete_and_certify", delete_and_certify)
        overtaker = disposal_batches_module.execute_batch(approved_batch.pk, actor="resumer", today=TODAY, worker=BOB)
        assert overtaker.resumed and not overtaker.skipped
        return cert

    monkeypatch.setattr(disposal_batches_module, "_delete_and_certify", slow_then_overtaken)
    first = disposal_batches_module.execute_batch(approved_batch.pk, actor="operator", today=TODAY, worker=ALICE)

    assert "lease lost to" in first.skipped and not first.error
    batch = DisposalBatch.objects.get(pk=approved_batch.pk)
    assert batch.status == BatchStatus.EXECUTED and batch.lease_owner == ""
    assert AuditEvent.objects.filter(action="disposal.executed").count() == 1


def test_a_disposal_slice_takes_over_a_dead_workers_batch_without_waiting_for_its_expiry(approved_batch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:x"
    DisposalBatch.objects.filter(pk=approved_batch.pk).update(
        status=BatchStatus.EXECUTING, lease_owner=dead, lease_expires_at=timezone.now() + dt.timedelta(minutes=5)
    )

    result = dispose_on_workers(today=TODAY, time_box=0)

    assert result.executed == [approved_batch.pk] and not result.busy, result
    assert DisposalBatch.objects.get(pk=approved_batch.pk).status == BatchStatus.EXECUTED


def test_execute_disposal_still_waits_for_a_live_holder(approved_batch):
    DisposalBatch.objects.filter(pk=approved_batch.pk).update(
        status=BatchStatus.EXECUTING, lease_owner=CAROL, lease_expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    result = execute_disposal(actor="operator", today=TODAY)
    assert [b.skipped for b in result.batches] == ["another worker holds this batch"]
    assert DisposalBatch.objects.get(pk=approved_batch.pk).status == BatchStatus.EXECUTING
