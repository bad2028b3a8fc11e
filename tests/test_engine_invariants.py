"""The archival engine against the invariants of DESIGN.md (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from datetime import date

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections

from archival import engine
from archival.backends import backend_for
from archival.backends.sqlite import namespace_for
from archival.engine.archive_tables import created_by_first_batch, ensure_archive_table
from archival.engine.dates import add_years, subtract_months
from archival.engine.spec import build_spec
from governance.models import AuditEvent, BatchLedger, Phase, RecoveryState, RunStatus, TableConfig
from tests.engine_fixtures import snapshot, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)


def configs():
    return list(TableConfig.objects.active())


def archive_count(config, where: str = "", params=()) -> int:
    arc = backend_for("archive")
    ns = namespace_for(config.source_db)
    if not arc.table_exists(ns, config.table_name):
        return 0
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {arc.qualified(ns, config.table_name)} {where}", list(params))
        return cur.fetchone()[0]


def position() -> TableConfig:
    return TableConfig.objects.get(table_name="Position")


def test_a_full_cycle_moves_every_eligible_row_and_loses_nothing(demo):
    original = snapshot(configs())
    plan = engine.plan(cutoff=CUTOFF)
    assert all(not t.problems for t in plan.tables), [t.problems for t in plan.tables if t.problems]

    result = engine.run_cycle(cutoff=CUTOFF)

    assert result.ok and result.status == RunStatus.COMPLETED
    assert result.moved == plan.eligible > 0
    counts = union_check(configs(), original)
    by_label = {t.label: t.eligible for t in plan.tables}
    for label, (_, archived) in counts.items():
        assert archived == by_label[label], label
    # Counted: the ledger agrees with the archive for every table.
    for config in configs():
        ledger = sum(BatchLedger.objects.filter(config_id=config.pk).values_list("deleted_count", flat=True))
        assert ledger == archive_count(config), str(config)


def test_the_ledger_reads_give_what_the_orm_gives(demo):
    """phases.ledger_progress/ledger_digest read the ledger with plain statements (governance.rowsql)."""
    from archival.engine.phases import ledger_digest
    from governance.rowsql import select_rows

    TableConfig.objects.filter(table_name="Position").update(batch_size=300)  # several batches, composite keys
    result = engine.run_cycle(cutoff=CUTOFF)
    assert result.ok
    names = ["batch_no", "key_low", "key_high", "row_count", "deleted_count", "state"]
    compared = 0
    for state in RecoveryState.objects.filter(run_id=result.run_id):
        ledger = BatchLedger.objects.filter(run_id=result.run_id, config_id=state.config_id)
        expected = list(ledger.order_by("batch_no").values_list(*names))
        got = select_rows(BatchLedger, names, where={"run_id": result.run_id, "config_id": state.config_id},
                          order_by="batch_no")  # fmt: skip
        assert got == expected
        assert ledger_digest(result.run_id, state.config_id)[:2] == (len(expected), state.archived_count)
        compared += len(expected)
    assert compared > len(result.tables)
    assert any(isinstance(row[2], list) and len(row[2]) > 1 for row in BatchLedger.objects.values_list(*names))


def test_the_plain_instance_reads_give_what_the_orm_gives(demo):
    """rowsql.fetch (the recovery state, its config and run, read once per table) equals the ORM's get."""
    from governance.models import ArchivalRun
    from governance.rowsql import fetch

    result = engine.run_cycle(cutoff=CUTOFF)
    assert result.ok
    for model, pk in (
        (ArchivalRun, result.run_id),
        *[(RecoveryState, s.pk) for s in RecoveryState.objects.filter(run_id=result.run_id)],
        *[(TableConfig, c.pk) for c in configs()],
    ):
        expected = model.objects.get(pk=pk)
        (got,) = fetch(model, where={"id": pk})
        assert got._state.db == expected._state.db and not got._state.adding
        for field in model._meta.concrete_fields:
            assert getattr(got, field.attname) == getattr(expected, field.attname), (model, pk, field.name)
    # JSON keys and timestamps come back decoded, as the ORM gives them.
    state = fetch(RecoveryState, where={"run_id": result.run_id, "phase": "COMPLETED"})[0]
    assert isinstance(state.cursor, list | type(None)) and state.updated_at.tzinfo is not None


def test_the_joined_state_read_gives_what_select_related_gives(demo):
    """The engine reads a table's state, config and run in one statement (rowsql.fetch_with_parents)."""
    from governance.rowsql import fetch_with_parents

    result = engine.run_cycle(cutoff=CUTOFF)
    assert result.ok
    states = RecoveryState.objects.filter(run_id=result.run_id).select_related("config", "run")
    assert states
    for expected in states:
        got = fetch_with_parents(RecoveryState, pk=expected.pk, parents=["config", "run"])
        for name, model in (("", RecoveryState), ("config", TableConfig), ("run", type(expected.run))):
            want, have = (getattr(expected, name), getattr(got, name)) if name else (expected, got)
            assert have._state.db == want._state.db and not have._state.adding
            for field in model._meta.concrete_fields:
                assert getattr(have, field.attname) == getattr(want, field.attname), (name, field.name)
        # The parents are cached on the instance: reading them runs no query.
        assert got._state.fields_cache.keys() >= {"config", "run"}
    assert fetch_with_parents(RecoveryState, pk=10**9, parents=["config", "run"]) is None


