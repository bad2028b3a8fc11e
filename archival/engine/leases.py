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
from django.db.models import F
from django.utils import timezone

from archival import heartbeat
from archival.engine.errors import LeaseLost
from governance.audit_chain import GuardNotMet
from governance.models import AuditEvent, RecoveryState
from governance.rowsql import (
    column,
    fetch_with_parents,
    prep,
    update_and_fetch_with_parents,
    update_statement,
    update_where,
)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease_seconds() -> int:
    return settings.ARCHIVAL["LEASE_SECONDS"]


def owner_is_dead(owner: str) -> bool:
    """True when the owner is a process known to be gone.

    On this host: no process with its PID. On another host: a worker whose
    heartbeat stopped (archival.heartbeat); a process that never beat (a CLI
    run elsewhere) is presumed alive until its lease expires.
    """
    try:
        host, pid, _ = owner.split(":", 2)
        pid_num = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return heartbeat.is_dead(owner)
    try:
        os.kill(pid_num, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(state_id: int, worker: str, phases: list[str]) -> RecoveryState | None:
    """Take the table's lease if it is free and the table is in one of ``phases``.

    Returns the state as the claim left it, with its config and run (read in
    the claim's own statement where the engine can), or None when the lease
    was not won.
    """
    now = timezone.now()
    expires = now + timedelta(seconds=_lease_seconds())
    owner, until = column(RecoveryState, "lease_owner"), column(RecoveryState, "lease_expires_at")
    started = column(RecoveryState, "started_at")
    attempts = column(RecoveryState, "attempts")
    state = update_and_fetch_with_parents(
        RecoveryState,
        {"lease_owner": worker, "lease_expires_at": expires},
        pk=state_id,
        parents=["config", "run"],
        where={"phase": list(phases)},
        raw_sets=[f"{attempts} = {attempts} + 1", f"{started} = COALESCE({started}, %s)"],
        raw_where=[
            (f"{owner} = '' OR {until} < %s OR {owner} = %s", [prep(RecoveryState, "lease_expires_at", now), worker])
        ],
        raw_set_params=[prep(RecoveryState, "started_at", now)],
    )
    if state is not None:
        return state
    # A crashed process on this machine cannot renew; its lease is stale now,
    # not in LEASE_SECONDS. Take it over with the same conditional UPDATE.
    holder = RecoveryState.objects.filter(pk=state_id).values("lease_owner").first()
    if holder and holder["lease_owner"] and owner_is_dead(holder["lease_owner"]):
        taken = RecoveryState.objects.filter(pk=state_id, phase__in=phases, lease_owner=holder["lease_owner"]).update(
            lease_owner=worker,
            lease_expires_at=expires,
            attempts=F("attempts") + 1,
        )
        if taken:
            return fetch_with_parents(RecoveryState, pk=state_id, parents=["config", "run"])
    return None


def renew(state: RecoveryState, worker: str, *, audit: dict | None = None, **fields) -> None:
    """Extend the lease (and save progress fields); raise LeaseLost if another worker took it.

    The in-memory ``state`` gets the values written, so the phase loop need
    not read the row back after every step (only the lease holder writes it).
    ``audit``: the arguments of ``AuditEvent.objects.record`` for an event
    that goes in with this write (a phase change), in the caller's
    transaction; the UPDATE is the event's guard, so on PostgreSQL it rides
    in the statement that takes the audit chain's head.
    """
    now = timezone.now()
    fields.setdefault("lease_expires_at", now + timedelta(seconds=_lease_seconds()))
    fields["updated_at"] = now
    # The hottest control-plane write (every phase, every batch): a plain
    # UPDATE from the model's metadata (governance.rowsql).
    if audit is None:
        updated = update_where(RecoveryState, fields, pk=state.pk, where={"lease_owner": worker})
    else:
        guard = update_statement(RecoveryState, fields, pk=state.pk, where={"lease_owner": worker})
        try:
            AuditEvent.objects.record(**audit, guard=guard)
            updated = 1
        except GuardNotMet:
            updated = 0
    if not updated:
        raise LeaseLost(f"lease on recovery state {state.pk} is no longer held by {worker}")
    for name, value in fields.items():
        setattr(state, name, value)


def holder(state_id: int) -> str:
    """Who holds the table's lease now ("" when free): named when a worker finds it lost."""
    return RecoveryState.objects.filter(pk=state_id).values_list("lease_owner", flat=True).first() or ""


def release(state_id: int, worker: str) -> None:
    RecoveryState.objects.filter(pk=state_id, lease_owner=worker).update(lease_owner="", lease_expires_at=None)
