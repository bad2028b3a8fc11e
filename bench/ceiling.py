"""Hand-written moves of the same rows the engine moves: the yardsticks.

``ceiling``: the fastest correct set-based move (PERFORMANCE.md): keyset
batches of 5,000 in the expanded ``OR`` form, one transaction each, no row
through Python. PostgreSQL ``WITH b AS (next keys) , moved AS (DELETE ...
USING b RETURNING ...) INSERT ...``; SQLite (rollback journal, archive and
source ATTACHed) and MariaDB: the batch's last key, then ``INSERT ... SELECT``
+ ``DELETE`` of the key range.

``streaming``: what a careful hand-written cross-server copy does: fetch a
batch into Python, COPY (PostgreSQL) or executemany (SQLite) into the
archive and commit, then delete those keys from the source and commit.

Each comes in two archive table shapes:

- ``plain`` (the default, the headline yardstick: PERFORMANCE.md's plain
  ceiling): the source's columns and a PRIMARY KEY on the source's key,
  nothing else; the move inserts the source's columns only.
- ``same`` (same-shape): the engine's archive table shape
  (docs/archive-tables.md: source columns, the four archive columns, the
  source key as the PRIMARY KEY, indexes on retention_until and the
  contract column), filled like the engine fills it and, like the engine
  does for a new table, with its secondary indexes built after the move.
  Against it the engine's ratio is its own overhead, the shape's cost taken
  out; it is not the ceiling.

Both move parents (contracts) only when no child row references them any
more, children first, and only the tables the data set archives.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.db import connections, transaction

from bench.generate import THRESHOLD, YEARS, TableSpec, dialect_for, source_schema, to_archive

BATCH = 5000
META = ("archived_at", "archive_run_id", "reference_date", "retention_until")
SHAPES = ("plain", "same")


def namespace(alias: str) -> str:
    from archival.backends.sqlite import namespace_for

    return namespace_for(alias)


def order(specs: list[TableSpec]) -> list[TableSpec]:
    """The tables to move, children before the contracts they reference."""
    moved = to_archive(specs)
    return [s for s in moved if not s.is_contract] + [s for s in moved if s.is_contract]


def children_of(spec: TableSpec, specs: list[TableSpec]) -> list[TableSpec]:
    if not spec.is_contract:
        return []
    return [s for s in specs if s.source == spec.source and s.contract_table == spec.name]


def check_shape(shape: str) -> str:
    if shape not in SHAPES:
        raise ValueError(f"unknown archive table shape {shape!r} (one of {', '.join(SHAPES)})")
    return shape


class Mover:
    def __init__(self, spec: TableSpec, specs: list[TableSpec], on: str, shape: str = "plain"):
        self.spec = spec
        self.shape = check_shape(shape)
        self.conn = connections[on]
        self.vendor = self.conn.vendor
        self.d = dialect_for(self.vendor)
        self.children = children_of(spec, specs)
        src_schema = source_schema(spec.source)
        if on == "archive" and self.vendor == "sqlite":
            from archival.backends.sqlite import source_attach_name

            src_schema = source_attach_name(spec.source)
        self.src_schema = src_schema
        self.src = self.t(src_schema, spec.name)
        self.arc = self.t(namespace(spec.source), spec.name)
        self.pk = [f"s.{self.d.quote(c)}" for c in spec.pk]

    def t(self, schema: str, table: str) -> str:
        return f"{self.d.quote(schema)}.{self.d.quote(table)}"

    # -- predicates ------------------------------------------------------------
    def ref(self) -> str:
        q = self.d.quote
        return f"c.{q('maturityDate')}" if self.spec.logic == "CONTRACT_MATURITY" else f"s.{q(self.spec.date_column)}"

    def from_(self) -> str:
        q = self.d.quote
        if self.spec.logic != "CONTRACT_MATURITY":
            return f"{self.src} s"
        contract = self.t(self.src_schema, self.spec.contract_table)
        if self.vendor == "sqlite":
            # Pin the source as the outer loop (PERFORMANCE.md trap).
            return f"{self.src} s CROSS JOIN {contract} c"
        if self.vendor == "mysql":
            return f"{self.src} s STRAIGHT_JOIN {contract} c ON c.{q('contractId')} = s.{q('contractId')}"
        return f"{self.src} s JOIN {contract} c ON c.{q('contractId')} = s.{q('contractId')}"

    def eligible(self, children: bool = True) -> str:
        """Rows that go; ``children=False``: rows old enough to go (a parent's batch candidates)."""
        q = self.d.quote
        parts = []
        if self.spec.logic == "CONTRACT_MATURITY" and self.vendor == "sqlite":
            parts.append(f"c.{q('contractId')} = s.{q('contractId')}")
        parts.append(f"{self.ref()} < %s")
        for ch in self.children if children else []:
            parts.append(
                f"NOT EXISTS (SELECT 1 FROM {self.t(self.src_schema, ch.name)} ch WHERE ch.{q('contractId')} = s.{q('contractId')})"
            )
        return " AND ".join(parts)

    def threshold(self):
        return THRESHOLD

    def after(self, low) -> tuple[str, list]:
        from archival import rowkeys

        return rowkeys.key_range(self.pk, low, None)

    def between(self, low, high) -> tuple[str, list]:
        from archival import rowkeys

        return rowkeys.key_range(self.pk, low, high)

    # -- archive tables --------------------------------------------------------
    def create_archive(self, defaults: bool = False) -> None:
        """This mover's archive table, in its shape; ``defaults``: archive columns that fill themselves."""
        q, spec = self.d.quote, self.spec
        ns = namespace(spec.source)
        with self.conn.cursor() as cur:
            if self.vendor == "postgresql":
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q(ns)}")
            elif self.vendor == "mysql":
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {q(ns)}")
            cols = [
                f"{q(c.name)} {self.d.column_type(c)}{' NOT NULL' if c.name in spec.pk else ''}" for c in spec.columns
            ]
            key = ", ".join(q(c) for c in spec.pk)
            if self.shape == "plain":
                cur.execute(f"CREATE TABLE {self.arc} ({', '.join(cols)}, PRIMARY KEY ({key}))")
                return
            cols += self._archive_columns(defaults)
            cols.append(f"CONSTRAINT {q(spec.name + '_src_key')} PRIMARY KEY ({key})")
            cur.execute(f"CREATE TABLE {self.arc} ({', '.join(cols)})")

    def create_indexes(self) -> None:
        """The same shape's secondary indexes, built once the table's rows are in (as the engine does)."""
        if self.shape == "plain":
            return
        q, spec = self.d.quote, self.spec
        ns = namespace(spec.source)
        with self.conn.cursor() as cur:
            indexed = ["retention_until"] + (["contractId"] if spec.contract_column else [])
            for col in indexed:
                name = q(f"{spec.name}_{col}")
                if self.vendor == "sqlite":
                    cur.execute(f"CREATE INDEX {q(ns)}.{name} ON {q(spec.name)} ({q(col)})")
                else:
                    cur.execute(f"CREATE INDEX {name} ON {self.arc} ({q(col)})")

    def _archive_columns(self, defaults: bool) -> list[str]:
        q = self.d.quote
        stamp = {"postgresql": "timestamp with time zone", "mysql": "DATETIME(6)", "sqlite": "DATETIME"}[self.vendor]
        if defaults:
            # pt-archiver copies the source columns only: the archive columns need defaults.
            cols = [
                f"{q('archived_at')} {stamp} NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
                f"{q('archive_run_id')} BIGINT NOT NULL DEFAULT 0",
            ]
        else:
            cols = [f"{q('archived_at')} {stamp} NOT NULL", f"{q('archive_run_id')} BIGINT NOT NULL"]
        return [*cols, f"{q('reference_date')} DATE NULL", f"{q('retention_until')} DATE NULL"]

    def insert_columns(self) -> str:
        q = self.d.quote
        meta = META if self.shape == "same" else ()
        return ", ".join([q(c) for c in self.spec.column_names] + [q(m) for m in meta])

    def retention(self, ref: str) -> str:
        if self.vendor == "postgresql":
            return f"CAST({ref} + make_interval(years => {YEARS}) AS date)"
        if self.vendor == "mysql":
            return f"DATE_ADD({ref}, INTERVAL {YEARS} YEAR)"
        return f"date({ref}, '+{YEARS} years')"

    # -- the set-based move ------------------------------------------------------
    def move_all(self) -> tuple[int, int]:
        """Move every eligible row; return (rows, batches)."""
        if self.vendor == "postgresql":
            return self._move_pg()
        return self._move_range()

    def bound(self, cur, low) -> tuple[list | None, int]:
        """Last key and count of the next BATCH candidates (old enough to go) after ``low``.

        The engine's form (``archival.engine.same_server.batch_bound``, which
        says why): the children rule is applied inside this key range only.
        """
        pk_alias = [self.d.quote(c) for c in self.spec.pk]
        rng, rng_params = self.after(low)
        cur.execute(
            f"SELECT {', '.join(pk_alias)}, COUNT(*) OVER () FROM (SELECT {', '.join(self.pk)} FROM {self.from_()} "
            f"WHERE {self.eligible(children=False)} AND {rng} ORDER BY {', '.join(self.pk)} LIMIT {BATCH}) b "
            f"ORDER BY {', '.join(f'{c} DESC' for c in pk_alias)} LIMIT 1",
            [self.threshold(), *rng_params],
        )
        row = cur.fetchone()
        return (list(row[:-1]), row[-1]) if row else (None, 0)

    def _move_pg(self) -> tuple[int, int]:
        q = self.d.quote
        low, rows, batches = None, 0, 0
        now = datetime.now(UTC)
        cols = ", ".join(f"m.{q(c)}" for c in self.spec.column_names)
        while True:
            with transaction.atomic(using=self.conn.alias), self.conn.cursor() as cur:
                hi, candidates = self.bound(cur, low) if self.children else (None, None)
                if self.children and hi is None:
                    return rows, batches
                moved = self._move_pg_batch(cur, low, hi, cols, now)
            if hi is None:
                # Without children the last moved key is the next cursor.
                if moved is None:
                    return rows, batches
                hi, candidates = moved[0], moved[1]
            rows += moved[1] if moved else 0
            batches += 1
            if candidates < BATCH:
                return rows, batches
            low = hi

    def _move_pg_batch(self, cur, low, hi, cols: str, now) -> tuple[list, int] | None:
        """One PostgreSQL batch after ``low`` (up to ``hi``): (last moved key, rows), or None when none moved."""
        cur.execute(*self.pg_batch_sql(low, hi, cols, now))
        row = cur.fetchone()
        return (list(row[:-1]), row[-1]) if row else None

    def pg_batch_sql(self, low, hi, cols: str, now) -> tuple[str, list]:
        """The PostgreSQL batch statement after ``low`` (up to ``hi``) and its parameters."""
        q = self.d.quote
        pk_names = [q(c) for c in self.spec.pk]
        rng, rng_params = self.between(low, hi) if hi is not None else self.after(low)
        same = self.shape == "same"
        params = [self.threshold(), *rng_params] + ([now] if same else [])
        # The same shape carries each row's reference date through to its archive columns.
        ref = f", {self.ref()} AS ref_" if same else ""
        meta = f", %s, 0, m.ref_, {self.retention('m.ref_')}" if same else ""
        sql = (
            f"WITH b AS (SELECT {', '.join(self.pk)}{ref} FROM {self.from_()} "
            f"WHERE {self.eligible()} AND {rng} ORDER BY {', '.join(self.pk)} LIMIT {BATCH}), "
            f"moved AS (DELETE FROM {self.src} d USING b WHERE "
            + " AND ".join(f"d.{c} = b.{c}" for c in pk_names)
            + f" RETURNING d.*{', b.ref_' if same else ''}), "
            f"ins AS (INSERT INTO {self.arc} ({self.insert_columns()}) "
            f"SELECT {cols}{meta} FROM moved m) "
            # The batch is named once (in the DELETE): PostgreSQL inlines it and
            # sees its 5,000 rows. Named again here it would be materialized and
            # estimated at a few rows, and the DELETE would hash-join a full scan
            # of the source on every batch (3x slower on Position).
            f"SELECT {', '.join(pk_names)}, (SELECT COUNT(*) FROM moved) FROM moved "
            f"ORDER BY {', '.join(f'{c} DESC' for c in pk_names)} LIMIT 1"
        )
        return sql, params

    def _move_range(self) -> tuple[int, int]:
        q = self.d.quote
        low, rows, batches = None, 0, 0
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        cols = ", ".join(f"s.{q(c)}" for c in self.spec.column_names)
        while True:
            with transaction.atomic(using=self.conn.alias), self.conn.cursor() as cur:
                hi, candidates = self.bound(cur, low)
                if hi is None:
                    return rows, batches
                (insert, insert_params), (delete, delete_params) = self.range_sql(low, hi, cols, now)
                cur.execute(insert, insert_params)
                inserted = cur.rowcount
                cur.execute(delete, delete_params)
                if cur.rowcount != inserted:
                    raise RuntimeError(f"{self.spec.name}: inserted {inserted}, deleted {cur.rowcount}")
            rows += inserted
            batches += 1
            if candidates < BATCH:
                return rows, batches
            low = hi

    def range_sql(self, low, hi, cols: str, now: str) -> list[tuple[str, list]]:
        """The batch ``(low, hi]``'s INSERT ... SELECT and DELETE (SQLite, MariaDB), each with its parameters."""
        between, b_params = self.between(low, hi)
        if self.shape == "same":
            meta, meta_params = f", %s, 0, {self.ref()}, {self.retention(self.ref())}", [now]
        else:
            meta, meta_params = "", []
        insert = (
            f"INSERT INTO {self.arc} ({self.insert_columns()}) SELECT {cols}{meta} "
            f"FROM {self.from_()} WHERE {self.eligible()} AND {between}"
        )
        if self.vendor == "mysql":
            # Multi-table DELETE: the join to the contract stays a join.
            delete = f"DELETE s FROM {self.from_()} WHERE {self.eligible()} AND {between}"
        else:
            delete = f"DELETE FROM {self.src} AS s WHERE {self._sqlite_delete_where()} AND {between}"
        return [(insert, [*meta_params, self.threshold(), *b_params]), (delete, [self.threshold(), *b_params])]

    def _sqlite_delete_where(self) -> str:
        q = self.d.quote
        if self.spec.logic == "CONTRACT_MATURITY":
            contract = self.t(self.src_schema, self.spec.contract_table)
            cond = f"EXISTS (SELECT 1 FROM {contract} c WHERE c.{q('contractId')} = s.{q('contractId')} AND c.{q('maturityDate')} < %s)"
        else:
            cond = f"s.{q(self.spec.date_column)} < %s"
        for ch in self.children:
            cond += f" AND NOT EXISTS (SELECT 1 FROM {self.t(self.src_schema, ch.name)} ch WHERE ch.{q('contractId')} = s.{q('contractId')})"
        return cond


