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

A nullable sort column is read as two segments, rows with a value then rows
without (NULLs last on every engine), each a plain index range; a page that
ends one segment continues into the next with a second query.
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

from archival.rowkeys import keyset_predicate
from archival.search.catalog import READONLY_ALIAS, SearchColumn, SearchTable
from archival.search.limits import query_time_limit


class BadRequest(ValueError):
    """A cursor or key value that cannot be read (a 400, not a 404)."""


# Signed 64-bit: the widest integer column of every archive engine (SQLite's
# INTEGER, BIGINT elsewhere). A value outside it names no row; SQLite cannot
# bind it at all.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# SQL Server's widest decimal (38 digits): a filter or key value with more
# digits (``1e999999``) names no archived row, and PostgreSQL's numeric
# overflows on it.
MAX_DECIMAL_DIGITS = 38


def decimal_fits(value: Decimal) -> bool:
    """Whether ``value`` is a finite decimal of at most MAX_DECIMAL_DIGITS digits (exponent zeros counted)."""
    if not value.is_finite():
        return False
    _, digits, exponent = value.as_tuple()
    # Counted as django.core.validators.DecimalValidator counts them.
    total = len(digits) + exponent if exponent >= 0 else max(len(digits), -exponent)
    return total <= MAX_DECIMAL_DIGITS


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
def named(column: SearchColumn) -> str:
    """A column in a message: its label, then its raw name as the link spells
    it. The label leads so that an error page may capitalize the message
    without changing the raw name (``basketId``, not ``BasketId``)."""
    return f"{column.label} ({column.name})"


def parse_value(column: SearchColumn, text: str | None) -> Any:
    """A typed parameter from the text of a cursor or a URL (BadRequest if unreadable)."""
    if text is None:
        return None
    try:
        if column.generic in {"int", "bigint"}:
            number = int(text)
            if not INT64_MIN <= number <= INT64_MAX:
                raise BadRequest(
                    f"{named(column)}: {text} is out of range (a whole number from {INT64_MIN} to {INT64_MAX})"
                )
            return number
        if column.generic == "decimal":
            number = Decimal(text)
            if not decimal_fits(number):
                raise BadRequest(f"{named(column)}: {text} is not a decimal of at most {MAX_DECIMAL_DIGITS} digits")
            return number
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
    except BadRequest:
        raise
    except (ValueError, InvalidOperation):
        raise BadRequest(f"{named(column)}: {text!r} is not a valid {column.generic}") from None
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
    for f in filters:
        col = table.backend.quote(f.column.name)
        if f.op == Op.IS_NULL:
            clauses.append(f"{col} IS NULL")
        elif f.op == Op.CONTAINS:
            clauses.append(table.backend.contains_sql(col))
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


# A nullable sort column is read in two segments, rows with a value (in the
# column's index order) then rows without (in key order): NULLs last on every
# engine, and each segment is a plain range the planner can read off an index.
# (An ORDER BY on a CASE expression would sort the whole table for every page.)
ALL_ROWS, WITH_VALUE, WITHOUT_VALUE = "all", "with value", "without value"


def _segments(sort: Sort | None) -> list[str]:
    if sort is not None and sort.column.nullable and not sort.column.is_key:
        return [WITH_VALUE, WITHOUT_VALUE]
    return [ALL_ROWS]


def _segment_of(segments: list[str], cursor: list[Any] | None) -> str:
    if cursor is None or segments == [ALL_ROWS]:
        return segments[0]
    return WITHOUT_VALUE if cursor[0] is None else WITH_VALUE


def select_sql(
    table: SearchTable,
    filters: Sequence[Filter],
    sort: Sort | None,
    *,
    limit: int,
    cursor: list[Any] | None = None,
    backward: bool = False,
    segment: str = ALL_ROWS,
) -> tuple[str, list[Any]]:
    """SELECT of one segment of the order, after (before, if ``backward``) the cursor."""
    q = table.backend.quote
    cols = keyset_columns(table, sort)
    values = list(cursor) if cursor is not None else None
    clauses, params = where_sql(table, filters)
    if segment != ALL_ROWS:
        clauses.append(f"{q(cols[0].name)} IS {'NOT ' if segment == WITH_VALUE else ''}NULL")
        if segment == WITHOUT_VALUE:
            cols = cols[1:]
            values = values[1:] if values is not None else None
    descending = bool(sort and sort.descending) != backward
    if values is not None:
        predicate, kparams = keyset_predicate(
            [q(c.name) for c in cols], "<" if descending else ">", values, index_bound=True
        )
        clauses.append(predicate)
        params.extend(kparams)
    sql = f"SELECT {', '.join(q(c.name) for c in table.columns)} FROM {table.qualified}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    direction = "DESC" if descending else "ASC"
    sql += " ORDER BY " + ", ".join(f"{q(c.name)} {direction}" for c in cols)
    return table.backend.limit_sql(sql, "%s"), [*params, limit]


def _execute(sql: str, params: list[Any], timeout_ms: int | None) -> list[tuple]:
    connection = connections[READONLY_ALIAS]
    with query_time_limit(READONLY_ALIAS, timeout_ms), connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _read(
    table: SearchTable,
    filters: Sequence[Filter],
    sort: Sort | None,
    *,
    limit: int,
    cursor: list[Any] | None,
    backward: bool = False,
    timeout_ms: int | None = None,
) -> list[tuple]:
    """Up to ``limit`` rows after (before) the cursor, crossing into the next segment if needed."""
    segments = _segments(sort)
    if backward:
        segments = segments[::-1]
    start = segments.index(_segment_of(segments, cursor))
    rows: list[tuple] = []
    for i, segment in enumerate(segments[start:]):
        sql, params = select_sql(
            table,
            filters,
            sort,
            limit=limit - len(rows),
            cursor=cursor if i == 0 else None,
            backward=backward,
            segment=segment,
        )
        rows += _execute(sql, params, timeout_ms)
        if len(rows) >= limit:
            break
    return rows


def _cursor_values(table: SearchTable, sort: Sort | None, row: tuple) -> list[Any]:
    index = {c.name: i for i, c in enumerate(table.columns)}
    return [row[index[c.name]] for c in keyset_columns(table, sort)]


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
    rows = _read(table, filters, sort, limit=page_size + 1, cursor=cursor, backward=backward, timeout_ms=timeout_ms)
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
        next_cursor=encode_cursor(_cursor_values(table, sort, rows[-1])) if rows else None,
        previous_cursor=encode_cursor(_cursor_values(table, sort, rows[0])) if rows else None,
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
    while sent < max_rows:
        limit = min(batch_size, max_rows - sent)
        rows = _read(table, filters, sort, limit=limit, cursor=cursor, timeout_ms=timeout_ms)
        yield from rows
        sent += len(rows)
        if len(rows) < limit:
            return
        cursor = _cursor_values(table, sort, rows[-1])


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
