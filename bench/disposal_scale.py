"""Disposal at scale on PostgreSQL: the engine against a DBA's plain batched DELETE.

Builds once (into template databases; ``--rebuild`` to redo) an archived
``Position`` table of ``--rows`` rows, created by the engine's own DDL
(``archival.engine.archive_tables.ensure_archive_table``), so the bench
follows the archive shape wherever it goes; 25% of the rows are expired
(``retention_until`` before today), scattered over the key order by a hash
of the row number. Then 1,000 holds are placed through ``place_hold`` (the
admin's path), of mixed scopes:

- 850 CONTRACT holds (one contract in 23.5 of the 20,000);
- 100 KEYS holds of 20 keys each (2,000 explicit keys, 3 in 4 of them expired rows);
- 30 DATE_RANGE holds of one day each on ``reference_date``, in the expired years;
- 10 TABLE holds on the Contract table (configured; they cover no Position row);
- 10 holds released again (one ALL, one TABLE on Position, eight CONTRACT):
  in the table, protecting nothing.

Then it alternates, each on a fresh copy of the templates (``CREATE DATABASE
... TEMPLATE``, then CHECKPOINT and sync):

- **plain**: what a DBA would write by hand, given the held rows for free
  (their keys materialised in ``bench_keep``, untimed, at build): keyset
  batches of the same size (5,000), one transaction each,
  ``WITH b AS (SELECT key ... WHERE retention_until < today AND key > cursor
  AND NOT EXISTS (bench_keep) ORDER BY key LIMIT n) DELETE ... USING b``;
- **engine**: ``plan_disposal`` then ``execute_disposal`` (what ``manage.py
  dispose --plan`` / ``--execute`` and the admin's actions call), approvals
  automatic (``ARCHIVAL_DISPOSAL_APPROVALS_FUNCTIONAL=0``: review is people's
  time, not the engine's). Certificates, ledger and audit rows are written as
  in production. Each statement the engine runs is timed by kind (Django's
  ``execute_wrapper``), and the hold check alone is timed on a sample of the
  planned batches before executing them: the batch's count with the hold
  condition minus the same count without it.

Both end with the same archive (checked: same rows left). Rows/s count the
disposed rows; the process's peak RSS is reported for both.

Usage (own database names: ``BENCH_DB_PREFIX``; data dir ``BENCH_ROOT``):

    BENCH_DB_PREFIX=me BENCH_ROOT=/tmp/me_bench python bench/disposal_scale.py --rows 2000000 --pairs 5
    python bench/disposal_scale.py --rows 20000000 --pairs 3 --keep   # reuse templates: --reuse
    python bench/disposal_scale.py --drop                              # drop this bench's databases
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("BENCH_DB_PREFIX", "benchdisp")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import envs  # noqa: E402

TABLE = "Position"
CONTRACTS = 20_000
# Rows per batch, engine and plain alike (``--batch``; the engine's comes from
# the table's batch size, ARCHIVAL_BATCH_SIZE here).
BATCH = int(os.environ.get("BENCH_DISPOSAL_BATCH", "5000"))
EXPIRED_SHARE = 4  # one row in 4 is expired
SPAN_DAYS = 3652  # reference dates spread over ten years
YEARS = 10
HOLDS = {"CONTRACT": 850, "KEYS": 100, "DATE_RANGE": 30, "TABLE": 10, "RELEASED": 10}
KEYS_PER_HOLD = 20
SAMPLE_BATCHES = 20
SEED = 97531


def child_env(template: bool) -> dict[str, str]:
    env = envs.environment("postgresql", "same", template=template)
    env["ARCHIVAL_DISPOSAL_APPROVALS_FUNCTIONAL"] = "0"
    env["ARCHIVAL_BATCH_SIZE"] = env["BENCH_DISPOSAL_BATCH"] = str(BATCH)
    return env


def child(task: str, *args: str, template: bool = False) -> dict:
    """Run this script's ``task`` in a child process (its own Django, its own peak memory); its JSON result."""
    proc = subprocess.run(
        [envs.PYTHON, __file__, "--task", task, *args],
        env=child_env(template),
        cwd=envs.REPO,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-6000:])
        raise RuntimeError(f"{task} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_start(today: dt.date) -> dt.date:
    """First reference date, so that one row in EXPIRED_SHARE has retention_until < today."""
    boundary = today.replace(year=today.year - YEARS) if not (today.month == 2 and today.day == 29) else None
    boundary = boundary or dt.date(today.year - YEARS, 2, 28)
    return boundary - dt.timedelta(days=SPAN_DAYS // EXPIRED_SHARE)


# -- child tasks (Django configured) ---------------------------------------------------
def task_build(rows: int) -> dict:
    import dataclasses

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections, transaction

    from archival.disposal import place_hold, release_hold
    from archival.disposal.tables import archive_table_for
    from archival.engine.archive_tables import build_pending_indexes, ensure_archive_table
    from archival.engine.spec import build_spec
    from bench import generate

    started = time.perf_counter()
    for alias in ("default", "archive"):
        call_command("migrate", database=alias, verbosity=0)
    today = dt.date.today()
    # The source tables as the archival bench has them; Position empty (its rows
    # go straight to the archive, as if archived by an earlier run).
    position = dataclasses.replace(generate.position_table(0, CONTRACTS), rows=0)
    contract = generate.contract_table("SourceDB1", CONTRACTS)
    generate.load([contract, position], log=lambda *_: None)
    configs = {c.table_name: c for c in generate.create_configs([contract, position])}
    config = configs[TABLE]
    spec = build_spec(config, today)
    ensure_archive_table(spec)
    t = archive_table_for(config)
    arc = connections["archive"]
    d = generate.dialect_for("postgresql")
    names = ", ".join(d.quote(c.name) for c in position.columns)
    exprs = ", ".join(d.render(c.expr, SEED) for c in position.columns)
    start = reference_start(today)
    # A hash of the row number spreads the reference dates (and so the expired
    # rows) over the key order, as rows of every age sit side by side.
    ref = f"(DATE '{start.isoformat()}' + CAST(((g.n * 2654435761 + {SEED}) % 2147483647) % {SPAN_DAYS} AS integer))"
    with transaction.atomic(using="archive"), arc.cursor() as cur:
        cur.execute(
            f"INSERT INTO {t.qualified} ({names}, archived_at, archive_run_id, reference_date, retention_until) "
            f"SELECT {exprs}, now(), 1, r.d, CAST(r.d + interval '{YEARS} years' AS date) "
            f"FROM generate_series(0, {rows - 1}) AS g(n) CROSS JOIN LATERAL (SELECT {ref} AS d) r"
        )
    # Its secondary indexes, as a run builds them after its batches.
    build_pending_indexes(spec)
    with arc.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {t.qualified}")
    loaded = time.perf_counter() - started

    # 1,000 holds through the admin's write path.
    actor = "bench compliance officer"
    placed = 0
    step = CONTRACTS // HOLDS["CONTRACT"]
    for i in range(HOLDS["CONTRACT"]):
        place_hold(
            scope="CONTRACT", actor=actor, reason="litigation", source_db="SourceDB1", contract_value=str(1 + i * step)
        )
        placed += 1
    with arc.cursor() as cur:
        expired_where = f"{t.col('retention_until')} < %s"
        # Keys spread over the table: three expired rows in four.
        cur.execute(
            f"(SELECT {t.pk_select()} FROM {t.qualified} a WHERE {expired_where} ORDER BY md5(CAST(a.{d.quote('basketId')} "
            f"AS text) || a.{d.quote('positionId')}) LIMIT %s) UNION ALL (SELECT {t.pk_select()} FROM {t.qualified} a "
            f"WHERE NOT {expired_where} ORDER BY md5(CAST(a.{d.quote('basketId')} AS text)) LIMIT %s)",
            [
                today,
                HOLDS["KEYS"] * KEYS_PER_HOLD * 3 // 4,
                today,
                HOLDS["KEYS"] * KEYS_PER_HOLD // 4,
            ],
        )
        keys = cur.fetchall()
    for i in range(HOLDS["KEYS"]):
        place_hold(
            scope="KEYS",
            actor=actor,
            reason="regulator request",
            source_db="SourceDB1",
            table_name=TABLE,
            keys=[list(k) for k in keys[i :: HOLDS["KEYS"]]],
        )
        placed += 1
    expired_days = SPAN_DAYS // EXPIRED_SHARE
    for i in range(HOLDS["DATE_RANGE"]):
        day = start + dt.timedelta(days=(i * expired_days) // HOLDS["DATE_RANGE"])
        place_hold(scope="DATE_RANGE", actor=actor, reason="audit of that day", date_from=day, date_to=day)
        placed += 1
    for _ in range(HOLDS["TABLE"]):
        place_hold(
            scope="TABLE", actor=actor, reason="contract data review", source_db="SourceDB1", table_name="Contract"
        )
        placed += 1
    released = [
        place_hold(scope="ALL", actor=actor, reason="blanket freeze"),
        place_hold(scope="TABLE", actor=actor, reason="table review", source_db="SourceDB1", table_name=TABLE),
        *[
            place_hold(
                scope="CONTRACT", actor=actor, reason="settled", source_db="SourceDB1", contract_value=str(2 + i)
            )
            for i in range(HOLDS["RELEASED"] - 2)
        ],
    ]
    for hold in released:
        release_hold(hold.pk, actor=actor, reason="no longer needed")
        placed += 1

    # The yardstick's free knowledge of the held rows (computed once, untimed).
    unheld, unheld_params = t.unheld_sql(today)
    expired_where = f"{t.col('retention_until')} < %s"
    with transaction.atomic(using="archive"), arc.cursor() as cur:
        cur.execute("CREATE SCHEMA bench")
        pk = ", ".join(d.quote(c) for c in t.pk)
        cur.execute(
            f"CREATE TABLE bench.keep AS SELECT {t.pk_select()} FROM {t.qualified} a WHERE {expired_where} "
            f"EXCEPT SELECT {t.pk_select()} FROM {t.qualified} a WHERE {expired_where} AND {unheld}",
            [today, today, *unheld_params],
        )
        cur.execute(f"ALTER TABLE bench.keep ADD PRIMARY KEY ({pk})")
        cur.execute("ANALYZE bench.keep")
        cur.execute(f"SELECT COUNT(*) FROM {t.qualified} a WHERE {t.col('retention_until')} < %s", [today])
        expired = cur.fetchone()[0]
        cur.execute("SELECT COUNT(*) FROM bench.keep")
        kept = cur.fetchone()[0]
    for alias in connections:
        connections[alias].close()
    return {
        "rows": rows,
        "expired": expired,
        "held_expired": kept,
        "disposable": expired - kept,
        "holds": placed,
        "today": today.isoformat(),
        "table": t.qualified,
        "load_s": round(loaded, 1),
        "build_s": round(time.perf_counter() - started, 1),
    }


def _statement_kind(sql: str) -> str:
    s = sql.lstrip().upper()
    if "GOVERNANCE_HOLD" in s and (s.startswith("DELETE FROM") or " AS (DELETE FROM " in s):
        return "delete (with hold check)"
    if s.startswith("SELECT SUM(CASE WHEN") and "RETENTION_UNTIL" in s:
        return "range counts"
    if s.startswith("SELECT COUNT(*)") and "GOVERNANCE_HOLD" in s:
        return "counts (with hold check)"
    if s.startswith("SELECT") and "GOVERNANCE_HOLD" in s and "LIMIT" in s:
        return "plan keyset select (with hold check)"
    if "GOVERNANCE_HOLD" in s or "GOVERNANCE_HOLDKEY" in s:
        return "hold reads"
    if "DISPOSALCERTIFICATE" in s:
        return "certificates"
    if "AUDITEVENT" in s or "AUDITCHAINHEAD" in s:
        return "audit"
    if "DISPOSALBATCH" in s or "DISPOSALAPPROVAL" in s:
        return "batch rows and leases"
    return "other"


def task_engine(today_iso: str, sample: int) -> dict:
    import django

    django.setup()
    from django.db import connections

    from archival.disposal import execute_disposal, plan_disposal
    from archival.disposal.tables import archive_table_for
    from governance.models import DisposalBatch, TableConfig

    today = dt.date.fromisoformat(today_iso)
    timings: dict[str, list[float]] = {}

    def timer(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timings.setdefault(_statement_kind(sql), []).append(time.perf_counter() - t0)

    actor = "bench administrator"
    with connections["archive"].execute_wrapper(timer), connections["default"].execute_wrapper(timer):
        t0 = time.perf_counter()
        plan = plan_disposal(actor=actor, today=today)
        plan_s = time.perf_counter() - t0
    assert plan.ok, [t.error for t in plan.tables]
    plan_timings, timings = timings, {}

    # The hold check alone, on a sample of the planned batches (untimed above and below).
    config = TableConfig.objects.get(table_name=TABLE)
    t = archive_table_for(config)
    batches = list(DisposalBatch.objects.filter(config=config).order_by("batch_no"))
    chosen = batches[:: max(1, len(batches) // sample)][:sample]
    unheld, unheld_params = t.unheld_sql(today)
    expired = f"{t.col('retention_until')} < %s"
    with_check, without = [], []
    with connections["archive"].cursor() as cur:
        for b in chosen:
            rng, rng_params = t.range_sql(b.key_low, b.key_high)
            for sql, params, into in (
                (f"SELECT COUNT(*) FROM {t.qualified} a WHERE {rng} AND {expired}", [*rng_params, today], without),
                (
                    f"SELECT COUNT(*) FROM {t.qualified} a WHERE {rng} AND {expired} AND {unheld}",
                    [*rng_params, today, *unheld_params],
                    with_check,
                ),
            ):
                s0 = time.perf_counter()
                cur.execute(sql, params)
                cur.fetchone()
                into.append((time.perf_counter() - s0) * 1000)

    with connections["archive"].execute_wrapper(timer), connections["default"].execute_wrapper(timer):
        t0 = time.perf_counter()
        result = execute_disposal(actor=actor, today=today)
        exec_s = time.perf_counter() - t0
    assert result.ok, [b.error for b in result.errors][:3]
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {t.qualified}")
        left = cur.fetchone()[0]
    return {
        "batches": len(result.batches),
        "deleted": result.deleted,
        "held": result.held,
        "left": left,
        "plan_s": plan_s,
        "execute_s": exec_s,
        "hold_check_ms": statistics.median(w - o for w, o in zip(with_check, without, strict=True)),
        "count_with_check_ms": statistics.median(with_check),
        "count_without_ms": statistics.median(without),
        "plan_statements": {k: [len(v), sum(v)] for k, v in plan_timings.items()},
        "execute_statements": {k: [len(v), sum(v)] for k, v in timings.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


def task_plain(today_iso: str, table: str) -> dict:
    """The DBA's batched delete, on a plain psycopg connection (no Django in the loop)."""
    import psycopg

    today = dt.date.fromisoformat(today_iso)
    url = os.environ["ARCHIVE_DATABASE_URL"]
    t = table
    k = ('"basketId"', '"positionId"', '"businessDate"')
    cols = ", ".join(k)
    after = f"({k[0]} >= %s AND ({k[0]} > %s OR ({k[0]} = %s AND ({k[1]} > %s OR ({k[1]} = %s AND {k[2]} > %s)))))"
    deleted = batches = 0
    cursor_key = None
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        # The DBA's tuning: the planner takes the anti-join with the held keys
        # for all but empty and would sort every remaining expired row per
        # batch; walk the key index instead, probing the held keys by their key.
        for setting in ("jit", "enable_sort", "enable_mergejoin", "enable_hashjoin"):
            conn.execute(f"SET {setting} = off")
        while True:
            cond, params = ("", [])
            if cursor_key is not None:
                b, p, d = cursor_key
                cond, params = f"AND {after}", [b, b, b, p, p, d]
            with conn.transaction():
                rows = conn.execute(
                    f"WITH b AS (SELECT {cols} FROM {t} a WHERE retention_until < %s {cond} "
                    f"AND NOT EXISTS (SELECT 1 FROM bench.keep k WHERE (k.{k[0]}, k.{k[1]}, k.{k[2]}) = "
                    f"(a.{k[0]}, a.{k[1]}, a.{k[2]})) ORDER BY {cols} LIMIT %s) "
                    f"DELETE FROM {t} a USING b WHERE (a.{k[0]}, a.{k[1]}, a.{k[2]}) = (b.{k[0]}, b.{k[1]}, b.{k[2]}) "
                    f"RETURNING a.{k[0]}, a.{k[1]}, a.{k[2]}",
                    [today, *params, BATCH],
                ).fetchall()
            if not rows:
                break
            batches += 1
            deleted += len(rows)
            cursor_key = max(rows)
            if len(rows) < BATCH:
                break
        elapsed = time.perf_counter() - started
        left = conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
    return {"batches": batches, "deleted": deleted, "seconds": elapsed, "left": left, "peak_rss_mb": peak_rss_mb()}


# -- the orchestration (no Django here) -------------------------------------------------
def drop_all() -> None:
    for name in ("control", "data"):
        for suffix in ("", "_tpl"):
            envs._pg(f'DROP DATABASE IF EXISTS "{envs.P}_{name}{suffix}" WITH (FORCE)')


def templates_exist() -> bool:
    import psycopg

    with psycopg.connect(f"{envs.PG}/postgres") as conn:
        n = conn.execute(
            "SELECT COUNT(*) FROM pg_database WHERE datname IN (%s, %s)",
            [f"{envs.P}_control_tpl", f"{envs.P}_data_tpl"],
        ).fetchone()[0]
    return n == 2


def main() -> None:
    global BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--pairs", type=int, default=3, help="alternated (plain, engine) pairs")
    parser.add_argument("--reuse", action="store_true", help="keep the templates of an earlier build of this size")
    parser.add_argument("--keep", action="store_true", help="leave the databases (else dropped at the end)")
    parser.add_argument("--drop", action="store_true", help="only drop this bench's databases")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--batch", type=int, default=BATCH, help="rows per batch, engine and plain (default 5,000)")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    BATCH = args.batch

    if args.task:
        fn = {"build": task_build, "engine": task_engine, "plain": task_plain}[args.task]
        typed = [int(a) if a.isdigit() else a for a in args.args]
        print(json.dumps(fn(*typed)))
        return
    if args.drop:
        drop_all()
        return
    envs.check_reachable("postgresql")
    info_file = envs.ROOT / "disposal_build.json"
    build = json.loads(info_file.read_text()) if args.reuse and info_file.exists() and templates_exist() else None
    if build is None or build["rows"] != args.rows or build["today"] != dt.date.today().isoformat():
        envs.fresh_databases("postgresql", template=True)
        build = child("build", str(args.rows), template=True)
        info_file.write_text(json.dumps(build))
    print(
        f"archive: {build['rows']:,} rows, {build['expired']:,} expired, {build['held_expired']:,} of them held "
        f"({100 * build['held_expired'] / build['expired']:.1f}%), {build['disposable']:,} disposable; "
        f"{build['holds']} holds; built in {build['build_s']}s (rows loaded in {build['load_s']}s)",
        flush=True,
    )
    plain, engine = [], []
    for i in range(args.pairs):
        # Alternate which goes first, so neither always runs on the warmer machine.
        order = ("plain", "engine") if i % 2 == 0 else ("engine", "plain")
        for what in order:
            envs.restore("postgresql", args.rows, 1)
            if what == "plain":
                r = child("plain", build["today"], build["table"])
                assert r["deleted"] == build["disposable"], r
                plain.append(r)
                print(
                    f"  pair {i + 1} plain : {r['deleted'] / r['seconds']:>9,.0f} rows/s ({r['seconds']:.1f}s)",
                    flush=True,
                )
            else:
                r = child("engine", build["today"], str(SAMPLE_BATCHES))
                assert r["deleted"] == build["disposable"], r
                engine.append(r)
                total = r["plan_s"] + r["execute_s"]
                print(
                    f"  pair {i + 1} engine: {r['deleted'] / total:>9,.0f} rows/s plan+execute "
                    f"({r['plan_s']:.1f}s + {r['execute_s']:.1f}s), {r['deleted'] / r['execute_s']:,.0f} rows/s execute; "
                    f"hold check {r['hold_check_ms']:.1f} ms/batch; peak RSS {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        assert plain[-1]["left"] == engine[-1]["left"], (plain[-1]["left"], engine[-1]["left"])
    n = build["disposable"]
    med = statistics.median
    plain_rate = med(n / r["seconds"] for r in plain)
    full_rate = med(n / (r["plan_s"] + r["execute_s"]) for r in engine)
    exec_rate = med(n / r["execute_s"] for r in engine)
    summary = {
        "build": build,
        "pairs": args.pairs,
        "batch": BATCH,
        "plain_rows_per_s": plain_rate,
        "engine_rows_per_s": full_rate,
        "engine_execute_rows_per_s": exec_rate,
        "ratio": med(r["seconds"] / (e["plan_s"] + e["execute_s"]) for r, e in zip(plain, engine, strict=True)),
        "ratio_execute_only": med(r["seconds"] / e["execute_s"] for r, e in zip(plain, engine, strict=True)),
        "hold_check_ms_per_batch": med(r["hold_check_ms"] for r in engine),
        "count_with_check_ms": med(r["count_with_check_ms"] for r in engine),
        "count_without_ms": med(r["count_without_ms"] for r in engine),
        "engine_peak_rss_mb": max(r["peak_rss_mb"] for r in engine),
        "plain_peak_rss_mb": max(r["peak_rss_mb"] for r in plain),
        "plan_statements": engine[-1]["plan_statements"],
        "execute_statements": engine[-1]["execute_statements"],
        "runs": {"plain": plain, "engine": engine},
    }
    print(
        f"medians over {args.pairs} pairs, batches of {BATCH:,}: plain {plain_rate:,.0f} rows/s; engine {full_rate:,.0f} rows/s plan+execute "
        f"(x{summary['ratio']:.2f} of plain, median of pair ratios), {exec_rate:,.0f} rows/s execute only "
        f"(x{summary['ratio_execute_only']:.2f}); hold check {summary['hold_check_ms_per_batch']:.1f} ms per batch "
        f"(batch count {summary['count_without_ms']:.1f} ms without it, {summary['count_with_check_ms']:.1f} ms with); "
        f"peak RSS engine {summary['engine_peak_rss_mb']:.0f} MB, plain {summary['plain_peak_rss_mb']:.0f} MB"
    )
    for phase in ("plan_statements", "execute_statements"):
        print(f"  {phase.split('_')[0]} (last engine run), seconds by statement kind:")
        for kind, (count, secs) in sorted(summary[phase].items(), key=lambda kv: -kv[1][1]):
            print(f"    {kind:40s} {count:>7,} statements {secs:8.2f}s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    if not args.keep:
        drop_all()


if __name__ == "__main__":
    main()
