"""Permission matrix: every admin URL x every role and an outsider.

URLs are generated from ``admin.site._registry`` (each ModelAdmin's own URL
patterns, custom views included) and actions from ``get_actions``; every one
must have a decision in ``DECISIONS``/``ACTION_DECISIONS``, so a new view or
action cannot ship without someone saying who may use it.
"""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import reverse
from django_q.models import OrmQ

from governance.models import AuditEvent
from tests.admin_fixtures import PERSONAS

pytestmark = pytest.mark.django_db(databases="__all__")

CO, AA, AU = "compliance", "administrator", "auditor"
STAFF_READERS = frozenset({CO, AA, AU})
NOBODY: frozenset = frozenset()


def viewers(*extra_admin_views, add=NOBODY, delete=NOBODY, readers=STAFF_READERS, **custom):
    decision = {"changelist": readers, "add": add, "change": readers, "history": readers, "delete": delete}
    decision.update(custom)
    return decision


# Who may open each admin URL (by URL name suffix). Everyone else: 403 (staff)
# or the login page (the archive reader is not staff).
DECISIONS: dict[str, dict[str, frozenset]] = {
    "governance.tableconfig": viewers(
        add=frozenset({AA}),
        # django-import-export: onboarding needs add+change; export needs view.
        **{
            "import": frozenset({AA}),
            "process_import": frozenset({AA}),
            "export": STAFF_READERS,
            "simple_history": STAFF_READERS,
        },
    ),
    "governance.hold": viewers(add=frozenset({CO})),
    "governance.auditevent": viewers(export=frozenset({AU})),
    "governance.archivalrun": viewers(),
    # Scheduling: settings read by all staff roles, changed and
    # driven (run now, pause; stop and resume a run: actions) by administrators.
    "governance.schedulersettings": viewers(),
    "governance.tabledispatch": viewers(readers=frozenset({AA, AU})),
    # Watched replicas (docs/pacing.md): the administrator names them, the
    # auditor reads them; switched off, never deleted.
    "governance.replicawatch": viewers(readers=frozenset({AA, AU}), add=frozenset({AA})),
    # Disposal (docs/disposal.md): every staff role reads the review
    # queue, decisions and certificates; nothing is added, edited or deleted
    # through the admin. Planning and execution are the administrator's, the
    # decisions the compliance officer's (actions, confirmed in the action).
    "governance.disposalbatch": viewers(plan=frozenset({AA})),
    "governance.disposalapproval": viewers(),
    "governance.disposalcertificate": viewers(),
    "governance.retentionchange": viewers(),
    # Restore (docs/roles.md): every staff role reads requests, their
    # batches and certificates; administrators ask (add) and execute, compliance
    # officers approve or reject (actions, confirmed in the action). Nothing is
    # changed or deleted through the admin.
    "governance.restorerequest": viewers(add=frozenset({AA})),
    "governance.restoreledger": viewers(),
    "governance.restorecertificate": viewers(),
    "auth.user": viewers(readers=NOBODY, password_change=NOBODY),
    "auth.group": viewers(readers=NOBODY),
    # Schedules: administrators add and change them (only our own tasks:
    # governance.admin.schedule.GuardedScheduleAdmin); the other staff roles read.
    "django_q.schedule": viewers(add=frozenset({AA})),
    "django_q.success": viewers(readers=frozenset({AA, AU})),
    "django_q.failure": viewers(readers=frozenset({AA, AU})),
    "django_q.task": viewers(readers=frozenset({AA, AU})),
    "django_q.ormq": viewers(readers=frozenset({AU})),
    # Login throttling records: superusers only.
    "axes.accessattempt": viewers(readers=NOBODY),
    "axes.accesslog": viewers(readers=NOBODY),
    "axes.accessfailurelog": viewers(readers=NOBODY),
}

ACTION_DECISIONS: dict[str, dict[str, frozenset]] = {
    "governance.tableconfig": {"preview_plan": STAFF_READERS},
    "governance.hold": {"release_holds": frozenset({CO})},
    "governance.auditevent": {},
    "governance.archivalrun": {
        "resume_runs": frozenset({AA}),
        "stop_runs": frozenset({AA}),
        "abandon_runs": frozenset({AA}),
    },
    "governance.schedulersettings": {
        "run_now": frozenset({AA}),
        "pause_scheduler": frozenset({AA}),
        "resume_scheduler": frozenset({AA}),
    },
    "governance.tabledispatch": {},
    "governance.replicawatch": {},
    "governance.disposalbatch": {
        "approve_batches": frozenset({CO}),
        "reject_batches": frozenset({CO}),
        "execute_batches": frozenset({AA}),
    },
    "governance.disposalapproval": {},
    # Certificates are exported by auditors (the proof handed to regulators).
    "governance.disposalcertificate": {"export_csv": frozenset({AU})},
    "governance.retentionchange": {"approve_changes": frozenset({CO}), "reject_changes": frozenset({CO})},
    "governance.restorerequest": {
        "approve_requests": frozenset({CO}),
        "reject_requests": frozenset({CO}),
        "execute_requests": frozenset({AA}),
    },
    "governance.restoreledger": {},
    # Restore certificates, like disposal certificates, are exported by auditors.
    "governance.restorecertificate": {"export_csv": frozenset({AU})},
    "auth.user": {},
    "auth.group": {},
    "django_q.schedule": {},
    # Re-running queued work is an administrator's (governance.admin.queue).
    "django_q.success": {"resubmit_task": frozenset({AA})},
    "django_q.failure": {"resubmit_task": frozenset({AA})},
    "django_q.task": {},
    "django_q.ormq": {},
    "axes.accessattempt": {},
    "axes.accesslog": {},
    "axes.accessfailurelog": {},
}

