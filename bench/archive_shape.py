"""Archive table shapes side by side: what each index costs a batch insert, and what it saves a reader.

For each engine, builds one archive table per candidate shape, each with the
same N rows laid out like an archived Position (composite key basketId,
positionId, businessDate; contractId; 11 source columns + the 4 archive
columns), then:

- inserts batches of B rows (``INSERT ... SELECT`` from a staging table, one
  committed transaction each, durable commits) into every shape in turn,
  alternating the order each round, on keys interleaved with the archived
  ones (a later run's rows land all over the key, as they do in a real
  archive); prints the median ms per batch of each shape;
- times the readers' queries on each shape (disposal's expired count and
  keyset page, a contract lookup as the search filter and a CONTRACT hold
  target, a search page sorted on reference_date deep in the table, a
  restore DATE_RANGE count, verify's run-and-key-range count).

Usage (own database names; durable settings as the product runs):

    python bench/archive_shape.py --engine postgresql --rows 1000000 --rounds 15
    python bench/archive_shape.py --engine mariadb --rows 1000000 --rounds 15
    python bench/archive_shape.py --engine sqlite --rows 1000000 --rounds 15 --sqlite-path /tmp/x/arc.db

Databases: PostgreSQL ``BENCH_DB_PREFIX``_shape on 127.0.0.1:5432 (user
postgres), MariaDB ``BENCH_DB_PREFIX``_shape on 127.0.0.1:3306 (root).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

PREFIX = os.environ.get("BENCH_DB_PREFIX", "bench")

COLS_PG = (
    '"basketId" INTEGER NOT NULL, "positionId" INTEGER NOT NULL, "businessDate" DATE NOT NULL, '
    '"contractId" INTEGER NOT NULL, "quantity" NUMERIC(18,4), "price" NUMERIC(18,6), "currency" CHAR(3), '
    '"book" VARCHAR(60), "trader" VARCHAR(40), "status" VARCHAR(10), "updatedAt" TIMESTAMP, '
    '"archived_at" TIMESTAMPTZ NOT NULL, "archive_run_id" BIGINT NOT NULL, '
    '"reference_date" DATE NULL, "retention_until" DATE NULL'
)
KEY = ("basketId", "positionId", "businessDate")

# name -> (key clause, [(suffix, columns, method)], table option)
SHAPES: dict[str, dict] = {
    # What archive_tables.py created before: a UNIQUE key and three secondary indexes.
    "unique+3": {
        "key": "UNIQUE",
        "idx": [("ref", "reference_date"), ("ret", "retention_until"), ("con", "contractId")],
    },
    "pk+3": {
        "key": "PRIMARY KEY",
        "idx": [("ref", "reference_date"), ("ret", "retention_until"), ("con", "contractId")],
    },
    "pk+ret+con": {"key": "PRIMARY KEY", "idx": [("ret", "retention_until"), ("con", "contractId")]},
    "pk+ret": {"key": "PRIMARY KEY", "idx": [("ret", "retention_until")]},
    "pk": {"key": "PRIMARY KEY", "idx": []},
}
PG_ONLY = {
    "pk+brin2+con": {
        "key": "PRIMARY KEY",
        "idx": [("ret", "retention_until", "brin"), ("ref", "reference_date", "brin"), ("con", "contractId")],
    },
}
SQLITE_ONLY = {
    "wr+3": {
        "key": "PRIMARY KEY",
        "idx": [("ref", "reference_date"), ("ret", "retention_until"), ("con", "contractId")],
        "opt": " WITHOUT ROWID",
    },
    "wr+ret+con": {
        "key": "PRIMARY KEY",
        "idx": [("ret", "retention_until"), ("con", "contractId")],
        "opt": " WITHOUT ROWID",
    },
}


class Engine:
    vendor = ""

    def __init__(self, args):
        self.args = args

    def q(self, name: str) -> str:
        return f'"{name}"'

    def execute(self, sql: str, params=()):  # one statement, its own transaction
        cur = self.conn.cursor()
        if params:
            cur.execute(sql, params)
        else:
            cur.execute(sql)
        rows = cur.fetchall() if cur.description else None
        self.conn.commit()
        return rows


class PG(Engine):
    vendor = "postgresql"

    def connect(self):
        import psycopg

        name = f"{PREFIX}_shape"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            if self.args.rebuild:
                c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                c.execute(f'CREATE DATABASE "{name}"')
        self.conn = psycopg.connect(f"host=127.0.0.1 user=postgres dbname={name}")

    def cols(self):
        return COLS_PG

    def rows_sql(self, n: int, odd: int) -> str:
        # Row i: basket i/500, position 2*(i%500)+odd: a staging row sits between two archived ones.
        return (
            f"SELECT i / 500, 2 * (i % 500) + {odd}, DATE '2015-01-01' + (i % 365), (i::bigint * 7919) % 20000 + 1, "
            "(i % 20000) * 1.5, 10.25, 'EUR', 'BOOK' || (i % 40), 'T' || (i % 200), 'OPEN', "
            "TIMESTAMP '2024-06-01 10:00:00', now(), 1 + i / 200000, "
            "DATE '2016-01-01' + ((i::bigint * 7919) % 20000)::int / 7, DATE '2026-01-01' + ((i::bigint * 7919) % 20000)::int / 7 "
            f"FROM generate_series(0, {n - 1}) AS s(i)"
        )

    def create(self, table: str, shape: dict):
        key = ", ".join(self.q(c) for c in KEY)
        stmts = [
            f"CREATE TABLE {self.q(table)} ({self.cols()}, CONSTRAINT {self.q(table + '_k')} {shape['key']} ({key}))"
        ]
        for suffix, col, *method in shape["idx"]:
            using = f" USING {method[0]}" if method else ""
            stmts.append(f"CREATE INDEX {self.q(table + '_' + suffix)} ON {self.q(table)}{using} ({self.q(col)})")
        return stmts

    def analyze(self, table):
        self.conn.commit()
        self.conn.autocommit = True
        self.conn.execute(f"VACUUM ANALYZE {self.q(table)}")
        self.conn.autocommit = False

    def limit(self, sql, n):
        return f"{sql} LIMIT {n}"


class Maria(Engine):
    vendor = "mariadb"

    def q(self, name: str) -> str:
        return f"`{name}`"

    def connect(self):
        import MySQLdb

        name = f"{PREFIX}_shape"
        c = MySQLdb.connect(host="127.0.0.1", user="root")
        cur = c.cursor()
        if self.args.rebuild:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        c.close()
        self.conn = MySQLdb.connect(host="127.0.0.1", user="root", db=name)
        self.conn.cursor().execute("SET SESSION max_recursive_iterations = 100000000")

    def cols(self):
        return COLS_PG.replace('"', "`").replace("TIMESTAMPTZ", "DATETIME(6)").replace("TIMESTAMP,", "DATETIME(6),")

    def rows_sql(self, n: int, odd: int) -> str:
        return (
            f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {n}) "
            f"SELECT i DIV 500, 2 * (i % 500) + {odd}, DATE '2015-01-01' + INTERVAL (i % 365) DAY, (i * 7919) % 20000 + 1, "
            "(i % 20000) * 1.5, 10.25, 'EUR', CONCAT('BOOK', i % 40), CONCAT('T', i % 200), 'OPEN', "
            "TIMESTAMP '2024-06-01 10:00:00', NOW(6), 1 + i DIV 200000, "
            "DATE '2016-01-01' + INTERVAL ((i * 7919) % 20000) DIV 7 DAY, "
            "DATE '2026-01-01' + INTERVAL ((i * 7919) % 20000) DIV 7 DAY FROM s"
        )

    def create(self, table: str, shape: dict):
        key = ", ".join(self.q(c) for c in KEY)
        k = (
            f"PRIMARY KEY ({key})"
            if shape["key"] == "PRIMARY KEY"
            else f"CONSTRAINT {self.q(table + '_k')} UNIQUE ({key})"
        )
        idx = [f"INDEX {self.q(table + '_' + s)} ({self.q(c)})" for s, c, *_ in shape["idx"]]
        return [f"CREATE TABLE {self.q(table)} ({', '.join([self.cols(), k, *idx])}) ENGINE=InnoDB"]

    def analyze(self, table):
        self.execute(f"ANALYZE TABLE {self.q(table)}")

    def limit(self, sql, n):
        return f"{sql} LIMIT {n}"


class Lite(Engine):
    vendor = "sqlite"

    def connect(self):
        import sqlite3

        path = self.args.sqlite_path
        if self.args.rebuild and os.path.exists(path):
            os.remove(path)
        self.conn = sqlite3.connect(path, isolation_level="DEFERRED")
        self.conn.execute("PRAGMA journal_mode = DELETE")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA cache_size = -65536")

    def cols(self):
        return COLS_PG.replace("TIMESTAMPTZ", "TEXT").replace("TIMESTAMP,", "TEXT,").replace("INTEGER", "INTEGER")

    def rows_sql(self, n: int, odd: int) -> str:
        return (
            f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {n}) "
            f"SELECT i / 500, 2 * (i % 500) + {odd}, date('2015-01-01', '+' || (i % 365) || ' days'), "
            "(i * 7919) % 20000 + 1, (i % 20000) * 1.5, 10.25, 'EUR', 'BOOK' || (i % 40), 'T' || (i % 200), 'OPEN', "
            "'2024-06-01 10:00:00', datetime('now'), 1 + i / 200000, "
            "date('2016-01-01', '+' || (((i * 7919) % 20000) / 7) || ' days'), "
            "date('2026-01-01', '+' || (((i * 7919) % 20000) / 7) || ' days') FROM s"
        )

    def create(self, table: str, shape: dict):
        key = ", ".join(self.q(c) for c in KEY)
        stmts = [
            f"CREATE TABLE {self.q(table)} ({self.cols()}, CONSTRAINT {self.q(table + '_k')} {shape['key']} ({key})){shape.get('opt', '')}"
        ]
        for suffix, col, *_ in shape["idx"]:
            stmts.append(f"CREATE INDEX {self.q(table + '_' + suffix)} ON {self.q(table)} ({self.q(col)})")
        return stmts

    def analyze(self, table):
        self.execute("ANALYZE")

    def limit(self, sql, n):
        return f"{sql} LIMIT {n}"


def tname(shape: str) -> str:
    return "arc_" + shape.replace("+", "_")


def build(e: Engine, shapes: dict, n: int, batch: int, rounds: int) -> None:
    q = e.q
    for stmt in (f"DROP TABLE IF EXISTS {q('staging')}", f"DROP TABLE IF EXISTS {q('loaded')}"):
        e.execute(stmt)
    # The staging rows: the keys between the archived ones, in key order, with a row number to batch on.
    cols = e.cols().replace(" NOT NULL", "")
    e.execute(f"CREATE TABLE {q('staging')} ({cols}, {q('n')} INTEGER)")
    e.execute(f"CREATE TABLE {q('loaded')} ({cols})")
    e.execute(f"INSERT INTO {q('loaded')} {e.rows_sql(n, 0)}")
    staged = batch * rounds
    # Spread the staged rows over the key: every (n / staged)-th slot between archived rows.
    step = max(1, n // staged)
    e.execute(f"DROP TABLE IF EXISTS {q('odd')}")
    e.execute(f"CREATE TABLE {q('odd')} ({cols})")
    e.execute(f"INSERT INTO {q('odd')} {e.rows_sql(n, 1)}")
    e.execute(
        f"INSERT INTO {q('staging')} SELECT t.*, ROW_NUMBER() OVER (ORDER BY {', '.join('t.' + q(c) for c in KEY)}) - 1 "
        f"FROM {q('odd')} t WHERE (t.{q('basketId')} * 500 + (t.{q('positionId')} - 1) / 2) % {step} = 0"
    )
    e.execute(f"DROP TABLE {q('odd')}")
    e.execute(f"CREATE INDEX {q('staging_n')} ON {q('staging')} ({q('n')})")
    key = ", ".join(q(c) for c in KEY)
    for name, shape in shapes.items():
        t = tname(name)
        e.execute(f"DROP TABLE IF EXISTS {q(t)}")
        for stmt in e.create(t, shape):
            e.execute(stmt)
        e.execute(f"INSERT INTO {q(t)} SELECT * FROM {q('loaded')} ORDER BY {key}")
        e.analyze(t)
        print(f"built {t}", flush=True)


def insert_batches(e: Engine, shapes: dict, batch: int, rounds: int) -> dict[str, list[float]]:
    q = e.q
    ph = "?" if e.vendor == "sqlite" else "%s"
    names = list(shapes)
    out: dict[str, list[float]] = {n: [] for n in names}
    cols = [c.split()[0] for c in e.cols().split(", ") if c.split()[0].strip('"`') not in ("",)]
    collist = ", ".join(cols)
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for name in order:
            t = tname(name)
            sql = f"INSERT INTO {q(t)} ({collist}) SELECT {collist} FROM {q('staging')} WHERE {q('n')} >= {ph} AND {q('n')} < {ph}"
            cur = e.conn.cursor()
            t0 = time.perf_counter()
            cur.execute(sql, (r * batch, (r + 1) * batch))
            e.conn.commit()
            out[name].append((time.perf_counter() - t0) * 1000)
    return out


def readers(e: Engine) -> dict[str, tuple[str, list]]:
    """The readers' queries, as the product writes them (see docs/archive-tables.md)."""
    q = e.q
    ph = "?" if e.vendor == "sqlite" else "%s"
    key = [q(c) for c in KEY]
    okey = ", ".join(key)
    # About 5% expired: retention dates run 2026-01-01 .. 2033-10.
    today = "2026-05-01"
    after = f"({key[0]} > {ph} OR ({key[0]} = {ph} AND ({key[1]} > {ph} OR ({key[1]} = {ph} AND {key[2]} > {ph}))))"
    return {
        "disposal expired count": (f"SELECT COUNT(*) FROM {{t}} a WHERE {q('retention_until')} < {ph}", [today]),
        "disposal keyset page (5,000)": (
            e.limit(
                f"SELECT {okey} FROM {{t}} a WHERE {q('retention_until')} < {ph} AND {after} ORDER BY {okey}", 5000
            ),
            [today, 900, 900, 0, 0, "2015-01-01"],
        ),
        "search contract filter page (51)": (
            e.limit(f"SELECT * FROM {{t}} a WHERE {q('contractId')} = {ph} ORDER BY {okey}", 51),
            [4242],
        ),
        "search sort reference_date deep page (51)": (
            e.limit(
                f"SELECT * FROM {{t}} a WHERE {q('reference_date')} >= {ph} AND {q('reference_date')} IS NOT NULL "
                f"ORDER BY {q('reference_date')}, {okey}",
                51,
            ),
            ["2023-06-01"],
        ),
        "restore DATE_RANGE count (1 month)": (
            f"SELECT COUNT(*) FROM {{t}} a WHERE {q('reference_date')} >= {ph} AND {q('reference_date')} <= {ph}",
            ["2020-03-01", "2020-03-31"],
        ),
        "verify run + key range count (5,000 keys)": (
            f"SELECT COUNT(*) FROM {{t}} a WHERE {q('archive_run_id')} = {ph} AND {key[0]} >= {ph} AND {key[0]} < {ph}",
            [1, 100, 110],
        ),
    }


