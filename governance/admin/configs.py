"""Table config admin: changelist with last outcome, preview, CSV/XLSX onboarding, history."""

from __future__ import annotations

import copy
import os
import re
import tempfile
from functools import partial
from uuid import uuid4

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from import_export import resources
from import_export.admin import ImportExportMixin
from import_export.tmp_storages import TempFolderStorage
from simple_history.admin import SimpleHistoryAdmin

from archival.disposal import request_retention_change
from archival.engine import plan
from governance.admin.lookups import INT64_MAX, lookup_problem
from governance.models import Phase, RecoveryState, RetentionChange, RetentionChangeStatus, TableConfig
from governance.models.text import FREE_TEXT_MAX_LENGTH
from governance.spreadsheet import SafeCSV, SafeXLSX

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
    "min_batch_size",
    "max_pause_ms",
    "window_start",
    "window_end",
    "is_active",
)


def retention_change_of(config: TableConfig) -> tuple[TableConfig, int] | None:
    """(stored config, requested years) when saving ``config`` would change its
    years in archive, else None.

    Compared as effective years: clearing the field or changing the table type
    changes them too (the type's default applies).
    """
    if config.pk is None:
        return None  # a new config has no archived rows yet
    stored = TableConfig.objects.get(pk=config.pk)
    if config.effective_years == stored.effective_years:
        return None
    return stored, config.effective_years


def retention_change_problem(config: TableConfig, user) -> str:
    """Why ``user`` may not ask to change ``config``'s retention now ('' if they may)."""
    if user is None or not user.has_perm("governance.add_retentionchange"):
        return "changing the years in archive needs the permission to request retention changes"
    if RetentionChange.objects.filter(config_id=config.pk, status=RetentionChangeStatus.PENDING).exists():
        return "a retention change of this table is waiting for a compliance officer; it must be decided first"
    return ""


def keep_stored_years(config: TableConfig, stored: TableConfig) -> None:
    """Put the stored years back on ``config`` so its save leaves retention alone.

    Retention changes only through ``archival.disposal.request_retention_change``
    (lengthening recomputes retention_until of archived rows; shortening waits
    for approval). If the table type changed the default, the old years are
    pinned explicitly.
    """
    config.years_retention_archive = stored.years_retention_archive
    if config.effective_years != stored.effective_years:
        config.years_retention_archive = stored.effective_years


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

    def before_save_instance(self, instance, row, **kwargs):
        """A row that changes a config's years in archive does not write them:
        the change goes through ``request_retention_change`` once the whole
        import has committed (lengthening applies at once, shortening waits for
        a compliance officer). The archive is another database, so recomputing
        its rows inside the import's transaction could not be rolled back with
        a later bad row; ``on_commit`` runs it only if every row was saved, and
        never for the preview (dry run)."""
        change = retention_change_of(instance)
        if change is None:
            return
        stored, new_years = change
        user = kwargs.get("user")
        problem = retention_change_problem(instance, user)
        if problem:
            raise ValidationError({"years_retention_archive": problem})
        keep_stored_years(instance, stored)
        if not self._is_dry_run(kwargs):
            reason = f"Table config import {kwargs.get('file_name') or ''}".strip()
            transaction.on_commit(
                partial(request_retention_change, instance.pk, new_years=new_years, actor=user, reason=reason),
                using="default",
            )


class UploadStorage(TempFolderStorage):
    """Uploaded import files between the preview and the confirmation.

    The confirmation form names its file (``import_file_name``) and comes
    back from the browser; django-import-export's own temp-folder storage
    opens whatever path that names, then deletes it. Here a file is named by
    a random token we made, in the temp folder, and any other name (a path,
    ``..``) is treated as a file that does not exist.
    """

    TOKEN = re.compile(r"[0-9a-f]{32}")
    PREFIX = "archival-config-import-"

    def save(self, data):
        if not self.name:
            self.name = uuid4().hex
        # "x": a new file, never one that is already there.
        with open(self.get_full_path(), "xb") as file:
            file.write(data.encode(self.encoding or "utf-8") if isinstance(data, str) else data)

    def get_full_path(self):
        if not isinstance(self.name, str) or not self.TOKEN.fullmatch(self.name):
            raise FileNotFoundError(f"{self.name!r} is not an upload of this site")
        return os.path.join(tempfile.gettempdir(), self.PREFIX + self.name)


