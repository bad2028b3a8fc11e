"""Real worker clusters for the scheduling tests.

Each test gets its own site: its own databases (SQLite files in a temporary
directory, or two PostgreSQL databases named after the test), its own
django-q2 cluster name (so its Redis list and signatures are its own), and
``manage.py qcluster`` subprocesses started in their own process group, so a
test can stop one with SIGTERM to its main process or kill its whole group
with SIGKILL. Everything the tests assert is read back from the databases by
a subprocess with the same environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG = "postgres://postgres@127.0.0.1:5432/"
REDIS = "redis://127.0.0.1:6379/"
REDIS_DB = 9

# Read back from the databases: runs, states, dispatch rows, audit counts, and
# the multiset of every configured table's rows in source and archive.
SNAPSHOT = r"""
import hashlib, json
from collections import Counter
from datetime import date
from django.db import connections
from archival.engine.spec import build_spec
from governance.models import *
out = {"runs": [], "states": [], "dispatch": [], "audit": {}, "tables": {}}
for r in ArchivalRun.objects.order_by("pk"):
    out["runs"].append({"id": r.pk, "status": r.status, "trigger": r.trigger,
                        "finalized": bool(getattr(getattr(r, "dispatch", None), "finalized_at", None))})
for s in RecoveryState.objects.order_by("pk"):
    out["states"].append({"id": s.pk, "run": s.run_id, "config": s.config_id, "label": s.table_label, "phase": s.phase,
                          "eligible": s.eligible_count, "archived": s.archived_count, "attempts": s.attempts,
                          "error": s.last_error})
for d in TableDispatch.objects.order_by("pk"):
    out["dispatch"].append({"state": d.state_id, "stage": d.stage, "status": d.status, "slices": d.slices, "requeues": d.requeues})
for a in AuditEvent.objects.filter(action__in=["table.marked", "table.completed", "table.requeued", "run.finished"]):
    out["audit"].setdefault(a.action, []).append({"table": a.table_label, "actor": a.actor, "run": a.run_id})
# The audit chain, appended by every worker at once, verifies as one chain.
from governance.chain_verification import verify_chains
chain = verify_chains(write_log=False)
out["chain"] = {"ok": chain.ok, "events": chain.audit_events, "errors": chain.errors[:3]}
out["ledger"] = [
    {"run": l.run_id, "config": l.config_id, "batch": l.batch_no, "rows": l.row_count}
    for l in BatchLedger.objects.order_by("run_id", "config_id", "batch_no")
]
if WITH_ROWS:
    for config in TableConfig.objects.all():
        spec = build_spec(config, date.today())
        cols = ", ".join(spec.source.quote(c) for c in spec.columns)
        rows = Counter()
        with spec.source.connection.cursor() as cur:
            cur.execute(f"SELECT {cols} FROM {spec.source_table(spec.source)}")
            rows.update(repr(tuple(str(v) for v in r)) for r in cur.fetchall())
        archived = Counter()
        if spec.archive.table_exists(spec.namespace, config.table_name):
            acols = ", ".join(spec.archive.quote(c) for c in spec.columns)
            with spec.archive.connection.cursor() as cur:
                cur.execute(f"SELECT {acols} FROM {spec.archive_table()}")
                archived.update(repr(tuple(str(v) for v in r)) for r in cur.fetchall())
        both = rows + archived
        digest = hashlib.sha256("\n".join(sorted(both.elements())).encode()).hexdigest()
        out["tables"][str(config)] = {"source": sum(rows.values()), "archive": sum(archived.values()),
                                      "overlap": sum((rows & archived).values()), "checksum": digest}
