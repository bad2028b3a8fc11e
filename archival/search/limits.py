"""Search settings and the per-query time limit.

The limit is enforced by the database wherever the database can do it:
- PostgreSQL: ``SET LOCAL statement_timeout`` (written as
  ``set_config('statement_timeout', %s, true)`` so the value is a parameter)
  inside a transaction, so it ends with the query's transaction and never
  leaks to the next request on a persistent connection.
- SQLite: a progress handler on the raw connection that interrupts the
  statement once the deadline has passed (SQLite has no statement timeout).
- SQL Server: mssql-django applies ``OPTIONS["query_timeout"]`` (seconds) of
  the archive_readonly alias to every statement. Settings give that alias
  ``MSSQL_READONLY_QUERY_TIMEOUT`` (default: QUERY_TIMEOUT_MS rounded up to
  seconds) and refuse to start without one; we still refuse to search when
  it is 0 (no limit) rather than run unbounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connections, transaction

# PostgreSQL "query_canceled": statement_timeout fired.
PG_QUERY_CANCELED = "57014"
# How many SQLite virtual-machine instructions run between deadline checks:
# small enough to stop within a millisecond or so, large enough to cost nothing.
SQLITE_PROGRESS_STEPS = 1000

_LIMITS = {
    "PAGE_SIZE": (1, 1000),
    "QUERY_TIMEOUT_MS": (10, 600_000),
    "EXPORT_MAX_ROWS": (1, 10_000_000),
}


class QueryTimeout(Exception):
    """A search query ran past the time limit and was stopped by the database."""

    def __init__(self, timeout_ms: int):
        self.timeout_ms = timeout_ms
        super().__init__(f"the query was stopped after {timeout_ms} ms")


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
    connection = connections[alias]
    vendor = connection.vendor
    if vendor == "postgresql":
        try:
            with transaction.atomic(using=alias):
                with connection.cursor() as cur:
                    cur.execute("SELECT set_config('statement_timeout', %s, true)", [str(ms)])
                yield
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == PG_QUERY_CANCELED:
                raise QueryTimeout(ms) from exc
            raise
    elif vendor == "sqlite":
        connection.ensure_connection()
        raw = connection.connection
        deadline = time.monotonic() + ms / 1000
        fired = False

        def interrupt_after_deadline() -> int:
            nonlocal fired
            if time.monotonic() > deadline:
                fired = True
                return 1  # non-zero: SQLite aborts the statement ("interrupted")
            return 0

        raw.set_progress_handler(interrupt_after_deadline, SQLITE_PROGRESS_STEPS)
        try:
            yield
        except OperationalError as exc:
            if fired:
                raise QueryTimeout(ms) from exc
            raise
        finally:
            raw.set_progress_handler(None, SQLITE_PROGRESS_STEPS)
    elif vendor == "microsoft":
        if not connection.settings_dict.get("OPTIONS", {}).get("query_timeout"):
            raise ImproperlyConfigured(
                f"{alias}: set OPTIONS query_timeout (seconds) on SQL Server; searches do not run without a time limit"
            )
        yield
    else:
        raise ImproperlyConfigured(f"{alias}: no query time limit is implemented for {vendor}")