def test_describe_reads_the_foreign_keys_both_ways(demo):
    """The demo's Trade.contractId references Contract: describe sees it from both tables."""
    from archival.backends import backend_for

    for config in configs():
        backend = backend_for(config.source_db)
        info = backend.describe(config.schema_name, config.table_name)
        if info.referenced_by is not None:  # read with the columns (PostgreSQL): as referencing() reads it
            assert sorted(info.referenced_by) == sorted(backend.referencing(config.schema_name, config.table_name))
    trade = next(c for c in configs() if c.table_name == "Trade")
    backend = backend_for(trade.source_db)
    info = backend.describe(trade.schema_name, "Trade")
    assert [(f.column, f.ref_table, f.ref_column) for f in info.foreign_keys] == [
        ("contractId", "Contract", "contractId")
    ]
    assert ("Trade", "contractId", "contractId") in backend.referencing(trade.schema_name, "Contract")
    assert [c.name for c in info.columns][:2] == ["tradeId", "contractId"] and info.primary_key == ["tradeId"]


def test_each_table_finds_the_same_children_as_from_every_config(demo):
    """build_spec reads only the configs that can be children; the plan passes every config."""
    everything = configs()
    found = 0
    for config in everything:
        alone = build_spec(config, CUTOFF).children
        assert alone == build_spec(config, CUTOFF, everything).children, config
        found += len(alone)
    assert found >= 2  # contract joins and foreign keys both name children in the demo


def test_a_second_run_moves_nothing(demo):
    engine.run_cycle(cutoff=CUTOFF)
    original = snapshot(configs())

    second = engine.run_cycle(cutoff=CUTOFF)

    assert second.ok and second.moved == 0
    assert snapshot(configs()) == original


def test_the_plan_changes_nothing_and_counts_rows_without_a_date(demo):
    before = snapshot(configs())
    plan = engine.plan(cutoff=CUTOFF)
    assert snapshot(configs()) == before
    assert not BatchLedger.objects.exists()
    trade = next(t for t in plan.tables if t.label.endswith(".Trade"))
    with connections["SourceDB2"].cursor() as cur:
        backend = backend_for("SourceDB2")
        schema = TableConfig.objects.get(table_name="Trade").schema_name
        cur.execute(f'SELECT COUNT(*) FROM {backend.qualified(schema, "Trade")} WHERE "settlementDate" IS NULL')
        assert trade.null_dates == cur.fetchone()[0] > 0
    assert any("SELECT" in sql for sql in trade.sql)


def test_archive_rows_carry_reference_date_and_retention(demo):
    engine.run_cycle(cutoff=CUTOFF, tables=["Trade"])
    config = TableConfig.objects.get(table_name="Trade")
    arc = backend_for("archive")
    with connections["archive"].cursor() as cur:
        cur.execute(
            f'SELECT "settlementDate", "reference_date", "retention_until", "archive_run_id" '
            f"FROM {arc.qualified(namespace_for('SourceDB2'), 'Trade')}"
        )
        rows = cur.fetchall()
    assert rows
    for settlement, reference, retention, run_id in rows:
        settlement, reference = str(settlement)[:10], str(reference)[:10]
        assert reference == settlement
        assert str(retention)[:10] == add_years(date.fromisoformat(reference), config.effective_years).isoformat()
        assert run_id is not None


def test_children_move_before_their_contracts_and_a_referenced_contract_stays(demo):
    result = engine.run_cycle(cutoff=CUTOFF, tables=["SourceDB1.Position", "SourceDB1.Contract"])
    assert result.ok
    labels = [t.label for t in result.tables]
    contract = TableConfig.objects.get(source_db="SourceDB1", table_name="Contract")
    assert labels.index(str(position())) < labels.index(str(contract))
    backend = backend_for("SourceDB1")
    schema = position().schema_name
    with connections["SourceDB1"].cursor() as cur:
        # No remaining Position references a Contract that was archived.
        cur.execute(
            f"SELECT COUNT(*) FROM {backend.qualified(schema, 'Position')} p "
            f'LEFT JOIN {backend.qualified(schema, "Contract")} c ON c."contractId" = p."contractId" '
            f'WHERE c."contractId" IS NULL'
        )
        assert cur.fetchone()[0] == 0


def test_a_child_that_keeps_rows_longer_keeps_their_contracts(demo):
    """Mark counts a contract only when all its child rows will move under the child's own threshold."""
    contract = TableConfig.objects.get(source_db="SourceDB1", table_name="Contract")
    child = position()
    child.months_retention_source = contract.effective_months + 24
    child.full_clean()
    child.save()
    original = snapshot([child, contract])
    contract_threshold = subtract_months(CUTOFF, contract.effective_months)
    child_threshold = subtract_months(CUTOFF, child.effective_months)
    backend = backend_for("SourceDB1")
    schema = child.schema_name
    contracts, positions = backend.qualified(schema, "Contract"), backend.qualified(schema, "Position")
    with connections["SourceDB1"].cursor() as cur:
        # Contracts past the contract's threshold but not the child's, with positions.
        cur.execute(
            f'SELECT COUNT(DISTINCT c."contractId") FROM {contracts} c JOIN {positions} p '
            f'ON p."contractId" = c."contractId" WHERE c."maturityDate" < %s AND c."maturityDate" >= %s',
            [contract_threshold, child_threshold],
        )
        held_back = cur.fetchone()[0]
    assert held_back > 0, "the demo data must have such contracts for this test to mean anything"

    result = engine.run_cycle(cutoff=CUTOFF, tables=["SourceDB1.Position", "SourceDB1.Contract"])

    # Verify passed for both: the Mark count of Contract equals what moved.
    assert result.ok, [t.error for t in result.failed]
    union_check([child, contract], original)
    with connections["SourceDB1"].cursor() as cur:
        cur.execute(
            f'SELECT COUNT(DISTINCT c."contractId") FROM {contracts} c JOIN {positions} p '
            f'ON p."contractId" = c."contractId" WHERE c."maturityDate" < %s AND c."maturityDate" >= %s',
            [contract_threshold, child_threshold],
        )
        assert cur.fetchone()[0] == held_back
        cur.execute(f'SELECT COUNT(*) FROM {contracts} c WHERE c."maturityDate" < %s', [child_threshold])
        assert cur.fetchone()[0] == 0


