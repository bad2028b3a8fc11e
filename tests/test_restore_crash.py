"""Crash safety of restore: ``archival restore execute`` killed with SIGKILL, then run again.

Each test archives the small demo first (a normal ``archival run`` in a
subprocess), then creates and approves restore requests of several selection
kinds: a key range of ``Trade`` (its ``Contract`` parent, by foreign key,
comes back first), one contract's ``Position`` rows (its ``Contract`` by the
contract join), a reference-date range of ``PriceHistory`` (SourceDB3, a
database of its own on PostgreSQL: streamed in both topologies), a list of
keys, and the rows of one archive run. ``manage.py archival restore execute
N`` then runs in a subprocess that kills itself with SIGKILL at a named point
(archival.engine.faults, ARCHIVAL_FAULT) or is killed from outside after a
random number of committed batches; executing again must finish the request.

Afterwards: source ∪ archive equals the rows as they were before the restore
(nothing lost, nothing duplicated, no key in both places), exactly the
selected rows (and the parents they reference) moved and nothing else, each
restored row holds its archived values, the ledger agrees with the plan's
counts, and each table has one certificate whose hash chain verifies.

Also: archival and restore wait for each other (a run while a killed restore
is EXECUTING leaves its tables alone; a restore is refused while a killed
run has not finished its table; the two started at once never move one table
together), two executions at once move each row once, and a conflict met on
resume fails the table until it is resolved. Rows archived after the
approval stay in the archive (the approval covers what it saw).

CI size: every named point once (table_done in one topology), with the key
range and two other kinds in turn, one random kill per topology, the
conflict on resume in one topology. CRASH_TRIALS=N makes it N random kills
per topology, every kind at every named point in both topologies (the full
size).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections

from archival.backends import backend_for
from archival.backends.sqlite import namespace_for
from archival.disposal.holds import place_hold
from archival.engine.dates import subtract_months
from archival.rowkeys import digest_of_keys
from governance.models import BatchLedger, HoldScope, TableConfig
from tests.engine_fixtures import BASE_DIR, digest, manage, rows_of, snapshot, subprocess_env, union_check

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.crash]

CUTOFF = "2026-11-25"
# Small batches: the key range of Trade alone takes about fifty.
BATCH = "10"
SAME_SERVER_POINTS = [
    "restore_batch_before_commit:2",
    "restore_batch_after_commit:3",
    "restore_table_done:1",
]
RANDOM_TRIALS = int(os.environ.get("CRASH_TRIALS", "1"))
FULL_SIZE = "CRASH_TRIALS" in os.environ
# The last point is the same code in both topologies: both at the full size.
STREAMING_POINTS = ["restore_stream_after_copy:2", "restore_stream_after_delete:3"] + (
    ["restore_table_done:1"] if FULL_SIZE else []
)
PASSWORD = "correct horse battery staple 42"
# Trade keys restored by the KEY_RANGE request (inclusive both ends).
TRADE_LOW, TRADE_HIGH = 200, 1100


def topology_env(topology: str, batch: str = BATCH, **extra) -> dict:
    env = subprocess_env(ARCHIVAL_BATCH_SIZE=batch, **extra)
    if topology == "streaming":
        env["ARCHIVAL_STREAMING_SOURCES"] = "SourceDB1,SourceDB2,SourceDB3"
    return env


def config_of(source: str, table: str) -> TableConfig:
    return TableConfig.objects.get(source_db=source, table_name=table)


# --- the archive, read directly --------------------------------------------


@dataclass
class ArchivedRow:
    values: tuple  # the source's columns, canonical (tests.engine_fixtures.rows_of)
    run_id: int
    reference_date: str


def archive_rows(config) -> dict[tuple, ArchivedRow]:
    """Every archived row of a table by key: its source columns and the metadata a selection reads."""
    source = backend_for(config.source_db)
    info = source.describe(config.schema_name, config.table_name)
    cols = info.column_names
    pk_pos = [cols.index(c) for c in info.primary_key]
    arc = backend_for("archive")
    ns = namespace_for(config.source_db)
    if not arc.table_exists(ns, config.table_name):
        return {}
    rows = rows_of(
        "archive", arc.qualified(ns, config.table_name), [*cols, "archive_run_id", "reference_date"], arc.quote
    )
    n = len(cols)
    return {
        tuple(r[i] for i in pk_pos): ArchivedRow(values=r[:n], run_id=int(r[n]), reference_date=str(r[n + 1])[:10])
        for r in rows
    }


def source_rows(config) -> dict[tuple, tuple]:
    return snapshot([config])[str(config)]


def union_digest(configs) -> str:
    """One checksum over source ∪ archive of every table (archive values, source columns only)."""
    merged = {}
    for config in configs:
        merged.update({(str(config), k): v.values for k, v in archive_rows(config).items()})
        merged.update({(str(config), k): v for k, v in source_rows(config).items()})
    return digest(merged)


# --- the scenario: demo archived, requests approved -------------------------


@dataclass
class Planned:
    """One request and, per table label, the keys it must bring back (computed here, not by the engine)."""

    request_id: int
    kind: str
    main_label: str
    expected: dict[str, set[tuple]] = field(default_factory=dict)
    # Per table label: how many of the expected rows an active hold covers (restored anyway, and counted).
    held: dict[str, int] = field(default_factory=dict)


@dataclass
class Scenario:
    original: dict  # source rows before the archival run
    configs: list
    before_source: dict[str, set[tuple]]  # keys in the source before the restore
    before_archive: dict[str, dict[tuple, ArchivedRow]]
    checksum: str  # union_digest before the restore
    requests: list[Planned] = field(default_factory=list)


def personas() -> tuple[User, User]:
    def persona(name: str, perm: str) -> User:
        user = User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=True)
        user.user_permissions.add(Permission.objects.get(content_type__app_label="governance", codename=perm))
        return User.objects.get(pk=user.pk)

    return persona("restorer", "request_restore"), persona("approver", "approve_restore")


def settle_recent_trades_on_open_contracts() -> None:
    """Point every trade the run keeps at a contract that has not matured.

    Then every matured SourceDB2 contract is referenced only by archived
    trades and is archived too: the Trade -> Contract foreign key has many
    parent rows in the archive, which a restore of trades must bring back first.
    """
    alias = "SourceDB2"
    config = config_of(alias, "Trade")
    backend = backend_for(alias)
    threshold = subtract_months(dt.date.fromisoformat(CUTOFF), 24)
    contracts = backend.qualified(config.schema_name, "Contract")
    trades = backend.qualified(config.schema_name, "Trade")
    q = backend.quote
    param = backend.param
    with connections[alias].cursor() as cur:
        cur.execute(
            f"SELECT {q('contractId')} FROM {contracts} WHERE {q('maturityDate')} IS NULL "
            f"OR {q('maturityDate')} >= %s ORDER BY {q('contractId')}",
            [param(threshold)],
        )
        open_contracts = [r[0] for r in cur.fetchall()]
        cur.execute(
            f"SELECT {q('tradeId')} FROM {trades} WHERE {q('settlementDate')} IS NULL OR {q('settlementDate')} >= %s",
            [param(threshold)],
        )
        kept = [r[0] for r in cur.fetchall()]
        cur.executemany(
            f"UPDATE {trades} SET {q('contractId')} = %s WHERE {q('tradeId')} = %s",
            [(open_contracts[i % len(open_contracts)], trade) for i, trade in enumerate(kept)],
        )


def archive_everything(topology: str) -> None:
    done = manage("archival", "run", "--cutoff", CUTOFF, env=topology_env(topology, batch="500"))
    assert done.returncode == 0, done.stdout + done.stderr


def make_scenario(topology: str) -> Scenario:
    settle_recent_trades_on_open_contracts()
    configs = list(TableConfig.objects.active())
    original = snapshot(configs)
    archive_everything(topology)
    union_check(configs, original)
    return Scenario(
        original=original,
        configs=configs,
        before_source={str(c): set(source_rows(c)) for c in configs},
        before_archive={str(c): archive_rows(c) for c in configs},
        checksum=union_digest(configs),
    )


def plan_requests(scenario: Scenario, kinds: list[str]) -> list[Planned]:
    """Create and approve one request per kind; return what each must restore."""
    from archival.restore.requests import approve, create_request

    restorer, approver = personas()
    arc = scenario.before_archive
    planned = []

    def request(config, selection, expected, held=None, **values) -> None:
        req = create_request(config, selection, actor=restorer, reason=f"crash test: {selection}", **values)
        approve(req, actor=approver, comment="approved for the crash test")
        planned.append(
            Planned(request_id=req.pk, kind=selection, main_label=str(config), expected=expected, held=held or {})
        )

    for kind in kinds:
        if kind == "KEY_RANGE":
            trade, contract = config_of("SourceDB2", "Trade"), config_of("SourceDB2", "Contract")
            selected = {k for k in arc[str(trade)] if TRADE_LOW <= k[0] <= TRADE_HIGH}
            contract_col = (
                backend_for("SourceDB2").describe(trade.schema_name, "Trade").column_names.index("contractId")
            )
            referenced = {arc[str(trade)][k].values[contract_col] for k in selected}
            parents = {k for k in arc[str(contract)] if k[0] in referenced}
            assert len(selected) > 300 and len(parents) > 10, (len(selected), len(parents))
            request(
                trade,
                "KEY_RANGE",
                {str(trade): selected, str(contract): parents},
                key_low=[TRADE_LOW],
                key_high=[TRADE_HIGH],
            )
        elif kind == "CONTRACT":
            position, contract = config_of("SourceDB1", "Position"), config_of("SourceDB1", "Contract")
            cols = backend_for("SourceDB1").describe(position.schema_name, "Position").column_names
            contract_col = cols.index("contractId")
            by_contract: dict[int, set] = {}
            for k, row in arc[str(position)].items():
                by_contract.setdefault(row.values[contract_col], set()).add(k)
            # An archived contract (so a parent row comes back) with the most archived positions.
            cid = max((c for c in by_contract if (c,) in arc[str(contract)]), key=lambda c: len(by_contract[c]))
            assert len(by_contract[cid]) > 10
            held = {}
            if connections["archive"].vendor != "mysql":
                # A legal hold on the contract: restoring held rows is allowed (nothing is destroyed) and
                # counted. Not on MariaDB: its trigger refuses the test flush's delete of the hold (rightly).
                place_hold(
                    scope=HoldScope.CONTRACT,
                    actor=approver,
                    reason="Matter 7",
                    source_db="SourceDB1",
                    contract_value=str(cid),
                )
                held = {str(position): len(by_contract[cid]), str(contract): 1}
            request(
                position,
                "CONTRACT",
                {str(position): by_contract[cid], str(contract): {(cid,)}},
                held=held,
                contract_value=str(cid),
            )
        elif kind == "DATE_RANGE":
            prices = config_of("SourceDB3", "PriceHistory")
            dates = sorted({row.reference_date for row in arc[str(prices)].values()})
            low, high = dates[len(dates) // 5], dates[len(dates) * 4 // 5]
            selected = {k for k, row in arc[str(prices)].items() if low <= row.reference_date <= high}
            assert len(selected) > 30
            request(
                prices,
                "DATE_RANGE",
                {str(prices): selected},
                date_from=dt.date.fromisoformat(low),
                date_to=dt.date.fromisoformat(high),
            )
        elif kind == "KEYS":
            rates = config_of("SourceDB1", "RefRate000")
            selected = set(sorted(arc[str(rates)])[::2])
            assert len(selected) > 10
            request(rates, "KEYS", {str(rates): selected}, keys=[list(k) for k in sorted(selected)])
        elif kind == "RUN":
            events = config_of("SourceDB2", "OpsEvent001")
            run_id = next(iter(arc[str(events)].values())).run_id
            selected = {k for k, row in arc[str(events)].items() if row.run_id == run_id}
            request(events, "RUN", {str(events): selected}, archive_run_id=run_id)
        else:
            raise AssertionError(kind)
    scenario.requests.extend(planned)
    return planned


ALL_KINDS = ["KEY_RANGE", "CONTRACT", "DATE_RANGE", "KEYS", "RUN"]


def kinds_for(points: list[str], point: str) -> list[str]:
    """The key range (two tables, ~60 batches) always; at CI size two of the other kinds, in turn,
    so each kind meets a kill in each topology; every kind at every point at the full size."""
    if FULL_SIZE:
        return ALL_KINDS
    others = ALL_KINDS[1:]
    i = points.index(point)
    return ["KEY_RANGE", others[(2 * i) % len(others)], others[(2 * i + 1) % len(others)]]


# --- running and checking ----------------------------------------------------


EXECUTE = ("archival", "restore", "execute")


def execute(request_id: int, env: dict) -> subprocess.CompletedProcess:
    return manage(*EXECUTE, str(request_id), "--as", "restorer", env=env)


def status_of(request_id: int) -> str:
    from governance.models.restore import RestoreRequest

    return RestoreRequest.objects.get(pk=request_id).status


def finish(request_id: int, topology: str) -> None:
    done = execute(request_id, topology_env(topology))
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_of(request_id) == "COMPLETED", done.stdout


def check_request(planned: Planned) -> None:
    """The request's plan, ledger and certificates agree with what had to move."""
    from governance.models import AuditEvent
    from governance.models.restore import (
        RestoreCertificate,
        RestoreLedger,
        RestoreRequest,
        RestoreTable,
    )

    req = RestoreRequest.objects.get(pk=planned.request_id)
    assert req.status == "COMPLETED" and not req.lease_owner, (req.status, req.lease_owner, req.last_error)
    tables = list(RestoreTable.objects.filter(request_id=req.pk).order_by("position"))
    assert {t.table_label for t in tables} == set(planned.expected), [t.table_label for t in tables]
    # Parents first: the requested table is the last one of the plan.
    assert tables[-1].table_label == planned.main_label
    for table in tables:
        expected = planned.expected[table.table_label]
        assert table.phase == "RESTORED", (table.table_label, table.phase, table.last_error)
        ledger = list(RestoreLedger.objects.filter(request_id=req.pk, config_id=table.config_id).order_by("batch_no"))
        assert [b.batch_no for b in ledger] == list(range(1, len(ledger) + 1)), "batch numbers skip or repeat"
        assert all(b.state in ("MOVED", "DELETED") for b in ledger), "a restore batch was left half done"
        assert all(b.deleted_count == b.row_count + b.skipped_identical for b in ledger), [
            (b.batch_no, b.row_count, b.skipped_identical, b.deleted_count) for b in ledger
        ]
        restored = sum(b.row_count for b in ledger)
        skipped = sum(b.skipped_identical for b in ledger)
        assert (restored, skipped, len(ledger)) == (table.restored_count, table.skipped_identical, table.batches_done)
        # Nothing was in the source before: every selected row is inserted, none skipped.
        assert (restored, skipped) == (len(expected), 0), (table.table_label, restored, skipped, len(expected))
        assert table.batches_done >= -(-len(expected) // int(BATCH))
        certs = list(RestoreCertificate.objects.filter(request_id=req.pk, config_id=table.config_id))
        assert len(certs) == 1, f"{table.table_label}: {len(certs)} certificates"
        cert = certs[0]
        assert table.certificate_id == cert.pk
        held = planned.held.get(table.table_label, 0)
        assert sum(b.held_count for b in ledger) == held, f"{table.table_label}: held rows counted wrong"
        assert (cert.row_count, cert.skipped_identical, cert.held_count) == (len(expected), 0, held)
        assert (cert.digest, cert.row_count) == digest_of_keys(expected), (
            "certificate digest is not over the restored keys"
        )
        anchors = [
            e
            for e in AuditEvent.objects.filter(action="restore.table_restored")
            if isinstance(e.details, dict) and e.details.get("certificate_hash") == cert.certificate_hash
        ]
        assert len(anchors) == 1, f"{table.table_label}: certificate anchored {len(anchors)} times in the audit chain"
    assert AuditEvent.objects.filter(action="restore.completed", object_id=str(req.pk)).count() == 1


def check_certificate_chain() -> None:
    from archival.restore.certificates import verify_restore_certificates
    from governance.chain_verification import verify_chains
    from governance.models.restore import RestoreCertificate

    prev = ""
    for cert in RestoreCertificate.objects.order_by("id"):
        assert cert.prev_hash == prev, f"certificate {cert.pk}: prev_hash does not link to the one before"
        prev = cert.certificate_hash
    assert verify_restore_certificates() == []
    report = verify_chains(write_log=False)
    assert report.ok, report.first_broken


def check_end_state(scenario: Scenario) -> None:
    """Source ∪ archive as before the restore; exactly the selected rows moved, with their archived values."""
    union_check(scenario.configs, scenario.original)
    assert union_digest(scenario.configs) == scenario.checksum
    expected: dict[str, set] = {}
    for planned in scenario.requests:
        for label, keys in planned.expected.items():
            assert not (expected.get(label, set()) & keys), f"{label}: two requests select the same rows"
            expected.setdefault(label, set()).update(keys)
    for config in scenario.configs:
        label = str(config)
        moved = expected.get(label, set())
        now_source = source_rows(config)
        now_archive = archive_rows(config)
        assert set(now_source) == scenario.before_source[label] | moved, (
            f"{label}: the source holds other keys than before plus the selection: "
            f"missing {sorted(scenario.before_source[label] | moved - set(now_source))[:3]}, "
            f"extra {sorted(set(now_source) - scenario.before_source[label] - moved)[:3]}"
        )
        assert set(now_archive) == set(scenario.before_archive[label]) - moved, f"{label}: archive keys differ"
        for key in moved:
            assert now_source[key] == scenario.before_archive[label][key].values, (
                f"{label}: restored row {key} differs from its archived values"
            )
    for planned in scenario.requests:
        check_request(planned)
    check_certificate_chain()


# --- the tests ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("topology", "point"),
    [("same_server", p) for p in SAME_SERVER_POINTS] + [("streaming", p) for p in STREAMING_POINTS],
)
def test_a_kill_at_a_named_point_then_execute_again_restores_exactly_the_selection(demo, topology, point):
    scenario = make_scenario(topology)
    planned = plan_requests(
        scenario, kinds_for(SAME_SERVER_POINTS if topology == "same_server" else STREAMING_POINTS, point)
    )
    killed_any = False
    for request in planned:
        killed = execute(request.request_id, topology_env(topology, ARCHIVAL_FAULT=point))
        if request.kind == "KEY_RANGE":
            # The longest request (two tables, ~60 batches) reaches every point.
            assert killed.returncode == -signal.SIGKILL, (
                f"the fault point {point} was not reached: {killed.stdout}{killed.stderr}"
            )
        else:
            # Short requests may finish before the point's n-th pass.
            assert killed.returncode in (-signal.SIGKILL, 0), killed.stdout + killed.stderr
        if killed.returncode == -signal.SIGKILL:
            killed_any = True
            assert status_of(request.request_id) == "EXECUTING"
            # Already true at the instant of the kill (a streamed batch may hold a row in both places).
            union_check(scenario.configs, scenario.original, allow_both=True)
            finish(request.request_id, topology)
        else:
            assert status_of(request.request_id) == "COMPLETED", killed.stdout
    assert killed_any
    check_end_state(scenario)
    # Executing a completed request again is refused, says why, and moves nothing.
    again = execute(planned[0].request_id, topology_env(topology))
    assert again.returncode == 1 and "completed" in again.stderr, again.stdout + again.stderr
    check_end_state(scenario)


