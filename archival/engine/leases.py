"""One owner per piece of work: a lease on its row in the control database.

Three kinds of rows are leased, by the same rules: a table of a run
(``RecoveryState``: one worker moves it), a disposal batch
(``DisposalBatch``: one executor deletes it) and a restore request
(``RestoreRequest``: one executor brings its rows back). A lease is claimed
with a conditional UPDATE whose row count says who won, which works on every
engine (``select_for_update(skip_locked=True)`` does nothing on SQLite): the
row is free, its lease expired, or it is already ours. A lease whose owner
is known to be dead (a process gone from this host, or a worker on another
host whose heartbeat stopped) is taken over at once instead of at expiry.
Work that goes on renews its lease; a renewal that finds another owner
raises LeaseLost, and the work stops without writing more.

The lease saves waste and double work; correctness does not rest on it
alone (the ledger's unique batch number refuses a replayed archive batch, a
disposal certificate is unique per batch, a restore certificate per table).

Owners are worker ids, ``host:pid:random``: :func:`new_worker_id` for work
done in the caller's process (a CLI run, an admin request), and
:func:`process_worker_id` in a django-q2 worker process, whose heartbeat
(archival.heartbeat) names it, so other hosts can tell when it died.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from archival import heartbeat
from archival.engine.errors import LeaseLost
from governance.audit_chain import GuardNotMet
from governance.models import AuditEvent, DisposalBatch, RecoveryState, RestoreRequest
from governance.rowsql import (
    column,
    prep,
    update_and_fetch_with_parents,
    update_statement,
    update_where,
)

_process_worker: tuple[int, str] | None = None  # (pid, id): a forked child gets its own


def new_worker_id() -> str:
    """A fresh lease owner: host, process id and a random part (two claimants in one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_worker_id() -> str:
    """This process's lease owner, fixed per process: the id a django-q2 worker beats under.

    Only for a process that does one piece of work at a time (a q2 worker
    runs one task at a time); threads of a web server each take
    :func:`new_worker_id`, or two requests would both own one lease.
    """
    global _process_worker
    if _process_worker is None or _process_worker[0] != os.getpid():
        _process_worker = (os.getpid(), new_worker_id())
    return _process_worker[1]


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


LeasedRow = TypeVar("LeasedRow", bound=models.Model)


def lease_seconds() -> int:
    return settings.ARCHIVAL["LEASE_SECONDS"]


def free(worker: str, now: datetime) -> Q:
    """Rows whose lease ``worker`` may claim without asking who holds it: free, expired, or its own."""
    return Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=worker)


@dataclass(frozen=True)
class Leases(Generic[LeasedRow]):
    """The lease of one kind of row: claim, renew, release, and who holds it.

    ``parents``: foreign keys read with the row a claim returns (in the
    claim's own statement where the engine can). ``started_field``: set to
    the first claim's time, once. ``updated_field``: stamped on every renewal.
    """

    model: type[LeasedRow]
    parents: tuple[str, ...] = ()
    started_field: str = ""
    updated_field: str = ""

    def claim(
        self, pk: int, worker: str, *, where: dict | None = None, count_attempt: bool = True, **fields
    ) -> LeasedRow | None:
        """Take the lease of row ``pk`` (where ``where`` matches too) and write ``fields`` with it.

        Returns the row as the claim left it, with its ``parents``, or None
        when another live owner holds it. Counts an attempt unless told not
        to (a reservation that the executor's own claim will count).
        """
        model = self.model
        now = timezone.now()
        sets = {"lease_owner": worker, "lease_expires_at": now + timedelta(seconds=lease_seconds()), **fields}
        raw_sets, raw_params = [], []
        if count_attempt:
            attempts = column(model, "attempts")
            raw_sets.append(f"{attempts} = {attempts} + 1")
        if self.started_field:
            started = column(model, self.started_field)
            raw_sets.append(f"{started} = COALESCE({started}, %s)")
            raw_params.append(prep(model, self.started_field, now))
        owner, until = column(model, "lease_owner"), column(model, "lease_expires_at")
        free_or_ours = f"{owner} = '' OR {until} < %s OR {owner} = %s"

        def take(condition: dict, raw_where: list[tuple[str, list]]) -> LeasedRow | None:
            return update_and_fetch_with_parents(
                model,
                sets,
                pk=pk,
                parents=list(self.parents),
                where={**(where or {}), **condition},
                raw_sets=raw_sets,
                raw_set_params=raw_params,
                raw_where=raw_where,
            )

        row = take({}, [(free_or_ours, [prep(model, "lease_expires_at", now), worker])])
        if row is not None:
            return row
        # A crashed owner cannot renew; its lease is stale now, not at its
        # expiry. Taken over by the same conditional UPDATE, on that owner.
        current = self.holder(pk)
        if current and owner_is_dead(current):
            return take({"lease_owner": current}, [])
        return None

    def renew(self, row: LeasedRow, worker: str, *, audit: dict | None = None, **fields) -> None:
        """Extend the lease (and save ``fields``); raise LeaseLost if another worker took it.

        The in-memory ``row`` gets the values written, so a caller need not
        read the row back after every step (only the lease holder writes it).
        ``audit``: the arguments of ``AuditEvent.objects.record`` for an event
        that goes in with this write, in the caller's transaction; the UPDATE
        is the event's guard (no event when the lease is lost), so on
        PostgreSQL it rides in the statement that takes the audit chain's head.
        """
        now = timezone.now()
        fields.setdefault("lease_expires_at", now + timedelta(seconds=lease_seconds()))
        if self.updated_field:
            fields[self.updated_field] = now
        # The hottest control-plane write (every phase, every batch): a plain
        # UPDATE from the model's metadata (governance.rowsql).
        if audit is None:
            updated = update_where(self.model, fields, pk=row.pk, where={"lease_owner": worker})
        else:
            guard = update_statement(self.model, fields, pk=row.pk, where={"lease_owner": worker})
            try:
                AuditEvent.objects.record(**audit, guard=guard)
                updated = 1
            except GuardNotMet:
                updated = 0
        if not updated:
            raise LeaseLost(f"lease on {self.model._meta.verbose_name} {row.pk} is no longer held by {worker}")
        for name, value in fields.items():
            setattr(row, name, value)

    def release(self, pk: int, worker: str, **fields) -> bool:
        """Give the lease up (writing ``fields`` with it) if ``worker`` still holds it; True if it did."""
        owned = self.model._default_manager.filter(pk=pk, lease_owner=worker)
        return bool(owned.update(lease_owner="", lease_expires_at=None, **fields))

    def holder(self, pk: int) -> str:
        """Who holds the lease now ("" when free): named when a worker finds it lost."""
        return self.model._default_manager.filter(pk=pk).values_list("lease_owner", flat=True).first() or ""

    def takeable(self, rows: models.QuerySet, worker: str, now: datetime) -> Q:
        """Of ``rows``, those ``worker``'s claim would win: free, expired, its own, or held by a dead owner."""
        held = rows.exclude(free(worker, now)).order_by().values_list("lease_owner", flat=True).distinct()
        dead = [owner for owner in held if owner_is_dead(owner)]
        return free(worker, now) | Q(lease_owner__in=dead)


# A table of a run: claimed with its config and run, which the worker needs next.
tables = Leases(RecoveryState, parents=("config", "run"), started_field="started_at", updated_field="updated_at")
disposal_batches = Leases(DisposalBatch)
restores = Leases(RestoreRequest, started_field="started_at")
