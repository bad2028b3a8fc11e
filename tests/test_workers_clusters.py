"""Scheduled archival on real django-q2 clusters.

Personas: the weekly schedule (nobody at the keyboard), an archival
administrator who presses "run now", and an operations engineer whose worker
machine dies mid-run. Each test runs ``manage.py qcluster`` subprocesses
against its own databases; see ``tests/sched_fixtures.py``.

Sizes: CI runs the small demo (about 10-40 tables, a few thousand rows).
``SCHED_TABLES`` raises the generated table count for a longer soak.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.timeout(420)

GENERATED = int(os.environ.get("SCHED_TABLES", "30"))


def finished(snap: dict) -> bool:
    runs = snap["runs"]
    return bool(runs) and all(r["status"] != "RUNNING" and r["finalized"] for r in runs)


def assert_every_table_completed_once(snap: dict, *, killed: bool = False) -> None:
    run_ids = {r["id"] for r in snap["runs"]}
    assert len(run_ids) == 1, snap["runs"]
    assert snap["runs"][0]["status"] == "COMPLETED", snap["runs"]
    states = snap["states"]
    assert states and all(s["phase"] == "COMPLETED" for s in states), [s for s in states if s["phase"] != "COMPLETED"]
    # Exactly once: one "marked" and one "completed" audit event per table.
    # (A SIGKILL between a phase commit and its audit row can drop one event,
    # never add one: after a kill, at most once.)
    for action in ("table.marked", "table.completed"):
        per_table = Counter(e["table"] for e in snap["audit"].get(action, []))
        if killed:
            assert max(per_table.values()) == 1, (action, per_table)
        else:
            assert per_table == Counter(s["label"] for s in states), (action, per_table)
    # The audit chain the workers appended to concurrently is one unbroken chain, kill or no kill.
    assert snap["chain"]["ok"] and snap["chain"]["events"], snap["chain"]
    # The ledger agrees with every table's marked count, batch numbers 1..n.
    for s in states:
        batches = [entry for entry in snap["ledger"] if entry["config"] == s["config"]]
        assert [b["batch"] for b in batches] == list(range(1, len(batches) + 1)), s["label"]
        assert sum(b["rows"] for b in batches) == s["eligible"] == s["archived"], s


def assert_nothing_lost(before: dict, after: dict) -> None:
    """source ∪ archive equals the original rows: same multiset, no row in both."""
    assert before["tables"].keys() == after["tables"].keys()
    moved = 0
    for table, was in before["tables"].items():
        now = after["tables"][table]
        assert now["checksum"] == was["checksum"], f"{table}: rows changed or lost"
        assert now["source"] + now["archive"] == was["source"] + was["archive"], table
        assert now["overlap"] == 0, f"{table}: {now['overlap']} rows both in source and archive"
        moved += now["archive"] - was["archive"]
    assert moved > 0


def test_the_weekly_schedule_runs_archival_end_to_end_on_one_orm_cluster(sqlite_site):
    site = sqlite_site
    site.build("--small")
    before = site.snapshot(with_rows=True)
    # The Sunday 02:00 cron fires: make the weekly schedule due now.
    site.py(
        "from datetime import timedelta\nfrom django.utils import timezone\nfrom django_q.models import Schedule\n"
        "Schedule.objects.filter(name='archival: weekly run').update(next_run=timezone.now() - timedelta(minutes=1))"
    )
    cluster = site.start_cluster("orm")
    after = site.wait_for(finished, timeout=240, what="the scheduled run to finish", with_rows=True)
    assert after["runs"][0]["trigger"] == "schedule"
    assert_every_table_completed_once(after)
    assert not after["audit"].get("table.requeued"), after["audit"].get("table.requeued")
    assert_nothing_lost(before, after)
    # catch_up off: the schedule moved on to the next Sunday 02:00, it did not fire twice.
    next_run = site.py(
        "from django_q.models import Schedule\nfrom django.utils import timezone\n"
        "s = Schedule.objects.get(name='archival: weekly run'); n = timezone.localtime(s.next_run)\n"
        "print(n.isoweekday(), n.hour, n.minute, n > timezone.now())"
    ).split()
    assert next_run == ["7", "2", "0", "True"]
    assert site.stop_cluster(cluster) == 0


def test_two_redis_clusters_share_one_run_and_process_every_table_exactly_once(
    pg_redis_site,
):
    site = pg_redis_site
    # Small batches and 5-second slices: tables take several slices, so
    # continuations hop between the two clusters.
    site.env["ARCHIVAL_BATCH_SIZE"] = "200"
    site.build(
        "--positions",
        "6000",
        "--generated-tables",
        str(GENERATED),
        "--generated-rows",
        "300",
        settings={
            "slice_seconds": 5,
            "mark_concurrency": 20,
            "archive_concurrency": 10,
            "per_source_concurrency": 8,
        },
    )
    before = site.snapshot(with_rows=True)
    first, second = site.start_cluster("machine-a"), site.start_cluster("machine-b")
    time.sleep(3)
    out = site.manage("schedule_archival", "--run-now", "--actor", "administrator")
    assert "started on the workers" in out
    after = site.wait_for(finished, timeout=300, what="the shared run to finish", with_rows=True)
    assert_every_table_completed_once(after)
    assert_nothing_lost(before, after)
    # Both machines did part of the work (worker ids are host:pid:random).
    pids = {
        int(e["actor"].split(":")[1]) for action in ("table.marked", "table.completed") for e in after["audit"][action]
    }
    assert pids & site.cluster_pids(first), "machine A did nothing"
    assert pids & site.cluster_pids(second), "machine B did nothing"
    assert sum(d["slices"] for d in after["dispatch"]) > len(after["states"]), "no table needed a second slice"
    # Every continuation was handed on by the slice that ended, none rescued
    # by the sweeper (which is for dead workers, not the healthy path).
    assert not after["audit"].get("table.requeued"), after["audit"].get("table.requeued")
    assert site.stop_cluster(first) == 0
    assert site.stop_cluster(second) == 0


def test_a_killed_cluster_loses_nothing_and_the_run_completes_through_lease_expiry(
    pg_redis_site,
):
    site = pg_redis_site
    site.env["ARCHIVAL_BATCH_SIZE"] = "50"
    site.build(
        "--positions",
        "20000",
        "--generated-tables",
        "6",
        "--generated-rows",
        "300",
        settings={"slice_seconds": 5, "lost_task_seconds": 20},
    )
    before = site.snapshot(with_rows=True)
    doomed = site.start_cluster("doomed")
    time.sleep(3)
    site.manage("schedule_archival", "--run-now", "--actor", "administrator")

    def mid_run(snap):
        return len(snap["ledger"]) >= 5 and any(s["phase"] not in ("COMPLETED",) for s in snap["states"])

    site.wait_for(mid_run, timeout=120, every=0.5, what="batches to commit")
    site.kill_cluster(doomed)  # SIGKILL to main, sentinel, workers, pusher, monitor
    during = site.snapshot()
    assert not finished(during), "the run finished before the kill; make the data bigger"

    rescuer = site.start_cluster("rescuer")
    after = site.wait_for(finished, timeout=300, what="the run to finish after the kill", with_rows=True)
    assert_every_table_completed_once(after, killed=True)
    assert_nothing_lost(before, after)
    # Recovered by the sweeper (the killed cluster's tasks were dropped by Redis).
    assert after["audit"].get("table.requeued"), "nothing was re-enqueued by the sweeper"
    assert site.stop_cluster(rescuer) == 0
