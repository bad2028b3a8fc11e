"""Disposal admin: the review queue, decisions, certificates, retention changes.

Every action is a thin adapter: a confirmation page (with a mandatory comment
for decisions), then one engine call from ``archival.disposal`` whose result
is shown as messages. Nothing here deletes through the ORM; no model offers
add, change or delete.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from governance.admin.audit import cell
from governance.admin.lookups import posted_ids
from governance.models import BatchStatus, DisposalApproval, DisposalBatch, DisposalCertificate, RetentionChange
from governance.models.text import FREE_TEXT_MAX_LENGTH
from governance.spreadsheet import SafeCsvWriter

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


def _ids(request) -> list[int]:
    return posted_ids(request.POST.get("ids") if request.method == "POST" else request.GET.get("ids", ""))


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
        return self._redirect(request, queryset.filter(status=BatchStatus.PENDING_REVIEW), "APPROVE")

    @admin.action(description="Reject the selected batches (asks for a comment)", permissions=["approve"])
    def reject_batches(self, request, queryset):
        return self._redirect(request, queryset.filter(status=BatchStatus.PENDING_REVIEW), "REJECT")

    @admin.action(description="Execute the selected approved batches (asks to confirm)", permissions=["plan"])
    def execute_batches(self, request, queryset):
        return self._redirect(request, queryset.executable(), "EXECUTE")

    def _redirect(self, request, queryset, what):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        if not ids:
            self.message_user(request, "None of the selected batches can take this action.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:governance_disposalbatch_confirm") + f"?ids={ids}&what={what}")

    def get_urls(self):
        return [
            path("confirm/", self.admin_site.admin_view(self.confirm_view), name="governance_disposalbatch_confirm"),
            path("plan/", self.admin_site.admin_view(self.plan_view), name="governance_disposalbatch_plan"),
            *super().get_urls(),
        ]

    def confirm_view(self, request):
        """Confirmation page for approve / reject (comment required) and execute."""
        from archival.disposal import decide_batch, execute_disposal

        what = request.POST.get("what") if request.method == "POST" else request.GET.get("what", "")
        if what in ("APPROVE", "REJECT"):
            if not self.has_approve_permission(request):
                raise PermissionDenied
        elif what == "EXECUTE":
            if not self.has_plan_permission(request):
                raise PermissionDenied
        else:
            raise PermissionDenied
        batches = list(DisposalBatch.objects.filter(pk__in=_ids(request)))
        form = CommentForm(request.POST or None) if what != "EXECUTE" else None
        if request.method == "POST" and batches and (form is None or form.is_valid()):
            if what == "EXECUTE":
                result = execute_disposal(batch_ids=[b.pk for b in batches], actor=request.user)
                if not result.batches:
                    self.message_user(
                        request, "None of the selected batches is approved for execution.", messages.WARNING
                    )
                for b in result.batches:
                    level = messages.ERROR if b.error else messages.SUCCESS
                    text = (
                        b.error
                        or b.skipped
                        or f"destroyed {b.deleted} rows, {b.held} held; certificate {b.certificate_id}"
                    )
                    self.message_user(request, f"Batch {b.batch_id} ({b.table_label}): {text}", level)
            else:
                for batch in batches:
                    r = decide_batch(batch.pk, user=request.user, decision=what, comment=form.cleaned_data["comment"])
                    level = messages.SUCCESS if r.accepted else messages.ERROR
                    self.message_user(
                        request, f"Batch {r.batch_id}: {r.message} ({r.status}, {r.approvals}/{r.required})", level
                    )
            return HttpResponseRedirect(reverse("admin:governance_disposalbatch_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": {"APPROVE": "Approve disposal", "REJECT": "Reject disposal", "EXECUTE": "Execute disposal"}[what],
            "opts": self.model._meta,
            "objects": batches,
            "ids": ",".join(str(b.pk) for b in batches),
            "what": what,
            "form": form,
            "warning": "Executing destroys the rows for good (held rows are skipped)." if what == "EXECUTE" else "",
        }
        return TemplateResponse(request, "admin/governance/disposalbatch/confirm.html", context)

    def plan_view(self, request):
        """Plan disposal for every active table (POST after confirmation)."""
        from archival.disposal import plan_disposal

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
            "objects": [],
            "what": "PLAN",
            "form": None,
            "warning": "Queues every expired, unheld archived row for review. No data changes.",
        }
        return TemplateResponse(request, "admin/governance/disposalbatch/confirm.html", context)


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
        return self._redirect(queryset, "APPROVE")

    @admin.action(description="Reject the selected shortenings (asks for a comment)", permissions=["approve"])
    def reject_changes(self, request, queryset):
        return self._redirect(queryset, "REJECT")

    def _redirect(self, queryset, what):
        ids = ",".join(str(pk) for pk in queryset.filter(status="PENDING").values_list("pk", flat=True))
        return HttpResponseRedirect(reverse("admin:governance_retentionchange_confirm") + f"?ids={ids}&what={what}")

    def get_urls(self):
        return [
            path("confirm/", self.admin_site.admin_view(self.confirm_view), name="governance_retentionchange_confirm"),
            *super().get_urls(),
        ]

    def confirm_view(self, request):
        from archival.disposal import decide_retention_change

        if not self.has_approve_permission(request):
            raise PermissionDenied
        what = request.POST.get("what") if request.method == "POST" else request.GET.get("what", "")
        if what not in ("APPROVE", "REJECT"):
            raise PermissionDenied
        changes = list(RetentionChange.objects.filter(pk__in=_ids(request), status="PENDING"))
        form = CommentForm(request.POST or None)
        if request.method == "POST" and changes and form.is_valid():
            for change in changes:
                try:
                    r = decide_retention_change(
                        change.pk, user=request.user, approve=what == "APPROVE", comment=form.cleaned_data["comment"]
                    )
                    self.message_user(
                        request, f"{r.table_label}: {r.status}, {r.rows_updated or 0} rows recomputed", messages.SUCCESS
                    )
                except ValidationError as exc:
                    self.message_user(request, f"{change}: {'; '.join(exc.messages)}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:governance_retentionchange_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Approve retention change" if what == "APPROVE" else "Reject retention change",
            "opts": self.model._meta,
            "objects": changes,
            "ids": ",".join(str(c.pk) for c in changes),
            "what": what,
            "form": form,
            "warning": "Shortening makes archived rows disposable sooner." if what == "APPROVE" else "",
        }
        return TemplateResponse(request, "admin/governance/disposalbatch/confirm.html", context)
