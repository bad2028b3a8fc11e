"""Email alerts to the admins (Django's mail), each also recorded in the audit trail.

Alerts that a periodic task would otherwise repeat every minute carry a
``key``; an ``alert.sent`` audit event with that key means it went out
already, so each condition is mailed once (the audit trail is the memory,
which also shows an auditor who was told what and when).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import mail_admins, send_mail
from django.db.models import Q
from django.utils import timezone

from governance.models import ArchivalRun, AuditEvent, Hold, SchedulerSettings
from governance.roles import COMPLIANCE_OFFICER

logger = logging.getLogger("archival.alerts")

# Audit actions whose REFUSED outcome is an attempt to break a hold.
HOLD_VIOLATION_PREFIXES = ("hold.", "archive.delete")
REFUSED_OUTCOMES = ("REFUSED",)
# The outcome of an alert that had nobody to go to.
NO_RECIPIENTS = "NO_RECIPIENTS"


def already_sent(key: str) -> bool:
    return AuditEvent.objects.filter(action="alert.sent", details__key=key).exists()


def send(
    kind: str,
    subject: str,
    body: str,
    *,
    key: str = "",
    run_id: int | None = None,
    table_label: str = "",
) -> bool:
    """Mail the admins once per ``key`` (every time when no key). Returns True if sent now.

    A mail failure is logged and audited as FAILED, never raised: an alert
    must not fail the work it reports on. Without admins the alert is audited
    as NO_RECIPIENTS (and counts as given, so it is not repeated every minute).
    """
    if key and already_sent(key):
        return False
    outcome, error = "OK", ""
    if not settings.ADMINS:
        # mail_admins sends nothing without recipients; say so rather than OK.
        outcome, error = NO_RECIPIENTS, "ARCHIVAL_ADMIN_EMAILS is unset"
        logger.warning("alert %s reached no one: %s (%s)", kind, error, subject)
    else:
        try:
            mail_admins(f"[archival] {subject}", body, fail_silently=False)
        except Exception as exc:  # noqa: BLE001 (SMTP down: keep working, leave a trace)
            outcome, error = "FAILED", f"{type(exc).__name__}: {exc}"
            logger.error("alert %s could not be mailed: %s", kind, error)
    AuditEvent.objects.record(
        "alert.sent",
        outcome=outcome,
        run_id=run_id,
        table_label=table_label,
        details={
            "kind": kind,
            "key": key,
            "subject": subject,
            "recipients": [a[1] for a in settings.ADMINS],
            "error": error,
        },
    )
    return outcome == "OK"


def table_failed(state, message: str) -> bool:
    """A table of a run failed (called by the engine when it records the failure)."""
    return send(
        "table_failed",
        f"table {state.table_label} failed in run {state.run_id}",
        f"Run {state.run_id}: table {state.table_label} stopped with an error.\n\n{message}\n\n"
        "Nothing of the failing batch committed. Fix the cause, then resume the run (archival resume) "
        "or abandon the table.",
        key=f"table_failed:{state.pk}:{state.attempts}",
        run_id=state.run_id,
        table_label=state.table_label,
    )


def database_unreachable(run_id: int, alias: str, labels: list[str], *, scheduled: bool) -> bool:
    """One alert per outage of one database in one run, naming the tables that wait for it.

    Mailed once until the tables are taken up again (each take-up, by the
    sweeper or a resume, starts a new outage for the key).
    """
    key_for = f"database:{alias}"
    taken_up = AuditEvent.objects.filter(action="tables.retaken", run_id=run_id, details__waiting_for=key_for).count()
    names = "\n".join(f"  - {label}" for label in sorted(set(labels)))
    then = (
        "The workers try it again every sweep and take the tables up by themselves when it answers "
        "(within the run window)."
        if scheduled
        else f"When it answers, resume them: manage.py archival resume --run {run_id}"
    )
    return send(
        "database_unreachable",
        f"database {alias} does not answer: {len(set(labels))} table(s) of run {run_id} wait for it",
        f"Run {run_id}: database {alias} does not answer. These tables wait for it (none failed, "
        f"nothing was lost; tables of other databases go on):\n{names}\n\n{then}",
        key=f"db_unreachable:{run_id}:{alias}:{taken_up}",
        run_id=run_id,
    )


def long_run(run: ArchivalRun, minutes: int) -> bool:
    age = timezone.now() - run.started_at
    return send(
        "long_run",
        f"run {run.pk} still open after {int(age.total_seconds() // 60)} minutes",
        f"Run {run.pk} (cutoff {run.cutoff}, started {run.started_at:%Y-%m-%d %H:%M} UTC) is still open after "
        f"more than {minutes} minutes. Check the workers (archival status) and the run's tables in the admin.",
        key=f"long_run:{run.pk}",
        run_id=run.pk,
    )


def inconsistent(message: str, *, key: str, run_id: int | None = None, table_label: str = "") -> bool:
    return send(
        "inconsistent_state",
        f"inconsistent lease or recovery state: {message[:120]}",
        message,
        key=key,
        run_id=run_id,
        table_label=table_label,
    )


def hold_violation(event: AuditEvent) -> bool:
    if event.action == "disposal.executed":
        what = (
            f"executed an approved disposal batch that included {event.counts.get('held')} row(s) a hold now covers; "
            "the hold won and those rows were kept"
        )
    else:
        what = f"attempted {event.action} on {event.object_repr or event.table_label}; it was refused ({event.outcome})"
    return send(
        "hold_violation",
        f"hold protected data: {event.action} by {event.actor}",
        f"{event.occurred_at:%Y-%m-%d %H:%M:%S} UTC: {event.actor} {what}.\nDetails: {event.details}",
        key=f"hold_violation:{event.pk}",
        run_id=event.run_id,
        table_label=event.table_label,
    )


def task_refused(event: AuditEvent) -> bool:
    """A task that is not one of ours was refused (archival.task_guard); mailed once per function and schedule.

    Every refusal is audited; the mail goes once per (function, group), so a
    foreign schedule firing every minute does not flood the admins.
    """
    details = event.details
    return send(
        "task_refused",
        f"refused to run {details.get('func')} ({details.get('group') or 'no schedule'})",
        f"{event.occurred_at:%Y-%m-%d %H:%M:%S} UTC: django-q2 was asked to run {details.get('func')} "
        f"(schedule or group {details.get('group')!r}, arguments {details.get('args')}, "
        f"keyword arguments {details.get('kwargs')}, hook {details.get('hook') or 'none'}). "
        f"It was not run: {details.get('reason')}.\n\n"
        "Only the archival tasks may run (archival.tasks.REGISTRY). Find who created the schedule "
        "(admin history, audit trail, database logs) and delete or correct it as a superuser.",
        key=f"task_refused:{details.get('func')}:{details.get('group')}",
    )


def hold_violations():
    """Audit events of a real attempt to destroy what a hold protects.

    A refused change to a hold or to archived rows, or an approved disposal
    whose execution met rows that a hold placed since covers. A disposal
    *plan* that left held rows out respected the hold and is not one.
    """
    refused = Q()
    for prefix in HOLD_VIOLATION_PREFIXES:
        refused |= Q(action__startswith=prefix)
    return AuditEvent.objects.filter(
        (refused & Q(outcome__in=REFUSED_OUTCOMES)) | Q(action="disposal.executed", counts__held__gt=0)
    )


def scan_hold_violations() -> int:
    """Alert on hold violations audited since the last scan; returns how many alerts went out."""
    cfg = SchedulerSettings.objects.current()
    events = list(hold_violations().filter(pk__gt=cfg.alert_cursor).order_by("pk")[:500])
    sent = sum(hold_violation(event) for event in events)
    if events:
        # Only forward: a concurrent sweeper that already moved further wins.
        SchedulerSettings.objects.filter(pk=cfg.pk, alert_cursor__lt=events[-1].pk).update(alert_cursor=events[-1].pk)
    return sent


def compliance_officer_emails() -> list[str]:
    users = get_user_model().objects.filter(is_active=True, groups__name=COMPLIANCE_OFFICER).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def remind_hold_reviews(today=None) -> dict:
    """Weekly: tell compliance officers which active holds are past their review-by date.

    Falls back to the admins when no compliance officer has an email
    address, so the reminder is never silently dropped.
    """
    today = today or timezone.localdate()
    due = list(Hold.objects.due_for_review(today).order_by("review_by", "pk"))
    if not due:
        return {"due": 0, "sent_to": []}
    lines = [f"- {hold} (review by {hold.review_by}, placed by {hold.placed_by}): {hold.reason[:200]}" for hold in due]
    body = (
        f"{len(due)} active hold(s) are past their review-by date. Review each one in the admin: "
        "extend its review date or release it.\n\n" + "\n".join(lines)
    )
    subject = f"[archival] {len(due)} hold(s) due for review"
    recipients = compliance_officer_emails()
    outcome, error = "OK", ""
    if not recipients and not settings.ADMINS:
        outcome, error = NO_RECIPIENTS, "no compliance officer has an email address and ARCHIVAL_ADMIN_EMAILS is unset"
        logger.warning("hold review reminder reached no one: %s", error)
    else:
        try:
            if recipients:
                send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
            else:
                mail_admins(subject + " (no compliance officer has an email address)", body, fail_silently=False)
        except Exception as exc:  # noqa: BLE001 (a mail failure must not fail the task)
            outcome, error = "FAILED", f"{type(exc).__name__}: {exc}"
            logger.error("hold review reminder could not be mailed: %s", error)
    AuditEvent.objects.record(
        "alert.sent",
        outcome=outcome,
        counts={"holds": len(due)},
        details={
            "kind": "hold_review",
            "key": "",
            "recipients": recipients or [a[1] for a in settings.ADMINS],
            "holds": [h.pk for h in due],
            "error": error,
        },
    )
    return {"due": len(due), "sent_to": recipients}


def check_long_runs(threshold_minutes: int) -> int:
    """Alert once per run still open after ``threshold_minutes``."""
    limit = timezone.now() - timedelta(minutes=threshold_minutes)
    return sum(long_run(run, threshold_minutes) for run in ArchivalRun.objects.open().filter(started_at__lt=limit))