def test_a_contract_batch_whose_candidates_are_all_still_referenced_moves_none_and_the_run_goes_on(demo):
    """A parent's batch is bounded by the next keys old enough to go; it may move none of them."""
    contract = TableConfig.objects.get(source_db="SourceDB1", table_name="Contract")
    contract.batch_size = 2
    contract.full_clean()
    contract.save()
    child = position()
    child.months_retention_source = contract.effective_months + 24
    child.full_clean()
    child.save()
    contract_threshold = subtract_months(CUTOFF, contract.effective_months)
    child_threshold = subtract_months(CUTOFF, child.effective_months)
    backend = backend_for("SourceDB1")
    contracts, positions = (
        backend.qualified(child.schema_name, "Contract"),
        backend.qualified(child.schema_name, "Position"),
    )
    with connections["SourceDB1"].cursor() as cur:
        # The two lowest contracts matured after the child's threshold: old
        # enough for the contract table, but their positions stay, so they do.
        cur.execute(f'SELECT "contractId" FROM {contracts} ORDER BY "contractId" LIMIT 2')
        held = [row[0] for row in cur.fetchall()]
        cur.execute(
            f'UPDATE {contracts} SET "maturityDate" = %s WHERE "contractId" IN (%s, %s)',
            [child_threshold + (contract_threshold - child_threshold) / 2, *held],
        )
        cur.execute(f'SELECT COUNT(DISTINCT "contractId") FROM {positions} WHERE "contractId" IN (%s, %s)', held)
        assert cur.fetchone()[0] == 2, "the demo's two lowest contracts must have positions"
    original = snapshot([child, contract])

    result = engine.run_cycle(cutoff=CUTOFF, tables=["SourceDB1.Position", "SourceDB1.Contract"])

    assert result.ok, [t.error for t in result.failed]
    union_check([child, contract], original)
    ledger = list(
        BatchLedger.objects.filter(config_id=contract.pk).order_by("batch_no").values_list("row_count", flat=True)
    )
    assert ledger[0] == 0, ledger  # the first batch's two candidates were both held
    assert sum(ledger) == RecoveryState.objects.get(config=contract).eligible_count > 0
    with connections["SourceDB1"].cursor() as cur:
        cur.execute(f'SELECT COUNT(*) FROM {contracts} WHERE "contractId" IN (%s, %s)', held)
        assert cur.fetchone()[0] == 2
        cur.execute(f'SELECT COUNT(*) FROM {contracts} c WHERE c."maturityDate" < %s', [child_threshold])
        assert cur.fetchone()[0] == 0


def test_an_identical_row_already_archived_is_skipped_and_the_source_row_removed(demo):
    engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    config = TableConfig.objects.get(table_name="PriceHistory")
    arc = backend_for("archive")
    src = backend_for(config.source_db)
    archived_before = archive_count(config)
    # Put one archived row back into the source, unchanged (a restore gone wrong).
    cols = '"instrumentId", "asOfDate", "closePrice", "volume"'
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {arc.qualified(namespace_for(config.source_db), 'PriceHistory')} LIMIT 1")
        row = cur.fetchone()
    with connections[config.source_db].cursor() as cur:
        cur.execute(
            f"INSERT INTO {src.qualified(config.schema_name, 'PriceHistory')} ({cols}) VALUES (%s, %s, %s, %s)",
            list(row),
        )

    result = engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])

    assert result.ok, result.failed
    assert archive_count(config) == archived_before
    with connections[config.source_db].cursor() as cur:
        cur.execute(
            f'SELECT COUNT(*) FROM {src.qualified(config.schema_name, "PriceHistory")} WHERE "instrumentId" = %s AND "asOfDate" = %s',
            [row[0], row[1]],
        )
        assert cur.fetchone()[0] == 0


def test_a_conflicting_archived_row_stops_the_table_and_deletes_nothing(demo):
    engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    config = TableConfig.objects.get(table_name="PriceHistory")
    arc = backend_for("archive")
    src = backend_for(config.source_db)
    cols = '"instrumentId", "asOfDate", "closePrice", "volume"'
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {arc.qualified(namespace_for(config.source_db), 'PriceHistory')} LIMIT 1")
        row = list(cur.fetchone())
    row[3] = int(row[3]) + 1  # same key, different volume
    with connections[config.source_db].cursor() as cur:
        cur.execute(
            f"INSERT INTO {src.qualified(config.schema_name, 'PriceHistory')} ({cols}) VALUES (%s, %s, %s, %s)", row
        )
    before = snapshot([config])

    result = engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])

    assert not result.ok
    failed = result.failed[0]
    assert "different values" in failed.error and "nothing was deleted" in failed.error
    assert snapshot([config]) == before
    assert AuditEvent.objects.filter(action="table.failed", table_label=str(config)).exists()


def test_a_table_with_an_unfinished_run_blocks_a_newer_run_until_resumed(demo):
    run = engine.start_run(cutoff=CUTOFF, tables=["PriceHistory"])
    state = RecoveryState.objects.get(run=run)
    engine.advance_table(state.pk, until=Phase.MARKED)

    newer = engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    assert newer.tables[0].phase == Phase.BLOCKED and "resume or abandon" in newer.tables[0].error
    assert archive_count(TableConfig.objects.get(table_name="PriceHistory")) == 0

    resumed = engine.resume_run(run.pk)
    assert resumed.ok and resumed.tables[0].phase == Phase.COMPLETED


