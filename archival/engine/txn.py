"""The engine's transactions: every statement bounded, SQLite write locks taken up front.

Bounded: before a batch or a count runs, the connection gets the backend's
wait limits (``Backend.session_wait_limits`` before BEGIN,
``Backend.transaction_wait_limits`` inside), from ARCHIVAL_LOCK_TIMEOUT_MS and
ARCHIVAL["STATEMENT_TIMEOUT_MS"]. A statement waiting on another session's
lock gives up after the lock timeout instead of waiting past the slice's time
box, the q2 timeout or the lease; its transaction rolls back and the engine
retries the batch smaller or leaves the table waiting (archival.engine.phases).

SQLite: the archive and source aliases use SQLite's default deferred
transactions, so an idle outer transaction (a test case, a request) locks
nothing. A batch, though, reads then writes several attached files; a
deferred transaction would have to upgrade its read lock, and SQLite refuses
an upgrade at once (no busy wait) when another writer holds the file.
``BEGIN IMMEDIATE`` takes the write locks at the start and waits on the busy
timeout instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connections, transaction


def wait_limits() -> tuple[int, int]:
    """(lock timeout, statement timeout) in milliseconds, from the settings."""
    return settings.ARCHIVAL_LOCK_TIMEOUT_MS, settings.ARCHIVAL["STATEMENT_TIMEOUT_MS"]


def _run(alias: str, statements: list[tuple[str, list]]) -> None:
    if statements:
        with connections[alias].cursor() as cur:
            for sql, params in statements:
                cur.execute(sql, params)


def bound_sessions(aliases) -> None:
    """Give the connections of ``aliases`` the session part of the wait limits now.

    For the statements the engine runs outside its bounded transactions (a
    schema read, a ledger read): on SQLite even those wait for a locked
    source file, on the busy timeout.
    """
    from archival.backends import backend_for

    lock_ms, statement_ms = wait_limits()
    for alias in dict.fromkeys(aliases):
        _run(alias, backend_for(alias).session_wait_limits(lock_ms, statement_ms))


@contextmanager
def bounded_transaction(alias: str, *, write: bool = False) -> Iterator[None]:
    """A transaction on ``alias`` whose statements wait for locks and run for a bounded time.

    ``write``: the transaction writes (SQLite takes its write locks at BEGIN).
    """
    from archival.backends import backend_for

    conn = connections[alias]
    backend = backend_for(alias)
    lock_ms, statement_ms = wait_limits()
    conn.ensure_connection()  # transaction_mode is (re)set when connecting
    _run(alias, backend.session_wait_limits(lock_ms, statement_ms))
    immediate = write and conn.vendor == "sqlite" and not conn.in_atomic_block
    previous = conn.transaction_mode if immediate else None
    if immediate:
        conn.transaction_mode = "IMMEDIATE"
    try:
        with transaction.atomic(using=alias):
            if immediate:
                conn.transaction_mode = previous
            _run(alias, backend.transaction_wait_limits(lock_ms, statement_ms))
            yield
    finally:
        if immediate:
            conn.transaction_mode = previous


def write_transaction(alias: str):
    """A bounded transaction that writes (see ``bounded_transaction``)."""
    return bounded_transaction(alias, write=True)
