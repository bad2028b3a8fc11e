"""Keyset predicates in the expanded OR form.

Row-value comparisons ``(a, b) > (?, ?)`` are avoided: MariaDB does not
range-scan them and SQL Server has none. The leading column also gets a plain
``a >= ?`` / ``a <= ?`` conjunct so every planner can use it as the index
range start/stop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def _nested(cols: Sequence[str], values: Sequence, strict_op: str, last_op: str) -> tuple[str, list]:
    head, *rest = cols
    if not rest:
        return f"{head} {last_op} %s", [values[0]]
    inner_sql, inner_params = _nested(rest, values[1:], strict_op, last_op)
    return f"({head} {strict_op} %s OR ({head} = %s AND {inner_sql}))", [
        values[0],
        values[0],
        *inner_params,
    ]


def after(cols: Sequence[str], values: Sequence) -> tuple[str, list]:
    """Rows whose key is strictly greater than ``values``."""
    sql, params = _nested(cols, values, ">", ">")
    if len(cols) > 1:
        return f"({cols[0]} >= %s AND {sql})", [values[0], *params]
    return sql, params


def up_to(cols: Sequence[str], values: Sequence) -> tuple[str, list]:
    """Rows whose key is less than or equal to ``values``."""
    sql, params = _nested(cols, values, "<", "<=")
    if len(cols) > 1:
        return f"({cols[0]} <= %s AND {sql})", [values[0], *params]
    return sql, params


def key_range(cols: Sequence[str], low: Sequence | None, high: Sequence | None) -> tuple[str, list]:
    """``low < key <= high``; either bound may be None (open)."""
    parts, params = [], []
    if low is not None:
        sql, p = after(cols, low)
        parts.append(sql)
        params += p
    if high is not None:
        sql, p = up_to(cols, high)
        parts.append(sql)
        params += p
    return (" AND ".join(parts) if parts else "1 = 1"), params


def order_by(cols: Sequence[str], descending: bool = False) -> str:
    direction = " DESC" if descending else ""
    return ", ".join(f"{c}{direction}" for c in cols)


def qualify(alias: str, quote: Callable[[str], str], names: Sequence[str]) -> list[str]:
    return [f"{alias}.{quote(n)}" for n in names]
