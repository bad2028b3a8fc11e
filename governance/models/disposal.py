"""Disposal: the review queue, approvals, certificates, the archive lock.

Where each model lives, and why:

* ``DisposalBatch``, ``DisposalApproval`` and ``RetentionChange`` are
  control-database rows (the review workflow).
* ``DisposalCertificate`` and ``ArchiveLock`` live in the ARCHIVE database
  (``governance.routers.ARCHIVE_MODELS``): a certificate commits in the same
  transaction as the delete it proves, and the lock row is what hold placement
  and every disposal batch take, so the two serialize (DESIGN.md invariant 3).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from governance.models.text import free_text_field, free_text_limit


class BatchStatus(models.TextChoices):
    PENDING_REVIEW = "PENDING_REVIEW", "Waiting for approval"
    APPROVED = "APPROVED", "Approved, waiting for execution"
    EXECUTING = "EXECUTING", "Executing"
    EXECUTED = "EXECUTED", "Executed (certificate issued)"
    REJECTED = "REJECTED", "Rejected"
    FAILED = "FAILED", "Failed (see last error; retried by the next execution)"


OPEN_BATCH_STATUSES = (
    BatchStatus.PENDING_REVIEW,
    BatchStatus.APPROVED,
    BatchStatus.EXECUTING,
    BatchStatus.FAILED,
)


class DisposalBatchQuerySet(models.QuerySet):
    def open(self):
        """Batches not yet executed or rejected: a table with one is not planned again."""
        return self.filter(status__in=OPEN_BATCH_STATUSES)

    def awaiting_review(self):
        return self.filter(status=BatchStatus.PENDING_REVIEW)

    def executable(self):
        return self.filter(status__in=(BatchStatus.APPROVED, BatchStatus.EXECUTING, BatchStatus.FAILED))


class DisposalBatch(models.Model):
    config = models.ForeignKey(
        "governance.TableConfig",
        on_delete=models.PROTECT,
        related_name="disposal_batches",
        help_text="The table whose archived rows this batch disposes of.",
    )
    table_label = models.CharField(max_length=400, help_text="source.schema.table when the batch was planned.")
    table_type = models.CharField(max_length=16, help_text="Table type when planned; it fixed the review policy.")
    batch_no = models.IntegerField(help_text="1, 2, ... within the plan and table, in key order.")
    plan_id = models.CharField(max_length=36, help_text="Identifies the planning call that created this batch.")
    key_low = models.JSONField(help_text="First primary key of the batch (inclusive), components in key order.")
    key_high = models.JSONField(help_text="Last primary key of the batch (inclusive), components in key order.")
    row_count = models.IntegerField(
        validators=[MinValueValidator(1)],
        help_text="Rows planned: expired and not held when planned.",
    )
    held_in_range = models.IntegerField(
        default=0,
        help_text="Expired rows inside the key range that a hold covered when planned. "
        "Execution never deletes more than row_count + held_in_range (holds released since may free these).",
    )
    disposable_before = models.DateField(
        help_text="Only rows whose retention_until is before this date are disposed of (the planning date)."
    )
    planned_by = models.CharField(max_length=150, help_text="Who planned the batch; may not approve it.")
    planned_at = models.DateTimeField(default=timezone.now, help_text="When the batch was planned.")
    required_approvals = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(5)],
        help_text="Approvals by distinct people needed (settings.ARCHIVAL_DISPOSAL_POLICY).",
    )
    status = models.CharField(
        max_length=16,
        choices=BatchStatus,
        default=BatchStatus.PENDING_REVIEW,
        help_text="Where the batch is in review and execution.",
    )
    lease_owner = models.CharField(
        max_length=200,
        blank=True,
        help_text="Worker executing the batch (host:pid:uuid), empty when free.",
    )
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Another worker may take the batch over after this.",
    )
    attempts = models.IntegerField(default=0, help_text="Execution attempts.")
    deleted_count = models.IntegerField(null=True, blank=True, help_text="Rows destroyed (from the certificate).")
    held_count = models.IntegerField(
        null=True,
        blank=True,
        help_text="Expired rows in the key range skipped because a hold covered them at execution.",
    )
    certificate_id = models.BigIntegerField(
        null=True, blank=True, help_text="Disposal certificate (archive database id)."
    )
    executed_by = models.CharField(max_length=150, blank=True, help_text="Who executed the batch.")
    executed_at = models.DateTimeField(null=True, blank=True, help_text="When the delete committed.")
    last_error = models.TextField(blank=True, help_text="Last error that stopped the execution of this batch.")

    objects = DisposalBatchQuerySet.as_manager()

    class Meta:
        ordering = ["config_id", "plan_id", "batch_no"]
        constraints = [
            # A plan numbers its batches per table once; a replayed plan fails here.
            models.UniqueConstraint(
                fields=["plan_id", "config", "batch_no"],
                name="disposalbatch_unique_plan_batch",
            ),
        ]
        indexes = [
            # The executor and the review queue list batches by status, per table.
            models.Index(fields=["status", "config"], name="disposalbatch_status_idx"),
        ]
        permissions = [
            ("plan_disposal", "Can plan and execute disposals"),
            ("approve_disposal", "Can approve or reject disposal batches"),
        ]
        verbose_name_plural = "disposal batches"

    def __str__(self) -> str:
        return f"Disposal {self.pk}: {self.table_label} #{self.batch_no} ({self.row_count} rows, {self.status})"


class Decision(models.TextChoices):
    APPROVE = "APPROVE", "Approve"
    REJECT = "REJECT", "Reject"


class DisposalApproval(models.Model):
    batch = models.ForeignKey(
        DisposalBatch,
        on_delete=models.PROTECT,
        related_name="decisions",
        help_text="The batch decided on.",
    )
    approver = models.CharField(max_length=150, help_text="Who decided, as text so it survives user deletion.")
    approver_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The user, while the account exists.",
    )
    decision = models.CharField(max_length=8, choices=Decision, help_text="Approve or reject.")
    comment = free_text_field(help_text="Why (required for both decisions).")
    decided_at = models.DateTimeField(default=timezone.now, help_text="When the decision was made.")

    class Meta:
        ordering = ["batch_id", "decided_at"]
        constraints = [
            # Two approvals must come from two people: one decision per person per batch.
            models.UniqueConstraint(fields=["batch", "approver"], name="disposalapproval_one_per_person"),
            # Typed by people: bounded on every write path (governance.models.text).
            free_text_limit("disposalapproval_comment_max_length", "comment"),
        ]

    def __str__(self) -> str:
        return f"{self.approver} {self.decision} batch {self.batch_id}"


class DisposalCertificate(models.Model):
    """Proof of one executed batch; archive database, written with the delete.

    ``certificate_hash`` covers every field below and ``prev_hash`` (the
    previous certificate's hash), so the certificates form their own chain;
    each one is also anchored in the audit chain by a ``disposal.executed``
    event carrying its hash (see docs/disposal.md).
    """

    batch_id = models.BigIntegerField(
        unique=True,
        help_text="Disposal batch (control database id). Unique: a batch is destroyed once.",
    )
    config_id = models.BigIntegerField(help_text="Table config (control database id).")
    table_label = models.CharField(max_length=400, help_text="source.schema.table.")
    key_columns = models.JSONField(help_text="Primary key columns in key order.")
    key_low = models.JSONField(
        null=True,
        blank=True,
        help_text="First destroyed key (canonical text), null when nothing was destroyed.",
    )
    key_high = models.JSONField(
        null=True,
        blank=True,
        help_text="Last destroyed key (canonical text), null when nothing was destroyed.",
    )
    planned_count = models.IntegerField(help_text="Rows the approved plan covered.")
    row_count = models.IntegerField(help_text="Rows destroyed.")
    held_count = models.IntegerField(help_text="Expired rows in the range kept because a hold covered them.")
    digest = models.CharField(
        max_length=64,
        help_text="SHA-256 over the destroyed keys in the canonical encoding (docs/disposal.md).",
    )
    encoding = models.CharField(
        max_length=32,
        default="pk-lines-v1",
        help_text="Name of the key encoding the digest uses.",
    )
    disposable_before = models.DateField(help_text="Rows with retention_until before this date were eligible.")
    approvals = models.JSONField(
        default=list,
        blank=True,
        help_text="The approvals that authorised the batch (who, when, comment).",
    )
    holds_checked = models.JSONField(
        default=list, blank=True, help_text="Active holds read inside the delete transaction."
    )
    planned_by = models.CharField(max_length=150, help_text="Who planned the batch.")
    executed_by = models.CharField(max_length=150, help_text="Who executed it.")
    executed_at = models.DateTimeField(
        default=timezone.now,
        help_text="When the delete ran (same transaction as this row).",
    )
    prev_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="certificate_hash of the previous certificate ('' for the first).",
    )
    certificate_hash = models.CharField(
        max_length=64, help_text="SHA-256 over this certificate's fields and prev_hash."
    )

    class Meta:
        ordering = ["id"]
        permissions = [("export_disposalcertificate", "Can export disposal certificates")]

    def __str__(self) -> str:
        return f"Certificate {self.pk}: {self.table_label}, {self.row_count} rows"


class ArchiveLock(models.Model):
    """The one lock row in the archive database.

    Hold placement/release, retention changes and every disposal batch take it
    (``select_for_update`` on PostgreSQL; on SQLite the IMMEDIATE write
    transaction that touches it serializes them), so a hold is either visible
    to a delete's hold check or placed after that delete committed.
    """

    name = models.CharField(max_length=32, unique=True, help_text="Lock name; 'archive' is the one used.")
    holder = models.CharField(max_length=200, blank=True, help_text="Last holder (diagnostics only).")
    taken_at = models.DateTimeField(null=True, blank=True, help_text="When it was last taken.")

    def __str__(self) -> str:
        return f"Archive lock {self.name}"


class RetentionChangeStatus(models.TextChoices):
    PENDING = "PENDING", "Waiting for a compliance officer"
    APPLIED = "APPLIED", "Applied"
    REJECTED = "REJECTED", "Rejected"


class RetentionChange(models.Model):
    config = models.ForeignKey(
        "governance.TableConfig",
        on_delete=models.PROTECT,
        related_name="retention_changes",
        help_text="The table config changed.",
    )
    old_years = models.PositiveIntegerField(help_text="Years in archive before the change (effective value).")
    new_years = models.PositiveIntegerField(
        validators=[MaxValueValidator(100)], help_text="Years in archive requested."
    )
    requested_by = models.CharField(max_length=150, help_text="Who asked for the change.")
    requested_at = models.DateTimeField(default=timezone.now, help_text="When it was asked for.")
    reason = free_text_field(help_text="Why the retention changes (policy, regulation).")
    status = models.CharField(
        max_length=8,
        choices=RetentionChangeStatus,
        help_text="Lengthening applies at once; shortening waits for approval.",
    )
    decided_by = models.CharField(
        max_length=150,
        blank=True,
        help_text="Compliance officer who approved or rejected a shortening.",
    )
    decided_at = models.DateTimeField(null=True, blank=True, help_text="When it was approved, rejected or applied.")
    comment = free_text_field(blank=True, help_text="The decider's comment.")
    rows_updated = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Archived rows whose retention_until was recomputed.",
    )

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            # Two pending changes of one table would race; one must be decided first.
            models.UniqueConstraint(
                fields=["config"],
                condition=models.Q(status="PENDING"),
                name="retentionchange_one_pending_per_config",
            ),
            # Typed by people: bounded on every write path (governance.models.text).
            free_text_limit("retentionchange_reason_max_length", "reason"),
            free_text_limit("retentionchange_comment_max_length", "comment"),
        ]
        permissions = [("approve_retentionchange", "Can approve a shortening of retention")]

    def __str__(self) -> str:
        return f"{self.config}: {self.old_years} -> {self.new_years} years ({self.status})"
