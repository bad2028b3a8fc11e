"""Archive search pages: thin views over ``archival.search.service``.

Every page needs a login and ``governance.view_archive_search``; the export
also needs ``governance.export_archive_search``. Anonymous users are sent to
the search login page; a signed-in user without the permission gets a 403.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.views import LoginView
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_GET

from archival.search import service
from archival.search.catalog import NotSearchable, archived_table_names, resolve_table, searchable_configs
from archival.search.forms import AFTER_PARAM, BEFORE_PARAM, CAPPED_PARAM, DIR_PARAM, SORT_PARAM
from archival.search.problems import problem
from archival.search.query import BadRequest, value_text

VIEW_PERM = "governance.view_archive_search"
EXPORT_PERM = "governance.export_archive_search"
HOLD_PERM = "governance.add_hold"
LOGIN_URL = reverse_lazy("search:login")


def reader_required(perm: str):
    def decorate(view):
        return login_required(permission_required(perm, raise_exception=True)(view), login_url=LOGIN_URL)

    return decorate


class SearchLoginView(LoginView):
    template_name = "search/login.html"
    redirect_authenticated_user = True
    next_page = reverse_lazy("search:index")


def _table_or_404(source_db: str, schema: str, table: str):
    try:
        return resolve_table(source_db, schema, table)
    except NotSearchable as exc:
        raise Http404(str(exc)) from None


def _table_or_problem(request, source_db: str, schema: str, table: str):
    """(table, None), or (None, the 404 page saying why and what to do)."""
    try:
        return resolve_table(source_db, schema, table), None
    except NotSearchable as exc:
        return None, problem(request, 404, str(exc))


def _query_string(params, **changes) -> str:
    merged = {k: v for k, v in params.items() if k not in {AFTER_PARAM, BEFORE_PARAM, CAPPED_PARAM}}
    merged.update({k: v for k, v in changes.items() if v is not None})
    return urlencode(merged)


@require_GET
@reader_required(VIEW_PERM)
def index(request):
    source_db = request.GET.get("source_db") or None
    if source_db is not None and source_db not in settings.SOURCE_DATABASES:
        raise Http404("unknown source database")
    configs = searchable_configs(source_db)
    archived: dict[str, set[str]] = {}
    for db in sorted({c.source_db for c in configs}):
        archived[db] = archived_table_names(db)
    tables = [(c, c.table_name in archived.get(c.source_db, set())) for c in configs]
    return render(
        request,
        "search/index.html",
        {"tables": tables, "source_dbs": settings.SOURCE_DATABASES, "source_db": source_db},
    )


@require_GET
@reader_required(VIEW_PERM)
def table_search(request, source_db: str, schema: str, table: str):
    search_table, refused = _table_or_problem(request, source_db, schema, table)
    if refused:
        return refused
    try:
        result = service.search(request.user, search_table, request.GET)
    except NotSearchable as exc:
        return problem(request, 404, str(exc), search_table)
    except BadRequest as exc:
        return problem(request, 400, str(exc), search_table)
    params = request.GET
    current_sort = params.get(SORT_PARAM, "")
    current_dir = params.get(DIR_PARAM, "asc")
    headers = []
    for col in search_table.columns:
        flip = "desc" if current_sort == col.name and current_dir != "desc" else "asc"
        headers.append(
            {
                "name": col.name,
                "label": col.label,
                "meta": col.is_meta,
                "url": "?" + _query_string(params, **{SORT_PARAM: col.name, DIR_PARAM: flip}),
                "active": current_sort == col.name,
                "dir": current_dir if current_sort == col.name else "",
            }
        )
    rows = []
    page = result.page
    if page:
        index_of = {name: i for i, name in enumerate(page.columns)}
        for row in page.rows:
            key = {name: value_text(row[index_of[name]]) for name in search_table.key}
            rows.append(
                {
                    "cells": [
                        {"text": _display(v), "name": name, "meta": search_table.column(name).is_meta}
                        for name, v in zip(page.columns, row, strict=True)
                    ],
                    "detail_query": urlencode(key),
                    # A line of the hold form's keys: components in key order.
                    "hold_key": ",".join(key[name] or "" for name in search_table.key),
                }
            )
    context = {
        "table": search_table,
        "result": result,
        "headers": headers,
        "rows": rows,
        "next_url": "?" + _query_string(params, **{AFTER_PARAM: page.next_cursor}) if page and page.has_next else None,
        "previous_url": "?" + _query_string(params, **{BEFORE_PARAM: page.previous_cursor})
        if page and page.has_previous
        else None,
        "first_url": "?" + _query_string(params) if page and page.has_previous else None,
        "export_url": reverse("search:export", args=[source_db, schema, table]) + "?" + _query_string(params),
        "can_export": request.user.has_perm(EXPORT_PERM),
        # A compliance officer places a keys hold on the rows selected here.
        "hold_add_url": reverse("admin:governance_hold_add") if request.user.has_perm(HOLD_PERM) else None,
        # The sort survives a new search; the page cursor does not.
        "hidden_controls": [(k, params[k]) for k in (SORT_PARAM, DIR_PARAM) if params.get(k)],
    }
    # Filters that do not validate are shown with their errors, as a 400.
    return render(request, "search/table.html", context, status=200 if result.form.is_valid() else 400)


@require_GET
@reader_required(VIEW_PERM)
def row_detail(request, source_db: str, schema: str, table: str):
    search_table, refused = _table_or_problem(request, source_db, schema, table)
    if refused:
        return refused
    try:
        result = service.row_detail(request.user, search_table, request.GET)
    except NotSearchable as exc:
        return problem(request, 404, str(exc), search_table)
    except BadRequest as exc:
        return problem(request, 400, str(exc), search_table)
    data = [(c, _display(result.row[c.name]), c.is_key, c.is_contract) for c in search_table.data_columns]
    meta = [(c, _display(result.row[c.name])) for c in search_table.meta_columns]
    return render(request, "search/detail.html", {"table": search_table, "result": result, "data": data, "meta": meta})


@require_GET
@reader_required(VIEW_PERM)
@permission_required(EXPORT_PERM, raise_exception=True)
def export_csv(request, source_db: str, schema: str, table: str):
    search_table = _table_or_404(source_db, schema, table)
    try:
        result = service.export(request.user, search_table, request.GET)
    except NotSearchable as exc:
        raise Http404(str(exc)) from None
    back = reverse("search:table", args=[source_db, schema, table]) + "?" + _query_string(request.GET)
    if not result.form.is_valid():
        messages.error(request, "Correct the filters before exporting.")
        return redirect(back)
    if result.timed_out:
        messages.error(
            request, "Counting the rows to export ran past the time limit. Narrow the filters and try again."
        )
        return redirect(back)
    if result.over_cap:
        accept = (
            reverse("search:export", args=[source_db, schema, table])
            + "?"
            + _query_string(request.GET, **{CAPPED_PARAM: "1"})
        )
        messages.warning(
            request,
            f"This search matches more than {result.max_rows:,} rows, the export limit. "
            "Narrow the filters, or export only the first rows in the current order.",
        )
        return render(
            request,
            "search/export_capped.html",
            {"table": search_table, "max_rows": result.max_rows, "accept_url": accept, "back_url": back},
            status=200,
        )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    suffix = f"-first-{result.max_rows}" if result.capped else ""
    filename = f"{source_db}-{search_table.config.table_name}-{stamp}{suffix}.csv"
    response = StreamingHttpResponse(result.lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_safe_filename(filename)}"'
    response["X-Export-Row-Cap"] = str(result.max_rows)
    if result.capped:
        response["X-Export-Capped"] = "1"
    return response


def _safe_filename(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _display(value) -> str:
    text = value_text(value)
    return "" if text is None else text
