"""Quoting and column types as SQL Server declares them."""

from __future__ import annotations

from archival.backends.base import Column

# Types the archive copies (archival.fn_type_sql returns NULL for the rest:
# text, ntext, image, xml, CLR and alias types).
_SIZED = {"char", "varchar", "binary", "varbinary"}
_NSIZED = {"nchar", "nvarchar"}
_PLAIN = {
    "bigint", "int", "smallint", "tinyint", "bit", "float", "real", "money", "smallmoney",
    "date", "datetime", "smalldatetime", "uniqueidentifier",
    # Kept as themselves: OUTPUT ... INTO and INSERT take them like any column
    # (system CLR types exist in every database of the instance).
    "sql_variant", "hierarchyid", "geography", "geometry",
}  # fmt: skip
# rowversion (sys.types calls it timestamp) cannot be inserted into: the
# archive keeps its 8 bytes as binary(8), which the documentation calls the
# equivalent of a non-nullable rowversion
# (https://learn.microsoft.com/sql/t-sql/data-types/rowversion-transact-sql).
_ROWVERSION = {"timestamp", "rowversion"}
# Types the keyset batches cannot use as key columns: the procedures carry
# keys as JSON text and cast them back (CONVERT style 126 and CAST from
# nvarchar), and compare them with < and >; these do not round-trip or order.
NOT_KEY_TYPES = frozenset({"timestamp", "rowversion", "sql_variant", "hierarchyid", "geography", "geometry"})
# QUOTENAME takes at most 128 characters and returns NULL above that.
MAX_NAME_LENGTH = 128


def quote(name: str) -> str:
    """QUOTENAME: [name] with ] doubled."""
    return "[" + name.replace("]", "]]") + "]"


def type_sql(type_name: str, max_length: int, precision: int, scale: int) -> str | None:
    """Twin of archival.fn_type_sql (max_length in bytes, as sys.columns reports it)."""
    t = type_name.lower()
    if t == "timestamp":  # rowversion: its value, archived as plain bytes
        return "binary(8)"
    if t in {"sql_variant", "hierarchyid", "geography", "geometry"}:
        return t
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
    if t in _ROWVERSION:
        return "binary(8)"
    return None


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
