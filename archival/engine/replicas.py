"""The lag of the replicas an administrator asked the engine to watch (``ReplicaWatch``).

Each backend reads its engine's figure (``Backend.replica_lag``): PostgreSQL
on the standby (replay delay while WAL waits to be replayed) or on the
primary (``pg_stat_replication``), MariaDB on the replica
(``Seconds_Behind_Master``), SQL Server on the primary (the availability
group's send and redo queues). A replica that cannot be read (down, broken
replication, no privilege) counts as over its bound: the engine waits rather
than guess, and its wait is bounded (archival.engine.pacing).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import environ
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler

from archival.backends import backend_for, backend_on
from archival.backends.base import ReplicaLag
from governance.models import ConnectionKind, MeasuredOn, ReplicaWatch

logger = logging.getLogger("archival.pacing")


@dataclass(frozen=True)
class Reading:
    name: str
    lag: ReplicaLag
    over: bool  # over the watch's bound (or unknown)

    def describe(self) -> str:
        seconds = "unknown" if self.lag.seconds is None else f"{self.lag.seconds:.1f}s"
        return f"replica {self.name} lag {seconds} ({self.lag.detail})"


def over_bound(lag: ReplicaLag, watch: ReplicaWatch) -> bool:
    """Whether ``lag`` keeps the engine waiting: unknown, or past the watch's bounds."""
    if lag.seconds is None or lag.seconds > watch.max_lag_seconds:
        return True
    return watch.max_queue_kb is not None and lag.queue_kb is not None and lag.queue_kb > watch.max_queue_kb


class ReplicaProbe:
    """Reads the watched replicas of one source database; opens their connections on first use.

    Connections named by an environment variable are this probe's own
    (``close`` closes them); a ``DATABASES`` alias is the thread's usual
    connection. Not thread-safe: one probe per table slice.
    """

    def __init__(self, source_db: str, watches: list[ReplicaWatch]):
        self.source_db = source_db
        self.watches = watches
        self._own: dict[str, BaseDatabaseWrapper] = {}

    def __bool__(self) -> bool:
        return bool(self.watches)

    def _connection(self, watch: ReplicaWatch):
        if not watch.connection:
            return connections[self.source_db]
        if watch.connection_kind == ConnectionKind.ALIAS:
            return connections[watch.connection]
        if watch.connection not in self._own:
            url = os.environ.get(watch.connection)
            if not url:
                raise LookupError(f"{watch.connection} is not set in this worker's environment")
            config = environ.Env.db_url_config(url)
            # A replica that does not answer must not hold the slice for the
            # TCP timeout: a few seconds, then it counts as unknown.
            if config["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.mysql"):
                config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
            alias = watch.connection.lower()
            # A handler of its own: the replica never joins django.db.connections
            # (nothing else can route a query to it). Django's handler insists on
            # a "default"; a dummy one that is never connected.
            handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.dummy"}, alias: config})
            self._own[watch.connection] = handler[alias]
        return self._own[watch.connection]

    def read(self, watch: ReplicaWatch) -> Reading:
        try:
            conn = self._connection(watch)
            on_primary = watch.measured_on == MeasuredOn.PRIMARY
            backend = backend_for(self.source_db) if conn is connections[self.source_db] else backend_on(conn)
            with conn.cursor() as cur:
                lag = backend.replica_lag(cur, on_primary=on_primary, replica=watch.name)
        except Exception as exc:  # noqa: BLE001 (a replica we cannot read is a replica we wait for)
            self._drop(watch)
            lag = ReplicaLag(None, f"cannot read it: {type(exc).__name__}: {str(exc).strip()[:200]}")
        return Reading(watch.name, lag, over_bound(lag, watch))

    def readings(self) -> list[Reading]:
        return [self.read(watch) for watch in self.watches]

    def _drop(self, watch: ReplicaWatch) -> None:
        conn = self._own.pop(watch.connection, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001,S110 (already broken)
                pass

    def close(self) -> None:
        for conn in self._own.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001,S110 (closing a broken connection)
                pass
        self._own.clear()