def run_ceiling(specs: list[TableSpec], shape: str = "plain") -> dict:
    """Set-based move of every table on the archive connection (same server), into ``shape`` archive tables."""
    t0 = time.perf_counter()
    movers = [Mover(s, specs, "archive", shape) for s in order(specs)]
    for m in movers:
        m.create_archive()
    ddl = time.perf_counter() - t0
    rows = batches = 0
    per_table = {}
    for m in movers:
        t = time.perf_counter()
        r, b = m.move_all()
        m.create_indexes()
        per_table[f"{m.spec.source}.{m.spec.name}"] = round(time.perf_counter() - t, 4)
        rows += r
        batches += b
    slowest = dict(sorted(per_table.items(), key=lambda kv: -kv[1])[:8])
    return {
        "rows": rows,
        "batches": batches,
        "seconds": time.perf_counter() - t0,
        "ddl_seconds": ddl,
        "slowest": slowest,
        "shape": shape,
    }


# -- streaming -------------------------------------------------------------------
def run_streaming(specs: list[TableSpec], shape: str = "plain") -> dict:
    """Fetch, bulk insert (COPY on PostgreSQL), delete by key: two connections, ``shape`` archive tables."""
    t0 = time.perf_counter()
    arc = connections["archive"]
    for s in order(specs):
        Mover(s, specs, "archive", shape).create_archive()
    ddl = time.perf_counter() - t0
    rows = batches = 0
    for spec in order(specs):
        src = Mover(spec, specs, spec.source, shape)
        a = Mover(spec, specs, "archive", shape)
        r, b = _stream_table(src, a, arc)
        a.create_indexes()
        rows += r
        batches += b
    return {"rows": rows, "batches": batches, "seconds": time.perf_counter() - t0, "ddl_seconds": ddl, "shape": shape}


