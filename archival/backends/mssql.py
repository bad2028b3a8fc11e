"""SQL Server 2019: catalog reads, quoting, and calls into the archival procedures.

On SQL Server the per-batch work runs in the stored procedures of ``sql/``
(what a DBA reviews and grants EXECUTE on). This module

* reads the catalog through ``INFORMATION_SCHEMA``/``sys`` views with
  parameters, quotes identifiers with ``[]`` (doubling ``]``);
* calls the procedures with ``EXEC ... OUTPUT`` through a cursor, because
  mssql-django has no ``callproc`` (``call_procedure`` and the three typed
  wrappers; their parameter lists are checked against the T-SQL by
  ``tests/test_mssql_contract.py``);
* mirrors, in Python, the fragments the procedures build from the catalog
  (``archival.fn_*`` and ``archival.usp_build_sql``) and fills the same
  templates read from ``sql/05_templates.sql``, so ``manage.py mssql_sql``
  prints the dynamic SQL the server would run, without a server.

None of this has been executed against SQL Server here (no server runs on
our machines); it is checked by parsing and contract tests.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from archival.backends.base import (
    Backend,
    Column,
    ForeignKey,
    SchemaError,
    TableInfo,
    generic_type,
)

SQL_DIR = Path(__file__).resolve().parent.parent.parent / "sql"
TEMPLATES_FILE = SQL_DIR / "05_templates.sql"
MAX_BATCH_SIZE = 4000  # the procedures refuse more (lock escalation at ~5,000 locks)

# Types the archive copies (archival.fn_type_sql returns NULL for the rest).
_SIZED = {"char", "varchar", "binary", "varbinary"}
_NSIZED = {"nchar", "nvarchar"}
_PLAIN = {
    "bigint", "int", "smallint", "tinyint", "bit", "float", "real", "money", "smallmoney",
    "date", "datetime", "smalldatetime", "uniqueidentifier",
}  # fmt: skip


def quote(name: str) -> str:
    """QUOTENAME: [name] with ] doubled."""
    return "[" + name.replace("]", "]]") + "]"


def type_sql(type_name: str, max_length: int, precision: int, scale: int) -> str | None:
    """Twin of archival.fn_type_sql (max_length in bytes, as sys.columns reports it)."""
    t = type_name.lower()
    if t in _SIZED:
        return f"{t}({'max' if max_length == -1 else max_length})"
    if t in _NSIZED:
        return f"{t}({'max' if max_length == -1 else max_length // 2})"
    if t in {"decimal", "numeric"}:
        return f"{t}({precision},{scale})"
    if t in {"datetime2", "time", "datetimeoffset"}:
        return f"{t}({scale})"
    if t in _PLAIN:
        return t
    return None


# -- twins of the archival.fn_* helper functions --------------------------------
def column_list(columns: list[str], prefix: str = "") -> str:
    return ", ".join(prefix + quote(c) for c in columns)


def key_join(columns: list[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in columns)


def keyset_predicate(columns: list[str], alias: str) -> str:
    """Expanded OR form: a > @k1 OR (a = @k1 AND (b > @k2 OR (b = @k2 AND (c > @k3))))."""
    predicate = None
    for i in range(len(columns), 0, -1):
        column = f"{alias}.{quote(columns[i - 1])}"
        param = f"@k{i}"
        if predicate is None:
            predicate = f"{column} > {param}"
        else:
            predicate = f"{column} > {param} OR ({column} = {param} AND ({predicate}))"
    return predicate or ""


def key_json(columns: list[str], alias: str) -> str:
    parts = " + N',' + ".join(
        f"N'\"' + STRING_ESCAPE(CONVERT(nvarchar(4000), {alias}.{quote(c)}, 126), 'json') + N'\"'" for c in columns
    )
    return f"N'[' + {parts} + N']'"


def key_text(columns: list[str], alias: str) -> str:
    parts = ", ".join(f"CONVERT(nvarchar(4000), {alias}.{quote(c)}, 126)" for c in columns)
    return parts if len(columns) == 1 else f"CONCAT_WS(NCHAR(9), {parts})"


def encode_key(values) -> str | None:
    """A key as the procedures take it: a JSON array of strings (dates ISO 8601)."""
    if values is None:
        return None
    out = []
    for v in values:
        if isinstance(v, (dt.date, dt.datetime)):
            out.append(v.isoformat())
        elif isinstance(v, Decimal):
            out.append(format(v, "f"))
        else:
            out.append(str(v))
    return json.dumps(out)


def decode_key(text: str | None) -> list[str] | None:
    return None if text is None else json.loads(text)


# -- templates ---------------------------------------------------------------------
_TEMPLATE_RE = re.compile(r"@name\s*=\s*N'(\w+)',\s*@body\s*=\s*N'((?:[^']|'')*)';", re.DOTALL)


def load_templates(path: Path = TEMPLATES_FILE) -> dict[str, str]:
    """The template bodies exactly as 05_templates.sql stores them (quotes undoubled)."""
    text = path.read_text()
    return {name: body.replace("''", "'") for name, body in _TEMPLATE_RE.findall(text)}


@dataclass(frozen=True)
class KeyColumn:
    name: str
    type_sql: str


@dataclass(frozen=True)
class TableSpec:
    """What archival.usp_build_sql reads from the registry and the catalog."""

    source_alias: str
    source_database: str
    schema_name: str
    table_name: str
    archive_schema: str
    archival_logic: str
    columns: list[str]
    key: list[KeyColumn]
    date_column: str = ""
    contract_table: str = ""
    contract_key_column: str = ""
    contract_reference_column: str = ""
    contract_maturity_column: str = ""
    hold_contract_column: str = ""
    # (schema, table, reference column, contract key column) of CONTRACT_MATURITY
    # children whose contract table is this table, ordered by table name.
    children: tuple[tuple[str, str, str, str], ...] = ()


def tokens_for(spec: TableSpec) -> dict[str, str]:
    """Twin of the REPLACE calls in archival.usp_build_sql (same order, same text)."""
    keys = [k.name for k in spec.key]
    db = quote(spec.source_database)
    source = f"{db}.{quote(spec.schema_name)}.{quote(spec.table_name)}"
    if spec.archival_logic == "DATE_BASED":
        reference_join = ""
        reference_column = f"s.{quote(spec.date_column)}"
    else:
        reference_join = (
            f"LEFT OUTER JOIN {db}.{quote(spec.schema_name)}.{quote(spec.contract_table)} AS c "
            f"ON c.{quote(spec.contract_key_column)} = s.{quote(spec.contract_reference_column)}"
        )
        reference_column = f"c.{quote(spec.contract_maturity_column)}"
    child_guard = "".join(
        f"\n        AND NOT EXISTS (SELECT 1 FROM {db}.{quote(schema)}.{quote(table)} AS ch{n}"
        f" WHERE ch{n}.{quote(ref)} = s.{quote(key)})"
        for n, (schema, table, ref, key) in enumerate(sorted(spec.children, key=lambda c: c[1]), start=1)
    )
    hold_contract_match = ""
    if spec.hold_contract_column and spec.hold_contract_column in spec.columns:
        hold_contract_match = (
            "\n            OR (h.[scope] = N'CONTRACT' AND h.[source_db] = @source_alias"
            f" AND h.[contract_value] = CONVERT(nvarchar(200), a.{quote(spec.hold_contract_column)}))"
        )
    cursor_declare = "\n".join(
        f"DECLARE @k{i} {k.type_sql} = CAST(JSON_VALUE(@key_after, N'$[{i - 1}]') AS {k.type_sql});"
        for i, k in enumerate(spec.key, start=1)
    )
    key_defs = ", ".join(f"{quote(k.name)} {k.type_sql} NOT NULL" for k in spec.key)
    return {
        "CURSOR_DECLARE": cursor_declare,
        "KEY_DEFS": key_defs,
        "SOURCE": source,
        "ARCHIVE": f"{quote(spec.archive_schema)}.{quote(spec.table_name)}",
        "REFERENCE_JOIN": reference_join,
        "REFERENCE_COLUMN": reference_column,
        "CHILD_GUARD": child_guard,
        "HOLD_CONTRACT_MATCH": hold_contract_match,
        "KEY_COLUMNS": column_list(keys),
        "KEY_COLUMNS_S": column_list(keys, "s."),
        "KEY_COLUMNS_A": column_list(keys, "a."),
        "KEY_COLUMNS_S_DESC": column_list(keys, "s.").replace(",", " DESC,") + " DESC",
        "KEY_COLUMNS_B_DESC": column_list(keys, "b.").replace(",", " DESC,") + " DESC",
        "KEY_JOIN_S_B": key_join(keys, "s", "b"),
        "KEY_JOIN_A_B": key_join(keys, "a", "b"),
        "KEYSET_S": keyset_predicate(keys, "s"),
        "KEYSET_A": keyset_predicate(keys, "a"),
        "KEY_JSON_S": key_json(keys, "s"),
        "KEY_JSON_B": key_json(keys, "b"),
        "KEY_TEXT_A": key_text(keys, "a"),
        "COLUMNS": column_list(spec.columns),
        "COLUMNS_S": column_list(spec.columns, "s."),
        "COLUMNS_A": column_list(spec.columns, "a."),
        "COLUMNS_DELETED": column_list(spec.columns, "deleted."),
    }


def render(template: str, spec: TableSpec, templates: dict[str, str] | None = None) -> str:
    """The dynamic SQL archival.usp_build_sql builds for ``template`` and ``spec``."""
    body = (templates or load_templates())[template]
    for token, value in tokens_for(spec).items():
        body = body.replace("{" + token + "}", value)
    return body


# -- calling the procedures ---------------------------------------------------------
@dataclass(frozen=True)
class ProcParam:
    name: str  # without @
    sql_type: str
    output: bool = False


# The procedures' signatures, as the Python side calls them. The contract test
# parses sql/07_procedures.sql and compares names, types and OUTPUT flags.
PROCEDURES: dict[str, list[ProcParam]] = {
    "archival.usp_mark_table": [
        ProcParam("source_alias", "sysname"),
        ProcParam("schema_name", "sysname"),
        ProcParam("table_name", "sysname"),
        ProcParam("threshold", "date"),
        ProcParam("eligible", "bigint", True),
        ProcParam("null_dates", "bigint", True),
        ProcParam("key_low", "nvarchar(max)", True),
        ProcParam("key_high", "nvarchar(max)", True),
    ],
    "archival.usp_archive_batch": [
        ProcParam("run_id", "bigint"),
        ProcParam("config_id", "bigint"),
        ProcParam("source_alias", "sysname"),
        ProcParam("schema_name", "sysname"),
        ProcParam("table_name", "sysname"),
        ProcParam("threshold", "date"),
        ProcParam("years_retention", "int"),
        ProcParam("batch_size", "int"),
        ProcParam("batch_no", "int"),
        ProcParam("key_after", "nvarchar(max)"),
        ProcParam("rows_moved", "int", True),
        ProcParam("rows_skipped", "int", True),
        ProcParam("key_high", "nvarchar(max)", True),
    ],
    "archival.usp_dispose_batch": [
        ProcParam("source_alias", "sysname"),
        ProcParam("schema_name", "sysname"),
        ProcParam("table_name", "sysname"),
        ProcParam("as_of", "date"),
        ProcParam("batch_size", "int"),
        ProcParam("key_after", "nvarchar(max)"),
        ProcParam("rows_disposed", "int", True),
        ProcParam("rows_held", "int", True),
        ProcParam("key_high", "nvarchar(max)", True),
    ],
    "archival.usp_lock_holds": [],
}


def call_sql(procedure: str, inputs: dict) -> tuple[str, list]:
    """The batch text and parameters for one procedure call.

    ``DECLARE @o1 <type>; ...; EXEC proc @p = %s, ..., @out = @o1 OUTPUT;
    SELECT @o1, ...``: inputs travel as driver parameters, outputs come back
    as the one row of the final SELECT. Every name comes from PROCEDURES.
    """
    signature = PROCEDURES[procedure]
    unknown = set(inputs) - {p.name for p in signature if not p.output}
    missing = {p.name for p in signature if not p.output} - set(inputs)
    if unknown or missing:
        raise TypeError(f"{procedure}: unknown {sorted(unknown)}, missing {sorted(missing)}")
    outputs = [p for p in signature if p.output]
    declares = "".join(f"DECLARE @o{i} {p.sql_type}; " for i, p in enumerate(outputs, start=1))
    args, params = [], []
    out_no = 0
    for p in signature:
        if p.output:
            out_no += 1
            args.append(f"@{p.name} = @o{out_no} OUTPUT")
        else:
            args.append(f"@{p.name} = %s")
            params.append(inputs[p.name])
    sql = f"SET NOCOUNT ON; {declares}EXEC {procedure}"
    if args:
        sql += " " + ", ".join(args)
    sql += ";"
    if outputs:
        sql += " SELECT " + ", ".join(f"@o{i}" for i in range(1, len(outputs) + 1)) + ";"
    return sql, params


def call_procedure(cursor, procedure: str, **inputs) -> dict:
    """Run one procedure through a Django cursor; returns its OUTPUT parameters by name."""
    sql, params = call_sql(procedure, inputs)
    cursor.execute(sql, params)
    outputs = [p.name for p in PROCEDURES[procedure] if p.output]
    if not outputs:
        return {}
    row = cursor.fetchone()
    return dict(zip(outputs, row, strict=True))


@dataclass(frozen=True)
class MarkResult:
    eligible: int
    null_dates: int
    key_low: list[str] | None
    key_high: list[str] | None


@dataclass(frozen=True)
class BatchResult:
    rows_moved: int
    rows_skipped: int
    key_high: list[str] | None  # None: nothing left after the cursor

    @property
    def done(self) -> bool:
        return self.key_high is None


@dataclass(frozen=True)
class DisposeResult:
    rows_disposed: int
    rows_held: int
    key_high: list[str] | None

    @property
    def done(self) -> bool:
        return self.key_high is None


def mssql_type_for(col: Column) -> str:
    """SQL Server type for a column read from another engine (the demo on SQLite)."""
    g = col.generic
    if g == "decimal":
        p, s = col.size
        return f"decimal({p},{s})" if p else "decimal(38,10)"
    if g == "text":
        length = col.size[0]
        return f"nvarchar({length})" if length and length <= 4000 else "nvarchar(max)"
    return {
        "int": "int",
        "bigint": "bigint",
        "float": "float",
        "bool": "bit",
        "date": "date",
        "datetime": "datetime2(6)",
        "binary": "varbinary(max)",
    }[g]


class MSSQLBackend(Backend):
    vendor = "microsoft"
    quote_char = "]"

    def quote(self, name: str) -> str:
        return quote(name)

    # -- catalog -------------------------------------------------------------
    def schema_exists(self, schema: str) -> bool:
        return self._exists("SELECT 1 FROM sys.schemas WHERE name = %s", [schema])

    def table_exists(self, schema: str, table: str) -> bool:
        return self._exists(
            "SELECT 1 FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND TABLE_TYPE = 'BASE TABLE'",
            [schema, table],
        )

    def estimated_rows(self, schema: str, table: str) -> int | None:
        # Row counts the storage engine keeps per partition (heap or clustered index).
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT SUM(p.rows) FROM sys.partitions AS p "
                "WHERE p.object_id = OBJECT_ID(QUOTENAME(%s) + N'.' + QUOTENAME(%s)) AND p.index_id IN (0, 1)",
                [schema, table],
            )
            row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def describe(self, schema: str, table: str) -> TableInfo:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT c.name, t.name, c.max_length, c.precision, c.scale, c.is_nullable
                FROM sys.columns AS c
                INNER JOIN sys.types AS t ON t.user_type_id = c.user_type_id
                INNER JOIN sys.tables AS tb ON tb.object_id = c.object_id
                WHERE tb.schema_id = SCHEMA_ID(%s) AND tb.name = %s
                ORDER BY c.column_id
                """,
                [schema, table],
            )
            rows = cur.fetchall()
            if not rows:
                raise SchemaError(f"table {schema}.{table} does not exist in {self.alias}")
            columns = []
            for name, tname, max_length, precision, scale, nullable in rows:
                declared = type_sql(tname, max_length, precision, scale) or tname
                if tname in _SIZED or tname in _NSIZED:
                    size = (None if max_length == -1 else (max_length // 2 if tname in _NSIZED else max_length), None)
                else:
                    size = (precision or None, scale) if tname in {"decimal", "numeric"} else (None, None)
                columns.append(Column(name, declared, generic_type(declared), bool(nullable), size))
            cur.execute(
                """
                SELECT c.name
                FROM sys.indexes AS i
                INNER JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
                INNER JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
                INNER JOIN sys.tables AS tb ON tb.object_id = i.object_id
                WHERE i.is_primary_key = 1 AND tb.schema_id = SCHEMA_ID(%s) AND tb.name = %s
                ORDER BY ic.key_ordinal
                """,
                [schema, table],
            )
            pk = [r[0] for r in cur.fetchall()]
            cur.execute(
                """
                SELECT pc.name, rt.name, rc.name
                FROM sys.foreign_keys AS fk
                INNER JOIN sys.foreign_key_columns AS fkc ON fkc.constraint_object_id = fk.object_id
                INNER JOIN sys.tables AS tb ON tb.object_id = fk.parent_object_id
                INNER JOIN sys.columns AS pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
                INNER JOIN sys.tables AS rt ON rt.object_id = fk.referenced_object_id
                INNER JOIN sys.columns AS rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
                WHERE tb.schema_id = SCHEMA_ID(%s) AND tb.name = %s
                    AND (SELECT COUNT(*) FROM sys.foreign_key_columns AS x WHERE x.constraint_object_id = fk.object_id) = 1
                """,
                [schema, table],
            )
            fks = [ForeignKey(*r) for r in cur.fetchall()]
        return TableInfo(schema, table, columns, pk, fks)

    # -- SQL fragments -------------------------------------------------------
    def referencing(self, schema: str, table: str) -> list[tuple[str, str, str]]:
        with self.connection.cursor() as cur:
            cur.execute(
                """
                SELECT OBJECT_NAME(fk.parent_object_id), pc.name, rc.name
                FROM sys.foreign_keys fk
                JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id
                JOIN sys.columns pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
                JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
                WHERE fk.referenced_object_id = OBJECT_ID(QUOTENAME(%s) + N'.' + QUOTENAME(%s))
                  AND (SELECT COUNT(*) FROM sys.foreign_key_columns x WHERE x.constraint_object_id = fk.object_id) = 1
                """,
                [schema, table],
            )
            return [tuple(r) for r in cur.fetchall()]

    def add_years_sql(self, expr: str) -> str:
        # DATEADD clamps 29 February + 1 year to 28 February by itself.
        return f"DATEADD(YEAR, %s, CAST({expr} AS date))"

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"EXISTS (SELECT {left} INTERSECT SELECT {right})"

    def limit_sql(self, select_sql: str, limit_param: str) -> str:
        if not select_sql.lstrip().upper().startswith("SELECT "):
            raise SchemaError("limit_sql expects a SELECT statement")
        return select_sql.lstrip().replace("SELECT ", f"SELECT TOP ({limit_param}) ", 1)

    def type_for_generic(self, col: Column) -> str:
        return mssql_type_for(col)

    def timestamp_type(self) -> str:
        return "datetimeoffset(6)"

    def create_namespace(self, namespace: str) -> None:
        # Archive schemas are created by sql/02_archive_schemas.sql (DBA), not
        # by the runtime login, which has no CREATE SCHEMA right.
        if not self.schema_exists(namespace):
            raise SchemaError(f"archive schema {namespace} is missing: run sql/02_archive_schemas.sql")

    def session_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        # For the statements the engine runs itself (a streamed source); the
        # procedures set LOCK_TIMEOUT from their @lock_timeout_ms parameter.
        # "After it is changed, the new setting stays in effect for the
        # remainder of the connection" - when run as a plain batch: a driver
        # parameter would turn it into an sp_executesql batch, whose SET
        # options end with it. So a literal: an int from a validated setting.
        # The statement bound on SQL Server is the driver's query timeout
        # (MSSQL_QUERY_TIMEOUT).
        # https://learn.microsoft.com/sql/t-sql/statements/set-lock-timeout-transact-sql
        return [(f"SET LOCK_TIMEOUT {int(lock_timeout_ms)}; SET DEADLOCK_PRIORITY LOW;", [])]

    def transaction_wait_limits(self, lock_timeout_ms: int, statement_timeout_ms: int) -> list[tuple[str, list]]:
        return []

    # -- procedures ----------------------------------------------------------
    def mark_table(self, *, source_alias: str, schema_name: str, table_name: str, threshold: dt.date) -> MarkResult:
        with self.connection.cursor() as cur:
            out = call_procedure(
                cur, "archival.usp_mark_table",
                source_alias=source_alias, schema_name=schema_name, table_name=table_name, threshold=threshold,
            )  # fmt: skip
        return MarkResult(
            int(out["eligible"]), int(out["null_dates"]), decode_key(out["key_low"]), decode_key(out["key_high"])
        )

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
        """One atomic batch inside the instance; the procedure owns the transaction.

        Must not run inside a Django atomic block on this connection: the
        procedure commits its own transaction (move + ledger row together).
        """
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE} on SQL Server")
        with self.connection.cursor() as cur:
            out = call_procedure(
                cur, "archival.usp_archive_batch",
                run_id=run_id, config_id=config_id, source_alias=source_alias, schema_name=schema_name,
                table_name=table_name, threshold=threshold, years_retention=years_retention,
                batch_size=batch_size, batch_no=batch_no, key_after=encode_key(key_after),
            )  # fmt: skip
        return BatchResult(int(out["rows_moved"] or 0), int(out["rows_skipped"] or 0), decode_key(out["key_high"]))

    def dispose_batch(
        self,
        *,
        source_alias: str,
        schema_name: str,
        table_name: str,
        as_of: dt.date,
        batch_size: int,
        key_after: list | None,
    ) -> DisposeResult:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE} on SQL Server")
        with self.connection.cursor() as cur:
            out = call_procedure(
                cur, "archival.usp_dispose_batch",
                source_alias=source_alias, schema_name=schema_name, table_name=table_name,
                as_of=as_of, batch_size=batch_size, key_after=encode_key(key_after),
            )  # fmt: skip
        return DisposeResult(int(out["rows_disposed"] or 0), int(out["rows_held"] or 0), decode_key(out["key_high"]))

    def lock_holds(self) -> None:
        """Serialize a hold change with disposal: call inside the transaction writing the hold."""
        with self.connection.cursor() as cur:
            call_procedure(cur, "archival.usp_lock_holds")


