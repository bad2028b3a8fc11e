"""The dynamic SQL of archival.usp_build_sql, rebuilt in Python, and provisioning calls."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from django.conf import settings

from archival.backends import backend_for
from archival.backends.mssql.sqltypes import mssql_type_for, quote
from archival.hold_coverage import tsql_contract_match
from archival.rowkeys import keyset_template
from governance.models import TableConfig

SQL_DIR = Path(__file__).resolve().parents[3] / "sql"
TEMPLATES_FILE = SQL_DIR / "05_templates.sql"


# -- twins of the archival.fn_* helper functions --------------------------------
def column_list(columns: list[str], prefix: str = "") -> str:
    return ", ".join(prefix + quote(c) for c in columns)


def key_join(columns: list[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in columns)


def keyset_predicate(columns: list[str], alias: str) -> str:
    """Twin of archival.fn_keyset_predicate (``rowkeys.keyset_template`` on @k1..@kn):
    a > @k1 OR (a = @k1 AND (b > @k2 OR (b = @k2 AND (c > @k3))))."""
    if not columns:
        return ""
    qualified = [f"{alias}.{quote(c)}" for c in columns]
    return keyset_template(qualified, ">", [f"@k{i}" for i in range(1, len(columns) + 1)])[0]


def key_bound(columns: list[str], alias: str, op: str, variable_prefix: str) -> str:
    """Twin of archival.fn_key_bound: inclusive bound, op ``>`` (key >= ...) or ``<`` (key <= ...)."""
    if op not in {">", "<"}:
        raise ValueError(f"key_bound takes > or <, not {op!r}")
    if not columns:
        return ""
    qualified = [f"{alias}.{quote(c)}" for c in columns]
    return keyset_template(qualified, f"{op}=", [f"{variable_prefix}{i}" for i in range(1, len(columns) + 1)])[0]


def key_json(columns: list[str], alias: str) -> str:
    parts = " + N',' + ".join(
        f"N'\"' + STRING_ESCAPE(CONVERT(nvarchar(4000), {alias}.{quote(c)}, 126), 'json') + N'\"'" for c in columns
    )
    return f"N'[' + {parts} + N']'"


# The sys.types name standing for each generic type (``Backend.key_text_sql``
# knows a column's generic type, the procedures its sys.types name).
TYPE_NAME_OF_GENERIC = {
    "text": "nvarchar",
    "date": "date",
    "datetime": "datetime2",
    "bool": "bit",
    "binary": "varbinary",
}


def key_text_part(col: str, type_name: str) -> str:
    """One component of the canonical key text (``archival.rowkeys``) in T-SQL.

    ``col``: the column's SQL expression; ``type_name``: its sys.types name.
    Twin of one CASE branch of archival.fn_key_text. CONVERT styles
    (learn.microsoft.com, "CAST and CONVERT"): 23 is yyyy-mm-dd, 120
    yyyy-mm-dd hh:mi:ss; binary style 2 is hex without 0x.
    """
    if type_name in {"char", "varchar", "nchar", "nvarchar"}:
        text = (
            f"REPLACE(REPLACE(REPLACE(CONVERT(nvarchar(4000), {col}), N'\\', N'\\\\'), "
            "NCHAR(9), N'\\t'), NCHAR(10), N'\\n')"
        )
    elif type_name == "date":
        text = f"CONVERT(nvarchar(10), {col}, 23)"
    elif type_name in {"datetime", "datetime2", "smalldatetime"}:
        text = (
            f"CONVERT(nvarchar(19), {col}, 120) + CASE WHEN DATEPART(MICROSECOND, {col}) = 0 THEN N'' "
            f"ELSE N'.' + RIGHT(N'000000' + CONVERT(nvarchar(6), DATEPART(MICROSECOND, {col})), 6) END"
        )
    elif type_name == "bit":
        text = f"CASE WHEN {col} = 1 THEN N'true' ELSE N'false' END"
    elif type_name in {"binary", "varbinary"}:
        text = f"LOWER(CONVERT(nvarchar(max), {col}, 2))"
    elif type_name == "uniqueidentifier":
        text = f"LOWER(CONVERT(nvarchar(36), {col}))"
    else:
        text = f"CONVERT(nvarchar(4000), {col})"
    return text + " COLLATE DATABASE_DEFAULT"


def key_text(columns: list[str], alias: str, types: list[str] | None = None) -> str:
    """Twin of archival.fn_key_text: the key in archival.rowkeys' canonical text.

    ``types``: each column's type name as sys.types has it (``varchar``,
    ``datetime2``, ...), in key order.
    """
    types = types or ["int"] * len(columns)
    return key_text_of_parts([key_text_part(f"{alias}.{quote(c)}", t) for c, t in zip(columns, types, strict=True)])


def key_text_of_parts(parts: list[str]) -> str:
    """The components joined by a TAB (CONCAT_WS: key columns are never NULL)."""
    return parts[0] if len(parts) == 1 else f"CONCAT_WS(NCHAR(9), {', '.join(parts)})"


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
    collation: str = ""  # sys.columns.collation_name of a character column

    @property
    def type_name(self) -> str:
        """The sys.types name (rowversion's archive type binary(8) reads as binary)."""
        return self.type_sql.split("(", 1)[0].lower()


def json_key_value(key: KeyColumn, json_value: str) -> str:
    """A key component read from its JSON carrier (``json_value``: the JSON_VALUE expression) as ``key``'s type.

    ``procedures.encode_key`` writes binary as hex, which CONVERT style 2
    reads; a CAST of text to binary would take the text's own bytes.
    """
    if key.type_name in {"binary", "varbinary"}:
        return f"CONVERT({key.type_sql}, {json_value}, 2)"
    return f"CAST({json_value} AS {key.type_sql})"


@dataclass(frozen=True)
class ProcedureTable:
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
    # (schema, table, reference column, key column) of the configured children:
    # tables whose one-column foreign key, or whose contract join, references
    # this table (same source, same schema).
    children: tuple[tuple[str, str, str, str], ...] = ()
    # geography/geometry columns: compared by their bytes (not comparable).
    spatial_columns: tuple[str, ...] = ()
    # Each child table's rule, as the registry has it: (table, archival logic,
    # date column, contract table, contract key, contract reference, maturity).
    child_rules: tuple[tuple[str, str, str, str, str, str, str], ...] = ()
    # Source columns a restore treats apart (sys.columns is_identity,
    # is_computed; rowversion, which sys.types calls timestamp): computed and
    # rowversion columns are left out of the INSERT, an identity column is
    # inserted under IDENTITY_INSERT.
    identity_columns: tuple[str, ...] = ()
    computed_columns: tuple[str, ...] = ()
    rowversion_columns: tuple[str, ...] = ()


def tokens_for(spec: ProcedureTable) -> dict[str, str]:
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
    children = sorted({(table, ref, key) for _, table, ref, key in spec.children if table != spec.table_name})
    child_guard = "".join(
        f"\n        AND NOT EXISTS (SELECT 1 FROM {db}.{quote(spec.schema_name)}.{quote(table)} AS ch{n}"
        f" WHERE ch{n}.{quote(ref)} = s.{quote(key)})"
        for n, (table, ref, key) in enumerate(children, start=1)
    )
    rules = {rule[0]: rule for rule in spec.child_rules}
    mark_guard = []
    for n, (table, ref, key) in enumerate(children, start=1):
        if table not in rules:  # not registered: the T-SQL join drops it too
            continue
        _, logic, date_column, contract, contract_key, contract_ref, maturity = rules[table]
        name = json.dumps(table, ensure_ascii=False)[1:-1].replace("/", "\\/").replace("'", "''")
        threshold = f"COALESCE(CAST(JSON_VALUE(@child_thresholds, N'$.\"{name}\"') AS date), CONVERT(date, '00010101'))"
        if logic == "DATE_BASED":
            eligible = f"ch{n}.{quote(date_column)} IS NOT NULL AND ch{n}.{quote(date_column)} < {threshold}"
        else:
            eligible = (
                f"EXISTS (SELECT 1 FROM {db}.{quote(spec.schema_name)}.{quote(contract)} AS cc{n}"
                f" WHERE cc{n}.{quote(contract_key)} = ch{n}.{quote(contract_ref)}"
                f" AND cc{n}.{quote(maturity)} < {threshold})"
            )
        mark_guard.append(
            f"\n        AND NOT EXISTS (SELECT 1 FROM {db}.{quote(spec.schema_name)}.{quote(table)} AS ch{n}"
            f" WHERE ch{n}.{quote(ref)} = s.{quote(key)} AND NOT ({eligible}))"
        )
    hold_contract_match = ""
    if spec.hold_contract_column and spec.hold_contract_column in spec.columns:
        hold_contract_match = tsql_contract_match(quote(spec.hold_contract_column))
    cursor_declare = "\n".join(
        f"DECLARE @k{i} {k.type_sql} = CAST(JSON_VALUE(@key_after, N'$[{i - 1}]') AS {k.type_sql});"
        for i, k in enumerate(spec.key, start=1)
    )
    key_defs = ", ".join(
        f"{quote(k.name)} {k.type_sql}{f' COLLATE {k.collation}' if k.collation else ''} NOT NULL" for k in spec.key
    )

    def compare(alias: str) -> str:
        return ", ".join(
            f"CONVERT(varbinary(max), {alias}.{quote(c)})" if c in spec.spatial_columns else f"{alias}.{quote(c)}"
            for c in spec.columns
        )

    insertable = [c for c in spec.columns if c not in spec.computed_columns and c not in spec.rowversion_columns]

    def restore_compare(alias: str) -> str:
        return ", ".join(
            f"CONVERT(varbinary(max), {alias}.{quote(c)})" if c in spec.spatial_columns else f"{alias}.{quote(c)}"
            for c in insertable
        )

    identity_on = identity_off = ""
    if spec.identity_columns:
        identity_on = f"SET IDENTITY_INSERT {source} ON;"
        identity_off = f"SET IDENTITY_INSERT {source} OFF;"

    return {
        "CURSOR_DECLARE": cursor_declare,
        "KEY_DEFS": key_defs,
        "SOURCE": source,
        "ARCHIVE": f"{quote(spec.archive_schema)}.{quote(spec.table_name)}",
        "REFERENCE_JOIN": reference_join,
        "REFERENCE_COLUMN": reference_column,
        "CHILD_GUARD": child_guard,
        "MARK_CHILD_GUARD": "".join(mark_guard),
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
        "KEY_TEXT_A": key_text(keys, "a", [k.type_name for k in spec.key]),
        "COLUMNS": column_list(spec.columns),
        "COLUMNS_DELETED": column_list(spec.columns, "deleted."),
        "COMPARE_S": compare("s"),
        "COMPARE_A": compare("a"),
        "KEY_COLUMNS_B": column_list(keys, "b."),
        "KEY_JOIN_S_A": key_join(keys, "s", "a"),
        "INSERT_COLUMNS": column_list(insertable),
        "INSERT_COLUMNS_A": column_list(insertable, "a."),
        "IDENTITY_INSERT_ON": identity_on,
        "IDENTITY_INSERT_OFF": identity_off,
        "RESTORE_COMPARE_S": restore_compare("s"),
        "RESTORE_COMPARE_A": restore_compare("a"),
    }


# -- restore selections (twin of archival.usp_build_restore_selection) -----------
RESTORE_KINDS = ("KEY_RANGE", "CONTRACT", "KEYS", "DATE_RANGE", "RUN", "REFERENCED")
MAX_RESTORE_DEPTH = 8


class RestoreSelectionError(ValueError):
    """A selection the procedure would refuse (the same rules, checked before anything is sent)."""


def restore_selection(
    spec: ProcedureTable, selection: dict, tables: dict[str, ProcedureTable] | None = None
) -> dict[str, str]:
    """The {SELECTION_DECLARE} and {SELECTION} tokens archival.usp_build_restore_selection builds.

    ``selection``: the JSON-able selection of the restore contract
    (``{"kind": "KEY_RANGE", "key_low": [...], "key_high": [...]}``, ...,
    ``{"kind": "REFERENCED", "key_column", "child_table", "ref_column",
    "child": {...}}``). ``tables``: the ProcedureTable of each child table a
    REFERENCED selection names, by table name (same source and schema).
    Values never enter the text: the DECLAREs read them from the
    ``@selection`` parameter at constant JSON paths.
    """
    tables = tables or {}
    declare: list[str] = []
    opening, closing = "", ""
    path, table, level, depth = "$", spec, selection, 0
    while True:
        if depth > MAX_RESTORE_DEPTH:
            raise RestoreSelectionError(f"the selection nests parent tables more than {MAX_RESTORE_DEPTH} levels deep")
        if not isinstance(level, dict):
            raise RestoreSelectionError("a selection is a JSON object with its kind and values")
        alias = "a" if depth == 0 else f"r{depth}"
        prefix = f"@s{depth}_"
        kind = level.get("kind")
        keys = [k.name for k in table.key]
        archived_by = ""
        if level.get("archived_by") is not None:
            try:
                datetime.fromisoformat(str(level["archived_by"]))
            except ValueError:
                raise RestoreSelectionError("archived_by of a restore selection is an ISO 8601 timestamp") from None
            declare.append(
                f"DECLARE {prefix}archived_by datetime2 = CONVERT(datetime2, "
                f"JSON_VALUE(@selection, N'{path}.archived_by'), 126);\n"
            )
            archived_by = f"{alias}.[archived_at] <= {prefix}archived_by AND "
        if kind == "REFERENCED":
            child_name = level.get("child_table")
            key_column, ref_column = level.get("key_column"), level.get("ref_column")
            child = tables.get(child_name) if isinstance(child_name, str) else None
            if not (key_column and ref_column and isinstance(level.get("child"), dict)):
                raise RestoreSelectionError(
                    "a REFERENCED selection needs key_column, child_table, ref_column and the child's selection"
                )
            if key_column not in table.columns:
                raise RestoreSelectionError(f"{key_column!r} is not a column of {table.table_name}")
            if child is None or ref_column not in child.columns:
                raise RestoreSelectionError(f"child table {child_name!r} is unknown or lacks {ref_column!r}")
            child_alias = f"r{depth + 1}"
            opening += archived_by + (
                f"EXISTS (SELECT 1 FROM {quote(child.archive_schema)}.{quote(child.table_name)} AS {child_alias} "
                f"WHERE {child_alias}.{quote(ref_column)} = {alias}.{quote(key_column)} AND ("
            )
            closing += "))"
            table, level, path, depth = child, level["child"], f"{path}.child", depth + 1
            continue
        if kind == "KEY_RANGE":
            parts = []
            for end, short, op in (("key_low", "lo", ">"), ("key_high", "hi", "<")):
                bound = level.get(end)
                if bound is None:
                    continue
                if not isinstance(bound, list) or len(bound) != len(keys):
                    raise RestoreSelectionError(f"{end} of a KEY_RANGE selection needs one value per key column")
                for i, k in enumerate(table.key, start=1):
                    bound = json_key_value(k, f"JSON_VALUE(@selection, N'{path}.{end}[{i - 1}]')")
                    declare.append(f"DECLARE {prefix}{short}{i} {k.type_sql} = {bound};\n")
                parts.append(f"({key_bound(keys, alias, op, f'{prefix}{short}')})")
            own = " AND ".join(parts) or "1 = 1"
        elif kind == "CONTRACT":
            column = level.get("column")
            if not column or level.get("value") is None:
                raise RestoreSelectionError("a CONTRACT selection needs the contract column and a value")
            if column not in {table.hold_contract_column, table.contract_reference_column} - {""}:
                raise RestoreSelectionError(
                    f"{column!r} is not the contract column {table.table_name} was provisioned with"
                )
            declare.append(f"DECLARE {prefix}contract nvarchar(4000) = JSON_VALUE(@selection, N'{path}.value');\n")
            own = f"CONVERT(nvarchar(4000), {alias}.{quote(column)}) COLLATE DATABASE_DEFAULT = {prefix}contract"
        elif kind == "KEYS":
            if not isinstance(level.get("request_id"), int):
                raise RestoreSelectionError("a KEYS selection needs the request_id whose RestoreKey rows list the keys")
            declare.append(
                f"DECLARE {prefix}request bigint = CAST(JSON_VALUE(@selection, N'{path}.request_id') AS bigint);\n"
            )
            text = key_text(keys, alias, [k.type_name for k in table.key])
            own = (
                f"EXISTS (SELECT 1 FROM [dbo].[governance_restorekey] AS rk{depth} WHERE rk{depth}.[request_id] = "
                f"{prefix}request AND rk{depth}.[key_text] = {text})"
            )
        elif kind == "DATE_RANGE":
            for end in ("date_from", "date_to"):
                value = level.get(end)
                try:
                    if value is not None:
                        date.fromisoformat(str(value))
                except ValueError:
                    raise RestoreSelectionError(f"{end} of a DATE_RANGE selection is a YYYY-MM-DD date") from None
            declare += [
                f"DECLARE {prefix}from date = CONVERT(date, JSON_VALUE(@selection, N'{path}.date_from'), 23);\n",
                f"DECLARE {prefix}to date = CONVERT(date, JSON_VALUE(@selection, N'{path}.date_to'), 23);\n",
            ]
            own = (
                f"{alias}.[reference_date] IS NOT NULL AND ({prefix}from IS NULL OR {alias}.[reference_date] >= "
                f"{prefix}from) AND ({prefix}to IS NULL OR {alias}.[reference_date] <= {prefix}to)"
            )
        elif kind == "RUN":
            if not isinstance(level.get("archive_run_id"), int):
                raise RestoreSelectionError("a RUN selection needs the archive_run_id")
            declare.append(
                f"DECLARE {prefix}run bigint = CAST(JSON_VALUE(@selection, N'{path}.archive_run_id') AS bigint);\n"
            )
            own = f"{alias}.[archive_run_id] = {prefix}run"
        else:
            raise RestoreSelectionError(f"unknown restore selection kind {kind!r} (one of {', '.join(RESTORE_KINDS)})")
        own = f"{archived_by}({own})" if archived_by else own
        break
    return {"SELECTION_DECLARE": "".join(declare), "SELECTION": opening + own + closing}


def example_restore_selection(spec: ProcedureTable) -> dict:
    """The selection the dry run shows for restore_batch: a key range (a request's own selection replaces it)."""
    return {"kind": "KEY_RANGE", "key_low": ["..."] * len(spec.key), "key_high": ["..."] * len(spec.key)}


def render(
    template: str,
    spec: ProcedureTable,
    templates: dict[str, str] | None = None,
    *,
    selection: dict | None = None,
    tables: dict[str, ProcedureTable] | None = None,
) -> str:
    """The dynamic SQL archival.usp_build_sql builds for ``template`` and ``spec``.

    For restore_batch, archival.usp_restore_batch then fills the selection
    tokens: from ``selection`` (default: the dry run's example key range).
    """
    body = (templates or load_templates())[template]
    for token, value in tokens_for(spec).items():
        body = body.replace("{" + token + "}", value)
    if template in {"restore_batch", "restore_compare"}:
        chosen = selection if selection is not None else example_restore_selection(spec)
        for token, value in restore_selection(spec, chosen, tables).items():
            body = body.replace("{" + token + "}", value)
    return body


def source_database_name(alias: str) -> str:
    """The database name of a source on the instance (the alias itself for a non-SQL Server demo)."""
    config = settings.DATABASES[alias]
    return config["NAME"] if config["ENGINE"] == "mssql" else alias


@dataclass(frozen=True)
class DryRunTable:
    label: str
    spec: ProcedureTable
    statements: dict[str, str]  # template name -> dynamic SQL
    provision_call: str


# The registry columns (archival.archived_table) a child's mark-time rule needs.
CHILD_RULE_FIELDS = (
    "table_name",
    "archival_logic",
    "date_column",
    "contract_table",
    "contract_key_column",
    "contract_reference_column",
    "contract_maturity_column",
)


def procedure_table_for(config) -> ProcedureTable:
    """The ProcedureTable of a validated TableConfig, from the live catalog of its source.

    On a source that is not SQL Server (the local demo), types are mapped the
    way an archive on SQL Server would declare them and SQLite's ``main``
    schema reads as ``dbo``.
    """
    source = backend_for(config.source_db)
    info = source.describe(config.schema_name, config.table_name)
    native = source.vendor == "microsoft"
    schema = config.schema_name if native or config.schema_name != "main" else "dbo"
    collations = source_collations(source, config.schema_name, config.table_name) if native else {}
    identity, computed = source_column_kinds(source, config.schema_name, config.table_name) if native else ((), ())
    key = []
    for name in info.primary_key:
        col = info.column(name)
        assert col is not None  # a primary key column is a column of its table
        key.append(KeyColumn(name, col.db_type if native else mssql_type_for(col), collations.get(name, "")))
    siblings = TableConfig.objects.active().filter(source_db=config.source_db, schema_name=config.schema_name)
    configured = set(siblings.values_list("table_name", flat=True))
    children = tuple(
        (schema, c.table_name, c.contract_reference_column, c.contract_key_column)
        for c in siblings.filter(archival_logic="CONTRACT_MATURITY", contract_table=config.table_name)
    ) + tuple(
        (schema, child, ref, key_column)
        for child, ref, key_column in source.referencing(config.schema_name, config.table_name)
        if child in configured
    )
    return ProcedureTable(
        source_alias=config.source_db,
        source_database=source_database_name(config.source_db),
        schema_name=schema,
        table_name=config.table_name,
        archive_schema=archive_schema_for(config.source_db),
        archival_logic=config.archival_logic,
        columns=info.column_names,
        key=key,
        date_column=config.date_column,
        contract_table=config.contract_table,
        contract_key_column=config.contract_key_column,
        contract_reference_column=config.contract_reference_column,
        contract_maturity_column=config.contract_maturity_column,
        # The column contract holds match, direct or through the contract join.
        hold_contract_column=config.contract_column_for_holds(),
        children=children,
        spatial_columns=tuple(c.name for c in info.columns if c.db_type in {"geography", "geometry"}),
        identity_columns=identity,
        computed_columns=computed,
        rowversion_columns=tuple(c.name for c in info.columns if c.db_type == "rowversion"),
        child_rules=tuple(
            (
                c.table_name,
                c.archival_logic,
                c.date_column,
                c.contract_table,
                c.contract_key_column,
                c.contract_reference_column,
                c.contract_maturity_column,
            )
            for c in siblings.filter(table_name__in={child[1] for child in children})
        ),
    )


def archive_schema_for(source_alias: str) -> str:
    """The archive schema of a source: the prefix and the alias (sql/02_archive_schemas.sql creates it)."""
    return f"{settings.ARCHIVAL['NAMESPACE_PREFIX']}{source_alias.lower()}"


def provisioned_object_names(archive_schema: str, table_name: str) -> list[str]:
    """The names archival_admin.usp_provision_table builds for one table (sql/06_provisioning.sql), each QUOTENAME'd."""
    suffixes = ("retention", "run", "contract")
    return [f"pk_{archive_schema}_{table_name}", *(f"ix_{table_name}_{suffix}" for suffix in suffixes)]


def source_collations(source, schema: str, table: str) -> dict[str, str]:
    """sys.columns.collation_name of a SQL Server table's character columns."""
    with source.connection.cursor() as cur:
        cur.execute(
            "SELECT c.name, c.collation_name FROM sys.columns AS c "
            "WHERE c.object_id = OBJECT_ID(QUOTENAME(%s) + N'.' + QUOTENAME(%s)) AND c.collation_name IS NOT NULL",
            [schema, table],
        )
        return {name: collation for name, collation in cur.fetchall()}


def source_column_kinds(source, schema: str, table: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(identity columns, computed columns) of a SQL Server table (sys.columns is_identity, is_computed)."""
    with source.connection.cursor() as cur:
        cur.execute(
            "SELECT c.name, c.is_identity, c.is_computed FROM sys.columns AS c "
            "WHERE c.object_id = OBJECT_ID(QUOTENAME(%s) + N'.' + QUOTENAME(%s)) "
            "AND (c.is_identity = 1 OR c.is_computed = 1) ORDER BY c.column_id",
            [schema, table],
        )
        rows = cur.fetchall()
    return tuple(r[0] for r in rows if r[1]), tuple(r[0] for r in rows if r[2])


def provision_call(spec: ProcedureTable) -> str:
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
        spec = procedure_table_for(config)
        statements = {name: render(name, spec, templates) for name in templates}
        out.append(DryRunTable(str(config), spec, statements, provision_call(spec)))
    return out
