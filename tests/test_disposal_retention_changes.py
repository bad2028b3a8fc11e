"""Retention changes made from the table config admin and its CSV import go
through ``archival.disposal.request_retention_change``.

Personas: an archival administrator (edits configs, asks for retention
changes) and a compliance officer (approves a shortening). The archived rows
are laid out as the engine lays them out (tests/disposal_fixtures.py).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.db import connections
from django.test import Client
from django.urls import reverse

from archival.backends.sqlite import namespace_for
from archival.disposal.retention import decide_retention_change
from governance.admin.configs import CONFIG_FIELDS, TableConfigResource
from governance.models import AuditEvent, RetentionChange, RetentionChangeStatus, TableConfig
from tests.admin_fixtures import confirm, upload
from tests.disposal_fixtures import DATABASES, SOURCE, TABLE, create_tables, insert_rows, make_config

pytestmark = pytest.mark.django_db(databases=[*DATABASES, "SourceDB2", "SourceDB3"])

# Archived rows: reference dates in 2015 (no 29 February), retention as the
# default 10 years of a functional table gave them.
REFERENCE = [dt.date(2015, 3, 1) + dt.timedelta(days=11 * i) for i in range(8)]


@pytest.fixture
def archived():
    """A functional table (10 years by default) with eight archived rows."""
    create_tables()
    insert_rows([(1, f"p{i}", ref, "C1", ref.replace(year=ref.year + 10)) for i, ref in enumerate(REFERENCE)])
    return make_config("FUNCTIONAL")


def retention_until() -> dict[dt.date, dt.date]:
    """reference_date -> retention_until of every archived row."""
    with connections["archive"].cursor() as cur:
        cur.execute(f'SELECT "reference_date", "retention_until" FROM "{namespace_for(SOURCE)}"."{TABLE}"')
        rows = cur.fetchall()

    def day(value):
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))

    return {day(ref): day(until) for ref, until in rows}


def kept_for(years: int) -> dict[dt.date, dt.date]:
    return {ref: ref.replace(year=ref.year + years) for ref in REFERENCE}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_form(client: Client, config: TableConfig, **changes) -> dict:
    """The admin change form's current values, with ``changes`` applied (as the browser posts them)."""
    form = client.get(reverse("admin:governance_tableconfig_change", args=[config.pk])).context["adminform"].form
    data = {}
    for name in CONFIG_FIELDS:
        value = form[name].value()
        if name == "is_active":
            if value:
                data[name] = "on"
            continue
        data[name] = "" if value is None else value
    data.update(changes)
    return data


def test_lengthening_in_the_admin_recomputes_the_archived_rows_at_once(personas, archived):
    client = logged_in(personas["administrator"])
    response = client.post(
        reverse("admin:governance_tableconfig_change", args=[archived.pk]),
        change_form(client, archived, years_retention_archive=15, retention_reason="Regulator asks for 15 years"),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    archived.refresh_from_db()
    assert archived.effective_years == 15
    assert retention_until() == kept_for(15)
    change = RetentionChange.objects.get()
    assert (change.old_years, change.new_years, change.status, change.rows_updated) == (10, 15, "APPLIED", 8)
    assert change.requested_by == "administrator" and change.reason == "Regulator asks for 15 years"
    assert AuditEvent.objects.filter(action="retention.requested", actor="administrator").exists()
    assert "retention recomputed for 8 archived rows" in " ".join(str(m) for m in get_messages(response.wsgi_request))


def test_shortening_in_the_admin_waits_for_a_compliance_officer(personas, archived):
    client = logged_in(personas["administrator"])
    response = client.post(
        reverse("admin:governance_tableconfig_change", args=[archived.pk]),
        change_form(client, archived, years_retention_archive=3, retention_reason="Policy 2026/4"),
    )
    assert response.status_code == 302
    told = " ".join(str(m) for m in get_messages(response.wsgi_request))
    assert "waits for a compliance officer's approval" in told and "keeps 10 years" in told
    # The config and the archived rows are left alone until the approval.
    archived.refresh_from_db()
    assert archived.years_retention_archive is None and archived.effective_years == 10
    assert retention_until() == kept_for(10)
    change = RetentionChange.objects.get()
    assert (change.old_years, change.new_years, change.status) == (10, 3, RetentionChangeStatus.PENDING)

    decide_retention_change(change.pk, user=personas["compliance"], approve=True, comment="Checked with legal")
    archived.refresh_from_db()
    assert archived.effective_years == 3
    assert retention_until() == kept_for(3)


def test_the_admin_refuses_a_retention_change_without_a_reason_or_while_one_is_pending(personas, archived):
    client = logged_in(personas["administrator"])
    url = reverse("admin:governance_tableconfig_change", args=[archived.pk])
    response = client.post(url, change_form(client, archived, years_retention_archive=3))
    assert response.status_code == 200
    assert "retention_reason" in response.context["adminform"].form.errors
    assert not RetentionChange.objects.exists()

    client.post(url, change_form(client, archived, years_retention_archive=3, retention_reason="Policy 2026/4"))
    response = client.post(url, change_form(client, archived, years_retention_archive=20, retention_reason="Again"))
    assert response.status_code == 200
    assert "waiting for a compliance officer" in str(response.context["adminform"].form.errors)
    assert RetentionChange.objects.count() == 1 and retention_until() == kept_for(10)


def test_editing_other_fields_leaves_retention_alone(personas, archived):
    client = logged_in(personas["administrator"])
    response = client.post(
        reverse("admin:governance_tableconfig_change", args=[archived.pk]),
        change_form(client, archived, execution_priority=7),
    )
    assert response.status_code == 302
    archived.refresh_from_db()
    assert archived.execution_priority == 7 and not RetentionChange.objects.exists()


def csv_with_years(config: TableConfig, years: int) -> bytes:
    dataset = TableConfigResource().export(queryset=TableConfig.objects.filter(pk=config.pk))
    row = list(dataset[0])
    row[dataset.headers.index("years_retention_archive")] = years
    dataset[0] = row
    return dataset.csv.encode()


def test_an_import_that_lengthens_retention_recomputes_the_archived_rows_after_commit(
    personas, archived, django_capture_on_commit_callbacks
):
    client = logged_in(personas["administrator"])
    preview = upload(client, csv_with_years(archived, 12))
    assert preview.status_code == 200 and not preview.context["result"].has_validation_errors()
    # The preview (a rolled-back dry run) changes nothing, in either database.
    assert retention_until() == kept_for(10) and not RetentionChange.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert confirm(client, preview).status_code == 302
    archived.refresh_from_db()
    assert archived.effective_years == 12
    assert retention_until() == kept_for(12)
    assert RetentionChange.objects.get().status == RetentionChangeStatus.APPLIED


def test_an_import_that_shortens_retention_leaves_the_rows_until_approved(
    personas, archived, django_capture_on_commit_callbacks
):
    client = logged_in(personas["administrator"])
    preview = upload(client, csv_with_years(archived, 2))
    with django_capture_on_commit_callbacks(execute=True):
        assert confirm(client, preview).status_code == 302
    archived.refresh_from_db()
    assert archived.effective_years == 10
    assert retention_until() == kept_for(10)
    change = RetentionChange.objects.get()
    assert (change.new_years, change.status, change.requested_by) == (2, "PENDING", "administrator")

    decide_retention_change(change.pk, user=personas["compliance"], approve=True, comment="Checked with legal")
    assert retention_until() == kept_for(2)
