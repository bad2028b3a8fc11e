"""Filters and keyset pages over one archive table.

SQL is assembled only from names resolved by ``catalog`` (quoted by the
backend) and fixed keywords; every value is a parameter.

Keyset pagination: the order is (sort column, primary key...), unique, and a
page starts strictly after (or before) the cursor, the last row's values of
that order, written in the expanded ``a > ? OR (a = ? AND ...)`` form that
every engine can read (SQL Server has no row values; MariaDB does not
range-scan them). A redundant leading bound ``a >= ?`` lets the planner start
an index range scan at the cursor instead of filtering from the table's start,
which is what keeps page 20,000 as fast as page 1. No OFFSET, no COUNT(*): a
page fetches PAGE_SIZE + 1 rows to know whether another page follows.

A nullable sort column is ordered with NULLs last on every engine through a
0/1 flag before it; when the cursor sits among the NULLs the column drops out
of the comparison (NULL = NULL is never true).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connections
from django.utils.dateparse import parse_date, parse_datetime

from archival.search.catalog import READONLY_ALIAS, SearchColumn, SearchTable
from archival.search.limits import query_time_limit


class BadRequest(ValueError):
    """A cursor or key value that cannot be read (a 400, not a 404)."""


class Op:
    EQ = "="
    GTE = ">="
    LTE = "<="
    LT = "<"
    CONTAINS = "contains"
    IS_NULL = "is null"


@dataclass(frozen=True)
class Filter:
    column: SearchColumn
    op: str
    value: Any = None

    def describe(self) -> str:
        return f"{self.column.name} {self.op} {self.value}" if self.op != Op.IS_NULL else f"{self.column.name} is null"


@dataclass(frozen=True)
class Sort:
    column: SearchColumn
    descending: bool = False


@dataclass
class Page:
    columns: list[str]
    rows: list[tuple]
    has_next: bool
    has_previous: bool
    next_cursor: str | None
    previous_cursor: str | None


# -- values -------------------------------------------------------------------
def parse_value(column: SearchColumn, text: str | None) -> Any:
    """A typed parameter from the text of a cursor or a URL (BadRequest if unreadable)."""
    if text is None:
        return None
    try:
        if column.generic in {"int", "bigint"}:
            return int(text)
        if column.generic == "decimal":
            return Decimal(text)
        if column.generic == "float":
            return float(text)
        if column.generic == "date":
            value = parse_date(text)
            if value is None:
                raise ValueError(text)
            return value
        if column.generic == "datetime":
            value = parse_datetime(text)
            if value is None:
                raise ValueError(text)
            return value
        if column.generic == "bool":
            return text.lower() in {"1", "true", "t", "yes"}
    except (ValueError, InvalidOperation):
        raise BadRequest(f"{column.name}: {text!r} is not a valid {column.generic}") from None
    return text


def value_text(value: Any) -> str | None:
    """Canonical text of a database value (cursors, URLs, hold keys)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([value_text(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, columns: Sequence[SearchColumn]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        texts = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest("unreadable page cursor") from None
    if (
        not isinstance(texts, list)
        or len(texts) != len(columns)
        or not all(t is None or isinstance(t, str) for t in texts)
    ):
        raise BadRequest("page cursor does not fit this table")
    return [parse_value(col, text) for col, text in zip(columns, texts, strict=True)]


# -- SQL pieces -------------------------------------------------------------
def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def where_sql(table: SearchTable, filters: Sequence[Filter]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    vendor = table.backend.vendor
    for f in filters:
        col = table.backend.quote(f.column.name)
        if f.op == Op.IS_NULL:
            clauses.append(f"{col} IS NULL")
        elif f.op == Op.CONTAINS:
            # Case-insensitive on every engine: SQLite's LIKE already is (ASCII).
            like = "ILIKE" if vendor == "postgresql" else "LIKE"
            clauses.append(f"{col} {like} %s ESCAPE '\\'")
            params.append(_like_pattern(str(f.value)))
        elif f.op in {Op.EQ, Op.GTE, Op.LTE, Op.LT}:
            clauses.append(f"{col} {f.op} %s")
            params.append(f.value)
        else:  # pragma: no cover - Op is a closed set
            raise ValueError(f.op)
    return clauses, params


def keyset_columns(table: SearchTable, sort: Sort | None) -> list[SearchColumn]:
    """The unique order: the sort column, then the key columns not already in it."""
    key = [table.column(name) for name in table.key]
    if sort is None:
        return key
    return [sort.column, *[c for c in key if c.name != sort.column.name]]


@dataclass(frozen=True)
class _Component:
    expr: str
    descending: bool
    column: SearchColumn | None  # None: the NULLs-last flag of the next column


def _components(table: SearchTable, sort: Sort | None) -> list[_Component]:
    q = table.backend.quote
    descending = bool(sort and sort.descending)
    comps: list[_Component] = []
    for col in keyset_columns(table, sort):
        if col.nullable and not col.is_key:
            comps.append(_Component(f"(CASE WHEN {q(col.name)} IS NULL THEN 1 ELSE 0 END)", False, None))
        comps.append(_Component(q(col.name), descending, col))
    return comps


def _keyset_predicate(comps: list[_Component], cursor: list[Any], backward: bool) -> tuple[str, list[Any]]:
    """Rows strictly after (before, when ``backward``) the cursor in the order."""
    values: list[tuple[_Component, Any]] = []
    it = iter(cursor)
    pending_flag: _Component | None = None
    for comp in comps:
        if comp.column is None:
            pending_flag = comp
            continue
        value = next(it)
        if pending_flag is not None:
            values.append((pending_flag, 1 if value is None else 0))
            pending_flag = None
            if value is None:
                continue  # among the NULLs: only the flag and the key order them
        values.append((comp, value))

    sql, params = "", []
    for comp, value in reversed(values):
        op = "<" if comp.descending != backward else ">"
        if not sql:
            sql, params = f"{comp.expr} {op} %s", [value]
        else:
            sql, params = f"({comp.expr} {op} %s OR ({comp.expr} = %s AND {sql}))", [value, value, *params]
    first, first_value = values[0]
    if first.column is not None:
        # Redundant with the OR chain, but sargable: the index range starts here.
        bound = "<=" if first.descending != backward else ">="
        sql = f"{first.expr} {bound} %s AND {sql}"
        params = [first_value, *params]
    return sql, params


def _order_sql(comps: list[_Component], backward: bool) -> str:
    return ", ".join(f"{c.expr} {'DESC' if c.descending != backward else 'ASC'}" for c in comps)


def select_sql(
    table: SearchTable,
    filters: Sequence[Filter],
    sort: Sort | None,
    *,
    limit: int,
    cursor: list[Any] | None = None,
    backward: bool = False,
) -> tuple[str, list[Any]]:
    q = table.backend.quote
    comps = _components(table, sort)
    clauses, params = where_sql(table, filters)
    if cursor is not None:
        predicate, kparams = _keyset_predicate(comps, cursor, backward)
        clauses.append(predicate)
        params.extend(kparams)
    columns = ", ".join(q(c.name) for c in table.columns)
    sql = f"SELECT {columns} FROM {table.qualified}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += f" ORDER BY {_order_sql(comps, backward)}"
    return table.backend.limit_sql(sql, "%s"), [*params, limit]


def _execute(sql: str, params: list[Any], timeout_ms: int | None) -> list[tuple]:
    connection = connections[READONLY_ALIAS]
    with query_time_limit(READONLY_ALIAS, timeout_ms), connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _cursor_of(table: SearchTable, sort: Sort | None, row: tuple) -> str:
    index = {c.name: i for i, c in enumerate(table.columns)}
    return encode_cursor([row[index[c.name]] for c in keyset_columns(table, sort)])


# -- public API ---------------------------------------------------------------
def fetch_page(
    table: SearchTable,
    filters: Sequence[Filter],
    sort: Sort | None,
    *,
    page_size: int,
    after: str | None = None,
    before: str | None = None,
    timeout_ms: int | None = None,
) -> Page:
    """One page of matching rows, after or before a cursor (or the first page).

    Reads page_size + 1 rows under the query time limit; raises QueryTimeout,
    or BadRequest for an unreadable cursor.
    """
    kcols = keyset_columns(table, sort)
    backward = before is not None
    cursor = decode_cursor(before if backward else after, kcols) if (before or after) else None
    sql, params = select_sql(table, filters, sort, limit=page_size + 1, cursor=cursor, backward=backward)
    rows = _execute(sql, params, timeout_ms)
    more = len(rows) > page_size
    rows = rows[:page_size]
    if backward:
        rows.reverse()
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, cursor is not None
    return Page(
        columns=[c.name for c in table.columns],
        rows=rows,
        has_next=has_next and bool(rows),
        has_previous=has_previous and bool(rows),
        next_cursor=_cursor_of(table, sort, rows[-1]) if rows else None,
        previous_cursor=_cursor_of(table, sort, rows[0]) if rows else None,
    )


def iter_rows(
    table: SearchTable,
    filters: Sequence[Filter],
    sort: Sort | None,
    *,
    batch_size: int,
    max_rows: int,
    timeout_ms: int | None = None,
) -> Iterator[tuple]:
    """Matching rows in order, at most ``max_rows``, read in keyset batches.

    Memory holds one batch at a time; each batch is one query under the time
    limit, so a long export never holds a transaction or a lock open.
    """
    cursor: list[Any] | None = None
    sent = 0
    index = {c.name: i for i, c in enumerate(table.columns)}
    kcols = keyset_columns(table, sort)
    while sent < max_rows:
        limit = min(batch_size, max_rows - sent)
        sql, params = select_sql(table, filters, sort, limit=limit, cursor=cursor)
        rows = _execute(sql, params, timeout_ms)
        yield from rows
        sent += len(rows)
        if len(rows) < limit:
            return
        cursor = [rows[-1][index[c.name]] for c in kcols]


def count_up_to(table: SearchTable, filters: Sequence[Filter], limit: int, timeout_ms: int | None = None) -> int:
    """How many rows match, counting no further than ``limit`` (never the whole table)."""
    clauses, params = where_sql(table, filters)
    inner = f"SELECT 1 FROM {table.qualified}"
    if clauses:
        inner += " WHERE " + " AND ".join(clauses)
    inner = table.backend.limit_sql(inner, "%s")
    rows = _execute(f"SELECT COUNT(*) FROM ({inner}) bounded", [*params, limit], timeout_ms)
    return int(rows[0][0])


def fetch_row(table: SearchTable, key_values: Sequence[Any], timeout_ms: int | None = None) -> dict[str, Any] | None:
    """The archived row with this primary key, as {column: value}, or None."""
    q = table.backend.quote
    columns = ", ".join(q(c.name) for c in table.columns)
    where = " AND ".join(f"{q(name)} = %s" for name in table.key)
    rows = _execute(f"SELECT {columns} FROM {table.qualified} WHERE {where}", list(key_values), timeout_ms)
    if not rows:
        return None
    return dict(zip([c.name for c in table.columns], rows[0], strict=True))
