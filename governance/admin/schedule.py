"""Scheduler admin: settings (caps, window, pause), run now, and the open runs
(stopped and continued through the run admin's actions); and django-q2's
Schedule admin, restricted to our own tasks.

Every button is an admin action confirmed on its own page
(``governance.admin.confirmation``) that calls one function of
``archival.dispatch`` (the same ones the schedule and ``manage.py
schedule_archival`` call) and renders its result.
The weekly cron itself is django-q2's Schedule "archival: weekly run",
edited in the django-q2 section of the admin through ``GuardedScheduleAdmin``:
the function is a choice among ``archival.tasks.REGISTRY``'s schedulable
tasks, never free text, and the arguments are checked as django-q2 will read
them (``archival.task_guard``, which also refuses any other function when a
schedule fires, whoever wrote it).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django_q import admin as q_admin
from django_q.models import Schedule

from archival import dispatch, task_guard
from governance.admin.confirmation import Confirmation
from governance.models import (
    ArchivalRun,
    AuditEvent,
    DispatchStatus,
    SchedulerSettings,
    TableDispatch,
)


@admin.register(SchedulerSettings)
class SchedulerSettingsAdmin(admin.ModelAdmin):
    fieldsets = (
        ("Switch", {"fields": ("paused",)}),
        (
            "Concurrency caps",
            {
                "fields": (
                    "mark_concurrency",
                    "archive_concurrency",
                    "dispose_concurrency",
                    "per_source_concurrency",
                )
            },
        ),
        (
            "Slices and run window",
            {
                "fields": (
                    "slice_seconds",
                    "max_run_minutes",
                    "lost_task_seconds",
                    "long_run_alert_minutes",
                )
            },
        ),
        (
            "Pacing (docs/pacing.md): batches yield to the sources' workload",
            {
                "fields": (
                    "pacing_enabled",
                    "pace_slow_batch_ms",
                    "pace_quick_batch_ms",
                    "pace_slowdown_factor",
                    "pace_sleep_coefficient",
                    "pace_min_batch_size",
                    "pace_max_pause_ms",
                )
            },
        ),
        (
            "Replica lag (the replicas are listed under Watched replicas)",
            {"fields": ("replica_check_seconds", "replica_max_wait_seconds")},
        ),
    )
    # Pausing goes through its own audited button, not a checkbox edit.
    readonly_fields = ("paused",)
    actions = ["run_now", "pause_scheduler", "resume_scheduler"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_start_run_permission(self, request):
        return request.user.has_perm("governance.start_run")

    def has_pause_permission(self, request):
        return request.user.has_perm("governance.pause_scheduler")

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            # The settings page's buttons post their action here, as a list would.
            return super().changelist_view(request, extra_context)
        # A singleton: the list is the one settings page.
        obj = SchedulerSettings.objects.current()
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:governance_schedulersettings_change", args=[obj.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        open_runs = (
            ArchivalRun.objects.open()
            .annotate(
                waiting=Count("dispatches", filter=Q(dispatches__status=DispatchStatus.WAITING)),
                in_flight=Count("dispatches", filter=Q(dispatches__status=DispatchStatus.QUEUED)),
                stopped=Count("dispatches", filter=Q(dispatches__status=DispatchStatus.STOPPED)),
                done=Count("dispatches", filter=Q(dispatches__status=DispatchStatus.DONE)),
            )
            .order_by("pk")
        )
        extra_context = {
            **(extra_context or {}),
            "open_runs": open_runs,
            "can_start": request.user.has_perm("governance.start_run"),
            "can_pause": request.user.has_perm("governance.pause_scheduler"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Run archival now (on the workers)", permissions=["start_run"])
    def run_now(self, request, queryset):
        confirmation = Confirmation(request, queryset)
        if confirmation.confirmed:
            result = dispatch.start_scheduled_run(actor=request.user, trigger="admin")
            if result.refused:
                self.message_user(request, f"Run refused: {result.refused}.", messages.ERROR)
            else:
                link = reverse("admin:governance_archivalrun_change", args=[result.run_id])
                self.message_user(
                    request,
                    format_html(
                        '<a href="{}">Run {}</a> started: {} table(s) to do, {} blocked, {} enqueued now.',
                        link,
                        result.run_id,
                        result.tables,
                        result.blocked,
                        result.enqueued,
                    ),
                    messages.SUCCESS,
                )
            return None
        return confirmation.page(
            self,
            action="run_now",
            title="Run archival now",
            warning="A new run starts on the workers with today's cutoff and the run window.",
            nothing="Select the scheduler settings to run archival now.",
        )

    @admin.action(description="Pause the scheduler", permissions=["pause"])
    def pause_scheduler(self, request, queryset):
        return self._switch(request, queryset, paused=True)

    @admin.action(description="Resume the scheduler", permissions=["pause"])
    def resume_scheduler(self, request, queryset):
        return self._switch(request, queryset, paused=False)

    def _switch(self, request, queryset, *, paused: bool):
        confirmation = Confirmation(request, queryset.filter(paused=not paused))
        if confirmation.confirmed:
            changed = dispatch.set_paused(paused, actor=request.user)
            done = "Scheduler paused." if paused else "Scheduler resumed."
            self.message_user(request, done if changed else "Nothing changed.")
            return None
        return confirmation.page(
            self,
            action="pause_scheduler" if paused else "resume_scheduler",
            title="Pause the scheduler" if paused else "Resume the scheduler",
            warning="No run starts and no new slice is enqueued; slices in progress finish their batch."
            if paused
            else "Waiting tables are enqueued again; the weekly schedule starts runs again.",
            nothing="The scheduler is already paused." if paused else "The scheduler is not paused.",
        )


@admin.register(TableDispatch)
class TableDispatchAdmin(admin.ModelAdmin):
    """What the scheduler has enqueued, per table of a run (read-only)."""

    list_display = (
        "run",
        "table",
        "stage",
        "status",
        "slices",
        "requeues",
        "touched_at",
        "last_outcome",
    )
    list_filter = ("status", "stage", "source_db")
    search_fields = ("state__table_label",)
    list_select_related = ("state",)
    readonly_fields = [f.name for f in TableDispatch._meta.fields]

    @admin.display(description="table", ordering="state__table_label")
    def table(self, obj):
        return obj.state.table_label

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ScheduleForm(forms.ModelForm):
    """A schedule of one of our tasks: the function is chosen, the arguments checked."""

    func = forms.ChoiceField(
        label="Task",
        choices=task_guard.schedulable_choices,
        help_text="Only the archival tasks can be scheduled (archival.tasks.REGISTRY); they take no arguments.",
    )

    class Meta:
        model = Schedule
        fields = (
            "name",
            "func",
            "args",
            "kwargs",
            "schedule_type",
            "minutes",
            "cron",
            "repeats",
            "next_run",
            "cluster",
        )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("func"):
            try:
                task_guard.check_schedule(cleaned["func"], cleaned.get("args"), cleaned.get("kwargs"))
            except forms.ValidationError as exc:
                field = "func" if exc.code == "func" else "args"
                self.add_error(field, exc)
        # Not on the form: a result hook is a second callable by dotted path
        # (cleared on save, refused when the schedule fires); the
        # intended-date keyword is the task's own (the weekly run's
        # occurrence key), never typed in.
        self.instance.hook = None
        entry = task_guard.registered(cleaned.get("func"))
        self.instance.intended_date_kwarg = entry.intended_date_kwarg if entry else None
        return cleaned


class GuardedScheduleAdmin(q_admin.ScheduleAdmin):
    """django-q2's schedule list, with our form; every save audited."""

    form = ScheduleForm
    fields = ScheduleForm.Meta.fields

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        AuditEvent.objects.record(
            "schedule.changed" if change else "schedule.added",
            actor=request.user,
            obj=obj,
            details={
                "func": obj.func,
                "args": obj.args or "",
                "kwargs": obj.kwargs or "",
                "schedule_type": obj.schedule_type,
                "cron": obj.cron or "",
                "minutes": obj.minutes,
                "repeats": obj.repeats,
                "next_run": obj.next_run.isoformat() if obj.next_run else "",
                "changed": list(form.changed_data),
            },
        )


def install(site: admin.AdminSite) -> None:
    """Swap django-q2's own Schedule admin (free-text function) for the guarded one."""
    if type(site._registry.get(Schedule)) is q_admin.ScheduleAdmin:
        site.unregister(Schedule)
        site.register(Schedule, GuardedScheduleAdmin)