def test_abandoning_needs_a_reason_and_is_audited(demo):
    run = engine.start_run(cutoff=CUTOFF, tables=["PriceHistory"])
    with pytest.raises(engine.errors.TableError if hasattr(engine, "errors") else Exception):
        engine.abandon_run(run.pk, actor="ops", reason="  ")
    result = engine.abandon_run(run.pk, actor="ops", reason="cutoff was wrong")
    assert result.status == RunStatus.ABANDONED
    assert AuditEvent.objects.filter(action="table.abandoned", details__reason="cutoff was wrong").exists()
    # The table is free again.
    assert engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"]).ok


def test_a_resumed_run_keeps_its_original_cutoff(demo):
    run = engine.start_run(cutoff=date(2025, 1, 31), tables=["PriceHistory"])
    resumed = engine.resume_run(run.pk)
    assert resumed.cutoff == "2025-01-31"
    state = RecoveryState.objects.get(run=run)
    assert state.threshold == subtract_months(date(2025, 1, 31), state.config.effective_months)


def test_a_completion_that_rolls_back_leaves_the_row_as_committed_and_the_lease_free(demo, monkeypatch):
    """The in-memory state runs ahead of the row inside the completing transaction; a failure there must not leak."""
    from django.db import DatabaseError

    from governance.models import audit

    record = audit.AuditEventManager.record

    def refuse_completion(self, action, **kwargs):
        if action == "table.completed":
            raise DatabaseError("audit trail unavailable")
        return record(self, action, **kwargs)

    monkeypatch.setattr(audit.AuditEventManager, "record", refuse_completion)
    run = engine.start_run(cutoff=CUTOFF, tables=["PriceHistory"])
    state = RecoveryState.objects.get(run=run)

    failed = engine.advance_table(state.pk)

    row = RecoveryState.objects.get(pk=state.pk)
    assert failed.phase == row.phase == Phase.FAILED and "audit trail unavailable" in failed.error
    assert row.lease_owner == "" and row.lease_expires_at is None
    assert not AuditEvent.objects.filter(run_id=run.pk, action="table.completed").exists()
    ledger = BatchLedger.objects.filter(run_id=run.pk, config_id=state.config_id)
    assert row.archived_count == sum(ledger.values_list("deleted_count", flat=True)) > 0

    monkeypatch.setattr(audit.AuditEventManager, "record", record)
    resumed = engine.resume_run(run.pk)

    assert resumed.status == "COMPLETED"
    done = RecoveryState.objects.get(pk=state.pk)
    assert done.phase == Phase.COMPLETED and done.archived_count == done.eligible_count == row.archived_count


