"""Operations drills: a killed cluster, a stopped archive database, a locked source table.

    python bench/ops_drills.py kill --broker orm        # SQLite site, two ORM-broker clusters, one SIGKILLed
    python bench/ops_drills.py kill --broker redis      # PostgreSQL + Redis, two clusters, one SIGKILLed
    python bench/ops_drills.py outage --seconds 15      # the archive's PostgreSQL stopped under the workers
    python bench/ops_drills.py outage --seconds 300
    python bench/ops_drills.py lock --seconds 60        # ACCESS EXCLUSIVE on Position for 60 s under the workers

Each drill builds its own site (tests/sched_fixtures.Site: its own databases,
cluster name and ``manage.py qcluster`` processes), starts the scheduled run
on the workers, does its damage mid-run, and watches from one process what an
operator would see: ``status --check`` (archival.monitoring.health_check)
once a second, the alerts mailed, failed tables. It ends when the run is
closed, then checks source ∪ archive against the snapshot taken before the run
(per table: rows, and a checksum over every column; no row in both places).

The outage drill runs the archive and source databases on a private
PostgreSQL cluster (initdb in a temporary directory, port 5499) that it
stops and starts with pg_ctl; the shared server on 5432 holds only the
control database and is never stopped.

Writes bench/results/<stamp>-ops-<drill>.json; the figures go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sched_fixtures import PG, Site  # noqa: E402

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))
PRIVATE_PORT = 5499

# What an operator sees, once a second, from one process: the findings of
# status --check, alerts, failed and waiting tables, and when the run closes.
WATCH = r"""
import json, time
from archival.monitoring import health_check
from governance.models import ArchivalRun, AuditEvent, RecoveryState
t0 = time.time()
first = {}
samples = []
finished = None
while time.time() - t0 < LIMIT:
    try:
        check = health_check()
        messages = check.messages
    except Exception as exc:
        messages = [f"status --check failed: {exc}"]
    now = round(time.time() - t0, 1)
    for key, needle in PATTERNS.items():
        if key not in first and any(needle in m for m in messages):
            first[key] = {"at": now, "message": next(m for m in messages if needle in m)[:400]}
    if not samples or samples[-1]["messages"] != messages:
        samples.append({"at": now, "messages": [m[:300] for m in messages]})
    run = ArchivalRun.objects.order_by("-pk").first()
    if run and run.status != "RUNNING":
        finished = now
        break
    time.sleep(1)
