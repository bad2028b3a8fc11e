"""What an archival run costs the operational workload beside it (issue 30).

    python bench/oltp.py                                    # every engine, 3,000,000 rows (make bench-oltp)
    python bench/oltp.py --engines postgresql --rows 200000 --baseline 8   # a smoke run
    python bench/oltp.py --engines postgresql --variant nopacing:ARCHIVAL_PACING=false

Per engine, on a data set from bench/generate.py (fixed seed, the same rows
on every engine; databases ``oltp_*``, files under /tmp/oltp_bench):

1. **ceiling**: the plain ceiling of PERFORMANCE.md (bench/ceiling.py: keyset
   batches of 5,000, one transaction each, no row through Python), no load.
2. **engine alone**: ``manage.py archival run`` in its own process, no load.
3. **under load**, once per variant (an environment for the engine, e.g.
   pacing off): a load generator starts in a second process (``oltp.py
   load``), runs a baseline period, then ``manage.py archival run`` starts in
   a third process, as a user runs it; the load keeps going for the whole run
   and a short tail after it.

Every measurement starts from the same freshly restored data.

The load: a fixed rate (``--rate`` transactions per second, open loop: a
transaction's latency counts from the instant it was scheduled, so a stall
also delays the ones queued behind it, as pgbench ``--rate`` counts it) over
``--clients`` connections, each transaction one statement in autocommit:

    read_position    40%  a position's rows (every business date) joined to its contract
    read_trades      20%  the latest 20 trades of a contract
    update_position  15%  quantity, market value and timestamp of one position row
    update_trade     10%  amount and booking time of one trade
    insert_trade     10%  a new trade on a live contract
    insert_position   5%  a new position on a live contract

on keys sampled from the rows this run does not archive (their contract
matures after the threshold): the operational workload works on live rows,
the engine on old ones, and they share tables, indexes, pages, the WAL and the
CPU. The transaction sequence (kind and key of transaction *i*) is the same
on every engine. The load's own limits are an application's: statement and
lock timeouts of 5 s (PostgreSQL ``statement_timeout``/``lock_timeout``,
MariaDB ``innodb_lock_wait_timeout``/``max_statement_time``), on SQLite a
5 s budget of retries on SQLITE_BUSY, timed, so the busy time is measured
rather than hidden in a busy handler.

Waits on both sides: a monitor in this process samples every 0.1 s the
server's view (PostgreSQL ``pg_stat_activity`` wait events, MariaDB
``INNODB_TRX`` in LOCK WAIT) and attributes them to the load (its own
sessions) or the engine (the rest), and takes the server's counters
(deadlocks, row lock waits) at each phase boundary. On SQLite it probes
every 20 ms whether the source files' write lock is free (``BEGIN
IMMEDIATE``, no wait, rolled back at once): the fraction found taken, less
the load's own write time, is the engine's share of the single writer. The
engine's side also comes from its own records: the recovery state (lock
waits, waiting tables, errors) and the run's audit events (lock timeouts,
retries, pacing) and log.

Output: bench/results/<stamp>-oltp.json and latest-oltp.json, and a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import envs  # noqa: E402
from bench.generate import CUTOFF, THRESHOLD  # noqa: E402

# Our own databases and files, beside any other benchmark (BENCH_DB_PREFIX and
# BENCH_ROOT override them; set by main(), not at import, so importing this
# module changes nothing for the other benchmarks).
DB_PREFIX, ROOT = "oltp", "/tmp/oltp_bench"


def use_own_databases() -> None:
    os.environ.setdefault("BENCH_DB_PREFIX", DB_PREFIX)
    os.environ.setdefault("BENCH_ROOT", ROOT)
    envs.P = os.environ["BENCH_DB_PREFIX"]
    envs.ROOT = Path(os.environ["BENCH_ROOT"])


RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

MIX: tuple[tuple[str, int], ...] = (
    ("read_position", 40),
    ("read_trades", 20),
    ("update_position", 15),
    ("update_trade", 10),
    ("insert_trade", 10),
    ("insert_position", 5),
)
KINDS = tuple(kind for kind, _ in MIX)
WRITES = frozenset({"update_position", "update_trade", "insert_trade", "insert_position"})
# The source database each write goes to (SQLite: the file whose single writer it takes).
WRITES_TO = {"update_position": "SourceDB1", "insert_position": "SourceDB1", "update_trade": "SourceDB2",
             "insert_trade": "SourceDB2"}  # fmt: skip
LOAD_TIMEOUT_MS = 5000
LOAD_APP_NAME = "oltp-load"
MONITOR_APP_NAME = "oltp-monitor"
# New rows get keys no generated row has: positions from this basket on, trades from this id on.
NEW_BASKET = 900_000_000
NEW_TRADE = 9_000_000_000_000
PERCENTILES = (50, 95, 99)


# -- the plan (pure; tests/test_bench_oltp.py) ---------------------------------
def plan(count: int, seed: int = 20250101, mix: tuple[tuple[str, int], ...] = MIX) -> list[tuple[int, int]]:
    """Transaction ``i``'s kind (an index into the mix) and a key draw, for ``count`` transactions.

    The same ``seed`` gives the same sequence on every engine; the key draw
    picks among the sampled live keys (modulo their number).
    """
    rng = random.Random(seed)
    kinds = rng.choices(range(len(mix)), weights=[w for _, w in mix], k=count)
    return [(k, rng.randrange(1 << 30)) for k in kinds]


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least ``p``% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def window_of(t: float, marks: dict[str, float]) -> str | None:
    """Which period a transaction scheduled at ``t`` belongs to: baseline, during or after (None: warm-up)."""
    if t < marks["baseline_from"]:
        return None
    if t < marks["engine_start"]:
        return "baseline"
    if t <= marks["engine_end"]:
        return "during"
    return "after"


def summarize(records: list[list], marks: dict[str, float]) -> dict:
    """Latency percentiles (ms), errors and busy time of the load, per period.

    A record is ``[i, kind, scheduled, started, ended, busy_seconds, error]``
    (times on the monotonic clock shared by the processes of this machine);
    latency counts from ``scheduled``, service time from ``started``.
    """
    out: dict = {}
    periods = {
        "baseline": marks["engine_start"] - marks["baseline_from"],
        "during": marks["engine_end"] - marks["engine_start"],
        "after": marks["load_end"] - marks["engine_end"],
    }
    grouped: dict[str, list[list]] = {name: [] for name in periods}
    for rec in records:
        name = window_of(rec[2], marks)
        if name:
            grouped[name].append(rec)
    # Before and after the run together: a second estimate of the undisturbed load (the noise of one baseline).
    grouped["baseline_and_after"] = grouped["baseline"] + grouped["after"]
    periods["baseline_and_after"] = periods["baseline"] + periods["after"]
    for name, recs in grouped.items():
        ok = [r for r in recs if not r[6]]
        latency = [(r[4] - r[2]) * 1000 for r in ok]
        service = [(r[4] - r[3]) * 1000 for r in ok]
        errors: dict[str, int] = {}
        for r in recs:
            if r[6]:
                errors[r[6]] = errors.get(r[6], 0) + 1
        per_kind = {}
        for k, kind in enumerate(KINDS):
            lat = [(r[4] - r[2]) * 1000 for r in ok if r[1] == k]
            if lat:
                per_kind[kind] = {"n": len(lat), "p99_ms": _round(percentile(lat, 99))}
        seconds = max(periods[name], 1e-9)
        writes = [r for r in ok if KINDS[r[1]] in WRITES]
        out[name] = {
            "seconds": round(periods[name], 2),
            "transactions": len(recs),
            "tps": round(len(recs) / seconds, 1),
            "errors": errors,
            "latency_ms": {f"p{p}": _round(percentile(latency, p)) for p in PERCENTILES}
            | {"max": _round(max(latency, default=None))},
            "service_ms": {f"p{p}": _round(percentile(service, p)) for p in PERCENTILES},
            "busy_seconds": round(sum(r[5] for r in recs), 3),
            "busy_transactions": sum(1 for r in recs if r[5] > 0),
            # The load's own writes per source database, as a share of the period
            # (SQLite: its share of that file's single writer, waits for the lock excluded).
            "write_share": {
                db: round(sum(r[4] - r[3] - r[5] for r in writes if WRITES_TO[KINDS[r[1]]] == db) / seconds, 4)
                for db in sorted(set(WRITES_TO.values()))
            },
            "per_kind": per_kind,
        }
    return out


def _round(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def p99_rise(load: dict) -> float | None:
    """How much the load's p99 latency rose during the run, relative to the baseline (0.08 = 8%)."""
    base = load.get("baseline", {}).get("latency_ms", {}).get("p99")
    during = load.get("during", {}).get("latency_ms", {}).get("p99")
    if not base or during is None:
        return None
    return round(during / base - 1, 4)


