"""Hold admin: place with a scope, release with a reason, never delete.

Placing and releasing go through ``archival.disposal.holds`` (which takes the
archive lock that serializes holds with disposal batches and writes the audit
event); this module only collects input and renders results.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from governance.models import Hold, HoldScope, TableConfig
from governance.models.text import FREE_TEXT_MAX_LENGTH

SCOPE_FIELDS = {
    HoldScope.ALL: (),
    HoldScope.TABLE: ("source_db", "schema_name", "table_name"),
    HoldScope.CONTRACT: ("source_db", "contract_value"),
    HoldScope.DATE_RANGE: ("date_from", "date_to"),
    HoldScope.KEYS: ("source_db", "schema_name", "table_name"),
}


class PlaceHoldForm(forms.ModelForm):
    """The add form: a scope and exactly the fields that scope needs."""

    keys = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="KEYS scope: one primary key per line; components in key order separated by a comma.",
    )

    class Meta:
        model = Hold
        fields = (
            "scope",
            "source_db",
            "schema_name",
            "table_name",
            "contract_value",
            "date_from",
            "date_to",
            "reason",
            "review_by",
            "hold_until",
        )

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        for name in SCOPE_FIELDS.get(scope, ()):
            if not data.get(name):
                self.add_error(name, f"Required for a hold on {HoldScope(scope).label.lower()}.")
        if data.get("source_db") and data["source_db"] not in settings.SOURCE_DATABASES:
            self.add_error("source_db", f"Unknown source database; configured: {', '.join(settings.SOURCE_DATABASES)}.")
        if (
            scope in (HoldScope.TABLE, HoldScope.KEYS)
            and not self.errors
            and not TableConfig.objects.filter(
                source_db=data["source_db"], schema_name=data["schema_name"], table_name=data["table_name"]
            ).exists()
        ):
            self.add_error("table_name", "No table config names this table.")
        if (
            scope == HoldScope.DATE_RANGE
            and data.get("date_from")
            and data.get("date_to")
            and data["date_from"] > data["date_to"]
        ):
            self.add_error("date_to", "The range ends before it starts.")
        if scope == HoldScope.KEYS:
            keys = [line.strip() for line in (data.get("keys") or "").splitlines() if line.strip()]
            if not keys:
                self.add_error("keys", "A KEYS hold needs at least one key.")
            data["key_list"] = [[part.strip() for part in line.split(",")] for line in keys]
        today = timezone.localdate()
        if data.get("hold_until") and data["hold_until"] < today:
            self.add_error("hold_until", "A hold cannot end in the past.")
        return data


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
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ("placed_by", "placed_at")
        # Only the review date changes after placement; the scope and reason
        # are what was decided, and ending a hold is a release.
        return self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return (*PlaceHoldForm.Meta.fields, "keys")
        return (*self.readonly_fields[:11], "review_by", *self.readonly_fields[11:])

    def save_model(self, request, obj, form, change):
        from archival.disposal.holds import place_hold, update_review_date

        if change:
            update_review_date(obj.pk, review_by=form.cleaned_data.get("review_by"), actor=request.user)
            return
        data = form.cleaned_data
        hold = place_hold(
            scope=data["scope"],
            reason=data["reason"],
            actor=request.user,
            source_db=data.get("source_db") or "",
            schema_name=data.get("schema_name") or "",
            table_name=data.get("table_name") or "",
            contract_value=data.get("contract_value") or "",
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            review_by=data.get("review_by"),
            hold_until=data.get("hold_until"),
            keys=data.get("key_list") or None,
        )
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
        ids = ",".join(str(pk) for pk in queryset.filter(released_at__isnull=True).values_list("pk", flat=True))
        if not ids:
            self.message_user(request, "None of the selected holds is in force.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:governance_hold_release") + f"?ids={ids}")

    def get_urls(self):
        return [
            path("release/", self.admin_site.admin_view(self.release_view), name="governance_hold_release"),
            *super().get_urls(),
        ]

    def release_view(self, request):
        """Confirmation page: the holds to release and a mandatory reason."""
        if not self.has_release_permission(request):
            raise PermissionDenied
        raw = request.POST.get("ids") if request.method == "POST" else request.GET.get("ids", "")
        try:
            ids = [int(x) for x in (raw or "").split(",") if x]
        except ValueError:
            ids = []
        holds = list(Hold.objects.filter(pk__in=ids, released_at__isnull=True))
        form = ReleaseForm(request.POST or None)
        if request.method == "POST" and holds and form.is_valid():
            from archival.disposal.holds import release_hold

            for hold in holds:
                release_hold(hold.pk, actor=request.user, reason=form.cleaned_data["reason"])
            self.message_user(request, f"Released {len(holds)} hold(s).", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:governance_hold_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Release holds",
            "opts": self.model._meta,
            "holds": holds,
            "ids": ",".join(str(h.pk) for h in holds),
            "form": form,
        }
        return TemplateResponse(request, "admin/governance/hold/release.html", context)

    # --- impact (change page only: one count query per configured table) --
    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        hold = self.get_object(request, object_id)
        if hold is not None:
            from archival.disposal.holds import hold_impact

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
