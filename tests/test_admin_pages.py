"""What each role reads on the admin pages, and how the site is opened locally."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from governance.roles import ARCHIVE_READER, COMPLIANCE_OFFICER
from tests.admin_fixtures import make_config

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
