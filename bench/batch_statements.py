"""One batch's statements, the engine's against the ceiling's, side by side and rolled back.

    python bench/batch_statements.py --engine postgresql --build     # 1,000,000 Position rows, 20,000 contracts
    python bench/batch_statements.py --engine postgresql --batches 0 40 --rounds 25
    python bench/batch_statements.py --engine sqlite --batches 20 --plans   # the SQL and its plan, once

Position (composite key, eligible through its contract's maturity) as in
PERFORMANCE.md. Both sides move the same batch into the engine's archive
table, each in a transaction that is rolled back, so every round starts from
the same rows; the sides alternate in a shuffled order, after one warm-up
each. PostgreSQL: the engine's one statement (``_one_statement_move``)
against the ceiling's (``Mover.pg_batch_sql``). SQLite and MariaDB: the
engine's bound, INSERT ... SELECT and DELETE (``batch_bound``,
``_insert_select``, ``_delete``) against the ceiling's.

Each statement is timed on the wall clock and in CPU seconds of the process
that runs it (the PostgreSQL backend's, from /proc/<pid>/schedstat; this
process's for SQLite; the whole mariadbd's for MariaDB, so other sessions on
that server add noise). On a shared machine the CPU figures are the steadier
ones. Prints one JSON line per batch: medians per side and the median of the
per-round ratios engine / ceiling.

Databases are the bench's own (BENCH_DB_PREFIX, BENCH_ROOT; bench/envs.py);
``--build`` recreates them with only Position and its Contract table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import envs

ROWS, CONTRACTS, TABLE = 1_000_000, 20_000, "Position"


# -- in the child process (the setup's Django settings) ---------------------------
def _build() -> dict:
    from django.core.management import call_command

    from bench.generate import contract_table, create_configs, load, position_table

    call_command("migrate", verbosity=0)
    call_command("migrate", database="archive", verbosity=0)
    specs = [position_table(ROWS, CONTRACTS), contract_table("SourceDB1", CONTRACTS)]
    load(specs, log=lambda m: print(m, file=sys.stderr))
    create_configs(specs)
    return {"built": sum(s.rows for s in specs)}


class _Clock:
    """CPU seconds of the process that runs the statements (see the module docstring)."""

    def __init__(self, conn):
        self.vendor = conn.vendor
        self.paths: list[str] = []
        if self.vendor == "postgresql":
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                self.paths = [f"/proc/{cur.fetchone()[0]}/schedstat"]
        elif self.vendor == "mysql":
            pid = subprocess.check_output(["pgrep", "-o", "mariadbd"], text=True).split()[0]
            self.root = f"/proc/{pid}/task"

    def cpu(self) -> float:
        if self.vendor == "sqlite":
            return time.thread_time()
        paths = self.paths or [f"{self.root}/{t}/schedstat" for t in os.listdir(self.root)]
        total = 0
        for path in paths:
            try:
                with open(path) as f:
                    total += int(f.read().split()[0])
            except OSError:  # a server thread that ended meanwhile
                pass
        return total / 1e9


def _sides(spec, config, mover, conn):
    """{side: function(cur, low) -> [(label, sql, params)] and the statements run before them}."""
    from datetime import UTC, datetime

    from archival.engine import same_server

    q = mover.d.quote
    now = datetime.now(UTC)
    years = config.effective_years
    if conn.vendor == "postgresql":
        cols = ", ".join(f"m.{q(c)}" for c in mover.spec.column_names)

        def engine(cur, low):
            return [("move", *same_server._one_statement_move(spec, 0, years, low, 5000))]

        def ceiling(cur, low):
            sql, params = mover.pg_batch_sql(low, None, cols, now)
            return [("move", sql.replace(mover.arc, spec.archive_table()), params)]

        return {"engine": engine, "ceiling": ceiling}
    cols = ", ".join(f"s.{q(c)}" for c in mover.spec.column_names)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")

    def engine_range(cur, low):
        high, _ = same_server.batch_bound(spec, cur, low, 5000)
        return [
            ("insert", *same_server._insert_select(spec, 0, years, low, high, skip_existing=False)),
            ("delete", *same_server._delete(spec, low, high)),
        ]

    def ceiling_range(cur, low):
        high, _ = mover.bound(cur, low)
        return [(label, sql.replace(mover.arc, spec.archive_table()), params)
                for label, (sql, params) in zip(("insert", "delete"), mover.range_sql(low, high, cols, stamp), strict=True)]  # fmt: skip

    return {"engine": engine_range, "ceiling": ceiling_range}


def _compare(rounds: int, batches: list[int], plans: bool) -> None:
    from django.db import connections, transaction

    from archival.engine import same_server
    from archival.engine.archive_tables import ensure_archive_table
    from archival.engine.spec import build_spec
    from bench.ceiling import Mover
    from bench.generate import build_specs
    from bench.worker import cutoff
    from governance.models import TableConfig

    config = TableConfig.objects.get(table_name=TABLE)
    spec = build_spec(config, cutoff())
    with transaction.atomic(using="archive"):
        ensure_archive_table(spec, in_transaction=True)
    conn = connections["archive"]
    bench_specs = build_specs(ROWS, 120)
    mover = Mover(next(s for s in bench_specs if s.name == TABLE), bench_specs, "archive")
    sides = _sides(spec, config, mover, conn)
    clock = _Clock(conn)
    explain = {"postgresql": "EXPLAIN (ANALYZE, BUFFERS) ", "sqlite": "EXPLAIN QUERY PLAN ", "mysql": "EXPLAIN "}

    lows, low = [], None
    with conn.cursor() as cur:
        for _ in range(max(batches) + 1):
            lows.append(low)
            low, _ = same_server.batch_bound(spec, cur, low, 5000)

    def run(side: str, low, show: bool = False) -> dict:
        out: dict = {}
        with transaction.atomic(using="archive"), conn.cursor() as cur:
            c0, t0 = clock.cpu(), time.perf_counter()
            statements = sides[side](cur, low)  # the bound, where there is one
            out["bound_cpu_ms"] = (clock.cpu() - c0) * 1000
            rows = []
            for label, sql, params in statements:
                if show:
                    cur.execute(explain[conn.vendor] + sql, params)
                    plan = "\n".join(" | ".join(str(v) for v in r) for r in cur.fetchall())
                    print(f"-- {side} {label}\n{sql}\n{params}\n{plan}\n", file=sys.stderr)
                    transaction.set_rollback(True, using="archive")
                    return out
                c1 = clock.cpu()
                cur.execute(sql, params)
                rows.append(cur.fetchone()[-1] if conn.vendor == "postgresql" else cur.rowcount)
                out[f"{label}_cpu_ms"] = (clock.cpu() - c1) * 1000
            out["cpu_ms"] = (clock.cpu() - c0) * 1000
            out["wall_ms"] = (time.perf_counter() - t0) * 1000
            out["rows"] = rows
            transaction.set_rollback(True, using="archive")
        return out

    names = list(sides)
    for batch in batches:
        low = lows[batch]
        if plans:
            for side in names:
                run(side, low, show=True)
        for side in names:
            run(side, low)  # warm-up: hint bits, caches
        results: dict[str, list[dict]] = {side: [] for side in names}
        order = random.Random(batch)
        for _ in range(rounds):
            for side in order.sample(names, len(names)):
                results[side].append(run(side, low))
        summary: dict = {"batch": batch, "rounds": rounds}
        for side, runs in results.items():
            keys = [k for k in runs[0] if k.endswith("_ms")]
            summary[side] = {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}
            summary[side]["rows"] = runs[0]["rows"]
        for measure in ("cpu_ms", "wall_ms"):
            ratios = [e[measure] / c[measure] for e, c in zip(results["engine"], results["ceiling"], strict=True)]
            summary[f"engine/ceiling {measure[:-3]}"] = round(statistics.median(ratios), 3)
        print(json.dumps(summary), flush=True)


def child(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    import django

    django.setup()
    if argv[0] == "build":
        print(json.dumps(_build()))
    else:
        _compare(int(argv[1]), [int(b) for b in argv[2].split(",")], argv[3] == "plans")


# -- the parent: set up the databases, run the child in the setup's environment -----
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=envs.ENGINES, default="postgresql")
    p.add_argument("--build", action="store_true", help="(re)create the data set first")
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--batches", type=int, nargs="+", default=[0, 40], help="which batches (0: the first)")
    p.add_argument("--plans", action="store_true", help="print each statement and its plan first")
    args = p.parse_args()
    envs.check_reachable(args.engine)
    env = envs.environment(args.engine, "same")

    def in_child(*words: str) -> None:
        subprocess.run([envs.PYTHON, __file__, "child", *words], env=env, cwd=envs.REPO, check=True)

    if args.build:
        envs.fresh_databases(args.engine, template=False)
        in_child("build")
    in_child("compare", str(args.rounds), ",".join(map(str, args.batches)), "plans" if args.plans else "-")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
