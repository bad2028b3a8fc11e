"""Crash safety: real engine processes killed with SIGKILL, then resumed.

Each trial runs ``manage.py archival run`` in a subprocess that kills itself
with SIGKILL at a named point (archival.engine.faults) or is killed from
outside after a random delay, then ``manage.py archival resume`` finishes the
run. Source ∪ archive must equal the original rows exactly, nothing may be
duplicated, and the recovery state must agree with the archive's ledger.

CI size: every named point once per topology plus two random kills each.
CRASH_TRIALS=N adds N random kills per topology (the full size).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from governance.models import BatchLedger, Phase, RecoveryState, TableConfig
from tests.engine_fixtures import BASE_DIR, manage, snapshot, subprocess_env, union_check

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.crash]

CUTOFF = "2026-11-25"
SAME_SERVER_POINTS = [
    "mark_start:1",
    "batch_before_commit:1",
    "batch_before_commit:2",
    "batch_after_commit:2",
    "verify:3",
]
STREAMING_POINTS = [
    "stream_after_copy:1",
    "stream_after_copy:3",
    "stream_after_delete:2",
    "stream_after_delete:5",
    "mark_start:4",
    "verify:2",
]
RANDOM_TRIALS = int(os.environ.get("CRASH_TRIALS", "2"))
# Small batches so a table takes many batches and kills land inside the move.
BATCH = "400"


def topology_env(topology: str, batch: str = BATCH, **extra) -> dict:
    env = subprocess_env(ARCHIVAL_BATCH_SIZE=batch, **extra)
    if topology == "streaming":
        env["ARCHIVAL_STREAMING_SOURCES"] = "SourceDB1,SourceDB2"
    return env


def expected_archived() -> dict[str, int]:
    from archival import engine

    return {t.label: t.eligible for t in engine.plan(cutoff=__import__("datetime").date.fromisoformat(CUTOFF)).tables}


def check_after_resume(original, expected) -> None:
    configs = list(TableConfig.objects.active())
    counts = union_check(configs, original)
    for label, (_, archived) in counts.items():
        assert archived == expected[label], (
            f"{label}: archived {archived}, an uninterrupted run archives {expected[label]}"
        )
    for state in RecoveryState.objects.filter(phase=Phase.COMPLETED):
        ledger = BatchLedger.objects.filter(run_id=state.run_id, config_id=state.config_id)
        assert state.archived_count == sum(ledger.values_list("deleted_count", flat=True)), state
        assert not ledger.exclude(state__in=["MOVED", "DELETED"]).exists(), "a streamed batch was left half done"
    assert not RecoveryState.objects.exclude(phase=Phase.COMPLETED).exists()


def resume(env) -> None:
    done = manage("archival", "resume", env=env)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("topology", "point"),
    [("same_server", p) for p in SAME_SERVER_POINTS] + [("streaming", p) for p in STREAMING_POINTS],
)
def test_a_kill_at_a_named_point_resumes_to_the_same_end(demo, topology, point):
    original = snapshot(TableConfig.objects.active())
    expected = expected_archived()

    killed = manage("archival", "run", "--cutoff", CUTOFF, env=topology_env(topology, ARCHIVAL_FAULT=point))

    assert killed.returncode == -signal.SIGKILL, (
        f"the fault point {point} was not reached: {killed.stdout}{killed.stderr}"
    )
    # Already true at the instant of the kill (streaming may hold a row in both places).
    union_check(list(TableConfig.objects.active()), original, allow_both=topology == "streaming")
    resume(topology_env(topology))
    check_after_resume(original, expected)
    again = manage("archival", "run", "--cutoff", CUTOFF, env=topology_env(topology))
    assert again.returncode == 0 and "0 rows moved" in again.stdout, again.stdout


@pytest.mark.parametrize("topology", ["same_server", "streaming"])
@pytest.mark.parametrize("trial", range(RANDOM_TRIALS))
def test_a_kill_at_a_random_moment_loses_nothing(demo, topology, trial):
    original = snapshot(TableConfig.objects.active())
    expected = expected_archived()
    rng = random.Random(f"{topology}-{trial}")
    proc = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "archival", "run", "--cutoff", CUTOFF],
        env=topology_env(topology, batch="60"),
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill after a random number of committed batches plus a random fraction
    # of the next one: anywhere inside the move, between or within batches.
    # At least half the batches (each moves at most 60 rows) and their tables'
    # Verify and completion are left to come: on SQLite the poll's read of the
    # ledger waits out each commit of the rollback-journal archive file, so it
    # can see the count tens of milliseconds late, and a margin of two
    # batches was once not enough for the kill to land before the run ended.
    batches = sum(-(-eligible // 60) for eligible in expected.values())
    target = rng.randint(1, max(1, min(40, batches // 2)))
    deadline = time.monotonic() + 120
    while BatchLedger.objects.count() < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.03))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    union_check(list(TableConfig.objects.active()), original, allow_both=topology == "streaming")
    assert RecoveryState.objects.exclude(phase=Phase.COMPLETED).exists(), "the kill came after the run ended"
    resume(topology_env(topology))
    check_after_resume(original, expected)


def test_two_engines_started_at_once_move_each_row_once(demo):
    original = snapshot(TableConfig.objects.active())
    expected = expected_archived()
    # Small batches make each run last long enough for the two to overlap.
    env = topology_env("same_server", batch="20")
    cmd = [sys.executable, str(BASE_DIR / "manage.py"), "archival", "run", "--cutoff", CUTOFF, "--table", "Position"]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)

    # Either the second run found the table taken (blocked, exit 1), or it
    # started after the first had finished and found nothing left to move.
    assert codes in ([0, 1], [0, 0]), outputs
    if codes == [0, 1]:
        assert any("1 blocked" in o and "0 rows moved" in o for o in outputs), outputs
    else:
        assert any("0 rows moved" in o for o in outputs), outputs
    position = TableConfig.objects.get(table_name="Position")
    runs_that_moved = set(BatchLedger.objects.filter(config_id=position.pk).values_list("run_id", flat=True))
    assert len(runs_that_moved) == 1
    counts = union_check([position], {str(position): original[str(position)]})
    assert counts[str(position)][1] == expected[str(position)]
