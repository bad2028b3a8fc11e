"""Replica lag, on a real PostgreSQL streaming replica the test starts on loopback.

The test builds two private clusters in a temporary directory (nothing of the
machine's own PostgreSQL is touched): a primary (initdb, trust on loopback,
replication allowed, as initdb writes pg_hba) and a standby cloned from it
with ``pg_basebackup -R`` on a second port. An administrator watches the
standby (``ReplicaWatch``, its URL in an ``ARCHIVAL_REPLICA_*`` variable).
Replay is paused on the standby (``pg_wal_replay_pause()``) and the primary
writes: the standby receives WAL it does not replay, its lag grows past the
bound, and the engine waits between batches; once replay resumes
(``pg_wal_replay_resume()``) it goes on. A wait longer than the bound leaves
the table WAITING (``replica lag``); an idle primary is not lag.

Runs wherever the PostgreSQL server binaries are installed (both CI legs;
the engine's own databases are whatever the leg uses); skipped with the
reason where they are not. As root, the clusters run as the ``postgres``
OS user (runuser), as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from archival.engine import resume_run, run_cycle
from archival.engine.pacing import probe_for
from governance.models import Phase, RecoveryState, ReplicaWatch, SchedulerSettings
from tests.engine_fixtures import union_check
from tests.pacing_fixtures import CUTOFF, ROWS, pytestmark_db

ENV_NAME = "ARCHIVAL_REPLICA_PACE_STANDBY"
STANDBY = "standby1"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


BIN = _bin_dir()
pytestmark = pytest.mark.skipif(
    BIN is None or not (BIN / "pg_basebackup").exists(),
    reason="the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are not installed",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clusters:
    """A primary and its streaming standby, private to the test."""

    def __init__(self, root: Path):
        self.root = root
        self.primary_dir, self.standby_dir = root / "primary", root / "standby"
        self.primary_port, self.standby_port = _free_port(), _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres OS user to run the test clusters")

    def run(self, *args: str, timeout: int = 120) -> str:
        cmd = [str(BIN / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def _conf(self, data: Path, port: int, extra: str = "") -> None:
        with open(data / "postgresql.auto.conf", "a", encoding="utf-8") as fh:
            fh.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nshared_buffers = 16MB\nmax_wal_senders = 4\nwal_level = replica\n" + extra
            )

    def start(self) -> Clusters:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        # trust for every local and loopback connection, replication included
        # (initdb's pg_hba.conf lists replication for 127.0.0.1): a throwaway cluster.
        self.run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self._conf(self.primary_dir, self.primary_port)
        self.run("pg_ctl", "-D", str(self.primary_dir), "-l", str(self.root / "primary.log"), "-w", "start")
        self.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby_dir), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        # The walreceiver's application_name is the standby's cluster_name.
        self._conf(self.standby_dir, self.standby_port, f"cluster_name = '{STANDBY}'\n")
        self.run("pg_ctl", "-D", str(self.standby_dir), "-l", str(self.root / "standby.log"), "-w", "start")
        self.wait_until(
            lambda: (
                self.primary("SELECT count(*) FROM pg_stat_replication WHERE application_name = %s", [STANDBY])[0][0]
                == 1
            )
        )
        return self

    def stop(self) -> None:
        for data in (self.standby_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                try:
                    self.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
                except RuntimeError:
                    pass

    def url(self, port: int) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/postgres"

    def _sql(self, port: int, sql: str, params=None) -> list[tuple]:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def primary(self, sql: str, params=None) -> list[tuple]:
        return self._sql(self.primary_port, sql, params)

    def standby(self, sql: str, params=None) -> list[tuple]:
        return self._sql(self.standby_port, sql, params)

    @staticmethod
    def wait_until(condition, seconds: float = 30) -> None:
        end = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < end, "condition not met in time"
            time.sleep(0.1)

    def caught_up(self) -> bool:
        (target,) = self.primary("SELECT pg_current_wal_lsn()::text")[0]
        return bool(self.standby("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])[0][0])

    def lag_behind(self, seconds: float) -> None:
        """Pause replay, wait ``seconds``, write on the primary: the standby receives WAL it does not replay."""
        self.primary("CREATE TABLE IF NOT EXISTS beat (at timestamptz)")
        self.primary("INSERT INTO beat VALUES (now())")
        self.wait_until(self.caught_up)
        self.standby("SELECT pg_wal_replay_pause()")
        self.wait_until(lambda: self.standby("SELECT pg_is_wal_replay_paused()")[0][0])
        time.sleep(seconds)
        self.primary("INSERT INTO beat VALUES (now())")
        self.wait_until(lambda: self.standby("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")[0][0])

    def resume(self) -> None:
        self.standby("SELECT pg_wal_replay_resume()")


@pytest.fixture(scope="module")
def clusters():
    root = Path(tempfile.mkdtemp(prefix="archival-replica-"))
    pair = Clusters(root)
    try:
        yield pair.start()
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def watched(clusters, monkeypatch, paced_table):
    """The standby watched for the test table's source database, checked every second."""
    config, _ = paced_table
    monkeypatch.setenv(ENV_NAME, clusters.url(clusters.standby_port))
    watch = ReplicaWatch(
        source_db=config.source_db, name=STANDBY, measured_on="REPLICA", connection_kind="ENV",
        connection=ENV_NAME, max_lag_seconds=1,
    )  # fmt: skip
    watch.full_clean()
    watch.save()
    SchedulerSettings.objects.update_or_create(
        pk=1, defaults={"replica_check_seconds": 1, "replica_max_wait_seconds": 60}
    )
    yield watch
    clusters.resume()