def p99_rise_pooled(load: dict) -> float | None:
    """The same rise against the baseline and the tail after the run pooled."""
    return p99_rise({"baseline": load.get("baseline_and_after", {}), "during": load.get("during", {})})


def goal(p99_rise_: float | None, ratio: float | None) -> bool | None:
    """Issue 30's goal: p99 rises by less than 10% while the engine archives at >= 0.5x the ceiling."""
    if p99_rise_ is None or ratio is None:
        return None
    return p99_rise_ < 0.10 and ratio >= 0.5


# -- the load generator (a child process: ``oltp.py load``) ----------------------
class Statements:
    """The mix's statements for one engine, on the tables of the bench data set."""

    def __init__(self, vendor: str, position: str, contract1: str, trade: str):
        from bench.generate import dialect_for

        q = dialect_for(vendor).quote
        m = "?" if vendor == "sqlite" else "%s"
        self.vendor = vendor
        self.sql = {
            "read_position": (
                f"SELECT p.*, c.{q('maturityDate')} FROM {position} p JOIN {contract1} c "
                f"ON c.{q('contractId')} = p.{q('contractId')} WHERE p.{q('basketId')} = {m} AND p.{q('positionId')} = {m}"
            ),
            "read_trades": (
                f"SELECT * FROM {trade} WHERE {q('contractId')} = {m} ORDER BY {q('tradeDate')} DESC LIMIT 20"
            ),
            "update_position": (
                f"UPDATE {position} SET {q('quantity')} = {m}, {q('marketValue')} = {m}, {q('updatedAt')} = {m} "
                f"WHERE {q('basketId')} = {m} AND {q('positionId')} = {m} AND {q('businessDate')} = {m}"
            ),
            "update_trade": (
                f"UPDATE {trade} SET {q('amount')} = {m}, {q('bookedAt')} = {m} "
                f"WHERE {q('tradeId')} = {m} AND {q('version')} = {m}"
            ),
            "insert_trade": (
                f"INSERT INTO {trade} ({q('tradeId')}, {q('version')}, {q('contractId')}, {q('tradeDate')}, "
                f"{q('amount')}, {q('currency')}, {q('trader')}, {q('bookedAt')}) VALUES ({m}, 1, {m}, {m}, {m}, 'EUR', 'TR-OLTP', {m})"
            ),
            "insert_position": (
                f"INSERT INTO {position} ({q('basketId')}, {q('positionId')}, {q('businessDate')}, {q('contractId')}, "
                f"{q('quantity')}, {q('price')}, {q('marketValue')}, {q('currency')}, {q('bookCode')}, {q('status')}, "
                f"{q('updatedAt')}) VALUES ({m}, 0, {m}, {m}, {m}, 1, {m}, 'EUR', 'BK-OLTP', 'OPEN', {m})"
            ),
        }

    def params(self, kind: str, i: int, draw: int, keys: dict) -> list:
        """Parameters of transaction ``i`` (``draw`` picks its key among the sampled live keys)."""
        now = datetime(2026, 12, 7, 9, 0, 0) + _seconds(i)
        stamp = now if self.vendor == "postgresql" else now.strftime("%Y-%m-%d %H:%M:%S")
        today = "2026-12-07"
        if kind == "read_position":
            b, p, _ = keys["positions"][draw % len(keys["positions"])]
            return [b, p]
        if kind == "read_trades":
            return [keys["contracts2"][draw % len(keys["contracts2"])]]
        if kind == "update_position":
            b, p, d = keys["positions"][draw % len(keys["positions"])]
            return [i % 1000, (i % 100000) / 100, stamp, b, p, d]
        if kind == "update_trade":
            t, v = keys["trades"][draw % len(keys["trades"])]
            return [(i % 100000) / 100, stamp, t, v]
        if kind == "insert_trade":
            return [NEW_TRADE + i, keys["contracts2"][draw % len(keys["contracts2"])], today, i % 1000, stamp]
        if kind == "insert_position":
            return [
                NEW_BASKET + i,
                today,
                keys["contracts1"][draw % len(keys["contracts1"])],
                i % 1000,
                i % 1000,
                stamp,
            ]
        raise ValueError(kind)


def _seconds(i: int):
    from datetime import timedelta

    return timedelta(seconds=i)