def _stream_table(src: Mover, a: Mover, arc) -> tuple[int, int]:
    q = src.d.quote
    spec = src.spec
    cols = ", ".join(f"s.{q(c)}" for c in spec.column_names)
    pk_idx = [spec.column_names.index(c) for c in spec.pk]
    now = datetime.now(UTC)
    low, rows, batches = None, 0, 0
    types = {c.name: c for c in spec.columns}
    same = a.shape == "same"
    # The same shape needs each row's reference date for its archive columns.
    ref = f", {src.ref()}" if same else ""
    width = len(spec.columns)
    while True:
        rng, params = src.after(low)
        with src.conn.cursor() as cur:
            cur.execute(
                f"SELECT {cols}{ref} FROM {src.from_()} WHERE {src.eligible()} AND {rng} "
                f"ORDER BY {', '.join(src.pk)} LIMIT {BATCH}",
                [src.threshold(), *params],
            )
            batch = cur.fetchall()
        if not batch:
            return rows, batches
        from archival.engine.dates import add_years

        with transaction.atomic(using="archive"), arc.cursor() as cur:
            if arc.vendor == "postgresql":
                with cur.cursor.copy(f"COPY {a.arc} ({a.insert_columns()}) FROM STDIN") as copy:
                    for row in batch:
                        if same:
                            copy.write_row((*row[:width], now, 0, row[width], add_years(row[width], YEARS)))
                        else:
                            copy.write_row(row)
            else:
                stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
                if same:
                    values = [
                        (*row[:width], stamp, 0, row[width], add_years(_date(row[width]), YEARS).isoformat())
                        for row in batch
                    ]
                else:
                    values = batch
                marks = ", ".join(["%s"] * (width + (len(META) if same else 0)))
                cur.executemany(f"INSERT INTO {a.arc} ({a.insert_columns()}) VALUES ({marks})", values)
        keys = [[row[i] for i in pk_idx] for row in batch]
        with transaction.atomic(using=spec.source), src.conn.cursor() as cur:
            if src.vendor == "postgresql":
                arrays = ", ".join(f"%s::{src.d.column_type(types[c])}[]" for c in spec.pk)
                names = ", ".join(q(c) for c in spec.pk)
                cond = " AND ".join(f"d.{q(c)} = k.{q(c)}" for c in spec.pk)
                cur.execute(
                    f"DELETE FROM {src.src} d USING unnest({arrays}) AS k({names}) WHERE {cond}",
                    [list(col) for col in zip(*keys, strict=True)],
                )
            else:
                cond = " AND ".join(f"{q(c)} = %s" for c in spec.pk)
                cur.executemany(f"DELETE FROM {src.src} WHERE {cond}", keys)
        rows += len(batch)
        batches += 1
        low = keys[-1]


