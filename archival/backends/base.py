"""What every database backend provides to the engine.

A backend is bound to one Django connection alias. It knows how to read the
live catalog (tables, columns, primary and foreign keys), how to quote
identifiers, and how to write the few engine-specific fragments (date
arithmetic for retention, null-safe equality, the same-server move). Every
identifier it quotes has been checked against the live catalog first; values
always travel as parameters.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connections


class GovernanceSchemaConflict(Exception):
    """The archive's own tables cannot be brought into their schema without an operator."""


class SchemaError(Exception):
    """The live schema does not match what a config or the archive expects."""


class NotOnThisEngine(Exception):
    """The engine provides this some other way (the message says which)."""


class QueryTimeout(Exception):
    """A query ran past its time limit and was stopped by the database."""

    def __init__(self, timeout_ms: int):
        self.timeout_ms = timeout_ms
        super().__init__(f"the query was stopped after {timeout_ms} ms")


def namespace_for(alias: str) -> str:
    """The archive namespace (schema, database or attached file) of one source database alias."""
    return f"{settings.ARCHIVAL['NAMESPACE_PREFIX']}{alias.lower()}"


@dataclass(frozen=True)
class ReplicaLag:
    """How far a replica is behind, as its database reports it.

    ``seconds`` None: the lag is unknown (replication broken or stopped, the
    replica not connected, or not readable with our privileges), which the
    engine treats as over any bound. ``queue_kb``: log not yet sent or not
    yet replayed, where the engine reports it (SQL Server); None elsewhere.
    """

    seconds: float | None
    detail: str
    queue_kb: int | None = None


@dataclass(frozen=True)
class Column:
    name: str
    db_type: str  # the type as the engine declares it, e.g. numeric(18,6)
    generic: str  # engine-neutral family: int, bigint, decimal, float, text, date, datetime, bool, binary
    nullable: bool
    size: tuple[int | None, int | None] = (None, None)  # length or (precision, scale)


@dataclass(frozen=True)
class ForeignKey:
    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)
class ArchiveIndex:
    """One index of an archive table, as ``archive_tables`` plans it or as the catalog shows it.

    ``method``: ``btree``, or ``brin`` (PostgreSQL's block-range summary).
    ``primary``/``unique``: the source-key index (invariant 2). ``constraint``:
    it belongs to a constraint (dropped with ALTER TABLE, not DROP INDEX).
    """

    name: str
    columns: tuple[str, ...]
    method: str = "btree"
    primary: bool = False
    unique: bool = False
    constraint: bool = False


@dataclass
class TableInfo:
    schema: str
    name: str
    columns: list[Column]
    primary_key: list[str]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    # (child table, child column, this table's column) of the single-column
    # foreign keys naming this table, when the backend read them with the
    # columns (None: ask ``referencing``).
    referenced_by: list[tuple[str, str, str]] | None = None

    def column(self, name: str) -> Column | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


# The families whose values a server engine keeps as dates (nothing else fits in them).
DATE_FAMILIES = frozenset({"date", "datetime"})


def generic_type(db_type: str) -> str:
    """Map a declared type to an engine-neutral family (for cross-engine archives)."""
    t = db_type.lower()
    if "bigint" in t or t in {"int8", "bigserial"}:
        return "bigint"
    if "int" in t or t in {"serial", "smallint", "tinyint"}:
        return "int"
    if t.startswith(("numeric", "decimal", "money")):
        return "decimal"
    if t.startswith(("real", "double", "float")):
        return "float"
    if t.startswith(("bool", "bit")):
        return "bool"
    if t.startswith("date") and "time" not in t:
        return "date"
    if "timestamp" in t or "datetime" in t or t.startswith("time"):
        return "datetime"
    if "blob" in t or "bytea" in t or "binary" in t:
        return "binary"
    return "text"


# A text value read as a date: YYYY-MM-DD with a real month and day, then
# nothing or a time of day (the date is the first ten characters).
ISO_DATE_PATTERN = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([ T][0-9]{2}:[0-9]{2}.*)?$"