def _is_key(text: str) -> bool:
    """Whether ``text`` can be an integer primary key (configs and their history rows have one)."""
    return text.isdigit() and int(text) <= INT64_MAX


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


class TableConfigForm(forms.ModelForm):
    """The config form plus the reason a change of the years in archive needs."""

    retention_reason = forms.CharField(
        label="Reason for a retention change",
        required=False,
        max_length=FREE_TEXT_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when you change the years in archive of an existing config. Lengthening applies "
        "at once (archived rows are kept longer); shortening waits for a compliance officer's approval "
        "and the config keeps its years until then.",
    )
    # Set by TableConfigAdmin.get_form (the permission check needs the user).
    user = None

    class Meta:
        model = TableConfig
        fields = CONFIG_FIELDS

    def clean(self):
        cleaned = super().clean()
        self.retention_change = None
        if self.errors:
            return cleaned
        # clean() runs before the form's values reach self.instance (_post_clean).
        candidate = copy.copy(self.instance)
        for name in ("table_type", "years_retention_archive"):
            if name in cleaned:
                setattr(candidate, name, cleaned[name])
        change = retention_change_of(candidate)
        if change is not None:
            problem = retention_change_problem(self.instance, self.user)
            if problem:
                self.add_error("years_retention_archive", problem)
            elif not (cleaned.get("retention_reason") or "").strip():
                self.add_error("retention_reason", "Say why the retention changes (it goes to the audit trail).")
            else:
                self.retention_change = change
        return cleaned


