"""Loading table configs from a CSV or XLSX file: validate every row, then load all or nothing.

The same ``TableConfigResource`` as the admin's import (django-import-export's
``Resource.import_data``): every row goes through ``full_clean()``, which
reads the live source schema. A dry run comes first; if any row fails, every
failure is reported with its line and field and nothing is loaded. The
columns are documented in docs/configs.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import NON_FIELD_ERRORS
from import_export.formats.base_formats import CSV, XLSX

from governance.admin.configs import TableConfigResource


@dataclass(frozen=True)
class RowError:
    line: int | None  # the line of the file (the header is line 1); None: the file as a whole
    field: str  # a column name, or "" when the error is about the row or the file
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass
class LoadResult:
    rows: int = 0
    new: int = 0
    updated: int = 0
    skipped: int = 0
    loaded: bool = False  # True once the rows were written (never on a dry run or with errors)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def read_dataset(path: Path):
    """The file as a tablib Dataset (CSV in UTF-8, with or without a BOM, or XLSX)."""
    if path.suffix.lower() == ".xlsx":
        return XLSX().create_dataset(path.read_bytes())
    return CSV().create_dataset(path.read_text(encoding="utf-8-sig"))


def _errors_of(result) -> list[RowError]:
    errors = [RowError(None, "", str(getattr(e, "error", e))) for e in result.base_errors]
    for invalid in result.invalid_rows:
        for name, messages in invalid.error_dict.items():
            for message in messages:
                errors.append(RowError(invalid.number + 1, "" if name == NON_FIELD_ERRORS else name, str(message)))
    for number, row_errors in result.row_errors():
        for e in row_errors:
            errors.append(RowError(number + 1, "", f"{type(e.error).__name__}: {e.error}"))
    return sorted(errors, key=lambda e: (e.line or 0, e.field))


def load_configs(path: Path | str, *, user=None, dry_run: bool = False) -> LoadResult:
    """Validate every row of ``path``; unless ``dry_run``, load them if all are valid.

    ``user``: whose permissions apply to a row that changes a config's years
    in archive (that change goes through ``request_retention_change``); with
    no user such a row is an error. Nothing is written when any row fails.
    """
    path = Path(path)
    dataset = read_dataset(path)
    result = LoadResult(rows=len(dataset))
    kwargs = {"user": user, "file_name": path.name, "raise_errors": False}
    checked = TableConfigResource().import_data(dataset, dry_run=True, **kwargs)
    result.errors = _errors_of(checked)
    if result.rows == 0 and not result.errors:
        result.errors = [RowError(None, "", "the file has no config rows under its header")]
    if result.errors or dry_run:
        _count(result, checked)
        return result
    done = TableConfigResource().import_data(dataset, dry_run=False, **kwargs)
    result.errors = _errors_of(done)  # the rows changed since the check: import_data rolled back
    _count(result, done)
    result.loaded = not result.errors
    return result


def _count(result: LoadResult, import_result) -> None:
    totals = import_result.totals
    result.new, result.updated, result.skipped = totals["new"], totals["update"], totals["skip"]