def day_in_month_sql(expr: str, to_int) -> str:
    """SQL true when the day of ``expr`` (text already matching ISO_DATE_PATTERN) exists in its month.

    ``to_int`` turns an SQL text expression into an integer one; only digits
    reach it, so no conversion can fail. Plain arithmetic, no date function:
    those raise (PostgreSQL) or warn, which strict mode turns into errors
    inside DML (MariaDB), on the very values this checks.
    """
    year, month, day = (to_int(f"SUBSTRING({expr}, {start}, {n})") for start, n in ((1, 4), (6, 2), (9, 2)))
    leap = f"((MOD({year}, 4) = 0 AND MOD({year}, 100) <> 0) OR MOD({year}, 400) = 0)"
    return (
        f"{day} <= CASE WHEN {month} IN (4, 6, 9, 11) THEN 30 "
        f"WHEN {month} = 2 THEN CASE WHEN {leap} THEN 29 ELSE 28 END ELSE 31 END"
    )


@dataclass(frozen=True)
class InsertTarget:
    """How a restore writes rows back into a source table (``Backend.insertable_columns``)."""

    # The columns an INSERT may name, in table order: generated, computed and
    # rowversion columns are left out (the database derives them again).
    columns: list[str]
    # Written between the column list and SELECT/VALUES: PostgreSQL's
    # OVERRIDING SYSTEM VALUE for a GENERATED ALWAYS identity; empty elsewhere.
    overriding: str = ""
    # Columns the engine computes that the INSERT leaves out (for the docs and the preview).
    derived: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreBatchCounts:
    """What one same-server restore batch did (``Backend.restore_batch``)."""

    restored: int  # rows inserted into the source
    skipped_identical: int  # rows the source already had with identical values
    deleted: int  # rows deleted from the archive (restored + skipped_identical)
    held: int  # of those, rows an active hold covered
    key_high: list | None  # the batch's last key (None: nothing was left to restore)


@dataclass(frozen=True)
class DisposedRange:
    """What one disposal delete did in its approved key range (``Backend.dispose_batch``).

    The caller reconciles: ``len(keys) + expired_left == expired_before``, or
    something else changed the range meanwhile and the batch rolls back.
    """

    keys: list[tuple]  # the keys deleted
    expired_before: int  # expired rows of the range before the delete
    expired_left: int  # expired rows of the range the delete left (the held ones)


@dataclass(frozen=True)
class MarkResult:
    """What a procedure's Mark counted for one table (``Backend.mark_table``)."""

    eligible: int
    null_dates: int
    key_low: list[str] | None
    key_high: list[str] | None


@dataclass(frozen=True)
class BatchResult:
    """What one archive batch moved by a procedure did (``Backend.archive_batch``)."""

    rows_moved: int
    rows_skipped: int
    key_high: list[str] | None  # None: nothing left after the cursor

    @property
    def done(self) -> bool:
        return self.key_high is None