@pytest.mark.parametrize("topology", ["same_server", "streaming"])
@pytest.mark.parametrize("trial", range(RANDOM_TRIALS))
def test_a_kill_at_a_random_moment_then_execute_again_loses_nothing(demo, topology, trial, tmp_path):
    from governance.models.restore import RestoreLedger

    scenario = make_scenario(topology)
    rng = random.Random(f"restore-{topology}-{trial}")
    (request,) = plan_requests(scenario, ["KEY_RANGE"])
    batches = sum(-(-len(keys) // int(BATCH)) for keys in request.expected.values())
    output = tmp_path / "execute.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), *EXECUTE, str(request.request_id), "--as", "restorer"],
            env=topology_env(topology),
            cwd=BASE_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # Kill after a random number of committed batches plus a random fraction
    # of the next one: anywhere inside the move, between or within batches.
    target = rng.randint(1, batches - 5)
    deadline = time.monotonic() + 120
    while (
        RestoreLedger.objects.filter(request_id=request.request_id).count() < target
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.03))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert proc.returncode == -signal.SIGKILL, f"the restore ended before the kill: {output.read_text()}"
    assert status_of(request.request_id) == "EXECUTING", "the kill came after the restore ended"
    union_check(scenario.configs, scenario.original, allow_both=True)
    finish(request.request_id, topology)
    check_end_state(scenario)


def test_archival_waits_for_a_restore_killed_mid_table(demo):
    """A run while a killed restore is EXECUTING leaves its tables alone: the partly restored rows stay."""
    scenario = make_scenario("same_server")
    (request,) = plan_requests(scenario, ["KEY_RANGE"])
    trade, contract = config_of("SourceDB2", "Trade"), config_of("SourceDB2", "Contract")
    killed = execute(request.request_id, topology_env("same_server", ARCHIVAL_FAULT="restore_batch_after_commit:8"))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert status_of(request.request_id) == "EXECUTING"
    partly = {str(c): set(source_rows(c)) for c in (trade, contract)}
    back_already = partly[str(trade)] - scenario.before_source[str(trade)]
    assert back_already and partly[str(contract)] - scenario.before_source[str(contract)], (
        "the kill came before any row of both tables was back"
    )
    ledger_before = BatchLedger.objects.count()
    # The status says the executing process is gone, and what to run.
    shown = manage("archival", "restore", "status", str(request.request_id), env=topology_env("same_server"))
    assert (
        "a process that is gone" in shown.stdout and f"archival restore execute {request.request_id}" in shown.stdout
    ), shown.stdout + shown.stderr

    # The restored trades are old: the current config finds them eligible again.
    run = manage("archival", "run", "--cutoff", CUTOFF, env=topology_env("same_server"))
    output = run.stdout + run.stderr

    assert f"restore {request.request_id}" in output.lower(), output
    assert run.returncode in (0, 1), output
    for config in (trade, contract):
        assert set(source_rows(config)) == partly[str(config)], f"{config}: archived while its restore was executing"
    # Every other table was archived completely by the first run: nothing moved at all.
    assert BatchLedger.objects.count() == ledger_before
    union_check(scenario.configs, scenario.original)

    finish(request.request_id, "same_server")
    check_end_state(scenario)


# The lease is the same code in both topologies: one at CI size, both at the full size.
@pytest.mark.parametrize("topology", ["streaming", "same_server"] if FULL_SIZE else ["streaming"])
def test_two_executions_at_once_move_each_row_once(demo, topology):
    scenario = make_scenario(topology)
    (request,) = plan_requests(scenario, ["KEY_RANGE"])
    cmd = [sys.executable, str(BASE_DIR / "manage.py"), *EXECUTE, str(request.request_id), "--as", "restorer"]
    env = topology_env(topology)
    procs = [
        subprocess.Popen(cmd, env=env, cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]

    # One executes the request; the other found it taken (the lease) or
    # started after it had completed: refused either way, with the reason.
    assert sorted(p.returncode for p in procs) == [0, 1], outputs
    loser = outputs[[p.returncode for p in procs].index(1)]
    assert "another worker is executing" in loser or "is completed" in loser, loser
    check_end_state(scenario)


def test_a_restore_waits_for_an_archival_run_killed_mid_table(demo):
    """A table with an unfinished archival run is not restored until the run is resumed."""
    from archival.engine.spec import topology
    from governance.models import OPEN_PHASES, RecoveryState
    from governance.models.restore import RestoreLedger

    scenario = make_scenario("same_server")
    (request,) = plan_requests(scenario, ["DATE_RANGE"])
    prices = config_of("SourceDB3", "PriceHistory")
    # Today's run finds the prices of the days since the first run's cutoff
    # eligible (all of them after the restored date range); killed after its
    # first batch of two.
    point = "batch_after_commit:1" if topology("SourceDB3") == "same_server" else "stream_after_delete:1"
    killed = manage(
        "archival", "run", "--table", "PriceHistory", env=topology_env("same_server", batch="2", ARCHIVAL_FAULT=point)
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    open_state = RecoveryState.objects.get(config=prices, phase__in=OPEN_PHASES)
    source_before = set(source_rows(prices))

    refused = execute(request.request_id, topology_env("same_server"))

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"archival run {open_state.run_id}" in refused.stderr, refused.stderr
    assert status_of(request.request_id) == "APPROVED"
    assert not RestoreLedger.objects.filter(request_id=request.request_id).exists()
    assert set(source_rows(prices)) == source_before

    resumed = manage("archival", "resume", env=topology_env("same_server", batch="2"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    newly_archived = source_before - set(source_rows(prices))
    assert newly_archived, "today's run archived nothing: the run was not unfinished"
    finish(request.request_id, "same_server")
    union_check(scenario.configs, scenario.original)
    check_request(request)
    check_certificate_chain()
    now_source, now_archive = source_rows(prices), archive_rows(prices)
    selected = request.expected[str(prices)]
    assert not (selected & set(now_archive)) and not (selected & newly_archived)
    assert all(now_source[k] == scenario.before_archive[str(prices)][k].values for k in selected)


@pytest.mark.parametrize("trial", range(max(1, RANDOM_TRIALS // 2)))
def test_a_run_started_during_a_restore_never_moves_its_tables_at_the_same_time(demo, trial):
    """A restore and an archival run started at nearly the same moment: one of them holds the shared tables.

    Either the restore claims first (the run reports the tables blocked by
    it) or the run does (the restore is refused until the run finishes, then
    executed again). The restored rows are eligible again under the current
    config, so a run may archive them again, but only after the restore completed.
    """
    from governance.models.restore import RestoreLedger, RestoreRequest

    scenario = make_scenario("same_server")
    (request,) = plan_requests(scenario, ["KEY_RANGE"])
    rng = random.Random(f"restore-run-race-{trial}")
    env = topology_env("same_server")
    restore = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), *EXECUTE, str(request.request_id), "--as", "restorer"],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Anywhere from before the restore's claim to the middle of its batches.
    time.sleep(rng.uniform(0, 0.8))
    run = manage("archival", "run", "--cutoff", CUTOFF, env=env)
    restore_output = restore.communicate(timeout=300)[0]

    assert run.returncode in (0, 1), run.stdout + run.stderr
    if restore.returncode != 0:
        assert restore.returncode == 1 and "archival run" in restore_output, restore_output
        finish(request.request_id, "same_server")
    req = RestoreRequest.objects.get(pk=request.request_id)
    assert req.status == "COMPLETED"
    first_restore_batch = RestoreLedger.objects.filter(request_id=req.pk).order_by("committed_at").first()
    shared = [config_of("SourceDB2", "Trade").pk, config_of("SourceDB2", "Contract").pk]
    for batch in BatchLedger.objects.filter(config_id__in=shared):
        # The first run's batches came before the restore; any other run's, after it completed.
        assert batch.committed_at < first_restore_batch.committed_at or batch.committed_at > req.finished_at, (
            f"run {batch.run_id} moved {batch.table_label} batch {batch.batch_no} while restore {req.pk} executed"
        )
    union_check(scenario.configs, scenario.original)
    check_request(request)
    check_certificate_chain()


def test_rows_archived_after_the_approval_do_not_come_back_unapproved(demo):
    from archival.restore.requests import approve, create_request
    from governance.models.restore import RestoreTable

    scenario = make_scenario("same_server")
    prices = config_of("SourceDB3", "PriceHistory")
    archived = scenario.before_archive[str(prices)]
    restorer, approver = personas()

    # Every archived price, and any that today's run archives: reference dates up to today.
    request = create_request(
        prices,
        "DATE_RANGE",
        actor=restorer,
        reason="crash test: a date range open towards today",
        date_from=dt.date.fromisoformat(min(r.reference_date for r in archived.values())),
        date_to=dt.date.today(),
    )
    approve(request, actor=approver, comment="approved: the rows of the preview")
    approved = RestoreTable.objects.get(request=request).planned_count
    assert approved == len(archived)
    # Today's run archives the prices of the days since the first run's cutoff.
    run = manage("archival", "run", "--table", "PriceHistory", env=topology_env("same_server"))
    assert run.returncode == 0 and len(archive_rows(prices)) > approved, run.stdout
    finish(request.pk, "same_server")

    restored = RestoreTable.objects.get(request=request).restored_count
    assert restored == approved, f"{approved} rows approved, {restored} restored"


@pytest.mark.parametrize(
    ("topology", "point"),
    [("same_server", "restore_batch_after_commit:10")]
    + ([("streaming", "restore_stream_after_delete:10")] if FULL_SIZE else []),
)
def test_a_conflict_met_on_resume_fails_the_table_and_execute_finishes_once_it_is_resolved(demo, topology, point):
    """After a kill mid-table, a row with a selected key and other values appears in the source.

    The resume stops the table before anything of that batch moves (FAILED,
    the key named); once the row is resolved, executing again finishes the
    request as if nothing had happened.
    """
    from governance.models.restore import RestoreLedger, RestoreTable

    scenario = make_scenario(topology)
    (request,) = plan_requests(scenario, ["KEY_RANGE"])
    trade = config_of("SourceDB2", "Trade")
    killed = execute(request.request_id, topology_env(topology, ARCHIVAL_FAULT=point))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    # The next selected trade still in the archive, written into the source with another side.
    key = min(set(archive_rows(trade)) & request.expected[str(trade)])
    backend = backend_for("SourceDB2")
    columns = backend.describe(trade.schema_name, "Trade").column_names
    values = list(scenario.before_archive[str(trade)][key].values)
    side = columns.index("side")
    values[side] = "S" if values[side] == "B" else "B"
    table = backend.qualified(trade.schema_name, "Trade")
    with connections["SourceDB2"].cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} ({', '.join(backend.quote(c) for c in columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})",
            values,
        )
    ledger_before = RestoreLedger.objects.filter(request_id=request.request_id).count()

    failed = execute(request.request_id, topology_env(topology))

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert status_of(request.request_id) == "FAILED"
    stopped = RestoreTable.objects.get(request_id=request.request_id, config=trade)
    assert stopped.phase == "FAILED" and f"tradeId={key[0]}" in stopped.last_error, stopped.last_error
    assert f"tradeId={key[0]}" in failed.stdout + failed.stderr
    # Nothing of the conflicting batch moved: no ledger row, the key still archived.
    assert RestoreLedger.objects.filter(request_id=request.request_id).count() == ledger_before
    assert key in archive_rows(trade)

    with connections["SourceDB2"].cursor() as cur:
        cur.execute(f"DELETE FROM {table} WHERE {backend.quote('tradeId')} = %s", [key[0]])
    finish(request.request_id, topology)
    check_end_state(scenario)
