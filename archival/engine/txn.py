"""Write transactions that take their locks as early as the engine allows.

Each backend says how (``Backend.write_transaction``): on SQLite a batch
that reads then writes several attached files must take the write locks up
front (``BEGIN IMMEDIATE``), since SQLite refuses at once to upgrade a read
lock while another writer holds the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from archival.backends import backend_for


@contextmanager
def write_transaction(alias: str) -> Iterator[None]:
    """A transaction on ``alias`` that will write (a savepoint inside an open one)."""
    with backend_for(alias).write_transaction():
        yield