class Backend(ABC):
    """Catalog reads and SQL fragments for one connection alias."""

    vendor = ""
    quote_char = '"'

    # A connection set explicitly (the SQL Server contract tests hand in a
    # recording stand-in) instead of the calling thread's.
    _connection = None

    def __init__(self, alias: str):
        self.alias = alias

    @property
    def connection(self):
        # The calling thread's connection: a run's helper thread
        # (archival.engine.pipeline) works on the same table specs with
        # connections of its own.
        return self._connection or connections[self.alias]

    @connection.setter
    def connection(self, value) -> None:
        self._connection = value

    # -- identifiers ---------------------------------------------------------
    def quote(self, name: str) -> str:
        q = self.quote_char
        return f"{q}{name.replace(q, q + q)}{q}"

    def qualified(self, schema: str, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}"

    # -- row counts ----------------------------------------------------------
    def execute_counted(self, cursor, sql: str, params) -> int:
        """Run one INSERT, UPDATE or DELETE on ``cursor`` and return how many rows it changed.

        The one way the engine reads a row count it decides on (a lease won or
        lost, a guard met, the audit chain's head moved, a batch reconciled).
        """
        cursor.execute(sql, params)
        return cursor.rowcount

    # -- catalog -------------------------------------------------------------
    def _exists(self, sql: str, params: list) -> bool:
        """True when a catalog query returns a row."""
        with self.connection.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone() is not None

    @abstractmethod
    def table_exists(self, schema: str, table: str) -> bool:
        """True when ``schema`` holds a base table (not a view) named exactly ``table``."""

    @abstractmethod
    def describe(self, schema: str, table: str) -> TableInfo:
        """The table's columns in order, primary key and single-column foreign keys, from the live catalog.

        Raises SchemaError when there is no such table (one catalog read
        answers "does it exist" too).
        """

    def describe_columns(self, schema: str, table: str) -> TableInfo:
        """``describe`` without the foreign keys (where a backend reads them separately, it skips them)."""
        return self.describe(schema, table)

    @abstractmethod
    def schema_exists(self, schema: str) -> bool:
        """True when the namespace ``schema`` (schema, database or attached file) exists on this connection."""

    @abstractmethod
    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        """Single-column foreign keys pointing at ``table``: (child table, child column, our column)."""
        ...

    def referencing_tables(self, schema: str, tables: Sequence[str]) -> dict[str, list[tuple[str, str, str]]]:
        """``referencing`` for several tables of ``schema``: table -> its foreign keys.

        One catalog read where the backend has one (a run orders all its
        tables at its start); here, one per table.
        """
        return {table: self.referencing(schema, table) for table in tables}

    def estimated_rows(self, schema: str, table: str) -> int | None:
        """The catalog's row estimate for an existing table, without a scan; None where there is none.

        A scheduling hint only (the dispatcher starts the longest work first),
        never a count: the engine counts what it moves.
        """
        return None

    # Readers never wait for writers (MVCC snapshots), and two sessions can
    # write different rows at once: a run may read and wrap up one table on a
    # second connection while another table's batches move
    # (archival.engine.pipeline). Not SQLite (one writer per file, and a
    # reader holds the writer's commit back in rollback-journal mode) nor
    # SQL Server under its default locking READ COMMITTED.
    reads_beside_writes = False

    # Session settings (``SET LOCAL`` statements, for one transaction) for a
    # scan of a table whose rows were just deleted in bulk: see the
    # PostgreSQL backend. None elsewhere.
    settings_after_bulk_delete: tuple[str, ...] = ()

    # The largest batch this engine takes (None: the config field's own limit).
    max_batch_size: int | None = None

    @property
    def default_batch_size(self) -> int:
        """Rows per batch when a config names none."""
        return settings.ARCHIVAL["DEFAULT_BATCH_SIZE"]

    # Whether the runtime login creates and extends archive tables itself.
    # False where a DBA provisions them and the login has no DDL right: a
    # missing or outdated archive table then fails its table with
    # ``provisioning_hint``.
    creates_archive_tables = True

    def provisioning_hint(self, config) -> str:
        """What a DBA runs to provision the archive table of ``config`` (where tables are provisioned)."""
        return ""

    # -- config checks ---------------------------------------------------------
    def key_column_error(self, col: Column) -> str | None:
        """Why ``col`` (of a source table on this engine) cannot be a key column of keyset batches; None: it can."""
        return None

    def name_errors(self, config, info: TableInfo) -> dict[str, str]:
        """Config field -> why a name this archive would build from ``config`` and its source ``info`` is refused."""
        return {}

    # -- disposal ------------------------------------------------------------
    def lock_holds(self) -> None:
        """Serialize hold changes with disposal for the rest of the archive transaction.

        Called by ``archival.disposal.tables.take_archive_lock`` after it locked
        the archive lock row, which is the hold lock itself here: nothing more.
        """
        return None

    def dispose_batch(self, table, *, key_low, key_high, cutoff, holds_at) -> DisposedRange:
        """Delete the rows of ``table`` (an ArchiveTable) in [key_low, key_high] whose
        ``retention_until`` is before ``cutoff`` and that no hold in force on
        ``holds_at`` covers (``table.unheld_sql``); return the deleted keys and
        the range's expired rows counted before and after.

        Runs in the caller's archive transaction, after ``take_archive_lock``: the
        hold check is part of the delete, under the lock that placing a hold takes.
        Here in three statements: the count, the delete, the count again; the
        counts do not evaluate the holds (the delete is the one statement that does).
        """
        target, alias = self.dispose_target(table)
        rng, rng_params = table.range_sql(key_low, key_high, alias)
        unheld_sql, unheld_params = table.unheld_sql(holds_at, alias)
        count_sql, count_params = table.expired_in_range_count_sql(key_low, key_high, cutoff)
        with self.connection.cursor() as cur:
            cur.execute(count_sql, count_params)
            before = int(cur.fetchone()[0] or 0)
            cur.execute(
                f"DELETE FROM {target} WHERE {rng} AND {table.col('retention_until', alias)} < %s "
                f"AND {unheld_sql} RETURNING {', '.join(self.quote(c) for c in table.pk)}",
                [*rng_params, cutoff, *unheld_params],
            )
            keys = [tuple(row) for row in cur.fetchall()]
            cur.execute(count_sql, count_params)
            left = int(cur.fetchone()[0] or 0)
        return DisposedRange(keys, before, left)

    def dispose_target(self, table) -> tuple[str, str]:
        """The disposal DELETE's target and the name its conditions give the row (``table.qualified AS a``, ``a``)."""
        return f"{table.qualified} AS a", "a"

    # -- restore -------------------------------------------------------------
    def insertable_columns(self, schema: str, table: str) -> InsertTarget:
        """The columns a restore INSERT writes into ``schema``.``table`` (a source table), from the live catalog.

        Generated and computed columns are left out; where the engine refuses
        an explicit value for an identity column unless told, ``overriding``
        tells it. Every engine a restore writes to through the engine's SQL
        provides it (SQL Server's procedure builds its own list).
        """
        raise NotImplementedError(f"restoring into {self.vendor or 'this engine'} is done by the engine's procedures")

    def restore_batch(
        self, *, request_id: int, config, batch_no: int, key_after: list | None, batch_size: int, selection: dict
    ) -> RestoreBatchCounts:
        """Restore one same-server batch in one transaction (engines that ``moves_through_procedures``).

        The next ``batch_size`` selected archive rows after ``key_after``:
        conflict check, INSERT into the source, DELETE from the archive, the
        RestoreLedger row, reconciliation, commit (docs/restore.md).
        """
        raise NotImplementedError(f"restore batches on {self.vendor or 'this engine'} are moved by the engine's SQL")

    # -- bounded waits -------------------------------------------------------
    # Every statement the engine runs in a batch or a count is bounded: a lock
    # wait by ``lock_timeout_ms``, the statement by ``statement_timeout_ms``
    # (settings ARCHIVAL_LOCK_TIMEOUT_MS and ARCHIVAL["STATEMENT_TIMEOUT_MS"]).
    # A wait that runs out raises the engine's lock-timeout error (see
    # archival.retry.is_wait_timeout), its transaction rolls back, and the
    # batch is retried smaller or the table left waiting. The statements are
    # (SQL, parameters) pairs; the numbers come from validated settings.
    @abstractmethod
    def session_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        """Statements for the connection before its transaction begins (where the wait happens at BEGIN)."""
        ...

    @abstractmethod
    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list | None]]:
        """Statements to run first inside the transaction (limits that last for that transaction only)."""
        ...

    # -- SQL fragments -------------------------------------------------------
    @abstractmethod
    def add_years_sql(self, expr: str) -> str:
        """SQL adding a parameter number of calendar years to a date, 29 Feb clamped to 28 Feb."""
        ...

    def as_date_sql(self, expr: str) -> str:
        """``expr`` (a date or timestamp) as a date."""
        return f"CAST({expr} AS DATE)"

    # -- dates that may not be dates -------------------------------------------
    # A reference column (a table's date column, a contract's maturity) of a
    # text type, or any column on SQLite, can hold values that are not dates
    # ('12/31/2026', '2021-02-30', 20210105). Such a value is never eligible:
    # compared as text it would be, and its row would be archived without a
    # reference date, out of disposal's reach. The fragments take the column's
    # catalog entry: a DATE column of a server engine holds nothing else, and
    # checking it anyway would cost the column's index.

    @abstractmethod
    def readable_date_sql(self, expr: str, column: Column) -> str | None:
        """SQL that is true when ``expr`` (a non-NULL value of ``column``) is a calendar date, false
        otherwise: never NULL, never an error. None when ``column``'s type admits nothing but dates."""
        ...

    def date_value_sql(self, expr: str, column: Column) -> str:
        """The date of a value the statement has already found readable (``readable_date_sql``)."""
        if column.generic in DATE_FAMILIES:
            return expr
        return self.as_date_sql(f"SUBSTRING({expr}, 1, 10)")

    def date_before_sql(self, expr: str, column: Column) -> str:
        """SQL true when ``expr`` holds a readable date before the one ``%s`` parameter; false for
        NULL, a later date or a value that is not a date (never NULL: it may stand under NOT)."""
        check = self.readable_date_sql(expr, column)
        if check is None:
            return f"({expr} IS NOT NULL AND {expr} < %s)"
        # CASE, not AND: the server may evaluate AND's operands in any order,
        # and the conversion of a value that is not a date would raise.
        return f"(CASE WHEN {check} THEN {self.date_value_sql(expr, column)} < %s ELSE 1 = 0 END)"

    def date_maybe_before_sql(self, expr: str, column: Column) -> str:
        """SQL true at least wherever ``date_before_sql`` is (it may be true for more rows), for WHERE only.

        What a batch's bound selects its candidates with: the statements
        that then move the batch test every row with ``date_before_sql``. A
        backend whose exact test costs more than a plain comparison per row
        answers with the comparison alone.
        """
        return self.date_before_sql(expr, column)

    def unreadable_date_sql(self, expr: str, column: Column) -> str | None:
        """SQL true when ``expr`` holds a value that is not a date; None when ``column`` cannot hold one."""
        check = self.readable_date_sql(expr, column)
        return None if check is None else f"({expr} IS NOT NULL AND NOT {check})"

    def null_safe_equal(self, left: str, right: str) -> str:
        """True when ``left`` equals ``right`` or both are NULL (never NULL itself)."""
        return f"({left} IS NOT DISTINCT FROM {right})"

    def archive_type(self, col: Column, source: Backend) -> str:
        """Column type for an archive table created from a column of ``source``: its own type on the same engine."""
        if self.same_engine(source):
            return col.db_type
        return self.type_for_generic(col)

    # Archive column types for columns read from another engine, by family.
    generic_types: dict[str, str] = {}
    decimal_type = "NUMERIC({p},{s})"
    decimal_fallback = "NUMERIC"
    text_fallback = "TEXT"

    def type_for_generic(self, col: Column) -> str:
        """Archive column type for a column read from another engine, by its generic family and size."""
        if col.generic == "decimal":
            p, s = col.size
            return self.decimal_type.format(p=p, s=s or 0) if p else self.decimal_fallback
        return self.generic_types.get(col.generic, self.text_fallback)

    @abstractmethod
    def timestamp_type(self) -> str:
        """Column type of an archive table's ``archived_at``: a timestamp keeping the time zone's instant."""

    @abstractmethod
    def create_namespace(self, namespace: str) -> None:
        """Create the archive namespace if it is missing (where ``namespace_missing`` is empty).

        Raises SchemaError where the engine cannot create it and it is missing.
        """

    def limit_sql(self, select_sql: str, limit_param: str) -> str:
        """``select_sql`` keeping its first ``limit_param`` rows (a placeholder or a literal)."""
        return f"{select_sql} LIMIT {limit_param}"

    # -- engines and connections ---------------------------------------------
    def same_engine(self, other: Backend) -> bool:
        """True when ``other`` runs on the same database engine (column types carry over as declared)."""
        return self.vendor == other.vendor

    def _same_host(self, other: Backend) -> bool:
        mine, theirs = self.connection.settings_dict, other.connection.settings_dict
        return (mine.get("HOST") or "", str(mine.get("PORT") or "")) == (
            theirs.get("HOST") or "",
            str(theirs.get("PORT") or ""),
        )

    @abstractmethod
    def same_server(self, archive: Backend) -> bool:
        """True when ``archive``'s connection reaches this source's tables, so one transaction moves a batch.

        Called on the source's backend. False for another engine, and for a
        server (or, where schemas do not span databases, a database) other
        than the archive's: such a table is streamed.
        """

    @abstractmethod
    def source_table_sql(self, source: Backend, source_db: str, schema: str, table: str) -> str:
        """A source table's quoted name as this (the archive's) connection reaches it.

        Called only when this connection is not ``source``'s own: the name
        under which the same-server move reads and deletes the source's rows
        (an attached file, another database on the server, ...).
        """

    @abstractmethod
    def param(self, value):
        """``value`` (a date, datetime, Decimal or plain value) as this engine's driver takes it as a parameter.

        Compared or stored by the database exactly as the engine's own
        columns hold such values (SQLite keeps dates as ISO text).
        """

    @abstractmethod
    def write_transaction(self) -> AbstractContextManager[None]:
        """A transaction on this alias that will write, its write locks taken as early as the engine allows.

        Inside an open transaction the block is a savepoint of it.
        """

    # -- moves ---------------------------------------------------------------
    @abstractmethod
    def moves_through_procedures(self) -> bool:
        """True when a same-server batch is moved by the engine's stored procedures, not by the engine's SQL."""

    @abstractmethod
    def moves_in_one_statement(self) -> bool:
        """True when a same-server batch moves in the single statement of ``move_statement_sql``.

        Only backends answering True provide ``move_statement_sql``; the
        others move with ``INSERT ... SELECT`` then ``DELETE``.
        """

    def move_statement_sql(
        self,
        *,
        source: str,
        batch_from: str,
        key: list[str],
        reference: str,
        columns: list[str],
        archive: str,
        archive_columns: str,
    ) -> str:
        """One statement moving a same-server batch (engines that ``moves_in_one_statement``)."""
        raise NotImplementedError(f"{self.vendor or 'this engine'} moves a batch with INSERT ... SELECT, then DELETE")

    def mark_table(
        self,
        *,
        source_alias: str,
        schema_name: str,
        table_name: str,
        threshold: dt.date,
        child_thresholds: dict[str, dt.date] | None = None,
    ) -> MarkResult:
        """Mark's counts for one table in a procedure (engines that ``moves_through_procedures``)."""
        raise NotImplementedError(f"Mark on {self.vendor or 'this engine'} counts with the engine's SQL")

    def archive_batch(
        self,
        *,
        run_id: int,
        config_id: int,
        source_alias: str,
        schema_name: str,
        table_name: str,
        threshold: dt.date,
        years_retention: int,
        batch_size: int,
        batch_no: int,
        key_after: list | None,
    ) -> BatchResult:
        """One archive batch moved by a procedure (engines that ``moves_through_procedures``)."""
        raise NotImplementedError(f"archive batches on {self.vendor or 'this engine'} are moved by the engine's SQL")

    @abstractmethod
    def transactional_ddl(self) -> bool:
        """True when CREATE TABLE and CREATE INDEX run inside a transaction and roll back with it."""

    @abstractmethod
    def lock_hint(self) -> str:
        """Table hint written after a table's alias in a locking read (empty where locks are not hints)."""

    @abstractmethod
    def select_sql(
        self, columns: str, body: str, params: list, *, limit: int | None = None, lock_alias: str | None = None
    ) -> tuple[str, list]:
        """``SELECT columns body`` keeping the first ``limit`` rows of the order ``body`` ends with; SQL and parameters.

        ``body`` is ``FROM ... WHERE ... ORDER BY ...`` with ``params``.
        ``lock_alias`` names the table alias whose rows stay locked against
        writers until the transaction ends (where the engine locks through
        table hints, ``lock_hint`` in ``body`` does it; where it locks the
        whole file, ``write_transaction`` did).
        """

    @abstractmethod
    def join_sql(self, left: str, right: str, condition: str, *, pin_left: bool) -> tuple[str, str]:
        """An inner join of ``right`` to ``left`` on ``condition``: (FROM fragment, condition to put in WHERE).

        The second part is empty or ends with `` AND ``: where the engine
        pins a join order only without ON, the condition moves to WHERE.
        ``pin_left`` makes ``left`` the outer loop, where the planner would
        otherwise drive the join from ``right``'s index (see
        ``archival.engine.spec.TableSpec.from_clause``).
        """

    @abstractmethod
    def delete_sql(self, alias: str, from_sql: str) -> str:
        """The head of a DELETE of the rows of table alias ``alias`` from ``from_sql`` (``table AS alias``).

        ``from_sql`` may be a join only where ``delete_joins_contract`` is True.
        """

    @abstractmethod
    def delete_joins_contract(self) -> bool:
        """True when the same-server DELETE of a contract table's batch joins the contract table.

        Where the planner turns the contract's EXISTS into a semi-join driven
        from the contract's date index (a scan of every eligible row per
        batch), a join with the source pinned first range-scans the key.
        """

    @abstractmethod
    def start_locking_read(self, cursor) -> None:
        """Called first in the source transaction of a streamed batch (read, lock, copy elsewhere, delete).

        Sets what makes the later range DELETE see exactly the rows the
        locking read returned.
        """

    @abstractmethod
    def insert_rows(self, table: str, columns: list[str], rows: list[list]) -> None:
        """INSERT ``rows`` (parameters in the order of ``columns``, quoted) into ``table``, in few round trips.

        A duplicate key raises IntegrityError and inserts none of them (in
        the caller's transaction).
        """

    # -- archive tables --------------------------------------------------------
    @abstractmethod
    def namespace_missing(self, namespace: str, source_db: str) -> str:
        """Why a missing archive namespace cannot be created by ``create_namespace``; empty where it can."""

    @abstractmethod
    def archive_table_ddl(
        self, namespace: str, table: str, column_defs: list[str], indexes: list[ArchiveIndex]
    ) -> list[str]:
        """CREATE TABLE ``namespace``.``table`` with ``column_defs`` and its secondary ``indexes``.

        As few statements as the engine allows: where every DDL statement
        commits on its own, one.
        """

    @abstractmethod
    def archive_indexes(self, namespace: str, table: str) -> list[ArchiveIndex]:
        """The indexes of an archive table as the live catalog shows them, the key's included."""

    @abstractmethod
    def reshape_archive_sql(
        self,
        namespace: str,
        table: str,
        *,
        drop: list[ArchiveIndex],
        create: list[ArchiveIndex],
        primary_key: tuple[ArchiveIndex, str] | None,
    ) -> list[str]:
        """DDL bringing an archive table to its shape: ``drop`` and ``create`` secondary indexes and,
        with ``primary_key`` (the UNIQUE key index, the constraint name to give), make the source key
        the PRIMARY KEY. Duplicate refusal (invariant 2) must hold at every instant: the key is
        replaced in one statement, or in one transaction where DDL is transactional.
        """

    def primary_key_note(self) -> str:
        """What making the source key the PRIMARY KEY costs on this engine (for the reshape report)."""
        return ""

    # Where a DBA's script provisions archive tables, the names it gives each
    # index (by role: retention, refdate, contract, run) and the indexes it
    # makes beyond the engine's shape, (role, columns). Empty: the engine's
    # own names (archive_tables).
    provisioned_index_names: dict[str, str] = {}
    provisioned_extra_indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @abstractmethod
    def add_column_sql(self, qualified_table: str, column_def: str) -> str:
        """ALTER TABLE adding one column (``column_def``: quoted name, type, nullability)."""

    # -- disposal --------------------------------------------------------------
    @abstractmethod
    def key_text_sql(self, columns: list[tuple[str, str, int | None]]) -> tuple[str, list]:
        """SQL (and its parameters) of a row's canonical key text (``archival.rowkeys``).

        ``columns``: each key column's SQL expression, its generic type and its
        decimal scale (``rowkeys.scale_of``). A dialect's form of
        ``rowkeys.key_text``: the text must equal
        ``rowkeys.key_text(values, generics, scales)`` of the values read back, so a
        KEYS hold matches the rows it names (tests/test_rowkeys.py checks
        every key type on a real table).
        """

    @abstractmethod
    def text_cast_sql(self, expr: str) -> str:
        """``expr`` cast to the engine's unbounded text type (compared with a text column)."""

    def prepare_governance_schema(self, schema: str, tables: list[str], own_apps: list[str]) -> list[str]:
        """Before ``migrate`` on the archive: give the archive's own tables their schema; returns the tables moved.

        Only where the archive may share a database with sources (PostgreSQL,
        whose archive connection's search_path is ``schema`` alone). Elsewhere
        the archive is a database or file of its own: nothing to do.
        """
        return []

    @abstractmethod
    def refuse_delete_trigger_sql(self, table: str, name: str, message: str) -> list[str]:
        """Statements (re)creating trigger ``name`` that refuses every DELETE on ``table`` with ``message``.

        Idempotent. Empty where the engine's protection is installed by the
        DBA's scripts instead of the migration.
        """

    @abstractmethod
    def drop_trigger_sql(self, table: str, name: str, table_exists: bool) -> list[str]:
        """Statements dropping trigger ``name`` of ``table`` if it exists (``table_exists``: is the table there)."""

    @abstractmethod
    def draws_ids_under_head_lock(self) -> bool:
        """True when one statement takes the audit chain head's lock and draws the next event's id.

        Only backends answering True provide ``take_chain_head_sql`` and
        ``insert_then_sql`` (governance.audit_chain appends an event in two
        statements with them); the others lock the head with SELECT ... FOR
        UPDATE and let the INSERT assign the id (four statements).
        """

    def take_chain_head_sql(
        self, *, head_table: str, name: str, head_hash: str, last_event_id: str, head_id: str, guard_sql: str | None
    ) -> str:
        """One statement locking the audit chain head and drawing the next event id (``draws_ids_under_head_lock``)."""
        raise NotImplementedError(
            f"{self.vendor or 'this engine'} locks the audit chain head with SELECT ... FOR UPDATE"
        )

    def insert_then_sql(self, insert_sql: str, then_sql: str) -> str:
        """One statement running ``insert_sql``, then ``then_sql`` (engines that ``draws_ids_under_head_lock``)."""
        raise NotImplementedError(f"{self.vendor or 'this engine'} appends an audit event in separate statements")

    # -- control-plane statements (governance.rowsql) ----------------------------
    @abstractmethod
    def writes_returning(self) -> bool:
        """True when governance.rowsql may write INSERT ... RETURNING and SELECT ... FOR UPDATE itself.

        (Where the driver can return columns from an INSERT too.) False sends
        those writes through the ORM.
        """

    @abstractmethod
    def selects_updated_rows(self) -> bool:
        """True when one statement updates rows and selects them joined to other tables (``select_updated_sql``).

        Only backends answering True provide ``select_updated_sql``; the
        others run the UPDATE, then the SELECT.
        """

    # -- search ----------------------------------------------------------------
    @abstractmethod
    def table_names(self, schema: str) -> set[str]:
        """Names of the tables in ``schema``, in one catalog query."""

    @abstractmethod
    def contains_sql(self, column: str) -> str:
        """Case-insensitive ``column`` LIKE one parameter, with backslash escaping ``%``, ``_`` and itself."""

    @abstractmethod
    def query_time_limit(self, timeout_ms: int) -> AbstractContextManager[None]:
        """Run the enclosed queries on this alias under a time limit the database enforces.

        Raises QueryTimeout when the database stopped a statement for it, and
        ImproperlyConfigured where no limit is in force. A cursor fetched
        from must be drained inside the block.
        """

    # -- replicas ------------------------------------------------------------
    @abstractmethod
    def replica_lag(self, cursor, *, on_primary: bool, replica: str) -> ReplicaLag:
        """The lag of one replica, read through ``cursor`` (a connection of this engine).

        ``on_primary``: ``cursor`` is the primary's, and ``replica`` the name
        the primary gives the replica; otherwise ``cursor`` is the replica's
        own. Raises NotOnThisEngine where the engine cannot tell (SQLite has
        no replicas). Read-only, one statement, no transaction of its own.
        """

    @abstractmethod
    def create_readonly_role(
        self, role: str, password: str | None, namespaces: list[str], tables: list[str]
    ) -> tuple[bool, list[str]]:
        """Create or update login ``role`` holding SELECT only: on ``namespaces`` and their later tables, and ``tables``.

        ``tables``: tables of the connection's default schema (the hold
        tables); those that exist are granted. Idempotent, in one
        transaction. Returns (created, tables granted). Raises NotOnThisEngine
        where readers are provided otherwise.
        """
