"""One owner per table: a lease on the recovery-state row in the control database.

Claimed with a conditional UPDATE whose row count says who won, which works
on every engine (``select_for_update(skip_locked=True)`` does nothing on
SQLite). This prevents two workers, on any machine, from moving the same table
of the same run at once; the batch transactions would stay correct anyway
(the ledger's unique batch number refuses a replay), the lease avoids the waste.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from archival.engine.errors import LeaseLost
from governance.models import RecoveryState


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease_seconds() -> int:
    return settings.ARCHIVAL["LEASE_SECONDS"]


def owner_is_dead(owner: str) -> bool:
    """True when the owner is a process on this host that no longer exists."""
    try:
        host, pid, _ = owner.split(":", 2)
        pid_num = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid_num, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(state_id: int, worker: str, phases: list[str]) -> bool:
    """Take the table's lease if it is free and the table is in one of ``phases``."""
    now = timezone.now()
    free = Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=worker)
    won = (
        RecoveryState.objects.filter(pk=state_id, phase__in=phases)
        .filter(free)
        .update(
            lease_owner=worker,
            lease_expires_at=now + timedelta(seconds=_lease_seconds()),
            attempts=F("attempts") + 1,
            started_at=Coalesce("started_at", Value(now)),
        )
    )
    if won:
        return True
    # A crashed process on this machine cannot renew; its lease is stale now,
    # not in LEASE_SECONDS. Take it over with the same conditional UPDATE.
    state = RecoveryState.objects.filter(pk=state_id).values("lease_owner").first()
    if state and state["lease_owner"] and owner_is_dead(state["lease_owner"]):
        return bool(
            RecoveryState.objects.filter(pk=state_id, phase__in=phases, lease_owner=state["lease_owner"]).update(
                lease_owner=worker,
                lease_expires_at=now + timedelta(seconds=_lease_seconds()),
                attempts=F("attempts") + 1,
            )
        )
    return False


def renew(state: RecoveryState, worker: str, **fields) -> None:
    """Extend the lease (and save progress fields); raise LeaseLost if another worker took it.

    The in-memory ``state`` gets the values written, so the phase loop need
    not read the row back after every step (only the lease holder writes it).
    """
    now = timezone.now()
    fields.setdefault("lease_expires_at", now + timedelta(seconds=_lease_seconds()))
    fields["updated_at"] = now
    updated = RecoveryState.objects.filter(pk=state.pk, lease_owner=worker).update(**fields)
    if not updated:
        raise LeaseLost(f"lease on recovery state {state.pk} is no longer held by {worker}")
    for name, value in fields.items():
        setattr(state, name, value)


def release(state_id: int, worker: str) -> None:
    RecoveryState.objects.filter(pk=state_id, lease_owner=worker).update(lease_owner="", lease_expires_at=None)
