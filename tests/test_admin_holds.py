"""Holds in the admin: placed with a scope, released with a reason, never deleted."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from governance.models import AuditEvent, Hold, HoldScope
from tests.admin_fixtures import SOURCE, TABLE, make_config, post_action

pytestmark = pytest.mark.django_db(databases="__all__")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_compliance_officer_places_a_contract_hold(personas, source_table):
    make_config()
    client = client_for(personas["compliance"])
    response = client.post(
        reverse("admin:governance_hold_add"),
        {
            "scope": HoldScope.CONTRACT,
            "source_db": SOURCE,
            "contract_value": "C2",
            "reason": "Regulator inquiry 2024-17",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    hold = Hold.objects.get(contract_value="C2")
    assert hold.placed_by == "compliance"
    assert AuditEvent.objects.filter(action="hold.placed", object_id=str(hold.pk)).exists()


def test_a_hold_without_its_scope_fields_shows_field_errors(personas, source_table):
    client = client_for(personas["compliance"])
    response = client.post(reverse("admin:governance_hold_add"), {"scope": HoldScope.TABLE, "reason": "Matter 9"})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "table" in errors
    assert not Hold.objects.exists()


def release(client, hold, *, confirm: bool = False, **fields):
    return post_action(client, "governance.hold", "release_holds", [hold.pk], confirm=confirm, **fields)


def test_release_asks_for_a_reason_and_records_who(personas, objects):
    hold = objects["hold"]
    client = client_for(personas["compliance"])
    page = release(client, hold)
    assert page.status_code == 200 and str(hold) in page.content.decode()
    assert 'name="reason"' in page.content.decode() and 'name="post" value="yes"' in page.content.decode()
    refused = release(client, hold, confirm=True, reason="")
    assert refused.status_code == 200
    hold.refresh_from_db()
    assert hold.released_at is None
    done = release(client, hold, confirm=True, reason="Matter 17 closed by counsel")
    assert done.status_code == 302
    hold.refresh_from_db()
    assert hold.released_by == "compliance" and hold.release_reason == "Matter 17 closed by counsel"
    assert AuditEvent.objects.filter(action="hold.released", object_id=str(hold.pk)).exists()


def test_an_auditor_cannot_release_a_hold(personas, objects):
    hold = objects["hold"]
    response = release(client_for(personas["auditor"]), hold, confirm=True, reason="I should not")
    # The list again: the action is neither offered to them nor run for them.
    assert response.status_code in (200, 302)
    assert "admin/governance/confirm_action.html" not in [t.name for t in response.templates]
    hold.refresh_from_db()
    assert hold.released_at is None
    assert not AuditEvent.objects.filter(action="hold.released").exists()


def test_the_bulk_delete_action_is_not_offered_even_to_a_superuser(objects, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "another long password 99")
    client = client_for(boss)
    hold = objects["hold"]
    response = client.post(
        reverse("admin:governance_hold_changelist"),
        {"action": "delete_selected", "_selected_action": [hold.pk], "post": "yes"},
    )
    # An unknown action re-renders or redirects with "No action selected"; nothing is deleted.
    assert response.status_code in (200, 302)
    assert Hold.objects.filter(pk=hold.pk).exists()
    changelist = client.get(reverse("admin:governance_hold_changelist"))
    assert "delete_selected" not in changelist.content.decode()


def test_the_database_refuses_to_delete_a_hold_even_from_a_queryset(objects):
    """What an action calling ``queryset.delete()`` would do: a trigger refuses it."""
    hold = objects["hold"]
    with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic(using="archive"):
        Hold.objects.filter(pk=hold.pk).delete()
    assert Hold.objects.filter(pk=hold.pk).exists()


def test_the_database_refuses_to_delete_an_audit_event(objects):
    event = objects["auditevent"]
    with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_search_finds_the_holds_that_cover_a_contract_or_a_table(personas, objects):
    make_all = Hold(scope=HoldScope.ALL, reason="Firm-wide freeze", placed_by="compliance")
    make_all.full_clean()
    make_all.save()
    other = Hold(
        scope=HoldScope.CONTRACT, source_db=SOURCE, contract_value="C9", reason="Other", placed_by="compliance"
    )
    other.full_clean()
    other.save()
    client = client_for(personas["auditor"])
    by_contract = client.get(reverse("admin:governance_hold_changelist"), {"q": "C1"})
    found = {h.pk for h in by_contract.context["cl"].result_list}
    assert found == {objects["hold"].pk, make_all.pk}
    by_table = client.get(reverse("admin:governance_hold_changelist"), {"q": TABLE})
    found = {h.pk for h in by_table.context["cl"].result_list}
    # adm_trade names a contract column, so every contract hold of its source may cover it.
    assert found == {objects["hold"].pk, make_all.pk, other.pk}


def test_the_status_filter_separates_active_expired_and_due_for_review(personas, objects):
    import datetime as dt

    from django.utils import timezone

    today = timezone.localdate()
    expired = Hold(scope=HoldScope.ALL, reason="old", placed_by="x", hold_until=today - dt.timedelta(days=1))
    due = Hold(scope=HoldScope.ALL, reason="due", placed_by="x", review_by=today)
    for hold in (expired, due):
        hold.full_clean()
        hold.save()
    client = client_for(personas["compliance"])

    def ids(status):
        response = client.get(reverse("admin:governance_hold_changelist"), {"status": status})
        return {h.pk for h in response.context["cl"].result_list}

    assert ids("expired") == {expired.pk}
    assert ids("review") == {due.pk}
    assert ids("active") == {objects["hold"].pk, due.pk}


def test_the_dashboard_shows_active_holds_and_failed_tables_first(personas, objects):
    client = client_for(personas["compliance"])
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard-holds"' in page and str(objects["hold"]) in page
    attention = page.split('id="dashboard-attention"')[1].split("</table>")[0]
    assert str(objects["tableconfig"]) in attention and ">failed<" in attention
    assert "<svg" in page and "<script" not in page.split('id="dashboard"')[1].split("</svg>")[0]
