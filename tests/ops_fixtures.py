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


class DatabaseOutage:
    """A TCP relay in front of a database server that the test can stop and start, like the server itself.

    Connections to ``alias`` go through the relay (its settings are pointed at
    the relay's port). ``stop()`` closes the listening socket and every relayed
    connection: the client sees its connection drop and then "connection
    refused", as when the server stops. ``start()`` listens again on the
    same port. The shared server itself is never touched.
    """

    def __init__(self, alias: str):
        import socket

        self.alias = alias
        self.settings = connections[alias].settings_dict
        self.upstream = (self.settings.get("HOST") or "127.0.0.1", int(self.settings.get("PORT") or 0))
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener = None
        self.open: list = []
        self.lock = threading.Lock()

    def __enter__(self) -> DatabaseOutage:
        self.saved = (self.settings.get("HOST"), self.settings.get("PORT"))
        self.settings["HOST"], self.settings["PORT"] = "127.0.0.1", str(self.port)
        connections[self.alias].close()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        connections[self.alias].close()
        self.settings["HOST"], self.settings["PORT"] = self.saved

    def start(self) -> None:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        import socket

        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self.lock:
            for sock in self.open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.open.clear()

    def _accept(self, listener) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    server.close()
                    return
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass
