"""Audit trail admin: read-only for everyone, CSV export streamed in keyset pages."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from governance.admin.lookups import lookup_problem
from governance.models import AuditEvent
from governance.spreadsheet import SafeCsvWriter

EXPORT_COLUMNS = (
    "id",
    "occurred_at",
    "actor",
    "action",
    "outcome",
    "object_type",
    "object_id",
    "object_repr",
    "run_id",
    "table_label",
    "counts",
    "details",
    "host",
)
# Keyset page size: the memory bound of an export, whatever the row count.
EXPORT_PAGE = 2000


def cell(value):
    """A model value as an export cell (before governance.spreadsheet escapes it)."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return str(value)


def iter_audit_csv(queryset, page_size: int = EXPORT_PAGE) -> Iterator[str]:
    """CSV lines of ``queryset`` in id order, read ``page_size`` rows at a time.

    Keyset pages (``id > last``) instead of ``.iterator()``: mssql-django's
    cursor buffers a whole result set, and OFFSET paging rescans; each page
    here is one indexed range read and is released before the next.
    """
    writer = SafeCsvWriter()
    yield writer.writerow(EXPORT_COLUMNS)
    base = queryset.order_by("id").values_list(*EXPORT_COLUMNS)
    last_id = 0
    while True:
        page = list(base.filter(id__gt=last_id)[:page_size])
        if not page:
            return
        for row in page:
            yield writer.writerow([cell(v) for v in row])
        last_id = page[-1][0]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    # The host and the full object text are on the event page.
    list_display = ("occurred_at", "actor", "action", "outcome", "table_label", "run_id", "object_short")
    list_filter = ("occurred_at", "outcome", "action", "table_label", "actor")
    search_fields = ("actor", "action", "table_label", "object_repr", "=run_id")
    date_hierarchy = "occurred_at"
    list_select_related = False
    show_full_result_count = False
    actions = None
    change_list_template = "admin/governance/auditevent/change_list.html"

    @admin.display(description="object", ordering="object_repr")
    def object_short(self, obj):
        return obj.object_repr if len(obj.object_repr) <= 40 else obj.object_repr[:37] + "..."

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    # Append-only: nobody adds, edits or deletes an event here, superusers included.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_export_permission(self, request) -> bool:
        return request.user.is_active and request.user.has_perm("governance.export_auditevent")

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_export": self.has_export_permission(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("export.csv", self.admin_site.admin_view(self.export_view), name="governance_auditevent_export"),
            *super().get_urls(),
        ]

    def export_view(self, request):
        """The changelist's current filters, as CSV, streamed."""
        if not self.has_export_permission(request):
            raise PermissionDenied
        try:
            if any("\x00" in k or "\x00" in v for k, values in request.GET.lists() for v in values):
                # No text column can hold it (PostgreSQL refuses it in JSON and text).
                raise IncorrectLookupParameters("a value contains a NUL character")
            changelist = self.get_changelist_instance(request)
            queryset = changelist.get_queryset(request)
        except IncorrectLookupParameters as exc:
            # The list view redirects and explains; an export link has no
            # list to show, so it says here what is wrong (a 400, nothing audited).
            return TemplateResponse(
                request,
                "admin/governance/bad_request.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Export refused",
                    "message": (
                        f"The export's filters cannot be applied ({lookup_problem(exc)}). Open the audit trail, choose the "
                        "filters with its own controls, and use its Export button."
                    ),
                    "back_url": reverse("admin:governance_auditevent_changelist"),
                    "back_label": "Audit events",
                },
                status=400,
            )
        AuditEvent.objects.record(
            "audit.exported",
            actor=request.user,
            details={"filters": {k: v for k, v in request.GET.items()}},
        )
        response = StreamingHttpResponse(iter_audit_csv(queryset), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        return response
