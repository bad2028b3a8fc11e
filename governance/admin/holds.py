"""Hold admin: place with a scope, release with a reason, never delete.

Placing and releasing go through ``archival.disposal.holds`` (which takes the
archive lock that serializes holds with disposal batches and writes the audit
event); this module only collects input and renders results.
"""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

from archival.disposal.holds import check_hold, hold_impact, place_hold, release_hold, update_review_date
from governance.admin.confirmation import Confirmation
from governance.models import Hold, HoldScope, TableConfig
from governance.models.text import FREE_TEXT_MAX_LENGTH

# The form fields each scope needs; the others are hidden (static/governance/scoped_fields.js)
# and ignored when the hold is placed.
SCOPE_FIELDS = {
    HoldScope.ALL: (),
    HoldScope.TABLE: ("table",),
    HoldScope.CONTRACT: ("source_db", "contract_value"),
    HoldScope.DATE_RANGE: ("date_from", "date_to"),
    HoldScope.KEYS: ("table", "keys"),
}
# check_hold's error keys that name something other than a form field here:
# the form chooses a configured table instead of typing its name.
CHECK_FIELDS = {"table_name": "table", "schema_name": "table"}
CHECKED_ARGUMENTS = (
    "scope",
    "reason",
    "source_db",
    "schema_name",
    "table_name",
    "contract_value",
    "date_from",
    "date_to",
    "keys",
)
CONTRACT_HELP = (
    "A contract hold covers the archived rows of every configured table of this source database that carries "
    "the contract: directly (its hold contract column) or through its contract join (a table archived by its "
    "contract's maturity, and the contract table it joins to). The preview lists them."
)


class PlaceHoldForm(forms.ModelForm):
    """The add form: a scope and exactly the fields that scope needs, the
    table chosen from the configured ones."""

    table = forms.ModelChoiceField(
        queryset=TableConfig.objects.none(),
        required=False,
        help_text="One table, or explicit keys of one table: a configured table.",
    )
    keys = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Explicit keys: one primary key per line; components in key order separated by a comma. "
        "The archive search fills this from the rows you select there.",
    )

    class Meta:
        model = Hold
        fields = ("scope", "source_db", "contract_value", "date_from", "date_to", "reason", "review_by", "hold_until")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["table"].queryset = TableConfig.objects.order_by("source_db", "schema_name", "table_name")
        self.fields["source_db"] = forms.ChoiceField(
            label="Source database",
            required=False,
            choices=[("", "---------"), *((alias, alias) for alias in settings.SOURCE_DATABASES)],
            help_text=CONTRACT_HELP,
        )
        # scoped_fields.js shows only the chosen scope's fields.
        self.fields["scope"].widget.attrs["data-scope-fields"] = json.dumps(SCOPE_FIELDS)
        self.fields["contract_value"].help_text = "The contract id, as stored in the archived rows."

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        for name in SCOPE_FIELDS.get(scope, ()):
            if not data.get(name):
                self.add_error(name, f"Required for a hold on {HoldScope(scope).label.lower()}.")
        if scope == HoldScope.KEYS:
            keys = [line.strip() for line in (data.get("keys") or "").splitlines() if line.strip()]
            data["key_list"] = [[part.strip() for part in line.split(",")] for line in keys]
        today = timezone.localdate()
        if data.get("hold_until") and data["hold_until"] < today:
            self.add_error("hold_until", "A hold cannot end in the past.")
        if not self.errors:
            # The placement's own rules (a key's number of components, ...),
            # checked on exactly what will be placed and shown beside the
            # fields instead of failing the save.

            arguments = self.place_hold_arguments()
            checked = check_hold(**{name: arguments[name] for name in CHECKED_ARGUMENTS})
            for name, message in checked.errors.items():
                field = CHECK_FIELDS.get(name, name)
                self.add_error(field if field in self.fields else None, message)
        return data

    def place_hold_arguments(self) -> dict:
        """``archival.disposal.holds.place_hold`` keyword arguments: the scope's
        own fields only (what another scope's hidden fields hold is ignored)."""
        data = self.cleaned_data
        scope = data["scope"]
        fields = SCOPE_FIELDS.get(scope, ())
        table = data.get("table") if "table" in fields else None
        return {
            "scope": scope,
            "reason": data["reason"],
            "source_db": table.source_db if table else (data.get("source_db") or "" if "source_db" in fields else ""),
            "schema_name": table.schema_name if table else "",
            "table_name": table.table_name if table else "",
            "contract_value": data.get("contract_value") or "" if "contract_value" in fields else "",
            "date_from": data.get("date_from") if "date_from" in fields else None,
            "date_to": data.get("date_to") if "date_to" in fields else None,
            "review_by": data.get("review_by"),
            "hold_until": data.get("hold_until"),
            "keys": data.get("key_list") or None if "keys" in fields else None,
        }


class ReleaseForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        min_length=5,
        max_length=FREE_TEXT_MAX_LENGTH,
        help_text="Why these holds end (recorded in the audit trail).",
    )


class HoldStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired"), ("released", "Released"), ("review", "Due for review")]

    def queryset(self, request, queryset):
        today = timezone.localdate()
        value = self.value()
        if value == "active":
            return queryset.active(today)
        if value == "expired":
            return queryset.filter(released_at__isnull=True, hold_until__lt=today)
        if value == "released":
            return queryset.filter(released_at__isnull=False)
        if value == "review":
            return queryset.due_for_review(today)
        return queryset


@admin.register(Hold)
class HoldAdmin(admin.ModelAdmin):
    # What a compliance officer scans at 1366 px: what is held, why, until
    # when and whether it is still in force; who placed it is on the hold page.
    list_display = (
        "id",
        "target",
        "reason_short",
        "placed_at",
        "review_by",
        "hold_until",
        "status",
    )
    list_filter = (HoldStatusFilter, "scope", "source_db")
    search_fields = ("reason", "placed_by", "table_name", "contract_value")
    date_hierarchy = "placed_at"
    actions = ["release_holds"]
    readonly_fields = (
        "scope",
        "source_db",
        "schema_name",
        "table_name",
        "contract_value",
        "date_from",
        "date_to",
        "reason",
        "placed_by",
        "placed_at",
        "hold_until",
        "released_by",
        "released_at",
        "release_reason",
    )

    # --- search: "which holds cover contract X / table Y" -----------------
    def get_search_results(self, request, queryset, search_term):
        """A term matches holds that name it, and also holds that *cover* it:
        ALL holds, and CONTRACT holds when the term is a table whose config
        names a contract column."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if not term:
            return results, may_have_duplicates
        covering = Q(scope=HoldScope.ALL) | Q(scope=HoldScope.CONTRACT, contract_value=term)
        configs = TableConfig.objects.filter(table_name__iexact=term)
        for config in configs:
            covering |= Q(
                scope__in=[HoldScope.TABLE, HoldScope.KEYS], source_db=config.source_db, table_name=config.table_name
            )
            if config.hold_contract_column:
                covering |= Q(scope=HoldScope.CONTRACT, source_db=config.source_db)
        return results | queryset.filter(covering), True

    # --- forms ------------------------------------------------------------
    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = PlaceHoldForm
            kwargs["fields"] = flatten_fieldsets(self.get_fieldsets(request, obj))
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is not None:
            return super().get_fieldsets(request, obj)
        return [
            (None, {"fields": ("scope",)}),
            (
                "What the hold covers",
                {"fields": ("table", "source_db", "contract_value", "date_from", "date_to", "keys")},
            ),
            ("Why and for how long", {"fields": ("reason", "review_by", "hold_until")}),
        ]

    def get_changeform_initial_data(self, request):
        """The archive search links here with ``scope=KEYS``, the table and one
        ``keys`` parameter per selected row."""
        initial = super().get_changeform_initial_data(request)
        keys = request.GET.getlist("keys")
        if keys:
            initial["keys"] = "\n".join(keys)
        return initial

    @property
    def media(self):
        return super().media + forms.Media(js=["governance/scoped_fields.js"])

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ("placed_by", "placed_at")
        # Only the review date changes after placement; the scope and reason
        # are what was decided, and ending a hold is a release.
        return self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return flatten_fieldsets(self.get_fieldsets(request, obj))
        return (*self.readonly_fields[:11], "review_by", *self.readonly_fields[11:])

    def save_model(self, request, obj, form, change):
        if change:
            update_review_date(obj.pk, review_by=form.cleaned_data.get("review_by"), actor=request.user)
            return
        hold = place_hold(actor=request.user, **form.place_hold_arguments())
        # The admin's response and LogEntry need the saved object.
        obj.pk = hold.pk
        obj.placed_by = hold.placed_by
        obj.placed_at = hold.placed_at

    def save_related(self, request, form, formsets, change):
        # Keys are written by place_hold in the hold's transaction.
        return

    # --- never delete -----------------------------------------------------
    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_release_permission(self, request):
        return request.user.has_perm("governance.release_hold")

    # --- release ----------------------------------------------------------
    @admin.action(description="Release the selected holds (asks for a reason)", permissions=["release"])
    def release_holds(self, request, queryset):
        """The holds in force among the selection, a mandatory reason, then one release each."""
        confirmation = Confirmation(request, queryset.filter(released_at__isnull=True).order_by("pk"), ReleaseForm)
        if confirmation.confirmed:
            for hold in confirmation.objects:
                release_hold(hold.pk, actor=request.user, reason=confirmation.data["reason"])
            self.message_user(request, f"Released {len(confirmation.objects)} hold(s).", messages.SUCCESS)
            return None
        return confirmation.page(
            self,
            action="release_holds",
            title="Release holds",
            warning="Releasing ends the protection of these holds: rows they covered become disposable once "
            "their retention has passed.",
            nothing="None of the selected holds is in force.",
            describe=lambda h: f"{h} — {h.reason} (placed by {h.placed_by} on {h.placed_at:%Y-%m-%d})",
            submit=f"Release {len(confirmation.objects)} hold(s)",
        )

    # --- preview: what the hold would cover, before it is placed ----------
    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST" and "_preview" in request.POST and self.has_add_permission(request):
            return self.preview_view(request, form_url)
        return super().add_view(request, form_url, extra_context)

    def preview_view(self, request, form_url=""):
        """The add form again, filled in, with the tables and archived rows the
        hold would cover: ``place_hold(dry_run=True)`` places it inside the
        archive transaction, counts, and rolls back (nothing kept, nothing
        audited)."""
        form = self.get_form(request, None)(request.POST)
        preview = None
        if form.is_valid():
            try:
                preview = place_hold(actor=request.user, dry_run=True, **form.place_hold_arguments()).impact
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
        fieldsets = self.get_fieldsets(request, None)
        admin_form = helpers.AdminForm(
            form, list(fieldsets), {}, self.get_readonly_fields(request, None), model_admin=self
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Add hold",
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
            "preview": preview,
            "preview_rows": sum(row.rows for row in preview or []),
        }
        return self.render_change_form(request, context, add=True, change=False, obj=None, form_url=form_url)

    # --- impact (change page only: one count query per configured table) --
    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        hold = self.get_object(request, object_id)
        if hold is not None:
            extra_context["impact"] = hold_impact(hold)
        return super().change_view(request, object_id, form_url, extra_context)

    # --- columns ----------------------------------------------------------
    @admin.display(description="covers", ordering="scope")
    def target(self, obj):
        return str(obj).split(": ", 1)[-1]

    @admin.display(description="reason")
    def reason_short(self, obj):
        return obj.reason if len(obj.reason) <= 40 else obj.reason[:37] + "..."

    @admin.display(description="status")
    def status(self, obj):
        if obj.released_at:
            return "released"
        if obj.hold_until and obj.hold_until < timezone.localdate():
            return "expired"
        if obj.review_by and obj.review_by <= timezone.localdate():
            return "active, review due"
        return "active"
