"""Archival runs and their per-table recovery state."""

from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    RUNNING = "RUNNING", "Running"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Completed with failures"
    STOPPED = "STOPPED", "Stopped"
    ABANDONED = "ABANDONED", "Abandoned"


class Phase(models.TextChoices):
    PENDING = "PENDING", "Pending"
    MARKED = "MARKED", "Marked"
    ARCHIVING = "ARCHIVING", "Archiving"
    ARCHIVED = "ARCHIVED", "Archived"
    VERIFIED = "VERIFIED", "Verified"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    ABANDONED = "ABANDONED", "Abandoned"
    BLOCKED = "BLOCKED", "Blocked by an unfinished run"
    # Not a failure: a database this table needs does not answer, its
    # source table stayed locked by another session, a watched replica stayed
    # behind, or the table is outside its run window. Picked up again by the
    # sweeper (scheduled runs) or `archival resume` (see ``waiting_for``).
    WAITING = "WAITING", "Waiting for a database, a lock, a replica or its run window"


OPEN_PHASES = (
    Phase.PENDING,
    Phase.MARKED,
    Phase.ARCHIVING,
    Phase.ARCHIVED,
    Phase.VERIFIED,
    Phase.FAILED,
    Phase.WAITING,
)
FINAL_PHASES = (Phase.COMPLETED, Phase.ABANDONED, Phase.BLOCKED)


class ArchivalRunQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status=RunStatus.RUNNING)


class ArchivalRun(models.Model):
    cutoff = models.DateField(
        help_text="Fixed when the run starts; thresholds are cutoff minus each table's months in source. A resume keeps it."
    )
    status = models.CharField(
        max_length=16,
        choices=RunStatus,
        default=RunStatus.RUNNING,
        help_text="Overall outcome of the run.",
    )
    trigger = models.CharField(
        max_length=32,
        default="manual",
        help_text="What started the run: manual, schedule, admin, or a command.",
    )
    started_by = models.CharField(max_length=150, blank=True, help_text="User or process that started the run.")
    started_at = models.DateTimeField(auto_now_add=True, help_text="When the run was created.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the last table of the run finished.")
    deadline = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Run window: no new batch starts after this instant.",
    )
    stop_requested = models.BooleanField(
        default=False,
        help_text="Set by an operator: workers finish their current batch and stop.",
    )
    summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="Counts per phase and outcome, written by the finalizer.",
    )
    # Unique: a schedule firing delivered twice (a redelivered task after a
    # crash, two clusters) finds the run the first delivery made. NULL for
    # runs started by hand, which may be many.
    occurrence = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="The schedule firing that started this run (schedule @ intended time); empty when started by hand.",
    )

    objects = ArchivalRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # Dashboard and scheduler look for the newest and the open runs.
            models.Index(fields=["status", "started_at"], name="run_status_idx"),
        ]
        permissions = [
            ("start_run", "Can start, resume or stop archival runs"),
            ("abandon_run", "Can abandon an unfinished run"),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} (cutoff {self.cutoff})"


class RecoveryStateQuerySet(models.QuerySet):
    def unfinished(self):
        return self.filter(phase__in=OPEN_PHASES)


class RecoveryState(models.Model):
    run = models.ForeignKey(
        ArchivalRun,
        on_delete=models.PROTECT,
        related_name="states",
        help_text="The run this state belongs to.",
    )
    config = models.ForeignKey(
        "governance.TableConfig",
        on_delete=models.PROTECT,
        related_name="states",
        help_text="The table being archived.",
    )
    table_label = models.CharField(
        max_length=400,
        help_text="source.schema.table at the time of the run (kept if the config changes).",
    )
    phase = models.CharField(
        max_length=16,
        choices=Phase,
        default=Phase.PENDING,
        help_text="Where this table is in the run.",
    )
    threshold = models.DateField(
        null=True,
        blank=True,
        help_text="Rows with a reference date before this are eligible (cutoff minus months in source).",
    )
    eligible_count = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Eligible rows counted by Mark, as of the run's cutoff.",
    )
    null_date_count = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Rows without a reference date (never eligible).",
    )
    unreadable_date_count = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Rows whose reference value is not a date, e.g. '12/31/2026' in a text column "
        "(never eligible; they stay in the source). Empty where nothing counted them.",
    )
    key_low = models.JSONField(null=True, blank=True, help_text="Smallest eligible primary key at Mark.")
    key_high = models.JSONField(null=True, blank=True, help_text="Largest eligible primary key at Mark.")
    cursor = models.JSONField(
        null=True,
        blank=True,
        help_text="Keyset cursor: last primary key of the last committed batch.",
    )
    archived_count = models.BigIntegerField(
        default=0,
        help_text="Rows moved by this run so far (reconciled with the archive ledger).",
    )
    batches_done = models.IntegerField(default=0, help_text="Batches committed by this run so far.")
    attempts = models.IntegerField(default=0, help_text="How many times a worker started on this table.")
    lease_owner = models.CharField(
        max_length=200,
        blank=True,
        help_text="Worker holding the lease (host:pid:uuid), empty when free.",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True, help_text="The lease is free after this instant.")
    last_error = models.TextField(blank=True, help_text="Last error that stopped this table.")
    lock_waits = models.PositiveIntegerField(
        default=0,
        help_text="Batches in a row that timed out waiting for locks (across slices); reset by a batch that got them.",
    )
    waiting_for = models.CharField(
        max_length=200,
        blank=True,
        help_text=(
            "What a WAITING table waits for: 'database:<alias>' (the server does not answer), "
            "'lock:<table>' (another session held its locks past the lock timeout), 'window:<from>-<until>' "
            "(outside the table's run window) or 'replica:<name>' (a watched replica lags too far behind)."
        ),
    )
    pacing = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "How the engine yielded to the source's workload (archival.engine.pacing): seconds spent pausing per "
            "reason (latency, lock, lag, window), the current batch size and pause, and what it is doing now."
        ),
    )
    started_at = models.DateTimeField(null=True, blank=True, help_text="When a worker first started on this table.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When this table reached a final phase.")
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change.")

    objects = RecoveryStateQuerySet.as_manager()

    class Meta:
        ordering = ["run_id", "id"]
        constraints = [
            # One state per table per run: the lease lives on this row.
            models.UniqueConstraint(fields=["run", "config"], name="recoverystate_unique_run_table"),
        ]
        indexes = [
            # "Is there an unfinished run for this table?" before each new run.
            models.Index(fields=["config", "phase"], name="recoverystate_config_phase"),
            # The sweeper looks for expired leases in open runs.
            models.Index(fields=["phase", "lease_expires_at"], name="recoverystate_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.table_label} in run {self.run_id}: {self.phase}"