def source_database_name(alias: str) -> str:
    """The database name of a source on the instance (the alias itself for a non-SQL Server demo)."""
    config = settings.DATABASES[alias]
    return config["NAME"] if config["ENGINE"] == "mssql" else alias


@dataclass(frozen=True)
class DryRunTable:
    label: str
    spec: TableSpec
    statements: dict[str, str]  # template name -> dynamic SQL
    provision_call: str


def spec_for_config(config) -> TableSpec:
    """The TableSpec of a validated TableConfig, from the live catalog of its source.

    On a source that is not SQL Server (the local demo), types are mapped the
    way an archive on SQL Server would declare them and SQLite's ``main``
    schema reads as ``dbo``.
    """
    from archival.backends import backend_for
    from governance.models import TableConfig

    source = backend_for(config.source_db)
    info = source.describe(config.schema_name, config.table_name)
    native = source.vendor == "microsoft"
    schema = config.schema_name if native or config.schema_name != "main" else "dbo"
    key = []
    for name in info.primary_key:
        col = info.column(name)
        key.append(KeyColumn(name, col.db_type if native else mssql_type_for(col)))
    children = tuple(
        (schema, c.table_name, c.contract_reference_column, c.contract_key_column)
        for c in TableConfig.objects.active().filter(
            source_db=config.source_db,
            schema_name=config.schema_name,
            archival_logic="CONTRACT_MATURITY",
            contract_table=config.table_name,
        )
    )
    return TableSpec(
        source_alias=config.source_db,
        source_database=source_database_name(config.source_db),
        schema_name=schema,
        table_name=config.table_name,
        archive_schema=f"{settings.ARCHIVAL['NAMESPACE_PREFIX']}{config.source_db.lower()}",
        archival_logic=config.archival_logic,
        columns=info.column_names,
        key=key,
        date_column=config.date_column,
        contract_table=config.contract_table,
        contract_key_column=config.contract_key_column,
        contract_reference_column=config.contract_reference_column,
        contract_maturity_column=config.contract_maturity_column,
        hold_contract_column=config.hold_contract_column,
        children=children,
    )


