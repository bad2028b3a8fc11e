"""Primary keys: their canonical text and the keyset predicates that page through them.

Canonical key text (KEYS holds, restore keys, certificate digests, the
search page's hold list). One key is its components in key order, each as
text, joined by a TAB:

- integers in decimal;
- decimals with as many fraction digits as the column's scale, never in
  exponent notation (``12.50`` on a numeric(18,2), as PostgreSQL, MariaDB and
  SQL Server print it; SQLite keeps 12.5, so its SQL form pads it); a decimal
  column of unknown scale as the value prints;
- booleans ``true`` / ``false`` (whatever the driver hands back: SQLite and
  MariaDB return 1/0 for a boolean column, so the column's generic type
  decides);
- dates ISO 8601 ``YYYY-MM-DD``; timestamps ``YYYY-MM-DD HH:MM:SS``, with
  ``.ffffff`` only when the fraction is not zero;
- text as is, with backslash, TAB and newline escaped as ``\\\\``, ``\\t``,
  ``\\n`` (so the TAB between components and the newline between keys of a
  digest stay unambiguous);
- binary as lower-case hex.

A KEYS hold stores this text and the disposal delete compares it with the
same text built in SQL (``Backend.key_text_sql``, per dialect, and
``archival.fn_key_text`` in the SQL Server procedures): those expressions are
forms of this rule and are tested against ``key_text`` on real rows.

The digest is SHA-256 over the lines (one key per line, each ending in a
newline) sorted by their UTF-8 bytes, so an auditor can recompute it from any
export of the keys, whatever the database's collation.

Keyset predicates, in the expanded OR form ``a > ? OR (a = ? AND b > ?)``:
row-value comparisons are avoided because MariaDB does not range-scan them
and SQL Server has none. The leading column may also get a plain ``a >= ?``
conjunct (``index_bound``), redundant with the OR chain but sargable, so
every planner starts its index range there.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

ENCODING_NAME = "pk-lines-v1"

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n"})


# -- canonical key text ------------------------------------------------------------
def escape_text(value: str) -> str:
    """A text component with backslash, TAB and newline escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _datetime_text(value: dt.datetime) -> str:
    # An aware value (a timestamptz key) is written as its UTC wall time, the
    # text PostgreSQL's to_char gives in the UTC sessions Django opens.
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    # isoformat omits the fraction when it is zero and prints six digits otherwise.
    return value.isoformat(sep=" ")


def scale_of(column: Any) -> int | None:
    """The decimal scale of a key column (``archival.backends.base.Column``) its key text pads to; None when not a decimal or unknown."""
    if column.generic != "decimal":
        return None
    return column.size[1]


