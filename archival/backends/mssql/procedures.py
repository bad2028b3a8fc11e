"""Calling the archival procedures: signatures, the EXEC batch, typed results."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import overload

MAX_BATCH_SIZE = 4000  # the procedures refuse more (lock escalation at ~5,000 locks)


class ProcedureCallError(Exception):
    """A procedure call this side refuses to send, or whose answer it cannot read.

    The engine stops the one table (TableError), not the run.
    """


@overload
def encode_key(values: None) -> None: ...
@overload
def encode_key(values: Sequence) -> str: ...
def encode_key(values: Sequence | None) -> str | None:
    """A key as the procedures take it: a JSON array of strings (dates ISO 8601, binary as hex).

    The procedures read each string back with ``CAST(JSON_VALUE(...) AS type)``,
    binary with ``CONVERT(type, JSON_VALUE(...), 2)`` (``templates.json_key_value``):
    style 2 is hex without 0x.
    """
    if values is None:
        return None
    out = []
    for v in values:
        if isinstance(v, (dt.date, dt.datetime)):
            out.append(v.isoformat())
        elif isinstance(v, Decimal):
            out.append(format(v, "f"))
        elif isinstance(v, (bytes, bytearray, memoryview)):
            out.append(bytes(v).hex())
        else:
            out.append(str(v))
    return json.dumps(out)


def decode_key(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ProcedureCallError(f"a key the procedure returned is not JSON: {text[:200]!r}") from exc


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
        ProcParam("lock_timeout_ms", "int"),
        ProcParam("child_thresholds", "nvarchar(max)"),
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
        ProcParam("lock_timeout_ms", "int"),
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
        ProcParam("lock_timeout_ms", "int"),
    ],
    "archival.usp_lock_holds": [ProcParam("lock_timeout_ms", "int")],
    "archival.usp_restore_compare": [
        ProcParam("source_alias", "sysname"),
        ProcParam("schema_name", "sysname"),
        ProcParam("table_name", "sysname"),
        ProcParam("selection", "nvarchar(max)"),
        ProcParam("conflicts", "bigint", True),
        ProcParam("identical", "bigint", True),
        ProcParam("lock_timeout_ms", "int"),
    ],
    "archival.usp_restore_batch": [
        ProcParam("request_id", "bigint"),
        ProcParam("config_id", "bigint"),
        ProcParam("source_alias", "sysname"),
        ProcParam("schema_name", "sysname"),
        ProcParam("table_name", "sysname"),
        ProcParam("selection", "nvarchar(max)"),
        ProcParam("as_of", "date"),
        ProcParam("batch_size", "int"),
        ProcParam("batch_no", "int"),
        ProcParam("key_after", "nvarchar(max)"),
        ProcParam("rows_restored", "int", True),
        ProcParam("rows_skipped", "int", True),
        ProcParam("rows_deleted", "int", True),
        ProcParam("rows_held", "int", True),
        ProcParam("key_high", "nvarchar(max)", True),
        ProcParam("lock_timeout_ms", "int"),
    ],
}

RESTORE_KINDS = ("KEY_RANGE", "CONTRACT", "KEYS", "DATE_RANGE", "RUN", "REFERENCED")


def encode_selection(selection: dict) -> str:
    """A restore selection as archival.usp_restore_batch takes it: one JSON object.

    Keys (``key_low``/``key_high``) travel as JSON arrays of strings like
    every key the procedures take; dates as YYYY-MM-DD; a REFERENCED
    selection nests its child's. The procedure reads each value at a
    constant JSON path (archival.usp_build_restore_selection): values never
    enter the statement text.
    """

    def plain(level, depth: int = 0):
        if not isinstance(level, dict) or level.get("kind") not in RESTORE_KINDS:
            raise ProcedureCallError(
                f"a restore selection is an object whose kind is one of {', '.join(RESTORE_KINDS)}, not {level!r}"[:300]
            )
        if depth > 8:
            raise ProcedureCallError("a restore selection nests parent tables more than 8 levels deep")
        out = {}
        for name, value in level.items():
            if name in {"key_low", "key_high"} and value is not None:
                if not isinstance(value, (list, tuple)):
                    raise ProcedureCallError(f"{name} of a KEY_RANGE selection is a list of key values")
                out[name] = json.loads(encode_key(value))
            elif name == "child":
                out[name] = plain(value, depth + 1)
            elif isinstance(value, (dt.date, dt.datetime)):
                out[name] = value.isoformat()
            elif isinstance(value, Decimal):
                out[name] = format(value, "f")
            else:
                out[name] = value
        return out

    return json.dumps(plain(selection), ensure_ascii=False)


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
        raise ProcedureCallError(f"{procedure}: unknown {sorted(unknown)}, missing {sorted(missing)}")
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
    # No session SET here: a SET on the connection outlives the call (NOCOUNT
    # would hide every later row count); each procedure sets NOCOUNT ON in
    # its own body, which reverts when it returns.
    sql = f"{declares}EXEC {procedure}"
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
    # Counts a statement reports outside a procedure's NOCOUNT come back as
    # results without columns before the SELECT of the outputs: skip them.
    while cursor.description is None:
        if not cursor.nextset():
            raise ProcedureCallError(f"{procedure} returned no OUTPUT parameters")
    row = cursor.fetchone()
    return dict(zip(outputs, row, strict=True))


@dataclass(frozen=True)
class DisposeResult:
    rows_disposed: int
    rows_held: int
    key_high: list[str] | None

    @property
    def done(self) -> bool:
        return self.key_high is None
