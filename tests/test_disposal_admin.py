"""Disposal admin: every page answers the right persona and refuses the others.

Personas: the planner (archival administrator), Alice and Bob (compliance
officers), an outsider (staff without permissions).
"""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from archival.disposal import execute_disposal, plan_disposal
from governance.models import AuditEvent, BatchStatus, DisposalBatch, DisposalCertificate, SchedulerSettings
from tests.admin_fixtures import run_queued_tasks
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


def act(user, action: str, batch: DisposalBatch, *, confirm: bool = False, **fields):
    """The changelist's action POST; ``confirm`` adds the confirmation page's ``post=yes``."""
    data = {"action": action, "_selected_action": [str(batch.pk)], **fields}
    if confirm:
        data["post"] = "yes"
    return client_for(user).post(reverse("admin:governance_disposalbatch_changelist"), data)


def test_a_compliance_officer_approves_with_a_comment_on_the_actions_confirmation(queued, disposal_personas):
    page = act(disposal_personas["alice"], "approve_batches", queued)
    html = page.content.decode()
    assert page.status_code == 200 and 'name="comment"' in html
    # The page posts the same action back, with the selection and the flag.
    assert 'name="action" value="approve_batches"' in html and 'name="post" value="yes"' in html
    assert f'name="_selected_action" value="{queued.pk}"' in html
    assert DisposalBatch.objects.get().status == BatchStatus.PENDING_REVIEW
    # Confirmed without a comment: the page again, with the error; nothing decided.
    again = act(disposal_personas["alice"], "approve_batches", queued, confirm=True, comment="")
    assert again.status_code == 200 and again.context["form"].errors
    assert DisposalBatch.objects.get().status == BatchStatus.PENDING_REVIEW
    done = act(disposal_personas["alice"], "approve_batches", queued, confirm=True, comment="retention passed")
    assert done.status_code == 302
    assert DisposalBatch.objects.get().status == BatchStatus.APPROVED
    assert AuditEvent.objects.filter(action="disposal.approved", actor="alice").exists()


def test_outsiders_and_planners_cannot_approve_and_officers_cannot_execute_through_the_admin(queued, disposal_personas):
    for user in (disposal_personas["outsider"], disposal_personas["planner"]):
        act(user, "approve_batches", queued, confirm=True, comment="let me")
    assert DisposalBatch.objects.get().status == BatchStatus.PENDING_REVIEW
    assert not AuditEvent.objects.filter(action="disposal.approved").exists()
    DisposalBatch.objects.filter(pk=queued.pk).update(status=BatchStatus.APPROVED)
    response = act(disposal_personas["alice"], "execute_batches", queued, confirm=True)
    assert response.status_code == 302  # the list again: the action is not hers
    assert OrmQ.objects.count() == 0 and len(archived_keys()) == 4


def approve(queued, disposal_personas) -> None:
    act(disposal_personas["alice"], "approve_batches", queued, confirm=True, comment="retention passed")
    assert DisposalBatch.objects.get(pk=queued.pk).status == BatchStatus.APPROVED


def test_execute_enqueues_on_the_workers_and_deletes_nothing_inside_the_request(queued, disposal_personas):
    approve(queued, disposal_personas)
    page = act(disposal_personas["planner"], "execute_batches", queued)
    assert page.status_code == 200 and "destroys the rows for good" in page.content.decode()
    assert OrmQ.objects.count() == 0

    response = act(disposal_personas["planner"], "execute_batches", queued, confirm=True)

    assert response.status_code == 302
    # The message says it was queued and links to these batches' list, where their status shows.
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("Queued 1 batch for the workers" in t for t in texts), texts
    assert response.url == reverse("admin:governance_disposalbatch_changelist") + f"?id__in={queued.pk}"
    assert OrmQ.objects.count() == 1
    assert len(archived_keys()) == 4 and not DisposalCertificate.objects.exists()
    assert DisposalBatch.objects.get().status == BatchStatus.APPROVED
    event = AuditEvent.objects.get(action="disposal.enqueued")
    assert event.actor == "planner" and event.details["batch_ids"] == [queued.pk]

    (result,) = run_queued_tasks()

    assert result["executed"] == [queued.pk] and result["deleted"] == 4
    assert not archived_keys() and DisposalBatch.objects.get().status == BatchStatus.EXECUTED
    # Executed in the name of the administrator who selected the batch.
    assert DisposalCertificate.objects.get().executed_by == "planner"
    listed = client_for(disposal_personas["planner"]).get(response.url)
    assert listed.status_code == 200 and "Executed" in listed.content.decode()


def test_a_batch_a_live_worker_is_executing_is_not_queued_again(queued, disposal_personas):
    approve(queued, disposal_personas)
    DisposalBatch.objects.filter(pk=queued.pk).update(
        status=BatchStatus.EXECUTING,
        lease_owner="elsewhere:1:x",
        lease_expires_at=timezone.now() + dt.timedelta(minutes=2),
    )
    response = act(disposal_personas["planner"], "execute_batches", queued, confirm=True)
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(f"Already executing on a worker: batch {queued.pk}" in t for t in texts), texts
    assert any("Nothing was queued" in t for t in texts), texts
    assert OrmQ.objects.count() == 0 and not AuditEvent.objects.filter(action="disposal.enqueued").exists()


def test_execute_is_refused_while_the_scheduler_is_paused(queued, disposal_personas):
    approve(queued, disposal_personas)
    SchedulerSettings.objects.filter(pk=SchedulerSettings.objects.current().pk).update(paused=True)
    response = act(disposal_personas["planner"], "execute_batches", queued, confirm=True)
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("the scheduler is paused" in t for t in texts), texts
    assert OrmQ.objects.count() == 0 and len(archived_keys()) == 4


def test_the_batch_list_reloads_itself_while_a_batch_executes(queued, disposal_personas):
    c = client_for(disposal_personas["planner"])
    assert 'http-equiv="refresh"' not in c.get(reverse("admin:governance_disposalbatch_changelist")).content.decode()
    DisposalBatch.objects.filter(pk=queued.pk).update(status=BatchStatus.EXECUTING)
    assert 'http-equiv="refresh"' in c.get(reverse("admin:governance_disposalbatch_changelist")).content.decode()


def test_the_administrator_executes_and_an_auditor_exports_certificates(queued, disposal_personas):
    approve(queued, disposal_personas)
    act(disposal_personas["planner"], "execute_batches", queued, confirm=True)
    run_queued_tasks()
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
