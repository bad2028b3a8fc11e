"""SQLite's retention arithmetic against dates.add_years, for every form of value SQLite reads as a date.

The expression takes a shortcut for most rows (one date() call); these cases
are the ones where a shortcut could go wrong: days around 29 February, times
of day, offsets that move a value across midnight, Julian day numbers.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta

import pytest

from archival.backends.sqlite import SQLiteBackend
from archival.engine.dates import add_years


def _values() -> list:
    values: list = []
    day = date(2019, 12, 1)
    while day <= date(2025, 3, 31):
        text = day.isoformat()
        values += [text, f"{text} 13:45:00", f"{text} 23:59:59.999999"]
        if (day.month, day.day) in {(2, 27), (2, 28), (2, 29), (3, 1), (3, 2)}:
            # An offset moves the UTC date SQLite computes by a day either way.
            values += [f"{text}T23:30:00-05:00", f"{text}T00:30:00+09:00", f"{text}T12:00"]
        day += timedelta(days=1)
    return values


@pytest.mark.parametrize("years", [1, 3, 4, 7])
def test_retention_agrees_with_add_years_for_every_date_form(years):
    expr = SQLiteBackend("archive").add_years_sql("v")
    sql = f"SELECT v, date(v), {expr} FROM t".replace("%s", "?").replace("%%", "%")
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v)")
    db.executemany("INSERT INTO t VALUES (?)", [(v,) for v in _values()])
    # Julian day numbers, as REAL and as text.
    db.execute("INSERT INTO t SELECT julianday(v) FROM t WHERE v LIKE '____-02-2_' OR v LIKE '____-03-01'")
    db.execute("INSERT INTO t SELECT CAST(julianday(v) AS TEXT) FROM t WHERE v LIKE '2020-02-29'")
    # 29 February 2020 as a ten-character Julian day text, a value that is no date, and NULL.
    db.execute("INSERT INTO t VALUES ('2458908.50'), ('not a date'), (NULL)")
    rows = db.execute(sql, [years] * sql.count("?")).fetchall()
    assert len(rows) > 5900
    wrong = [
        (value, as_date, got)
        for value, as_date, got in rows
        if got != (add_years(date.fromisoformat(as_date), years).isoformat() if as_date else None)
    ]
    assert wrong == []
