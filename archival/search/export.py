"""CSV lines for an export, formula-escaped (governance.spreadsheet), produced one row at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from archival.search.query import value_text
from governance.spreadsheet import SafeCsvWriter


def cell(value: Any) -> Any:
    """The cell as the export writes it (before escaping).

    A number from a numeric column (-5) is data, not a formula, and stays a
    number; other values are their canonical text (dates, bytes as hex).
    """
    if value is None:
        return ""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return value
    return value if isinstance(value, str) else value_text(value)


def csv_lines(header: list[str], rows: Iterable[tuple]) -> Iterator[str]:
    writer = SafeCsvWriter()
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([cell(v) for v in row])
