"""Models that live in the archive database (see governance.routers).

They commit in the same transaction as the archive rows they describe: the
batch ledger with each move, hold checks and certificates with each disposal.
Archive models refer to control rows (runs, configs) by id only, since
foreign keys cannot cross databases.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from governance.models.text import free_text_field, free_text_limit


class HoldScope(models.TextChoices):
    ALL = "ALL", "All tables"
    TABLE = "TABLE", "One table"
    CONTRACT = "CONTRACT", "One contract"
    DATE_RANGE = "DATE_RANGE", "Reference dates in a range"
    KEYS = "KEYS", "Explicit keys of one table"


class HoldQuerySet(models.QuerySet):
    def active(self, at=None):
        """Holds in force now: not released, and hold-until not passed."""
        today = timezone.localdate() if at is None else at
        return self.filter(released_at__isnull=True).filter(Q(hold_until__isnull=True) | Q(hold_until__gte=today))

    def due_for_review(self, at=None):
        today = timezone.localdate() if at is None else at
        return self.active(today).filter(review_by__lte=today)


class Hold(models.Model):
    scope = models.CharField(max_length=16, choices=HoldScope, help_text="What the hold covers.")
    source_db = models.CharField(
        max_length=63,
        blank=True,
        help_text="Source database (TABLE, CONTRACT, KEYS scopes).",
    )
    schema_name = models.CharField(max_length=128, blank=True, help_text="Source schema (TABLE and KEYS scopes).")
    table_name = models.CharField(max_length=128, blank=True, help_text="Source table (TABLE and KEYS scopes).")
    contract_value = models.CharField(
        max_length=200,
        blank=True,
        help_text="CONTRACT scope: the contract id, matched against each table's contract column.",
    )
    date_from = models.DateField(
        null=True,
        blank=True,
        help_text="DATE_RANGE scope: first reference date covered.",
    )
    date_to = models.DateField(
        null=True,
        blank=True,
        help_text="DATE_RANGE scope: last reference date covered.",
    )
    reason = free_text_field(help_text="Why the rows are held (matter, regulator, ticket).")
    placed_by = models.CharField(max_length=150, help_text="Who placed the hold.")
    placed_at = models.DateTimeField(default=timezone.now, help_text="When the hold was placed.")
    review_by = models.DateField(null=True, blank=True, help_text="Compliance reviews the hold by this date.")
    hold_until = models.DateField(
        null=True,
        blank=True,
        help_text="Hold ends after this date; empty: until released.",
    )
    released_by = models.CharField(max_length=150, blank=True, help_text="Who released the hold.")
    released_at = models.DateTimeField(null=True, blank=True, help_text="When the hold was released.")
    release_reason = free_text_field(blank=True, help_text="Why the hold was released.")

    objects = HoldQuerySet.as_manager()

    class Meta:
        ordering = ["-placed_at"]
        indexes = [
            # Disposal reads the active holds inside every delete transaction.
            models.Index(fields=["released_at", "hold_until"], name="hold_active_idx"),
            models.Index(fields=["source_db", "table_name"], name="hold_table_idx"),
        ]
        constraints = [
            # Typed by people: bounded on every write path (governance.models.text).
            free_text_limit("hold_reason_max_length", "reason"),
            free_text_limit("hold_release_reason_max_length", "release_reason"),
        ]
        permissions = [("release_hold", "Can release a hold")]

    def __str__(self) -> str:
        return describe_hold(**{name: getattr(self, name) for name in DESCRIBED_BY})


# The fields a hold's description reads (``describe_hold``): what a caller
# that describes many holds fetches with ``values(*DESCRIBED_BY)``.
DESCRIBED_BY = ("pk", "scope", "source_db", "schema_name", "table_name", "contract_value", "date_from", "date_to")


def describe_hold(*, pk, scope, source_db, schema_name, table_name, contract_value, date_from, date_to) -> str:
    """A hold in words, "Hold 7: contract C3 in SourceDB1" (its ``str``, and the disposal certificate's)."""
    target = {
        HoldScope.ALL: "all tables",
        HoldScope.TABLE: f"{source_db}.{schema_name}.{table_name}",
        HoldScope.CONTRACT: f"contract {contract_value} in {source_db}",
        HoldScope.DATE_RANGE: f"reference dates {date_from} to {date_to}",
        HoldScope.KEYS: f"keys of {source_db}.{schema_name}.{table_name}",
    }.get(scope, scope)
    return f"Hold {pk}: {target}"


class HoldKey(models.Model):
    hold = models.ForeignKey(
        Hold,
        on_delete=models.PROTECT,
        related_name="keys",
        help_text="The KEYS hold this key belongs to.",
    )
    key_text = models.CharField(
        max_length=1000,
        help_text="Primary key in canonical text: components in key order joined by a tab, dates ISO 8601, decimals as text.",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hold", "key_text"], name="holdkey_unique")]

    def __str__(self) -> str:
        return self.key_text


class LedgerState(models.TextChoices):
    # Same server: the batch moved and committed in one transaction.
    MOVED = "MOVED", "Moved"
    # Streaming: copied to the archive; the source delete has not committed yet.
    COPIED = "COPIED", "Copied, source delete pending"
    # Streaming: source rows deleted after the copy.
    DELETED = "DELETED", "Copied and deleted from source"


class BatchLedger(models.Model):
    run_id = models.BigIntegerField(help_text="Archival run (control database id).")
    config_id = models.BigIntegerField(help_text="Table config (control database id).")
    table_label = models.CharField(max_length=400, help_text="source.schema.table.")
    batch_no = models.IntegerField(help_text="1, 2, ... within the run and table.")
    key_low = models.JSONField(
        null=True,
        help_text="Exclusive lower bound: the cursor before this batch (null: the start).",
    )
    key_high = models.JSONField(help_text="Inclusive upper bound: the last key moved in this batch.")
    row_count = models.IntegerField(help_text="Rows inserted into the archive by this batch.")
    deleted_count = models.IntegerField(default=0, help_text="Rows deleted from the source by this batch.")
    state = models.CharField(max_length=8, choices=LedgerState, help_text="How far the batch got.")
    committed_at = models.DateTimeField(default=timezone.now, help_text="When the archive side committed.")

    class Meta:
        ordering = ["run_id", "config_id", "batch_no"]
        constraints = [
            # A batch is recorded once: a replayed batch fails here and rolls back.
            models.UniqueConstraint(fields=["run_id", "config_id", "batch_no"], name="ledger_unique_batch"),
        ]

    def __str__(self) -> str:
        return f"{self.table_label} run {self.run_id} batch {self.batch_no}: {self.row_count} rows"