def test_a_lease_goes_to_one_worker_until_it_expires(demo):
    from datetime import timedelta

    from django.utils import timezone

    from archival.engine import leases
    from archival.engine.errors import LeaseLost
    from archival.engine.runner import PHASE_ORDER

    run = engine.start_run(cutoff=CUTOFF, tables=["PriceHistory"])
    state = RecoveryState.objects.get(run=run)
    working = PHASE_ORDER[:-1]

    claimed = leases.tables.claim(state.pk, "host:1:a", where={"phase": working})
    first = RecoveryState.objects.select_related("config", "run").get(pk=state.pk)
    assert (first.lease_owner, first.attempts) == ("host:1:a", 1)
    # The claim hands back the row as it left it, with its config and run
    # (one statement on PostgreSQL: the UPDATE's RETURNING joined to both).
    for have, want in ((claimed, first), (claimed.config, first.config), (claimed.run, first.run)):
        fields = type(want)._meta.concrete_fields
        assert [getattr(have, f.attname) for f in fields] == [getattr(want, f.attname) for f in fields]
    assert first.started_at is not None and first.lease_expires_at > timezone.now()

    assert not leases.tables.claim(state.pk, "host:2:b", where={"phase": working})  # held, not expired
    assert leases.tables.claim(state.pk, "host:1:a", where={"phase": working})  # the holder again
    again = RecoveryState.objects.get(pk=state.pk)
    assert (again.lease_owner, again.attempts, again.started_at) == ("host:1:a", 2, first.started_at)

    RecoveryState.objects.filter(pk=state.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert leases.tables.claim(state.pk, "host:2:b", where={"phase": working})
    assert RecoveryState.objects.get(pk=state.pk).lease_owner == "host:2:b"
    with pytest.raises(LeaseLost):
        leases.tables.renew(first, "host:1:a", archived_count=5)
    leases.tables.renew(again, "host:2:b", archived_count=5, cursor=[7])
    row = RecoveryState.objects.get(pk=state.pk)
    assert (row.archived_count, row.cursor, row.lease_owner) == (5, [7], "host:2:b")
    assert row.lease_expires_at > timezone.now() and again.archived_count == 5

    leases.tables.release(state.pk, "host:2:b")
    RecoveryState.objects.filter(pk=state.pk).update(phase=Phase.COMPLETED)
    assert not leases.tables.claim(state.pk, "host:3:c", where={"phase": working})  # nothing left to do


@pytest.mark.parametrize("path", ["plain SQL", "ORM"])
def test_a_phase_change_whose_lease_is_lost_writes_neither_the_state_nor_its_audit_event(demo, monkeypatch, path):
    """A phase change and its audit event go in together, guarded by the lease (leases.tables.renew with
    ``audit``; on PostgreSQL the UPDATE rides in the statement that takes the chain head)."""
    from django.db import transaction

    from archival.engine import leases
    from archival.engine.errors import LeaseLost
    from archival.engine.runner import PHASE_ORDER
    from governance import rowsql
    from governance.chain_verification import verify_chains

    if path == "ORM":
        from governance import audit_chain as chain

        for module in (rowsql, chain):
            monkeypatch.setattr(module, "plain_sql", lambda using: False)
    run = engine.start_run(cutoff=CUTOFF, tables=["PriceHistory"])
    state = leases.tables.claim(RecoveryState.objects.get(run=run).pk, "host:1:a", where={"phase": PHASE_ORDER[:-1]})
    audit = dict(action="table.marked", actor="host:1:a", run_id=run.pk, table_label=state.table_label)

    with transaction.atomic():
        leases.tables.renew(state, "host:1:a", phase=Phase.MARKED, eligible_count=3, audit=audit)
    row = RecoveryState.objects.get(pk=state.pk)
    event = AuditEvent.objects.order_by("-id").first()
    assert (row.phase, row.eligible_count, event.action, event.table_label) == (
        Phase.MARKED, 3, "table.marked", state.table_label,
    )  # fmt: skip

    RecoveryState.objects.filter(pk=state.pk).update(lease_owner="host:2:b")  # taken over meanwhile
    events = AuditEvent.objects.count()
    with pytest.raises(LeaseLost), transaction.atomic():
        leases.tables.renew(state, "host:1:a", phase=Phase.COMPLETED, audit={**audit, "action": "table.completed"})
    row = RecoveryState.objects.get(pk=state.pk)
    assert (row.phase, row.lease_owner) == (Phase.MARKED, "host:2:b")
    assert AuditEvent.objects.count() == events
    assert verify_chains(write_log=False).ok


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(demo):
    import socket
    import subprocess
    import sys

    from archival.engine import leases
    from archival.engine.runner import PHASE_ORDER

    run = engine.start_run(cutoff=CUTOFF, tables=["PriceHistory"])
    state = RecoveryState.objects.get(run=run)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_owner = f"{socket.gethostname()}:{gone.pid}:x"
    assert leases.tables.claim(state.pk, dead_owner, where={"phase": PHASE_ORDER[:-1]})
    # The lease has not expired, but its owner is gone: the next claim takes it.
    claimed = leases.tables.claim(state.pk, "host:2:b", where={"phase": PHASE_ORDER[:-1]})
    assert claimed is not None and claimed.lease_owner == "host:2:b" and claimed.attempts == 2
    assert claimed.config.table_name == "PriceHistory" and claimed.run.pk == run.pk
    assert (
        leases.tables.claim(state.pk, "host:3:c", where={"phase": PHASE_ORDER[:-1]}) is None
    )  # a live holder keeps it


@pytest.mark.parametrize("path", ["plain SQL", "ORM"])
def test_a_reconcile_mismatch_rolls_the_batch_back(demo, monkeypatch, path):
    """A trigger eats archive inserts: counts disagree, so nothing may be deleted.

    The archive's count of the batch is taken inside the ledger row's INSERT
    (plain SQL), or as a statement of its own before the ORM's save where an
    engine has no RETURNING; either way after the move and before the commit.
    """
    from governance import rowsql

    if path == "ORM":
        from governance import audit_chain as chain

        for module in (rowsql, chain):
            monkeypatch.setattr(module, "plain_sql", lambda using: False)
    config = TableConfig.objects.get(table_name="PriceHistory")
    run = engine.start_run(cutoff=CUTOFF, tables=["PriceHistory"])
    state = RecoveryState.objects.get(run=run)
    engine.advance_table(state.pk, until=Phase.MARKED)
    # The first batch would create the archive table; the trigger needs it now.
    ensure_archive_table(build_spec(config, CUTOFF))
    arc = backend_for("archive")
    table = arc.qualified(namespace_for(config.source_db), "PriceHistory")
    with connections["archive"].cursor() as cur:
        if arc.vendor == "sqlite":
            cur.execute(
                f'CREATE TRIGGER {arc.quote(namespace_for(config.source_db))}."eat_rows" AFTER INSERT ON "PriceHistory" '
                f'WHEN NEW."volume" % 7 = 0 BEGIN DELETE FROM "PriceHistory" WHERE "instrumentId" = NEW."instrumentId" '
                f'AND "asOfDate" = NEW."asOfDate"; END'
            )
        elif arc.vendor == "mysql":
            # MariaDB cannot drop a row in its own trigger: file it under another run instead.
            cur.execute(
                f"CREATE TRIGGER {arc.quote(namespace_for(config.source_db))}.eat_rows BEFORE INSERT ON {table} "
                "FOR EACH ROW SET NEW.archive_run_id = IF(NEW.volume % 7 = 0, NEW.archive_run_id + 1000000, NEW.archive_run_id)"
            )
        else:
            cur.execute(
                "CREATE FUNCTION eat_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                'IF NEW."volume" % 7 = 0 THEN RETURN NULL; END IF; RETURN NEW; END $$'
            )
            cur.execute(f"CREATE TRIGGER eat_rows BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION eat_rows()")
    before = snapshot([config])

    result = engine.advance_table(state.pk)

    assert result.phase == Phase.FAILED and "rolled back" in result.error
    assert snapshot([config]) == before
    assert not BatchLedger.objects.filter(run_id=run.pk).exists()
    with connections["archive"].cursor() as cur:
        if arc.vendor == "postgresql":
            cur.execute("DROP FUNCTION eat_rows() CASCADE")
        elif arc.vendor == "sqlite":
            cur.execute(f'DROP TRIGGER {arc.quote(namespace_for(config.source_db))}."eat_rows"')
        else:
            cur.execute(f"DROP TRIGGER {arc.quote(namespace_for(config.source_db))}.eat_rows")
    # Without the trigger the resume moves every batch; each ledger row
    # carries the archive's own count of its batch.
    assert engine.resume_run(run.pk).ok
    ledger = list(BatchLedger.objects.filter(run_id=run.pk))
    assert ledger and all(row.row_count == row.deleted_count > 0 for row in ledger)
    assert sum(row.row_count for row in ledger) == archive_count(config, "WHERE archive_run_id = %s", [run.pk])


def test_the_archive_table_appears_with_the_first_batch(demo):
    """Where DDL is transactional, a first batch that rolls back leaves no archive table behind."""
    config = TableConfig.objects.get(table_name="Trade")
    src = backend_for(config.source_db)
    arc = backend_for("archive")
    ns = namespace_for(config.source_db)
    source_table = src.qualified(config.schema_name, "Trade")
    with connections[config.source_db].cursor() as cur:
        if src.vendor == "sqlite":
            cur.execute(
                f'CREATE TRIGGER {src.quote(config.schema_name)}."refuse_delete" BEFORE DELETE ON "Trade" '
                "BEGIN SELECT RAISE(ABORT, 'deletes refused'); END"
            )
        elif src.vendor == "mysql":
            cur.execute(
                f"CREATE TRIGGER refuse_delete BEFORE DELETE ON {source_table} FOR EACH ROW "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'deletes refused'"
            )
        else:
            cur.execute(
                "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'deletes refused'; END $$"
            )
            cur.execute(
                f"CREATE TRIGGER refuse_delete BEFORE DELETE ON {source_table} FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
            )
    before = snapshot([config])
    run = engine.start_run(cutoff=CUTOFF, tables=["Trade"])
    state = RecoveryState.objects.get(run=run)

    failed = engine.advance_table(state.pk)

    assert failed.phase == Phase.FAILED and "deletes refused" in failed.error
    assert snapshot([config]) == before
    # Trade's source is on the archive's server in every test leg. MariaDB
    # commits DDL at once, so there the table is made at Mark instead.
    assert created_by_first_batch(build_spec(config, CUTOFF)) == (arc.vendor != "mysql")
    assert arc.table_exists(ns, "Trade") == (arc.vendor == "mysql")

    with connections[config.source_db].cursor() as cur:
        if src.vendor == "postgresql":
            cur.execute("DROP FUNCTION refuse_delete() CASCADE")
        else:
            cur.execute(
                f"DROP TRIGGER {src.quote(config.schema_name) + '.' if src.vendor == 'sqlite' else ''}refuse_delete"
            )
    resumed = engine.resume_run(run.pk)

    assert resumed.status == "COMPLETED"
    assert arc.table_exists(ns, "Trade")
    union_check([config], before)
    assert archive_count(config) == RecoveryState.objects.get(pk=state.pk).eligible_count > 0


def test_null_dates_are_never_eligible_and_empty_tables_are_fine(demo):
    config = TableConfig.objects.get(table_name="PriceHistory")
    src = backend_for(config.source_db)
    with connections[config.source_db].cursor() as cur:
        cur.execute(f"DELETE FROM {src.qualified(config.schema_name, 'PriceHistory')}")
    result = engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory", "Trade"])
    assert result.ok
    trade = TableConfig.objects.get(table_name="Trade")
    tsrc = backend_for(trade.source_db)
    with connections[trade.source_db].cursor() as cur:
        cur.execute(f'SELECT COUNT(*) FROM {tsrc.qualified(trade.schema_name, "Trade")} WHERE "settlementDate" IS NULL')
        nulls_left = cur.fetchone()[0]
    assert nulls_left > 0
    assert archive_count(trade, 'WHERE "settlementDate" IS NULL') == 0


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2024, 3, 31), 1, date(2024, 2, 29)),
        (date(2023, 3, 31), 1, date(2023, 2, 28)),
        (date(2024, 5, 31), 3, date(2024, 2, 29)),
        (date(2024, 1, 31), 13, date(2022, 12, 31)),
        (date(2024, 12, 31), 10, date(2024, 2, 29)),
        (date(2025, 3, 15), 0, date(2025, 3, 15)),
    ],
)
def test_thresholds_are_calendar_months_clamped_to_month_end(day, months, expected):
    assert subtract_months(day, months) == expected