MISSING_PK = "999999"
# Permitted views that answer with a redirect (the singleton's changelist opens its one object).
REDIRECTING = {("governance.schedulersettings", "changelist")}


def admin_urls(objects):
    """(model label, url name suffix, url) for every named URL of every ModelAdmin."""
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
        obj = objects.get(model._meta.model_name)
        pk = str(obj.pk) if obj is not None else MISSING_PK
        for pattern in model_admin.get_urls():
            name = getattr(pattern, "name", None)
            if not name:
                continue
            # Custom views may be named freely: "governance_<name>" is decided as "<name>".
            suffix = name[len(prefix) :] if name.startswith(prefix) else name.removeprefix(f"{model._meta.app_label}_")
            n_args = len(re.findall(r"<[^>]+>", str(pattern.pattern))) + re.compile(str(pattern.pattern)).groups
            if suffix == "simple_history":
                if obj is None:
                    continue
                args = [pk, str(obj.history.first().history_id)]
            else:
                args = [pk] * n_args
            url = reverse(f"admin:{name}", args=args)
            yield label, suffix, url, obj is not None


def expected_status(persona: str, allowed: bool, has_object: bool, suffix: str, label: str = "") -> set[int]:
    if persona == "reader":
        return {302}  # not staff: the admin sends them to its login page
    if suffix == "history" and not has_object:
        return {302}  # Django looks the object up first; a missing one redirects everybody, disclosing nothing
    if not allowed:
        return {403}
    if (label, suffix) in REDIRECTING:
        return {302}
    if suffix in {"change", "history", "delete", "password_change"} and not has_object:
        return {302}  # permitted, and told the object does not exist
    return {200}


def test_every_admin_url_has_a_decision_and_answers_it(personas, objects):
    problems = []
    seen = set()
    clients = {}
    for name in PERSONAS:
        clients[name] = Client()
        clients[name].force_login(personas[name])
    for label, suffix, url, has_object in admin_urls(objects):
        decision = DECISIONS.get(label, {})
        if suffix not in decision:
            problems.append(f"no decision for {label} {suffix} ({url})")
            continue
        seen.add((label, suffix))
        for persona in PERSONAS:
            allowed = persona in decision[suffix]
            # process_import only takes the confirmation POST of an import.
            method = clients[persona].post if suffix == "process_import" else clients[persona].get
            status = method(url).status_code
            want = expected_status(persona, allowed, has_object, suffix, label)
            if status not in want:
                problems.append(f"{persona} GET {url} ({label} {suffix}): {status}, expected {sorted(want)}")
    assert not problems, "\n".join(problems)
    # Every decision names a URL that exists (a stale row hides nothing).
    declared = {(label, s) for label, d in DECISIONS.items() for s in d}
    unregistered = {d for d in declared if d[0] in {m._meta.label_lower for m in admin.site._registry}}
    assert unregistered - seen == set()


def test_every_admin_action_has_a_decision_and_is_offered_only_to_it(personas):
    factory = RequestFactory()
    problems = []
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        decision = ACTION_DECISIONS.get(label)
        if decision is None:
            problems.append(f"no action decisions for {label}")
            continue
        for persona in PERSONAS:
            request = factory.get("/admin/")
            request.user = personas[persona]
            # Actions run only through the changelist, which checks view/change first.
            reachable = model_admin.has_view_or_change_permission(request) and personas[persona].is_staff
            offered = set(model_admin.get_actions(request)) if reachable else set()
            for action in offered:
                if action not in decision:
                    problems.append(f"no decision for action {label}.{action}")
                elif persona not in decision[action]:
                    problems.append(f"{persona} is offered {label}.{action}")
            for action, allowed in decision.items():
                if persona in allowed and action not in offered:
                    problems.append(f"{persona} is not offered {label}.{action}")
    assert not problems, "\n".join(problems)


def test_an_action_confirmed_by_a_persona_it_is_not_offered_to_is_refused_and_changes_nothing(personas, objects):
    """The confirming POST (``post=yes``, a comment and a reason filled in) is
    the same action POST as the first: the changelist refuses it to anyone the
    action is not offered to, whatever the form says."""
    for model in admin.site._registry:
        label = model._meta.label_lower
        obj = objects.get(model._meta.model_name)
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for action, allowed in ACTION_DECISIONS.get(label, {}).items():
            for persona in PERSONAS:
                if persona in allowed:
                    continue
                client = Client()
                client.force_login(personas[persona])
                events, queued = AuditEvent.objects.count(), OrmQ.objects.count()
                response = client.post(
                    url,
                    {
                        "action": action,
                        "_selected_action": [str(obj.pk) if obj is not None else MISSING_PK],
                        "post": "yes",
                        "comment": "Confirmed without the permission",
                        "reason": "Confirmed without the permission",
                    },
                )
                # 302: the login page (not staff) or the list again with "No action selected.";
                # 200: the list itself, for a persona offered no action at all there.
                assert response.status_code in {200, 302, 403}, (persona, label, action, response.status_code)
                assert "admin/governance/confirm_action.html" not in [t.name for t in response.templates]
                assert (AuditEvent.objects.count(), OrmQ.objects.count()) == (events, queued), (persona, action)


def test_nobody_may_delete_through_the_admin_superusers_included(personas, objects, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "another long password 99")
    client = Client()
    client.force_login(boss)
    for name in (
        "hold",
        "auditevent",
        "archivalrun",
        "tableconfig",
        "restorerequest",
        "restoreledger",
        "restorecertificate",
    ):
        obj = objects[name]
        url = reverse(f"admin:governance_{name}_delete", args=[obj.pk])
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"post": "yes"}).status_code == 403, url
        assert type(obj).objects.filter(pk=obj.pk).exists()
