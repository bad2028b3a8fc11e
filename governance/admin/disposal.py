"""Disposal admin: the review queue, decisions, certificates, retention changes.

Every action is a thin adapter: a confirmation page (``Confirmation``, with a
mandatory comment for decisions), then one engine call from
``archival.disposal`` whose result is shown as messages. Execution is
enqueued on the workers (``enqueue_disposal``): no row is deleted inside an
HTTP request, and the batch list shows each batch's status as it goes.
Nothing here deletes through the ORM; no model offers add, change or delete.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from archival.disposal import decide_batch, decide_retention_change, plan_disposal
from archival.disposal.workers import enqueue_disposal
from governance.admin.audit import cell
from governance.admin.confirmation import Confirmation
from governance.models import BatchStatus, DisposalApproval, DisposalBatch, DisposalCertificate, RetentionChange
from governance.models.text import FREE_TEXT_MAX_LENGTH
from governance.spreadsheet import SafeCsvWriter

# The batch list reloads itself this often while a worker executes a batch.
REFRESH_SECONDS = 10

CERT_COLUMNS = (
    "id",
    "batch_id",
    "table_label",
    "key_columns",
    "key_low",
    "key_high",
    "planned_count",
    "row_count",
    "held_count",
    "digest",
    "encoding",
    "disposable_before",
    "approvals",
    "holds_checked",
    "planned_by",
    "executed_by",
    "executed_at",
    "prev_hash",
    "certificate_hash",
)


def certificates_csv(queryset, columns, name: str) -> StreamingHttpResponse:
    """Certificates as a streamed CSV download (disposal and restore certificates alike)."""
    writer = SafeCsvWriter()

    def lines():
        yield writer.writerow(columns)
        for cert in queryset.order_by("id").iterator(chunk_size=500):
            yield writer.writerow([cell(getattr(cert, c)) for c in columns])

    response = StreamingHttpResponse(lines(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}_{timezone.now():%Y%m%d_%H%M%S}.csv"'
    return response


class CommentForm(forms.Form):
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        min_length=3,
        max_length=FREE_TEXT_MAX_LENGTH,
        help_text="Recorded in the audit trail.",
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(DisposalBatch)
class DisposalBatchAdmin(ReadOnlyAdmin):
    # Review columns; the key range, plan id and table type are on the batch page.
    list_display = (
        "id",
        "table_label",
        "rows",
        "held",
        "status",
        "approvals_needed",
        "planned_by",
        "planned_at",
        "deleted",
    )
    list_filter = ("status", "table_type", "planned_at")
    search_fields = ("table_label", "planned_by", "plan_id")
    readonly_fields = tuple(f.name for f in DisposalBatch._meta.fields)
    actions = ("approve_batches", "reject_batches", "execute_batches")

    # Short headings: nine columns fit beside the filters at 1366 px.
    @admin.display(description="rows", ordering="row_count")
    def rows(self, obj):
        return f"{obj.row_count:,}"

    @admin.display(description="held", ordering="held_in_range")
    def held(self, obj):
        return "" if obj.held_in_range is None else f"{obj.held_in_range:,}"

    @admin.display(description="approvals", ordering="required_approvals")
    def approvals_needed(self, obj):
        return obj.required_approvals

    @admin.display(description="deleted", ordering="deleted_count")
    def deleted(self, obj):
        return "" if obj.deleted_count is None else f"{obj.deleted_count:,}"

    def has_approve_permission(self, request):
        return request.user.has_perm("governance.approve_disposal")

    def has_plan_permission(self, request):
        return request.user.has_perm("governance.plan_disposal")

    @admin.action(description="Approve the selected batches (asks for a comment)", permissions=["approve"])
    def approve_batches(self, request, queryset):
        return self._decide(request, queryset, "APPROVE")

    @admin.action(description="Reject the selected batches (asks for a comment)", permissions=["approve"])
    def reject_batches(self, request, queryset):
        return self._decide(request, queryset, "REJECT")

    def _decide(self, request, queryset, decision: str):
        confirmation = Confirmation(request, queryset.filter(status=BatchStatus.PENDING_REVIEW), CommentForm)
        if confirmation.confirmed:
            for batch in confirmation.objects:
                r = decide_batch(batch.pk, user=request.user, decision=decision, comment=confirmation.data["comment"])
                level = messages.SUCCESS if r.accepted else messages.ERROR
                self.message_user(
                    request, f"Batch {r.batch_id}: {r.message} ({r.status}, {r.approvals}/{r.required})", level
                )
            return None
        approving = decision == "APPROVE"
        return confirmation.page(
            self,
            action="approve_batches" if approving else "reject_batches",
            title="Approve disposal" if approving else "Reject disposal",
            warning="Approving lets these archived rows be destroyed once every approval is in (held rows are skipped)."
            if approving
            else "Rejecting closes these batches; their rows stay archived.",
            nothing="None of the selected batches is waiting for review.",
        )

    @admin.action(
        description="Execute the selected approved batches on the workers (asks to confirm)", permissions=["plan"]
    )
    def execute_batches(self, request, queryset):
        confirmation = Confirmation(request, queryset.executable().order_by("pk"))
        if confirmation.confirmed:
            queued = enqueue_disposal([b.pk for b in confirmation.objects], actor=request.user)
            if queued.executing:
                self.message_user(
                    request,
                    f"Already executing on a worker: batch {', '.join(str(pk) for pk in queued.executing)}.",
                    messages.WARNING,
                )
            if queued.refused:
                self.message_user(request, f"Nothing was queued: {queued.refused}.", messages.ERROR)
                return None
            link = (
                reverse("admin:governance_disposalbatch_changelist")
                + "?"
                + urlencode({"id__in": ",".join(str(pk) for pk in queued.queued)})
            )
            self.message_user(
                request,
                format_html(
                    "Queued {} batch{} for the workers: {}. They execute one at a time; "
                    '<a href="{}">the list of these batches</a> shows each one\'s status as it goes.',
                    len(queued.queued),
                    "" if len(queued.queued) == 1 else "es",
                    ", ".join(str(pk) for pk in queued.queued),
                    link,
                ),
                messages.SUCCESS,
            )
            return HttpResponseRedirect(link)
        return confirmation.page(
            self,
            action="execute_batches",
            title="Execute disposal",
            warning="Executing destroys the rows for good (held rows are skipped). The batches are executed on "
            "the workers, one at a time; this list shows their progress.",
            nothing="None of the selected batches is approved for execution.",
        )

    def get_urls(self):
        return [
            path("plan/", self.admin_site.admin_view(self.plan_view), name="governance_disposalbatch_plan"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        # The list reloads itself while a worker executes a batch (a meta refresh: no script).
        executing = DisposalBatch.objects.filter(status=BatchStatus.EXECUTING).exists()
        extra_context = {**(extra_context or {}), "refresh_seconds": REFRESH_SECONDS if executing else None}
        return super().changelist_view(request, extra_context)

    def plan_view(self, request):
        """Plan disposal for every active table (POST after confirmation)."""
        if not self.has_plan_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            result = plan_disposal(actor=request.user)
            for t in result.tables:
                if t.batches or t.held_rows or t.error:
                    level = messages.ERROR if t.error else messages.INFO
                    self.message_user(
                        request,
                        f"{t.table_label}: {t.error or f'{t.disposable_rows} rows in {len(t.batches)} batch(es), {t.held_rows} held'}",
                        level,
                    )
            self.message_user(request, f"Queued {result.batch_count} batch(es).", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:governance_disposalbatch_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Plan disposal",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/governance/disposalbatch/plan.html", context)


@admin.register(DisposalApproval)
class DisposalApprovalAdmin(ReadOnlyAdmin):
    list_display = ("batch", "approver", "decision", "decided_at", "comment")
    list_filter = ("decision", "decided_at")
    search_fields = ("approver", "comment")
    list_select_related = ("batch",)


@admin.register(DisposalCertificate)
class DisposalCertificateAdmin(ReadOnlyAdmin):
    list_display = ("id", "table_label", "row_count", "held_count", "digest_short", "executed_by", "executed_at")
    list_filter = ("executed_at",)
    search_fields = ("table_label", "digest", "certificate_hash")
    readonly_fields = CERT_COLUMNS[1:]
    actions = ("export_csv",)

    @admin.display(description="digest")
    def digest_short(self, obj):
        return obj.digest[:16] + "…"

    def has_export_permission(self, request):
        return request.user.has_perm("governance.export_disposalcertificate")

    @admin.action(description="Export the selected certificates as CSV", permissions=["export"])
    def export_csv(self, request, queryset):
        return certificates_csv(queryset, CERT_COLUMNS, "disposal_certificates")


@admin.register(RetentionChange)
class RetentionChangeAdmin(ReadOnlyAdmin):
    list_display = (
        "config",
        "old_years",
        "new_years",
        "status",
        "requested_by",
        "requested_at",
        "decided_by",
        "rows_updated",
    )
    list_filter = ("status",)
    list_select_related = ("config",)
    actions = ("approve_changes", "reject_changes")

    def has_approve_permission(self, request):
        return request.user.has_perm("governance.approve_retentionchange")

    @admin.action(description="Approve the selected shortenings (asks for a comment)", permissions=["approve"])
    def approve_changes(self, request, queryset):
        return self._decide(request, queryset, approve=True)

    @admin.action(description="Reject the selected shortenings (asks for a comment)", permissions=["approve"])
    def reject_changes(self, request, queryset):
        return self._decide(request, queryset, approve=False)

    def _decide(self, request, queryset, *, approve: bool):
        confirmation = Confirmation(request, queryset.filter(status="PENDING"), CommentForm)
        if confirmation.confirmed:
            for change in confirmation.objects:
                try:
                    r = decide_retention_change(
                        change.pk, user=request.user, approve=approve, comment=confirmation.data["comment"]
                    )
                    self.message_user(
                        request, f"{r.table_label}: {r.status}, {r.rows_updated or 0} rows recomputed", messages.SUCCESS
                    )
                except ValidationError as exc:
                    self.message_user(request, f"{change}: {'; '.join(exc.messages)}", messages.ERROR)
            return None
        return confirmation.page(
            self,
            action="approve_changes" if approve else "reject_changes",
            title="Approve retention change" if approve else "Reject retention change",
            warning="Shortening makes archived rows disposable sooner."
            if approve
            else "Rejecting keeps the current retention.",
            nothing="None of the selected retention changes is waiting for a decision.",
        )
