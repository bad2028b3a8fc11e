"""Bad input to the admin and the search pages: a 4xx with a message, never a 500, nothing changed.

Personas: those of tests/admin_fixtures.py (a compliance officer, an archival
administrator, an auditor, an archive reader, an outsider) and a superuser.
The last test walks every admin and search URL with malformed parameters as
each of them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.db import models, transaction
from django.test import Client
from django.urls import reverse

from governance.models import ArchivalRun, AuditEvent, DisposalBatch, Hold, HoldScope, RecoveryState, RunStatus
from tests.admin_fixtures import PERSONAS, SOURCE, post_action
from tests.search_fixtures import make_position_config, source_schema

pytestmark = pytest.mark.django_db(databases="__all__")

HUGE = "9" * 30  # far beyond any 64-bit integer


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# -- holds ------------------------------------------------------------------------
def test_a_keys_hold_whose_key_has_the_wrong_number_of_parts_is_refused_on_the_form(personas, objects):
    client = logged_in(personas["compliance"])
    before = Hold.objects.count()
    response = client.post(
        reverse("admin:governance_hold_add"),
        {
            "scope": HoldScope.KEYS,
            "table": objects["tableconfig"].pk,
            "reason": "Matter 18",
            "keys": "1\n2, 2015-01-02",  # adm_trade is keyed by tradeId alone
        },
    )
    assert response.status_code == 200  # the form again, with the error beside the keys
    errors = response.context["adminform"].form.errors
    assert "keys" in errors and "tradeId" in errors["keys"][0] and "2 component" in errors["keys"][0]
    assert Hold.objects.count() == before
    assert not AuditEvent.objects.filter(action="hold.placed").exists()


def test_a_keys_hold_with_keys_of_the_right_size_is_placed(personas, objects):
    client = logged_in(personas["compliance"])
    response = client.post(
        reverse("admin:governance_hold_add"),
        {
            "scope": HoldScope.KEYS,
            "table": objects["tableconfig"].pk,
            "reason": "Matter 18",
            "keys": "1\n2",
        },
    )
    assert response.status_code == 302
    hold = Hold.objects.get(scope=HoldScope.KEYS)
    assert sorted(hold.keys.values_list("key_text", flat=True)) == ["1", "2"]


# -- the audit trail's export and lookups ---------------------------------------------
@pytest.mark.parametrize(
    "query", [{"bogus": "1"}, {"occurred_at__gte": "notadate"}, {"run_id": "abc"}, {"q": "\x00"}, {"action": "a\x00"}]
)
def test_an_audit_export_with_filters_it_cannot_apply_is_a_400_that_says_what_to_do(personas, objects, query):
    client = logged_in(personas["auditor"])
    response = client.get(reverse("admin:governance_auditevent_export") + "?" + urlencode(query))
    assert response.status_code == 400
    text = response.content.decode()
    assert "filters cannot be applied" in text and "Export button" in text
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_a_valid_audit_export_still_streams(personas, objects):
    client = logged_in(personas["auditor"])
    response = client.get(reverse("admin:governance_auditevent_export") + "?action=test.event")
    assert response.status_code == 200
    assert b"test.event" in b"".join(response.streaming_content)


@pytest.mark.parametrize("path", ["changelist", "export"])
def test_a_lookup_into_a_json_column_is_a_400(personas, objects, path):
    client = logged_in(personas["auditor"])
    response = client.get(reverse(f"admin:governance_auditevent_{path}") + "?details__contains=x")
    assert response.status_code == 400
    assert b"does not offer" in response.content or b"cannot be applied" in response.content


def test_the_list_explains_filters_it_cannot_apply(personas, objects):
    client = logged_in(personas["auditor"])
    response = client.get(reverse("admin:governance_auditevent_changelist") + "?occurred_at__gte=notadate", follow=True)
    assert response.status_code == 200
    texts = [str(m) for m in response.context["messages"]]
    assert any("cannot be applied" in t and "shown without them" in t for t in texts), texts
    # Filters still wrong after the redirect: the error page says what to do, not "database error".
    again = client.get(reverse("admin:governance_auditevent_changelist") + "?e=1&occurred_at__gte=notadate")
    assert "Filters not applied" in again.content.decode()
    assert "database installation" not in again.content.decode()


# -- config import ------------------------------------------------------------------
def test_confirming_an_import_whose_file_is_gone_is_a_400_and_imports_nothing(personas, objects):
    client = logged_in(personas["administrator"])
    configs = list(objects["tableconfig"].__class__.objects.values_list("pk", flat=True))
    response = client.post(
        reverse("admin:governance_tableconfig_process_import"),
        {"import_file_name": "0" * 32, "original_file_name": "configs.csv", "format": "0", "resource": "0"},
    )
    assert response.status_code == 400
    assert "Upload the file again" in response.content.decode()
    assert list(objects["tableconfig"].__class__.objects.values_list("pk", flat=True)) == configs


def test_an_import_confirmation_cannot_name_a_file_outside_its_uploads(personas, objects):
    """django-import-export's temp storage would read, then delete, the file the form names."""
    client = logged_in(personas["administrator"])
    fd, victim = tempfile.mkstemp(suffix=".csv")
    with os.fdopen(fd, "w") as file:
        file.write("source_db,schema_name,table_name\n")
    try:
        for name in (victim, os.path.basename(victim), "../" + os.path.basename(victim)):
            response = client.post(
                reverse("admin:governance_tableconfig_process_import"),
                {"import_file_name": name, "original_file_name": "x.csv", "format": "0", "resource": "0"},
            )
            assert response.status_code == 400, name
            assert os.path.exists(victim), f"{name}: the named file was deleted"
    finally:
        os.remove(victim)


