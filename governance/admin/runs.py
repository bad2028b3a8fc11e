"""Run admin: runs with their per-table states, resume and abandon.

Resume puts a run back on the workers (``archival.dispatch.resume_on_workers``,
the engine's resume rules without working inside the request); the run's page
shows its tables' progress. Abandon asks for a reason on the action's
confirmation and calls the same engine function as the CLI
(``archival.engine.abandon_run``).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, Sum
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from archival.dispatch import request_stop, resume_on_workers
from archival.engine import abandon_run
from archival.monitoring import named
from governance.admin.confirmation import Confirmation
from governance.models import OPEN_PHASES, ArchivalRun, Phase, RunStatus
from governance.models.text import FREE_TEXT_MAX_LENGTH


class AbandonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        min_length=5,
        max_length=FREE_TEXT_MAX_LENGTH,
        help_text="Why the unfinished tables of this run are given up (recorded in the audit trail). Nothing is lost: rows stay in the source or the archive.",
    )


# The run's page reloads itself this often while the run is open (a meta refresh: no script).
REFRESH_SECONDS = 10
# Phases a reader of a run page must see first: the table did not finish
# normally in this run.
ATTENTION_PHASES = (Phase.FAILED, Phase.BLOCKED, Phase.ABANDONED, *OPEN_PHASES)


def run_sentence(run: ArchivalRun, result, verb: str) -> str:
    """One line for the message bar: what happened to the run, in counts.

    ``result`` is the engine's RunResult (resume, abandon); failures are
    named (a few, then a count) so the reader knows where to click."""
    moved = getattr(result, "moved", 0) or 0
    tables = list(getattr(result, "tables", []) or [])
    phases: dict[str, int] = {}
    for table in tables:
        phases[table.phase] = phases.get(table.phase, 0) + 1
    parts = [
        f"{count} {Phase(phase).label.lower() if phase in Phase.values else phase}"
        for phase, count in sorted(phases.items())
    ]
    text = f"Run {run.pk} {verb}: {len(tables)} table{'s' if len(tables) != 1 else ''}"
    if parts:
        text += f" ({', '.join(parts)})"
    text += f", {moved:,} row{'s' if moved != 1 else ''} archived"
    failed = [t.label for t in getattr(result, "failed", [])]
    if failed:
        text += f"; failed: {named(failed)}"
    return text + "."


def describe_open_tables(run: ArchivalRun) -> str:
    """A run and its unfinished tables, with the error of each that has one."""
    states = run.states.filter(phase__in=OPEN_PHASES).order_by("table_label")
    tables = "; ".join(
        f"{s.table_label}: {s.get_phase_display()}" + (f" ({s.last_error[:200]})" if s.last_error else "")
        for s in states
    )
    return f"{run}: {tables}"


@admin.register(ArchivalRun)
class ArchivalRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "cutoff",
        "status",
        "trigger",
        "started_by",
        "started_at",
        "duration",
        "tables",
        "failed_tables",
        "waiting_tables",
        "rows_archived",
    )
    list_filter = ("status", "trigger", "started_at")
    date_hierarchy = "started_at"
    actions = ["resume_runs", "stop_runs", "abandon_runs"]
    readonly_fields = (
        "cutoff",
        "status",
        "trigger",
        "started_by",
        "started_at",
        "finished_at",
        "deadline",
        "stop_requested",
        "occurrence",
    )
    # The summary JSON is shown in words above the fields (change_form.html).
    fields = readonly_fields
    change_form_template = "admin/governance/archivalrun/change_form.html"

    def get_queryset(self, request):
        # Aggregates in the changelist query: no query per run.
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_tables=Count("states", distinct=True),
                n_failed=Count("states", filter=Q(states__phase=Phase.FAILED), distinct=True),
                n_waiting=Count("states", filter=Q(states__phase=Phase.WAITING), distinct=True),
                n_archived=Sum("states__archived_count"),
            )
        )

    @admin.display(description="tables", ordering="n_tables")
    def tables(self, obj):
        return obj.n_tables

    @admin.display(description="failed", ordering="n_failed")
    def failed_tables(self, obj):
        return obj.n_failed

    @admin.display(description="waiting", ordering="n_waiting")
    def waiting_tables(self, obj):
        """Tables waiting for a database or a lock (not failed: taken up again by the sweeper or a resume)."""
        return obj.n_waiting

    @admin.display(description="rows archived", ordering="n_archived")
    def rows_archived(self, obj):
        return f"{obj.n_archived or 0:,}"

    @admin.display(description="duration")
    def duration(self, obj):
        if obj.finished_at:
            return str(obj.finished_at - obj.started_at).split(".")[0]
        return "running" if obj.status == RunStatus.RUNNING else ""

    # Runs are created by the engine and changed only through its calls.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_start_permission(self, request):
        return request.user.has_perm("governance.start_run")

    def has_abandon_permission(self, request):
        return request.user.has_perm("governance.abandon_run")

    @admin.action(description="Resume the selected runs on the workers", permissions=["start"])
    def resume_runs(self, request, queryset):
        """Each run back on the workers (``dispatch.resume_on_workers``); its page shows the progress."""
        for run in queryset.order_by("id"):
            result = resume_on_workers(run.pk, actor=request.user)
            if result.refused:
                text, level = f"not resumed: {result.refused}.", messages.ERROR
            elif result.closed:
                text, level = "had nothing left to do; it is closed.", messages.SUCCESS
            else:
                retried = f", {result.retried} failed table(s) to be redone" if result.retried else ""
                text = f"queued on the workers: {result.tables} table(s) to do{retried}. Its page shows the progress."
                level = messages.SUCCESS
            link = reverse("admin:governance_archivalrun_change", args=[run.pk])
            self.message_user(request, format_html('<a href="{}">Run {}</a> {}', link, run.pk, text), level)

    @admin.action(description="Stop the selected runs (asks to confirm)", permissions=["start"])
    def stop_runs(self, request, queryset):
        """The stop switch of each running run (``dispatch.request_stop``); the runs stay resumable."""
        running = queryset.filter(status=RunStatus.RUNNING, stop_requested=False).order_by("pk")
        confirmation = Confirmation(request, running)
        if confirmation.confirmed:
            for run in confirmation.objects:
                done = request_stop(run.pk, actor=request.user)
                self.message_user(
                    request, f"Run {run.pk}: stop requested." if done else f"Run {run.pk} is not running."
                )
            return None
        return confirmation.page(
            self,
            action="stop_runs",
            title="Stop the runs",
            warning="Workers finish their current batch and stop; each run stays resumable.",
            nothing="None of the selected runs is running.",
        )

    @admin.action(
        description="Abandon the unfinished tables of the selected runs (asks for a reason)", permissions=["abandon"]
    )
    def abandon_runs(self, request, queryset):
        """The runs with unfinished tables, a mandatory reason, then ``abandon_run`` for each."""
        runs = queryset.filter(states__phase__in=OPEN_PHASES).distinct().order_by("pk")
        confirmation = Confirmation(request, runs, AbandonForm)
        if confirmation.confirmed:
            for run in confirmation.objects:
                result = abandon_run(run.pk, actor=request.user, reason=confirmation.data["reason"])
                self.message_user(request, run_sentence(run, result, "abandoned"), messages.SUCCESS)
            if len(confirmation.objects) == 1:
                return HttpResponseRedirect(
                    reverse("admin:governance_archivalrun_change", args=[confirmation.objects[0].pk])
                )
            return None
        return confirmation.page(
            self,
            action="abandon_runs",
            title="Abandon unfinished tables",
            warning="Abandoning lets newer runs start on these tables; no row is lost (each row is in the source, "
            "the archive, or both).",
            nothing="None of the selected runs has an unfinished table.",
            describe=describe_open_tables,
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The run page: its summary in words, the tables that need attention
        first, the rest collapsed (a run has a hundred tables or more)."""
        extra_context = {**(extra_context or {}), "can_abandon": self.has_abandon_permission(request)}
        run = self.get_object(request, object_id)
        if run is not None:
            states = list(run.states.order_by("table_label"))
            phases: dict[str, int] = {}
            for state in states:
                state.took = (
                    str(state.finished_at - state.started_at).split(".")[0]
                    if state.started_at and state.finished_at
                    else ""
                )
                phases[state.get_phase_display()] = phases.get(state.get_phase_display(), 0) + 1
            extra_context.update(
                {
                    "phase_counts": sorted(phases.items(), key=lambda item: -item[1]),
                    "table_count": len(states),
                    "rows_archived": f"{sum(s.archived_count or 0 for s in states):,}",
                    "attention_states": [s for s in states if s.phase in ATTENTION_PHASES],
                    "has_open_tables": any(s.phase in OPEN_PHASES for s in states),
                    "refresh_seconds": REFRESH_SECONDS if run.status == RunStatus.RUNNING else None,
                    "other_states": [s for s in states if s.phase not in ATTENTION_PHASES],
                }
            )
        return super().change_view(request, object_id, form_url, extra_context)
