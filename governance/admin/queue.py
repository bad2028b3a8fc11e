"""Close django-q2's "resubmit" action to everyone but archival administrators.

django-q2 offers ``resubmit_task`` to anyone who can view successes or
failures, and the action re-runs the task's function (and deletes the
failure row). Viewing task history is an auditor's right; re-running work is
an archival administrator's (``governance.start_run``).
"""

from __future__ import annotations

from django.contrib import admin
from django_q import admin as q_admin
from django_q.models import Failure, Success


class _GatedResubmit:
    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.has_perm("governance.start_run"):
            actions.pop("resubmit_task", None)
        return actions


class GatedFailAdmin(_GatedResubmit, q_admin.FailAdmin):
    pass


class GatedTaskAdmin(_GatedResubmit, q_admin.TaskAdmin):
    pass


def install(site: admin.AdminSite) -> None:
    """Swap django-q2's own admins for the gated ones (leaves any other admin alone)."""
    for model, stock, gated in (
        (Failure, q_admin.FailAdmin, GatedFailAdmin),
        (Success, q_admin.TaskAdmin, GatedTaskAdmin),
    ):
        if type(site._registry.get(model)) is stock:
            site.unregister(model)
            site.register(model, gated)
