"""One function per search page; each audits what it showed or sent.

The views parse nothing and decide nothing: they call ``search``,
``row_detail`` or ``export`` with the request's user and parameters and render
the result object. Names are resolved (``catalog``) and parameters checked
(``forms.check_parameters``) before any data query, so a table or column that
is not configured raises NotSearchable (404) without touching archive data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django import forms

from archival.search.catalog import NotSearchable, SearchTable
from archival.search.covering_holds import holds_covering
from archival.search.export import csv_lines
from archival.search.forms import (
    AFTER_PARAM,
    BEFORE_PARAM,
    CAPPED_PARAM,
    check_parameters,
    filters_from,
    search_form_class,
    sort_from,
)
from archival.search.limits import QueryTimeout, search_setting
from archival.search.query import (
    BadRequest,
    Filter,
    Page,
    Sort,
    count_up_to,
    fetch_page,
    fetch_row,
    iter_rows,
    parse_value,
)
from governance.models import AuditEvent, Hold

# Rows per query while exporting: big enough to amortise the round trip,
# small enough that one batch is a few hundred kilobytes.
EXPORT_BATCH_ROWS = 1000


@dataclass
class SearchResult:
    table: SearchTable
    form: forms.Form
    sort: Sort | None
    page: Page | None = None
    timed_out: bool = False
    timeout_ms: int = 0
    filters: list[Filter] = field(default_factory=list)


@dataclass
class RowResult:
    table: SearchTable
    row: dict[str, Any]
    key_values: list[Any]
    holds: list[Hold]


@dataclass
class ExportResult:
    table: SearchTable
    form: forms.Form
    max_rows: int
    matched: int = 0  # counted up to max_rows + 1 only
    over_cap: bool = False  # more rows match than the cap, and the user has not accepted the first max_rows
    timed_out: bool = False
    lines: Iterator[str] | None = None

    @property
    def capped(self) -> bool:
        return self.matched > self.max_rows


def _filters_detail(filters: list[Filter], sort: Sort | None) -> dict:
    return {
        "filters": [{"column": f.column.name, "op": f.op, "value": str(f.value)} for f in filters],
        "sort": f"{sort.column.name} {'desc' if sort.descending else 'asc'}" if sort else "key",
    }


def _prepare(table: SearchTable, params) -> tuple[forms.Form, list[Filter], Sort | None]:
    check_parameters(table, params)
    form = search_form_class(table)(params)
    sort = sort_from(table, params)
    filters = filters_from(table, form.cleaned_data) if form.is_valid() else []
    return form, filters, sort


def search(user, table: SearchTable, params) -> SearchResult:
    """One page of the table's archived rows matching ``params``; audited.

    Raises NotSearchable for an unknown parameter or sort column, BadRequest
    for an unreadable page cursor. An invalid form runs no query.
    """
    form, filters, sort = _prepare(table, params)
    result = SearchResult(table=table, form=form, sort=sort, filters=filters)
    if not form.is_valid():
        return result
    detail = _filters_detail(filters, sort)
    detail["page"] = "previous" if params.get(BEFORE_PARAM) else "next" if params.get(AFTER_PARAM) else "first"
    try:
        result.page = fetch_page(
            table,
            filters,
            sort,
            page_size=search_setting("PAGE_SIZE"),
            after=params.get(AFTER_PARAM) or None,
            before=params.get(BEFORE_PARAM) or None,
        )
    except QueryTimeout as exc:
        result.timed_out, result.timeout_ms = True, exc.timeout_ms
        AuditEvent.objects.record(
            "archive.search", actor=user, outcome="TIMEOUT", table_label=table.label, counts={"rows": 0}, details=detail
        )
        return result
    AuditEvent.objects.record(
        "archive.search", actor=user, table_label=table.label, counts={"rows": len(result.page.rows)}, details=detail
    )
    return result


def row_detail(user, table: SearchTable, params) -> RowResult:
    """One archived row by its full primary key, with the holds covering it; audited."""
    missing = [name for name in table.key if not params.get(name)]
    extra = set(params) - set(table.key)
    if missing or extra:
        raise NotSearchable(f"a row of {table.label} is named by exactly its key ({', '.join(table.key)})")
    key_values = [parse_value(table.column(name), params[name]) for name in table.key]
    row = fetch_row(table, key_values)
    if row is None:
        raise NotSearchable(f"no archived row of {table.label} has that key")
    holds = holds_covering(table, row)
    AuditEvent.objects.record(
        "archive.view_row",
        actor=user,
        table_label=table.label,
        counts={"rows": 1, "holds": len(holds)},
        details={"key": {name: params[name] for name in table.key}},
    )
    return RowResult(table=table, row=row, key_values=key_values, holds=holds)


def export(user, table: SearchTable, params) -> ExportResult:
    """Plan a CSV export of the rows matching ``params``.

    Counts matches up to the cap + 1 (never the whole table). Over the cap,
    nothing is streamed unless the request accepts the first EXPORT_MAX_ROWS
    rows (``_accept_cap=1``). ``result.lines`` streams the CSV in keyset
    batches and writes the audit event when the stream ends, with the number
    of rows actually sent.
    """
    form, filters, sort = _prepare(table, params)
    max_rows = search_setting("EXPORT_MAX_ROWS")
    result = ExportResult(table=table, form=form, max_rows=max_rows)
    if not form.is_valid():
        return result
    detail = _filters_detail(filters, sort)
    try:
        result.matched = count_up_to(table, filters, max_rows + 1)
    except QueryTimeout:
        result.timed_out = True
        AuditEvent.objects.record(
            "archive.export", actor=user, outcome="TIMEOUT", table_label=table.label, details=detail
        )
        return result
    if result.capped and params.get(CAPPED_PARAM) != "1":
        result.over_cap = True
        AuditEvent.objects.record(
            "archive.export",
            actor=user,
            outcome="OVER_CAP",
            table_label=table.label,
            counts={"rows": 0, "cap": max_rows},
            details=detail,
        )
        return result
    result.lines = _stream(user, table, filters, sort, max_rows, detail, result.capped)
    return result


def _stream(user, table: SearchTable, filters, sort, max_rows: int, detail: dict, capped: bool) -> Iterator[str]:
    sent = 0
    outcome = "INCOMPLETE"  # the client went away, or the server failed mid-stream

    def counted(rows):
        nonlocal sent
        for row in rows:
            sent += 1
            yield row

    rows = iter_rows(table, filters, sort, batch_size=EXPORT_BATCH_ROWS, max_rows=max_rows)
    try:
        yield from csv_lines([c.name for c in table.columns], counted(rows))
        outcome = "OK"
    except QueryTimeout as exc:
        outcome = "TIMEOUT"
        # The status line has gone out already: say it in the file itself.
        yield f"EXPORT INCOMPLETE: a query ran past the {exc.timeout_ms} ms limit after {sent} rows\r\n"
    finally:
        AuditEvent.objects.record(
            "archive.export",
            actor=user,
            outcome=outcome,
            table_label=table.label,
            counts={"rows": sent, "cap": max_rows, "capped": capped},
            details=detail,
        )


__all__ = ["BadRequest", "ExportResult", "NotSearchable", "RowResult", "SearchResult", "export", "row_detail", "search"]
