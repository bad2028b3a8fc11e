"""The engine's transactions: every statement bounded, write locks taken as early as the engine allows.

Bounded: before a batch or a count runs, the connection gets the backend's
wait limits (``Backend.session_wait_limits`` before BEGIN,
``Backend.transaction_wait_limits`` inside), from ARCHIVAL_LOCK_TIMEOUT_MS and
ARCHIVAL["STATEMENT_TIMEOUT_MS"]. A statement waiting on another session's
lock gives up after the lock timeout instead of waiting past the slice's time
box, the q2 timeout or the lease; its transaction rolls back and the engine
retries the batch smaller or leaves the table waiting (archival.engine.phases).

Write locks: each backend says how (``Backend.write_transaction``): on SQLite
a batch that reads then writes several attached files must take the write
locks up front (``BEGIN IMMEDIATE``), since SQLite refuses at once to upgrade
a read lock while another writer holds the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.conf import settings
from django.db import connections, transaction

from archival.backends import backend_for


def wait_limits() -> tuple[int, int]:
    """(lock timeout, statement timeout) in milliseconds, from the settings."""
    return settings.ARCHIVAL_LOCK_TIMEOUT_MS, settings.ARCHIVAL["STATEMENT_TIMEOUT_MS"]


def _run(alias: str, statements: Sequence[tuple[str, list | None]]) -> None:
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
    lock_ms, statement_ms = wait_limits()
    for alias in dict.fromkeys(aliases):
        _run(alias, backend_for(alias).session_wait_limits(lock_ms, statement_ms))


@contextmanager
def bounded_transaction(alias: str, *, write: bool = False) -> Iterator[None]:
    """A transaction on ``alias`` whose statements wait for locks and run for a bounded time.

    ``write``: the transaction writes (the backend takes its write locks as
    early as it can). Inside an open transaction the block is a savepoint.
    """
    backend = backend_for(alias)
    lock_ms, statement_ms = wait_limits()
    connections[alias].ensure_connection()
    _run(alias, backend.session_wait_limits(lock_ms, statement_ms))
    with backend.write_transaction() if write else transaction.atomic(using=alias):
        _run(alias, backend.transaction_wait_limits(lock_ms, statement_ms))
        yield


def write_transaction(alias: str):
    """A bounded transaction that writes (see ``bounded_transaction``)."""
    return bounded_transaction(alias, write=True)