def _decimal_text(value: Any, scale: int | None) -> str | None:
    """A number read from a decimal column (SQLite hands back int or float) at ``scale``; None when not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal)):
        return None
    number = decimal.Decimal(repr(value)) if isinstance(value, float) else decimal.Decimal(value)
    if not number.is_finite():
        return None
    if scale is not None:
        # Enough precision for any numeric(p, s) (p <= 1000 on PostgreSQL).
        number = number.quantize(decimal.Decimal(1).scaleb(-scale), context=decimal.Context(prec=1100))
    return format(number, "f")


def component_text(value: Any, generic: str | None = None, scale: int | None = None) -> str:
    """Canonical text of one key component.

    ``generic``: the column's generic type (``archival.backends.base.Column``)
    when known; it decides what a driver's 1/0 for a boolean column means.
    ``scale``: a decimal column's scale (``scale_of``).
    """
    if value is None:
        return ""
    if generic == "bool" and not isinstance(value, str):
        return "true" if value else "false"
    if generic == "decimal":
        text = _decimal_text(value, scale)
        if text is not None:
            return text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return _datetime_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return escape_text(str(value))


def key_text(
    components: Sequence[Any], generics: Sequence[str] | None = None, scales: Sequence[int | None] | None = None
) -> str:
    """Canonical text of one key (its components in key order).

    ``generics`` and ``scales``: the key columns' generic types and decimal
    scales (``scale_of``), when known.
    """
    if generics is None:
        return "\t".join(component_text(c) for c in components)
    if scales is None:
        scales = [None] * len(generics)
    return "\t".join(component_text(c, g, s) for c, g, s in zip(components, generics, scales, strict=True))


def parse_component(text: str, generic: str) -> Any:
    """A key component typed by a person (the hold form) as a value of its column's type.

    Raises ValueError when ``text`` is not a value of that type. Text columns
    take the text as typed (``key_text`` escapes it).
    """
    if generic == "bool":
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(f"{text!r} is not a boolean (true/false, 1/0)")
    if generic in {"int", "bigint"}:
        return int(text)
    if generic == "decimal":
        try:
            return decimal.Decimal(text)
        except decimal.InvalidOperation:
            raise ValueError(f"{text!r} is not a decimal") from None
    if generic == "float":
        return float(text)
    if generic == "date":
        return dt.date.fromisoformat(text.strip())
    if generic == "datetime":
        return dt.datetime.fromisoformat(text.strip())
    if generic == "binary":
        return bytes.fromhex(text.strip())
    return text


def key_text_of_input(
    components: Sequence[Any], generics: Sequence[str] | None, scales: Sequence[int | None] | None = None
) -> str:
    """Canonical text of a key given as values or as typed text (ValueError when a text is not of its type).

    A text component of a column that is not text is read as a value of the
    column's type first (``1`` and ``true`` name the same boolean; a date
    typed ``2024-02-29`` is the date; ``12.5`` on a numeric(18,2) is
    ``12.50``, given ``scales``). Without ``generics`` (the table's types are
    unknown) the components are taken as they are.
    """
    if generics is None:
        return key_text(components)
    values = [parse_component(c, g) if isinstance(c, str) else c for c, g in zip(components, generics, strict=True)]
    return key_text(values, generics, scales)


TYPED_GENERICS = frozenset({"bool", "int", "bigint", "decimal", "float", "date", "datetime", "binary"})


def _unescaped(text: str) -> str | None:
    """``text`` with the canonical escapes undone; None when it has a backslash that starts no escape."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "\\":
            out.append(text[i])
            i += 1
            continue
        pair = text[i : i + 2]
        if pair not in ("\\\\", "\\t", "\\n"):
            return None
        out.append({"\\\\": "\\", "\\t": "\t", "\\n": "\n"}[pair])
        i += 2
    return "".join(out)


def canonical_key_text(stored: str, generics: Sequence[str], scales: Sequence[int | None] | None = None) -> str:
    """The canonical form of a stored key text, read by its key columns' types (ValueError when it cannot be read).

    Reads what earlier writers stored besides the canonical form: booleans as
    ``1``/``0`` (or any word ``parse_component`` takes), timestamps with a
    ``T`` or a shortened fraction, decimals short of the column's scale, and
    text written without escapes: a backslash that starts no escape, or TABs
    inside the one text column of a key (the extra TABs can belong to no
    other component). A text whose every backslash starts an escape is read
    as escaped: both readings are then possible, and the escaped one is the
    form the hold form has always stored.
    """
    parts = stored.split("\t")
    text_columns = [i for i, g in enumerate(generics) if g not in TYPED_GENERICS]
    raw: set[int] = set()
    if len(parts) > len(generics) and len(text_columns) == 1:
        i, extra = text_columns[0], len(parts) - len(generics)
        parts = [*parts[:i], "\t".join(parts[i : i + extra + 1]), *parts[i + extra + 1 :]]
        raw.add(i)
    if len(parts) != len(generics):
        raise ValueError(f"{len(parts)} component(s) where the key has {len(generics)}")
    values: list[Any] = []
    for i, (part, generic) in enumerate(zip(parts, generics, strict=True)):
        if generic in TYPED_GENERICS:
            try:
                values.append(parse_component(part, generic))
            except ValueError as exc:
                raise ValueError(f"component {i + 1}: {exc}") from None
        else:
            text = None if i in raw else _unescaped(part)
            values.append(part if text is None else text)
    return key_text(values, generics, scales)


def digest_of_lines(lines: Iterable[str]) -> str:
    """Digest of already-canonical key texts (one per item, without newline)."""
    h = hashlib.sha256()
    for line in sorted((t + "\n").encode("utf-8") for t in lines):
        h.update(line)
    return h.hexdigest()


def digest_of_keys(keys: Iterable[Sequence[Any]]) -> tuple[str, int]:
    """(SHA-256 hex digest, count) of keys in the canonical encoding."""
    texts = [key_text(k) for k in keys]
    return digest_of_lines(texts), len(texts)


