"""Health of the archival service, for ``archival status --check`` and ``/healthz``.

Nagios-style codes: 0 OK, 1 WARNING (a person should look this week),
2 CRITICAL (archival is not happening or data work is stuck).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

OK, WARNING, CRITICAL = 0, 1, 2
LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}


@dataclass
class CheckResult:
    code: int = OK
    messages: list[str] = field(default_factory=list)
    last_run_finished_at: datetime | None = None

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
            "last_run_age_seconds": self.last_run_age_seconds,
        }


def health_check(now: datetime | None = None) -> CheckResult:
    """Inspect runs, leases, schedules and the scheduler switch; read-only.

    CRITICAL: the control database is unreachable; no worker cluster is
    running (the sweeper schedule is overdue); a table's lease expired and
    nobody took it over; the latest finished run failed.
    WARNING: the weekly run is overdue; a run is open longer than the alert
    threshold; a table failed in an open run; the scheduler is paused; a
    schedule is missing.
    """
    result = CheckResult()
    try:
        _check(result, now or timezone.now())
    except DatabaseError as exc:
        result.add(CRITICAL, f"control database unreachable: {type(exc).__name__}")
    return result


def _check(result: CheckResult, now: datetime) -> None:
    from django_q.models import Schedule

    from archival.schedules import RUN_SCHEDULE, SWEEP_SCHEDULE
    from governance.models import (
        ArchivalRun,
        Phase,
        RecoveryState,
        RunStatus,
        SchedulerSettings,
    )

    cfg = SchedulerSettings.objects.current()
    conf = settings.ARCHIVAL_SCHEDULER
    lease = settings.ARCHIVAL["LEASE_SECONDS"]

    finished = (
        ArchivalRun.objects.exclude(status=RunStatus.RUNNING).exclude(finished_at=None).order_by("-finished_at").first()
    )
    result.last_run_finished_at = finished.finished_at if finished else None
    if finished is None:
        result.add(WARNING, "no archival run has finished yet")
    else:
        if finished.finished_at < now - timedelta(days=conf["MAX_RUN_AGE_DAYS"]):
            result.add(
                WARNING,
                f"the last run finished {(now - finished.finished_at).days} days ago (weekly run overdue)",
            )
        if finished.status == RunStatus.FAILED:
            result.add(CRITICAL, f"run {finished.pk} finished with failed tables")

    if cfg.paused:
        result.add(WARNING, "the scheduler is paused")
    schedules = {s.name: s for s in Schedule.objects.filter(name__in=[RUN_SCHEDULE, SWEEP_SCHEDULE])}
    if RUN_SCHEDULE not in schedules:
        result.add(
            WARNING,
            "the weekly run schedule is missing (manage.py schedule_archival creates it)",
        )
    sweeper = schedules.get(SWEEP_SCHEDULE)
    if sweeper is None:
        result.add(
            WARNING,
            "the sweeper schedule is missing (manage.py schedule_archival creates it)",
        )
    elif sweeper.next_run and sweeper.next_run < now - timedelta(minutes=conf["SWEEP_MINUTES"] + 4):
        # Every cluster's scheduler moves next_run forward; overdue means none runs.
        result.add(
            CRITICAL,
            f"no worker cluster is running: the sweeper is {int((now - sweeper.next_run).total_seconds() // 60)} minutes overdue",
        )

    for run in ArchivalRun.objects.open():
        minutes = int((now - run.started_at).total_seconds() // 60)
        if minutes >= cfg.long_run_alert_minutes:
            result.add(WARNING, f"run {run.pk} has been open for {minutes} minutes")
        failed = RecoveryState.objects.filter(run=run, phase=Phase.FAILED).count()
        if failed:
            result.add(WARNING, f"run {run.pk} has {failed} failed table(s)")
    stuck = RecoveryState.objects.filter(
        run__status=RunStatus.RUNNING,
        lease_expires_at__lt=now - timedelta(seconds=2 * lease + 60 * conf["SWEEP_MINUTES"]),
    ).exclude(lease_owner="")
    count = stuck.count()
    if count:
        result.add(
            CRITICAL,
            f"{count} table(s) hold an expired lease nobody took over (workers down or sweeper not running)",
        )
