"""SQLite: attached files stand in for schemas.

The archive connection ATTACHes every SQLite source file (as ``src_<alias>``)
and one archive namespace file per source database (as ``archive_<alias>``),
so a batch moves with INSERT ... SELECT + DELETE in one transaction. That
transaction is atomic across the files only in a rollback-journal mode
(DELETE/TRUNCATE with synchronous FULL, set in settings): WAL is not.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, OperationalError, connections, transaction

from archival.backends.base import (
    ArchiveIndex,
    Backend,
    Column,
    ForeignKey,
    InsertTarget,
    NotOnThisEngine,
    QueryTimeout,
    ReplicaLag,
    SchemaError,
    TableInfo,
    generic_type,
    namespace_for,
)

SQLITE_ENGINES = {"django.db.backends.sqlite3", "governance.db.sqlite_readonly"}


def source_attach_name(alias: str) -> str:
    return f"src_{alias}"


def namespace_file(archive_name: str, alias: str) -> Path:
    """The archive namespace file for one source database, beside the archive file."""
    archive = Path(str(archive_name).removeprefix("file:").split("?")[0])
    return archive.with_name(f"{archive.stem}__{alias.lower()}{archive.suffix or '.sqlite3'}")


def attach_namespaces(sender, connection, **kwargs) -> None:
    """connection_created hook: ATTACH sources and namespaces to the archive connection."""
    if connection.vendor != "sqlite" or connection.alias not in {
        "archive",
        "archive_readonly",
    }:
        return
    archive_name = connection.settings_dict["NAME"]
    if str(archive_name).startswith(":memory:") or "mode=memory" in str(archive_name):
        return
    try:
        _attach(connection, archive_name)
    except Exception:
        # A source file locked past the busy timeout: without its ATTACH the
        # connection is not the archive connection; the next use connects again.
        connection.connection.close()
        connection.connection = None
        raise


def _attach(connection, archive_name) -> None:
    readonly = connection.alias == "archive_readonly"

    cur = connection.connection.cursor()
    attached = {row[1] for row in cur.execute("PRAGMA database_list")}
    for alias in settings.SOURCE_DATABASES:
        ns = namespace_for(alias)
        path = namespace_file(archive_name, alias)
        if ns not in attached:
            if readonly:
                if path.exists():
                    cur.execute("ATTACH DATABASE ? AS " + _q(ns), [f"file:{path}?mode=ro"])
            else:
                cur.execute("ATTACH DATABASE ? AS " + _q(ns), [str(path)])
                cur.execute(f"PRAGMA {_q(ns)}.journal_mode=DELETE")
                cur.execute(f"PRAGMA {_q(ns)}.synchronous=FULL")
                cur.execute(f"PRAGMA {_q(ns)}.cache_size=-{settings.SQLITE_CACHE_KIB:d}")
        if readonly:
            continue
        src_settings = connections[alias].settings_dict
        # A streamed source is worked through its own connection; attaching it
        # here too would make every archive transaction lock its file.
        if src_settings["ENGINE"] not in SQLITE_ENGINES or alias in settings.ARCHIVAL["STREAMING_SOURCES"]:
            continue
        name = source_attach_name(alias)
        if name not in attached:
            cur.execute("ATTACH DATABASE ? AS " + _q(name), [str(src_settings["NAME"])])
            cur.execute(f"PRAGMA {_q(name)}.journal_mode=DELETE")
            cur.execute(f"PRAGMA {_q(name)}.synchronous=FULL")
            cur.execute(f"PRAGMA {_q(name)}.cache_size=-{settings.SQLITE_CACHE_KIB:d}")
    cur.close()


def use_wal_for_control(sender, connection, **kwargs) -> None:
    """connection_created hook: put the control database in WAL mode once.

    The mode is stored in the file, so only the first connection switches it;
    later connections only read it (switching needs an exclusive lock, which a
    busy control database would refuse at connect time).
    """
    if connection.vendor != "sqlite" or connection.alias != "default":
        return
    cur = connection.connection.cursor()
    try:
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cur.execute("PRAGMA journal_mode=WAL")
    finally:
        cur.close()


# Set only inside archival.disposal.triggers.allow_test_flush(): the test
# suite's flush may then empty the tables whose triggers refuse DELETE.
purge_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar("archival_purge_allowed", default=False)


def _purge_allowed_sql() -> int:
    return 1 if purge_allowed.get() else 0


def register_purge_guard(sender, connection, **kwargs) -> None:
    """connection_created hook: give SQLite connections archival_purge_allowed() (the DELETE triggers' WHEN)."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("archival_purge_allowed", 0, _purge_allowed_sql)


# How many SQLite virtual-machine instructions run between deadline checks of
# a time-limited query: small enough to stop within a millisecond or so,
# large enough to cost nothing.
PROGRESS_STEPS = 1000


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteBackend(Backend):
    vendor = "sqlite"

    def session_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        # SQLite waits for another connection's lock on its busy timeout, at
        # BEGIN IMMEDIATE for a batch and at the first read of a count: the
        # PRAGMA must precede them. (PRAGMA takes no parameters; the number
        # is an int from a validated setting.) SQLite has no statement
        # timeout: with the file locked for us, a statement only computes.
        return [(f"PRAGMA busy_timeout = {int(lock_timeout_ms)}", [])]

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list | None]]:
        return []

    def schema_exists(self, schema: str) -> bool:
        with self.connection.cursor() as cur:
            cur.execute("PRAGMA database_list")
            return schema in {row[1] for row in cur.fetchall()}

    def table_exists(self, schema: str, table: str) -> bool:
        if not self.schema_exists(schema):
            return False
        with self.connection.cursor() as cur:
            cur.execute(
                f"SELECT 1 FROM {self.quote(schema)}.sqlite_master WHERE type = 'table' AND name = %s",
                [table],
            )
            return cur.fetchone() is not None

    def estimated_rows(self, schema: str, table: str) -> int | None:
        # SQLite keeps no row statistics unless ANALYZE ran; the largest
        # rowid is one b-tree descent and, for tables that rarely lose rows
        # from the end, close to the count. WITHOUT ROWID tables have none.
        try:
            with self.connection.cursor() as cur:
                cur.execute(f"SELECT MAX(rowid) FROM {self.qualified(schema, table)}")
                row = cur.fetchone()
        except DatabaseError:
            return None
        return int(row[0] or 0) if row else None

    def describe(self, schema: str, table: str) -> TableInfo:
        with self.connection.cursor() as cur:
            # One catalog read answers "is the schema attached", "is it a
            # table (not a view)" and "which columns" (pragma_table_list:
            # SQLite 3.37+); the name compares exactly, as on the other engines.
            cur.execute(
                'SELECT p.name, p.type, p."notnull", p.pk FROM pragma_table_list(%s) t, '
                "pragma_table_info(t.name, t.schema) p "
                "WHERE t.schema = %s AND t.name = %s AND t.type = 'table' ORDER BY p.cid",
                [table, schema, table],
            )
            rows = cur.fetchall()
            if not rows:
                raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
            cur.execute(
                'SELECT "from", "table", "to" FROM pragma_foreign_key_list(%s, %s)',
                [table, schema],
            )
            fks = [ForeignKey(r[0], r[1], r[2]) for r in cur.fetchall() if r[2]]
        columns = []
        pk_pos = []
        for name, db_type, notnull, pk in rows:
            db_type = db_type or "TEXT"
            columns.append(Column(name, db_type, generic_type(db_type), not notnull, _size(db_type)))
            if pk:
                pk_pos.append((pk, name))
        pk_cols = [name for _, name in sorted(pk_pos)]
        return TableInfo(schema, table, columns, pk_cols, fks)

    def insertable_columns(self, schema: str, table: str) -> InsertTarget:
        # table_xinfo lists generated columns too (hidden 2: VIRTUAL, 3:
        # STORED); table_info, which ``describe`` reads, leaves them out, so
        # they never reach an archive table and are derived again here.
        with self.connection.cursor() as cur:
            cur.execute("SELECT name, hidden FROM pragma_table_xinfo(%s, %s) ORDER BY cid", [table, schema])
            rows = cur.fetchall()
        if not rows:
            raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
        return InsertTarget(
            columns=[name for name, hidden in rows if not hidden],
            derived=tuple(name for name, hidden in rows if hidden),
        )

    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        with self.connection.cursor() as cur:
            cur.execute(
                f'SELECT m.name, f."from", f."to" FROM {self.quote(schema)}.sqlite_master m, '
                'pragma_foreign_key_list(m.name, %s) f WHERE m.type = \'table\' AND f."table" = %s AND f."to" IS NOT NULL',
                [schema, table],
            )
            return [tuple(r) for r in cur.fetchall()]

    def add_years_sql(self, expr: str) -> str:
        # date(x, '+N years') turns 29 February into 1 March; clamp it back to
        # 28 February like PostgreSQL, MariaDB and SQL Server do. This runs for
        # every archived row, so a plain 'YYYY-MM-DD' text that is not 29
        # February costs one date(): for it date(x, '+N years') is the exact
        # answer. Anything else takes the full form on date(x): a time of day
        # (the modifier rounds 23:59:59.9995 up to the next day), an offset
        # (it moves the date), a Julian day number, and 29 February itself.
        day = f"date({expr})"
        shifted = f"date({day}, '+' || %s || ' years')"
        full = (
            f"(CASE WHEN substr({day}, 6, 5) = '02-29' "
            f"THEN date({shifted}, '-' || (strftime('%%m', {shifted}) = '03') || ' days') ELSE {shifted} END)"
        )
        plain = f"length({expr}) = 10 AND substr({expr}, 5, 1) = '-' AND substr({expr}, 6, 5) <> '02-29'"
        return f"(CASE WHEN {plain} THEN date({expr}, '+' || %s || ' years') ELSE {full} END)"

    def as_date_sql(self, expr: str) -> str:
        return f"date({expr})"

    def readable_date_sql(self, expr: str, column: Column) -> str | None:
        # Any column holds any value, whatever its declared type. A date is a
        # value date() reads as the very date its first ten characters write:
        # '+0 days' normalizes 2021-02-30 to 2021-03-02 (date() alone returns
        # it as is before SQLite 3.42), and ' 2021-01-01', '12/31/2026',
        # 20210105 (a Julian day number to date()) or '2021-01-01xyz' do not
        # read back as themselves. One date() call a row: this runs for every
        # row Mark counts and every row a batch moves. IFNULL keeps it false,
        # not NULL, for NULL and for what date() cannot read.
        return f"IFNULL(date({expr}, '+0 days') = substr({expr}, 1, 10), 0)"

    def date_value_sql(self, expr: str, column: Column) -> str:
        # date() and the retention arithmetic read a readable value as it is.
        return expr

    def date_before_sql(self, expr: str, column: Column) -> str:
        # The plain comparison stays first, so an index on the column serves it.
        return f"({self.date_maybe_before_sql(expr, column)} AND {self.readable_date_sql(expr, column)})"

    def date_maybe_before_sql(self, expr: str, column: Column) -> str:
        # The comparison without the readable-date test: that test's date()
        # runs once per row a statement reads, and it made the batch's bound
        # about 30% slower than the ceiling's (CPU on 1,000,000 Position rows:
        # 8.7-9.7 ms against 6.5-7.2; bench/batch_statements.py,
        # bench/RESULTS.md). The INSERT and the DELETE still test every row.
        return f"{expr} < %s"

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"({left} IS {right})"

    generic_types = {
        "int": "INTEGER",
        "bigint": "BIGINT",
        "float": "REAL",
        "bool": "BOOL",
        "date": "DATE",
        "datetime": "DATETIME",
        "binary": "BLOB",
    }

    def timestamp_type(self) -> str:
        return "DATETIME"

    def create_namespace(self, namespace: str) -> None:
        # Namespaces are attached at connect time (attach_namespaces).
        if not self.schema_exists(namespace):
            raise SchemaError(f"archive namespace {namespace} is not attached to {self.alias}")

    # -- engines and connections ---------------------------------------------
    def same_server(self, archive: Backend) -> bool:
        # The archive connection attaches every SQLite source file.
        return self.same_engine(archive)

    def source_table_sql(self, source: Backend, source_db: str, schema: str, table: str) -> str:
        return self.qualified(source_attach_name(source_db), table)

    def param(self, value):
        # Dates, timestamps and decimals are stored as text; a date compared
        # with text compares as text, so it goes in as the same ISO text.
        if isinstance(value, dt.datetime):
            return value.isoformat(sep=" ")
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        return value

    @contextmanager
    def write_transaction(self) -> Iterator[None]:
        # The aliases use deferred transactions, so an idle outer transaction
        # (a test case, a request) locks nothing. A batch, though, reads then
        # writes several attached files; a deferred transaction would have to
        # upgrade its read lock, and SQLite refuses an upgrade at once (no
        # busy wait) when another writer holds the file. BEGIN IMMEDIATE
        # takes the write locks at the start and waits on the busy timeout.
        conn = self.connection
        if conn.in_atomic_block:
            with transaction.atomic(using=self.alias):
                yield
            return
        conn.ensure_connection()  # transaction_mode is (re)set when connecting
        previous = conn.transaction_mode
        conn.transaction_mode = "IMMEDIATE"
        try:
            with transaction.atomic(using=self.alias):
                conn.transaction_mode = previous
                yield
        finally:
            conn.transaction_mode = previous

    # -- moves ---------------------------------------------------------------
    def moves_through_procedures(self) -> bool:
        return False

    def moves_in_one_statement(self) -> bool:
        return False

    def transactional_ddl(self) -> bool:
        return True

    def lock_hint(self) -> str:
        return ""

    def select_sql(
        self, columns: str, body: str, params: list, *, limit: int | None = None, lock_alias: str | None = None
    ) -> tuple[str, list]:
        # No row locks: write_transaction (BEGIN IMMEDIATE) holds the file's
        # write lock, so no other writer changes the rows read.
        if limit is None:
            return f"SELECT {columns} {body}", list(params)
        return f"SELECT {columns} {body} LIMIT %s", [*params, limit]

    def join_sql(self, left: str, right: str, condition: str, *, pin_left: bool) -> tuple[str, str]:
        # CROSS JOIN is SQLite's way to fix the join order (the left table is
        # the outer loop); it takes no ON, so the condition goes in WHERE.
        return f"{left} {'CROSS JOIN' if pin_left else 'JOIN'} {right}", f"{condition} AND "

    def delete_sql(self, alias: str, from_sql: str) -> str:
        return f"DELETE FROM {from_sql}"

    def delete_joins_contract(self) -> bool:
        return False

    def start_locking_read(self, cursor) -> None:
        # The IMMEDIATE transaction already keeps every other writer out.
        return None

    def insert_rows(self, table: str, columns: list[str], rows: list[list]) -> None:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        with self.connection.cursor() as cur:
            cur.executemany(sql, rows)

    # -- archive tables --------------------------------------------------------
    def namespace_missing(self, namespace: str, source_db: str) -> str:
        return f"archive namespace {namespace} is not attached (is {source_db} in SOURCE_DATABASES?)"

    def archive_table_ddl(
        self, namespace: str, table: str, column_defs: list[str], indexes: list[ArchiveIndex]
    ) -> list[str]:
        return [
            f"CREATE TABLE {self.qualified(namespace, table)} ({', '.join(column_defs)})",
            *(self._create_index_sql(namespace, table, index) for index in indexes),
        ]

    def _create_index_sql(self, namespace: str, table: str, index: ArchiveIndex) -> str:
        q = self.quote
        # SQLite names the schema on the index, not on the table.
        return f"CREATE INDEX {q(namespace)}.{q(index.name)} ON {q(table)} ({', '.join(q(c) for c in index.columns)})"

    def archive_indexes(self, namespace: str, table: str) -> list[ArchiveIndex]:
        q = self.quote
        out = []
        with self.connection.cursor() as cur:
            cur.execute(f"PRAGMA {q(namespace)}.index_list({q(table)})")
            listed = cur.fetchall()
            for _seq, name, unique, origin, _partial in listed:
                cur.execute(f"PRAGMA {q(namespace)}.index_info({q(name)})")
                cols = tuple(row[2] for row in sorted(cur.fetchall()))
                # origin: c = CREATE INDEX, u = a UNIQUE constraint, pk = the PRIMARY KEY.
                out.append(ArchiveIndex(name, cols, "btree", origin == "pk", bool(unique), origin in ("u", "pk")))
            if not any(i.primary for i in out):
                # A single INTEGER PRIMARY KEY is the rowid itself: no index of its own to list.
                cur.execute(f"PRAGMA {q(namespace)}.table_info({q(table)})")
                pk = [row[1] for row in sorted(cur.fetchall(), key=lambda r: r[5]) if row[5]]
                if pk:
                    out.append(ArchiveIndex("rowid", tuple(pk), "btree", True, True, True))
        return sorted(out, key=lambda i: i.name)

    def reshape_archive_sql(
        self,
        namespace: str,
        table: str,
        *,
        drop: list[ArchiveIndex],
        create: list[ArchiveIndex],
        primary_key: tuple[ArchiveIndex, str] | None,
    ) -> list[str]:
        # A rowid table keeps a composite PRIMARY KEY in the same automatic
        # unique index as a UNIQUE constraint: an older table's key is left as
        # it is (changing it would copy the table for nothing).
        q = self.quote
        return [
            *(f"DROP INDEX {q(namespace)}.{q(index.name)}" for index in drop),
            *(self._create_index_sql(namespace, table, index) for index in create),
        ]

    def primary_key_note(self) -> str:
        return (
            "a UNIQUE key is kept: on a rowid table it is the same automatic unique index as a composite "
            "PRIMARY KEY, and SQLite can change a constraint only by copying the table"
        )

    def add_column_sql(self, qualified_table: str, column_def: str) -> str:
        return f"ALTER TABLE {qualified_table} ADD COLUMN {column_def}"

    # -- disposal --------------------------------------------------------------
    def key_text_sql(self, columns: list[tuple[str, str, int | None]]) -> tuple[str, list]:
        # Dates are stored as ISO text already.
        pieces, params = [], []
        for i, (col, generic, scale) in enumerate(columns):
            if i:
                pieces.append("%s")
                params.append("\t")
            if generic == "binary":
                pieces.append(f"lower(hex({col}))")
            elif generic == "bool":
                # Stored as 1/0.
                pieces.append(f"CASE WHEN {col} THEN 'true' ELSE 'false' END")
            elif generic == "datetime":
                # Stored as the text it was written with; isoformat separates with a space.
                pieces.append(f"replace(CAST({col} AS TEXT), 'T', ' ')")
            elif generic == "text":
                pieces.append(f"REPLACE(REPLACE(REPLACE(CAST({col} AS TEXT), %s, %s), %s, %s), %s, %s)")
                params += ["\\", "\\\\", "\t", "\\t", "\n", "\\n"]
            elif generic == "decimal" and scale is not None:
                # NUMERIC affinity keeps 12.50 as the REAL 12.5 and 7.00 as the
                # INTEGER 7: pad to the scale (an integer by text, exactly).
                pieces.append(
                    f"CASE typeof({col}) WHEN 'integer' THEN CAST({col} AS TEXT) || %s "
                    f"WHEN 'real' THEN printf(%s, {col}) ELSE CAST({col} AS TEXT) END"
                )
                params += ["." + "0" * scale if scale else "", f"%.{scale}f"]
            else:
                pieces.append(f"CAST({col} AS TEXT)")
        return " || ".join(pieces), params

    def text_cast_sql(self, expr: str) -> str:
        return f"CAST({expr} AS TEXT)"

    def refuse_delete_trigger_sql(self, table: str, name: str, message: str) -> list[str]:
        # archival_purge_allowed() exists only on this process's connections
        # (register_purge_guard): any other client's DELETE fails too.
        q = self.quote
        return [
            f"CREATE TRIGGER IF NOT EXISTS {q(name)} BEFORE DELETE ON {q(table)} "
            f"WHEN archival_purge_allowed() = 0 "
            f"BEGIN SELECT RAISE(ABORT, '{message}: DELETE refused'); END"
        ]

    def drop_trigger_sql(self, table: str, name: str, table_exists: bool) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {self.quote(name)}"]

    def draws_ids_under_head_lock(self) -> bool:
        return False

    # -- control-plane statements (governance.rowsql) ----------------------------
    def writes_returning(self) -> bool:
        return True

    def selects_updated_rows(self) -> bool:
        return False

    # -- search ----------------------------------------------------------------
    def table_names(self, schema: str) -> set[str]:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT name FROM {self.quote(schema)}.sqlite_master WHERE type = 'table'")
            return {row[0] for row in cur.fetchall()}

    def contains_sql(self, column: str) -> str:
        # SQLite's LIKE is case-insensitive already (ASCII).
        return f"{column} LIKE %s ESCAPE '\\'"

    @contextmanager
    def query_time_limit(self, timeout_ms: int) -> Iterator[None]:
        # SQLite has no statement timeout: a progress handler on the raw
        # connection interrupts the statement once the deadline has passed.
        connection = self.connection
        connection.ensure_connection()
        raw = connection.connection
        deadline = time.monotonic() + timeout_ms / 1000
        fired = False

        def interrupt_after_deadline() -> int:
            nonlocal fired
            if time.monotonic() > deadline:
                fired = True
                return 1  # non-zero: SQLite aborts the statement ("interrupted")
            return 0

        raw.set_progress_handler(interrupt_after_deadline, PROGRESS_STEPS)
        try:
            yield
        except OperationalError as exc:
            if fired:
                raise QueryTimeout(timeout_ms) from exc
            raise
        finally:
            raw.set_progress_handler(None, PROGRESS_STEPS)

    def replica_lag(self, cursor, *, on_primary: bool, replica: str) -> ReplicaLag:
        raise NotOnThisEngine("SQLite has no replicas to watch: a file has one writer and no standby")

    def create_readonly_role(
        self, role: str, password: str | None, namespaces: list[str], tables: list[str]
    ) -> tuple[bool, list[str]]:
        raise NotOnThisEngine(
            "SQLite has no roles: archive_readonly opens the archive files read-only (mode=ro), "
            "and file permissions decide who reads them"
        )


def _size(db_type: str) -> tuple[int | None, int | None]:
    if "(" not in db_type:
        return (None, None)
    inner = db_type[db_type.index("(") + 1 : db_type.rindex(")")]
    parts = [p.strip() for p in inner.split(",")]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        return (None, None)
    return (nums[0], nums[1] if len(nums) > 1 else None)
