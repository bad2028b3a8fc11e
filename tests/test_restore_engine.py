"""The restore engine against the invariants (SQLite, PostgreSQL and MariaDB with their env).

Every test archives the small demo once (``archived_demo``) and brings rows
back: source ∪ archive stays exactly the source as it was before the
archival run (``union_check``: nothing lost, nothing duplicated, values
identical, so the restored rows are the archived values without their
archive columns).
"""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.conf import settings
from django.db import connections

from archival import engine
from archival.backends import backend_for, namespace_for
from archival.disposal.holds import place_hold
from archival.engine.streaming import _canon
from archival.restore.certificates import verify_restore_certificates
from archival.restore.executor import execute
from archival.restore.requests import approve, create_request
from governance.models import (
    AuditEvent,
    Phase,
    RecoveryState,
    RestoreCertificate,
    RestoredKey,
    RestoreLedger,
    RestoreRequest,
    RestoreStatus,
    RestoreTable,
    TableConfig,
)
from tests.engine_fixtures import snapshot, union_check
from tests.restore_fixtures import CUTOFF, archive_count, config, configs, source_count, streamed

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

TOPOLOGIES = ("same_server", "streaming")


@pytest.fixture(autouse=True)
def _keep_streaming_setting():
    saved = settings.ARCHIVAL
    yield
    settings.ARCHIVAL = saved


def archived(cfg: TableConfig) -> dict[tuple, dict]:
    """Archive rows of ``cfg`` by canonical key: column name -> canonical value."""
    arc = backend_for("archive")
    ns = namespace_for(cfg.source_db)
    info = arc.describe(ns, cfg.table_name)
    names = info.column_names
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {', '.join(arc.quote(c) for c in names)} FROM {arc.qualified(ns, cfg.table_name)}")
        rows = [dict(zip(names, (_canon(v) for v in r), strict=True)) for r in cur.fetchall()]
    return {tuple(r[c] for c in cfg.pk_columns): r for r in rows}


def raw_row(cfg: TableConfig, index: int) -> tuple[list[str], list, tuple]:
    """The source columns, the raw archived values and the canonical key of the ``index``-th archived row by key."""
    arc = backend_for("archive")
    ns = namespace_for(cfg.source_db)
    cols = [c for c in arc.describe(ns, cfg.table_name).column_names][:-4]  # the archive adds four columns at the end
    order = ", ".join(arc.quote(c) for c in cfg.pk_columns)
    with connections["archive"].cursor() as cur:
        cur.execute(
            f"SELECT {', '.join(arc.quote(c) for c in cols)} FROM {arc.qualified(ns, cfg.table_name)} ORDER BY {order}"
        )
        values = list(cur.fetchall()[index])
    return cols, values, tuple(_canon(values[cols.index(c)]) for c in cfg.pk_columns)


def insert_into_source(cfg: TableConfig, cols: list[str], values: list) -> None:
    src = backend_for(cfg.source_db)
    with connections[cfg.source_db].cursor() as cur:
        cur.execute(
            f"INSERT INTO {src.qualified(cfg.schema_name, cfg.table_name)} "
            f"({', '.join(src.quote(c) for c in cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
            [src.param(v) for v in values],
        )


def in_source(cfg: TableConfig) -> set[tuple]:
    return set(snapshot([cfg])[str(cfg)])


def run_restore(cfg, selection, requester, approver, **values):
    request = create_request(cfg, selection, actor=requester, reason="ticket RST-1: recalculation", **values)
    approve(request, actor=approver, comment="checked the preview")
    return request, execute(request.pk, actor=requester)


