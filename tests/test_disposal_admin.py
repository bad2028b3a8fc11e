"""Disposal admin: every page answers the right persona and refuses the others.

Personas: the planner (archival administrator), Alice and Bob (compliance
officers), an outsider (staff without permissions).
"""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse

from archival.disposal import execute_disposal, plan_disposal
from governance.models import AuditEvent, BatchStatus, DisposalBatch, DisposalCertificate
from tests.disposal_fixtures import DATABASES, archived_keys, create_tables, insert_rows, make_config, persona

pytestmark = pytest.mark.django_db(databases=DATABASES)

EXPIRED = dt.date.today() - dt.timedelta(days=3)


@pytest.fixture
def queued(disposal_personas):
    create_tables()
    insert_rows([(1, f"p{i}", dt.date(2010, 1, 1) + dt.timedelta(days=i), "C1", EXPIRED) for i in range(4)])
    make_config("REFERENCE")
    plan_disposal(actor=disposal_personas["planner"])
    return DisposalBatch.objects.get()


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_every_disposal_admin_page_answers_a_compliance_officer(queued, disposal_personas):
    for user in (disposal_personas["alice"],):
        c = client_for(user)
        for name in ("disposalbatch", "disposalapproval", "disposalcertificate", "retentionchange"):
            assert c.get(reverse(f"admin:governance_{name}_changelist")).status_code in (200, 403)
        assert c.get(reverse("admin:governance_disposalbatch_changelist")).status_code == 200


def test_a_compliance_officer_approves_with_a_comment_on_a_confirmation_page(queued, disposal_personas):
    c = client_for(disposal_personas["alice"])
    url = reverse("admin:governance_disposalbatch_confirm")
    page = c.get(url, {"ids": queued.pk, "what": "APPROVE"})
    assert page.status_code == 200 and b"comment" in page.content
    c.post(url, {"ids": queued.pk, "what": "APPROVE", "comment": "retention passed"})
    assert DisposalBatch.objects.get().status == BatchStatus.APPROVED
    assert AuditEvent.objects.filter(action="disposal.approved", actor="alice").exists()


def test_outsiders_and_planners_cannot_approve_through_the_admin(queued, disposal_personas):
    url = reverse("admin:governance_disposalbatch_confirm")
    assert client_for(disposal_personas["outsider"]).get(url, {"ids": queued.pk, "what": "APPROVE"}).status_code == 403
    assert client_for(disposal_personas["planner"]).get(url, {"ids": queued.pk, "what": "APPROVE"}).status_code == 403
    assert client_for(disposal_personas["alice"]).get(url, {"ids": queued.pk, "what": "EXECUTE"}).status_code == 403


def test_the_administrator_executes_and_an_auditor_exports_certificates(queued, disposal_personas):
    client_for(disposal_personas["alice"]).post(
        reverse("admin:governance_disposalbatch_confirm"),
        {"ids": queued.pk, "what": "APPROVE", "comment": "retention passed"},
    )
    c = client_for(disposal_personas["planner"])
    done = c.post(reverse("admin:governance_disposalbatch_confirm"), {"ids": queued.pk, "what": "EXECUTE"}, follow=True)
    assert "destroyed 4 rows" in done.content.decode()
    assert not archived_keys() and DisposalCertificate.objects.count() == 1
    auditor = persona("auditor", "governance.view_disposalcertificate", "governance.export_disposalcertificate")
    response = client_for(auditor).post(
        reverse("admin:governance_disposalcertificate_changelist"),
        {"action": "export_csv", "_selected_action": [DisposalCertificate.objects.get().pk]},
    )
    body = b"".join(response.streaming_content).decode()
    assert response.status_code == 200 and DisposalCertificate.objects.get().digest in body


def test_a_crash_after_the_delete_committed_is_finalised_without_deleting_again(queued, disposal_personas):
    from archival.disposal import decide_batch

    decide_batch(queued.pk, user=disposal_personas["alice"], decision="APPROVE", comment="ok")
    real_record = AuditEvent.objects.record

    def crash(action, **kwargs):
        if action == "disposal.executed":
            raise SystemExit("killed after the archive commit")
        return real_record(action, **kwargs)

    with mock.patch.object(AuditEvent.objects, "record", side_effect=crash), pytest.raises(SystemExit):
        execute_disposal(actor="first worker")
    assert DisposalBatch.objects.get().status == BatchStatus.EXECUTING and not archived_keys()
    DisposalBatch.objects.update(lease_expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    result = execute_disposal(actor="second worker")
    (outcome,) = result.batches
    assert outcome.resumed and outcome.deleted == 4
    assert DisposalCertificate.objects.count() == 1 and DisposalBatch.objects.get().status == BatchStatus.EXECUTED
    assert AuditEvent.objects.filter(action="disposal.executed").count() == 1