@pytestmark_db
def test_the_engine_waits_while_the_standby_lags_and_goes_on_when_replay_resumes(
    clusters, watched, paced_table, caplog
):
    config, original = paced_table
    clusters.lag_behind(1.5)
    (reading,) = probe_for(config.source_db).readings()
    assert reading.over and (reading.lag.seconds or 0) > 1 and "replay is paused" in reading.lag.detail, (
        reading.describe()
    )
    resumer = threading.Timer(3.0, clusters.resume)
    resumer.start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.INFO, logger="archival.pacing"):
            result = run_cycle(cutoff=CUTOFF)
    finally:
        resumer.join()
    took = time.monotonic() - started
    assert result.ok, [(t.label, t.phase, t.error) for t in result.tables]
    state = RecoveryState.objects.get(run_id=result.run_id)
    assert took >= 2.5, f"the run did not wait for the standby ({took:.1f}s)"
    assert state.pacing["seconds"]["lag"] >= 2.0
    assert state.pacing["doing"] == ""
    messages = [r.getMessage() for r in caplog.records]
    assert any("waiting for replica lag" in m and STANDBY in m for m in messages), messages
    assert any("replicas caught up" in m for m in messages), messages
    assert union_check([config], original) == {str(config): (0, ROWS)}


@pytestmark_db
def test_an_idle_primary_is_not_lag(clusters, watched, paced_table):
    config, _ = paced_table
    clusters.wait_until(clusters.caught_up)
    # Nothing written for longer than the bound: now() - the last replay
    # grows, yet everything received is replayed.
    time.sleep(1.5)
    (reading,) = probe_for(config.source_db).readings()
    assert reading.lag.seconds == 0 and not reading.over, reading.describe()


@pytestmark_db
def test_a_standby_that_stays_behind_leaves_the_table_waiting_for_replica_lag(clusters, watched, paced_table):
    config, original = paced_table
    SchedulerSettings.objects.update_or_create(pk=1, defaults={"replica_max_wait_seconds": 2})
    clusters.lag_behind(1.5)
    result = run_cycle(cutoff=CUTOFF)
    state = RecoveryState.objects.get(run_id=result.run_id)
    assert state.phase == Phase.WAITING and state.waiting_for == f"replica:{STANDBY}"
    assert state.last_error.startswith("replica lag: waited 2 s for replica standby1 lag")
    assert state.pacing["seconds"]["lag"] >= 2.0 and state.pacing["doing"] == "lag"
    clusters.resume()
    clusters.wait_until(clusters.caught_up)
    resumed = resume_run(result.run_id)
    assert resumed.ok, [(t.label, t.phase, t.error) for t in resumed.tables]
    assert union_check([config], original) == {str(config): (0, ROWS)}


@pytestmark_db
def test_on_the_primary_the_standby_is_read_in_pg_stat_replication(clusters, monkeypatch, paced_table):
    config, _ = paced_table
    monkeypatch.setenv("ARCHIVAL_REPLICA_PACE_PRIMARY", clusters.url(clusters.primary_port))
    ReplicaWatch.objects.create(
        source_db=config.source_db, name=STANDBY, measured_on="PRIMARY", connection_kind="ENV",
        connection="ARCHIVAL_REPLICA_PACE_PRIMARY", max_lag_seconds=1, max_queue_kb=0,
    )  # fmt: skip
    ReplicaWatch.objects.create(
        source_db=config.source_db, name="nobody", measured_on="PRIMARY", connection_kind="ENV",
        connection="ARCHIVAL_REPLICA_PACE_PRIMARY", max_lag_seconds=1,
    )  # fmt: skip
    try:
        clusters.lag_behind(1.5)
        readings = {r.name: r for r in probe_for(config.source_db).readings()}
        assert readings["nobody"].over and "no standby named 'nobody'" in readings["nobody"].lag.detail
        # replay_lag stays at its last sample while replay is paused; the WAL not replayed grows.
        assert readings[STANDBY].over and readings[STANDBY].lag.queue_kb >= 1, readings[STANDBY].describe()
    finally:
        clusters.resume()
    clusters.wait_until(clusters.caught_up)
    # The standby reports its replay position at least every wal_receiver_status_interval (10 s).
    clusters.wait_until(lambda: not {r.name: r for r in probe_for(config.source_db).readings()}[STANDBY].over, 30)
