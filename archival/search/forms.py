"""Filter forms generated from an archive table's live columns.

Exact match on key and contract columns (and the run id), a from/to range on
dates and numbers, "contains" on text, yes/no on booleans. Field names are the
column names (``<column>__from`` / ``<column>__to`` for ranges), so a search
URL reads like the filter it applies. Control parameters start with an
underscore.
"""

from __future__ import annotations

import datetime as dt

from django import forms

from archival.search.catalog import FilterKind, NotSearchable, SearchColumn, SearchTable
from archival.search.query import INT64_MAX, INT64_MIN, MAX_DECIMAL_DIGITS, Filter, Op, Sort

SORT_PARAM = "_sort"
DIR_PARAM = "_dir"
AFTER_PARAM = "_after"
BEFORE_PARAM = "_before"
CAPPED_PARAM = "_accept_cap"
CONTROL_PARAMS = frozenset({SORT_PARAM, DIR_PARAM, AFTER_PARAM, BEFORE_PARAM, CAPPED_PARAM})


def _typed_field(col: SearchColumn, label: str) -> forms.Field:
    if col.generic in {"int", "bigint"}:
        # The widest integer any archive engine stores: a larger value can
        # match no row, and SQLite cannot even bind it (OverflowError).
        return forms.IntegerField(label=label, required=False, min_value=INT64_MIN, max_value=INT64_MAX)
    if col.generic == "decimal":
        return forms.DecimalField(label=label, required=False, max_digits=MAX_DECIMAL_DIGITS)
    if col.generic == "float":
        return forms.FloatField(label=label, required=False)
    if col.generic in {"date", "datetime"}:
        return forms.DateField(label=label, required=False, widget=forms.DateInput(attrs={"type": "date"}))
    return forms.CharField(label=label, required=False, max_length=400)


def field_names(col: SearchColumn) -> list[str]:
    kind = col.filter_kind
    if kind == FilterKind.RANGE:
        return [f"{col.name}__from", f"{col.name}__to"]
    if kind == FilterKind.NONE:
        return []
    return [col.name]


def search_form_class(table: SearchTable) -> type[forms.Form]:
    """A Form class with one or two fields per filterable column."""
    fields: dict[str, forms.Field] = {}
    for col in table.columns:
        kind = col.filter_kind
        if kind == FilterKind.EXACT:
            fields[col.name] = _typed_field(col, col.label)
        elif kind == FilterKind.RANGE:
            fields[f"{col.name}__from"] = _typed_field(col, f"{col.label} from")
            fields[f"{col.name}__to"] = _typed_field(col, f"{col.label} to")
        elif kind == FilterKind.CONTAINS:
            fields[col.name] = forms.CharField(label=f"{col.label} contains", required=False, max_length=400)
        elif kind == FilterKind.BOOLEAN:
            fields[col.name] = forms.ChoiceField(
                label=col.label, required=False, choices=[("", "any"), ("1", "yes"), ("0", "no")]
            )
        for name in field_names(col):
            fields[name].column = col
    return type(f"{table.config.table_name}SearchForm", (forms.Form,), fields)


def check_parameters(table: SearchTable, params) -> None:
    """Every parameter must be a filter of a live column or a control: else 404."""
    known = {name for col in table.columns for name in field_names(col)} | CONTROL_PARAMS
    unknown = sorted(set(params) - known)
    if unknown:
        name = unknown[0]
        base, _, suffix = name.rpartition("__")
        exact = next((c for c in table.columns if c.name == base and c.filter_kind == FilterKind.EXACT), None)
        if exact is not None and suffix in {"from", "to"}:
            raise NotSearchable(
                f"{exact.label} ({exact.name}) is matched exactly, not by a range: search for one value of it, "
                "or narrow by reference date"
            )
        raise NotSearchable(f"{table.label} has no filter {name!r}")
    sort = params.get(SORT_PARAM)
    if sort:
        table.column(sort)  # NotSearchable for an unknown column


def filters_from(table: SearchTable, cleaned: dict) -> list[Filter]:
    filters: list[Filter] = []
    for col in table.columns:
        kind = col.filter_kind
        if kind == FilterKind.RANGE:
            low, high = cleaned.get(f"{col.name}__from"), cleaned.get(f"{col.name}__to")
            if low is not None:
                filters.append(Filter(col, Op.GTE, low))
            if high is not None:
                if col.generic == "datetime":
                    # "to 31 March" includes the whole day.
                    filters.append(Filter(col, Op.LT, high + dt.timedelta(days=1)))
                else:
                    filters.append(Filter(col, Op.LTE, high))
        elif kind in {FilterKind.EXACT, FilterKind.CONTAINS, FilterKind.BOOLEAN}:
            value = cleaned.get(col.name)
            if value in (None, ""):
                continue
            if kind == FilterKind.CONTAINS:
                filters.append(Filter(col, Op.CONTAINS, value))
            elif kind == FilterKind.BOOLEAN:
                filters.append(Filter(col, Op.EQ, value == "1"))
            else:
                filters.append(Filter(col, Op.EQ, value))
    return filters


def sort_from(table: SearchTable, params) -> Sort | None:
    name = params.get(SORT_PARAM)
    if not name:
        return None
    return Sort(table.column(name), descending=params.get(DIR_PARAM) == "desc")
