"""The OLTP-impact benchmark's own logic (bench/oltp.py): percentiles, the mix, periods, the result file.

No database and no timing: the harness's arithmetic, on made-up records.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench import oltp

MARKS = {"load_start": 100.0, "baseline_from": 105.0, "engine_start": 125.0, "engine_end": 155.0, "load_end": 165.0}


def record(i, kind, scheduled, latency_ms, *, wait_ms=0.0, busy=0.0, error=""):
    """A load record: scheduled at ``scheduled``, started ``wait_ms`` later, ended ``latency_ms`` after scheduling."""
    started = scheduled + wait_ms / 1000
    return [i, oltp.KINDS.index(kind), scheduled, started, scheduled + latency_ms / 1000, busy, error]


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert oltp.percentile(values, 50) == 50
    assert oltp.percentile(values, 95) == 95
    assert oltp.percentile(values, 99) == 99
    assert oltp.percentile(values, 100) == 100
    assert oltp.percentile([7.0], 99) == 7.0
    assert oltp.percentile([], 99) is None


def test_a_percentile_ignores_the_order_of_the_values():
    assert oltp.percentile([5, 1, 4, 2, 3], 60) == 3
    assert oltp.percentile([3, 1, 2], 1) == 1


def test_the_mix_is_the_same_sequence_for_the_same_seed_on_every_engine():
    assert oltp.plan(500, seed=7) == oltp.plan(500, seed=7)
    assert oltp.plan(500, seed=7) != oltp.plan(500, seed=8)


def test_the_mix_follows_its_weights():
    n = 20_000
    counts = Counter(oltp.KINDS[k] for k, _ in oltp.plan(n))
    total = sum(w for _, w in oltp.MIX)
    for kind, weight in oltp.MIX:
        assert counts[kind] / n == pytest.approx(weight / total, abs=0.015), kind


def test_the_mix_reads_updates_and_inserts_positions_and_trades():
    kinds = set(oltp.KINDS)
    assert {
        "read_position",
        "read_trades",
        "update_position",
        "update_trade",
        "insert_trade",
        "insert_position",
    } == kinds
    assert oltp.WRITES == {k for k in kinds if not k.startswith("read")}
    assert set(oltp.WRITES_TO) == oltp.WRITES


@pytest.mark.parametrize("vendor", ["postgresql", "mysql", "sqlite"])
def test_every_engine_gets_every_statement_of_the_mix(vendor):
    stmts = oltp.Statements(vendor, "P", "C", "T")
    assert set(stmts.sql) == set(oltp.KINDS)
    keys = {"positions": [(1, 2, "2026-01-01")], "trades": [(3, 1)], "contracts1": [4], "contracts2": [5]}
    marker = "?" if vendor == "sqlite" else "%s"
    for kind, sql in stmts.sql.items():
        assert sql.count(marker) == len(stmts.params(kind, 42, 123, keys)), kind


def test_new_rows_get_keys_no_generated_row_has_and_each_transaction_its_own():
    stmts = oltp.Statements("postgresql", "P", "C", "T")
    keys = {"positions": [(1, 2, "2026-01-01")], "trades": [(3, 1)], "contracts1": [4], "contracts2": [5]}
    first = stmts.params("insert_trade", 1, 0, keys)[0]
    second = stmts.params("insert_trade", 2, 0, keys)[0]
    assert first >= oltp.NEW_TRADE and first != second
    assert stmts.params("insert_position", 1, 0, keys)[0] >= oltp.NEW_BASKET


def test_transactions_fall_into_warm_up_baseline_during_and_after_by_their_schedule():
    assert oltp.window_of(101.0, MARKS) is None
    assert oltp.window_of(105.0, MARKS) == "baseline"
    assert oltp.window_of(130.0, MARKS) == "during"
    assert oltp.window_of(155.0, MARKS) == "during"
    assert oltp.window_of(160.0, MARKS) == "after"


def test_the_summary_counts_latency_from_the_schedule_and_service_from_the_start():
    recs = [record(i, "read_position", 106 + i * 0.1, 2.0 + i % 3, wait_ms=1.0) for i in range(100)]
    recs += [record(200 + i, "update_trade", 126 + i * 0.1, 20.0, wait_ms=15.0) for i in range(100)]
    out = oltp.summarize(recs, MARKS)
    assert out["baseline"]["transactions"] == 100
    assert out["baseline"]["latency_ms"]["p99"] == pytest.approx(4.0)
    assert out["baseline"]["service_ms"]["p99"] == pytest.approx(3.0)
    assert out["during"]["latency_ms"]["p50"] == pytest.approx(20.0)
    assert out["during"]["service_ms"]["p50"] == pytest.approx(5.0)
    assert out["during"]["tps"] == pytest.approx(100 / 30, abs=0.1)
    assert out["after"]["transactions"] == 0 and out["after"]["latency_ms"]["p99"] is None


def test_errors_and_busy_time_are_counted_and_failed_transactions_left_out_of_the_latencies():
    recs = [record(i, "update_position", 130 + i * 0.01, 3.0) for i in range(99)]
    recs.append(record(99, "update_position", 131.5, 5000.0, error="lock_timeout"))
    recs.append(record(100, "insert_trade", 131.6, 900.0, busy=0.8))
    recs.append(record(101, "insert_trade", 131.7, 5100.0, busy=5.0, error="busy_timeout"))
    during = oltp.summarize(recs, MARKS)["during"]
    assert during["errors"] == {"lock_timeout": 1, "busy_timeout": 1}
    assert during["latency_ms"]["max"] == pytest.approx(900.0)
    assert during["busy_seconds"] == pytest.approx(5.8)
    assert during["busy_transactions"] == 2
    assert during["per_kind"]["insert_trade"]["n"] == 1


def test_the_load_s_write_share_is_per_source_and_excludes_waits_for_the_lock():
    # 30 s of "during"; Position writes hold SourceDB1 for 3 s in all, Trade writes SourceDB2 for 1.5 s.
    recs = [record(i, "update_position", 126 + i * 0.5, 100.0) for i in range(30)]
    recs += [record(100 + i, "insert_trade", 126.2 + i * 0.5, 150.0, busy=0.1) for i in range(30)]
    share = oltp.summarize(recs, MARKS)["during"]["write_share"]
    assert share == {"SourceDB1": pytest.approx(0.1), "SourceDB2": pytest.approx(0.05)}


def test_the_p99_rise_and_the_goal():
    load = {"baseline": {"latency_ms": {"p99": 10.0}}, "during": {"latency_ms": {"p99": 10.9}}}
    assert oltp.p99_rise(load) == pytest.approx(0.09)
    assert oltp.goal(0.09, 0.5) is True
    assert oltp.goal(0.10, 0.9) is False
    assert oltp.goal(0.02, 0.49) is False
    assert oltp.goal(None, 0.9) is None
    assert oltp.p99_rise({"baseline": {"latency_ms": {"p99": None}}, "during": {"latency_ms": {"p99": 3}}}) is None


def test_sampled_waits_are_attributed_per_period_and_side():
    samples = [(110.0, {"load Lock:transactionid": 1}), (111.0, {}), (130.0, {"engine IO:WALSync": 2}), (131.0, {})]
    out = oltp.summarize_waits(samples, MARKS, 0.1)
    assert out["baseline"]["samples"] == 2
    assert out["baseline"]["waits"]["load Lock:transactionid"] == {"samples": 1, "fraction": 0.5}
    assert out["during"]["waits"]["engine IO:WALSync"]["samples"] == 2
    text = oltp.load_waits({"load Lock:tuple": {"samples": 3}, "load IO:WALSync": {"samples": 20}}, 0.1)
    assert text == "locks ~0.3 s; most seen: IO:WALSync ~2.0 s"


def test_the_engine_s_share_of_the_sqlite_writer_is_what_the_probes_saw_less_the_load_s_own():
    waits = {
        "baseline": {"waits": {"writer taken SourceDB1": {"samples": 30, "fraction": 0.3}}},
        "during": {"waits": {"writer taken SourceDB1": {"samples": 80, "fraction": 0.8}}},
    }
    load = {"baseline": {"write_share": {"SourceDB1": 0.31}}, "during": {"write_share": {"SourceDB1": 0.3}}}
    out = oltp.sqlite_writer(waits, load)
    assert out["during"]["engine_share"] == {"SourceDB1": 0.5}
    assert out["baseline"]["engine_share"] == {"SourceDB1": 0.0}


def test_server_counters_become_deltas_per_period():
    counters = {"baseline_from": {"deadlocks": 1}, "engine_start": {"deadlocks": 1}, "engine_end": {"deadlocks": 3},
                "load_end": {"deadlocks": 3}}  # fmt: skip
    assert oltp.counter_deltas(counters) == {
        "baseline": {"deadlocks": 0},
        "during": {"deadlocks": 2},
        "after": {"deadlocks": 0},
    }


def test_errors_are_classified_per_engine():
    class PgError(Exception):
        sqlstate = "55P03"

    assert oltp.classify("postgresql", PgError()) == "lock_timeout"
    assert oltp.classify("mysql", Exception(1205, "Lock wait timeout exceeded")) == "lock_timeout"
    assert oltp.classify("mysql", Exception(1213, "Deadlock found")) == "deadlock"
    busy = Exception("database is locked")
    assert oltp.is_busy(busy)
    assert not oltp.is_busy(Exception("no such table: x"))


def test_a_variant_splits_into_the_engine_s_environment_and_scheduler_settings():
    name, env = oltp.parse_variant("nopacing:pacing_enabled=false,ARCHIVAL_BATCH_SIZE=1000")
    assert name == "nopacing"
    assert oltp.split_variant(env) == ({"ARCHIVAL_BATCH_SIZE": "1000"}, ["pacing_enabled=false"])
    assert oltp.parse_variant("default:") == ("default", {})


def test_the_result_table_has_one_line_per_engine_and_variant(tmp_path):
    load = {
        name: {
            "latency_ms": {"p50": 1.0, "p95": 5.0, "p99": 10.0 if name == "baseline" else 10.5, "max": 20.0},
            "errors": {} if name == "baseline" else {"lock_timeout": 2},
            "busy_seconds": 0.0,
            "busy_transactions": 0,
        }
        for name in ("baseline", "during")
    }
    variant = {
        "load": load,
        "p99_rise": 0.05,
        "ratio": 0.62,
        "waits": {"during": {"waits": {"load Lock:tuple": {"samples": 4, "fraction": 0.01}}}},
        "sample_interval": 0.1,
        "engine": {
            "report": {
                "rows": 1000,
                "run_seconds": 2.0,
                "audit_actions": {"batch.lock_timeout": 1},
                "pacing_seconds": {"latency": 1.5, "lock": 0.0},
            }
        },
        "machine_before": {"loadavg": [0.4, 0.5, 0.6]},
    }
    doc = {"results": {"postgresql": {"ceiling": {"rows": 1000, "seconds": 1.0}, "variants": {"default": variant},
                                      "alone": {"default": {"ratio": 0.8}}}}}  # fmt: skip
    lines = oltp.table(doc)
    rows = [line for line in lines if line.startswith("| postgresql")]
    assert len(rows) == 1
    assert "+5.0%" in rows[0] and "lock_timeout 2" in rows[0] and "0.62" in rows[0] and "0.8" in rows[0]
    assert "locks ~0.4 s" in rows[0] and "| 0.4 |" in rows[0]
    # The document is what the run writes: plain JSON.
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    assert json.loads(path.read_text()) == doc


def test_the_bench_uses_databases_of_its_own(monkeypatch):
    from bench import envs

    monkeypatch.delenv("BENCH_DB_PREFIX", raising=False)
    monkeypatch.delenv("BENCH_ROOT", raising=False)
    monkeypatch.setattr(envs, "P", envs.P)
    monkeypatch.setattr(envs, "ROOT", envs.ROOT)
    oltp.use_own_databases()
    assert envs.P == "oltp" and str(envs.ROOT) == "/tmp/oltp_bench"
    assert envs.environment("postgresql")["DATABASE_URL"].endswith("/oltp_control")


def test_the_pacing_check_reports_each_pair_and_the_median_ratio():
    pairs = [
        {"on": {"seconds": 10.2}, "off": {"seconds": 10.0}, "ratio": 1.02},
        {"on": {"seconds": 9.9}, "off": {"seconds": 10.0}, "ratio": 0.99},
        {"on": {"seconds": 10.7}, "off": {"seconds": 10.0}, "ratio": 1.07},
    ]
    doc = {"results": {"sqlite": {"pacing_pairs": {"size": "small", "pairs": pairs, "median_ratio": 1.02,
                                                   "within_5_percent": True}}}}  # fmt: skip
    assert oltp.table(doc) == []
    line = oltp.pairs_table(doc)[-1]
    assert line == "| sqlite | small | 10.20, 9.90, 10.70 | 10.00, 10.00, 10.00 | 1.020, 0.990, 1.070 | 1.020 | yes |"


def test_the_latest_figures_keep_the_engines_this_run_did_not_measure(tmp_path):
    path = tmp_path / "latest-oltp.json"
    oltp.write_latest(path, {"date": "A", "results": {"sqlite": {"date": "A"}, "postgresql": {"date": "A"}}})
    merged = oltp.write_latest(path, {"date": "B", "results": {"postgresql": {"date": "B"}}})
    assert merged["results"] == {"sqlite": {"date": "A"}, "postgresql": {"date": "B"}}
    assert json.loads(path.read_text())["files"] == ["A", "B"]


def test_the_undisturbed_load_is_also_estimated_from_before_and_after_the_run_pooled():
    recs = [record(i, "read_position", 106 + i * 0.1, 4.0) for i in range(50)]
    recs += [record(100 + i, "read_position", 156 + i * 0.1, 2.0) for i in range(50)]
    recs += [record(200 + i, "read_position", 126 + i * 0.1, 5.0) for i in range(100)]
    out = oltp.summarize(recs, MARKS)
    assert out["baseline_and_after"]["transactions"] == 100
    assert out["baseline_and_after"]["latency_ms"]["p50"] == pytest.approx(2.0)
    assert oltp.p99_rise(out) == pytest.approx(0.25)
    assert oltp.p99_rise_pooled(out) == pytest.approx(0.25)