def test_leap_day_retention_clamps_to_28_february():
    assert add_years(date(2024, 2, 29), 1) == date(2025, 2, 28)
    assert add_years(date(2024, 2, 29), 4) == date(2028, 2, 29)


def test_month_end_and_leap_day_rows_are_eligible_alike_on_every_engine(demo):
    """Rows on 28/29 Feb and 1 Mar 2024, cutoff 31 Mar 2024, one month kept: threshold 29 Feb."""
    config = TableConfig.objects.get(table_name="OpsEvent001")
    config.months_retention_source = 1
    config.years_retention_archive = 1
    config.full_clean()
    config.save()
    src = backend_for(config.source_db)
    table = src.qualified(config.schema_name, config.table_name)
    with connections[config.source_db].cursor() as cur:
        cur.execute(f"DELETE FROM {table}")
        for i, day in enumerate(["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01", "2024-03-31"], start=1):
            cur.execute(
                f'INSERT INTO {table} ("id", "eventDate", "category", "amount") VALUES (%s, %s, %s, %s)',
                [i, day, "x", "1.00"],
            )

    result = engine.run_cycle(cutoff=date(2024, 3, 31), tables=["OpsEvent001"])

    assert result.ok
    arc = backend_for("archive")
    with connections["archive"].cursor() as cur:
        cur.execute(
            f'SELECT "eventDate", "retention_until" FROM {arc.qualified(namespace_for(config.source_db), config.table_name)} ORDER BY "id"'
        )
        rows = [(str(a)[:10], str(b)[:10]) for a, b in cur.fetchall()]
    assert rows == [("2024-02-27", "2025-02-27"), ("2024-02-28", "2025-02-28")]


