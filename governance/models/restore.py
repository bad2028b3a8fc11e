"""Restore: archived rows moved back to their source, requested, approved and proven.

Where each model lives, and why:

* ``RestoreRequest`` and ``RestoreTable`` are control-database rows: the
  request, its review, and per table its plan, cursor and progress (the
  recovery state of a restore, as ``RecoveryState`` is that of a run).
* ``RestoreKey``, ``RestoredKey``, ``RestoreLedger`` and ``RestoreCertificate`` live in the
  ARCHIVE database (``governance.routers.ARCHIVE_MODELS``): the keys of a
  KEYS request are matched in SQL inside the batch that moves the rows, and
  a batch's ledger row and a table's certificate commit in the same
  transaction as the archive side of the move they record.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from governance.models.text import free_text_field, free_text_limit


class RestoreSelection(models.TextChoices):
    KEY_RANGE = "KEY_RANGE", "A range of primary keys"
    CONTRACT = "CONTRACT", "The rows of one contract"
    KEYS = "KEYS", "A list of primary keys"
    DATE_RANGE = "DATE_RANGE", "Reference dates in a range"
    RUN = "RUN", "The rows of one archive run"


class RestoreStatus(models.TextChoices):
    PENDING_APPROVAL = "PENDING_APPROVAL", "Waiting for approval"
    APPROVED = "APPROVED", "Approved, waiting for execution"
    EXECUTING = "EXECUTING", "Executing"
    COMPLETED = "COMPLETED", "Completed (certificates issued)"
    REJECTED = "REJECTED", "Rejected"
    FAILED = "FAILED", "Failed (see last error; execute again to resume)"


OPEN_RESTORE_STATUSES = (
    RestoreStatus.PENDING_APPROVAL,
    RestoreStatus.APPROVED,
    RestoreStatus.EXECUTING,
    RestoreStatus.FAILED,
)


class RestoreRequestQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=OPEN_RESTORE_STATUSES)

    def executing_for(self, config_ids):
        """Requests moving rows of these tables now (archival of those tables waits)."""
        return self.filter(status=RestoreStatus.EXECUTING, tables__config_id__in=list(config_ids)).distinct()


class RestoreRequest(models.Model):
    config = models.ForeignKey(
        "governance.TableConfig",
        on_delete=models.PROTECT,
        related_name="restore_requests",
        help_text="The table whose archived rows go back to the source.",
    )
    table_label = models.CharField(max_length=400, help_text="source.schema.table when requested.")
    selection = models.CharField(max_length=16, choices=RestoreSelection, help_text="Which rows come back.")
    key_low = models.JSONField(
        null=True,
        blank=True,
        help_text="KEY_RANGE: first primary key (inclusive), components in key order.",
    )
    key_high = models.JSONField(
        null=True,
        blank=True,
        help_text="KEY_RANGE: last primary key (inclusive), components in key order.",
    )
    contract_value = models.CharField(
        max_length=200,
        blank=True,
        help_text="CONTRACT: the contract id, matched against the table's contract column.",
    )
    date_from = models.DateField(null=True, blank=True, help_text="DATE_RANGE: first reference date.")
    date_to = models.DateField(null=True, blank=True, help_text="DATE_RANGE: last reference date.")
    archive_run_id = models.BigIntegerField(null=True, blank=True, help_text="RUN: the archival run whose rows.")
    key_count = models.IntegerField(default=0, help_text="KEYS: how many keys were listed (RestoreKey rows).")
    reason = free_text_field(help_text="Why the rows come back (ticket, recalculation, regulator's case).")
    requested_by = models.CharField(max_length=150, help_text="Who asked; may not approve.")
    requested_at = models.DateTimeField(default=timezone.now, help_text="When it was asked for.")
    status = models.CharField(
        max_length=16,
        choices=RestoreStatus,
        default=RestoreStatus.PENDING_APPROVAL,
        help_text="Where the request is in review and execution.",
    )
    decided_by = models.CharField(max_length=150, blank=True, help_text="Compliance officer who approved or rejected.")
    decided_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The deciding user, while the account exists.",
    )
    decided_at = models.DateTimeField(null=True, blank=True, help_text="When it was approved or rejected.")
    decision_comment = free_text_field(blank=True, help_text="The decider's comment.")
    executed_by = models.CharField(max_length=150, blank=True, help_text="Who started the execution.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the first batch began.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the last table completed.")
    lease_owner = models.CharField(
        max_length=200, blank=True, help_text="Worker executing the request (host:pid:uuid), empty when free."
    )
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Another worker may take the request over after this."
    )
    attempts = models.IntegerField(default=0, help_text="Execution attempts.")
    last_error = models.TextField(blank=True, help_text="Last error that stopped the execution.")

    objects = RestoreRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            free_text_limit("restorerequest_reason_max_length", "reason"),
            free_text_limit("restorerequest_comment_max_length", "decision_comment"),
        ]
        permissions = [
            ("request_restore", "Can request and execute restores"),
            ("approve_restore", "Can approve or reject restores"),
        ]

    def __str__(self) -> str:
        return f"Restore {self.pk}: {self.table_label} ({self.get_selection_display()}, {self.status})"


class RestorePhase(models.TextChoices):
    PENDING = "PENDING", "Not started"
    RESTORING = "RESTORING", "Restoring"
    RESTORED = "RESTORED", "Restored (certificate issued)"
    FAILED = "FAILED", "Failed (see last error)"


class RestoreTable(models.Model):
    """One table of a request's plan: the requested table, or a parent whose rows must come back first."""

    request = models.ForeignKey(
        RestoreRequest, on_delete=models.PROTECT, related_name="tables", help_text="The request."
    )
    config = models.ForeignKey(
        "governance.TableConfig", on_delete=models.PROTECT, related_name="+", help_text="The table."
    )
    table_label = models.CharField(max_length=400, help_text="source.schema.table.")
    position = models.IntegerField(help_text="Execution order: parents first, the requested table last.")
    referenced_by = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="parents",
        help_text="For a parent table: the table whose restored rows reference these rows.",
    )
    ref_column = models.CharField(
        max_length=128, blank=True, help_text="Parent table: the referencing table's column pointing here."
    )
    key_column = models.CharField(max_length=128, blank=True, help_text="Parent table: our column it points at.")
    planned_count = models.IntegerField(default=0, help_text="Archived rows selected when previewed.")
    held_count = models.IntegerField(default=0, help_text="Of those, rows an active hold covered when previewed.")
    conflict_count = models.IntegerField(
        default=0, help_text="Selected rows whose key is in the source with other values (the table stops)."
    )
    identical_count = models.IntegerField(
        default=0, help_text="Selected rows already in the source with identical values (skipped)."
    )
    eligible_again_count = models.IntegerField(
        default=0, help_text="Selected rows the current config would archive again at the next run."
    )
    phase = models.CharField(max_length=16, choices=RestorePhase, default=RestorePhase.PENDING)
    cursor = models.JSONField(null=True, blank=True, help_text="Last key restored (keyset cursor).")
    batches_done = models.IntegerField(default=0, help_text="Batches committed.")
    restored_count = models.BigIntegerField(default=0, help_text="Rows inserted into the source.")
    skipped_identical = models.BigIntegerField(default=0, help_text="Rows found identical in the source.")
    certificate_id = models.BigIntegerField(null=True, blank=True, help_text="Restore certificate (archive db id).")
    last_error = models.TextField(blank=True, help_text="Last error that stopped this table.")

    class Meta:
        ordering = ["request_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["request", "config"], name="restoretable_one_per_config"),
        ]

    def __str__(self) -> str:
        return f"Restore {self.request_id} #{self.position}: {self.table_label} ({self.phase})"


