"""Run admin: runs with their per-table states, resume and abandon.

Resume and abandon call the same engine functions as the CLI
(``archival.engine.resume_run`` / ``abandon_run``) and render their result.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, Sum
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from governance.models import OPEN_PHASES, ArchivalRun, Phase, RecoveryState, RunStatus


class AbandonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        min_length=5,
        help_text="Why the unfinished tables of this run are given up (recorded in the audit trail). Nothing is lost: rows stay in the source or the archive.",
    )


class RecoveryStateInline(admin.TabularInline):
    model = RecoveryState
    fields = (
        "table_label",
        "phase",
        "threshold",
        "eligible_count",
        "archived_count",
        "batches_done",
        "attempts",
        "duration",
        "lease_owner",
        "last_error",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="duration")
    def duration(self, obj):
        if obj.started_at and obj.finished_at:
            return str(obj.finished_at - obj.started_at).split(".")[0]
        return ""


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
    inlines = [RecoveryStateInline]
    actions = ["resume_runs"]
    readonly_fields = (
        "cutoff",
        "status",
        "trigger",
        "started_by",
        "started_at",
        "finished_at",
        "deadline",
        "stop_requested",
        "summary",
    )

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

    @admin.action(description="Resume the selected runs", permissions=["start"])
    def resume_runs(self, request, queryset):
        from archival.engine import resume_run

        for run in queryset.order_by("id"):
            result = resume_run(run.pk, actor=request.user)
            level = messages.SUCCESS if getattr(result, "ok", True) else messages.ERROR
            self.message_user(request, f"{run}: {result}", level)

    def get_urls(self):
        return [
            path(
                "<int:run_id>/abandon/",
                self.admin_site.admin_view(self.abandon_view),
                name="governance_archivalrun_abandon",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_abandon": self.has_abandon_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def abandon_view(self, request, run_id: int):
        """Confirmation page: abandon a run's unfinished tables, with a reason."""
        if not self.has_abandon_permission(request):
            raise PermissionDenied
        run = self.get_object(request, str(run_id))
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.model._meta, str(run_id))
        open_states = list(run.states.filter(phase__in=OPEN_PHASES).order_by("table_label"))
        form = AbandonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            from archival.engine import abandon_run

            result = abandon_run(run.pk, actor=request.user, reason=form.cleaned_data["reason"])
            self.message_user(request, f"{run}: abandoned. {result or ''}".strip(), messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:governance_archivalrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Abandon {run}",
            "opts": self.model._meta,
            "run": run,
            "open_states": open_states,
            "form": form,
        }
        return TemplateResponse(request, "admin/governance/archivalrun/abandon.html", context)
