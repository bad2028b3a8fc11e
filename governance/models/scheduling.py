"""Scheduler state in the control database: settings, and what is enqueued.

django-q2's queue is not a record we can count on (Redis drops a killed
worker's tasks, results are trimmed), so the scheduler keeps its own: one
``TableDispatch`` row per table of a run says which stage the table is in and
whether a task for it is in flight. Concurrency caps are counts over these
rows, taken while the pump holds the ``SchedulerSettings`` row locked, so two
pumps on two machines never overshoot a cap.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

SETTINGS_PK = 1


class SchedulerSettingsManager(models.Manager):
    def current(self) -> SchedulerSettings:
        """The singleton row, created with defaults on first use."""
        obj, _ = self.get_or_create(pk=SETTINGS_PK)
        return obj


class SchedulerSettings(models.Model):
    paused = models.BooleanField(
        default=False,
        help_text="Paused: scheduled runs do not start and no new slice is enqueued; slices in progress finish their batch and wait.",
    )
    mark_concurrency = models.PositiveSmallIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(500)],
        help_text="Tables marked (counted) at the same time.",
    )
    archive_concurrency = models.PositiveSmallIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(500)],
        help_text="Tables archived (moved) at the same time.",
    )
    dispose_concurrency = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Disposal batches running at the same time.",
    )
    per_source_concurrency = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(500)],
        help_text="Tasks of any stage working on one source database at the same time, so one server is not swamped.",
    )
    slice_seconds = models.PositiveIntegerField(
        default=120,
        validators=[MinValueValidator(5), MaxValueValidator(3600)],
        help_text="Time box of one task: it starts no new batch after this and re-enqueues itself. Must stay well under the q2 timeout.",
    )
    max_run_minutes = models.PositiveIntegerField(
        default=360,
        validators=[MaxValueValidator(7 * 24 * 60)],
        help_text="Run window: no new batch starts this long after the run started (0: no limit). Unfinished tables resume next time.",
    )
    long_run_alert_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1)],
        help_text="Email the admins once when a run is still open after this long.",
    )
    lost_task_seconds = models.PositiveIntegerField(
        default=900,
        validators=[MinValueValidator(10)],
        help_text="A queued table task with no lease and no sign of life for this long is presumed lost (killed worker) and enqueued again.",
    )
    # Pacing (archival.engine.pacing): how batches yield to the operational
    # workload of the source databases. docs/pacing.md gives the rules.
    pacing_enabled = models.BooleanField(
        default=True,
        help_text="Adapt batch size and pauses to how quickly batches run (off: every batch at the configured size, no pause).",
    )
    pace_slow_batch_ms = models.PositiveIntegerField(
        "slow batch (ms)",
        default=1000,
        validators=[MinValueValidator(10), MaxValueValidator(600_000)],
        help_text="A batch that takes longer than this is slow: the next batches are smaller and a pause follows.",
    )
    pace_slowdown_factor = models.FloatField(
        "slowdown factor",
        default=4.0,
        validators=[MinValueValidator(1.5), MaxValueValidator(100)],
        help_text="A batch whose time per row is this many times the table's quickest batch in this slice is slow too "
        "(once it takes longer than the quick batch time).",
    )
    pace_quick_batch_ms = models.PositiveIntegerField(
        "quick batch (ms)",
        default=250,
        validators=[MinValueValidator(1), MaxValueValidator(600_000)],
        help_text="A batch quicker than this is never slow, whatever its slowdown: batches grow back and pauses shrink.",
    )
    pace_sleep_coefficient = models.FloatField(
        "pause per batch time",
        default=1.0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="After a slow batch, pause this many times its duration (pt-archiver's --sleep-coef).",
    )
    pace_min_batch_size = models.PositiveIntegerField(
        "smallest batch",
        default=250,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Batches are never made smaller than this (a table config may set its own).",
    )
    pace_max_pause_ms = models.PositiveIntegerField(
        "longest pause (ms)",
        default=5000,
        validators=[MaxValueValidator(600_000)],
        help_text="The longest pause between two batches (a table config may set its own).",
    )
    replica_check_seconds = models.PositiveIntegerField(
        "replica check every (s)",
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="How often, between batches, the watched replicas of the table's source database are asked their lag.",
    )
    replica_max_wait_seconds = models.PositiveIntegerField(
        "longest wait for a replica (s)",
        default=300,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 3600)],
        help_text="A table that waited this long for a replica to catch up is left WAITING ('replica lag') "
        "and taken up again later.",
    )
    alert_cursor = models.BigIntegerField(
        default=0,
        editable=False,
        help_text="Last audit event scanned for refused hold violations (kept by the sweeper).",
    )
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change.")
    # One row at most: a unique column that can only be true. (A CHECK on
    # the primary key would do on SQLite and PostgreSQL; MariaDB refuses a
    # CHECK on an AUTO_INCREMENT column.)
    singleton = models.BooleanField(default=True, unique=True, editable=False, help_text="Always true: one row.")

    objects = SchedulerSettingsManager()

    class Meta:
        verbose_name = "scheduler settings"
        verbose_name_plural = "scheduler settings"
        constraints = [
            # A singleton: the pump locks this one row to serialize cap accounting.
            models.CheckConstraint(condition=Q(singleton=True), name="schedulersettings_one_row"),
        ]
        permissions = [("pause_scheduler", "Can pause and resume the archival scheduler")]

    def __str__(self) -> str:
        return "Scheduler settings" + (" (paused)" if self.paused else "")

    def save(self, *args, **kwargs):
        self.pk = SETTINGS_PK
        super().save(*args, **kwargs)

    def clean(self) -> None:
        timeout = settings.Q_CLUSTER.get("timeout") or 0
        # A slice must end, and its last batch commit, before q2 kills the task.
        if timeout and self.slice_seconds > timeout / 2:
            raise ValidationError({"slice_seconds": f"Must be at most half the q2 timeout ({timeout}s)."})
        if self.pace_quick_batch_ms > self.pace_slow_batch_ms:
            raise ValidationError({"pace_quick_batch_ms": "A quick batch must not take longer than a slow one."})


class DispatchStage(models.TextChoices):
    WAIT_CHILDREN = "WAIT_CHILDREN", "Waiting for child tables"
    MARK = "MARK", "Mark"
    ARCHIVE = "ARCHIVE", "Archive"
    DONE = "DONE", "Done"


class DispatchStatus(models.TextChoices):
    WAITING = "WAITING", "Waiting for a slot"
    QUEUED = "QUEUED", "Task enqueued or running"
    DONE = "DONE", "Done (completed, failed or blocked)"
    STOPPED = "STOPPED", "Stopped (run window, stop switch or pause)"


class TableDispatchQuerySet(models.QuerySet):
    def in_flight(self):
        return self.filter(status=DispatchStatus.QUEUED)

    def waiting(self):
        return self.filter(status=DispatchStatus.WAITING)


class TableDispatch(models.Model):
    state = models.OneToOneField(
        "governance.RecoveryState",
        on_delete=models.CASCADE,
        related_name="dispatch",
        help_text="The table's recovery state in its run (the engine's record; this row only says what is enqueued).",
    )
    run = models.ForeignKey(
        "governance.ArchivalRun",
        on_delete=models.CASCADE,
        related_name="dispatches",
        help_text="The run (copied for cheap counts).",
    )
    source_db = models.CharField(max_length=63, help_text="Source database alias, for the per-source cap.")
    stage = models.CharField(
        max_length=16,
        choices=DispatchStage,
        default=DispatchStage.MARK,
        help_text="Next thing to do for this table.",
    )
    status = models.CharField(
        max_length=8,
        choices=DispatchStatus,
        default=DispatchStatus.WAITING,
        help_text="Whether a task for this table is in flight.",
    )
    ticket = models.PositiveIntegerField(
        default=0,
        help_text="Generation of the task chain. A task carries the ticket it was enqueued with; a duplicate or superseded delivery finds it changed and does nothing.",
    )
    task_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="django-q2 id of the last task enqueued for this table.",
    )
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When the current task was enqueued.")
    touched_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last sign of life: enqueued, picked up, or a slice ended.",
    )
    slices = models.PositiveIntegerField(default=0, help_text="Task slices run for this table.")
    requeues = models.PositiveIntegerField(
        default=0,
        help_text="Times the sweeper re-enqueued this table after a lost task or an expired lease.",
    )
    last_outcome = models.CharField(max_length=200, blank=True, help_text="What the last slice reported.")
    taken_by = models.CharField(
        max_length=200,
        blank=True,
        help_text="Worker process (host:pid:id) that picked up the current task; empty until one does.",
    )
    position = models.PositiveIntegerField(
        default=0,
        help_text=(
            "Order in which the pump starts the run's tables: the heaviest chain of work first "
            "(estimated rows plus the parent tables waiting for it). A parent still archives only "
            "after its children."
        ),
    )
    children = models.JSONField(
        default=list,
        blank=True,
        help_text="Ids of the recovery states of child tables that must be done before this table archives.",
    )

    objects = TableDispatchQuerySet.as_manager()

    class Meta:
        ordering = ["run_id", "id"]
        indexes = [
            # Cap accounting: in-flight tasks per stage and per source database.
            models.Index(fields=["status", "stage"], name="dispatch_status_stage_idx"),
            models.Index(fields=["status", "source_db"], name="dispatch_status_source_idx"),
            # Finalizer and pump: what is left in one run.
            models.Index(fields=["run", "status"], name="dispatch_run_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.state_id}: {self.stage} {self.status}"


class RunDispatch(models.Model):
    run = models.OneToOneField(
        "governance.ArchivalRun",
        on_delete=models.CASCADE,
        related_name="dispatch",
        help_text="The run the scheduler drives.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the scheduler took the run over.")
    finalize_enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the finalizer was enqueued (once)."
    )
    finalized_at = models.DateTimeField(null=True, blank=True, help_text="When the finalizer closed the run.")

    class Meta:
        verbose_name = "run dispatch"

    def __str__(self) -> str:
        return f"Dispatch of run {self.run_id}"


class WorkerHeartbeatQuerySet(models.QuerySet):
    def stale(self, before):
        """Workers not seen since ``before``: dead, or their machine unreachable."""
        return self.filter(seen_at__lt=before)


class WorkerHeartbeat(models.Model):
    """A worker process's sign of life, written every few seconds by a thread in that process.

    Tells a dead worker on another machine from a live one (a PID check works
    only on the same host): the sweeper re-enqueues the tasks a dead worker,
    or a dead cluster's queue, took with it, and a lease whose owner stopped
    beating is taken over without waiting for it to expire.
    """

    worker = models.CharField(
        max_length=200, unique=True, help_text="The process's worker id (host:pid:id), as in lease owners."
    )
    host = models.CharField(max_length=200, help_text="Machine the process runs on.")
    pid = models.PositiveIntegerField(help_text="Process id on that machine.")
    cluster = models.CharField(
        max_length=200, blank=True, help_text="The django-q2 cluster (host:pid of its sentinel) the process belongs to."
    )
    started_at = models.DateTimeField(help_text="When the process first beat.")
    seen_at = models.DateTimeField(help_text="Its last beat.")

    objects = WorkerHeartbeatQuerySet.as_manager()

    class Meta:
        indexes = [
            # The sweeper looks for workers that stopped beating.
            models.Index(fields=["seen_at"], name="heartbeat_seen_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.worker} (seen {self.seen_at:%H:%M:%S})"