class RestoreKey(models.Model):
    """ARCHIVE database: one key of a KEYS request, in the canonical key text of HoldKey."""

    request_id = models.BigIntegerField(help_text="Restore request (control database id).")
    key_text = models.CharField(max_length=1000, help_text="Primary key in canonical text (see HoldKey).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request_id", "key_text"], name="restorekey_unique")]

    def __str__(self) -> str:
        return self.key_text


class RestoredKey(models.Model):
    """ARCHIVE database: one key a restore took out of the archive (the record of what came back).

    Written in the transaction that deletes the row from the archive, so the
    archive keeps, per request and table, exactly the keys it gave back; the
    restore certificate's digest is computed over these lines.
    """

    request_id = models.BigIntegerField(help_text="Restore request (control database id).")
    config_id = models.BigIntegerField(help_text="Table config (control database id).")
    batch_no = models.IntegerField(help_text="The ledger batch that restored it.")
    key_text = models.CharField(max_length=1000, help_text="Primary key in canonical text (pk-lines-v1).")

    class Meta:
        constraints = [
            # A key comes back once per request and table; a replayed batch fails here instead of counting twice.
            models.UniqueConstraint(fields=["request_id", "config_id", "key_text"], name="restoredkey_unique"),
        ]

    def __str__(self) -> str:
        return self.key_text


