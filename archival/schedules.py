"""The django-q2 schedules archival needs, created idempotently.

Used by the data migration (with the historical Schedule model) and by
``manage.py schedule_archival`` (with the live one). A schedule that exists
is left as the admin edited it (its cron, its next run), except that
``reset=True`` puts the cron back to the configured default.
"""

from __future__ import annotations

from datetime import datetime

from croniter import croniter
from django.conf import settings
from django.utils import timezone

RUN_SCHEDULE = "archival: weekly run"
SWEEP_SCHEDULE = "archival: sweeper"
HOLD_REVIEW_SCHEDULE = "archival: hold review reminder"
DISPOSAL_SCHEDULE = "archival: weekly disposal"

CRON = "C"
MINUTES = "I"


def definitions() -> list[dict]:
    conf = settings.ARCHIVAL_SCHEDULER
    return [
        {
            "name": RUN_SCHEDULE,
            "func": "archival.tasks.scheduled_run",
            "schedule_type": CRON,
            "cron": conf["RUN_CRON"],
            # Each firing passes its intended instant: the run's idempotency key.
            "intended_date_kwarg": "occurrence",
        },
        {
            "name": SWEEP_SCHEDULE,
            "func": "archival.tasks.sweep",
            "schedule_type": MINUTES,
            "minutes": conf["SWEEP_MINUTES"],
        },
        {
            "name": HOLD_REVIEW_SCHEDULE,
            "func": "archival.tasks.hold_review_reminder",
            "schedule_type": CRON,
            "cron": conf["HOLD_REVIEW_CRON"],
        },
        {
            # Plans disposal, then executes approved batches one at a time.
            "name": DISPOSAL_SCHEDULE,
            "func": "archival.tasks.scheduled_disposal",
            "schedule_type": CRON,
            "cron": conf["DISPOSAL_CRON"],
        },
    ]


def next_cron_run(cron: str, now: datetime | None = None) -> datetime:
    """The next instant matching ``cron`` in the project's time zone (as q2 computes it)."""
    now = timezone.localtime(now or timezone.now())
    return croniter(cron, now).get_next(datetime)


def ensure_schedules(schedule_model, *, reset: bool = False, now: datetime | None = None) -> dict[str, str]:
    """Create the missing schedules; returns {name: "created" | "kept" | "reset"}.

    ``schedule_model`` is django_q's Schedule (historical or live); values are
    validated with ``full_clean`` when the live model offers it.
    """
    now = now or timezone.now()
    outcome = {}
    for spec in definitions():
        existing = schedule_model.objects.filter(name=spec["name"]).order_by("pk").first()
        if existing is not None and not reset:
            # The admin may have changed its cron; the occurrence key is ours.
            if existing.intended_date_kwarg != spec.get("intended_date_kwarg"):
                existing.intended_date_kwarg = spec.get("intended_date_kwarg")
                existing.save(update_fields=["intended_date_kwarg"])
            outcome[spec["name"]] = "kept"
            continue
        obj = existing or schedule_model(name=spec["name"])
        obj.func = spec["func"]
        obj.schedule_type = spec["schedule_type"]
        obj.cron = spec.get("cron")
        obj.minutes = spec.get("minutes")
        obj.intended_date_kwarg = spec.get("intended_date_kwarg")
        obj.repeats = -1
        obj.next_run = next_cron_run(spec["cron"], now) if spec["schedule_type"] == CRON else now
        if hasattr(obj, "full_clean"):
            obj.full_clean()
        obj.save()
        outcome[spec["name"]] = "reset" if existing is not None else "created"
    return outcome
