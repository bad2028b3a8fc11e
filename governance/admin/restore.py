"""Restore admin: request, preview, approve or reject, execute on the workers, watch the progress.

Thin adapters over ``archival.restore``: the request form collects input and
calls ``create_request`` (which validates, plans and previews; a refusal is
shown beside the form and nothing is saved); the actions' confirmation
(``Confirmation``, the shape of Django's ``delete_selected``: the objects, a
comment where one is needed, a button and a way back; the request's page posts
the same actions) calls ``approve``, ``reject`` or ``execute_on_workers`` once
per request and reports each in words. No row moves inside an HTTP
request: execution is enqueued and the request's page shows its progress.

The batch ledger and the certificates live in the archive database (the
router sends every query there) and are read-only for everyone.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.db.models import Q, Sum
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from archival.restore.errors import RestoreRefused
from archival.restore.requests import approve, create_request, preview, reject
from archival.restore.workers import execute_on_workers
from governance.admin.confirmation import Confirmation
from governance.admin.disposal import CommentForm, ReadOnlyAdmin, certificates_csv
from governance.admin.lookups import INT64_MAX
from governance.models import (
    RestoreCertificate,
    RestoreKey,
    RestoreLedger,
    RestoreRequest,
    RestoreSelection,
    RestoreStatus,
    TableConfig,
)
from governance.models.text import FREE_TEXT_MAX_LENGTH

# The form fields each kind of selection needs; the others are hidden
# (static/governance/scoped_fields.js) and ignored when the request is made.
SELECTION_FIELDS = {
    RestoreSelection.KEY_RANGE: ("key_from", "key_to"),
    RestoreSelection.CONTRACT: ("contract_value",),
    RestoreSelection.KEYS: ("keys",),
    RestoreSelection.DATE_RANGE: ("date_from", "date_to"),
    RestoreSelection.RUN: ("archive_run_id",),
}
# Which statuses each operation of the confirmation page applies to; the
# engine checks again (and refuses with a reason) when it is called.
OPERATIONS = {
    "APPROVE": (RestoreStatus.PENDING_APPROVAL,),
    "REJECT": (RestoreStatus.PENDING_APPROVAL,),
    "EXECUTE": (RestoreStatus.APPROVED, RestoreStatus.FAILED),
}


def stalled() -> Q:
    """An execution whose worker stopped renewing its lease (killed, machine gone):
    executing again takes the request over and resumes from its ledger."""
    return Q(status=RestoreStatus.EXECUTING) & (Q(lease_owner="") | Q(lease_expires_at__lt=timezone.now()))


def able_to(what: str) -> Q:
    """The requests an operation applies to (a stalled execution may be executed again)."""
    able = Q(status__in=OPERATIONS[what])
    return able | stalled() if what == "EXECUTE" else able


# The changelist action of each operation (the request's page posts them too).
ACTION_NAMES = {"APPROVE": "approve_requests", "REJECT": "reject_requests", "EXECUTE": "execute_requests"}
CONFIRMATION_WARNINGS = {
    "APPROVE": "Approving lets an archival administrator move these rows back into their source databases.",
    "REJECT": "Rejecting closes the request; nothing moves.",
    "EXECUTE": "The rows move back on the workers, in batches, parents first; each request's page shows "
    "its progress. A failed execution resumes where it stopped.",
}


# Statuses whose preview is recomputed when the page opens: nothing has moved
# yet, and the approver must see the conflicts of now, not of the request.
PREVIEWED = (RestoreStatus.PENDING_APPROVAL, RestoreStatus.APPROVED)
# A status in a word or two, for the list and the page's first sentence.
STATUS_WORDS = {
    RestoreStatus.PENDING_APPROVAL: "waiting for approval",
    RestoreStatus.APPROVED: "approved",
    RestoreStatus.EXECUTING: "executing",
    RestoreStatus.COMPLETED: "completed",
    RestoreStatus.REJECTED: "rejected",
    RestoreStatus.FAILED: "failed",
}
# The page reloads itself while rows move (a meta refresh: no script needed).
REFRESH_SECONDS = 10
# A KEYS request's page lists this many of its keys (the certificate proves them all).
KEYS_SHOWN = 50

CERT_COLUMNS = (
    "id",
    "request_id",
    "config_id",
    "table_label",
    "key_columns",
    "row_count",
    "skipped_identical",
    "held_count",
    "digest",
    "encoding",
    "selection",
    "reason",
    "requested_by",
    "approved_by",
    "executed_by",
    "executed_at",
    "prev_hash",
    "certificate_hash",
)


def split_key(line: str) -> list[str]:
    """One primary key as typed: components in key order, separated by a tab
    (pasted from a spreadsheet, as the command's keys file) or else by a comma."""
    separator = "\t" if "\t" in line else ","
    return [part.strip() for part in line.split(separator)]


def sentence(exc: Exception) -> str:
    """An engine refusal ("a key range needs ...") as a sentence for the page."""
    text = str(exc).strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def _key_parts(text: str) -> list[str]:
    """A stored key's components (canonical key text: TAB-separated, archival/rowkeys.py)."""
    return text.split("\t")


def key_words(key) -> str:
    """A key as a person writes it: ``17``, or ``(3, p1, 2021-04-30)`` for a key of several columns."""
    if not key:
        return ""
    parts = [str(v) for v in key] if isinstance(key, list | tuple) else [str(key)]
    return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"


def plain(value) -> str:
    """A stored JSON value (a certificate's selection) in words, not as a Python repr."""
    if isinstance(value, dict):
        return "; ".join(f"{k.replace('_', ' ')}: {plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return key_words(value)
    return "" if value is None else str(value)


def describe_selection(obj: RestoreRequest) -> str:
    """The rows a request selects, in words (never a list's repr)."""
    kind = obj.selection
    if kind == RestoreSelection.KEY_RANGE:
        return f"keys {key_words(obj.key_low) or 'the first'} to {key_words(obj.key_high) or 'the last'}"
    if kind == RestoreSelection.CONTRACT:
        return f"contract {obj.contract_value}"
    if kind == RestoreSelection.KEYS:
        return f"{obj.key_count:,} listed key{'s' if obj.key_count != 1 else ''}"
    if kind == RestoreSelection.DATE_RANGE:
        return f"reference dates {obj.date_from or 'any'} to {obj.date_to or 'any'}"
    if kind == RestoreSelection.RUN:
        return f"rows of run {obj.archive_run_id}"
    return obj.get_selection_display()


class RestoreRequestForm(forms.ModelForm):
    """The request form: a configured table, the kind of selection and exactly
    its fields, and the reason."""

    # Declared, not derived from the model: no "add a config" or "change it"
    # buttons beside the choice (configs are edited on their own page).
    config = forms.ModelChoiceField(queryset=TableConfig.objects.none(), label="Table")

    key_from = forms.CharField(
        required=False,
        max_length=1000,
        label="From key",
        help_text="First primary key (inclusive). A key of several columns: its components in key order, "
        "separated by a comma.",
    )
    key_to = forms.CharField(
        required=False,
        max_length=1000,
        label="To key",
        help_text="Last primary key (inclusive), written as the first.",
    )
    keys = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
        label="Keys",
        help_text="One primary key per line; components in key order separated by a comma "
        "(or a tab, as pasted from a spreadsheet).",
    )
    archive_run_id = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=INT64_MAX,
        label="Archive run",
        help_text="The number of the archival run whose rows of this table come back (see Runs).",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        min_length=5,
        max_length=FREE_TEXT_MAX_LENGTH,
        help_text="Why the rows come back (ticket, recalculation, regulator's case). Recorded in the audit trail "
        "and on the certificate.",
    )

    class Meta:
        model = RestoreRequest
        fields = ("config", "selection", "contract_value", "date_from", "date_to")
        labels = {"config": "Table", "selection": "Rows", "date_from": "From date", "date_to": "To date"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["config"].queryset = TableConfig.objects.order_by("source_db", "schema_name", "table_name")
        self.fields["config"].help_text = (
            "The configured table whose archived rows go back to its source. Tables it references come back "
            "first (the preview lists them)."
        )
        self.fields["contract_value"].help_text = (
            "The contract id, as stored in the archived rows (the table's hold contract column, or its contract "
            "reference column for a table archived by its contract's maturity)."
        )
        self.fields["date_from"].help_text = "First reference date (inclusive): the date that made the row eligible."
        self.fields["date_to"].help_text = "Last reference date (inclusive)."
        # scoped_fields.js shows only the chosen selection's fields.
        self.fields["selection"].widget.attrs["data-scope-fields"] = json.dumps(SELECTION_FIELDS)

    def clean(self):
        data = super().clean()
        kind = data.get("selection")
        for name in SELECTION_FIELDS.get(kind, ()):
            if data.get(name) in (None, "") and name not in self.errors:
                self.add_error(name, f"Required to restore {RestoreSelection(kind).label.lower()}.")
        if kind == RestoreSelection.KEYS:
            lines = [line for line in (data.get("keys") or "").splitlines() if line.strip()]
            data["key_list"] = [split_key(line) for line in lines]
        return data

    def create_request_arguments(self) -> dict:
        """``archival.restore.requests.create_request`` keyword arguments: the
        chosen selection's own fields only (another kind's hidden fields are ignored)."""
        data = self.cleaned_data
        kind = data["selection"]
        fields = SELECTION_FIELDS[kind]
        return {
            "selection": kind,
            "reason": data["reason"],
            "key_low": split_key(data["key_from"]) if "key_from" in fields and data.get("key_from") else None,
            "key_high": split_key(data["key_to"]) if "key_to" in fields and data.get("key_to") else None,
            "contract_value": data.get("contract_value") or "" if "contract_value" in fields else "",
            "keys": data.get("key_list") if "keys" in fields else None,
            "date_from": data.get("date_from") if "date_from" in fields else None,
            "date_to": data.get("date_to") if "date_to" in fields else None,
            "archive_run_id": data.get("archive_run_id") if "archive_run_id" in fields else None,
        }


def request_link(request_id: int | None, text: str | None = None):
    if request_id is None:
        return ""
    url = reverse("admin:governance_restorerequest_change", args=[request_id])
    return format_html('<a href="{}">{}</a>', url, text or f"Restore {request_id}")


@admin.register(RestoreRequest)
class RestoreRequestAdmin(admin.ModelAdmin):
    # What a reviewer scans at 1366 px: which table, which rows, where the
    # request is, who asked and decided, and how many rows it moves; the
    # reason, comment and timings are on the request's page.
    list_display = (
        "id",
        "table_label",
        "rows_selected",
        "state",
        "requested_by",
        "requested_at",
        "decided_by",
        "planned",
        "restored",
    )
    list_display_links = ("id", "table_label")
    list_filter = ("status", "selection", "requested_at")
    search_fields = ("table_label", "requested_by", "decided_by", "reason", "=id")
    date_hierarchy = "requested_at"
    actions = ("approve_requests", "reject_requests", "execute_requests")
    change_form_template = "admin/governance/restorerequest/change_form.html"
    fieldsets = (
        (None, {"fields": ("table_label", "rows_selected", "reason", "requested_by", "requested_at")}),
        ("Review", {"fields": ("status", "decided_by", "decided_at", "decision_comment")}),
        (
            "Execution",
            {"fields": ("executed_by", "started_at", "finished_at", "attempts", "lease_owner", "last_error")},
        ),
    )
    readonly_fields = (
        "table_label",
        "rows_selected",
        "reason",
        "requested_by",
        "requested_at",
        "status",
        "decided_by",
        "decided_at",
        "decision_comment",
        "executed_by",
        "started_at",
        "finished_at",
        "attempts",
        "lease_owner",
        "last_error",
    )

    def get_queryset(self, request):
        # Row counts in the changelist query: no query per request.
        return (
            super()
            .get_queryset(request)
            .annotate(n_planned=Sum("tables__planned_count"), n_restored=Sum("tables__restored_count"))
        )

    # --- columns ------------------------------------------------------------
    @admin.display(description="rows", ordering="selection")
    def rows_selected(self, obj):
        return describe_selection(obj)

    @admin.display(description="status", ordering="status")
    def state(self, obj):
        return STATUS_WORDS.get(obj.status, obj.status)

    @admin.display(description="planned", ordering="n_planned")
    def planned(self, obj):
        return f"{getattr(obj, 'n_planned', None) or 0:,}"

    @admin.display(description="restored", ordering="n_restored")
    def restored(self, obj):
        return f"{getattr(obj, 'n_restored', None) or 0:,}"

    # --- who may do what ----------------------------------------------------
    def has_add_permission(self, request):
        return request.user.has_perm("governance.request_restore")

    # A request changes only through the engine (approve, reject, execute).
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_request_permission(self, request):
        return request.user.has_perm("governance.request_restore")

    def has_approve_permission(self, request):
        return request.user.has_perm("governance.approve_restore")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # --- the request form ---------------------------------------------------
    def get_fieldsets(self, request, obj=None):
        if obj is not None:
            return self.fieldsets
        return [
            (None, {"fields": ("config", "selection")}),
            (
                "Which rows",
                {"fields": ("key_from", "key_to", "contract_value", "keys", "date_from", "date_to", "archive_run_id")},
            ),
            ("Why", {"fields": ("reason",)}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = RestoreRequestForm
        return super().get_form(request, obj, change=change, **kwargs)

    @property
    def media(self):
        return super().media + forms.Media(js=["governance/scoped_fields.js"])

    def add_view(self, request, form_url="", extra_context=None):
        """GET: Django's add page. POST: ``create_request`` with the form's
        values; a refusal is shown beside the form, nothing saved."""
        # One way out of the form: the new request's page, with its preview.
        extra_context = {**(extra_context or {}), "show_save_and_add_another": False, "show_save_and_continue": False}
        if request.method != "POST":
            return super().add_view(request, form_url, extra_context)
        if not self.has_add_permission(request):
            raise PermissionDenied

        form = self.get_form(request, None)(request.POST)
        if form.is_valid():
            try:
                created = create_request(
                    form.cleaned_data["config"], actor=request.user, **form.create_request_arguments()
                )
            except RestoreRefused as exc:
                form.add_error(None, sentence(exc))
            except DatabaseError as exc:
                # A source or the archive did not answer: both transactions rolled back.
                form.add_error(None, f"The databases could not be read now ({exc}); nothing was saved. Try again.")
            else:
                self.message_user(
                    request,
                    format_html(
                        "{} asked for: {}. Review the preview below; a compliance officer approves it.",
                        request_link(created.pk),
                        describe_selection(created),
                    ),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:governance_restorerequest_change", args=[created.pk]))
        fieldsets = self.get_fieldsets(request, None)
        admin_form = helpers.AdminForm(form, list(fieldsets), {}, (), model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Add {self.opts.verbose_name}",
            "subtitle": None,
            "adminform": admin_form,
            "object_id": None,
            "original": None,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=True, change=False, obj=None, form_url=form_url)

    # --- the request's page: preview, decision, progress ----------------------
    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id)
        if request.method == "GET" and obj is not None and self.has_view_permission(request, obj):
            extra_context.update(self.page_context(request, obj))
        return super().change_view(request, object_id, form_url, extra_context)

    def page_context(self, request, obj: RestoreRequest) -> dict:
        """The plan per table (parents first), the problems the engine found,
        and which buttons this user gets."""
        problems: list[str] = []
        tables = None
        previewed_at = None
        if obj.status in PREVIEWED:
            try:
                result = preview(obj)
            except (RestoreRefused, DatabaseError) as exc:
                problems.append(f"The preview could not be computed now: {sentence(exc)}")
            else:
                tables = list(result.tables)
                problems.extend(result.problems)
                previewed_at = timezone.now()
        if tables is None:
            tables = list(obj.tables.order_by("position"))
        by_id = {t.pk: t for t in tables}
        for table in tables:
            parent_of = by_id.get(table.referenced_by_id)
            table.parent_of = parent_of.table_label if parent_of else ""
        eligible_again = [t for t in tables if t.eligible_again_count]
        listed_keys = []
        if obj.selection == RestoreSelection.KEYS:
            listed_keys = [
                key_words(_key_parts(text))
                for text in RestoreKey.objects.filter(request_id=obj.pk)
                .order_by("id")
                .values_list("key_text", flat=True)[:KEYS_SHOWN]
            ]
        status = obj.status
        return {
            "restore": obj,
            # The heading and breadcrumbs name the request in words (its __str__ carries the status code).
            "subtitle": f"Restore {obj.pk}: {obj.table_label}, {describe_selection(obj)}",
            "rows_selected": describe_selection(obj),
            "status_words": STATUS_WORDS.get(obj.status, obj.status),
            "restore_tables": tables,
            "restore_problems": problems,
            "previewed_at": previewed_at,
            "eligible_again_tables": eligible_again,
            "listed_keys": listed_keys,
            "more_keys": max(obj.key_count - len(listed_keys), 0),
            "restore_totals": {
                "planned": sum(t.planned_count for t in tables),
                "restored": sum(t.restored_count for t in tables),
                "skipped": sum(t.skipped_identical for t in tables),
            },
            "refresh_seconds": REFRESH_SECONDS if status == RestoreStatus.EXECUTING else None,
            "can_decide": self.has_approve_permission(request) and status in OPERATIONS["APPROVE"],
            "can_execute": self.has_request_permission(request)
            and RestoreRequest.objects.filter(able_to("EXECUTE"), pk=obj.pk).exists(),
            "is_stalled": RestoreRequest.objects.filter(stalled(), pk=obj.pk).exists(),
        }

    # --- approve, reject, execute --------------------------------------------
    @admin.action(description="Approve the selected requests (asks for a comment)", permissions=["approve"])
    def approve_requests(self, request, queryset):
        return self._confirm(request, queryset, "APPROVE")

    @admin.action(description="Reject the selected requests (asks for a comment)", permissions=["approve"])
    def reject_requests(self, request, queryset):
        return self._confirm(request, queryset, "REJECT")

    @admin.action(
        description="Execute the selected approved requests on the workers (asks to confirm)", permissions=["request"]
    )
    def execute_requests(self, request, queryset):
        return self._confirm(request, queryset, "EXECUTE")

    def _confirm(self, request, queryset, what: str):
        """The confirmation for approve / reject (a comment required) and execute
        (enqueued on the workers), for one or several requests; then one engine
        call per request. One request leads back to its page, where its progress shows."""
        confirmation = Confirmation(
            request, queryset.filter(able_to(what)).order_by("pk"), CommentForm if what != "EXECUTE" else None
        )
        if confirmation.confirmed:
            for restore in confirmation.objects:
                self._apply(request, restore, what, confirmation.data.get("comment", ""))
            if len(confirmation.objects) == 1:
                return HttpResponseRedirect(
                    reverse("admin:governance_restorerequest_change", args=[confirmation.objects[0].pk])
                )
            return None
        return confirmation.page(
            self,
            action=ACTION_NAMES[what],
            title={"APPROVE": "Approve restore", "REJECT": "Reject restore", "EXECUTE": "Execute restore"}[what],
            warning=CONFIRMATION_WARNINGS[what],
            nothing="None of the selected requests can take this action now (approve and reject need a request "
            "waiting for approval; execute needs an approved or failed one, or one whose worker stopped answering).",
            describe=lambda r: format_html(
                "{}: {}, asked for by {} &mdash; {}", request_link(r.pk), r.table_label, r.requested_by, r.reason
            ),
        )

    def _apply(self, request, restore: RestoreRequest, what: str, comment: str) -> None:
        """One engine call, its outcome as one message with a link to the request."""
        link = request_link(restore.pk)
        try:
            if what == "APPROVE":
                approve(restore, actor=request.user, comment=comment)
                text, level = "approved; an archival administrator may now execute it.", messages.SUCCESS
            elif what == "REJECT":
                reject(restore, actor=request.user, comment=comment)
                text, level = "rejected; nothing moves.", messages.SUCCESS
            else:
                execute_on_workers(restore, actor=request.user)
                text, level = "queued for the workers; its page shows the progress.", messages.SUCCESS
        except RestoreRefused as exc:
            text, level = f"refused: {exc}.", messages.ERROR
        except DatabaseError as exc:
            text, level = f"the database did not answer ({exc}); open the request to see its state.", messages.ERROR
        self.message_user(request, format_html("{} ({}): {}", link, restore.table_label, text), level)


class RequestColumn:
    """A column linking an archive-side row to its request (a control-database id, no foreign key)."""

    @admin.display(description="request", ordering="request_id")
    def request(self, obj):
        return request_link(obj.request_id, str(obj.request_id))


class RestoredCounts:
    """The counts a restore batch and a restore certificate both show, with separators."""

    @admin.display(description="rows", ordering="row_count")
    def rows(self, obj):
        return f"{obj.row_count:,}"

    @admin.display(description="skipped", ordering="skipped_identical")
    def skipped(self, obj):
        return f"{obj.skipped_identical:,}"

    @admin.display(description="held", ordering="held_count")
    def held(self, obj):
        return f"{obj.held_count:,}"


@admin.register(RestoreLedger)
class RestoreLedgerAdmin(RequestColumn, RestoredCounts, ReadOnlyAdmin):
    # A batch: its table, how many rows went where, and how far it got.
    list_display = (
        "request",
        "table_label",
        "batch",
        "rows",
        "skipped",
        "deleted",
        "held",
        "state",
        "committed_at",
    )
    list_filter = ("state", "committed_at")
    search_fields = ("table_label", "=request_id")
    # Newest batches first (the model's order, request then table then batch, suits a resume, not a reader).
    ordering = ("-id",)
    readonly_fields = (
        "request",
        "table_label",
        "batch_no",
        "key_range",
        "row_count",
        "skipped_identical",
        "deleted_count",
        "held_count",
        "state",
        "committed_at",
    )
    fields = readonly_fields
    show_full_result_count = False

    @admin.display(description="batch", ordering="batch_no")
    def batch(self, obj):
        return obj.batch_no

    @admin.display(description="deleted", ordering="deleted_count")
    def deleted(self, obj):
        return f"{obj.deleted_count:,}"

    @admin.display(description="keys")
    def key_range(self, obj):
        high = key_words(obj.key_high)
        return f"after {key_words(obj.key_low)}, up to {high}" if obj.key_low else f"from the start up to {high}"


@admin.register(RestoreCertificate)
class RestoreCertificateAdmin(RequestColumn, RestoredCounts, ReadOnlyAdmin):
    list_display = (
        "id",
        "request",
        "table_label",
        "rows",
        "skipped",
        "held",
        "digest_short",
        "approved_by",
        "executed_at",
    )
    list_filter = ("executed_at",)
    search_fields = ("table_label", "digest", "certificate_hash", "=request_id")
    readonly_fields = (
        "request",
        "table_label",
        "key_column_names",
        "row_count",
        "skipped_identical",
        "held_count",
        "digest",
        "encoding",
        "selection_text",
        "reason",
        "requested_by",
        "approved_by",
        "executed_by",
        "executed_at",
        "prev_hash",
        "certificate_hash",
    )
    fields = readonly_fields
    actions = ("export_csv",)

    @admin.display(description="digest")
    def digest_short(self, obj):
        return obj.digest[:16] + "…"

    @admin.display(description="key columns")
    def key_column_names(self, obj):
        return ", ".join(str(c) for c in obj.key_columns or [])

    @admin.display(description="selection")
    def selection_text(self, obj):
        return plain(obj.selection)

    def has_export_permission(self, request):
        return request.user.has_perm("governance.export_restorecertificate")

    @admin.action(description="Export the selected certificates as CSV", permissions=["export"])
    def export_csv(self, request, queryset):
        return certificates_csv(queryset, CERT_COLUMNS, "restore_certificates")