@pytest.mark.parametrize("years", [1, 4])
def test_leap_day_rows_get_the_clamped_retention_in_the_archive(demo, years):
    """The database computes retention_until while rows move: it must agree with add_years."""
    config = TableConfig.objects.get(table_name="OpsEvent001")
    config.months_retention_source = 1
    config.years_retention_archive = years
    config.full_clean()
    config.save()
    src = backend_for(config.source_db)
    table = src.qualified(config.schema_name, config.table_name)
    days = ["2020-02-29", "2022-02-28", "2023-03-01", "2024-02-29", "2024-12-31"]
    with connections[config.source_db].cursor() as cur:
        cur.execute(f"DELETE FROM {table}")
        for i, day in enumerate(days, start=1):
            cur.execute(
                f'INSERT INTO {table} ("id", "eventDate", "category", "amount") VALUES (%s, %s, %s, %s)',
                [i, day, "x", "1.00"],
            )

    assert engine.run_cycle(cutoff=date(2025, 3, 31), tables=["OpsEvent001"]).ok

    arc = backend_for("archive")
    with connections["archive"].cursor() as cur:
        cur.execute(
            f'SELECT "eventDate", "retention_until" FROM {arc.qualified(namespace_for(config.source_db), config.table_name)} ORDER BY "id"'
        )
        rows = [(str(a)[:10], str(b)[:10]) for a, b in cur.fetchall()]
    assert rows == [(day, add_years(date.fromisoformat(day), years).isoformat()) for day in days]


# -- bad input: clear errors, nothing moved -----------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Position; DROP TABLE Contract",
        'Position"; DROP TABLE "Contract',
        "[Position]",
        "Position' OR '1'='1",
        "Posit ion",
    ],
)
def test_identifiers_carrying_sql_are_refused(demo, name):
    config = TableConfig(
        source_db="SourceDB1", schema_name=position().schema_name, table_name=name, date_column="businessDate"
    )
    with pytest.raises(ValidationError) as excinfo:
        config.full_clean()
    assert "table_name" in excinfo.value.message_dict
    assert TableConfig.objects.filter(table_name="Contract", source_db="SourceDB1").exists()
    backend = backend_for("SourceDB1")
    assert backend.table_exists(position().schema_name, "Contract")


def test_a_column_that_does_not_exist_is_a_field_error(demo):
    config = TableConfig(
        source_db="SourceDB1", schema_name=position().schema_name, table_name="Position", date_column="tradeDate"
    )
    config.primary_key_columns = ""
    with pytest.raises(ValidationError) as excinfo:
        config.clean()
    assert "date_column" in excinfo.value.message_dict


def test_a_contract_join_to_a_missing_table_is_refused(demo):
    config = TableConfig(
        source_db="SourceDB1",
        schema_name=position().schema_name,
        table_name="Position",
        archival_logic="CONTRACT_MATURITY",
        contract_table="Contracts",
        contract_key_column="contractId",
        contract_reference_column="contractId",
        contract_maturity_column="maturityDate",
    )
    with pytest.raises(ValidationError) as excinfo:
        config.clean()
    assert "contract_table" in excinfo.value.message_dict


def test_a_table_without_a_primary_key_is_refused_and_fails_at_run_time_too(demo):
    src = backend_for("SourceDB3")
    schema = TableConfig.objects.filter(source_db="SourceDB3").first().schema_name
    with connections["SourceDB3"].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {src.qualified(schema, 'NoKey')}")
        cur.execute(f'CREATE TABLE {src.qualified(schema, "NoKey")} ("eventDate" DATE, "v" INTEGER)')
    config = TableConfig(source_db="SourceDB3", schema_name=schema, table_name="NoKey", date_column="eventDate")
    with pytest.raises(ValidationError, match="no primary key"):
        config.clean()
    # A config saved before the key was dropped fails its table, not the run.
    with connections["SourceDB3"].cursor() as cur:
        cur.execute(f"DROP TABLE {src.qualified(schema, 'NoKey')}")
        cur.execute(
            f'CREATE TABLE {src.qualified(schema, "NoKey")} ("id" INTEGER PRIMARY KEY, "eventDate" DATE, "v" INTEGER)'
        )
    config.full_clean()
    config.save()
    with connections["SourceDB3"].cursor() as cur:
        cur.execute(f"DROP TABLE {src.qualified(schema, 'NoKey')}")
        cur.execute(f'CREATE TABLE {src.qualified(schema, "NoKey")} ("eventDate" DATE, "v" INTEGER)')
        cur.execute(f"INSERT INTO {src.qualified(schema, 'NoKey')} VALUES (%s, %s)", ["2001-01-01", 1])
    result = engine.run_cycle(cutoff=CUTOFF, tables=["NoKey", "PriceHistory"])
    by_label = {t.label: t for t in result.tables}
    assert by_label[str(config)].phase == Phase.FAILED and "no primary key" in by_label[str(config)].error
    assert by_label[str(TableConfig.objects.get(table_name="PriceHistory"))].phase == Phase.COMPLETED


def test_an_unknown_source_database_is_a_field_error(demo):
    config = TableConfig(source_db="Nope", schema_name="main", table_name="Position", date_column="businessDate")
    with pytest.raises(ValidationError) as excinfo:
        config.full_clean()
    assert "source_db" in excinfo.value.message_dict


