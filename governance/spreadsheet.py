"""Cells safe to open in a spreadsheet: the one rule and the one CSV writer of every export.

A spreadsheet reads a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a
formula, and tab or carriage return before them as well (OWASP, "CSV
Injection"); a formula can run commands (DDE) or send the sheet's data away.
Every export (audit trail, archive search, disposal certificates, table
configs in CSV and XLSX) writes its cells through ``escape_cell``:

- defusedcsv (pinned) gives the rule for ``= + - @ | %``: a leading
  apostrophe makes the cell text, pipes are escaped against DDE, and plain
  numbers (``-5``, ``-1,000.50``) stay numbers;
- defusedcsv 3.0 lets a leading tab or carriage return through, which OWASP
  lists: those get the apostrophe here (line feed too, for the same reason);
- numbers from the database (``int``, ``Decimal``) are data and pass as they are.

And in CSV every cell is quoted and embedded quotes doubled (OWASP's other
recommendations), so a separator or quote inside a value cannot start a new
cell whose text begins with a formula.

Values that start with one of these characters come back from an export
with the apostrophe; an import reads them as written.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

import tablib
from defusedcsv import csv as defusedcsv
from import_export.formats.base_formats import CSV, XLSX

# Leading characters defusedcsv does not escape but a spreadsheet may read past.
LEADING_WHITESPACE_TRIGGERS = ("\t", "\r", "\n")


def escape_cell(value: Any) -> Any:
    """``value`` as an export writes it: text that a spreadsheet would run gets a leading '."""
    if isinstance(value, str) and value.startswith(LEADING_WHITESPACE_TRIGGERS):
        return "'" + value
    # defusedcsv's own cell rule (the one its writer applies), so CSV and XLSX agree.
    return defusedcsv._escape(value)


class _Line:
    """File-like object whose write() returns the text, for csv.writer."""

    def write(self, text: str) -> str:
        return text


class SafeCsvWriter:
    """``writerow(cells)`` escapes each cell and returns the CSV line (for streaming responses)."""

    def __init__(self) -> None:
        self._writer = csv.writer(_Line(), quoting=csv.QUOTE_ALL)

    def writerow(self, cells: Iterable[Any]) -> str:
        return self._writer.writerow([escape_cell(cell) for cell in cells])


def escaped_dataset(dataset: tablib.Dataset) -> tablib.Dataset:
    """A copy of ``dataset`` with every header and cell through ``escape_cell``."""
    copy = tablib.Dataset(headers=[escape_cell(h) for h in dataset.headers] if dataset.headers else None)
    for row in dataset:
        copy.append([escape_cell(cell) for cell in row])
    return copy


class SafeCSV(CSV):
    """django-import-export's CSV format, cells escaped and quoted."""

    def export_data(self, dataset, **kwargs):
        kwargs.setdefault("quoting", csv.QUOTE_ALL)
        return super().export_data(escaped_dataset(dataset), **kwargs)


class SafeXLSX(XLSX):
    """django-import-export's XLSX format, cells escaped (openpyxl stores "=..." as a formula)."""

    def export_data(self, dataset, **kwargs):
        return super().export_data(escaped_dataset(dataset), **kwargs)
