"""The run's helper thread (archival.engine.pipeline): tables read ahead and wrapped up behind.

On PostgreSQL and MariaDB ``run_cycle`` reads the next table's schema and
Mark's counts, and verifies and completes the last table, on a second
thread while this one moves batches; on SQLite it does not. The cases check
that the rows, the counts and the proof are what a run without it gives,
that stale read-ahead is thrown away, and that a failure on the helper
fails its table only (or, if unexpected, the run's call). The kill tests of
the pipeline are the chaos runs (tests/test_bench_chaos.py on PostgreSQL).
"""

from __future__ import annotations

import threading
from datetime import date

import pytest

from archival import engine
from archival.backends import backend_for
from archival.disposal.chain import verify_chains
from archival.engine import phases
from archival.engine.errors import TableError
from archival.engine.pipeline import Pipeline, pipeline_for
from archival.engine.runner import ordered_states
from governance.models import AuditEvent, Phase, RecoveryState, RunStatus, TableConfig
from tests.conftest import snapshot, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)


def _overlapping_engine() -> bool:
    return all(backend_for(a).reads_beside_writes for a in ("default", "archive"))


def _configs():
    return list(TableConfig.objects.active())


def _threads_of(monkeypatch, name: str) -> list[tuple[str, str]]:
    """Record (table label, thread name) for every call of phases.<name>."""
    calls: list[tuple[str, str]] = []
    real = getattr(phases, name)

    def spy(spec, *args, **kwargs):
        calls.append((spec.label, threading.current_thread().name))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(phases, name, spy)
    return calls


def test_the_pipeline_is_used_only_where_every_database_lets_readers_beside_writers(demo, settings):
    run = engine.start_run(cutoff=CUTOFF)
    states = ordered_states(run)
    pipeline = pipeline_for(states)
    try:
        assert (pipeline is not None) == _overlapping_engine()
    finally:
        if pipeline:
            pipeline.close()
    settings.ARCHIVAL = {**settings.ARCHIVAL, "OVERLAP_TABLES": False}
    assert pipeline_for(states) is None


def test_a_pipelined_cycle_moves_the_same_rows_with_the_same_proof(demo, monkeypatch):
    if not _overlapping_engine():
        pytest.skip("SQLite runs its tables one after another, without a helper thread")
    original = snapshot(_configs())
    plan = engine.plan(cutoff=CUTOFF)
    counted = _threads_of(monkeypatch, "count_eligible")
    verified = _threads_of(monkeypatch, "verify")
    told: list[str] = []

    result = engine.run_cycle(cutoff=CUTOFF, on_table=lambda t: told.append(t.label))

    assert result.ok and result.status == RunStatus.COMPLETED
    assert result.moved == plan.eligible > 0
    counts = union_check(_configs(), original)
    eligible = {t.label: t.eligible for t in plan.tables}
    assert {label: archived for label, (_, archived) in counts.items()} == eligible
    states = RecoveryState.objects.filter(run_id=result.run_id)
    assert {s.table_label: s.eligible_count for s in states} == eligible
    assert all(s.phase == Phase.COMPLETED and not s.lease_owner for s in states)
    # Every table but the first was counted ahead, and every table verified, on the helper.
    first = result.tables[0].label
    assert {label for label, thread in counted if thread.startswith("archival-pipeline")} == set(eligible) - {first}
    assert {thread.split("_")[0] for _, thread in verified} == {"archival-pipeline"}
    # on_table heard of each table once, in the run's order, after it finished.
    assert told == [t.label for t in result.tables]
    # Each table's proof is in the chained trail, after its Mark.
    for label in eligible:
        actions = list(
            AuditEvent.objects.filter(run_id=result.run_id, table_label=label)
            .order_by("pk")
            .values_list("action", flat=True)
        )
        assert actions == ["table.marked", "table.completed"], (label, actions)
    assert verify_chains(write_log=False).ok


def test_read_ahead_is_dropped_when_the_config_changed_or_the_table_was_marked(demo):
    run = engine.start_run(cutoff=CUTOFF)
    first, second = ordered_states(run)[:2]
    pipeline = Pipeline()
    try:
        pipeline.prepare(first)
        pipeline.prepare(second)
        TableConfig.objects.filter(pk=first.config_id).update(batch_size=17)
        first = RecoveryState.objects.select_related("config", "run").get(pk=first.pk)
        assert pipeline.take(first) is None
        # Already marked by the time it is claimed: the schema is kept, the counts are not.
        RecoveryState.objects.filter(pk=second.pk).update(phase=Phase.MARKED)
        second = RecoveryState.objects.select_related("config", "run").get(pk=second.pk)
        prepared = pipeline.take(second)
        assert prepared is not None and prepared.mark_counts is None
        assert prepared.spec.label == second.table_label
        # Taken once: a second take has nothing.
        assert pipeline.take(second) is None
    finally:
        pipeline.close()


def test_a_table_failing_on_the_helper_fails_alone_and_lets_its_lease_go(demo, monkeypatch):
    if not _overlapping_engine():
        pytest.skip("SQLite verifies on the run's own thread")
    real = phases.verify
    victim = str(TableConfig.objects.get(table_name="Trade"))

    def verify(spec, state):
        if spec.label == victim:
            raise TableError(f"verify failed for {spec.label}: injected")
        return real(spec, state)

    monkeypatch.setattr(phases, "verify", verify)
    result = engine.run_cycle(cutoff=CUTOFF)

    assert result.status == RunStatus.FAILED
    assert [t.label for t in result.failed] == [victim]
    failed = RecoveryState.objects.get(run_id=result.run_id, table_label=victim)
    assert failed.phase == Phase.FAILED and "injected" in failed.last_error and not failed.lease_owner
    # Its batches committed: the rows are in the archive, the table resumes to verify.
    assert failed.archived_count == failed.eligible_count > 0
    others = RecoveryState.objects.filter(run_id=result.run_id).exclude(table_label=victim)
    assert {s.phase for s in others} == {Phase.COMPLETED}

    monkeypatch.setattr(phases, "verify", real)
    resumed = engine.resume_run(result.run_id)
    assert resumed.status == RunStatus.COMPLETED


def test_an_unexpected_error_on_the_helper_reaches_the_caller(demo, monkeypatch):
    if not _overlapping_engine():
        pytest.skip("SQLite verifies on the run's own thread")

    def verify(spec, state):
        raise RuntimeError("a bug on the helper")

    monkeypatch.setattr(phases, "verify", verify)
    with pytest.raises(RuntimeError, match="a bug on the helper"):
        engine.run_cycle(cutoff=CUTOFF)
