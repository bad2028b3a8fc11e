"""Calendar arithmetic done in Python, once per run, so every engine agrees."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import Any


def subtract_months(day: date, months: int) -> date:
    """``day`` minus calendar months, clamped to the target month's last day.

    31 March - 1 month = 28 (or 29) February.
    """
    index = day.year * 12 + (day.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(day.day, last))


def add_years(day: date, years: int) -> date:
    """``day`` plus calendar years; 29 February becomes 28 February in a common year."""
    year = day.year + years
    if day.month == 2 and day.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return day.replace(year=year)


def as_date(value: Any) -> date | None:
    """The calendar date of a value a driver returns for a date column (a date,
    a datetime, or ISO text as SQLite keeps it); None for NULL, ValueError when
    the text is not a date."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