def classify(vendor: str, exc: BaseException) -> str:
    """A short name for an error the load saw: timeout, lock_timeout, deadlock, busy_timeout, or the code."""
    if vendor == "postgresql":
        code = getattr(exc, "sqlstate", None) or ""
        return {"57014": "timeout", "55P03": "lock_timeout", "40P01": "deadlock", "40001": "serialization"}.get(
            code, f"error:{code or type(exc).__name__}"
        )
    if vendor == "mysql":
        code = exc.args[0] if exc.args else 0
        return {1205: "lock_timeout", 1213: "deadlock", 1969: "timeout", 3024: "timeout"}.get(code, f"error:{code}")
    return f"error:{type(exc).__name__}"


def is_busy(exc: BaseException) -> bool:
    """SQLite's SQLITE_BUSY (5) or SQLITE_LOCKED (6): another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)


class Target:
    """Where the load's tables are, from the setup's Django settings (no Django connection is used)."""

    def __init__(self):
        from django.db import connections

        from bench.generate import dialect_for, source_schema

        s1, s2 = connections["SourceDB1"], connections["SourceDB2"]
        self.vendor = s1.vendor
        q = dialect_for(self.vendor).quote
        self.settings1, self.settings2 = s1.settings_dict, s2.settings_dict
        if self.vendor == "sqlite":
            # One connection per client: SourceDB1's file, SourceDB2's ATTACHed as src2.
            self.position, self.contract1 = f"main.{q('Position')}", f"main.{q('Contract')}"
            self.trade, self.contract2 = f"src2.{q('Trade')}", f"src2.{q('Contract')}"
        else:
            sch1, sch2 = q(source_schema("SourceDB1")), q(source_schema("SourceDB2"))
            self.position, self.contract1 = f"{sch1}.{q('Position')}", f"{sch1}.{q('Contract')}"
            self.trade, self.contract2 = f"{sch2}.{q('Trade')}", f"{sch2}.{q('Contract')}"

    def connect(self, app_name: str = LOAD_APP_NAME):
        """A new driver connection in autocommit with the load's limits; (connection, server session id)."""
        sd = self.settings1
        if self.vendor == "postgresql":
            import psycopg

            conn = psycopg.connect(
                host=sd["HOST"] or "127.0.0.1",
                port=sd["PORT"] or 5432,
                user=sd["USER"],
                password=sd["PASSWORD"] or None,
                dbname=sd["NAME"],
                autocommit=True,
                application_name=app_name,
            )
            conn.execute(f"SET statement_timeout = {LOAD_TIMEOUT_MS}")
            conn.execute(f"SET lock_timeout = {LOAD_TIMEOUT_MS}")
            return conn, conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        if self.vendor == "mysql":
            import MySQLdb

            conn = MySQLdb.connect(
                host=sd["HOST"] or "127.0.0.1",
                port=int(sd["PORT"] or 3306),
                user=sd["USER"],
                passwd=sd["PASSWORD"] or "",
                db=sd["NAME"],
                autocommit=True,
            )
            cur = conn.cursor()
            cur.execute(f"SET SESSION innodb_lock_wait_timeout = {max(1, LOAD_TIMEOUT_MS // 1000)}")
            cur.execute(f"SET SESSION max_statement_time = {LOAD_TIMEOUT_MS / 1000}")
            cur.execute("SELECT CONNECTION_ID()")
            return conn, cur.fetchone()[0]
        import sqlite3

        # timeout=0: no busy handler; the load retries on SQLITE_BUSY itself and times the wait.
        conn = sqlite3.connect(sd["NAME"], timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous = FULL")
        _sqlite_retry(lambda: conn.execute("ATTACH DATABASE ? AS src2", [self.settings2["NAME"]]))
        return conn, None


def _sqlite_retry(fn, budget: float = 30.0):
    end = time.monotonic() + budget
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_busy(exc) or time.monotonic() > end:
                raise
            time.sleep(0.002)


def sample_keys(target: Target) -> dict:
    """Live keys (never eligible in this run), the same on every engine: ~1% of the live positions and trades."""
    from bench.generate import dialect_for

    q = dialect_for(target.vendor).quote
    m = "?" if target.vendor == "sqlite" else "%s"
    mod = "%" if target.vendor == "sqlite" else "%%"  # a literal % beside %s parameters
    conn, _ = target.connect()
    try:
        cur = conn.cursor()

        def rows(sql, params):
            cur.execute(sql, params)
            return [tuple(r) for r in cur.fetchall()]

        keys = {
            "positions": rows(
                f"SELECT p.{q('basketId')}, p.{q('positionId')}, p.{q('businessDate')} FROM {target.position} p "
                f"JOIN {target.contract1} c ON c.{q('contractId')} = p.{q('contractId')} "
                f"WHERE c.{q('maturityDate')} >= {m} AND (p.{q('basketId')} * 7 + p.{q('positionId')}) {mod} 97 = 0 "
                "ORDER BY 1, 2, 3",
                [THRESHOLD],
            ),
            "trades": rows(
                f"SELECT t.{q('tradeId')}, t.{q('version')} FROM {target.trade} t JOIN {target.contract2} c "
                f"ON c.{q('contractId')} = t.{q('contractId')} WHERE c.{q('maturityDate')} >= {m} "
                f"AND (t.{q('tradeId')} * 7 + t.{q('version')}) {mod} 97 = 0 ORDER BY 1, 2",
                [THRESHOLD],
            ),
            "contracts1": [
                r[0]
                for r in rows(
                    f"SELECT {q('contractId')} FROM {target.contract1} WHERE {q('maturityDate')} >= {m} ORDER BY 1",
                    [THRESHOLD],
                )
            ],
            "contracts2": [
                r[0]
                for r in rows(
                    f"SELECT {q('contractId')} FROM {target.contract2} WHERE {q('maturityDate')} >= {m} ORDER BY 1",
                    [THRESHOLD],
                )
            ],
        }
    finally:
        conn.close()
    for name, values in keys.items():
        if not values:
            raise RuntimeError(f"no live {name} to load: is the data set built?")
    return keys


class Load:
    """``clients`` threads, each with its own connection, working through one schedule at ``rate`` per second."""

    def __init__(self, target: Target, rate: float, clients: int, seconds_max: float, seed: int):
        self.target = target
        self.rate = rate
        self.clients = clients
        self.stmts = Statements(target.vendor, target.position, target.contract1, target.trade)
        self.plan = plan(int(rate * seconds_max) + 1, seed)
        self.keys = sample_keys(target)
        self.next_i = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.records: list[list] = []
        self.conns = [target.connect() for _ in range(clients)]
        self.session_ids = [sid for _, sid in self.conns]

    def take(self) -> int | None:
        with self.lock:
            i = self.next_i
            if i >= len(self.plan):
                return None
            self.next_i += 1
            return i

    def client(self, conn) -> None:
        records = []
        vendor = self.target.vendor
        cur = conn.cursor()
        while not self.stop.is_set():
            i = self.take()
            if i is None:
                break
            scheduled = self.t0 + i / self.rate
            wait = scheduled - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                break
            k, draw = self.plan[i]
            kind = KINDS[k]
            sql, params = self.stmts.sql[kind], self.stmts.params(kind, i, draw, self.keys)
            started = time.monotonic()
            busy = 0.0
            error = ""
            while True:
                try:
                    cur.execute(sql, params)
                    if kind.startswith("read"):
                        cur.fetchall()
                    break
                except Exception as exc:  # every failure is counted, none stops the load
                    if vendor == "sqlite" and is_busy(exc):
                        # Another connection (the engine) holds the file's lock: wait and retry, timed.
                        t = time.monotonic()
                        if busy >= LOAD_TIMEOUT_MS / 1000:
                            error = "busy_timeout"
                            break
                        time.sleep(0.001)
                        busy += time.monotonic() - t
                        continue
                    error = classify(vendor, exc)
                    if vendor == "postgresql" and conn.closed:
                        conn, _ = self.target.connect()
                        cur = conn.cursor()
                    break
            ended = time.monotonic()
            records.append([i, k, scheduled, started, ended, round(busy, 6), error])
        with self.lock:
            self.records.extend(records)

    def run(self) -> None:
        self.t0 = time.monotonic() + 0.2
        threads = [threading.Thread(target=self.client, args=(c,), daemon=True) for c, _ in self.conns]
        for t in threads:
            t.start()
        return threads


def load_main(args) -> int:
    """``oltp.py load``: run the load until SIGTERM (or --max-seconds), then write the records to --out."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    import django

    django.setup()
    target = Target()
    load = Load(target, args.rate, args.clients, args.max_seconds, args.seed)
    signal.signal(signal.SIGTERM, lambda *_: load.stop.set())
    threads = load.run()
    # The orchestrator waits for this line: connections are open and keys sampled.
    print(json.dumps({"ready": True, "t0": load.t0, "session_ids": load.session_ids,
                      "keys": {k: len(v) for k, v in load.keys.items()}}), flush=True)  # fmt: skip
    deadline = load.t0 + args.max_seconds
    while not load.stop.is_set() and time.monotonic() < deadline:
        load.stop.wait(0.2)
    load.stop.set()
    for t in threads:
        t.join(LOAD_TIMEOUT_MS / 1000 + 5)
    Path(args.out).write_text(json.dumps({"t0": load.t0, "records": sorted(load.records)}))
    return 0


# -- the monitor (in the orchestrator) ---------------------------------------------
class Monitor(threading.Thread):
    """Samples the server's waits every ``interval`` seconds, attributed to the load or the engine."""

    def __init__(self, engine: str, env: dict, load_sessions: list, interval: float):
        super().__init__(daemon=True)
        self.engine = engine
        self.env = env
        self.load_sessions = set(load_sessions or [])
        self.interval = interval
        self.samples: list[tuple[float, dict]] = []
        self.counters: dict[str, dict] = {}
        self.stop = threading.Event()
        self.conn = self._connect()

    def _connect(self):
        if self.engine == "postgresql":
            import psycopg

            url = self.env["SOURCEDB1_DATABASE_URL"]
            self.dbname = url.rsplit("/", 1)[1]
            return psycopg.connect(f"{envs.PG}/{self.dbname}", autocommit=True, application_name=MONITOR_APP_NAME)
        if self.engine == "mariadb":
            import MySQLdb

            conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="", autocommit=True)
            cur = conn.cursor()
            cur.execute("SELECT CONNECTION_ID()")
            self.own_id = cur.fetchone()[0]
            return conn
        import sqlite3

        data = Path(self.env["ARCHIVAL_DATA_DIR"])
        self.files = {alias: data / f"{alias}.sqlite3" for alias in ("SourceDB1", "SourceDB2")}
        return {
            alias: sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
            for alias, path in self.files.items()
        }

    def counters_now(self) -> dict:
        if self.engine == "postgresql":
            row = self.conn.execute(
                "SELECT deadlocks, conflicts, xact_rollback FROM pg_stat_database WHERE datname = %s", [self.dbname]
            ).fetchone()
            return {"deadlocks": row[0], "conflicts": row[1], "rollbacks": row[2]}
        if self.engine == "mariadb":
            cur = self.conn.cursor()
            cur.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN "
                "('Innodb_row_lock_waits', 'Innodb_row_lock_time', 'Innodb_deadlocks', 'Innodb_row_lock_time_max')"
            )
            return {k: int(v) for k, v in cur.fetchall()}
        return {}

    def mark(self, name: str) -> None:
        self.counters[name] = self.counters_now()

    def sample(self) -> dict:
        if self.engine == "postgresql":
            rows = self.conn.execute(
                "SELECT application_name, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = %s AND state = 'active' AND wait_event_type IS NOT NULL "
                "AND application_name <> %s",
                [self.dbname, MONITOR_APP_NAME],
            ).fetchall()
            out: dict = {}
            for app, wtype, wevent in rows:
                side = "load" if app == LOAD_APP_NAME else "engine"
                key = f"{side} {wtype}:{wevent}"
                out[key] = out.get(key, 0) + 1
            return out
        if self.engine == "mariadb":
            cur = self.conn.cursor()
            cur.execute("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'")
            out = {}
            for (tid,) in cur.fetchall():
                side = "load" if tid in self.load_sessions else "engine"
                out[f"{side} lock"] = out.get(f"{side} lock", 0) + 1
            return out
        out = {}
        for alias, conn in self.conn.items():
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except Exception as exc:
                if not is_busy(exc):
                    raise
                out[f"writer taken {alias}"] = 1
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                self.samples.append((t, self.sample()))
            except Exception as exc:  # a failed sample is recorded, the run goes on
                self.samples.append((t, {f"sample error {type(exc).__name__}": 1}))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t)))