def test_a_new_source_column_is_added_to_the_archive(demo):
    engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    config = TableConfig.objects.get(table_name="PriceHistory")
    src = backend_for(config.source_db)
    with connections[config.source_db].cursor() as cur:
        cur.execute(f'ALTER TABLE {src.qualified(config.schema_name, "PriceHistory")} ADD COLUMN "source" VARCHAR(20)')
        cur.execute(
            f'INSERT INTO {src.qualified(config.schema_name, "PriceHistory")} ("instrumentId", "asOfDate", "closePrice", "volume", "source") '
            "VALUES (%s, %s, %s, %s, %s)",
            [999_999, "2001-01-02", "1.5", 7, "vendorX"],
        )
    result = engine.run_cycle(cutoff=CUTOFF, tables=["PriceHistory"])
    assert result.ok and result.moved == 1
    arc = backend_for("archive")
    info = arc.describe(namespace_for(config.source_db), "PriceHistory")
    assert "source" in info.column_names
    assert archive_count(config, 'WHERE "source" = %s', ["vendorX"]) == 1


def test_a_changed_column_type_stops_the_table_and_moves_nothing(demo):
    engine.run_cycle(cutoff=CUTOFF, tables=["OpsEvent001"])
    config = TableConfig.objects.get(table_name="OpsEvent001")
    src = backend_for(config.source_db)
    table = src.qualified(config.schema_name, config.table_name)
    with connections[config.source_db].cursor() as cur:
        cur.execute(f"DROP TABLE {table}")
        cur.execute(
            f'CREATE TABLE {table} ("id" INTEGER PRIMARY KEY, "eventDate" DATE, "category" INTEGER, "amount" NUMERIC(18,2))'
        )
        cur.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", [1, "2001-01-01", 5, "1.00"])
    before = snapshot([config])
    result = engine.run_cycle(cutoff=CUTOFF, tables=["OpsEvent001"])
    assert not result.ok and "changed type" in result.failed[0].error
    assert snapshot([config]) == before


def _progress_matches_the_ledger(state: RecoveryState) -> None:
    ledger = list(BatchLedger.objects.filter(run_id=state.run_id, config_id=state.config_id).order_by("batch_no"))
    assert ledger, state
    assert state.batches_done == ledger[-1].batch_no == len(ledger)
    assert state.archived_count == sum(b.deleted_count for b in ledger)
    assert state.cursor == ledger[-1].key_high


@pytest.mark.parametrize("how", ["stop", "failure"])
def test_progress_written_between_batches_is_complete_when_a_table_stops_or_fails(demo, monkeypatch, how):
    """The recovery state's progress is written at most once a second while a table archives
    (phases.PROGRESS_SECONDS); a stop between batches or a failing batch still leaves the row
    in step with the ledger."""
    from archival import stopping
    from archival.engine import phases, same_server
    from archival.engine.errors import ReconcileError

    monkeypatch.setattr(phases, "PROGRESS_SECONDS", 3600.0)  # nothing written after the first batch
    config = position()
    TableConfig.objects.filter(pk=config.pk).update(batch_size=200)
    run = engine.start_run(cutoff=CUTOFF)
    state = RecoveryState.objects.get(run=run, config=config)
    done = []
    real_move = same_server.move_batch

    def move(*args, **kwargs):
        if how == "failure" and len(done) == 3:
            raise ReconcileError("batch refused by the test")
        return real_move(*args, **kwargs)

    monkeypatch.setattr(same_server, "move_batch", move)

    def on_batch(moved):
        done.append(moved)
        if how == "stop" and len(done) == 3:
            stopping.request_stop("test")

    try:
        result = engine.advance_table(state.pk, worker="w1", on_batch=on_batch)
    finally:
        stopping.clear()
    state.refresh_from_db()
    assert len(done) == 3
    assert (result.error != "") == (how == "failure")
    assert state.phase == (Phase.ARCHIVING if how == "stop" else Phase.FAILED)
    _progress_matches_the_ledger(state)
    assert state.archived_count == sum(done) > 0
    assert not state.lease_owner
    # The run resumes from the ledger and ends as an uninterrupted run would.
    monkeypatch.setattr(same_server, "move_batch", real_move)
    assert engine.resume_run(run.pk).ok
    state.refresh_from_db()
    assert state.phase == Phase.COMPLETED
    _progress_matches_the_ledger(state)


def test_verify_counts_without_index_only_scans_on_postgresql_and_the_setting_does_not_leak(demo):
    """After a bulk delete the visibility map is mostly cleared: Verify's count must not take an
    index-only scan (PostgreSQL), and the SET LOCAL ends with the count's own transaction."""
    from django.test.utils import CaptureQueriesContext

    from archival.engine.phases import count_eligible, count_left

    config = position()
    spec = build_spec(config, CUTOFF)
    if spec.source.vendor != "postgresql":
        assert spec.source.settings_after_bulk_delete == ()
        pytest.skip("a PostgreSQL planner setting")
    connection = connections[spec.count_backend.alias]
    with CaptureQueriesContext(connection) as queries:
        left = count_left(spec)
    sql = [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    # The count's transaction is bounded first (archival.engine.txn), then planned without index-only scans.
    assert sql[0] == (
        f"SET LOCAL lock_timeout = {settings.ARCHIVAL_LOCK_TIMEOUT_MS}; "
        f"SET LOCAL statement_timeout = {settings.ARCHIVAL['STATEMENT_TIMEOUT_MS']}"
    )
    assert sql[1] == "SET LOCAL enable_indexonlyscan = off" and sql[2].startswith("SELECT COUNT(*)")
    assert left == count_eligible(spec)[0] > 0  # nothing archived yet: every eligible row is left
    with connection.cursor() as cur:
        cur.execute("SHOW enable_indexonlyscan")
        assert cur.fetchone()[0] == "on"
    assert connection.get_autocommit()
