"""The config import's failed rows as a reader checks them: each error beside
the value it is about, the row's other values after it."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def error_cells(row, headers) -> dict:
    """``{"errors": [...], "others": [...]}`` for one InvalidRow of
    django-import-export: each cell is ``{"column", "value", "errors"}``; the
    columns with an error come first, in the file's column order, then the
    errors that name no column."""
    errors = row.field_specific_errors
    cells = [
        {"column": column, "value": value, "errors": errors.get(column, [])}
        for column, value in zip(headers, row.values, strict=False)
    ]
    named = {cell["column"] for cell in cells}
    # An error on a field the file has no column for still needs a line.
    orphans = [{"column": name, "value": "", "errors": msgs} for name, msgs in errors.items() if name not in named]
    whole_row = (
        [{"column": "", "value": "", "errors": row.non_field_specific_errors}] if row.non_field_specific_errors else []
    )
    return {
        "errors": [c for c in cells if c["errors"]] + orphans + whole_row,
        "others": [c for c in cells if not c["errors"]],
    }
