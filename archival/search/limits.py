"""Search settings and the per-query time limit.

The limit is enforced by the database wherever the database can do it; each
backend says how (``Backend.query_time_limit``):
- PostgreSQL: ``SET LOCAL statement_timeout`` inside a transaction, so it
  ends with the query's transaction and never leaks to the next request on a
  persistent connection.
- SQLite: a progress handler on the raw connection that interrupts the
  statement once the deadline has passed (SQLite has no statement timeout).
- SQL Server: mssql-django applies ``OPTIONS["query_timeout"]`` (seconds) of
  the archive_readonly alias to every statement. Settings give that alias
  ``MSSQL_READONLY_QUERY_TIMEOUT`` (default: QUERY_TIMEOUT_MS rounded up to
  seconds) and refuse to start without one; we still refuse to search when
  it is 0 (no limit) rather than run unbounded.
- MariaDB: none implemented; searches refuse to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from archival.backends import QueryTimeout, backend_for

__all__ = ["QueryTimeout", "query_time_limit", "search_setting"]

_LIMITS = {
    "PAGE_SIZE": (1, 1000),
    "QUERY_TIMEOUT_MS": (10, 600_000),
    "EXPORT_MAX_ROWS": (1, 10_000_000),
}


def search_setting(name: str) -> int:
    """One ARCHIVAL_SEARCH value, checked when read (fails closed on junk)."""
    conf = getattr(settings, "ARCHIVAL_SEARCH", None)
    if not isinstance(conf, dict) or name not in conf:
        raise ImproperlyConfigured(f"settings.ARCHIVAL_SEARCH[{name!r}] is not set")
    value = conf[name]
    low, high = _LIMITS[name]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ImproperlyConfigured(
            f"settings.ARCHIVAL_SEARCH[{name!r}]={value!r} must be an integer in [{low}, {high}]"
        )
    return value


@contextmanager
def query_time_limit(alias: str, timeout_ms: int | None = None) -> Iterator[None]:
    """Run the enclosed queries on ``alias`` under a time limit.

    Raises QueryTimeout when the database stopped a statement for running past
    the limit. On PostgreSQL the block runs in a transaction (that is what
    scopes SET LOCAL); a cursor fetched from must be drained inside the block.
    """
    ms = search_setting("QUERY_TIMEOUT_MS") if timeout_ms is None else timeout_ms
    with backend_for(alias).query_time_limit(ms):
        yield
