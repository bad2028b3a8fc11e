"""The admin index as a dashboard.

Panels: last run outcome per table (failed first), active holds, holds due
for review, the next scheduled run, and rows archived and disposed per week
over the last year as an inline SVG (no script, no CDN: the CSP allows
neither). Each panel is shown only to users who may view its model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.apps import apps
from django.contrib import admin
from django.db.models import Case, IntegerField, OuterRef, Subquery, Sum, Value, When
from django.db.models.functions import TruncWeek
from django.utils import timezone

from archival.monitoring import health_check
from governance.checks import deployment_warnings
from governance.models import BatchLedger, Hold, Phase, RecoveryState, TableConfig

WEEKS = 52
PANEL_LIMIT = 50


@dataclass
class Bar:
    x: float
    y: float
    height: float
    width: float
    value: int
    week: date
    series: str


def last_outcomes(limit: int = PANEL_LIMIT) -> list[TableConfig]:
    """Active configs with their latest state, failed first, then never run."""
    latest = RecoveryState.objects.filter(config=OuterRef("pk")).order_by("-run_id", "-id")
    return list(
        TableConfig.objects.active()
        .annotate(
            last_phase=Subquery(latest.values("phase")[:1]),
            last_run=Subquery(latest.values("run_id")[:1]),
            last_error=Subquery(latest.values("last_error")[:1]),
            last_archived=Subquery(latest.values("archived_count")[:1]),
            rank=Case(
                When(last_phase=Phase.FAILED, then=Value(0)),
                When(last_phase__isnull=True, then=Value(2)),
                When(last_phase=Phase.COMPLETED, then=Value(3)),
                default=Value(1),
                output_field=IntegerField(),
            ),
        )
        .order_by("rank", "source_db", "table_name")[:limit]
    )


def _weekly(queryset, date_field: str, count_field: str, since) -> dict[date, int]:
    rows = (
        queryset.filter(**{f"{date_field}__gte": since})
        .annotate(week=TruncWeek(date_field))
        .values("week")
        .order_by("week")
        .annotate(total=Sum(count_field))
    )
    out = {}
    for row in rows:
        week = row["week"]
        week = week.date() if hasattr(week, "date") else week
        out[week] = out.get(week, 0) + (row["total"] or 0)
    return out


def disposed_per_week(since) -> dict[date, int] | None:
    """Rows destroyed per week, from the disposal certificates (issue 5).

    None while the certificate model is not installed."""
    try:
        certificate = apps.get_model("governance", "DisposalCertificate")
    except LookupError:
        return None
    names = {f.name for f in certificate._meta.get_fields()}
    date_field = next((n for n in ("executed_at", "disposed_at", "created_at", "issued_at") if n in names), None)
    count_field = next((n for n in ("row_count", "rows_deleted", "deleted_count") if n in names), None)
    if not date_field or not count_field:
        return None
    return _weekly(certificate.objects.all(), date_field, count_field, since)


def weekly_chart(today: date | None = None) -> dict:
    """Bars for the last ``WEEKS`` weeks (Monday-based), archived and disposed."""
    today = today or timezone.localdate()
    first_week = today - timedelta(days=today.weekday()) - timedelta(weeks=WEEKS - 1)
    since = timezone.make_aware(timezone.datetime.combine(first_week, timezone.datetime.min.time()))
    archived = _weekly(BatchLedger.objects.all(), "committed_at", "row_count", since)
    disposed = disposed_per_week(since)
    weeks = [first_week + timedelta(weeks=i) for i in range(WEEKS)]
    peak = max([1, *archived.values(), *((disposed or {}).values())])
    height, slot, bar = 160.0, 14.0, 6.0
    bars = []
    for i, week in enumerate(weeks):
        for offset, series, values in ((0.0, "archived", archived), (bar, "disposed", disposed or {})):
            value = values.get(week, 0)
            h = round(height * value / peak, 1)
            bars.append(
                Bar(
                    x=40 + i * slot + offset,
                    y=10 + height - h,
                    height=h,
                    width=bar,
                    value=value,
                    week=week,
                    series=series,
                )
            )
    ticks = [{"y": 10 + height - height * f, "label": f"{int(peak * f):,}"} for f in (0, 0.5, 1)]
    months = [{"x": 40 + i * slot, "label": w.strftime("%b")} for i, w in enumerate(weeks) if w.day <= 7]
    return {
        "bars": bars,
        "ticks": ticks,
        "months": months,
        "width": 40 + WEEKS * slot + 10,
        "height": height + 40,
        "baseline": 10 + height,
        "total_archived": sum(archived.values()),
        "total_disposed": sum((disposed or {}).values()),
        "has_disposal": disposed is not None,
    }


def next_scheduled_run():
    """The next django-q2 schedule due, preferring the archival ones."""
    from django_q.models import Schedule

    upcoming = Schedule.objects.filter(next_run__isnull=False).order_by("next_run")
    return upcoming.filter(func__startswith="archival.").first() or upcoming.first()


def dashboard_context(request) -> dict:
    user = request.user
    context: dict = {"dashboard": True}
    if user.has_perm("governance.view_tableconfig") and user.has_perm("governance.view_recoverystate"):
        context["outcomes"] = last_outcomes()
        context["health"] = health_check()
        context["deployment_warnings"] = deployment_warnings()
    if user.has_perm("governance.view_hold"):
        today = timezone.localdate()
        context["active_holds"] = list(Hold.objects.active(today)[:PANEL_LIMIT])
        context["active_hold_count"] = Hold.objects.active(today).count()
        context["review_holds"] = list(Hold.objects.due_for_review(today).order_by("review_by")[:PANEL_LIMIT])
    if user.has_perm("django_q.view_schedule"):
        context["next_schedule"] = next_scheduled_run()
        context["show_schedule"] = True
    if user.has_perm("governance.view_batchledger"):
        context["chart"] = weekly_chart()
    return context


def install(site: admin.AdminSite) -> None:
    """Give ``site``'s index the dashboard context.

    Wrapping the bound method keeps the default admin site (and its
    registry, which the permission-matrix test walks) instead of swapping in
    an AdminSite subclass through INSTALLED_APPS.
    """
    original = site.index

    def index(request, extra_context=None):
        return original(request, {**dashboard_context(request), **(extra_context or {})})

    site.index = index
