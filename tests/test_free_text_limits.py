"""Free text people type is limited (governance.models.text): 100,000 characters are refused
with a message on every path (admin forms, engine functions, a raw database write) and nothing is saved.

Personas: a compliance officer (holds, approvals), a second compliance
officer (the fixture batch already has the first one's approval), an
archival administrator (runs, retention changes).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from archival.disposal import decide_batch, place_hold, release_hold, request_retention_change
from archival.disposal.retention import decide_retention_change
from archival.engine.runner import TableError, abandon_run
from governance.models import (
    AuditEvent,
    DisposalApproval,
    DisposalBatch,
    Hold,
    HoldScope,
    RetentionChange,
    RetentionChangeStatus,
)
from governance.models.text import FREE_TEXT_MAX_LENGTH
from governance.roles import COMPLIANCE_OFFICER
from tests.admin_fixtures import SOURCE, make_config, post_action

pytestmark = pytest.mark.django_db(databases="__all__")

HUGE = "x" * 100_000
TOO_LONG = f"at most {FREE_TEXT_MAX_LENGTH} characters (it has 100000)"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def second_officer(django_user_model):
    user = django_user_model.objects.create_user("bob", "bob@example.com", "a long enough password 1", is_staff=True)
    user.groups.add(Group.objects.get(name=COMPLIANCE_OFFICER))
    return user


# --- admin forms ------------------------------------------------------------------


def test_a_hold_reason_of_100000_characters_is_refused_in_the_admin(personas, source_table):
    make_config()
    holds = Hold.objects.count()
    response = client_for(personas["compliance"]).post(
        reverse("admin:governance_hold_add"),
        {"scope": HoldScope.CONTRACT, "source_db": SOURCE, "contract_value": "C2", "reason": HUGE},
    )
    assert response.status_code == 200
    assert TOO_LONG in response.context["adminform"].form.errors["reason"][0]
    assert Hold.objects.count() == holds
    assert not AuditEvent.objects.filter(action="hold.placed").exists()


def test_a_release_reason_of_100000_characters_is_refused_in_the_admin(personas, objects):
    hold = objects["hold"]
    client = client_for(personas["compliance"])
    response = post_action(client, "governance.hold", "release_holds", [hold.pk], confirm=True, reason=HUGE)
    assert response.status_code == 200
    assert TOO_LONG in response.content.decode()
    hold.refresh_from_db()
    assert hold.released_at is None and hold.release_reason == ""


def test_an_approval_comment_of_100000_characters_is_refused_in_the_admin(objects, second_officer):
    batch = objects["disposalbatch"]
    client = client_for(second_officer)
    response = post_action(
        client, "governance.disposalbatch", "approve_batches", [batch.pk], confirm=True, comment=HUGE
    )
    assert response.status_code == 200
    assert TOO_LONG in response.content.decode()
    assert DisposalApproval.objects.filter(batch=batch).count() == 1
    assert DisposalBatch.objects.get(pk=batch.pk).status == batch.status


def test_an_abandon_reason_of_100000_characters_is_refused_in_the_admin(personas, objects):
    run = objects["archivalrun"]
    client = client_for(personas["administrator"])
    response = post_action(client, "governance.archivalrun", "abandon_runs", [run.pk], confirm=True, reason=HUGE)
    assert response.status_code == 200
    assert TOO_LONG in response.content.decode()
    assert not AuditEvent.objects.filter(action="run.abandoned").exists()


# --- engine functions (no form) -----------------------------------------------------


def test_place_hold_refuses_a_reason_of_100000_characters(personas, source_table):
    make_config()
    holds = Hold.objects.count()
    with pytest.raises(ValidationError) as refused:
        place_hold(
            scope=HoldScope.CONTRACT,
            actor=personas["compliance"],
            reason=HUGE,
            source_db=SOURCE,
            contract_value="C2",
        )
    assert TOO_LONG in refused.value.message_dict["reason"][0]
    assert Hold.objects.count() == holds


def test_release_hold_refuses_a_reason_of_100000_characters(personas, objects):
    hold = objects["hold"]
    with pytest.raises(ValidationError) as refused:
        release_hold(hold.pk, actor=personas["compliance"], reason=HUGE)
    assert TOO_LONG in refused.value.message_dict["release_reason"][0]
    hold.refresh_from_db()
    assert hold.released_at is None and hold.release_reason == ""
    assert not AuditEvent.objects.filter(action="hold.released").exists()


def test_decide_batch_refuses_a_comment_of_100000_characters(objects, second_officer):
    batch = objects["disposalbatch"]
    with pytest.raises(ValidationError) as refused:
        decide_batch(batch.pk, user=second_officer, decision="APPROVE", comment=HUGE)
    assert TOO_LONG in refused.value.message_dict["comment"][0]
    assert DisposalApproval.objects.filter(batch=batch).count() == 1
    assert not AuditEvent.objects.filter(action="disposal.approved").exists()


def test_retention_changes_refuse_a_reason_or_comment_of_100000_characters(personas, objects, second_officer):
    change = objects["retentionchange"]
    with pytest.raises(ValidationError) as refused:
        request_retention_change(change.config_id, new_years=50, actor=personas["administrator"], reason=HUGE)
    assert TOO_LONG in refused.value.message_dict["reason"][0]
    with pytest.raises(ValidationError) as refused:
        decide_retention_change(change.pk, user=second_officer, approve=False, comment=HUGE)
    assert TOO_LONG in refused.value.message_dict["comment"][0]
    change.refresh_from_db()
    assert (change.status, change.comment) == (RetentionChangeStatus.PENDING, "")
    assert RetentionChange.objects.count() == 1


def test_abandon_run_refuses_a_reason_of_100000_characters(objects):
    run = objects["archivalrun"]
    with pytest.raises(TableError, match="limited to 4,000 characters"):
        abandon_run(run.pk, actor="administrator", reason=HUGE)
    state = objects["recoverystate"]
    state.refresh_from_db()
    assert state.phase == "FAILED" and not AuditEvent.objects.filter(action="run.abandoned").exists()


def test_the_limit_itself_is_accepted(personas, objects):
    hold = objects["hold"]
    release_hold(hold.pk, actor=personas["compliance"], reason="y" * FREE_TEXT_MAX_LENGTH)
    hold.refresh_from_db()
    assert len(hold.release_reason) == FREE_TEXT_MAX_LENGTH


# --- the database itself ------------------------------------------------------------


@pytest.mark.parametrize(
    "model, field, fixture",
    [
        (Hold, "reason", "hold"),
        (Hold, "release_reason", "hold"),
        (DisposalApproval, "comment", "disposalapproval"),
        (RetentionChange, "reason", "retentionchange"),
        (RetentionChange, "comment", "retentionchange"),
    ],
)
def test_the_database_refuses_100000_characters_written_past_the_models(objects, model, field, fixture):
    obj = objects[fixture]
    before = getattr(obj, field)
    database = model.objects.db_manager().db
    with pytest.raises(IntegrityError), transaction.atomic(using=database):
        model.objects.filter(pk=obj.pk).update(**{field: HUGE})
    obj.refresh_from_db()
    assert getattr(obj, field) == before