print("SNAPSHOT" + json.dumps(out))
"""


class Site:
    """One isolated deployment: environment, databases, and its clusters."""

    def __init__(self, tmp_path: Path, *, postgres: bool, redis: bool, name: str):
        self.name = name
        self.tmp = tmp_path
        self.clusters: list[subprocess.Popen] = []
        self.dbs: list[str] = []
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith("_DATABASE_URL") and k not in {"DATABASE_URL", "REDIS_URL"}
        }
        env.update(
            ARCHIVAL_DATA_DIR=str(tmp_path / "data"),
            DJANGO_SETTINGS_MODULE="governance.settings",
            Q_CLUSTER_NAME=name,
            Q_WORKERS="2",
            Q_TIMEOUT="60",
            Q_RETRY="90",
            ARCHIVAL_LEASE_SECONDS="6",
            ARCHIVAL_SWEEP_MINUTES="1",
            EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
            PYTHONUNBUFFERED="1",
        )
        if postgres:
            control, data = f"{name}_control", f"{name}_data"
            for db in (control, data):
                self._psql(f'CREATE DATABASE "{db}"')
                self.dbs.append(db)
            env["DATABASE_URL"] = PG + control
            env["ARCHIVE_DATABASE_URL"] = PG + data
            env["ARCHIVE_READONLY_DATABASE_URL"] = PG + data
            for alias in ("SOURCEDB1", "SOURCEDB2", "SOURCEDB3"):
                env[f"{alias}_DATABASE_URL"] = PG + data
        if redis:
            env["REDIS_URL"] = REDIS + str(REDIS_DB)
        self.env = env
        (tmp_path / "data").mkdir(parents=True, exist_ok=True)

    # -- set-up ---------------------------------------------------------------
    @staticmethod
    def _psql(sql: str) -> None:
        import psycopg

        with psycopg.connect(PG + "postgres", autocommit=True) as conn:
            conn.execute(sql)

    def manage(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def py(self, code: str, timeout: float = 120) -> str:
        script = "import django; django.setup()\n" + code
        proc = subprocess.run(
            [PYTHON, "-c", script],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"snippet failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def build(self, *demo_args: str, settings: dict | None = None) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("migrate", "--database", "archive", "--noinput", "-v", "0")
        self.manage("build_demo", *demo_args)
        changes = ", ".join(f"{k}={v!r}" for k, v in (settings or {}).items())
        self.py(
            f"from governance.models import SchedulerSettings\nSchedulerSettings.objects.filter(pk=1).update({changes})"
            if changes
            else "pass"
        )

    def snapshot(self, with_rows: bool = False) -> dict:
        out = self.py(f"WITH_ROWS = {with_rows}\n" + SNAPSHOT)
        line = next(x for x in out.splitlines() if x.startswith("SNAPSHOT"))
        return json.loads(line[len("SNAPSHOT") :])

    # -- clusters -------------------------------------------------------------
    def start_cluster(self, label: str) -> subprocess.Popen:
        log = open(self.tmp / f"{label}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [PYTHON, "manage.py", "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log = log
        proc.label = label
        self.clusters.append(proc)
        return proc

    def stop_cluster(self, proc: subprocess.Popen, timeout: float = 90) -> int:
        """SIGTERM to the main process only, as an operator stops a cluster."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise AssertionError(f"cluster {proc.label} did not stop within {timeout}s of SIGTERM") from None
        self._reap_group(proc)
        proc.log.close()
        return proc.returncode

    def kill_cluster(self, proc: subprocess.Popen) -> None:
        """SIGKILL to the cluster's whole process group: main, sentinel, workers, pusher, monitor."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.log.close()

    @staticmethod
    def _reap_group(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        # Orphaned children of a stopped cluster would keep working on our DBs.
        time.sleep(2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def cluster_pids(self, proc: subprocess.Popen) -> set[int]:
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == proc.pid:
                        pids.add(int(entry.name))
                except ProcessLookupError:
                    continue
        return pids

    def log(self, proc: subprocess.Popen) -> str:
        return (self.tmp / f"{proc.label}.log").read_text()

    def wait_for(
        self,
        predicate,
        *,
        timeout: float,
        every: float = 2.0,
        what: str = "condition",
        with_rows: bool = False,
    ) -> dict:
        deadline = time.monotonic() + timeout
        snap = {}
        while time.monotonic() < deadline:
            snap = self.snapshot(with_rows)
            if predicate(snap):
                return snap
            time.sleep(every)
        logs = "\n".join(f"--- {p.label}\n{self.log(p)[-3000:]}" for p in self.clusters)
        raise AssertionError(f"timed out waiting for {what}; last snapshot runs={snap.get('runs')}\n{logs}")

    # -- tear-down ------------------------------------------------------------
    def close(self) -> None:
        for proc in self.clusters:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
            if not proc.log.closed:
                proc.log.close()
        if "REDIS_URL" in self.env:
            import redis

            client = redis.from_url(self.env["REDIS_URL"])
            keys = client.keys(f"django_q:{self.name}:*")
            if keys:
                client.delete(*keys)
        for db in self.dbs:
            self._psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _site_name(request) -> str:
    return f"sched_{request.node.name[:20].lower().replace('-', '_')}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def sqlite_site(tmp_path, request):
    site = Site(tmp_path, postgres=False, redis=False, name=_site_name(request))
    yield site
    site.close()


def _services_up() -> str:
    try:
        import psycopg
        import redis

        psycopg.connect(PG + "postgres", connect_timeout=3).close()
        redis.from_url(REDIS + str(REDIS_DB), socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 (any failure means the service is not there)
        return f"{type(exc).__name__}: {exc}"
    return ""


@pytest.fixture
def pg_redis_site(tmp_path, request):
    problem = _services_up()
    if problem:
        # CI always has both; a laptop without them skips these and says why.
        if os.environ.get("SCHED_REQUIRE_SERVICES"):
            pytest.fail(f"PostgreSQL and Redis are required: {problem}")
        pytest.skip(f"needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 ({problem})")
    site = Site(tmp_path, postgres=True, redis=True, name=_site_name(request))
    yield site
    site.close()
