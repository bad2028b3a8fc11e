"""Helpers for the SQL Server checks that run without a server.

sqlfluff parses T-SQL one batch at a time here (split on ``GO`` lines, as
sqlcmd does), so a failure names the script and the batch. Parsing only, no
lint rules: the whole sql/ folder parses in a few seconds.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlfluff.core import FluffConfig, Linter

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
