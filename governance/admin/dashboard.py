"""The admin index as a dashboard.

It leads with the state of the whole estate in one line (built on
``archival.monitoring.health_check``: tables OK, failed, blocked, waiting;
rows archived and disposed this week; holds active and due for review), then
only the tables that need attention, the holds, the open restore requests,
the disposal batches waiting or executing, the next weekly run and disposal,
and rows archived and disposed per week over the last year as an inline SVG
(no script, no CDN: the CSP allows neither) with the numbers as a table. Each
panel is shown only to users who may view its model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.apps import apps
from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import TruncWeek
from django.utils import timezone
from django.utils.formats import number_format
from django_q.models import Schedule

from archival.engine import pacing
from archival.monitoring import health_check
from archival.schedules import DISPOSAL_SCHEDULE, RUN_SCHEDULE
from governance.admin.restore import STATUS_WORDS
from governance.checks import deployment_warnings
from governance.models import (
    BatchLedger,
    BatchStatus,
    DisposalBatch,
    Hold,
    Phase,
    RecoveryState,
    RestoreRequest,
    RunStatus,
    SchedulerSettings,
    TableConfig,
)
from governance.models.disposal import OPEN_BATCH_STATUSES

WEEKS = 52
PANEL_LIMIT = 10


@dataclass
class Bar:
    x: float
    y: float
    height: float
    width: float
    value: int
    week: date
    series: str


# Health findings (archival.monitoring) that put a table on the attention
# list, most urgent first; a table is listed once, under its first finding.
ATTENTION = (
    ("failed", "failed"),
    ("stalled", "stalled: its lease expired and no worker took it over"),
    ("waiting", "waiting for a database that does not answer, a lock, or a replica that lags"),
    ("locked", "backing off: its batches could not get their locks in time"),
    ("blocked", "blocked by an unfinished run"),
    ("unfinished", "left unfinished by a run that ended"),
    ("overdue", "no completed run within the weekly window"),
)
ATTENTION_LIMIT = 10


@dataclass
class Estate:
    """The whole estate in one line, and the tables behind its non-OK counts."""

    tables: int
    failed: int
    blocked: int
    waiting: int
    attention: list[TableConfig]
    attention_total: int
    archived_this_week: int
    disposed_this_week: int | None

    @property
    def ok(self) -> int:
        return self.tables - self.attention_total


def estate(health, today: date | None = None) -> Estate:
    """Counts per health finding over the active configs, rows moved this week,
    and the first ``ATTENTION_LIMIT`` tables that need someone, with their
    latest run and error."""
    today = today or timezone.localdate()
    active_ids = set(TableConfig.objects.active().values_list("pk", flat=True))
    reason_of: dict[int, str] = {}
    for key, text in ATTENTION:
        for config_id in health.tables.get(key, ()):
            if config_id in active_ids:
                reason_of.setdefault(config_id, text)
    texts = dict(ATTENTION)
    first_finding = [text for text in reason_of.values()]
    order = {text: i for i, (_, text) in enumerate(ATTENTION)}
    latest = RecoveryState.objects.filter(config=OuterRef("pk")).order_by("-run_id", "-id")
    shown = sorted(
        TableConfig.objects.filter(pk__in=reason_of).annotate(
            last_run=Subquery(latest.values("run_id")[:1]),
            last_error=Subquery(latest.values("last_error")[:1]),
        ),
        key=lambda c: (order[reason_of[c.pk]], c.source_db, c.schema_name, c.table_name),
    )[:ATTENTION_LIMIT]
    for config in shown:
        config.attention = reason_of[config.pk]
    week_start = today - timedelta(days=today.weekday())
    since = timezone.make_aware(timezone.datetime.combine(week_start, timezone.datetime.min.time()))
    disposed = disposed_per_week(since)
    return Estate(
        tables=len(active_ids),
        failed=sum(first_finding.count(texts[k]) for k in ("failed", "stalled")),
        blocked=first_finding.count(texts["blocked"]),
        waiting=sum(first_finding.count(texts[k]) for k in ("waiting", "locked", "unfinished", "overdue")),
        attention=shown,
        attention_total=len(reason_of),
        archived_this_week=BatchLedger.objects.filter(committed_at__gte=since).aggregate(n=Sum("row_count"))["n"] or 0,
        disposed_this_week=None if disposed is None else sum(disposed.values()),
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
    """Rows destroyed per week, from the disposal certificates.

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


def axis_top(peak: int) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``peak``:
    the top tick is a round number the tallest bar fits under."""
    if peak <= 0:
        return 1
    magnitude = 10 ** (len(str(peak)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if peak <= step * magnitude:
            return int(step * magnitude)
    return 10 * magnitude


def number(value: int) -> str:
    """``value`` with the active locale's digit grouping (181,663 in en-us)."""
    return number_format(value, force_grouping=True)


