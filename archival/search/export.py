"""CSV lines for an export, formula-escaped, produced one row at a time."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from archival.search.query import value_text

# A spreadsheet treats a cell starting with one of these as a formula
# (CSV injection); a leading apostrophe makes it plain text.
FORMULA_PREFIXES = ("=", "+", "-", "@")


class _Line:
    """File-like object whose write() returns the text, for csv.writer."""

    def write(self, text: str) -> str:
        return text


def escape_cell(value: Any) -> str:
    """The cell text; text values starting with = + - @ get a leading '.

    Only values the database returned as text are escaped: a number from a
    numeric column (-5) is data, not a formula, and stays a number.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_PREFIXES) else value
    return value_text(value) or ""


def csv_lines(header: list[str], rows: Iterable[tuple]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow([escape_cell(h) for h in header])
    for row in rows:
        yield writer.writerow([escape_cell(v) for v in row])
