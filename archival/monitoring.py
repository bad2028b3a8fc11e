"""Health of the archival service, for ``archival status --check``, ``/healthz`` and the dashboard.

Nagios-style codes: 0 OK, 1 WARNING (a person should look this week),
2 CRITICAL (archival is not happening or data work is stuck).

Health is the state of every configured table across every run that has not
finished it, not the outcome of the last run: a run that completes with 67
tables BLOCKED behind an older failed run is not OK. Each finding names its
tables (a few, then a count), so the operator knows where to look.

Components are reported apart, so each deployment shape can be monitored:
``web`` (this process answers), ``control_database`` and ``workers`` (only
where ``ARCHIVAL_WORKERS`` says a django-q2 cluster runs the schedule; a
deployment that archives from a CronJob has none to watch).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Max
from django.utils import timezone
from django_q.models import Schedule

from archival.dispatch import lost_tasks
from archival.schedules import RUN_SCHEDULE, SWEEP_SCHEDULE
from governance.models import OPEN_PHASES, ArchivalRun, Phase, RecoveryState, RunStatus, SchedulerSettings, TableConfig

OK, WARNING, CRITICAL = 0, 1, 2
LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
UP, DOWN, NOT_CONFIGURED = "up", "down", "not configured"
# How many table names a finding spells out before it gives a count.
NAMED_TABLES = 5


@dataclass
class CheckResult:
    code: int = OK
    messages: list[str] = field(default_factory=list)
    last_run_finished_at: datetime | None = None
    components: dict[str, str] = field(default_factory=lambda: {"web": UP})
    # Config ids per finding ("failed", "stalled", "unfinished", "blocked",
    # "overdue"): the dashboard counts and lists them without re-deriving health.
    tables: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    @property
    def label(self) -> str:
        return LABELS[self.code]

    def add(self, code: int, message: str) -> None:
        self.code = max(self.code, code)
        self.messages.append(f"{LABELS[code]}: {message}")

    @property
    def last_run_age_seconds(self) -> int | None:
        if self.last_run_finished_at is None:
            return None
        return int((timezone.now() - self.last_run_finished_at).total_seconds())

    def as_dict(self) -> dict:
        return {
            "code": self.code,
            "label": self.label,
            "messages": self.messages,
            "components": self.components,
            "last_run_age_seconds": self.last_run_age_seconds,
        }


def health_check(now: datetime | None = None) -> CheckResult:
    """Inspect tables, runs, leases, schedules and alert delivery; read-only.

    CRITICAL: the control database is unreachable; a table failed and its run
    was neither resumed nor abandoned; a table's lease expired and nobody
    took it over; workers are expected and none runs (the sweeper schedule is
    overdue).
    WARNING: a table is blocked by an unfinished run, or sits unfinished in a
    run that has ended; a table has not completed a run for longer than the
    weekly run allows (or never has); a run is open longer than the alert
    threshold; the scheduler is paused; a schedule is missing; alerts have
    no recipients.
    """
    result = CheckResult()
    try:
        _check(result, now or timezone.now())
        result.components["control_database"] = UP
    except DatabaseError as exc:
        result.components["control_database"] = DOWN
        result.components.setdefault("workers", DOWN if settings.ARCHIVAL_SCHEDULER["WORKERS"] else NOT_CONFIGURED)
        result.add(CRITICAL, f"control database unreachable: {type(exc).__name__}")
    return result


def named(labels: list[str]) -> str:
    """``A, B, C`` or ``A, B, C, D, E and 62 more``: a finding names what it is about."""
    labels = sorted(labels)
    shown = ", ".join(labels[:NAMED_TABLES])
    rest = len(labels) - NAMED_TABLES
    return f"{shown} and {rest} more" if rest > 0 else shown


def _check(result: CheckResult, now: datetime) -> None:
    cfg = SchedulerSettings.objects.current()
    conf = settings.ARCHIVAL_SCHEDULER

    finished = (
        ArchivalRun.objects.exclude(status=RunStatus.RUNNING).exclude(finished_at=None).order_by("-finished_at").first()
    )
    result.last_run_finished_at = finished.finished_at if finished else None
    if finished is None:
        result.add(WARNING, "no archival run has finished yet")
    elif finished.finished_at < now - timedelta(days=conf["MAX_RUN_AGE_DAYS"]):
        result.add(WARNING, f"the last run finished {(now - finished.finished_at).days} days ago (weekly run overdue)")

    _check_tables(result, now)
    _check_workers(result, now, cfg)
    for run in ArchivalRun.objects.open():
        minutes = int((now - run.started_at).total_seconds() // 60)
        if minutes >= cfg.long_run_alert_minutes:
            result.add(WARNING, f"run {run.pk} has been open for {minutes} minutes")
    if not settings.ADMINS:
        result.add(WARNING, "alerts go nowhere: ARCHIVAL_ADMIN_EMAILS is unset, so no one is mailed")


def _check_tables(result: CheckResult, now: datetime) -> None:
    """Every active table: unfinished work in any run, blocks, and how long since it last completed."""
    lease = settings.ARCHIVAL["LEASE_SECONDS"]
    stall_after = now - timedelta(seconds=2 * lease + 60 * settings.ARCHIVAL_SCHEDULER["SWEEP_MINUTES"])
    active = dict(TableConfig.objects.filter(is_active=True).values_list("pk", "source_db"))
    findings: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    unfinished = (
        RecoveryState.objects.filter(config_id__in=active, phase__in=OPEN_PHASES)
        .select_related("run")
        .only(
            "config_id",
            "table_label",
            "phase",
            "lease_owner",
            "lease_expires_at",
            "waiting_for",
            "lock_waits",
            "run__status",
        )
        .order_by("run_id", "pk")
    )
    has_unfinished = set()
    waiting: dict[tuple[int, str], list[str]] = defaultdict(list)
    for state in unfinished:
        has_unfinished.add(state.config_id)
        if state.phase == Phase.FAILED:
            findings["failed"][state.run_id].append(state.table_label)
            result.tables["failed"].add(state.config_id)
        elif state.phase == Phase.WAITING and state.waiting_for.startswith("window:"):
            # Waiting for its own run window to open: as configured, not a problem.
            pass
        elif state.phase == Phase.WAITING:
            waiting[(state.run_id, state.waiting_for)].append(state.table_label)
            result.tables["waiting"].add(state.config_id)
        elif state.lock_waits:
            findings["locked"][state.run_id].append(f"{state.table_label} ({state.lock_waits} in a row)")
            result.tables["locked"].add(state.config_id)
        elif state.run.status != RunStatus.RUNNING:
            findings["left"][state.run_id].append(state.table_label)
            result.tables["unfinished"].add(state.config_id)
        elif state.lease_owner and state.lease_expires_at and state.lease_expires_at < stall_after:
            findings["stalled"][state.run_id].append(state.table_label)
            result.tables["stalled"].add(state.config_id)
    for run_id, labels in findings["failed"].items():
        result.add(
            CRITICAL, f"run {run_id}: {len(labels)} table(s) failed ({named(labels)}); resume or abandon run {run_id}"
        )
    for run_id, labels in findings["stalled"].items():
        result.add(
            CRITICAL,
            f"run {run_id}: {len(labels)} table(s) hold an expired lease nobody took over ({named(labels)}); "
            "workers down or the sweeper not running",
        )
    for (run_id, waiting_for), labels in waiting.items():
        # Not a failure: the sweeper (or a resume) takes them up once the
        # database answers or the lock is gone; someone should know meanwhile.
        what = (
            waiting_for.replace("database:", "database ", 1)
            .replace("lock:", "a lock on ", 1)
            .replace("replica:", "the lag of replica ", 1)
        )
        result.add(
            WARNING,
            f"run {run_id}: {len(labels)} table(s) waiting for {what} ({named(labels)}); "
            f"taken up again by the sweeper, or resume run {run_id}",
        )
    for run_id, labels in findings["locked"].items():
        result.add(
            WARNING,
            f"run {run_id}: {len(labels)} table(s) backing off: their batches timed out waiting for locks "
            f"another session holds ({named(labels)})",
        )
    for run_id, labels in findings["left"].items():
        result.add(
            WARNING,
            f"run {run_id} ended with {len(labels)} table(s) unfinished ({named(labels)}); resume or abandon it",
        )

    # A BLOCKED state is final in its own run; the table stays blocked while
    # the run that holds it is unfinished, so only those count.
    blocked = (
        RecoveryState.objects.filter(config_id__in=has_unfinished, phase=Phase.BLOCKED)
        .values_list("config_id", "table_label")
        .distinct()
    )
    blocked = list(blocked)
    result.tables["blocked"].update(config_id for config_id, _ in blocked)
    blocked_labels = sorted({label for _, label in blocked})
    if blocked_labels:
        result.add(
            WARNING,
            f"{len(blocked_labels)} table(s) blocked by an unfinished run ({named(blocked_labels)}); "
            "newer runs skip them until it is resumed or abandoned",
        )

    any_run = RecoveryState.objects.exists()
    if any_run:
        max_age = now - timedelta(days=settings.ARCHIVAL_SCHEDULER["MAX_RUN_AGE_DAYS"])
        completed = dict(
            RecoveryState.objects.filter(config_id__in=active, phase=Phase.COMPLETED)
            .values("config_id")
            .annotate(last=Max("finished_at"))
            .values_list("config_id", "last")
        )
        overdue = [
            pk for pk in active if pk not in has_unfinished and (completed.get(pk) is None or completed[pk] < max_age)
        ]
        result.tables["overdue"].update(overdue)
        if overdue:
            labels = [str(c) for c in TableConfig.objects.filter(pk__in=overdue)]
            result.add(
                WARNING,
                f"{len(labels)} table(s) have not completed a run in {settings.ARCHIVAL_SCHEDULER['MAX_RUN_AGE_DAYS']} "
                f"days ({named(labels)})",
            )


def _check_workers(result: CheckResult, now: datetime, cfg) -> None:
    conf = settings.ARCHIVAL_SCHEDULER
    if not conf["WORKERS"]:
        result.components["workers"] = NOT_CONFIGURED
        return
    result.components["workers"] = UP
    if cfg.paused:
        result.add(WARNING, "the scheduler is paused")
    schedules = {s.name: s for s in Schedule.objects.filter(name__in=[RUN_SCHEDULE, SWEEP_SCHEDULE])}
    if RUN_SCHEDULE not in schedules:
        result.add(WARNING, "the weekly run schedule is missing (manage.py schedule_archival creates it)")

    lost: dict[int, list[str]] = defaultdict(list)
    for row, why in lost_tasks(now):
        lost[row.run_id].append(f"{row.state.table_label} ({why})")
    for run_id, labels in lost.items():
        result.add(
            WARNING,
            f"run {run_id}: {len(labels)} table(s) stalled, their task lost with a worker: {named(labels)}; "
            "the sweeper re-enqueues them",
        )
    sweeper = schedules.get(SWEEP_SCHEDULE)
    if sweeper is None:
        result.add(WARNING, "the sweeper schedule is missing (manage.py schedule_archival creates it)")
    elif sweeper.next_run and sweeper.next_run < now - timedelta(minutes=conf["SWEEP_MINUTES"] + 4):
        # Every cluster's scheduler moves next_run forward; overdue means none runs.
        result.components["workers"] = DOWN
        result.add(
            CRITICAL,
            f"no worker cluster is running: the sweeper is {int((now - sweeper.next_run).total_seconds() // 60)} "
            "minutes overdue",
        )