@admin.register(TableConfig)
class TableConfigAdmin(ImportExportMixin, SimpleHistoryAdmin):
    form = TableConfigForm
    resource_classes = [TableConfigResource]
    tmp_storage_class = UploadStorage
    # Exports escape formulas (governance.spreadsheet); imports read the same formats.
    formats = [SafeCSV, SafeXLSX]
    # The library's page plus a same-origin script for its "Select all" toggle
    # (its inline handler is blocked by the Content-Security-Policy).
    export_template_name = "admin/governance/tableconfig/export.html"
    # Failed rows with each error beside its value; the preview fits the window.
    import_template_name = "admin/governance/tableconfig/import.html"
    # The table's full name in one column (database and schema filter on the
    # right); the join and batch settings are on the config page.
    list_display = (
        "table",
        "table_type",
        "archival_logic",
        "months",
        "years",
        "is_active",
        "last_outcome",
        "rows_archived",
    )
    list_display_links = ("table",)
    ordering = ("source_db", "schema_name", "table_name")
    list_filter = ("source_db", "table_type", "archival_logic", "is_active", LastOutcomeFilter)
    search_fields = ("table_name", "schema_name", "source_db")
    readonly_fields = ("created_at", "updated_at")
    actions = ["preview_plan"]
    fieldsets = (
        (
            None,
            {"fields": ("source_db", "schema_name", "table_name", "primary_key_columns", "table_type", "is_active")},
        ),
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
            {
                "fields": (
                    "months_retention_source",
                    "years_retention_archive",
                    "retention_reason",
                    "execution_priority",
                    "batch_size",
                )
            },
        ),
        (
            "Pacing and run window (docs/pacing.md)",
            {"fields": ("min_batch_size", "max_pause_ms", "window_start", "window_end")},
        ),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    # A reader (no change permission) sees the values that apply, with where
    # they come from, instead of empty fields and the editor's reason box.
    READ_ONLY_SWAPS = {
        "months_retention_source": "months_applied",
        "years_retention_archive": "years_applied",
        "batch_size": "batch_size_applied",
        "retention_reason": None,
    }

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        swapped = []
        for name, options in fieldsets:
            fields = [self.READ_ONLY_SWAPS.get(f, f) for f in options["fields"]]
            swapped.append((name, {**options, "fields": [f for f in fields if f]}))
        return swapped

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "months_applied", "years_applied", "batch_size_applied")

    @admin.display(description="Months kept in source")
    def months_applied(self, obj):
        return self._applied(obj.months_retention_source, obj.effective_months, obj)

    @admin.display(description="Years kept in archive")
    def years_applied(self, obj):
        return self._applied(obj.years_retention_archive, obj.effective_years, obj)

    @admin.display(description="Batch size")
    def batch_size_applied(self, obj):
        origin = "set for this table" if obj.batch_size else f"the default for {obj.source_db}"
        return f"{obj.effective_batch_size:,} ({origin})"

    @staticmethod
    def _applied(own, effective, obj) -> str:
        origin = "set for this table" if own is not None else f"the {obj.get_table_type_display()} default"
        return f"{effective} ({origin})"

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.user = request.user  # a fresh class per request (modelform_factory)
        return form

    def save_model(self, request, obj, form, change):
        """Save the config; a change of its years in archive goes through
        ``request_retention_change`` instead of being written here."""
        retention = getattr(form, "retention_change", None)
        if retention is None:
            return super().save_model(request, obj, form, change)

        stored, new_years = retention
        keep_stored_years(obj, stored)
        super().save_model(request, obj, form, change)
        result = request_retention_change(
            obj.pk, new_years=new_years, actor=request.user, reason=form.cleaned_data["retention_reason"]
        )
        if result.status == RetentionChangeStatus.PENDING:
            self.message_user(
                request,
                f"Shortening {result.table_label} from {result.old_years} to {result.new_years} years waits for a "
                f"compliance officer's approval; the config keeps {result.old_years} years until then.",
                messages.WARNING,
            )
        else:
            self.message_user(
                request,
                f"{result.table_label} now keeps archived rows {result.new_years} years "
                f"(was {result.old_years}); retention recomputed for {result.rows_updated or 0} archived rows.",
                messages.SUCCESS,
            )
        obj.refresh_from_db()

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

    @admin.display(description="table", ordering="table_name")
    def table(self, obj):
        return str(obj)

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

    def _bad_request(self, request, title: str, message: str, back: str, back_label: str):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "message": message,
            "back_url": reverse(back),
            "back_label": back_label,
        }
        return TemplateResponse(request, "admin/governance/bad_request.html", context, status=400)

    def process_import(self, request, **kwargs):
        """The confirmation of an import; a file that is gone is a 400 that says to upload it again."""
        upload_again = (
            "Nothing was imported. Upload the file again to preview and confirm it.",
            "admin:governance_tableconfig_import",
            "Import table configs",
        )
        if not self.has_import_permission(request):
            raise PermissionDenied
        fmt = request.POST.get("format")
        if fmt and not (fmt.isdigit() and int(fmt) < len(self.get_import_formats())):
            # django-import-export indexes its formats with the posted number unchecked.
            return self._bad_request(
                request,
                "Import refused",
                f"The confirmation names no known file format. {upload_again[0]}",
                *upload_again[1:],
            )
        try:
            return super().process_import(request, **kwargs)
        except FileNotFoundError:
            # Confirmed twice, confirmed after the temp folder was cleaned, or
            # a form naming a file that was never uploaded.
            return self._bad_request(
                request,
                "Import not found",
                f"The file of this import is no longer on the server (it was already imported, or it expired). "
                f"{upload_again[0]}",
                *upload_again[1:],
            )

    def export_action(self, request):
        try:
            return super().export_action(request)
        except IncorrectLookupParameters as exc:
            return self._bad_request(
                request,
                "Export refused",
                f"The export's filters cannot be applied ({lookup_problem(exc)}). Choose the filters on the list "
                "of table configs and use its Export button.",
                "admin:governance_tableconfig_changelist",
                "Table configs",
            )

    # simple_history looks the object and the version up with the ids as
    # given; ids that cannot be keys are objects that do not exist.
    def history_view(self, request, object_id, extra_context=None):
        if not _is_key(unquote(object_id)):
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if not (_is_key(unquote(object_id)) and _is_key(unquote(version_id))):
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return super().history_form_view(request, object_id, version_id, extra_context)

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