def pick(kind: str, rows: dict[tuple, dict], run_id: int) -> tuple[dict, set[tuple]]:
    """The request values of ``kind`` for Position, and the keys they select."""
    keys = sorted(rows)
    if kind == "KEY_RANGE":
        low, high = keys[len(keys) // 4], keys[len(keys) // 4 + 40]
        return {"key_low": list(low), "key_high": list(high)}, {k for k in keys if low <= k <= high}
    if kind == "CONTRACT":
        contract = rows[keys[7]]["contractId"]
        return {"contract_value": str(contract)}, {k for k, r in rows.items() if r["contractId"] == contract}
    if kind == "KEYS":
        chosen = keys[3:200:17]
        return {"keys": [list(k) for k in chosen]}, set(chosen)
    if kind == "DATE_RANGE":
        dates = sorted({r["reference_date"] for r in rows.values()})
        d1, d2 = dates[len(dates) // 3], dates[len(dates) // 3 + 5]
        return (
            {"date_from": date.fromisoformat(str(d1)[:10]), "date_to": date.fromisoformat(str(d2)[:10])},
            {k for k, r in rows.items() if d1 <= r["reference_date"] <= d2},
        )
    assert kind == "RUN"
    return {"archive_run_id": run_id}, set(keys)


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("kind", ["KEY_RANGE", "CONTRACT", "KEYS", "DATE_RANGE", "RUN"])
def test_each_selection_kind_restores_exactly_its_rows_and_loses_nothing(
    archived_demo, requester, approver, kind, topology
):
    position, contract = config("SourceDB1", "Position"), config("SourceDB1", "Contract")
    if topology == "streaming":
        streamed("SourceDB1")
    TableConfig.objects.filter(pk=position.pk).update(batch_size=37)  # several batches
    position.refresh_from_db()
    rows = archived(position)
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    values, expected = pick(kind, rows, run_id)
    assert expected
    contracts_before = set(archived(contract))

    _request, result = run_restore(position, kind, requester, approver, **values)

    assert result.ok, result.error
    assert result.tables[-1].label == str(position)
    assert result.tables[-1].restored == len(expected)
    left = archived(position)
    assert not (expected & set(left)), "selected rows are still archived"
    assert set(rows) - expected == set(left), "rows that were not selected left the archive"
    assert expected <= in_source(position)
    union_check(configs(), archived_demo)
    # Parents first: the Contract rows the restored positions reference are back too.
    referenced = {(rows[k]["contractId"],) for k in expected}
    assert not (referenced & set(archived(contract)))
    assert referenced & contracts_before <= in_source(contract)
    if referenced & contracts_before:
        assert [t.label for t in result.tables] == [str(contract), str(position)]
    assert verify_restore_certificates() == []


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_parents_come_back_before_children_and_keep_the_foreign_keys_whole(
    archived_demo, requester, approver, topology
):
    trade, contract = config("SourceDB2", "Trade"), config("SourceDB2", "Contract")
    if topology == "streaming":
        streamed("SourceDB2")
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    trades = archived(trade)
    wanted_contracts = {(r["contractId"],) for r in trades.values()} & set(archived(contract))
    assert wanted_contracts, "the demo archives contracts that archived trades reference"

    request, result = run_restore(trade, "RUN", requester, approver, archive_run_id=run_id)

    assert result.ok, result.error
    plan = list(RestoreTable.objects.filter(request=request).order_by("position"))
    assert [t.config_id for t in plan] == [contract.pk, trade.pk]
    assert plan[0].referenced_by_id == plan[1].pk and (plan[0].key_column, plan[0].ref_column) == (
        "contractId",
        "contractId",
    )
    certs = list(RestoreCertificate.objects.using("archive").filter(request_id=request.pk).order_by("id"))
    assert [c.config_id for c in certs] == [contract.pk, trade.pk]
    assert wanted_contracts <= in_source(contract)
    # Every restored trade's contract is in the source (the foreign key holds).
    src_contracts = {k[0] for k in in_source(contract)}
    assert all(r["contractId"] in src_contracts for r in trades.values() if r["contractId"] is not None)
    union_check(configs(), archived_demo)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_a_different_source_row_stops_the_table_with_nothing_moved_and_names_the_key(
    archived_demo, requester, approver, topology
):
    table = config("SourceDB3", "PriceHistory") if topology == "streaming" else config("SourceDB1", "RefRate000")
    if topology == "streaming":
        streamed("SourceDB3")
    cols, values, key = raw_row(table, 5)
    changed = cols.index([c for c in cols if c not in table.pk_columns][-1])
    values[changed] = None if values[changed] is not None else 1
    insert_into_source(table, cols, values)
    before_archive, before_source = archive_count(table), source_count(table)
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()

    request, result = run_restore(table, "RUN", requester, approver, archive_run_id=run_id)

    assert not result.ok and result.status == RestoreStatus.FAILED
    assert "other values" in result.error
    assert all(f"{c}={v}" in result.error for c, v in zip(table.pk_columns, key, strict=True)), result.error
    request.refresh_from_db()
    assert request.status == RestoreStatus.FAILED and "other values" in request.last_error
    assert RestoreTable.objects.get(request=request).phase == "FAILED"
    assert (archive_count(table), source_count(table)) == (before_archive, before_source)
    assert not RestoreLedger.objects.using("archive").filter(request_id=request.pk, row_count__gt=0).exists()
    assert AuditEvent.objects.filter(action="restore.failed", object_id=str(request.pk)).exists()


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_an_identical_source_row_is_skipped_and_its_archive_copy_goes(archived_demo, requester, approver, topology):
    table = config("SourceDB3", "PriceHistory") if topology == "streaming" else config("SourceDB1", "RefRate000")
    if topology == "streaming":
        streamed("SourceDB3")
    rows = archived(table)
    cols, values, _ = raw_row(table, 2)
    insert_into_source(table, cols, values)
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()

    request, result = run_restore(table, "RUN", requester, approver, archive_run_id=run_id)

    assert result.ok, result.error
    assert result.tables[-1].skipped_identical == 1
    assert result.tables[-1].restored == len(rows) - 1
    assert archive_count(table) == 0
    cert = RestoreCertificate.objects.using("archive").get(request_id=request.pk, config_id=table.pk)
    assert (cert.row_count, cert.skipped_identical) == (len(rows) - 1, 1)
    assert RestoredKey.objects.using("archive").filter(request_id=request.pk).count() == len(rows)
    union_check(configs(), archived_demo)


def test_held_rows_are_restored_counted_and_audited(archived_demo, requester, approver):
    if connections["archive"].vendor == "mysql":
        # The flush between tests deletes rows; MariaDB's trigger refuses to delete a hold (rightly).
        pytest.skip("a hold placed in a test cannot be flushed from MariaDB; the hold check is disposal's SQL")
    table = config("SourceDB1", "RefRate000")
    place_hold(
        scope="TABLE",
        actor="compliance",
        reason="litigation L-7",
        source_db=table.source_db,
        schema_name=table.schema_name,
        table_name=table.table_name,
    )
    n = archive_count(table)
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()

    request, result = run_restore(table, "RUN", requester, approver, archive_run_id=run_id)

    assert result.ok, result.error
    assert RestoreTable.objects.get(request=request).held_count == n  # the preview said so
    assert result.tables[-1].held == n
    cert = RestoreCertificate.objects.using("archive").get(request_id=request.pk)
    assert cert.held_count == n
    assert (
        sum(RestoreLedger.objects.using("archive").filter(request_id=request.pk).values_list("held_count", flat=True))
        == n
    )
    event = AuditEvent.objects.get(action="restore.table_restored", object_id=str(request.pk))
    assert event.counts["held"] == n and event.details["held_rows_restored"] == n
    union_check(configs(), archived_demo)


def test_a_failed_restore_resumes_from_its_ledger_and_ends_as_an_uninterrupted_one(archived_demo, requester, approver):
    table = config("SourceDB1", "RefRate000")
    TableConfig.objects.filter(pk=table.pk).update(batch_size=5)
    table.refresh_from_db()
    rows = archived(table)
    late = sorted(rows)[-3]  # a conflict in a late batch: earlier batches commit first
    src = backend_for(table.source_db)
    qualified = src.qualified(table.schema_name, table.table_name)
    with connections[table.source_db].cursor() as cur:
        cur.execute(
            f"INSERT INTO {qualified} ({src.quote('id')}, {src.quote('category')}) VALUES (%s, %s)",
            [late[0], "not the archived row"],
        )
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    request, first = run_restore(table, "RUN", requester, approver, archive_run_id=run_id)
    assert first.status == RestoreStatus.FAILED
    committed = RestoreLedger.objects.using("archive").filter(request_id=request.pk).count()
    assert committed >= 2
    # The control database's progress is behind what committed (as after a kill): the ledger rules.
    RestoreTable.objects.filter(request=request).update(cursor=None, batches_done=0, restored_count=0)
    # The operator resolves the conflicting row in the source and executes again.
    with connections[table.source_db].cursor() as cur:
        cur.execute(f"DELETE FROM {qualified} WHERE {src.quote('id')} = %s", [late[0]])

    again = execute(request.pk, actor=requester)

    assert again.ok, again.error
    plan = RestoreTable.objects.get(request=request)
    assert plan.restored_count == len(rows) and plan.batches_done == -(-len(rows) // 5)
    assert RestoreLedger.objects.using("archive").filter(request_id=request.pk).count() == plan.batches_done
    union_check(configs(), archived_demo)
    request.refresh_from_db()
    assert request.attempts == 2 and request.status == RestoreStatus.COMPLETED


def test_a_finished_or_unapproved_request_is_not_executed(archived_demo, requester, approver):
    from archival.restore.errors import RestoreRefused

    table = config("SourceDB1", "RefRate000")
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    request = create_request(table, "RUN", actor=requester, reason="r", archive_run_id=run_id)
    with pytest.raises(RestoreRefused, match="only an approved request"):
        execute(request.pk, actor=requester)
    approve(request, actor=approver, comment="ok")
    assert execute(request.pk, actor=requester).ok
    with pytest.raises(RestoreRefused, match="only an approved request"):
        execute(request.pk, actor=requester)


@pytest.mark.parametrize("fixed", [False, True])
def test_the_next_run_archives_restored_rows_again_only_if_the_current_config_makes_them_eligible(
    archived_demo, requester, approver, fixed
):
    table = config("SourceDB1", "RefRate000")
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    n = archive_count(table)
    request = create_request(
        table, "RUN", actor=requester, reason="the 36 months were meant as 72", archive_run_id=run_id
    )
    plan = RestoreTable.objects.get(request=request)
    assert plan.eligible_again_count == n  # the preview warns: the config still makes them eligible
    if fixed:
        # The wrong config is fixed first: with 240 months in the source none of them is eligible.
        TableConfig.objects.filter(pk=table.pk).update(months_retention_source=240)
        from archival.restore.requests import preview

        shown = preview(request)
        assert RestoreTable.objects.get(request=request).eligible_again_count == 0
        assert not any("eligible under the current config" in p for p in shown.problems)
    approve(request, actor=approver, comment="ok")
    assert execute(request.pk, actor=requester).ok
    assert archive_count(table) == 0

    again = engine.run_cycle(cutoff=CUTOFF, tables=[str(table)])

    assert again.ok
    assert archive_count(table) == (0 if fixed else n)


def test_an_executing_restore_blocks_archival_of_its_tables_and_an_open_run_blocks_the_restore(
    archived_demo, requester, approver
):
    from archival.restore.errors import RestoreRefused

    table = config("SourceDB1", "RefRate000")
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    request = create_request(table, "RUN", actor=requester, reason="r", archive_run_id=run_id)
    approve(request, actor=approver, comment="ok")
    RestoreRequest.objects.filter(pk=request.pk).update(status=RestoreStatus.EXECUTING)

    run = engine.start_run(cutoff=CUTOFF, tables=[str(table), "SourceDB1.OpsEvent003"], actor="test")

    states = {s.config_id: s for s in RecoveryState.objects.filter(run=run)}
    assert states[table.pk].phase == Phase.BLOCKED
    assert f"restore {request.pk}" in states[table.pk].last_error
    other = config("SourceDB1", "OpsEvent003")
    assert states[other.pk].phase == Phase.PENDING

    # The other way round: a run that has not finished the table keeps the restore from starting.
    RestoreRequest.objects.filter(pk=request.pk).update(status=RestoreStatus.APPROVED)
    RecoveryState.objects.filter(run=run, config=table).update(phase=Phase.PENDING)
    with pytest.raises(RestoreRefused, match=f"archival run {run.pk} has not finished"):
        execute(request.pk, actor=requester)
    request.refresh_from_db()
    assert request.status == RestoreStatus.APPROVED and f"run {run.pk}" in request.last_error


def test_certificates_chain_and_a_changed_one_is_found(archived_demo, requester, approver):
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    for name in ("RefRate000", "OpsEvent003"):
        _, result = run_restore(config("SourceDB1", name), "RUN", requester, approver, archive_run_id=run_id)
        assert result.ok, result.error
    certs = list(RestoreCertificate.objects.using("archive").order_by("id"))
    assert len(certs) == 2 and certs[1].prev_hash == certs[0].certificate_hash and certs[0].prev_hash == ""
    assert verify_restore_certificates() == []

    RestoreCertificate.objects.using("archive").filter(pk=certs[0].pk).update(row_count=certs[0].row_count + 1)

    problems = verify_restore_certificates()
    assert any(f"restore certificate {certs[0].pk}" in p and "hash" in p for p in problems)
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="restore certificates"):
        call_command("verify_chain", "--no-log", stdout=StringIO())


def test_the_audit_trail_records_each_step(archived_demo, requester, approver):
    table = config("SourceDB1", "RefRate000")
    run_id = RecoveryState.objects.values_list("run_id", flat=True).first()
    request, result = run_restore(table, "RUN", requester, approver, archive_run_id=run_id)
    assert result.ok
    events = list(AuditEvent.objects.filter(object_type="RestoreRequest", object_id=str(request.pk)).order_by("pk"))
    assert [e.action for e in events] == [
        "restore.requested",
        "restore.approved",
        "restore.started",
        "restore.table_restored",
        "restore.completed",
    ]
    assert [e.actor for e in events[:2]] == [requester.username, approver.username]
    cert = RestoreCertificate.objects.using("archive").get(request_id=request.pk)
    assert events[3].details["certificate_hash"] == cert.certificate_hash
    from governance.chain_verification import verify_chains

    assert verify_chains(write_log=False).ok


GENERATED_DDL = {
    "sqlite": (
        '"id" INTEGER NOT NULL PRIMARY KEY, "eventDate" DATE, "qty" INTEGER, "price" INTEGER, '
        '"total" INTEGER GENERATED ALWAYS AS ("qty" * "price") STORED, '
        '"label" TEXT GENERATED ALWAYS AS (\'#\' || "id") VIRTUAL'
    ),
    "postgresql": (
        '"id" INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "eventDate" DATE, "qty" INTEGER, "price" INTEGER, '
        '"total" INTEGER GENERATED ALWAYS AS ("qty" * "price") STORED'
    ),
    "mysql": (
        "`id` INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY, `eventDate` DATE, `qty` INTEGER, `price` INTEGER, "
        "`total` INTEGER AS (`qty` * `price`) PERSISTENT, `label` VARCHAR(20) AS (CONCAT('#', `id`)) VIRTUAL"
    ),
}


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_generated_and_identity_columns_of_the_source_are_derived_again(archived_demo, requester, approver, topology):
    from archival.demo import source_schema

    alias = "SourceDB1"
    src = backend_for(alias)
    schema = source_schema(alias)
    qualified = src.qualified(schema, "GenEvent")
    with connections[alias].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {qualified}")
        cur.execute(f"CREATE TABLE {qualified} ({GENERATED_DDL[src.vendor]})")
        q = src.quote
        for day, qty in ((date(2015, 1, 2), 3), (date(2015, 2, 3), 4), (date(2026, 11, 1), 5)):
            cur.execute(
                f"INSERT INTO {qualified} ({q('eventDate')}, {q('qty')}, {q('price')}) VALUES (%s, %s, %s)",
                [src.param(day), qty, 10],
            )
    cfg = TableConfig(source_db=alias, schema_name=schema, table_name="GenEvent", table_type="OPERATIONAL",
                      date_column="eventDate")  # fmt: skip
    cfg.full_clean()
    cfg.save()
    target = src.insertable_columns(schema, "GenEvent")
    assert "total" in target.derived and "total" not in target.columns
    if src.vendor == "postgresql":
        assert target.overriding == "OVERRIDING SYSTEM VALUE"
    original = snapshot([cfg])
    run = engine.run_cycle(cutoff=CUTOFF, tables=[str(cfg)])
    assert run.ok and archive_count(cfg) == 2
    if topology == "streaming":
        streamed(alias)

    _request, result = run_restore(cfg, "RUN", requester, approver, archive_run_id=run.run_id)

    assert result.ok, result.error
    assert archive_count(cfg) == 0
    union_check([cfg], original)
    with connections[alias].cursor() as cur:
        cur.execute(f"SELECT {q('id')}, {q('total')} FROM {qualified} ORDER BY {q('id')}")
        assert [tuple(r) for r in cur.fetchall()] == [(1, 30), (2, 40), (3, 50)]


@pytest.mark.parametrize("point", ["restore_stream_after_copy", "restore_stream_after_delete", "restore_table_done"])
def test_an_interrupted_streamed_restore_is_finished_by_the_next_execution(
    archived_demo, requester, approver, monkeypatch, point
):
    """A worker dying between the commits (here: an exception at the point) leaves rows in both places at
    worst; the next execution finishes the COPYING batch and ends as an uninterrupted restore would."""
    import archival.restore.executor as executor_module
    import archival.restore.streaming as streaming_module

    table = config("SourceDB3", "PriceHistory")
    streamed("SourceDB3")
    TableConfig.objects.filter(pk=table.pk).update(batch_size=50)
    n = archive_count(table)
    request = create_request(
        table,
        "RUN",
        actor=requester,
        reason="r",
        archive_run_id=RecoveryState.objects.values_list("run_id", flat=True).first(),
    )
    approve(request, actor=approver, comment="ok")
    hits = {"n": 0}

    def dying(name):
        if name == point:
            hits["n"] += 1
            if hits["n"] == 2:
                raise KeyboardInterrupt(f"killed at {name}")

    monkeypatch.setattr(streaming_module, "checkpoint", dying)
    monkeypatch.setattr(executor_module, "checkpoint", dying)
    if point == "restore_table_done":
        hits["n"] = 1
    with pytest.raises(KeyboardInterrupt):
        execute(request.pk, actor=requester, worker_id="host:1:dead")
    union_check(configs(), archived_demo, allow_both=True)
    monkeypatch.setattr(streaming_module, "checkpoint", lambda name: None)
    monkeypatch.setattr(executor_module, "checkpoint", lambda name: None)

    # The same worker id takes its own lease back (a dead worker's is taken over the same way once it expires).
    result = execute(request.pk, actor=requester, worker_id="host:1:dead")

    assert result.ok, result.error
    assert archive_count(table) == 0 and result.tables[-1].restored == n
    assert not RestoreLedger.objects.using("archive").filter(request_id=request.pk).exclude(state="DELETED").exists()
    assert RestoredKey.objects.using("archive").filter(request_id=request.pk).count() == n
    union_check(configs(), archived_demo)
    assert verify_restore_certificates() == []
