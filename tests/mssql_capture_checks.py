"""Is a captured batch T-SQL that SQL Server 2019 runs? (sqlfluff tsql + constructs SQL Server lacks).

sqlfluff's T-SQL dialect accepts some syntax SQL Server 2019 rejects (it
knows newer versions), and a few foreign constructs parse as something else
(``LIMIT 5`` as a table alias). So besides the parse, string literals and
[quoted names] are blanked out and the remaining text is searched for the
constructs SQL Server 2019 does not have.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tests.mssql_fixtures import parse_errors

# (pattern on the text outside literals and names, what SQL Server lacks)
FOREIGN_CONSTRUCTS = [
    (r"\bRETURNING\b", "RETURNING (T-SQL has OUTPUT)"),
    (r"\bLIMIT\b", "LIMIT (T-SQL has TOP / OFFSET FETCH)"),
    (r"\bON\s+CONFLICT\b", "ON CONFLICT (T-SQL has MERGE)"),
    (r"\bON\s+DUPLICATE\s+KEY\b", "ON DUPLICATE KEY"),
    (r"\|\|", "|| concatenation (T-SQL has + / CONCAT)"),
    (r"\bILIKE\b", "ILIKE"),
    (r"\bIS\s+(?:NOT\s+)?DISTINCT\s+FROM\b", "IS [NOT] DISTINCT FROM (SQL Server 2022, not 2019)"),
    (r"\b(?:GREATEST|LEAST)\s*\(", "GREATEST/LEAST (SQL Server 2022, not 2019)"),
    (r"\)\s*(?:<=|>=|<>|<|>|=)\s*\(\s*@P\d+\s*,", "row-value comparison"),
    (r"\bFOR\s+UPDATE\b", "FOR UPDATE (T-SQL uses table hints)"),
    (r"\bNULLS\s+(?:FIRST|LAST)\b", "NULLS FIRST/LAST"),
    (r"\$\d+", "$n parameter"),
    (r"\?", "? parameter left in the batch"),
    (r"%s", "%s parameter left in the batch"),
    (r"::", ":: cast"),
    (r"\bCREATE\s+\w+\s+IF\s+NOT\s+EXISTS\b", "CREATE ... IF NOT EXISTS"),
    (r"\b(?:TRUE|FALSE)\b", "TRUE/FALSE literal"),
    (r"`", "backtick identifier"),
]
_MASK = re.compile(r"N?'(?:[^']|'')*'|\[[^\]]*(?:\]\][^\]]*)*\]")
# GRANT ... ON SCHEMA::[x] and OBJECT::[x] are T-SQL; only bare :: casts are foreign.
_SCOPE = re.compile(r"\b(?:SCHEMA|OBJECT|DATABASE|TYPE|CERTIFICATE)::", re.IGNORECASE)


def _masked(sql: str) -> str:
    return _SCOPE.sub(" ", _MASK.sub("''", sql))


@lru_cache(maxsize=4096)
def foreign_constructs(tsql: str) -> tuple[str, ...]:
    """The constructs of this batch SQL Server 2019 does not have."""
    masked = _masked(tsql)
    return tuple(name for pattern, name in FOREIGN_CONSTRUCTS if re.search(pattern, masked, re.I))


@lru_cache(maxsize=4096)
def violations_of(tsql: str) -> tuple[str, ...]:
    """Why this batch fails the check (empty: it parses as T-SQL and has nothing SQL Server 2019 lacks)."""
    return foreign_constructs(tsql) + tuple(f"sqlfluff tsql: {e}" for e in parse_errors(tsql))