run = ArchivalRun.objects.order_by("-pk").first()
alerts = list(AuditEvent.objects.filter(action="alert.sent").values_list("details", flat=True))
out = {
    "finished_after": finished,
    "run_status": run.status if run else None,
    "first_seen": first,
    "samples": samples[:60],
    "alerts": [{"kind": a.get("kind"), "subject": a.get("subject")} for a in alerts],
    "failed_tables": list(RecoveryState.objects.filter(phase="FAILED").values_list("table_label", flat=True)),
    "waiting_events": AuditEvent.objects.filter(action="table.waiting").count(),
    "requeued": list(AuditEvent.objects.filter(action="table.requeued").values_list("details", flat=True))[:20],
    "lock_timeouts": AuditEvent.objects.filter(action="batch.lock_timeout").count(),
}
print("WATCH" + json.dumps(out, default=str))
"""


def watch(site: Site, patterns: dict, limit: float) -> subprocess.Popen:
    code = f"import django; django.setup()\nLIMIT = {limit}\nPATTERNS = {patterns!r}\n" + WATCH
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def watched(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    line = next((x for x in out.splitlines() if x.startswith("WATCH")), None)
    if line is None:
        raise RuntimeError(f"the watcher failed:\n{out}\n{err[-3000:]}")
    return json.loads(line[len("WATCH") :])


def nothing_lost(before: dict, after: dict) -> dict:
    """Per table: checksum of source ∪ archive unchanged, rows conserved, none in both places."""
    problems = []
    moved = 0
    for table, was in before["tables"].items():
        now = after["tables"][table]
        if now["checksum"] != was["checksum"]:
            problems.append(f"{table}: checksum changed")
        if now["source"] + now["archive"] != was["source"] + was["archive"]:
            problems.append(f"{table}: row count changed")
        if now["overlap"]:
            problems.append(f"{table}: {now['overlap']} rows in both")
        moved += now["archive"] - was["archive"]
    return {"tables": len(before["tables"]), "rows_moved": moved, "checksums_ok": not problems, "problems": problems}


def mid_run(snap: dict) -> bool:
    return len(snap["ledger"]) >= 5 and any(s["phase"] != "COMPLETED" for s in snap["states"])


def build(site: Site, positions: int) -> None:
    site.env.update(ARCHIVAL_BATCH_SIZE="100", ARCHIVAL_LEASE_SECONDS="60")
    site.build(
        "--positions",
        str(positions),
        "--generated-tables",
        "6",
        "--generated-rows",
        "300",
        settings={"slice_seconds": 5},
    )


def start_run(site: Site) -> None:
    site.manage("schedule_archival", "--run-now", "--actor", "administrator")


# --- drills --------------------------------------------------------------------


def drill_kill(tmp: Path, broker: str) -> dict:
    redis = broker == "redis"
    site = Site(tmp, postgres=redis, redis=redis, name=f"ops_drill_kill_{broker}")
    try:
        # PostgreSQL moves the small set before a kill can land mid-run.
        build(site, 300000 if redis else 20000)
        before = site.snapshot(with_rows=True)
        doomed, survivor = site.start_cluster("doomed"), site.start_cluster("survivor")
        time.sleep(3)
        start_run(site)
        site.wait_for(mid_run, timeout=180, every=0.5, what="batches to commit")
        # Kill it while one of its workers holds a table (a slice in flight).
        doomed_pids = site.cluster_pids(doomed)
        for _ in range(120):
            owners = site.py(
                "from governance.models import RecoveryState\n"
                "print(' '.join(RecoveryState.objects.exclude(lease_owner='').values_list('lease_owner', flat=True)))"
            ).split()
            if any(int(owner.split(":")[1]) in doomed_pids for owner in owners):
                break
            time.sleep(0.2)
        site.kill_cluster(doomed)
        killed_at = time.monotonic()
        seen = watched(watch(site, {"stall": "stalled", "expired_lease": "expired lease"}, limit=900))
        seen["wall_seconds_after_kill"] = round(time.monotonic() - killed_at, 1)
        after = site.snapshot(with_rows=True)
        site.stop_cluster(survivor)
        return {"drill": f"kill-{broker}", **seen, "check": nothing_lost(before, after)}
    finally:
        site.close()


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on PRIVATE_PORT (as the postgres user), stopped and started at will."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "pg"
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.start()

    def _as_postgres(self, *args) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, capture_output=True)

    def start(self) -> None:
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-o",
            f"-p {PRIVATE_PORT} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass


def drill_outage(tmp: Path, seconds: int) -> dict:
    import psycopg

    private = PrivatePostgres(tmp)
    site = Site(tmp / "site", postgres=False, redis=False, name=f"ops_drill_outage_{seconds}")
    url = f"postgres://postgres@127.0.0.1:{PRIVATE_PORT}/"
    try:
        control = f"{site.name}_control"
        site._psql(f'CREATE DATABASE "{control}"')
        site.dbs.append(control)
        with psycopg.connect(url + "postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE archival_data")
        site.env.update(
            DATABASE_URL=PG + control,
            ARCHIVE_DATABASE_URL=url + "archival_data",
            ARCHIVE_READONLY_DATABASE_URL=url + "archival_data",
            SOURCEDB1_DATABASE_URL=url + "archival_data",
            SOURCEDB2_DATABASE_URL=url + "archival_data",
            SOURCEDB3_DATABASE_URL=url + "archival_data",
        )
        build(site, 20000)
        before = site.snapshot(with_rows=True)
        cluster = site.start_cluster("workers")
        time.sleep(3)
        start_run(site)
        site.wait_for(mid_run, timeout=180, every=0.5, what="batches to commit")
        watcher = watch(site, {"waiting": "waiting for database", "failed": "failed"}, limit=seconds + 900)
        private.stop()
        stopped_at = time.monotonic()
        time.sleep(seconds)
        private.start()
        back_at = time.monotonic()
        seen = watched(watcher)
        seen["outage_seconds"] = round(back_at - stopped_at, 1)
        seen["completed_after_return_seconds"] = round(time.monotonic() - back_at, 1)
        after = site.snapshot(with_rows=True)
        site.stop_cluster(cluster)
        return {"drill": f"outage-{seconds}s", **seen, "check": nothing_lost(before, after)}
    finally:
        site.close()
        private.close()


def drill_lock(tmp: Path, seconds: int) -> dict:
    import psycopg

    site = Site(tmp, postgres=True, redis=False, name="ops_drill_lock")
    try:
        build(site, 300000)
        before = site.snapshot(with_rows=True)
        cluster = site.start_cluster("workers")
        time.sleep(3)
        start_run(site)
        site.wait_for(mid_run, timeout=180, every=0.5, what="batches to commit")
        held = threading.Event()

        def hold() -> None:
            with psycopg.connect(site.env["SOURCEDB1_DATABASE_URL"]) as conn:
                conn.execute('LOCK TABLE sourcedb1."Position" IN ACCESS EXCLUSIVE MODE')
                held.set()
                time.sleep(seconds)
                conn.rollback()

        holder = threading.Thread(target=hold)
        watcher = watch(site, {"waiting": "waiting for a lock", "stall": "stalled"}, limit=seconds + 900)
        started = time.monotonic()
        holder.start()
        held.wait(30)
        # What the operator sees on the table while the lock is held.
        time.sleep(min(15, seconds / 2))
        during = site.py(
            "from governance.models import RecoveryState\n"
            "s = RecoveryState.objects.filter(table_label__endswith='.Position').order_by('-pk').first()\n"
            "print(s.phase, '|', s.last_error[:300])"
        ).strip()
        holder.join()
        released_at = time.monotonic()
        seen = watched(watcher)
        seen["lock_seconds"] = round(released_at - started, 1)
        seen["completed_after_release_seconds"] = round(time.monotonic() - released_at, 1)
        seen["position_state_during_lock"] = during
        after = site.snapshot(with_rows=True)
        site.stop_cluster(cluster)
        return {"drill": f"lock-{seconds}s", **seen, "check": nothing_lost(before, after)}
    finally:
        site.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drill", choices=["kill", "outage", "lock"])
    parser.add_argument("--broker", choices=["orm", "redis"], default="orm")
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ops_drill_"))
    shutil.chown(tmp, "postgres", "postgres")
    tmp.chmod(0o777)
    try:
        if args.drill == "kill":
            result = drill_kill(tmp, args.broker)
        elif args.drill == "outage":
            result = drill_outage(tmp, args.seconds)
        else:
            result = drill_lock(tmp, args.seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = ROOT / "bench" / "results" / f"{stamp}-ops-{result['drill']}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2, default=str))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