def key_bounds(keys: Sequence[tuple[Any, ...]]) -> tuple[Any, Any]:
    """The first and last of ``keys`` in key order (None, None when there are none).

    Compared as tuples of their components; a NULL component (SQLite lets
    one into a primary key column that is not declared NOT NULL) compares as
    the text ``None``, so such keys still have an order.
    """
    if not keys:
        return None, None
    try:
        return min(keys), max(keys)
    except TypeError:

        def order(k):
            return tuple(str(c) if c is None else c for c in k)

        return min(keys, key=order), max(keys, key=order)


# -- keys as JSON (batch bounds, recovery state) ----------------------------------
def to_json_component(value: Any) -> Any:
    """A key component as a JSON value for batch bounds (typed back by ``coerce``)."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def coerce(value: Any, generic: str) -> Any:
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


# -- keyset predicates ---------------------------------------------------------------
KEYSET_OPS = (">", ">=", "<", "<=")


def keyset_template(columns: Sequence[str], op: str, slots: Sequence[str]) -> tuple[str, list[int]]:
    """The expanded-OR comparison ``(columns) op (slots)``, without outer parentheses.

    ``columns``: SQL expressions (already quoted); ``slots``: what stands for
    each component's value (``%s``, or a T-SQL variable ``@k1``). ``op``: one
    of ``KEYSET_OPS``; the inclusive forms apply the ``=`` to the last column
    only. Returns the SQL and, for each slot occurrence in reading order, the
    index of the component it takes (the parameter order for ``%s`` slots):
    ``a > @k1 OR (a = @k1 AND (b > @k2))``.
    """
    if op not in KEYSET_OPS:
        raise ValueError(f"a keyset comparison is one of {', '.join(KEYSET_OPS)}, not {op!r}")
    if not columns or len(columns) != len(slots):
        raise ValueError("a keyset comparison needs one slot per key column, and at least one column")
    strict = op[0]
    sql, order = "", []
    for i in range(len(columns) - 1, -1, -1):
        column, slot = columns[i], slots[i]
        if not sql:
            sql, order = f"{column} {op} {slot}", [i]
        else:
            sql, order = f"{column} {strict} {slot} OR ({column} = {slot} AND ({sql}))", [i, i, *order]
    return sql, order


def keyset_predicate(
    columns: Sequence[str], op: str, values: Sequence[Any], *, index_bound: bool = False
) -> tuple[str, list[Any]]:
    """Rows whose key compares ``op`` to ``values``: (parenthesized SQL, parameters).

    ``index_bound``: also ``columns[0] >= values[0]`` (``<=`` for ``<``/``<=``),
    so the planner starts an index range at the bound (a multi-column
    keyset otherwise reads as a filter on some engines).
    """
    sql, order = keyset_template(columns, op, ["%s"] * len(columns))
    params = [values[i] for i in order]
    if index_bound and len(columns) > 1:
        return f"({columns[0]} {op[0]}= %s AND ({sql}))", [values[0], *params]
    return f"({sql})", params


def after(columns: Sequence[str], values: Sequence[Any]) -> tuple[str, list[Any]]:
    """Rows whose key is strictly greater than ``values``."""
    return keyset_predicate(columns, ">", values, index_bound=True)


def up_to(columns: Sequence[str], values: Sequence[Any]) -> tuple[str, list[Any]]:
    """Rows whose key is less than or equal to ``values``."""
    return keyset_predicate(columns, "<=", values, index_bound=True)


def key_range(columns: Sequence[str], low: Sequence[Any] | None, high: Sequence[Any] | None) -> tuple[str, list[Any]]:
    """``low < key <= high``; either bound may be None (open)."""
    parts, params = [], []
    if low is not None:
        sql, p = after(columns, low)
        parts.append(sql)
        params += p
    if high is not None:
        sql, p = up_to(columns, high)
        parts.append(sql)
        params += p
    return (" AND ".join(parts) if parts else "1 = 1"), params


def order_by(columns: Sequence[str], descending: bool = False) -> str:
    direction = " DESC" if descending else ""
    return ", ".join(f"{c}{direction}" for c in columns)


def qualify(alias: str, quote: Callable[[str], str], names: Sequence[str]) -> list[str]:
    return [f"{alias}.{quote(n)}" for n in names]