# -- runs and disposal ------------------------------------------------------------------
def test_resuming_a_completed_run_from_the_admin_says_why_and_changes_nothing(personas, objects):
    run = objects["archivalrun"]
    RecoveryState.objects.filter(run=run).update(phase="COMPLETED")
    finished = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    ArchivalRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, finished_at=finished)
    client = logged_in(personas["administrator"])
    response = client.post(
        reverse("admin:governance_archivalrun_changelist"),
        {"action": "resume_runs", "_selected_action": [str(run.pk)], "index": "0"},
    )
    assert response.status_code == 302
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("nothing to resume" in t for t in texts), texts
    run.refresh_from_db()
    assert (run.status, run.finished_at) == (RunStatus.COMPLETED, finished)
    assert not AuditEvent.objects.filter(action__in=["run.resumed", "run.finished"]).exists()


def test_the_admin_says_one_of_two_when_the_same_officer_approves_twice(personas, objects):
    batch = objects["disposalbatch"]  # approved once by "compliance", needs two
    client = logged_in(personas["compliance"])
    response = post_action(
        client, "governance.disposalbatch", "approve_batches", [batch.pk], confirm=True, comment="approving again"
    )
    assert response.status_code == 302
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("1/2" in t and "already decided" in t for t in texts), texts
    assert DisposalBatch.objects.get(pk=batch.pk).status == "PENDING_REVIEW"


# -- every URL, malformed ----------------------------------------------------------------
BAD_IDS = ("abc", HUGE, "-1", "1.5", "%00", "..%2F..%2Fetc")
BAD_GLOBAL_QUERIES = (
    {"bogus": "1"},
    {"o": "zz.-99"},
    {"p": "abc"},
    {"p": HUGE},
    {"q": HUGE},
    {"q": "\x00"},
    {"e": "1"},
    {"_to_field": "password"},
    {"ids": f"abc,{HUGE}"},
    {"ids": HUGE},
    {"what": "DROP"},
    {"id__in": f"1,abc,{HUGE}"},
)


def _changelist_queries(model) -> list[dict]:
    """Lookups that parse no value right: bad dates, huge and non-numeric numbers, JSON lookups."""
    queries = []
    for field in model._meta.get_fields():
        if not getattr(field, "concrete", False):
            continue
        name = field.name
        if isinstance(field, models.DateTimeField | models.DateField):
            queries += [
                {f"{name}__gte": "notadate"},
                {name: "2021-13-45"},
                {f"{name}__year": HUGE},
                {f"{name}__year": "99999"},
                {f"{name}__month": "13"},
            ]
        elif isinstance(field, models.IntegerField | models.AutoField | models.ForeignKey):
            queries += [{name: HUGE}, {f"{name}__gt": "abc"}, {f"{name}__in": f"1,{HUGE}"}]
        elif isinstance(field, models.JSONField):
            queries += [{f"{name}__contains": "x"}, {f"{name}__has_key": "x"}, {f"{name}__a__b": "1"}]
        elif isinstance(field, models.BooleanField):
            queries += [{name: "maybe"}]
        else:
            queries += [{f"{name}__regex": "("}, {f"{name}__in": ""}]
    return queries