class RestoreLedgerState(models.TextChoices):
    # Same server: inserted into the source and deleted from the archive in one transaction.
    MOVED = "MOVED", "Moved"
    # Streaming: recorded before the copy into the source; the archive delete is pending.
    COPYING = "COPYING", "Copying to source, archive delete pending"
    # Streaming: the archive rows are gone after the copy committed in the source.
    DELETED = "DELETED", "Copied and deleted from archive"


class RestoreLedger(models.Model):
    """ARCHIVE database: one committed restore batch (the record a resume reconciles against)."""

    request_id = models.BigIntegerField(help_text="Restore request (control database id).")
    config_id = models.BigIntegerField(help_text="Table config (control database id).")
    table_label = models.CharField(max_length=400, help_text="source.schema.table.")
    batch_no = models.IntegerField(help_text="1, 2, ... within the request and table.")
    key_low = models.JSONField(null=True, help_text="Exclusive lower bound (null: the start).")
    key_high = models.JSONField(help_text="Inclusive upper bound: the last key of this batch.")
    row_count = models.IntegerField(help_text="Rows inserted into the source.")
    skipped_identical = models.IntegerField(default=0, help_text="Rows already in the source, identical.")
    deleted_count = models.IntegerField(default=0, help_text="Rows deleted from the archive.")
    held_count = models.IntegerField(default=0, help_text="Of the rows restored, those an active hold covered.")
    state = models.CharField(max_length=8, choices=RestoreLedgerState, help_text="How far the batch got.")
    committed_at = models.DateTimeField(default=timezone.now, help_text="When the archive side committed.")

    class Meta:
        ordering = ["request_id", "config_id", "batch_no"]
        constraints = [
            models.UniqueConstraint(fields=["request_id", "config_id", "batch_no"], name="restoreledger_unique_batch"),
        ]

    def __str__(self) -> str:
        return f"{self.table_label} restore {self.request_id} batch {self.batch_no}: {self.row_count} rows"


class RestoreCertificate(models.Model):
    """ARCHIVE database: proof of one table of an executed restore.

    ``certificate_hash`` covers every field below and ``prev_hash`` (the
    previous restore certificate's hash), so the certificates form their own
    chain; each is also anchored in the audit chain by a ``restore.table_restored``
    event carrying its hash (docs/restore.md).
    """

    request_id = models.BigIntegerField(help_text="Restore request (control database id).")
    config_id = models.BigIntegerField(help_text="Table config (control database id).")
    table_label = models.CharField(max_length=400, help_text="source.schema.table.")
    key_columns = models.JSONField(help_text="Primary key columns in key order.")
    row_count = models.BigIntegerField(help_text="Rows put back into the source.")
    skipped_identical = models.BigIntegerField(help_text="Rows already in the source with identical values.")
    held_count = models.BigIntegerField(help_text="Rows restored while an active hold covered them.")
    digest = models.CharField(max_length=64, help_text="SHA-256 over the restored keys (pk-lines-v1).")
    encoding = models.CharField(max_length=32, default="pk-lines-v1", help_text="Key encoding of the digest.")
    selection = models.JSONField(help_text="What the request selected (kind and values).")
    reason = models.TextField(help_text="The request's reason.")
    requested_by = models.CharField(max_length=150, help_text="Who asked.")
    approved_by = models.CharField(max_length=150, help_text="Who approved.")
    executed_by = models.CharField(max_length=150, help_text="Who executed.")
    executed_at = models.DateTimeField(default=timezone.now, help_text="When the table's last batch committed.")
    prev_hash = models.CharField(max_length=64, blank=True, help_text="certificate_hash of the previous one.")
    certificate_hash = models.CharField(max_length=64, help_text="SHA-256 over this certificate's fields.")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["request_id", "config_id"], name="restorecertificate_one_per_table"),
        ]

    def __str__(self) -> str:
        return f"Restore certificate {self.pk}: {self.table_label}, {self.row_count} rows"
