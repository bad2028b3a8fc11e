"""Fault injection: kill -9 the engine at a random moment, resume, check every row.

    python bench/chaos.py --trials 200 --engine sqlite --topology same
    python bench/chaos.py --trials 50 --engine postgresql --topology stream --rows 50000

Each trial restores the loaded data, starts ``manage.py archival run`` in a
child process, SIGKILLs it after a random delay (uniform over the length of
an uninterrupted run, measured first; a trial whose run ends before its kill
shortens the window to what a warm run takes), then runs ``manage.py archival
resume`` until no table is unfinished (a kill before the run existed starts
a fresh ``archival run`` instead) and checks, per table, that source union
archive == original by count and checksum over all columns (bench/checksum.py),
that the archive holds exactly the rows an uninterrupted run moves, and that
the audit trail's hash chain verifies (``manage.py verify_chain``).

"Mid-batch" kills are those that interrupted an open write transaction or a
half-done streamed batch: a hot rollback journal left by SQLite, a backend of
the engine with a transaction id in pg_stat_activity or a modifying InnoDB
transaction just before the kill, or a ledger row left COPIED (streaming:
archived, source delete not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import envs
from bench.generate import CUTOFF

APP = "bench_chaos_engine"


def chaos_env(engine: str, topology: str, batch: int) -> dict:
    env = envs.environment(engine, topology)
    # Small batches: many commits, so a kill often lands inside one. A short
    # lease lets the resume take the table over from the killed worker.
    env.update(ARCHIVAL_BATCH_SIZE=str(batch), ARCHIVAL_LEASE_SECONDS="5", PGAPPNAME=APP)
    return env


def manage(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [envs.PYTHON, str(envs.REPO / "manage.py"), "archival", *args],
        env=env, cwd=envs.REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def open_write_txn(engine: str) -> bool:
    """Does the engine hold an open write transaction right now?"""
    if engine == "postgresql":
        import psycopg

        with psycopg.connect(f"{envs.PG}/postgres", autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_xid IS NOT NULL", [APP]
            ).fetchone()
            return row[0] > 0
    if engine == "mariadb":
        import MySQLdb

        conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
        try:
            cur = conn.cursor()
            cur.execute(
                "SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
                "ON p.id = t.trx_mysql_thread_id WHERE p.db LIKE CONCAT(%s, '%%') AND t.trx_rows_modified > 0 AND p.id <> CONNECTION_ID()",
                [envs.P],
            )
            return cur.fetchone()[0] > 0
        finally:
            conn.close()
    return False


def hot_journals(engine: str) -> bool:
    if engine != "sqlite":
        return False
    return any((envs.ROOT / "sqlite").glob("*-journal"))


def copied_ledger_rows(env: dict) -> int:
    out = subprocess.run(
        [envs.PYTHON, "-c", "import django; django.setup(); from governance.models import BatchLedger;"
         "print(BatchLedger.objects.filter(state='COPIED').count())"],
        env=env, cwd=envs.REPO, capture_output=True, text=True,
    )  # fmt: skip
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def unfinished(env: dict) -> int:
    out = subprocess.run(
        [envs.PYTHON, "-c", "import django; django.setup(); from governance.models import RecoveryState;"
         "print(RecoveryState.objects.unfinished().count())"],
        env=env, cwd=envs.REPO, capture_output=True, text=True,
    )  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def checksums(engine: str, topology: str, rows: int, tables: int) -> dict:
    out = envs.worker("checksum", engine, topology, str(rows), str(tables))
    return json.loads(out.strip().splitlines()[-1])["tables"]


def run_trials(
    engine: str, topology: str, trials: int, rows: int, tables: int, batch: int, seed: int, log=print
) -> dict:
    rng = random.Random(seed)
    envs.build(engine, rows, tables)
    envs.restore(engine, rows, tables)
    original = checksums(engine, topology, rows, tables)
    env = chaos_env(engine, topology, batch)

    # Calibrate: process start-up (a no-op command) and one uninterrupted run
    # give the kill window; the run also gives the expected archive.
    t0 = time.perf_counter()
    manage(env, "status")
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = manage(env, "run", "--cutoff", CUTOFF)
    window = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"uninterrupted run failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    expected = {k: v["archive"] for k, v in checksums(engine, topology, rows, tables).items()}
    log(f"uninterrupted run: {window:.2f}s, {sum(expected.values()):,} rows archived")

    report = {"engine": engine, "topology": topology, "trials": 0, "mid_batch": 0, "before_start": 0,
              "after_end": 0, "failures": [], "rows": rows, "tables": tables, "batch": batch,
              "window_seconds": window, "startup_seconds": startup}  # fmt: skip
    for trial in range(1, trials + 1):
        envs.restore(engine, rows, tables)
        # Mostly inside the run; a tenth of the kills land during start-up.
        delay = rng.uniform(0.9 * startup, window)
        proc = subprocess.Popen(
            [envs.PYTHON, str(envs.REPO / "manage.py"), "archival", "run", "--cutoff", CUTOFF],
            env=env, cwd=envs.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = time.perf_counter()
        try:
            proc.wait(timeout=delay)
            # The run ended before the kill: warm runs are shorter than the
            # calibration run, so later kills are drawn over what a run takes now.
            window = max(0.9 * startup + 0.1, min(window, 1.05 * (time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            pass
        in_txn = open_write_txn(engine)
        proc.send_signal(signal.SIGKILL)
        exit_code = proc.wait()
        mid = in_txn or hot_journals(engine)
        if exit_code == 0:
            report["after_end"] += 1
        if copied_ledger_rows(env):
            mid = True
        report["mid_batch"] += int(mid)

        # Resume until nothing is unfinished (a kill before the run existed: run afresh).
        problem = ""
        for _attempt in range(6):
            res = manage(env, "resume")
            if res.returncode != 0 and "no run has unfinished" in (res.stdout + res.stderr):
                if trial_needs_fresh_run(engine, topology, rows, tables, expected):
                    report["before_start"] += 1
                    res = manage(env, "run", "--cutoff", CUTOFF)
                break
            if unfinished(env) == 0:
                break
            time.sleep(5)  # the killed worker's lease expires
        else:
            problem = "tables still unfinished after 6 resumes"
        # The audit trail's hash chain survives the kill too (an append is
        # part of the transaction that writes the state it records).
        chain = subprocess.run(
            [envs.PYTHON, str(envs.REPO / "manage.py"), "verify_chain", "--no-log"],
            env=env, cwd=envs.REPO, capture_output=True, text=True,
        )  # fmt: skip
        if chain.returncode != 0:
            problem += f" audit chain: {(chain.stdout + chain.stderr).strip()[-500:]};"
        after = checksums(engine, topology, rows, tables)
        for table, before in original.items():
            now = after[table]
            if (now["rows"], now["sum"]) != (before["rows"], before["sum"]):
                problem += f" {table}: source+archive {now['rows']} rows/sum {now['sum']} != original {before['rows']}/{before['sum']};"
            elif now["archive"] != expected[table]:
                problem += f" {table}: archive has {now['archive']} rows, an uninterrupted run moves {expected[table]};"
        report["trials"] += 1
        if problem:
            report["failures"].append({"trial": trial, "delay": round(delay, 3), "problem": problem.strip()})
        log(
            f"trial {trial}/{trials}: kill at {delay:.2f}s{' (mid-batch)' if mid else ''}: {'FAIL ' + problem if problem else 'ok'}"
        )
    report["final_window_seconds"] = window
    return report


def trial_needs_fresh_run(engine, topology, rows, tables, expected) -> bool:
    """True when nothing was archived yet (the kill came before the run was created)."""
    now = checksums(engine, topology, rows, tables)
    return sum(v["archive"] for v in now.values()) < sum(expected.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=int(os.environ.get("CHAOS_TRIALS", "20")))
    p.add_argument("--engine", default="sqlite", choices=envs.ENGINES)
    p.add_argument("--topology", default="same", choices=["same", "stream"])
    p.add_argument("--rows", type=int, default=30_000)
    p.add_argument("--tables", type=int, default=10)
    p.add_argument("--batch", type=int, default=500, help="engine batch size (small: more kills land mid-batch)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    report = run_trials(args.engine, args.topology, args.trials, args.rows, args.tables, args.batch, args.seed)
    out = envs.REPO / "bench" / "results" / f"chaos-{args.engine}-{args.topology}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"trials {report['trials']}, mid-batch kills {report['mid_batch']}, before start {report['before_start']}, "
          f"after end {report['after_end']}, failures {len(report['failures'])}")  # fmt: skip
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