def summarize_waits(samples: list[tuple[float, dict]], marks: dict[str, float], interval: float) -> dict:
    """Per period: samples taken, and for each wait seen the samples that saw it and the seconds that stands for."""
    out = {}
    for name in ("baseline", "during", "after"):
        got = [s for t, s in samples if window_of(t, marks) == name]
        seen: dict[str, int] = {}
        for s in got:
            for key, n in s.items():
                seen[key] = seen.get(key, 0) + n
        out[name] = {
            "samples": len(got),
            "waits": {
                k: {"samples": v, "fraction": round(v / len(got), 4) if got else None} for k, v in sorted(seen.items())
            },
        }
    return out


def counter_deltas(counters: dict[str, dict]) -> dict:
    spans = {"baseline": ("baseline_from", "engine_start"), "during": ("engine_start", "engine_end"),
             "after": ("engine_end", "load_end")}  # fmt: skip
    out = {}
    for name, (a, b) in spans.items():
        if a in counters and b in counters:
            out[name] = {k: counters[b][k] - counters[a].get(k, 0) for k in counters[b]}
    return out


# -- the engine's run and its own records ----------------------------------------
def engine_run(engine: str, env_extra: dict[str, str]) -> dict:
    """``manage.py archival run`` in its own process, as a user runs it; its JSON and the wall time.

    ``BENCH_PACE_DUTY=c`` in the variant (an experiment, not a setting of the
    product): the same command with every batch followed by a pause of ``c``
    times its duration (pt-archiver's ``--sleep-coef`` on every batch), added
    to archival.engine.pacing.Pacer from outside; see duty_main.
    """
    env = envs.environment(engine) | split_variant(env_extra)[0]
    command = [REPO / "manage.py"] if "BENCH_PACE_DUTY" not in env else [Path(__file__).resolve(), "duty"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [envs.PYTHON, *map(str, command), "archival", "run", "--cutoff", CUTOFF, "--json"],
        env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    t1 = time.monotonic()
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        result = {}
    if not result:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"archival run failed on {engine} (exit {proc.returncode})")
    return {"start": t0, "end": t1, "exit": proc.returncode, "run_id": result["run_id"], "status": result["status"],
            "moved": result["moved"], "failed": result["failed"], "waiting": result["waiting"],
            "stderr_tail": proc.stderr[-1500:]}  # fmt: skip


