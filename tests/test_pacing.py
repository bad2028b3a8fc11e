"""Adaptive pacing and run windows: the engine yields to the source's own workload.

The pacer's rules first (no database): quick batches cost nothing, a slow one
halves the next and pauses, quick ones grow it back, within the table's and
the scheduler's limits. Then on the real engine: a second session holds the
source table's lock for a while (shorter than the lock timeout), the batch
that waited for it is slow, and the next ones are smaller and paced before
growing back; a table outside its run window waits with that reason, the
CLI says so, the workers take it up when the window opens, and a window that
closes mid-table leaves it waiting with its progress. Status and the
dashboard show what pacing did and the time spent per reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from archival.engine import pacing, resume_run, run_cycle
from archival.engine.pacing import Limits, Pacer
from archival.engine.status import run_status
from archival.monitoring import health_check
from governance.models import BatchLedger, Phase, RecoveryState, ReplicaWatch, SchedulerSettings
from tests.admin_fixtures import SOURCE, make_persona
from tests.engine_fixtures import union_check
from tests.ops_fixtures import LockHolder
from tests.pacing_fixtures import CUTOFF, ROWS, TABLE, pytestmark_db

# -- the pacer's rules -------------------------------------------------------------


def quick_limits(**overrides) -> Limits:
    return Limits(**{"max_batch": 5000, "min_batch": 250, "slow_ms": 1000, "quick_ms": 250, **overrides})


def test_quick_batches_keep_their_size_never_pause_and_write_nothing():
    pacer = Pacer("t", quick_limits())
    for _ in range(200):
        pacer.after_batch(5000, 0.04)
    assert (pacer.size, pacer.pause_s, pacer.doing) == (5000, 0.0, "")
    assert pacer.changes() == {}  # no write to the recovery state for pacing


def test_a_slow_batch_halves_the_next_and_pauses_then_quick_batches_grow_back():
    pacer = Pacer("t", quick_limits())
    pacer.after_batch(5000, 0.04)
    pacer.after_batch(5000, 1.6)  # slower than slow_ms
    assert pacer.size == 2500 and pacer.pause_s == pytest.approx(1.6)
    assert pacer.doing == "latency" and "batches slowed down" in pacer.note
    assert pacer.changes()["pacing"]["batch_size"] == 2500
    pacer.after_batch(2500, 0.02)
    assert pacer.size == 5000 and pacer.pause_s == pytest.approx(0.4)
    for _ in range(10):
        pacer.after_batch(5000, 0.04)
    assert (pacer.size, pacer.pause_s, pacer.doing) == (5000, 0.0, "")


def test_a_batch_much_slower_per_row_than_the_quickest_is_slow_below_the_slow_bound_but_not_below_the_quick_one():
    pacer = Pacer("t", quick_limits(slowdown=4.0))
    pacer.after_batch(5000, 0.05)  # 10 µs a row
    pacer.after_batch(5000, 0.2)  # 4× slower, but quicker than quick_ms: not slow
    assert pacer.size == 5000 and not pacer.pause_s
    pacer.after_batch(5000, 0.4)  # 8× slower and longer than quick_ms
    assert pacer.size == 2500 and pacer.pause_s == pytest.approx(0.4)


def test_pacing_stays_within_the_smallest_batch_and_the_longest_pause():
    pacer = Pacer("t", quick_limits(min_batch=1000, max_pause_ms=700))
    for _ in range(10):
        pacer.after_batch(pacer.size, 3.0)
    assert pacer.size == 1000 and pacer.pause_s == pytest.approx(0.7)
    assert pacer.slow_batches == 10


def test_lock_timeouts_halve_the_batch_down_to_one_row_and_the_next_slice_starts_there():
    pacer = Pacer("t", quick_limits(max_batch=4, min_batch=4))
    assert [pacer.after_lock_timeout("x") for _ in range(3)] == [2, 1, 1]
    saved = pacer.changes()["pacing"]
    assert Pacer("t", quick_limits(max_batch=4), saved).size == 1
    # Off: every slice at the configured size.
    assert Pacer("t", quick_limits(max_batch=4, enabled=False), saved).size == 4


def test_pacing_switched_off_changes_nothing_and_a_lock_timeouts_smaller_batch_lasts_one_batch():
    pacer = Pacer("t", quick_limits(enabled=False))
    pacer.after_batch(5000, 30.0)
    assert (pacer.size, pacer.pause_s) == (5000, 0.0)
    assert pacer.after_lock_timeout("x") == 2500
    pacer.after_batch(2500, 0.01)
    assert (pacer.size, pacer.doing) == (5000, "")


@pytest.mark.parametrize(
    ("start", "end", "at", "inside"),
    [
        ("01:00", "05:00", "00:59", False),
        ("01:00", "05:00", "01:00", True),
        ("01:00", "05:00", "04:59", True),
        ("01:00", "05:00", "05:00", False),
        ("22:00", "04:00", "23:30", True),
        ("22:00", "04:00", "03:00", True),
        ("22:00", "04:00", "12:00", False),
    ],
)
def test_a_run_window_is_local_time_and_may_span_midnight(start, end, at, inside):
    window = (dt.time.fromisoformat(start), dt.time.fromisoformat(end))
    local = timezone.make_aware(dt.datetime.combine(dt.date(2026, 12, 6), dt.time.fromisoformat(at)))
    assert pacing.in_window(window, local) is inside
    assert pacing.window_from_key(pacing.window_key(window)) == window


def test_the_summary_says_what_pacing_does_and_the_time_spent_per_reason():
    record = {
        "doing": "lag",
        "note": "waiting for replica lag: replica r1 lag 42.0s",
        "seconds": {"latency": 1.25, "lock": 0, "lag": 42.0, "window": 0},
    }
    line = pacing.summary(record)
    assert line.startswith("waiting for replica lag: replica r1 lag 42.0s")
    assert "pacing (batches slowed down) 1.2 s" in line and "replica lag 42.0 s" in line
    assert "lock" not in line.split(";", 1)[1]
    assert pacing.summary({}) == ""


# -- on the engine ---------------------------------------------------------------------


def _window_around(now: dt.datetime, *, inside: bool) -> tuple[dt.time, dt.time]:
    local = timezone.localtime(now)
    shift = dt.timedelta(hours=-1) if inside else dt.timedelta(hours=2)
    start = (local + shift).time().replace(second=0, microsecond=0)
    end = (local + shift + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0)
    return start, end


@pytestmark_db
def test_batches_that_wait_for_another_sessions_lock_are_paced_then_grow_back(paced_table, caplog):
    config, original = paced_table
    # Slow only relative to the table's quickest batch (a lock wait of ~0.8 s
    # is far beyond it); the absolute bound is out of reach.
    SchedulerSettings.objects.update_or_create(
        pk=1, defaults={"pace_quick_batch_ms": 100, "pace_slow_batch_ms": 60_000}
    )
    holders: list[LockHolder] = []

    def lock_after_second_batch(_moved):
        if BatchLedger.objects.count() == 2 and not holders:
            holders.append(LockHolder(SOURCE, TABLE, config.schema_name, seconds=0.8).start())

    with caplog.at_level(logging.INFO, logger="archival.pacing"):
        result = run_cycle(cutoff=CUTOFF, on_batch=lock_after_second_batch)
    for holder in holders:
        holder.release()
    assert result.ok, [(t.label, t.phase, t.error) for t in result.tables]
    state = RecoveryState.objects.get(run_id=result.run_id)
    sizes = list(
        BatchLedger.objects.filter(run_id=result.run_id).order_by("batch_no").values_list("row_count", flat=True)
    )
    # Full batches, the one that waited for the lock, then half, then back to full.
    assert sizes[:3] == [8, 8, 8] and 4 in sizes[3:], sizes
    assert sizes[sizes.index(4) + 1] == 8, sizes
    assert state.pacing["slow_batches"] >= 1
    assert state.pacing["seconds"]["latency"] >= 0.4  # the pause after the slow batch
    assert state.pacing["batch_size"] == 8 and state.pacing["doing"] == ""
    assert any("batches slowed down" in r.getMessage() for r in caplog.records)
    (report,) = run_status(result.run_id)
    assert "pacing (batches slowed down)" in report.tables[0].pacing
    assert union_check([config], original) == {str(config): (0, ROWS)}


@pytestmark_db
def test_a_table_outside_its_run_window_waits_the_cli_says_so_and_a_resume_within_it_finishes(paced_table):
    config, original = paced_table
    config.window_start, config.window_end = _window_around(timezone.now(), inside=False)
    config.full_clean()
    config.save()
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("archival", "run", "--cutoff", CUTOFF.isoformat(), stdout=out)
    assert exited.value.code == 1
    state = RecoveryState.objects.get(config=config)
    key = pacing.window_key((config.window_start, config.window_end))
    assert state.phase == Phase.WAITING and state.waiting_for == key
    assert state.last_error.startswith("run window: ") and "local time" in state.last_error
    assert state.archived_count == 0 and state.eligible_count is None  # not even marked
    text = out.getvalue()
    assert f"waiting for {key}" in text and "run window" in text and "within the window" in text
    # As configured: not a finding for status --check.
    assert not [m for m in health_check().messages if "waiting for window" in m]
    config.window_start, config.window_end = _window_around(timezone.now(), inside=True)
    config.save()
    resumed = resume_run(state.run_id)
    assert resumed.ok, [(t.label, t.phase, t.error) for t in resumed.tables]
    state.refresh_from_db()
    assert state.phase == Phase.COMPLETED and "window" in state.pacing["seconds"]
    assert union_check([config], original) == {str(config): (0, ROWS)}


@pytestmark_db
def test_a_window_that_closes_mid_table_leaves_it_waiting_with_its_progress(paced_table, monkeypatch):
    config, original = paced_table
    config.window_start, config.window_end = dt.time(1, 0), dt.time(5, 0)
    config.save()
    answers = iter([True, True, True])  # advance_table's check, then before batches 1 and 2
    monkeypatch.setattr(pacing, "in_window", lambda window, at=None: next(answers, False))
    result = run_cycle(cutoff=CUTOFF)
    state = RecoveryState.objects.get(run_id=result.run_id)
    assert state.phase == Phase.WAITING and state.waiting_for == "window:01:00-05:00"
    assert state.archived_count == 16 and state.batches_done == 2  # the progress of the batches that committed
    assert state.pacing["doing"] == "window"
    monkeypatch.undo()
    config.window_start = config.window_end = None
    config.save()
    assert resume_run(result.run_id).ok
    assert union_check([config], original) == {str(config): (0, ROWS)}


@pytestmark_db
def test_the_workers_take_a_window_table_up_when_its_window_opens(paced_table):
    from archival import dispatch
    from governance.models import DispatchStatus, TableDispatch

    config, original = paced_table
    config.window_start, config.window_end = _window_around(timezone.now(), inside=False)
    config.save()
    started = dispatch.start_scheduled_run(trigger="test", cutoff=CUTOFF)
    row = TableDispatch.objects.get(run_id=started.run_id)
    dispatch.run_slice(row.pk, row.ticket)
    row.refresh_from_db()
    assert row.status == DispatchStatus.STOPPED and "waiting for window:" in row.last_outcome
    assert dispatch.sweep().taken_up == []  # still closed
    config.window_start, config.window_end = _window_around(timezone.now(), inside=True)
    config.save()
    assert dispatch.sweep().taken_up == [str(config)]
    for _ in range(30):
        row.refresh_from_db()
        if row.status != DispatchStatus.QUEUED:
            break
        dispatch.run_slice(row.pk, row.ticket)
    assert RecoveryState.objects.get(pk=row.state_id).phase == Phase.COMPLETED
    assert union_check([config], original) == {str(config): (0, ROWS)}


@pytestmark_db
def test_status_and_the_dashboard_say_why_the_engine_waits_and_for_how_long(paced_table, client):
    config, _ = paced_table
    from archival.engine import start_run

    run = start_run(cutoff=CUTOFF)
    RecoveryState.objects.filter(run=run).update(
        phase=Phase.ARCHIVING,
        pacing={
            "doing": "lag",
            "note": "waiting for replica lag: replica standby-1 lag 42.0s (paused)",
            "seconds": {"latency": 3.5, "lock": 1.0, "lag": 42.0, "window": 0},
            "batch_size": 2,
            "max_batch_size": 8,
        },
    )
    (report,) = run_status(run.pk)
    line = report.tables[0].pacing
    assert "waiting for replica lag: replica standby-1" in line and "replica lag 42.0 s" in line
    assert report.tables[0].pacing_seconds["lag"] == 42.0
    out = StringIO()
    call_command("archival", "status", stdout=out)
    assert f"{config}: waiting for replica lag" in out.getvalue()
    client.force_login(make_persona("administrator"))
    page = client.get(reverse("admin:index")).content.decode()
    assert "Yielding to the sources" in page and "replica standby-1" in page
    assert "replica lag 42.0 s" in page and "lock timeouts 1.0 s" in page


@pytest.mark.django_db
def test_a_watch_names_a_connection_and_never_holds_a_connection_string(monkeypatch):
    from django.core.exceptions import ValidationError

    monkeypatch.setenv("ARCHIVAL_REPLICA_OK", "postgres://postgres@127.0.0.1:1/postgres")
    monkeypatch.setenv("DATABASE_URL_COPY", "postgres://postgres@127.0.0.1:1/postgres")
    base = {"source_db": "SourceDB1", "name": "r1", "measured_on": "REPLICA"}
    ReplicaWatch(**base, connection_kind="ENV", connection="ARCHIVAL_REPLICA_OK").full_clean()
    refused = {
        ("ENV", "postgres://postgres@10.0.0.9/postgres"): "A plain alias or variable name",
        ("ENV", "DATABASE_URL_COPY"): "must start with ARCHIVAL_REPLICA_",
        ("ENV", "ARCHIVAL_REPLICA_UNSET"): "is not set",
        ("ALIAS", "archive"): "Not a replica alias",
        ("ALIAS", "nowhere"): "Not a replica alias",
        ("ENV", ""): "name the connection",
    }
    for (kind, connection), message in refused.items():
        with pytest.raises(ValidationError) as raised:
            ReplicaWatch(**base, connection_kind=kind, connection=connection).full_clean()
        assert message in str(raised.value), (kind, connection, raised.value)
    with pytest.raises(ValidationError, match="Unknown source database"):
        ReplicaWatch(
            **{**base, "source_db": "Elsewhere"}, connection_kind="ENV", connection="ARCHIVAL_REPLICA_OK"
        ).full_clean()
