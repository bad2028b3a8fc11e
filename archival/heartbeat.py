"""Worker heartbeats: each django-q2 worker process says it is alive every few seconds.

A thread in the worker process (started by django-q2's ``post_spawn``
signal) writes the process's ``WorkerHeartbeat`` row every
HEARTBEAT_SECONDS. A worker that stopped beating for STALE_BEATS beats is
dead, or its machine is gone: the sweeper re-enqueues what it took (a slice
it was running, and the tasks its cluster may have fetched from the broker
without running them), and its leases are taken over at once instead of when
they expire (archival.engine.leases.owner_is_dead). It works across machines,
where a PID check cannot, and on both brokers (django-q2's own cluster
statistics live in a cache that the ORM broker does not share between
machines).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone

logger = logging.getLogger("archival.heartbeat")

STALE_BEATS = 3
_started = {"pid": None}


def interval() -> float:
    return float(settings.ARCHIVAL["HEARTBEAT_SECONDS"])


def stale_before(now: datetime | None = None) -> datetime:
    """Workers last seen before this instant are presumed dead."""
    return (now or timezone.now()) - timedelta(seconds=STALE_BEATS * interval())


def beat(worker: str, *, cluster: str = "") -> None:
    """Write this process's heartbeat now (one UPDATE, or an INSERT the first time)."""
    from governance.models import WorkerHeartbeat

    now = timezone.now()
    if not WorkerHeartbeat.objects.filter(worker=worker).update(seen_at=now):
        WorkerHeartbeat.objects.get_or_create(
            worker=worker,
            defaults={
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "cluster": cluster,
                "started_at": now,
                "seen_at": now,
            },
        )


def start(worker: str | None = None) -> bool:
    """Start the heartbeat thread of this process (once per process); True if started now."""
    from archival.engine.leases import process_worker_id

    if _started["pid"] == os.getpid():
        return False
    _started["pid"] = os.getpid()
    worker = worker or process_worker_id()
    cluster = f"{socket.gethostname()}:{os.getppid()}"

    def loop() -> None:
        while True:
            try:
                beat(worker, cluster=cluster)
            except Exception as exc:  # noqa: BLE001 (the control database may be down: keep beating)
                logger.warning("heartbeat of %s not written: %s", worker, exc)
            finally:
                # This thread's own connections: a beat every few seconds needs none kept open.
                connections.close_all()
            time.sleep(interval())

    threading.Thread(target=loop, name="archival-heartbeat", daemon=True).start()
    return True


def on_worker_spawn(sender, proc_name: str = "", **kwargs) -> None:
    """django-q2 ``post_spawn``: a worker process started; it beats from now on.

    Not in sync mode: there q2 runs each task inline in the caller's process
    (and sends ``post_spawn`` there), which is no worker for the sweeper to
    watch, and a beating thread would outlive the caller's databases.
    """
    from django_q.conf import Conf

    if Conf.SYNC:
        return
    start()


def is_dead(worker: str, now: datetime | None = None) -> bool:
    """True when ``worker`` beat before and stopped beating (False when it never beat: not a q2 worker)."""
    from governance.models import WorkerHeartbeat

    seen = WorkerHeartbeat.objects.filter(worker=worker).values_list("seen_at", flat=True).first()
    return seen is not None and seen < stale_before(now)


def died_since(when: datetime, now: datetime | None = None) -> list[str]:
    """Workers alive at ``when`` (or after) that have stopped beating since."""
    from governance.models import WorkerHeartbeat

    return list(
        WorkerHeartbeat.objects.filter(
            seen_at__gte=when - timedelta(seconds=interval()), seen_at__lt=stale_before(now)
        ).values_list("worker", flat=True)
    )