def _date(value):
    from datetime import date

    return value if isinstance(value, date) else date.fromisoformat(value)


def prepare_pt_archiver(specs: list[TableSpec], shape: str = "plain") -> dict:
    """Archive tables for pt-archiver (MariaDB), and its --where per table.

    Plain by default: pt-archiver is compared with the plain ceiling, so it
    writes into the same plain tables.
    """
    t0 = time.perf_counter()
    plans = []
    for spec in order(specs):
        m = Mover(spec, specs, "archive", shape)
        m.create_archive(defaults=True)
        q = m.d.quote
        if spec.logic == "CONTRACT_MATURITY":
            contract = m.t(m.src_schema, spec.contract_table)
            where = (
                f"EXISTS (SELECT 1 FROM {contract} c WHERE c.{q('contractId')} = {q(spec.name)}.{q('contractId')} "
                f"AND c.{q('maturityDate')} < '{THRESHOLD}')"
            )
        else:
            where = f"{q(spec.date_column)} < '{THRESHOLD}'"
        for ch in m.children:
            where += (
                f" AND NOT EXISTS (SELECT 1 FROM {m.t(m.src_schema, ch.name)} ch "
                f"WHERE ch.{q('contractId')} = {q(spec.name)}.{q('contractId')})"
            )
        plans.append(
            {"source_db": m.src_schema, "archive_db": namespace(spec.source), "table": spec.name, "where": where}
        )
    return {"tables": plans, "ddl_seconds": time.perf_counter() - t0}