def time_readers(e: Engine, shapes: dict, repeat: int) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, float]] = {}
    for label, (sql, params) in readers(e).items():
        res[label] = {}
        samples: dict[str, list[float]] = {n: [] for n in shapes}
        for r in range(repeat):
            for name in shapes if r % 2 == 0 else list(reversed(list(shapes))):
                cur = e.conn.cursor()
                t0 = time.perf_counter()
                cur.execute(sql.format(t=e.q(tname(name))), params)
                cur.fetchall()
                samples[name].append((time.perf_counter() - t0) * 1000)
                e.conn.commit()
        for name in shapes:
            res[label][name] = statistics.median(samples[name])
    return res


SOURCE_COLUMNS = 11  # the Position columns before the four archive columns
MOVE_SHAPES = {
    # The ceiling's target (PERFORMANCE.md): the source's columns and key, nothing else.
    "plain": {"key": "PRIMARY KEY", "idx": [], "plain": True},
    "unique+3": SHAPES["unique+3"],
    "pk+ret+con": SHAPES["pk+ret+con"],
}


def move_batches(e: Engine, n: int, batch: int) -> dict[str, list[float]]:
    """A whole move of N source rows into an empty archive table of each shape, batch by batch.

    Each shape has its own copy of the source; batch i of every shape runs
    before batch i + 1 of any (the order alternating), so they share the
    machine's state. A batch: ``INSERT ... SELECT`` of a key range into the
    archive, ``DELETE`` of that range from the source, one commit.
    """
    q = e.q
    key = ", ".join(q(c) for c in KEY)
    defs = e.cols().split(", ")
    source_defs = defs[:SOURCE_COLUMNS] + [
        d.replace(" NOT NULL", "") for d in defs[SOURCE_COLUMNS + 2 :]
    ]  # reference_date, retention_until: what the join to the contract gives
    source_cols = [d.split()[0] for d in source_defs]
    names = list(MOVE_SHAPES)
    for name in names:
        src, arc = q("src_" + tname(name)), q("mv_" + tname(name))
        e.execute(f"DROP TABLE IF EXISTS {src}")
        e.execute(f"DROP TABLE IF EXISTS {arc}")
        e.execute(f"CREATE TABLE {src} ({', '.join(source_defs)}, PRIMARY KEY ({key}))")
        picked = ", ".join([*(c for c in source_cols)])
        e.execute(f"INSERT INTO {src} ({picked}) SELECT {picked} FROM {q('loaded')} ORDER BY {key}")
        shape = MOVE_SHAPES[name]
        if shape.get("plain"):
            e.execute(f"CREATE TABLE {arc} ({', '.join(defs[:SOURCE_COLUMNS])}, PRIMARY KEY ({key}))")
        else:
            for stmt in e.create("mv_" + tname(name), shape):
                e.execute(stmt)
        e.analyze("src_" + tname(name))
    out: dict[str, list[float]] = {name: [] for name in names}
    per_basket = 500
    baskets = max(1, batch // per_basket)
    ph = "?" if e.vendor == "sqlite" else "%s"
    now = {"postgresql": "now()", "mariadb": "NOW(6)", "sqlite": "datetime('now')"}[e.vendor]
    plain_cols = ", ".join(source_cols[:SOURCE_COLUMNS])
    arc_cols = ", ".join(
        [*source_cols[:SOURCE_COLUMNS], q("archived_at"), q("archive_run_id"), *source_cols[SOURCE_COLUMNS:]]
    )
    sel_cols = ", ".join([*source_cols[:SOURCE_COLUMNS], now, "1", *source_cols[SOURCE_COLUMNS:]])
    rng = f"{q('basketId')} >= {ph} AND {q('basketId')} < {ph}"
    for i, low in enumerate(range(0, n // per_basket, baskets)):
        for name in names if i % 2 == 0 else list(reversed(names)):
            src, arc = q("src_" + tname(name)), q("mv_" + tname(name))
            cols, sel = (plain_cols, plain_cols) if MOVE_SHAPES[name].get("plain") else (arc_cols, sel_cols)
            cur = e.conn.cursor()
            t0 = time.perf_counter()
            cur.execute(f"INSERT INTO {arc} ({cols}) SELECT {sel} FROM {src} WHERE {rng}", (low, low + baskets))
            cur.execute(f"DELETE FROM {src} WHERE {rng}", (low, low + baskets))
            e.conn.commit()
            out[name].append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engine", choices=["postgresql", "mariadb", "sqlite"], required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rebuild", action="store_true", default=True)
    p.add_argument("--sqlite-path", default="/tmp/bench_shape/arc.db")
    p.add_argument("--shapes", default="", help="comma-separated subset")
    p.add_argument("--move", action="store_true", help="time whole moves into empty tables instead (plain, old, new)")
    args = p.parse_args()
    e: Engine = {"postgresql": PG, "mariadb": Maria, "sqlite": Lite}[args.engine](args)
    if args.engine == "sqlite":
        os.makedirs(os.path.dirname(args.sqlite_path), exist_ok=True)
    e.connect()
    shapes = dict(SHAPES)
    shapes.update(PG_ONLY if args.engine == "postgresql" else SQLITE_ONLY if args.engine == "sqlite" else {})
    if args.shapes:
        shapes = {k: v for k, v in shapes.items() if k in args.shapes.split(",")}
    if args.move:
        build(e, {}, args.rows, args.batch, 1)
        moved = move_batches(e, args.rows, args.batch)
        print(f"\n{args.engine}: move of {args.rows:,} rows into an empty archive table, batches of {args.batch:,}")
        print("| shape | median ms/batch | total s | x plain |")
        print("|---|---|---|---|")
        plain = statistics.median(moved["plain"])
        for name, xs in moved.items():
            print(
                f"| {name} | {statistics.median(xs):.1f} | {sum(xs) / 1000:.1f} | {statistics.median(xs) / plain:.2f} |"
            )
        return
    build(e, shapes, args.rows, args.batch, args.rounds)
    ins = insert_batches(e, shapes, args.batch, args.rounds)
    print(
        f"\n{args.engine}: {args.rows:,} archived rows, INSERT ... SELECT of {args.batch:,} rows, {args.rounds} rounds"
    )
    print("| shape | median ms/batch | min | max |")
    print("|---|---|---|---|")
    for name, xs in ins.items():
        print(f"| {name} | {statistics.median(xs):.1f} | {min(xs):.1f} | {max(xs):.1f} |")
    rd = time_readers(e, shapes, args.repeat)
    print(f"\nreaders (median ms of {args.repeat}):")
    print("| query | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for label, per in rd.items():
        print(f"| {label} | " + " | ".join(f"{per[n]:.1f}" for n in shapes) + " |")


if __name__ == "__main__":
    main()
