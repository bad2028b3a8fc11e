"""Changing a table's years in archive, and the forecast of disposals.

Lengthening applies at once; shortening waits for a compliance officer
(``governance.approve_retentionchange``, not the requester). Applying
recomputes ``retention_until`` = reference_date + years (29 February clamped
to 28 February, by the backend's ``add_years_sql``) for every archived row of
the table, under the archive lock so no disposal batch runs meanwhile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from archival.disposal.batches import _configs
from archival.disposal.tables import ARCHIVE, DisposalError, archive_table_for, take_archive_lock
from governance.actors import actor_name
from governance.models import AuditEvent, RetentionChange, RetentionChangeStatus, TableConfig


@dataclass
class RetentionChangeResult:
    change_id: int
    table_label: str
    old_years: int
    new_years: int
    status: str
    rows_updated: int | None
    message: str


def request_retention_change(config_id: int, *, new_years: int, actor, reason: str) -> RetentionChangeResult:
    """Ask to change a config's years in archive; applies at once unless shorter."""
    config = TableConfig.objects.get(pk=config_id)
    old = config.effective_years
    change = RetentionChange(
        config=config,
        old_years=old,
        new_years=new_years,
        requested_by=actor_name(actor),
        reason=(reason or "").strip(),
        status=RetentionChangeStatus.PENDING,
    )
    change.full_clean()
    if new_years >= old:
        rows = _apply(change, actor)
        msg = "applied at once (retention not shortened)"
    else:
        change.save()
        rows = None
        msg = "shortening: waiting for a compliance officer's approval"
    AuditEvent.objects.record(
        "retention.requested",
        actor=actor,
        obj=change,
        table_label=config.label,
        counts={"old_years": old, "new_years": new_years, "rows_updated": rows or 0},
        details={"reason": change.reason, "status": change.status},
    )
    return RetentionChangeResult(change.pk, config.label, old, new_years, change.status, rows, msg)


def decide_retention_change(change_id: int, *, user, approve: bool, comment: str) -> RetentionChangeResult:
    """A compliance officer approves (applies) or rejects a pending shortening."""
    change = RetentionChange.objects.select_related("config").get(pk=change_id)
    name = actor_name(user)
    problem = ""
    if not hasattr(user, "has_perm") or not user.has_perm("governance.approve_retentionchange"):
        problem = f"{name} may not approve retention changes"
    elif name == change.requested_by:
        problem = f"{name} asked for this change and may not approve it"
    elif change.status != RetentionChangeStatus.PENDING:
        problem = f"the change is {change.status}, not pending"
    elif not (comment or "").strip():
        problem = "a comment is required"
    if problem:
        AuditEvent.objects.record(
            "retention.refused", actor=user, outcome="REFUSED", obj=change, details={"reason": problem}
        )
        raise ValidationError(problem)
    change.decided_by = name
    change.comment = comment.strip()
    # Before anything is applied: the comment's length limit (governance.models.text).
    change.full_clean()
    if approve:
        rows = _apply(change, user)
    else:
        change.status = RetentionChangeStatus.REJECTED
        change.decided_at = timezone.now()
        change.save()
        rows = None
    AuditEvent.objects.record(
        "retention.approved" if approve else "retention.rejected",
        actor=user,
        obj=change,
        table_label=change.config.label,
        counts={"rows_updated": rows or 0},
        details={"comment": change.comment},
    )
    return RetentionChangeResult(
        change.pk, change.config.label, change.old_years, change.new_years, change.status, rows, change.status
    )


def _apply(change, actor) -> int:
    config = change.config
    t = archive_table_for(config)
    rows = 0
    with transaction.atomic(using=ARCHIVE), transaction.atomic(using="default"):
        take_archive_lock(f"retention:{actor_name(actor)}")
        if t is not None:
            ref = t.backend.quote("reference_date")
            expr = t.backend.add_years_sql(ref)
            with t.backend.connection.cursor() as cur:
                rows = t.backend.execute_counted(
                    cur,
                    f"UPDATE {t.qualified} SET {t.backend.quote('retention_until')} = {expr} WHERE {ref} IS NOT NULL",
                    [change.new_years] * expr.count("%s"),
                )
        config.years_retention_archive = change.new_years
        config.full_clean()
        config.save(update_fields=["years_retention_archive", "updated_at"])
        change.status = RetentionChangeStatus.APPLIED
        change.rows_updated = rows
        change.decided_at = timezone.now()
        change.save()
    return rows


# -- forecast -------------------------------------------------------------------------


@dataclass
class ForecastWeek:
    week_start: dt.date
    rows: int


@dataclass
class TableForecast:
    table_label: str
    overdue: int = 0
    weeks: list[ForecastWeek] = field(default_factory=list)
    error: str = ""

    @property
    def total(self) -> int:
        return self.overdue + sum(w.rows for w in self.weeks)


@dataclass
class ForecastResult:
    today: dt.date
    tables: list[TableForecast] = field(default_factory=list)


def forecast_disposal(
    *, tables: list[str] | None = None, weeks: int = 12, today: dt.date | None = None
) -> ForecastResult:
    """Rows becoming disposable per table and week over the next ``weeks`` weeks.

    A row becomes disposable the day after its retention_until. Week i covers
    the days [today + 7i, today + 7(i+1)); a row counts in the week it becomes
    disposable unless a hold still active at the end of that week covers it
    (holds whose hold-until passes lapse). ``overdue``: disposable today.
    """
    today = today or timezone.localdate()
    result = ForecastResult(today=today)
    for config in _configs(tables):
        tf = TableForecast(table_label=config.label)
        result.tables.append(tf)
        try:
            t = archive_table_for(config)
        except Exception as exc:  # a broken archive table is reported, not fatal
            tf.error = str(exc)
            continue
        if t is None:
            tf.weeks = [ForecastWeek(today + dt.timedelta(days=7 * i), 0) for i in range(weeks)]
            continue
        ru = t.col("retention_until")
        with t.backend.connection.cursor() as cur:
            held, hp = t.held_sql(today)
            cur.execute(f"SELECT COUNT(*) FROM {t.qualified} a WHERE {ru} < %s AND NOT {held}", [today, *hp])
            tf.overdue = int(cur.fetchone()[0])
            for i in range(weeks):
                start = today + dt.timedelta(days=7 * i)
                end = start + dt.timedelta(days=7)
                held, hp = t.held_sql(end - dt.timedelta(days=1))
                # disposable on day d  <=>  retention_until = d - 1
                cur.execute(
                    f"SELECT COUNT(*) FROM {t.qualified} a WHERE {ru} >= %s AND {ru} < %s AND NOT {held}",
                    [start - dt.timedelta(days=1), end - dt.timedelta(days=1), *hp],
                )
                tf.weeks.append(ForecastWeek(start, int(cur.fetchone()[0])))
    return result


__all__ = ["DisposalError", "decide_retention_change", "forecast_disposal", "request_retention_change"]