def weekly_chart(today: date | None = None) -> dict:
    """Bars for the last ``WEEKS`` weeks (Monday-based), archived and disposed,
    on a round y axis whose labels fit their margin, with the weeks as a table
    for screen readers and anyone who wants the numbers."""
    today = today or timezone.localdate()
    first_week = today - timedelta(days=today.weekday()) - timedelta(weeks=WEEKS - 1)
    since = timezone.make_aware(timezone.datetime.combine(first_week, timezone.datetime.min.time()))
    archived = _weekly(BatchLedger.objects.all(), "committed_at", "row_count", since)
    disposed = disposed_per_week(since)
    weeks = [first_week + timedelta(weeks=i) for i in range(WEEKS)]
    top = axis_top(max([0, *archived.values(), *((disposed or {}).values())]))
    ticks = [{"value": top * i // 4, "label": number(top * i // 4)} for i in range(5)]
    # Room for the longest label at about 6 px a character of 10 px text.
    left = 12 + 6 * max(len(t["label"]) for t in ticks)
    height, top_pad, slot, bar = 160.0, 12.0, 14.0, 6.0
    for t in ticks:
        t["y"] = round(top_pad + height - height * t["value"] / top, 1)
    bars = []
    for i, week in enumerate(weeks):
        for offset, series, values in ((0.0, "archived", archived), (bar, "disposed", disposed or {})):
            value = values.get(week, 0)
            h = round(height * value / top, 1)
            bars.append(
                Bar(
                    x=left + i * slot + offset,
                    y=top_pad + height - h,
                    height=h,
                    width=bar,
                    value=value,
                    week=week,
                    series=series,
                )
            )
    months = [{"x": left + i * slot, "label": w.strftime("%b")} for i, w in enumerate(weeks) if w.day <= 7]
    table = [
        {"week": w, "archived": number(archived.get(w, 0)), "disposed": number((disposed or {}).get(w, 0))}
        for w in weeks
        if archived.get(w) or (disposed or {}).get(w)
    ]
    return {
        "bars": bars,
        "ticks": ticks,
        "months": months,
        "left": left,
        "width": left + WEEKS * slot + 10,
        "height": top_pad + height + 28,
        "baseline": top_pad + height,
        "total_archived": number(sum(archived.values())),
        "total_disposed": number(sum((disposed or {}).values())),
        "has_disposal": disposed is not None,
        "table": table,
    }


def upcoming_runs() -> list:
    """The weekly run and the weekly disposal, each with its next firing.

    The sweeper and the reminder fire every few minutes or daily; what a
    reader wants to know is when rows next move and when they are next
    destroyed."""
    labels = {RUN_SCHEDULE: "Weekly archival run", DISPOSAL_SCHEDULE: "Weekly disposal"}
    found = {s.name: s for s in Schedule.objects.filter(name__in=labels)}
    return [{"label": label, "schedule": found.get(name)} for name, label in labels.items()]


def disposal_queue() -> list[dict]:
    """Open disposal batches per status, in one query, in the order they move: what
    waits for review, for execution, what the workers execute now and what failed."""
    counts = dict(
        DisposalBatch.objects.filter(status__in=OPEN_BATCH_STATUSES)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return [
        {"status": status, "words": BatchStatus(status).label, "count": counts[status]}
        for status in OPEN_BATCH_STATUSES
        if counts.get(status)
    ]


def scheduler_paused() -> bool:
    return SchedulerSettings.objects.current().paused


@dataclass
class PacedTable:
    """A table of an open run that is yielding to its source's workload, or spent time doing so."""

    run_id: int
    label: str
    now: str  # what it does instead of moving rows now ("" when it moves at full speed)
    spent: list[tuple[str, float]]  # (reason, seconds) with time spent


def paced_tables(limit: int = PANEL_LIMIT) -> tuple[list[PacedTable], int]:
    """The tables of running runs that pace or wait (window, replica lag, locks, latency), first ``limit``, and the count.

    One query over the open runs' states (what ``pacing`` records, see
    archival.engine.pacing), no query per table.
    """
    states = (
        RecoveryState.objects.filter(run__status=RunStatus.RUNNING)
        .only("run_id", "table_label", "phase", "waiting_for", "last_error", "pacing")
        .order_by("run_id", "pk")
    )
    found = []
    for state in states:
        record = state.pacing or {}
        spent = [(pacing.REASON_WORDS[r], float((record.get("seconds") or {}).get(r, 0.0))) for r in pacing.REASONS]
        spent = [(reason, seconds) for reason, seconds in spent if seconds >= 0.05]
        now = ""
        if state.phase == Phase.WAITING and state.waiting_for.split(":", 1)[0] in ("window", "replica", "lock"):
            now = state.last_error
        elif record.get("doing"):
            now = record.get("note") or pacing.REASON_WORDS.get(record["doing"], "")
        if now or spent:
            found.append(PacedTable(state.run_id, state.table_label, now, spent))
    return found[:limit], len(found)


def dashboard_context(request) -> dict:
    user = request.user
    context: dict = {"dashboard": True}
    if user.has_perm("governance.view_tableconfig") and user.has_perm("governance.view_recoverystate"):
        context["health"] = health_check()
        context["estate"] = summary = estate(context["health"])
        context["estate_archived"] = number(summary.archived_this_week)
        context["estate_disposed"] = number(summary.disposed_this_week or 0)
        context["deployment_warnings"] = deployment_warnings()
        context["paced"], context["paced_total"] = paced_tables()
    if user.has_perm("governance.view_hold"):
        today = timezone.localdate()
        context["active_holds"] = list(Hold.objects.active(today).order_by("-placed_at")[:PANEL_LIMIT])
        context["review_hold_count"] = Hold.objects.due_for_review(today).count()
        context["active_hold_count"] = Hold.objects.active(today).count()
        context["review_holds"] = list(Hold.objects.due_for_review(today).order_by("review_by")[:PANEL_LIMIT])
    if user.has_perm("governance.view_restorerequest"):
        # Restores someone must act on (approve, execute, resume) or that are moving rows now, oldest first.

        restores = RestoreRequest.objects.open().order_by("requested_at", "pk")
        context["open_restores"] = list(restores[:PANEL_LIMIT])
        for restore in context["open_restores"]:
            restore.status_words = STATUS_WORDS.get(restore.status, restore.status)
        context["open_restore_count"] = restores.count()
    if user.has_perm("governance.view_disposalbatch"):
        context["disposal_queue"] = disposal_queue()
    if user.has_perm("django_q.view_schedule"):
        context["upcoming_runs"] = upcoming_runs()
        context["paused"] = scheduler_paused()
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
