"""Admin input from the address bar and the action form: refused or explained, never a server error.

Django's admin lets the address bar filter a changelist by any lookup on a
local field, offered or not, and hands the values to the database as they
come. Some cannot be answered and fail while the page renders (a 500):

- a lookup into a JSON column (``?details__contains=x``: SQLite has no JSON
  containment);
- a regular expression (``?name__regex=(``: SQLite runs Python's ``re``,
  PostgreSQL its own dialect; each fails on what the other accepts);
- an integer beyond 64 bits (``?id__in=1,99999999999999999999``: SQLite
  cannot bind it) or a year beyond 9999 (``?last_login__year=...``).

No page here offers any of those, so they are refused the way Django refuses
a lookup it does not offer (``DisallowedModelAdminLookup``: a 400). A filter
Django cannot apply (no such field, a date that is not a date) makes the
changelist redirect to itself without filters (``?e=1``), silently: the
list then says which filter it dropped and why. An action posted with ids
that cannot be primary keys is refused with a message, as an empty
selection is.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpResponseRedirect

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Transforms that take a calendar number; datetime cannot build a year past 9999.
DATE_PARTS = {"year", "iso_year", "month", "day", "week", "week_day", "iso_week_day", "quarter", "hour", "minute"}
REFUSED_LOOKUPS = {"regex", "iregex"}


def lookup_problem(exc: Exception) -> str:
    """IncorrectLookupParameters' message in plain words, without a ValidationError's list wrapping."""
    cause = exc.__cause__ or exc.__context__
    texts = getattr(cause, "messages", None) or getattr(exc, "messages", None)
    if texts:
        return " ".join(str(t) for t in texts)
    return str(exc) or "a filter names a field the list does not have"


def _is_integer_field(field) -> bool:
    if field.is_relation and getattr(field, "target_field", None) is not None:
        field = field.target_field
    return isinstance(field, models.IntegerField | models.AutoField)


def _integers(value) -> list[int]:
    """The integers written in a lookup value (a list for ``__in``)."""
    texts = value if isinstance(value, list | tuple) else str(value).split(",")
    out = []
    for text in texts:
        text = str(text).strip()
        if text.lstrip("+-").isdigit():
            out.append(int(text))
    return out


def lookup_value_allowed(model, lookup: str, value) -> bool:
    """False for a lookup the database could not answer (see the module docstring)."""
    parts = lookup.split(LOOKUP_SEP)
    try:
        field = model._meta.get_field(parts[0])
    except FieldDoesNotExist:
        return True  # Django itself answers "no such field" (IncorrectLookupParameters)
    rest = parts[1:]
    if field.is_relation and rest and field.related_model is not None:
        try:
            field = field.related_model._meta.get_field(rest[0])
            rest = rest[1:]
        except FieldDoesNotExist:
            pass
    if isinstance(field, models.JSONField) or REFUSED_LOOKUPS & set(rest):
        return False
    numbers = _integers(value)
    if set(rest) & {"year", "iso_year"}:
        return all(1 <= n <= 9999 for n in numbers)
    if set(rest) & DATE_PARTS:
        return all(0 <= n <= 9999 for n in numbers)
    if _is_integer_field(field):
        return all(INT64_MIN <= n <= INT64_MAX for n in numbers)
    return True


class ExplainedLookups:
    def lookup_allowed(self, lookup, value, request=None):
        if not lookup_value_allowed(self.model, lookup, value):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_changelist_instance(self, request):
        try:
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            match = getattr(request, "resolver_match", None)
            if ERROR_FLAG not in request.GET and match and match.url_name.endswith("_changelist"):
                messages.error(
                    request,
                    f"The filters in the address cannot be applied ({lookup_problem(exc)}); the list is shown "
                    "without them. Choose filters with the list's own controls.",
                )
            raise

    def response_action(self, request, queryset):
        pk = self.model._meta.pk
        for text in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                key = pk.to_python(text)
                bad = _is_integer_field(pk) and not INT64_MIN <= key <= INT64_MAX
            except ValidationError:
                bad = True
            if bad:
                self.message_user(
                    request,
                    f"The selection names {text[:40]!r}, which is not one of the listed objects; nothing was "
                    "done. Select the objects in the list and choose the action again.",
                    messages.WARNING,
                )
                return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)


def install(site: admin.AdminSite) -> None:
    """Give every registered admin the refusals and the explanation (once)."""
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, ExplainedLookups):
            continue
        stock = type(model_admin)
        explained = type(stock.__name__, (ExplainedLookups, stock), {"__module__": stock.__module__})
        site.unregister(model)
        site.register(model, explained)