def admin_requests(objects) -> list[tuple[str, str, dict]]:
    """(method, url, data) for every admin URL with malformed arguments and parameters."""
    out: list[tuple[str, str, dict]] = []
    site_urls = ["/admin/", "/admin/governance/", "/admin/nosuchapp/", "/admin/r/abc/def/", "/admin/jsi18n/"]
    out += [("get", u, q) for u in site_urls for q in ({}, {"bogus": "1"})]
    out += [("get", "/admin/autocomplete/", {"app_label": "governance", "model_name": "hold", "field_name": "x"})]
    for model, model_admin in admin.site._registry.items():
        prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
        obj = objects.get(model._meta.model_name)
        for pattern in model_admin.get_urls():
            name = getattr(pattern, "name", None)
            if not name:
                continue
            n_args = len(re.findall(r"<[^>]+>", str(pattern.pattern))) + re.compile(str(pattern.pattern)).groups
            suffix = name.removeprefix(prefix)
            if n_args == 0:
                url = reverse(f"admin:{name}")
                method = "post" if suffix == "process_import" else "get"
                queries = [{}, *BAD_GLOBAL_QUERIES]
                if suffix == "changelist":
                    queries += _changelist_queries(model)
                if suffix == "process_import":
                    queries = [
                        {"import_file_name": bad, "original_file_name": "x.csv", "format": fmt, "resource": "0"}
                        for bad in ("0" * 32, "/etc/hostname", "../x", "")
                        for fmt in ("0", "9", "abc")
                    ]
                out += [(method, url, q) for q in queries]
                if suffix == "changelist":
                    for action in model_admin.get_actions(_superuser_request()) or {}:
                        for selected in (["abc"], [HUGE], []):
                            out.append(("post", url, {"action": action, "_selected_action": selected, "index": "0"}))
                    out.append(("post", url, {"action": "no_such_action", "_selected_action": ["1"], "index": "0"}))
                continue
            pattern_args = [[bad] * n_args for bad in BAD_IDS]
            if obj is not None and suffix == "simple_history":
                pattern_args += [[str(obj.pk), bad] for bad in BAD_IDS]
            for args in pattern_args:
                try:
                    url = reverse(f"admin:{name}", args=args)
                except Exception:  # the converter refuses the value: no URL to send
                    continue
                out += [("get", url, {}), ("get", url, {"bogus": "1", "_to_field": "password"})]
    return out


_SUPERUSER = None


def _superuser_request():
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = _SUPERUSER
    return request


def search_requests() -> list[tuple[str, str, dict]]:
    schema = source_schema(SOURCE)
    table = reverse("search:table", args=[SOURCE, schema, "Position"])
    row = reverse("search:row", args=[SOURCE, schema, "Position"])
    export = reverse("search:export", args=[SOURCE, schema, "Position"])
    filters = [
        {},
        {"bogus": "1"},
        {"archive_run_id": HUGE},
        {"basketId": "-" + HUGE},
        {"basketId": "abc"},
        {"businessDate__from": "notadate"},
        {"businessDate__to": "2021-13-45"},
        {"reference_date__from": "99999-01-01"},
        {"quantity__from": "NaN"},
        {"quantity__to": "1e999999"},
        {"price__from": "Infinity"},
        {"_sort": "nosuch"},
        {"_sort": "basketId", "_dir": "sideways"},
        {"_after": "not-a-cursor"},
        {"_before": "W10"},
        {"_after": "WyIxIiwiMiJd"},
        {"_after": "WzEsMiwzXQ"},
        {"_accept_cap": "yes"},
        {"trader": "x" * 5000},
    ]
    out = [("get", "/search/", {}), ("get", "/search/", {"source_db": "nosuch"})]
    out += [("get", u, q) for u in (table, export) for q in filters]
    keys = [
        {"basketId": HUGE, "positionId": "1", "businessDate": "2015-01-02"},
        {"basketId": "0", "positionId": "abc", "businessDate": "2015-01-02"},
        {"basketId": "0", "positionId": "1", "businessDate": "2015-02-30"},
        {"basketId": "0", "positionId": "1"},
        {"basketId": "0", "positionId": "1", "businessDate": "2015-01-02", "extra": "1"},
        {},
    ]
    out += [("get", row, k) for k in keys]
    out += [("get", reverse("search:table", args=["NoSuchDB", "x", "y"]), {})]
    out += [("get", reverse("search:table", args=[SOURCE, schema, "NoSuchTable"]), {"basketId": HUGE})]
    return out


def test_no_admin_or_search_url_answers_500_to_malformed_input(personas, objects, search_archive, django_user_model):
    global _SUPERUSER
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "another long password 99")
    _SUPERUSER = boss
    make_position_config()
    requests = admin_requests(objects) + search_requests()
    users = {"superuser": boss, **{name: personas[name] for name in PERSONAS}}
    problems: dict[tuple, str] = {}  # one line per (method, path, error), whoever met it first
    seen_4xx = 0
    for who, user in users.items():
        client = logged_in(user)
        for method, url, data in requests:
            try:
                # A savepoint per request: on PostgreSQL a failed statement
                # would break the test's transaction for every later request.
                with transaction.atomic(using="default"), transaction.atomic(using="archive"):
                    response = getattr(client, method)(url, data)
                    status = response.status_code
                    if hasattr(response, "streaming_content"):
                        b"".join(response.streaming_content)
            except Exception as exc:  # a 500: the test client re-raises the view's exception
                problems.setdefault(
                    (method, url, type(exc).__name__),
                    f"{who} {method.upper()} {url}?{urlencode(data, doseq=True)}: {type(exc).__name__}: {exc}"[:400],
                )
                continue
            if status >= 500:
                problems.setdefault((method, url, status), f"{who} {method.upper()} {url}?{urlencode(data)}: {status}")
            seen_4xx += 400 <= status < 500
    assert not problems, f"{len(problems)} server errors:\n" + "\n".join(sorted(problems.values()))
    assert seen_4xx > len(requests)  # the walk reached views that refused the input