def provision_call(spec: TableSpec) -> str:
    """The DBA's archival_admin.usp_provision_table call for one table (literals N'...' escaped)."""

    def lit(value: str) -> str:
        return "NULL" if not value else "N'" + value.replace("'", "''") + "'"

    args = {
        "source_alias": spec.source_alias,
        "source_database": spec.source_database,
        "schema_name": spec.schema_name,
        "table_name": spec.table_name,
        "archival_logic": spec.archival_logic,
        "archive_schema": spec.archive_schema,
        "date_column": spec.date_column,
        "contract_table": spec.contract_table,
        "contract_key_column": spec.contract_key_column,
        "contract_reference_column": spec.contract_reference_column,
        "contract_maturity_column": spec.contract_maturity_column,
        "hold_contract_column": spec.hold_contract_column,
    }
    return "EXEC archival_admin.usp_provision_table " + ", ".join(f"@{k} = {lit(v)}" for k, v in args.items()) + ";"


def dry_run(configs) -> list[DryRunTable]:
    """The dynamic SQL the procedures would build for each config; touches nothing.

    Each config must already be valid (``full_clean``): its names were
    checked against the live schema, and are quoted again here.
    """
    templates = load_templates()
    out = []
    for config in configs:
        spec = spec_for_config(config)
        statements = {name: render(name, spec, templates) for name in templates}
        out.append(DryRunTable(str(config), spec, statements, provision_call(spec)))
    return out
