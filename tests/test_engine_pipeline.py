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
from datetime import date, timedelta

import pytest
from django.utils import timezone

from archival import engine
from archival.backends import backend_for
from archival.engine import phases
from archival.engine.archive_tables import created_by_first_batch
from archival.engine.errors import TableError
from archival.engine.pipeline import Pipeline, pipeline_for
from archival.engine.runner import PHASE_ORDER, ordered_states
from archival.engine.spec import build_spec
from governance.chain_verification import verify_chains
from governance.models import AuditEvent, Phase, RecoveryState, RunStatus, TableConfig
from tests.engine_fixtures import snapshot, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)
CLAIMABLE = [p for p in PHASE_ORDER if p != Phase.COMPLETED]


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
    pipeline = pipeline_for(states, "w-test")
    try:
        assert (pipeline is not None) == _overlapping_engine()
    finally:
        if pipeline:
            pipeline.close()
    settings.ARCHIVAL = {**settings.ARCHIVAL, "OVERLAP_TABLES": False}
    assert pipeline_for(states, "w-test") is None


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
    # Every table but the first was marked ahead, and every table verified, on the helper.
    # (Not where Mark creates the archive table: streamed tables, MariaDB.)
    first = result.tables[0].label
    ddl_at_mark = {str(c) for c in _configs() if not created_by_first_batch(build_spec(c, CUTOFF))}
    on_helper = {label for label, thread in counted if thread.startswith("archival-pipeline")}
    assert on_helper == set(eligible) - {first} - ddl_at_mark
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


def test_a_table_started_ahead_is_claimed_and_marked_and_let_go_if_never_taken(demo):
    plan = {t.label: t.eligible for t in engine.plan(cutoff=CUTOFF).tables}
    run = engine.start_run(cutoff=CUTOFF)
    first, second = ordered_states(run)[:2]
    pipeline = Pipeline("w-ahead")
    try:
        pipeline.start(first.pk, CLAIMABLE)
        pipeline.start(second.pk, CLAIMABLE)
        started = pipeline.take(first.pk)
        assert started is not None and started.marked
        row = RecoveryState.objects.get(pk=first.pk)
        assert (row.phase, row.lease_owner) == (Phase.MARKED, "w-ahead")
        assert row.eligible_count == plan[first.table_label]
        assert pipeline.take(first.pk) is None  # taken once
    finally:
        pipeline.close()
    # Never taken: marked (committed), and its lease is free for the resume.
    row = RecoveryState.objects.get(pk=second.pk)
    assert (row.phase, row.lease_owner) == (Phase.MARKED, "")
    assert row.eligible_count == plan[second.table_label]
    RecoveryState.objects.filter(pk=first.pk).update(lease_owner="", lease_expires_at=None)
    assert engine.resume_run(run.pk).status == RunStatus.COMPLETED


def test_a_streamed_table_is_claimed_ahead_but_marked_on_the_runs_thread(demo, settings):
    # Mark creates a streamed table's archive table: two tables' DDL at once
    # in a new namespace collide (CREATE SCHEMA), so the helper leaves Mark.
    if not _overlapping_engine():
        pytest.skip("SQLite runs no helper thread")
    settings.ARCHIVAL = {**settings.ARCHIVAL, "STREAMING_SOURCES": list(settings.SOURCE_DATABASES)}
    run = engine.start_run(cutoff=CUTOFF)
    state = ordered_states(run)[0]
    pipeline = Pipeline("w-ahead")
    try:
        pipeline.start(state.pk, CLAIMABLE)
        started = pipeline.take(state.pk)
        assert started is not None and not started.marked and started.spec.mode == "streaming"
        row = RecoveryState.objects.get(pk=state.pk)
        assert (row.phase, row.lease_owner, row.eligible_count) == (Phase.PENDING, "w-ahead", None)
    finally:
        pipeline.close()
    # A whole streamed cycle with the helper: every table completes, nothing lost.
    RecoveryState.objects.filter(pk=state.pk).update(lease_owner="", lease_expires_at=None)
    original = snapshot(_configs())
    assert engine.resume_run(run.pk).status == RunStatus.COMPLETED
    union_check(_configs(), original)


def test_a_table_leased_elsewhere_is_not_started_ahead(demo):
    run = engine.start_run(cutoff=CUTOFF)
    state = ordered_states(run)[0]
    held_until = timezone.now() + timedelta(minutes=5)
    RecoveryState.objects.filter(pk=state.pk).update(lease_owner="other-host:1:x", lease_expires_at=held_until)
    pipeline = Pipeline("w-ahead")
    try:
        pipeline.start(state.pk, CLAIMABLE)
        assert pipeline.take(state.pk) is None
    finally:
        pipeline.close()
    row = RecoveryState.objects.get(pk=state.pk)
    assert (row.phase, row.lease_owner, row.eligible_count) == (Phase.PENDING, "other-host:1:x", None)


@pytest.fixture
def started_ahead(demo):
    """The run's first table, started by a pipeline's helper and not yet taken: (pipeline, started)."""
    run = engine.start_run(cutoff=CUTOFF)
    state = ordered_states(run)[0]
    pipeline = Pipeline("w-ahead")
    try:
        pipeline.start(state.pk, CLAIMABLE)
        yield pipeline, pipeline._started[state.pk].result()
    finally:
        pipeline.close()


def test_a_table_started_long_ago_has_its_lease_extended_when_taken(started_ahead):
    pipeline, started = started_ahead
    soon = timezone.now() + timedelta(seconds=2)
    started.state.lease_expires_at = soon
    RecoveryState.objects.filter(pk=started.state.pk).update(lease_expires_at=soon)
    assert pipeline.take(started.state.pk) is not None
    assert RecoveryState.objects.get(pk=started.state.pk).lease_expires_at > soon + timedelta(seconds=30)


def test_a_table_whose_lease_was_lost_while_it_waited_is_not_handed_over(started_ahead):
    pipeline, started = started_ahead
    # It expired, and another worker took it over.
    started.state.lease_expires_at = timezone.now()
    RecoveryState.objects.filter(pk=started.state.pk).update(lease_owner="other-host:1:x")
    assert pipeline.take(started.state.pk) is None
    assert RecoveryState.objects.get(pk=started.state.pk).lease_owner == "other-host:1:x"


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
