"""The append-only audit trail and the head of its hash chain (governance.audit_chain)."""

from __future__ import annotations

import socket

from django.db import models

from governance.actors import actor_name
from governance.audit_chain import AuditChainHeadManager


class AuditEventManager(models.Manager):
    def record(
        self,
        action: str,
        *,
        actor: object | None = None,
        outcome: str = "OK",
        obj: object | None = None,
        run_id: int | None = None,
        table_label: str = "",
        counts: dict | None = None,
        details: dict | None = None,
        guard: tuple[str, list] | None = None,
    ) -> AuditEvent:
        """The one write path for audit rows (nothing else creates them).

        ``actor`` is a user, a string naming a process, or None (the system).
        Snapshots are stored as text so the event survives deletions.
        ``guard``: an UPDATE that must change one row for the event to go in
        (``AuditChainHead.objects.append``; GuardNotMet otherwise).
        """
        user = actor if hasattr(actor, "get_username") else None
        actor_text = actor_name(actor)
        event = self.model(
            action=action,
            actor=actor_text,
            actor_user=user if user is not None and user.pk else None,
            outcome=outcome,
            object_type=type(obj).__name__ if obj is not None else "",
            object_id=str(getattr(obj, "pk", "") or "") if obj is not None else "",
            object_repr=str(obj)[:400] if obj is not None else "",
            run_id=run_id,
            table_label=table_label,
            counts=counts or {},
            details=details or {},
            host=socket.gethostname()[:255],
        )
        event.full_clean(exclude=["actor_user", "prev_hash", "entry_hash"])
        # Appended under the locked chain head: the hash chain never forks,
        # whichever worker writes.
        return AuditChainHead.objects.append(event, guard=guard)


class AuditEvent(models.Model):
    occurred_at = models.DateTimeField(
        auto_now_add=True,
        db_index=True,
        help_text="When it happened (server time, UTC).",
    )
    actor = models.CharField(
        max_length=150,
        help_text="Username or process, as text so it survives user deletion.",
    )
    actor_user = models.ForeignKey(
        "auth.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The user, while the account exists.",
    )
    action = models.CharField(
        max_length=64,
        db_index=True,
        help_text="What happened, e.g. run.started, table.completed, hold.placed.",
    )
    outcome = models.CharField(max_length=16, default="OK", help_text="OK, FAILED, REFUSED, BLOCKED, ...")
    object_type = models.CharField(max_length=64, blank=True, help_text="Model name of the object concerned.")
    object_id = models.CharField(max_length=64, blank=True, help_text="Its primary key, as text.")
    object_repr = models.CharField(
        max_length=400,
        blank=True,
        help_text="Its description when the event was written.",
    )
    run_id = models.BigIntegerField(
        null=True,
        blank=True,
        db_index=True,
        help_text="Archival run concerned, if any.",
    )
    table_label = models.CharField(
        max_length=400,
        blank=True,
        db_index=True,
        help_text="source.schema.table concerned, if any.",
    )
    counts = models.JSONField(default=dict, blank=True, help_text="Row counts and other figures.")
    details = models.JSONField(
        default=dict,
        blank=True,
        help_text="Anything else worth keeping (errors, filters, comments).",
    )
    host = models.CharField(max_length=255, blank=True, help_text="Machine that wrote the event.")
    prev_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="entry_hash of the previous event in the hash chain.",
    )
    entry_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 over this event and prev_hash (docs/disposal.md); verify_chain checks it.",
    )

    objects = AuditEventManager()

    class Meta:
        ordering = ["-id"]
        permissions = [("export_auditevent", "Can export the audit trail")]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"


class AuditChainHead(models.Model):
    """Control database: the locked head of the audit hash chain.

    ``AuditEvent.objects.record`` appends through ``AuditChainHead.objects``,
    which locks this row first, so two workers never link to the same
    predecessor (the chain never forks).
    """

    name = models.CharField(max_length=32, unique=True, help_text="Chain name; 'audit' is the one used.")
    last_event_id = models.BigIntegerField(null=True, blank=True, help_text="Id of the newest chained audit event.")
    head_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="entry_hash of the newest chained audit event.",
    )

    objects = AuditChainHeadManager()

    def __str__(self) -> str:
        return f"Chain {self.name} at {self.last_event_id}"
