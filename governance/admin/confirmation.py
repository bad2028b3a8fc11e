"""The confirmation step of a changelist action, in the shape of Django's ``delete_selected``.

The action itself renders the confirmation page for the objects it applies
to (and the form of a mandatory comment or reason, where there is one); the
page posts the same action back to the changelist with the objects' ids as
``_selected_action``, the action's name and ``post=yes``. No confirmation
has a URL of its own, so no page can be reached around the action's
permission: the changelist offers and runs an action only for a user who
holds it (``@admin.action(permissions=...)``), on the confirming POST as on
the first.

A page that acts on one object (a run, a restore request) posts the same
three fields from a button (``object_action_button``), without the flag,
and lands on the same confirmation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest
from django.template.response import TemplateResponse

TEMPLATE = "admin/governance/confirm_action.html"


class Confirmation:
    """The objects an action applies to, and whether the user has confirmed it.

    ``confirmed`` is true on the confirming POST (``post=yes``) when there
    is something to act on and the form, if any, is valid; ``data`` is the
    form's cleaned data then. Otherwise ``page`` renders the confirmation,
    the form with its errors included.
    """

    def __init__(self, request: HttpRequest, objects: Iterable[Any], form_class: type[forms.Form] | None = None):
        self.request = request
        self.objects = list(objects)
        posted = request.method == "POST" and request.POST.get("post") == "yes"
        self.form = form_class(request.POST if posted else None) if form_class is not None else None
        self.confirmed = posted and bool(self.objects) and (self.form is None or self.form.is_valid())

    @property
    def data(self) -> dict:
        return self.form.cleaned_data if self.form is not None and self.confirmed else {}

    def page(
        self,
        model_admin: admin.ModelAdmin,
        *,
        action: str,
        title: str,
        warning: str,
        nothing: str,
        describe: Callable[[Any], str] = str,
        submit: str = "",
    ) -> TemplateResponse | None:
        """The confirmation page, or None (back to the list) with ``nothing``
        as a warning when none of the selected objects can take the action."""
        if not self.objects:
            model_admin.message_user(self.request, nothing, messages.WARNING)
            return None
        count = len(self.objects)
        context = {
            **model_admin.admin_site.each_context(self.request),
            "title": title,
            "subtitle": None,
            "opts": model_admin.model._meta,
            "objects": self.objects,
            "descriptions": [describe(obj) for obj in self.objects],
            "form": self.form,
            "warning": warning,
            "action_name": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "submit": submit or (f"{title} ({count})" if count > 1 else title),
            "media": model_admin.media,
        }
        self.request.current_app = model_admin.admin_site.name
        return TemplateResponse(self.request, TEMPLATE, context)
