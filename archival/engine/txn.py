"""Write transactions that take their locks up front on SQLite.

The archive and source aliases use SQLite's default deferred transactions, so
an idle outer transaction (a test case, a request) locks nothing. A batch,
though, reads then writes several attached files; a deferred transaction
would have to upgrade its read lock, and SQLite refuses an upgrade at once
(no busy wait) when another writer holds the file. ``BEGIN IMMEDIATE`` takes
the write locks at the start and waits on the busy timeout instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction


@contextmanager
def write_transaction(alias: str) -> Iterator[None]:
    conn = connections[alias]
    if conn.vendor != "sqlite" or conn.in_atomic_block:
        with transaction.atomic(using=alias):
            yield
        return
    conn.ensure_connection()  # transaction_mode is (re)set when connecting
    previous = conn.transaction_mode
    conn.transaction_mode = "IMMEDIATE"
    try:
        with transaction.atomic(using=alias):
            conn.transaction_mode = previous
            yield
    finally:
        conn.transaction_mode = previous