def duty_main(argv: list[str]) -> int:
    """``oltp.py duty archival run ...``: manage.py with a pause after every batch (experiment; engine_run)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    coef = float(os.environ["BENCH_PACE_DUTY"])
    import django

    django.setup()
    from archival.engine import pacing

    after = pacing.Pacer.after_batch

    def after_batch(self, rows: int, seconds: float) -> None:
        after(self, rows, seconds)
        if self.pause_s < coef * seconds:
            self.pause_s = min(self.limits.max_pause_ms / 1000, coef * seconds)

    pacing.Pacer.after_batch = after_batch
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *argv])
    return 0


def engine_report_main(args) -> int:
    """``oltp.py engine-report RUN``: what the engine recorded about the run (a child process with the setup's env)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db.models import Count

    from governance.models import ArchivalRun, AuditEvent, RecoveryState

    run = ArchivalRun.objects.get(pk=args.run)
    states = list(RecoveryState.objects.filter(run_id=run.pk))
    actions = dict(
        AuditEvent.objects.filter(run_id=run.pk)
        .values_list("action")
        .annotate(n=Count("id"))
        .values_list("action", "n")
    )
    details = list(
        AuditEvent.objects.filter(run_id=run.pk)
        .exclude(action__startswith="table.")
        .exclude(action__startswith="run.")
        .values_list("action", "table_label", "details")[:50]
    )
    log_lines = []
    log_dir = Path(settings.ARCHIVAL["LOG_DIR"])
    for path in sorted(log_dir.glob("archival_*.log")) if log_dir.exists() else []:
        for line in path.read_text(errors="replace").splitlines():
            if any(w in line for w in ("WARNING", "ERROR", "lock", "pac", "wait")):
                log_lines.append(line[:300])
    rows = sum(s.archived_count for s in states)
    seconds = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
    out = {
        "run_id": run.pk,
        "status": run.status,
        "rows": rows,
        "run_seconds": seconds,
        "tables": len(states),
        "phases": dict(sorted({s.phase: sum(1 for x in states if x.phase == s.phase) for s in states}.items())),
        "lock_waits_left": sum(s.lock_waits for s in states),
        # What pacing did (archival.engine.pacing): seconds not moving rows per reason, slow batches.
        "pacing_seconds": {
            r: round(sum(float(((s.pacing or {}).get("seconds") or {}).get(r, 0)) for s in states), 3)
            for r in ("latency", "lock", "lag", "window")
        },
        "slow_batches": sum(int((s.pacing or {}).get("slow_batches", 0)) for s in states),
        "paced_tables": sorted(s.table_label for s in states if (s.pacing or {}).get("slow_batches")),
        "waiting_for": [f"{s.table_label}: {s.waiting_for}" for s in states if s.waiting_for],
        "errors": [f"{s.table_label}: {s.last_error[:300]}" for s in states if s.last_error][:10],
        "audit_actions": actions,
        "audit_details": [{"action": a, "table": t, "details": d} for a, t, d in details],
        "log_lines": log_lines[-40:],
    }
    print(json.dumps(out, default=str))
    return 0


def scheduler_settings_main(args) -> int:
    """``oltp.py scheduler-settings FIELD=VALUE ...``: the scheduler settings the engine reads (pacing), validated."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    import django

    django.setup()
    from governance.models import SchedulerSettings

    obj = SchedulerSettings.objects.current()
    for item in args.fields:
        name, _, value = item.partition("=")
        field = SchedulerSettings._meta.get_field(name)
        if value.lower() in ("true", "false"):
            value = value.capitalize()  # what BooleanField.to_python reads
        setattr(obj, name, field.to_python(value))
    obj.full_clean()
    obj.save()
    print(
        json.dumps(
            {
                f.name: getattr(obj, f.name)
                for f in SchedulerSettings._meta.concrete_fields
                if f.name.startswith(("pac", "replica"))
            }
        )
    )
    return 0


def split_variant(env_extra: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """A variant's environment (UPPER_CASE keys) and its scheduler settings (lower_case field names)."""
    env = {k: v for k, v in env_extra.items() if not k.islower()}
    fields = [f"{k}={v}" for k, v in env_extra.items() if k.islower()]
    return env, fields


def apply_settings(engine: str, env_extra: dict[str, str]) -> dict:
    """Write the variant's scheduler settings (the restored control database has the defaults)."""
    env, fields = split_variant(env_extra)
    proc = subprocess.run(
        [envs.PYTHON, str(Path(__file__).resolve()), "scheduler-settings", *fields],
        env=envs.environment(engine) | env, cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"scheduler settings failed on {engine}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def engine_report(engine: str, run_id: int, env_extra: dict[str, str]) -> dict:
    env = envs.environment(engine) | split_variant(env_extra)[0]
    proc = subprocess.run(
        [envs.PYTHON, str(Path(__file__).resolve()), "engine-report", str(run_id)],
        env=env, cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"engine report failed on {engine}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- one measurement under load ----------------------------------------------------
def machine_state() -> dict:
    """Load averages and other sessions' test or bench processes right now (the figures' context)."""
    others = []
    mine = {os.getpid(), os.getppid()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("pytest" in cmd or "bench/" in cmd) and "oltp" not in cmd:
            others.append(cmd[:120])
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "other_test_or_bench_processes": len(others),
            "others": others[:5], "at": datetime.now(UTC).strftime("%H:%M:%S")}  # fmt: skip


def under_load(engine: str, args, env_extra: dict[str, str], log) -> dict:
    """Restore, start the load, baseline, the engine's run, a tail; the load's and the engine's figures."""
    restore(engine, args)
    pacing = apply_settings(engine, env_extra)
    before = machine_state()
    env = envs.environment(engine) | split_variant(env_extra)[0]
    out_file = envs.ROOT / f"load-{engine}.json"
    max_seconds = args.baseline + args.max_engine_seconds + args.tail + 10
    load_cmd = [envs.PYTHON, str(Path(__file__).resolve()), "load", "--rate", str(args.rate),
                "--clients", str(args.clients), "--max-seconds", str(max_seconds), "--seed", str(args.seed),
                "--out", str(out_file)]  # fmt: skip
    load = subprocess.Popen(load_cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monitor = None
    try:
        hello = json.loads(load.stdout.readline() or "{}")
        if not hello.get("ready"):
            raise RuntimeError(f"the load did not start: {load.stderr.read()[-3000:]}")
        t0 = hello["t0"]
        interval = 0.02 if engine == "sqlite" else 0.1
        monitor = Monitor(engine, env, hello["session_ids"], interval)
        monitor.start()
        marks = {"load_start": t0, "baseline_from": t0 + args.warmup}
        time.sleep(max(0.0, marks["baseline_from"] - time.monotonic()))
        monitor.mark("baseline_from")
        time.sleep(args.baseline - args.warmup)
        log(f"   baseline done, engine starts ({engine}{', ' + fmt_env(env_extra) if env_extra else ''})")
        monitor.mark("engine_start")
        run = engine_run(engine, env_extra)
        monitor.mark("engine_end")
        marks["engine_start"], marks["engine_end"] = run["start"], run["end"]
        time.sleep(args.tail)
        monitor.mark("load_end")
        marks["load_end"] = time.monotonic()
    finally:
        load.send_signal(signal.SIGTERM)
        try:
            load.wait(LOAD_TIMEOUT_MS / 1000 + 20)
        except subprocess.TimeoutExpired:
            load.kill()
        if monitor:
            monitor.stop.set()
            monitor.join()
    if load.returncode != 0:
        raise RuntimeError(f"the load failed: {load.stderr.read()[-3000:]}")
    records = json.loads(out_file.read_text())["records"]
    load_summary = summarize(records, marks)
    report = engine_report(engine, run["run_id"], env_extra)
    waits = summarize_waits(monitor.samples, marks, monitor.interval)
    result = {
        "env": env_extra,
        "scheduler_settings": pacing,
        "machine_before": before,
        "machine_after": machine_state(),
        "load": load_summary,
        "p99_rise": p99_rise(load_summary),
        "p99_rise_pooled": p99_rise_pooled(load_summary),
        "engine": {**run, "report": report, "wall_seconds": round(run["end"] - run["start"], 3)},
        "waits": waits,
        "server_counters": counter_deltas(monitor.counters),
        "sample_interval": monitor.interval,
        "keys": hello["keys"],
    }
    if engine == "sqlite":
        result["sqlite_writer"] = sqlite_writer(waits, load_summary)
    return result


def sqlite_writer(waits: dict, load: dict) -> dict:
    """The engine's share of each source file's single writer during the run, from the probes.

    A probe finds a file's write lock taken by the load or by the engine; the
    load's own share is the time its writes to that file held it (their
    service time less their waits for the lock) over the period, and the
    engine's share is the rest.
    """
    out = {}
    for name in ("baseline", "during"):
        per = {}
        for key, w in waits[name]["waits"].items():
            if key.startswith("writer taken"):
                per[key.removeprefix("writer taken ")] = w["fraction"]
        load_share = load[name]["write_share"]
        engine_share = {f: round(max(0.0, v - load_share.get(f, 0.0)), 4) for f, v in per.items()}
        out[name] = {"taken_fraction": per, "load_write_share": load_share, "engine_share": engine_share}
    return out


def fmt_env(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())


def alone(engine: str, args, env_extra: dict[str, str]) -> dict:
    """The engine's run with no load (same restored data)."""
    restore(engine, args)
    pacing = apply_settings(engine, env_extra)
    before = machine_state()
    run = engine_run(engine, env_extra)
    report = engine_report(engine, run["run_id"], env_extra)
    return {"env": env_extra, "scheduler_settings": pacing, "machine_before": before, **run, "report": report,
            "wall_seconds": round(run["end"] - run["start"], 3)}  # fmt: skip


def ceiling(engine: str, args) -> dict:
    """The plain ceiling, no load: ``--ceiling-repeat`` runs on restored data, the median by time."""
    runs = []
    for _ in range(max(1, args.ceiling_repeat)):
        restore(engine, args)
        before = machine_state()
        out = envs.worker("ceiling", engine, "same", str(args.rows), str(args.tables))
        runs.append({**json.loads(out.strip().splitlines()[-1]), "machine_before": before})
    # The median; of an even number, the quicker of the middle two (the ceiling is a bound on speed).
    runs.sort(key=lambda r: r["seconds"])
    return {**runs[(len(runs) - 1) // 2], "all_seconds": [round(r["seconds"], 3) for r in runs]}


def restore(engine: str, args) -> None:
    """The loaded data back, and the server settled: nothing left to flush from the restore."""
    envs.restore(engine, args.rows, args.tables)
    if engine != "mariadb":
        return  # PostgreSQL: the restore ends with a CHECKPOINT; SQLite: with a sync
    # MariaDB regenerates its sources: wait (up to a minute) until InnoDB has
    # written the new pages, or the flushing lands on whichever period runs first.
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    try:
        cur = conn.cursor()
        end = time.monotonic() + 60
        while time.monotonic() < end:
            cur.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_pages_dirty', 'Innodb_buffer_pool_pages_total')"
            )
            status = {k: int(v) for k, v in cur.fetchall()}
            if status["Innodb_buffer_pool_pages_dirty"] <= 0.01 * status["Innodb_buffer_pool_pages_total"]:
                break
            time.sleep(1)
    finally:
        conn.close()


def rate_of(rows: int | None, seconds: float | None) -> float | None:
    return rows / seconds if rows and seconds else None


def engine_rate(m: dict) -> float | None:
    """The engine's rows/s over the run's own time (created to finished, as the ceiling times itself)."""
    rep = m["report"]
    return rate_of(rep["rows"], rep["run_seconds"])


def measure_engine(engine: str, args, variants: list[tuple[str, dict]], log) -> dict:
    log(f"== {engine}: generating {args.rows:,} rows in {args.tables} tables")
    t0 = time.perf_counter()
    envs.build(engine, args.rows, args.tables)
    log(f"   built in {time.perf_counter() - t0:.1f}s")
    out: dict = {"variants": {}}
    log(f"== {engine}: ceiling (no load)")
    out["ceiling"] = ceiling(engine, args)
    ceil = rate_of(out["ceiling"]["rows"], out["ceiling"]["seconds"])
    log(f"   {out['ceiling']['rows']:,} rows in {out['ceiling']['all_seconds']} s: {ceil:,.0f} rows/s (median)")
    for name, env_extra in variants:
        if not args.no_alone:
            log(f"== {engine}: engine alone ({name})")
            a = alone(engine, args, env_extra)
            a["ratio"] = round(engine_rate(a) / ceil, 3) if engine_rate(a) and ceil else None
            out.setdefault("alone", {})[name] = a
            log(f"   {a['report']['rows']:,} rows in {a['report']['run_seconds']:.2f}s, {a['ratio']} x ceiling")
        log(f"== {engine}: under load ({name}): {args.rate:g} tx/s, {args.clients} clients")
        try:
            m = under_load(engine, args, env_extra, log)
        except Exception as exc:  # the other variants are still measured
            out.setdefault("failures", []).append(f"{name}: {type(exc).__name__}: {exc}")
            log(f"   FAILED {name}: {exc}")
            continue
        m["ratio"] = round(engine_rate(m["engine"]) / ceil, 3) if engine_rate(m["engine"]) and ceil else None
        m["goal_met"] = goal(m["p99_rise"], m["ratio"]) if engine == "postgresql" else None
        out["variants"][name] = m
        b, d = m["load"]["baseline"]["latency_ms"], m["load"]["during"]["latency_ms"]
        log(f"   load p99 {b['p99']} -> {d['p99']} ms ({_pct(m['p99_rise'])}), engine {m['ratio']} x ceiling, "
            f"loadavg {m['machine_before']['loadavg']}")  # fmt: skip
    return out


def pacing_pairs(engine: str, args, log) -> dict:
    """The small benchmark's engine run (bench/run.py's ``engine`` step), pacing on and off, no load.

    ``--pacing-pairs N`` pairs on the same restored data, every other pair
    pacing off first; the figure is the median of the pairs' on/off time ratios.
    """
    from bench.generate import SIZES

    rows = SIZES[args.pairs_size]
    log(f"== {engine}: pacing on/off without load, {args.pairs_size} ({rows:,} rows), {args.pacing_pairs} pairs")
    envs.build(engine, rows, args.tables)
    settings = {"on": {"pacing_enabled": "true"}, "off": {"pacing_enabled": "false"}}
    pairs = []
    for i in range(args.pacing_pairs):
        pair = {}
        for name in ("on", "off") if i % 2 == 0 else ("off", "on"):
            envs.restore(engine, rows, args.tables)
            apply_settings(engine, settings[name])
            before = machine_state()
            out = json.loads(
                envs.worker("engine", engine, "same", str(rows), str(args.tables)).strip().splitlines()[-1]
            )
            pair[name] = {"seconds": round(out["seconds"], 3), "rows": out["rows"], "loadavg": before["loadavg"]}
        pair["ratio"] = round(pair["on"]["seconds"] / pair["off"]["seconds"], 4)
        log(f"   pair {i + 1}: on {pair['on']['seconds']:.2f} s, off {pair['off']['seconds']:.2f} s, "
            f"on/off {pair['ratio']:.3f}, loadavg {pair['on']['loadavg'][0]}")  # fmt: skip
        pairs.append(pair)
    ratios = sorted(p["ratio"] for p in pairs)
    return {"size": args.pairs_size, "rows": rows, "pairs": pairs, "median_ratio": ratios[len(ratios) // 2],
            "within_5_percent": ratios[len(ratios) // 2] <= 1.05}  # fmt: skip


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def table(doc: dict) -> list[str]:
    """The Markdown table of bench/RESULTS.md and the README."""
    if not any("variants" in res for res in doc["results"].values()):
        return []
    lines = [
        "| engine | variant | load p50 / p95 / p99 ms, baseline | during the run "
        "| p99 rise (against before and after pooled) | load errors (during) "
        "| load lock waits / busy (during) | engine rows/s under load | × ceiling | alone × ceiling "
        "| engine: lock timeouts, retries; lock waits seen | engine paced (s) | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for engine, res in doc["results"].items():
        if "variants" not in res:
            continue
        ceil = rate_of(res["ceiling"]["rows"], res["ceiling"]["seconds"])
        for name, m in res["variants"].items():
            b, d = m["load"]["baseline"], m["load"]["during"]
            lat = lambda x: " / ".join(f"{x['latency_ms'][f'p{p}']:.1f}" for p in PERCENTILES)  # noqa: E731
            errs = ", ".join(f"{k} {v}" for k, v in d["errors"].items()) or "0"
            if engine == "sqlite":
                w = m["sqlite_writer"]["during"]
                share = ", ".join(f"{f} {v * 100:.0f}%" for f, v in w["engine_share"].items())
                waits = f"busy {d['busy_seconds']:.2f} s in {d['busy_transactions']} tx; engine's share of the writer: {share}"
            else:
                waits = load_waits(m["waits"]["during"]["waits"], m["sample_interval"])
            rep = m["engine"]["report"]
            acts = rep["audit_actions"]
            engine_locks = sum(
                v["samples"] for k, v in m["waits"]["during"]["waits"].items() if k.lower().startswith("engine lock")
            )
            eng_w = f"{acts.get('batch.lock_timeout', 0)}, {acts.get('batch.retried', 0)}"
            if engine != "sqlite":
                eng_w += f"; lock waits ~{engine_locks * m['sample_interval']:.1f} s"
            spent = rep.get("pacing_seconds") or {}
            paced = ", ".join(f"{r} {v:.1f}" for r, v in spent.items() if v >= 0.05) or "0"
            alone_ratio = (res.get("alone", {}).get(name) or {}).get("ratio")
            rate = engine_rate(m["engine"])
            lines.append(
                f"| {engine} | {name} | {lat(b)} | {lat(d)} | {_pct(m['p99_rise'])} ({_pct(m.get('p99_rise_pooled'))}) "
                f"| {errs} | {waits} "
                f"| {rate:,.0f} | {m['ratio']} | {alone_ratio if alone_ratio is not None else '-'} | {eng_w} "
                f"| {paced} | {m['machine_before']['loadavg'][0]} |"
            )
        notes.append(
            f"{engine}: ceiling {ceil:,.0f} rows/s ({res['ceiling']['rows']:,} rows in {res['ceiling']['seconds']:.2f} s, no load)"
        )
    return [*lines, "", *"\n\n".join(notes).splitlines()]


def pairs_table(doc: dict) -> list[str]:
    lines = []
    for engine, res in doc["results"].items():
        if "pacing_pairs" not in res:
            continue
        pp = res["pacing_pairs"]
        if not lines:
            lines = ["| engine | size | pacing on (s) | pacing off (s) | on/off per pair | median | within 5% |",
                     "|---|---|---|---|---|---|---|"]  # fmt: skip
        on = ", ".join(f"{p['on']['seconds']:.2f}" for p in pp["pairs"])
        off = ", ".join(f"{p['off']['seconds']:.2f}" for p in pp["pairs"])
        ratios = ", ".join(f"{p['ratio']:.3f}" for p in pp["pairs"])
        lines.append(f"| {engine} | {pp['size']} | {on} | {off} | {ratios} | {pp['median_ratio']:.3f} "
                     f"| {'yes' if pp['within_5_percent'] else 'no'} |")  # fmt: skip
    return lines


def load_waits(seen: dict, interval: float) -> str:
    """The load's lock waits in seconds (sampled), then its most frequent other wait (e.g. IO:WALSync)."""
    mine = {k.removeprefix("load "): v["samples"] for k, v in seen.items() if k.startswith("load ")}
    lock = sum(n for name, n in mine.items() if name.lower().startswith("lock"))
    others = sorted(((n, name) for name, n in mine.items() if not name.lower().startswith("lock")), reverse=True)
    text = f"locks ~{lock * interval:.1f} s"
    if others:
        text += f"; most seen: {others[0][1]} ~{others[0][0] * interval:.1f} s"
    return text


def write_latest(path: Path, doc: dict) -> dict:
    """The latest figures per engine: this run's engines replace theirs, the others keep their own (and date)."""
    latest = {"results": {}}
    if path.exists():
        try:
            latest = json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    merged = {**doc, "results": {**latest.get("results", {}), **doc["results"]}}
    merged["files"] = sorted({*latest.get("files", []), doc["date"]})
    path.write_text(json.dumps(merged, indent=2, default=str))
    return merged


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``name:KEY=VALUE,KEY=VALUE`` (``name:`` alone: the engine's defaults)."""
    name, _, rest = text.partition(":")
    env = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"bad variant {text!r}: expected name:KEY=VALUE,...")
        env[key.strip()] = value.strip()
    return name or "default", env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        p = argparse.ArgumentParser(prog="oltp.py load")
        p.add_argument("--rate", type=float, required=True)
        p.add_argument("--clients", type=int, required=True)
        p.add_argument("--max-seconds", type=float, required=True)
        p.add_argument("--seed", type=int, default=20250101)
        p.add_argument("--out", required=True)
        return load_main(p.parse_args(argv[1:]))
    if argv[:1] == ["duty"]:
        return duty_main(argv[1:])
    if argv[:1] == ["scheduler-settings"]:
        p = argparse.ArgumentParser(prog="oltp.py scheduler-settings")
        p.add_argument("fields", nargs="*")
        return scheduler_settings_main(p.parse_args(argv[1:]))
    if argv[:1] == ["engine-report"]:
        p = argparse.ArgumentParser(prog="oltp.py engine-report")
        p.add_argument("run", type=int)
        return engine_report_main(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", nargs="+", default=["postgresql", "mariadb", "sqlite"], choices=envs.ENGINES)
    p.add_argument("--rows", type=int, default=3_000_000, help="rows generated (40%% eligible); default 3,000,000")
    p.add_argument("--tables", type=int, default=120)
    p.add_argument("--rate", type=float, default=200, help="load transactions per second (default 200)")
    p.add_argument("--clients", type=int, default=4, help="load connections (default 4)")
    p.add_argument("--baseline", type=float, default=30, help="seconds of load before the run starts (default 30)")
    p.add_argument("--warmup", type=float, default=5, help="first seconds of the baseline left out (default 5)")
    p.add_argument("--tail", type=float, default=10, help="seconds of load after the run (default 10)")
    p.add_argument("--max-engine-seconds", type=float, default=900)
    p.add_argument("--seed", type=int, default=20250101)
    p.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        help="name:KEY=VALUE,... for the engine's run: UPPER_CASE keys go to its environment, lower_case ones are "
        "scheduler settings (pacing: pacing_enabled=false, pace_slow_batch_ms=200, ...); repeatable; default 'default:'",
    )
    p.add_argument(
        "--ceiling-repeat", type=int, default=1, help="ceiling runs; the median (the quicker of two) is the yardstick"
    )
    p.add_argument("--no-alone", action="store_true", help="skip the engine's run without load")
    p.add_argument("--tag", default="", help="added to the result file's name")
    p.add_argument("--no-latest", action="store_true", help="an experiment: leave latest-oltp.json as it is")
    p.add_argument(
        "--pacing-pairs",
        type=int,
        default=0,
        help="instead of the load: N pairs of the engine's run with pacing on and off, no load (the 5%% check)",
    )
    p.add_argument("--pairs-size", default="small", help="data size of --pacing-pairs (bench/generate.py SIZES)")
    args = p.parse_args(argv)
    variants = args.variant or [("default", {})]
    use_own_databases()

    def log(msg: str) -> None:
        print(msg, flush=True)

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    from bench.run import machine

    doc = {"date": stamp, "machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "variant"},
           "variants": {n: e for n, e in variants}, "mix": dict(MIX), "machine_start": machine_state(),
           "results": {}, "failures": []}  # fmt: skip
    log(f"machine: {doc['machine_start']}")
    for engine in args.engines:
        try:
            envs.check_reachable(engine)
            if args.pacing_pairs:
                doc["results"][engine] = {"pacing_pairs": pacing_pairs(engine, args, log), "date": stamp}
                continue
            doc["results"][engine] = measure_engine(engine, args, variants, log)
            doc["results"][engine]["date"] = stamp
        except Exception as exc:  # the other engines are still measured
            doc["failures"].append(f"{engine}: {type(exc).__name__}: {exc}")
            log(f"   FAILED {engine}: {exc}")
    doc["machine_end"] = machine_state()
    lines = table(doc) + pairs_table(doc)
    print("\n".join(lines))
    kind = "pacing-pairs" if args.pacing_pairs else "oltp"
    name = f"{stamp}-{kind}{'-' + args.tag if args.tag else ''}.json"
    path = RESULTS / name
    path.write_text(json.dumps(doc, indent=2, default=str))
    if doc["results"] and not args.no_latest:
        write_latest(RESULTS / f"latest-{kind}.json", doc)
    log(f"wrote {path}")
    for f in doc["failures"]:
        log(f"FAILED {f}")
    return 1 if doc["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
