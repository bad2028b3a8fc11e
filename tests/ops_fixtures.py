"""A second session that holds a source table's locks, as another application would."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager

from django.db import connections


@contextmanager
def exclusive_lock(alias: str, table: str, schema: str | None = None):
    """Hold an exclusive lock on ``table`` of ``alias`` from a connection of its own until the block ends.

    PostgreSQL: LOCK TABLE ... IN ACCESS EXCLUSIVE MODE in an open
    transaction (blocks reads too); MariaDB: LOCK TABLES ... WRITE; SQLite:
    BEGIN EXCLUSIVE on the source file (the whole file, readers included).
    """
    conn = connections.create_connection(alias)
    vendor = conn.vendor
    if vendor == "sqlite":
        raw = sqlite3.connect(conn.settings_dict["NAME"], isolation_level=None, check_same_thread=False)
        raw.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        return
    conn.ensure_connection()
    raw = conn.connection
    try:
        if vendor == "postgresql":
            raw.autocommit = False
            q = conn.ops.quote_name
            name = f"{q(schema)}.{q(table)}" if schema else q(table)
            with raw.cursor() as cur:
                cur.execute(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
            yield
            raw.rollback()
        elif vendor == "mysql":
            with raw.cursor() as cur:
                cur.execute(f"LOCK TABLES `{table}` WRITE")
            yield
            with raw.cursor() as cur:
                cur.execute("UNLOCK TABLES")
        else:
            raise NotImplementedError(vendor)
    finally:
        conn.close()


class LockHolder:
    """``exclusive_lock`` on a thread, taken at ``start()`` and released at ``release()`` (or after ``seconds``)."""

    def __init__(self, alias: str, table: str, schema: str | None = None, seconds: float | None = None):
        self.args = (alias, table, schema)
        self.seconds = seconds
        self.taken = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        try:
            with exclusive_lock(*self.args):
                self.taken.set()
                self.done.wait(self.seconds)
        except BaseException as exc:  # noqa: BLE001 (reported by release())
            self.error = exc
            self.taken.set()
        finally:
            connections.close_all()

    def start(self) -> LockHolder:
        self.thread.start()
        assert self.taken.wait(30), "the lock was not taken"
        if self.error:
            raise self.error
        return self

    def release(self) -> None:
        self.done.set()
        self.thread.join(30)
        if self.error:
            raise self.error
