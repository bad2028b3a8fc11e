"""Canonical text of primary keys (certificate digests, KEYS holds).

One key is its components in key order, each as text, joined by a TAB:
integers in decimal; decimals as the database returns them, never in exponent
notation (``12.50`` on PostgreSQL numeric(18,2)); dates ISO 8601
``YYYY-MM-DD``; timestamps ``YYYY-MM-DD HH:MM:SS[.ffffff]``; text as is, with
backslash, TAB and newline escaped as ``\\\\``, ``\\t``, ``\\n``; binary as
lower-case hex. The digest is SHA-256 over the lines (one key per line, each
ending in a newline) sorted by their UTF-8 bytes, so an auditor can recompute
it from any export of the keys, whatever the database's collation.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from collections.abc import Iterable, Sequence

ENCODING_NAME = "pk-lines-v1"


def escape_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def component_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return escape_text(str(value))


def key_text(components: Sequence) -> str:
    """Canonical text of one key (a sequence of its components in key order)."""
    return "\t".join(component_text(c) for c in components)


def digest_of_keys(keys: Iterable[Sequence]) -> tuple[str, int]:
    """(SHA-256 hex digest, count) of keys in the canonical encoding."""
    lines = sorted((key_text(k) + "\n").encode("utf-8") for k in keys)
    h = hashlib.sha256()
    for line in lines:
        h.update(line)
    return h.hexdigest(), len(lines)


def digest_of_lines(lines: Iterable[str]) -> str:
    """Digest of already-canonical key texts (one per item, without newline)."""
    h = hashlib.sha256()
    for line in sorted((t + "\n").encode("utf-8") for t in lines):
        h.update(line)
    return h.hexdigest()


def to_json_component(value):
    """A key component as a JSON value for batch bounds (typed back by coerce())."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def coerce(value, generic: str):
    """Turn a JSON bound back into a parameter of the column's type."""
    if value is None:
        return None
    if generic == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    if generic == "datetime" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if generic == "decimal" and isinstance(value, (str, int)):
        return decimal.Decimal(str(value))
    if generic in {"int", "bigint"} and isinstance(value, str):
        return int(value)
    if generic == "binary" and isinstance(value, str):
        return bytes.fromhex(value)
    return value


def keyset_predicate(columns: Sequence[str], op: str) -> tuple[str, int]:
    """Expanded-OR keyset comparison ``(cols) op (params)`` without row values.

    ``columns`` are already quoted and qualified. ``op`` is one of ``>``,
    ``>=``, ``<``, ``<=``. Returns (sql, number of parameters); parameters are
    the key components in order, each repeated as the SQL consumes them (see
    ``keyset_params``).
    """
    strict = op[0]  # > or <
    inclusive = op.endswith("=")
    n = len(columns)

    def build(i: int) -> str:
        col = columns[i]
        last = i == n - 1
        if last:
            return f"{col} {op if inclusive else strict} %s"
        return f"({col} {strict} %s OR ({col} = %s AND {build(i + 1)}))"

    sql = build(0)
    return sql, 2 * n - 1


def keyset_params(values: Sequence) -> list:
    params: list = []
    for i, v in enumerate(values):
        params.append(v)
        if i < len(values) - 1:
            params.append(v)
    return params
