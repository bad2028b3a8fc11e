"""What every database backend provides to the engine.

A backend is bound to one Django connection alias. It knows how to read the
live catalog (tables, columns, primary and foreign keys), how to quote
identifiers, and how to write the few engine-specific fragments (date
arithmetic for retention, null-safe equality, the same-server move). Every
identifier it quotes has been checked against the live catalog first; values
always travel as parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from django.db import connections


class SchemaError(Exception):
    """The live schema does not match what a config or the archive expects."""


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

    # -- catalog -------------------------------------------------------------
    def _exists(self, sql: str, params: list) -> bool:
        """True when a catalog query returns a row."""
        with self.connection.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone() is not None

    @abstractmethod
    def table_exists(self, schema: str, table: str) -> bool: ...

    @abstractmethod
    def describe(self, schema: str, table: str) -> TableInfo: ...

    def describe_columns(self, schema: str, table: str) -> TableInfo:
        """``describe`` without the foreign keys (where a backend reads them separately, it skips them)."""
        return self.describe(schema, table)

    @abstractmethod
    def schema_exists(self, schema: str) -> bool: ...

    @abstractmethod
    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        """Single-column foreign keys pointing at ``table``: (child table, child column, our column)."""
        ...

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
    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        """Statements to run first inside the transaction (limits that last for that transaction only)."""
        ...

    # -- SQL fragments -------------------------------------------------------
    @abstractmethod
    def add_years_sql(self, expr: str) -> str:
        """SQL adding a parameter number of calendar years to a date, 29 Feb clamped to 28 Feb."""
        ...

    def as_date_sql(self, expr: str) -> str:
        return f"CAST({expr} AS DATE)"

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"({left} IS NOT DISTINCT FROM {right})"

    def archive_type(self, col: Column, source_vendor: str) -> str:
        """Column type for an archive table created from a source column."""
        if source_vendor == self.vendor:
            return col.db_type
        return self.type_for_generic(col)

    # Archive column types for columns read from another engine, by family.
    generic_types: dict[str, str] = {}
    decimal_type = "NUMERIC({p},{s})"
    decimal_fallback = "NUMERIC"
    text_fallback = "TEXT"

    def type_for_generic(self, col: Column) -> str:
        if col.generic == "decimal":
            p, s = col.size
            return self.decimal_type.format(p=p, s=s or 0) if p else self.decimal_fallback
        return self.generic_types.get(col.generic, self.text_fallback)

    @abstractmethod
    def timestamp_type(self) -> str: ...

    @abstractmethod
    def create_namespace(self, namespace: str) -> None: ...

    def limit_sql(self, select_sql: str, limit_param: str) -> str:
        return f"{select_sql} LIMIT {limit_param}"
