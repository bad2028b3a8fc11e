"""Wall time of one scheduled run (fan-out over django-q2 workers) with 1, 2 and 4 workers.

    python bench/sched_workers.py [--size small] [--tables 120] [--workers 1 2 4] [--reuse]

PostgreSQL, same-server topology, Redis broker, one cluster with N workers.
The benchmark data (bench/generate.py, cutoff 2025-01-01) is built once into
template databases and restored before each measurement; the run is started
through archival.dispatch.start_scheduled_run (the schedule's path) and timed
until its finalizer has closed it. Databases: sched_bench_* (kept with --keep;
--reuse skips the build when templates of the same size are there). Writes
bench/results/<stamp>-workers-<size>.json and a chart of wall time against
workers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432/"
NAMES = ("sched_bench_control", "sched_bench_data")


def pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG + "postgres", autocommit=True) as conn:
        conn.execute(sql)


def env(workers: int) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL") and k != "DATABASE_URL"}
    data = PG + NAMES[1]
    e.update(
        DJANGO_SETTINGS_MODULE="governance.settings",
        ARCHIVAL_DATA_DIR="/tmp/h_sched/bench",
        DATABASE_URL=PG + NAMES[0],
        ARCHIVE_DATABASE_URL=data,
        ARCHIVE_READONLY_DATABASE_URL=data,
        SOURCEDB1_DATABASE_URL=data,
        SOURCEDB2_DATABASE_URL=data,
        SOURCEDB3_DATABASE_URL=data,
        REDIS_URL="redis://127.0.0.1:6379/9",
        Q_CLUSTER_NAME="sched_bench",
        Q_WORKERS=str(workers),
        PYTHONUNBUFFERED="1",
    )
    return e


def py(code: str, workers: int = 1) -> str:
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=env(workers),
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout


def restore() -> None:
    for name in NAMES:
        pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg(f'CREATE DATABASE "{name}" TEMPLATE "{name}_tpl" STRATEGY FILE_COPY')
    # As bench/envs.restore: no measurement pays for flushing the copy.
    pg("CHECKPOINT")
    os.sync()


def templates_hold(rows: int, tables: int) -> bool:
    """Do the kept templates hold this size? (The build leaves it as the control template's comment.)"""
    import psycopg

    with psycopg.connect(PG + "postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [NAMES[0] + "_tpl"]
        ).fetchone()
    return row is not None and row[0] == f"{rows}x{tables}"


def build(rows: int, tables: int) -> None:
    for name in NAMES:
        pg(f'DROP DATABASE IF EXISTS "{name}_tpl" WITH (FORCE)')
        pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "bench/worker.py", "build", str(rows), str(tables)], cwd=ROOT, env=env(1), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    for name in NAMES:
        pg(f'ALTER DATABASE "{name}" RENAME TO "{name}_tpl"')
    pg(f"COMMENT ON DATABASE \"{NAMES[0]}_tpl\" IS '{rows}x{tables}'")


def measure(workers: int) -> dict:
    restore()
    Path("/tmp/h_sched/bench").mkdir(parents=True, exist_ok=True)
    log = open(f"/tmp/h_sched/bench/cluster-{workers}.log", "w")  # noqa: SIM115
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env(workers), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    time.sleep(4)
    code = (
        "import time, json\nfrom datetime import date\nfrom archival import dispatch\n"
        "from governance.models import ArchivalRun, RunDispatch, RecoveryState\n"
        "t0 = time.perf_counter()\n"
        "r = dispatch.start_scheduled_run(actor='bench', trigger='bench', cutoff=date(2025, 1, 1))\n"
        "while not RunDispatch.objects.filter(run_id=r.run_id, finalized_at__isnull=False).exists():\n"
        "    time.sleep(0.2)\n"
        "wall = time.perf_counter() - t0\n"
        "run = ArchivalRun.objects.get(pk=r.run_id)\n"
        "moved = sum(s.archived_count for s in RecoveryState.objects.filter(run=run))\n"
        f"print(json.dumps({{'workers': {workers}, 'wall_seconds': round(wall, 2), 'status': run.status, 'rows': moved,"
        f" 'tables': r.tables}}))\n"
    )
    try:
        result = json.loads(py(code, workers).strip().splitlines()[-1])
    finally:
        cluster.send_signal(signal.SIGTERM)
        cluster.wait(120)
        log.close()
    return result


def chart(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["workers"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["workers"] for r in results], [r["wall_seconds"] for r in results], marker="o", color="#1f77b4")
    ax.set_xlabel("django-q2 workers (one cluster, Redis broker)")
    ax.set_ylabel("seconds for the scheduled run")
    ax.set_xticks([r["workers"] for r in results])
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "large"])
    parser.add_argument("--tables", type=int, default=120)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--keep", action="store_true", help="Keep the sched_bench_* databases.")
    parser.add_argument("--reuse", action="store_true", help="Skip the build when kept templates hold this size.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.generate import SIZES
    from bench.run import RESULTS, machine

    rows = SIZES[args.size]
    if not (args.reuse and templates_hold(rows, args.tables)):
        build(rows, args.tables)
    results = []
    for w in args.workers:
        r = measure(w)
        r["rows_per_second"] = round(r["rows"] / r["wall_seconds"]) if r["wall_seconds"] else 0
        print(json.dumps(r), flush=True)
        results.append(r)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}-workers-{args.size}.json"
    doc = {"date": stamp, "size": args.size, "rows": rows, "tables": args.tables, "machine": machine(),
           "broker": "redis", "results": results}  # fmt: skip
    path.write_text(json.dumps(doc, indent=2))
    chart(
        results,
        path.with_suffix(".png"),
        f"scheduled run, PostgreSQL, {args.size} ({rows:,} rows, {args.tables} tables)",
    )
    print(f"wrote {path} and {path.with_suffix('.png')}")
    if not args.keep:
        for name in NAMES:
            pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            pg(f'DROP DATABASE IF EXISTS "{name}_tpl" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
