"""Helpers for the SQL Server checks that run without a server.

sqlfluff parses T-SQL one batch at a time here (split on ``GO`` lines, as
sqlcmd does), so a failure names the script and the batch. Parsing only, no
lint rules: the whole sql/ folder parses in a few seconds.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from types import SimpleNamespace

from sqlfluff.core import FluffConfig, Linter

from archival.backends.mssql.backend import MSSQLBackend

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
GO_RE = re.compile(r"(?im)^\s*GO\s*$")


@cache
def _linter() -> Linter:
    return Linter(config=FluffConfig(overrides={"dialect": "tsql"}))


def parse_errors(sql: str) -> list[str]:
    """sqlfluff tsql parse errors, one message per failing GO batch."""
    errors = []
    for number, batch in enumerate(GO_RE.split(sql), start=1):
        if not batch.strip():
            continue
        parsed = _linter().parse_string(batch)
        errors.extend(f"batch {number}: {v.desc()}" for v in parsed.violations)
    return errors


def sql_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


PROC_RE = re.compile(r"CREATE OR ALTER PROCEDURE\s+([\w.\[\]]+)\n(.*?)^AS\n", re.DOTALL | re.MULTILINE)
PARAM_RE = re.compile(r"^@(\w+)\s+([\w]+(?:\s*\([^)]*\))?)(\s*=\s*[^,\s]+)?(\s+OUTPUT)?,?$", re.IGNORECASE)


def procedure_signatures(path: Path, *, with_defaults: bool = True) -> dict[str, list[tuple[str, str, bool]]]:
    """(name, type, is_output) per parameter of each CREATE OR ALTER PROCEDURE in a script.

    ``with_defaults=False`` leaves out the parameters that have a default
    (the caller may omit them).
    """
    found = {}
    for name, header in PROC_RE.findall(path.read_text()):
        params = []
        for line in header.splitlines():
            line = line.strip()
            if not line:
                continue
            m = PARAM_RE.match(line)
            assert m, f"unparsed parameter line in {name}: {line!r}"
            if m.group(3) and not with_defaults:
                continue
            params.append((m.group(1), re.sub(r"\s+", "", m.group(2)).lower(), bool(m.group(4))))
        found[name.replace("[", "").replace("]", "")] = params
    return found


class RecordingCursor:
    """A cursor answering as SQL Server does through ODBC (mssql-python, pyodbc).

    A batch's ``SET NOCOUNT ON|OFF`` stays on the session (the connection)
    until changed; one made inside a procedure reverts when it returns, so a
    procedure call's text changes nothing here. While NOCOUNT is off, each
    INSERT, UPDATE or DELETE of the batch sends its count first, a result
    without columns (``description`` None) ahead of any SELECT; while it is
    on, ``rowcount`` is -1. https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql
    """

    def __init__(self, answers, *, nocount: bool = False, changed: int = 0):
        self.answers = answers
        self.sent = []
        self.nocount = nocount
        self.changed = changed  # rows the next INSERT/UPDATE/DELETE changes
        self._results: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.sent.append((sql, list(params or [])))
        self._results = []
        for statement in (s.strip() for s in sql.split(";") if s.strip()):
            words = statement.upper().split()
            if words[:2] == ["SET", "NOCOUNT"]:
                self.nocount = words[2] == "ON"
            elif words[0] in {"INSERT", "UPDATE", "DELETE"} and not self.nocount:
                self._results.append("count")
            elif words[0] == "SELECT":
                self._results.append("rows")

    @property
    def rowcount(self) -> int:
        return -1 if self.nocount else self.changed

    @property
    def description(self):
        return (("", None, None, None, None, None, None),) if self._results[:1] == ["rows"] else None

    def nextset(self) -> bool:
        self._results = self._results[1:]
        return bool(self._results)

    def fetchone(self):
        assert self._results[:1] == ["rows"], "fetchone on a result without rows"
        answer = self.answers.pop(0)
        return answer(self) if callable(answer) else answer

    def fetchall(self):
        assert self._results[:1] == ["rows"], "fetchall on a result without rows"
        return list(self.answers.pop(0))


def backend_answering(*answers, nocount: bool = False, changed: int = 0, alias: str = "archive"):
    """An MSSQLBackend on a RecordingCursor answering ``answers`` in turn (one per fetch)."""
    backend = object.__new__(MSSQLBackend)
    backend.alias = alias
    cursor = RecordingCursor(list(answers), nocount=nocount, changed=changed)
    backend.connection = SimpleNamespace(cursor=lambda: cursor, vendor="microsoft")
    return backend, cursor
