"""Table config admin: changelist with last outcome, preview, CSV/XLSX onboarding, history."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.utils.html import format_html
from import_export import resources
from import_export.admin import ImportExportMixin
from import_export.formats.base_formats import CSV, XLSX
from simple_history.admin import SimpleHistoryAdmin

from governance.models import Phase, RecoveryState, TableConfig

# The CSV columns of a config; the natural key identifies the row, so an
# import updates an existing config instead of duplicating it.
CONFIG_FIELDS = (
    "source_db",
    "schema_name",
    "table_name",
    "table_type",
    "archival_logic",
    "date_column",
    "contract_table",
    "contract_key_column",
    "contract_reference_column",
    "contract_maturity_column",
    "hold_contract_column",
    "months_retention_source",
    "years_retention_archive",
    "primary_key_columns",
    "execution_priority",
    "batch_size",
    "is_active",
)


class TableConfigResource(resources.ModelResource):
    """One config per row; every row goes through ``full_clean()`` (the model's
    ``clean()`` reads the live source schema), and a row that fails shows its
    field errors in the preview and blocks the whole import."""

    class Meta:
        model = TableConfig
        fields = CONFIG_FIELDS
        export_order = CONFIG_FIELDS
        import_id_fields = ("source_db", "schema_name", "table_name")
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True
        # All rows in one transaction: any error rolls every row back.
        use_transactions = True


def _last_state(field: str):
    latest = RecoveryState.objects.filter(config=OuterRef("pk")).order_by("-run_id", "-id")
    return Subquery(latest.values(field)[:1])


class LastOutcomeFilter(admin.SimpleListFilter):
    title = "last run outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [("never", "Never run"), *Phase.choices]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "never":
            return queryset.filter(last_phase__isnull=True)
        if value in Phase.values:
            return queryset.filter(last_phase=value)
        return queryset


@admin.register(TableConfig)
class TableConfigAdmin(ImportExportMixin, SimpleHistoryAdmin):
    resource_classes = [TableConfigResource]
    formats = [CSV, XLSX]
    list_display = (
        "table_name",
        "source_db",
        "schema_name",
        "table_type",
        "archival_logic",
        "months",
        "years",
        "is_active",
        "last_outcome",
        "rows_archived",
    )
    list_display_links = ("table_name",)
    list_filter = ("source_db", "table_type", "archival_logic", "is_active", LastOutcomeFilter)
    search_fields = ("table_name", "schema_name", "source_db")
    readonly_fields = ("created_at", "updated_at")
    actions = ["preview_plan"]
    fieldsets = (
        (None, {"fields": ("source_db", "schema_name", "table_name", "primary_key_columns", "table_type", "is_active")}),
        ("Eligibility", {"fields": ("archival_logic", "date_column")}),
        (
            "Contract maturity join",
            {
                "fields": (
                    "contract_table",
                    "contract_key_column",
                    "contract_reference_column",
                    "contract_maturity_column",
                    "hold_contract_column",
                )
            },
        ),
        (
            "Retention and execution",
            {"fields": ("months_retention_source", "years_retention_archive", "execution_priority", "batch_size")},
        ),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        # One query for the page: the last outcome and the archived total come
        # from correlated subqueries, not a query per row.
        totals = (
            RecoveryState.objects.filter(config=OuterRef("pk"))
            .order_by()
            .values("config")
            .annotate(total=Sum("archived_count"))
            .values("total")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_phase=_last_state("phase"),
                last_error=_last_state("last_error"),
                archived_total=Coalesce(Subquery(totals, output_field=IntegerField()), 0),
            )
        )

    @admin.display(description="months in source")
    def months(self, obj):
        return obj.effective_months

    @admin.display(description="years in archive")
    def years(self, obj):
        return obj.effective_years

    @admin.display(description="last run outcome", ordering="last_phase")
    def last_outcome(self, obj):
        if obj.last_phase is None:
            return "never run"
        label = Phase(obj.last_phase).label
        if obj.last_phase == Phase.FAILED:
            return format_html('<strong class="errornote-inline" title="{}">{}</strong>', obj.last_error or "", label)
        return label

    @admin.display(description="rows archived", ordering="archived_total")
    def rows_archived(self, obj):
        return f"{obj.archived_total:,}"

    @admin.action(description="Preview the archival plan (dry run, changes nothing)", permissions=["view"])
    def preview_plan(self, request, queryset):
        from archival.engine import plan

        # The engine plans active configs only; say which selected ones it skips.
        inactive = [str(c) for c in queryset.filter(is_active=False)]
        labels = [str(c) for c in queryset.filter(is_active=True)]
        result = plan(tables=labels) if labels else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Archival plan preview",
            "opts": self.model._meta,
            "result": result,
            "inactive": inactive,
        }
        return TemplateResponse(request, "admin/governance/tableconfig/preview.html", context)

    # The global import/export codes ("import", "export") name permissions no
    # model has; configs say explicitly who may bulk-onboard and export them.
    def has_import_permission(self, request):
        return request.user.has_perms(["governance.add_tableconfig", "governance.change_tableconfig"])

    def has_export_permission(self, request):
        return request.user.has_perm("governance.view_tableconfig")

    def has_delete_permission(self, request, obj=None):
        # Recovery states protect configs that ran; others are deactivated, so
        # the history of what was archived under which rules stays readable.
        return False
