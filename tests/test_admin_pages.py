"""What each role reads on the admin pages, and how the site is opened locally."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from archival.dispatch import resume_on_workers
from governance.models import ArchivalRun, AuditEvent, Phase, RunStatus, TableDispatch
from governance.roles import ARCHIVE_READER, COMPLIANCE_OFFICER
from tests.admin_fixtures import make_config, post_action

pytestmark = pytest.mark.django_db(databases="__all__")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def test_a_compliance_officer_reads_the_retention_that_applies_not_empty_fields(personas, source_table):
    config = make_config(table_type="FUNCTIONAL")
    assert config.years_retention_archive is None and config.months_retention_source is None
    page = client_for(personas["compliance"]).get(reverse("admin:governance_tableconfig_change", args=[config.pk]))
    text = text_of(page.content.decode())
    assert f"Years kept in archive: {config.effective_years} (the Functional default)" in text
    assert f"Months kept in source: {config.effective_months} (the Functional default)" in text
    assert "Retention reason" not in text and "Reason for a retention change" not in text


def test_an_administrator_still_edits_the_retention_fields(personas, source_table):
    config = make_config()
    page = client_for(personas["administrator"]).get(reverse("admin:governance_tableconfig_change", args=[config.pk]))
    form = page.context["adminform"].form
    assert {"years_retention_archive", "months_retention_source", "retention_reason"} <= set(form.fields)


def test_the_root_leads_staff_to_the_dashboard_and_readers_to_the_search(personas, client):
    assert client.get("/").url == reverse("search:index")
    assert client_for(personas["compliance"]).get("/").url == reverse("admin:index")
    assert client_for(personas["reader"]).get("/").url == reverse("search:index")
    # The admin's "View site" link goes to the search, not to a 404.
    page = client_for(personas["auditor"]).get(reverse("admin:index")).content.decode()
    assert 'href="/search/"' in page


def test_static_files_are_served_with_debug_off(settings, tmp_path):
    # As `make serve` does: collectstatic, then the app (whitenoise) serves
    # STATIC_ROOT. A fresh client builds the middleware with this STATIC_ROOT.
    settings.STATIC_ROOT = tmp_path / "static"
    assert settings.DEBUG is False
    assert Client().get("/static/admin/css/base.css").status_code == 404  # nothing collected yet
    call_command("collectstatic", interactive=False, verbosity=0)
    response = Client().get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")
    assert Client().get("/static/governance/scoped_fields.js").status_code == 200


class TestCreateRoleUser:
    def test_it_creates_a_compliance_officer_with_admin_access(self):
        out = StringIO()
        call_command("create_role_user", "alice", "--role", "compliance", "--generate-password", stdout=out)
        user = User.objects.get(username="alice")
        assert user.is_staff and not user.is_superuser
        assert list(user.groups.values_list("name", flat=True)) == [COMPLIANCE_OFFICER]
        password = re.search(r"Password \(shown once\): (\S+)", out.getvalue()).group(1)
        assert user.check_password(password)
        assert user.has_perm("governance.add_hold")

    def test_a_reader_gets_the_search_and_not_the_admin(self):
        call_command("create_role_user", "dave", "--role", "reader", "--generate-password", stdout=StringIO())
        user = User.objects.get(username="dave")
        assert not user.is_staff
        assert list(user.groups.values_list("name", flat=True)) == [ARCHIVE_READER]

    def test_an_unknown_role_or_an_existing_user_is_refused_and_changes_nothing(self, personas):
        with pytest.raises(CommandError, match="no role 'janitor'"):
            call_command("create_role_user", "eve", "--role", "janitor", "--generate-password", stdout=StringIO())
        assert not User.objects.filter(username="eve").exists()
        before = User.objects.get(username="compliance").password
        with pytest.raises(CommandError, match="already exists"):
            call_command(
                "create_role_user", "compliance", "--role", "auditor", "--generate-password", stdout=StringIO()
            )
        user = User.objects.get(username="compliance")
        assert user.password == before and not user.groups.filter(name="Auditor").exists()


def test_the_scheduler_page_stops_an_open_run_through_the_run_actions_confirmation(personas, objects):
    run = objects["archivalrun"]  # running, one failed table
    client = client_for(personas["administrator"])
    settings_page = client.get(reverse("admin:governance_schedulersettings_changelist"), follow=True)
    html = settings_page.content.decode()
    runs = reverse("admin:governance_archivalrun_changelist")
    assert f'action="{runs}"' in html and 'value="stop_runs"' in html and f'id="run-stop-{run.pk}"' in html

    confirmation = post_action(client, "governance.archivalrun", "stop_runs", [run.pk])
    assert confirmation.status_code == 200 and 'name="post" value="yes"' in confirmation.content.decode()
    run.refresh_from_db()
    assert not run.stop_requested  # opening the confirmation changes nothing

    done = post_action(client, "governance.archivalrun", "stop_runs", [run.pk], confirm=True)
    assert done.status_code == 302
    run.refresh_from_db()
    assert run.stop_requested
    assert AuditEvent.objects.filter(action="run.stop_requested", actor="administrator").exists()


def test_the_run_page_abandons_its_unfinished_tables_with_a_reason_through_the_action(personas, objects):
    run = objects["archivalrun"]
    client = client_for(personas["administrator"])
    page = client.get(reverse("admin:governance_archivalrun_change", args=[run.pk])).content.decode()
    assert 'id="run-abandon"' in page and 'value="abandon_runs"' in page
    confirmation = post_action(client, "governance.archivalrun", "abandon_runs", [run.pk])
    html = confirmation.content.decode()
    assert confirmation.status_code == 200 and 'name="reason"' in html and "boom" in html
    refused = post_action(client, "governance.archivalrun", "abandon_runs", [run.pk], confirm=True, reason="")
    assert refused.status_code == 200 and not AuditEvent.objects.filter(action="run.abandoned").exists()

    done = post_action(
        client, "governance.archivalrun", "abandon_runs", [run.pk], confirm=True, reason="Source table retired"
    )

    assert done.status_code == 302 and done.url == reverse("admin:governance_archivalrun_change", args=[run.pk])
    assert set(run.states.values_list("phase", flat=True)) == {Phase.ABANDONED}
    # Nothing unfinished any more: the page offers no abandon.
    page = client.get(reverse("admin:governance_archivalrun_change", args=[run.pk])).content.decode()
    assert 'id="run-abandon"' not in page


def test_resuming_a_run_the_workers_had_puts_its_failed_table_back_on_them(personas, objects):
    run, state = objects["archivalrun"], objects["recoverystate"]  # one table, failed on a worker
    row = TableDispatch.objects.create(
        state=state, run=run, source_db=state.config.source_db, stage="DONE", status="DONE", position=0
    )
    ArchivalRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, finished_at=timezone.now())

    result = resume_on_workers(run.pk, actor="administrator", pump_now=False)

    assert (result.queued, result.retried, result.tables, result.refused) == (True, 1, 1, "")
    state.refresh_from_db()
    row.refresh_from_db()
    assert state.phase == Phase.PENDING and state.last_error == ""
    assert (row.stage, row.status) == ("MARK", "WAITING")
    assert ArchivalRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert AuditEvent.objects.filter(action="run.resumed").exists()
    # Enqueued now: resuming again is refused until the workers are done with it.
    TableDispatch.objects.filter(pk=row.pk).update(status="QUEUED")
    again = resume_on_workers(run.pk, actor="administrator", pump_now=False)
    assert "already being worked on (1 table in progress)" in again.refused and not again.queued
