"""A run's cutoff: one parser and one rule for every entry point.

The command line, the admin, the django-q2 tasks and the engine itself all go
through ``resolve_cutoff``, so "what is a cutoff" is decided once: a calendar
date written ``YYYY-MM-DD`` (ISO 8601's extended form only: Python's
``date.fromisoformat`` would also take ``20261207``), never later than today.
A later cutoff moves its thresholds forward, so it would archive rows the
retention policy still keeps in the source.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from django.utils import timezone

# ASCII digits only: ``\d`` would also match other scripts' digits.
CUTOFF_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class CutoffError(ValueError):
    """A cutoff that is not a YYYY-MM-DD calendar date, or is later than today."""


def parse_cutoff(text: str) -> date:
    """The date ``text`` names, written exactly ``YYYY-MM-DD``; CutoffError otherwise."""
    if not isinstance(text, str) or not CUTOFF_PATTERN.fullmatch(text):
        raise CutoffError(f"cutoff {text!r} is not a date written YYYY-MM-DD (for example 2026-12-07)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CutoffError(f"cutoff {text!r} is not a calendar date (YYYY-MM-DD)") from None


def resolve_cutoff(cutoff: date | str | None, *, today: date | None = None) -> date:
    """The cutoff a run or a plan uses: ``cutoff`` checked, or today when None.

    Raises CutoffError for text that is not ``YYYY-MM-DD``, for a value that
    is not a date, and for a date later than today (local time zone).
    """
    today = today or timezone.localdate()
    if cutoff is None:
        return today
    if isinstance(cutoff, str):
        cutoff = parse_cutoff(cutoff)
    if isinstance(cutoff, datetime) or not isinstance(cutoff, date):
        raise CutoffError(f"cutoff {cutoff!r} is not a date (YYYY-MM-DD)")
    if cutoff > today:
        raise CutoffError(
            f"cutoff {cutoff.isoformat()} is later than today ({today.isoformat()}): it would archive rows "
            "the retention policy still keeps in the source; give today or an earlier date"
        )
    return cutoff
