"""Restore in the admin: request, preview, approve or reject, execute on the workers, progress.

Personas of tests/admin_fixtures.py: an archival administrator asks and
executes, a compliance officer decides, an auditor reads and exports, an
outsider (staff, no group) and an anonymous visitor are refused. Scenarios
are made by the real engine: ten trades archived by a run, some asked back.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from archival.engine import run_cycle
from governance.models import (
    AuditEvent,
    RestoreCertificate,
    RestoreLedger,
    RestoreRequest,
    RestoreStatus,
    RestoreTable,
)
from governance.roles import ARCHIVAL_ADMINISTRATOR, COMPLIANCE_OFFICER
from tests.admin_fixtures import SOURCE, create_source_table, drop_source_table, make_config, post_action
from tests.engine_fixtures import drop_archive_tables

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

TABLE = "rst_trade"
CUTOFF = dt.date(2026, 1, 1)
HUGE = "9" * 30


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def source_ids() -> list[int]:
    with connections[SOURCE].cursor() as cur:
        cur.execute(f'SELECT "tradeId" FROM "{TABLE}" ORDER BY 1')
        return [row[0] for row in cur.fetchall()]


@pytest.fixture
def archived(personas):
    """Ten trades of 2015, all archived by one run (the config keeps one month in the source)."""
    create_source_table(table=TABLE)
    config = make_config(table_name=TABLE, months_retention_source=1)
    run_cycle(cutoff=CUTOFF)
    assert source_ids() == []
    yield config
    drop_source_table(table=TABLE)
    drop_archive_tables()


@pytest.fixture
def q2_sync(monkeypatch, settings):
    """Enqueued tasks run at once, through django-q2's own worker function, in this process."""
    monkeypatch.setattr(Conf, "SYNC", True)


def ask(personas, table, **fields) -> tuple:
    values = {"config": table.pk, "selection": "KEY_RANGE", "reason": "Ticket 4711: recalculation of 2015 trades"}
    values.update(fields)
    response = client_for(personas["administrator"]).post(reverse("admin:governance_restorerequest_add"), values)
    return response, RestoreRequest.objects.order_by("-pk").first()


ACTIONS = {"APPROVE": "approve_requests", "REJECT": "reject_requests", "EXECUTE": "execute_requests"}
CONFIRMATION = "admin/governance/confirm_action.html"


def open_confirmation(user, restore, what: str):
    """What the request's page button (and the list's action) posts: the action, without the flag."""
    return post_action(client_for(user), "governance.restorerequest", ACTIONS[what], [restore.pk])


def confirm(user, restore, what: str, comment: str = ""):
    """The confirmation page's POST: the action again, with ``post=yes`` and the comment."""
    fields = {"comment": comment} if comment else {}
    return post_action(
        client_for(user), "governance.restorerequest", ACTIONS[what], [restore.pk], confirm=True, **fields
    )


def is_confirmation(response) -> bool:
    return CONFIRMATION in [t.name for t in response.templates]


# -- request and preview -------------------------------------------------------------------
def test_an_administrator_asks_for_a_key_range_and_sees_what_it_would_do(personas, archived):
    response, restore = ask(personas, archived, key_from="3", key_to="6")
    assert response.status_code == 302
    assert response.url == reverse("admin:governance_restorerequest_change", args=[restore.pk])
    assert (restore.status, restore.requested_by, restore.key_low, restore.key_high) == (
        RestoreStatus.PENDING_APPROVAL,
        "administrator",
        [3],
        [6],
    )
    assert any(f"Restore {restore.pk}" in t and "keys 3 to 6" in t for t in texts(response))
    assert AuditEvent.objects.filter(action="restore.requested", object_id=str(restore.pk)).exists()

    page = client_for(personas["compliance"]).get(response.url).content.decode()
    assert "4 archived rows selected" in page
    # The config would archive them again: the page says so and leads to the config.
    assert "fix the config first" in page
    assert reverse("admin:governance_tableconfig_change", args=[archived.pk]) in page
    # The compliance officer is offered the decision, not the execution.
    assert 'id="restore-approve"' in page and 'id="restore-execute"' not in page
    assert source_ids() == []


def test_keys_one_per_line_are_asked_for_and_listed_on_the_page(personas, archived):
    response, restore = ask(personas, archived, selection="KEYS", keys="2\n5\n\n9\n")
    assert response.status_code == 302
    assert restore.key_count == 3
    page = client_for(personas["auditor"]).get(response.url).content.decode()
    assert "3 listed keys" in page and 'id="restore-keys"' in page


def test_the_preview_shows_conflicts_and_held_rows_as_they_are_when_the_page_opens(personas, archived):
    from archival.disposal.holds import place_hold

    _, restore = ask(personas, archived, key_from="3", key_to="6")
    # Trade 4 is typed into the source again by hand, with another date; trade 4's contract (C1) is held.
    with connections[SOURCE].cursor() as cur:
        cur.execute(f'INSERT INTO "{TABLE}" VALUES (%s, %s, %s)', [4, dt.date(2020, 2, 2), "C1"])
    place_hold(
        scope="CONTRACT", actor=personas["compliance"], reason="Matter 12", source_db=SOURCE, contract_value="C1"
    )
    response = client_for(personas["compliance"]).get(
        reverse("admin:governance_restorerequest_change", args=[restore.pk])
    )
    assert response.status_code == 200
    table = next(iter(response.context["restore_tables"]))
    assert (table.planned_count, table.conflict_count, table.held_count) == (4, 1, 1)
    problems = " ".join(response.context["restore_problems"])
    assert "exist in the source with other values" in problems and "under an active hold" in problems
    assert 'id="restore-problems"' in response.content.decode()


def test_a_preview_that_cannot_be_computed_is_a_problem_on_the_page_not_an_error(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    drop_source_table(table=TABLE)
    response = client_for(personas["auditor"]).get(reverse("admin:governance_restorerequest_change", args=[restore.pk]))
    assert response.status_code == 200
    assert "cannot be restored" in " ".join(response.context["restore_problems"])


def test_the_page_reloads_itself_only_while_the_rows_move(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    url = reverse("admin:governance_restorerequest_change", args=[restore.pk])
    client = client_for(personas["administrator"])
    assert 'http-equiv="refresh"' not in client.get(url).content.decode()
    RestoreRequest.objects.filter(pk=restore.pk).update(
        status=RestoreStatus.EXECUTING,
        lease_owner="worker-1:4242:abc",
        lease_expires_at=timezone.now() + dt.timedelta(minutes=5),
    )
    page = client.get(url).content.decode()
    assert '<meta http-equiv="refresh" content="10">' in page and "reloads every 10 seconds" in page
    # A live worker holds it: nobody is offered to execute it a second time.
    assert 'id="restore-execute"' not in page


def test_an_execution_whose_worker_stopped_answering_is_offered_again_and_resumes(personas, archived, q2_sync):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    confirm(personas["compliance"], restore, "APPROVE", "Go ahead")
    # A worker claimed it and was killed before its first batch: its lease ran out.
    RestoreRequest.objects.filter(pk=restore.pk).update(
        status=RestoreStatus.EXECUTING,
        lease_owner="gone-host:4242:abc",
        lease_expires_at=timezone.now() - dt.timedelta(minutes=1),
    )
    url = reverse("admin:governance_restorerequest_change", args=[restore.pk])
    page = client_for(personas["administrator"]).get(url).content.decode()
    assert 'id="restore-stalled"' in page and 'id="restore-execute"' in page
    response = confirm(personas["administrator"], restore, "EXECUTE")
    assert response.status_code == 302 and any("queued for the workers" in t for t in texts(response))
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.COMPLETED, restore.last_error
    assert source_ids() == [3, 4, 5, 6]


@pytest.fixture
def contracts_and_positions(personas):
    """Four contracts (matured in 2010) and three positions each, archived by
    their contract's maturity: positions first, then the contracts."""
    with connections[SOURCE].cursor() as cur:
        for table in ("rst_position", "rst_contract"):
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        cur.execute(
            'CREATE TABLE "rst_contract" ("contractId" INTEGER NOT NULL PRIMARY KEY, "maturityDate" DATE NOT NULL)'
        )
        cur.execute(
            'CREATE TABLE "rst_position" ("positionId" INTEGER NOT NULL PRIMARY KEY, "contractId" INTEGER NOT NULL, '
            '"quantity" INTEGER NOT NULL)'
        )
        cur.executemany('INSERT INTO "rst_contract" VALUES (%s, %s)', [(c, dt.date(2010, 1, c)) for c in range(1, 5)])
        cur.executemany(
            'INSERT INTO "rst_position" VALUES (%s, %s, %s)',
            [(c * 10 + p, c, p) for c in range(1, 5) for p in range(3)],
        )
    make_config(table_name="rst_contract", date_column="maturityDate", hold_contract_column="", execution_priority=20)
    positions = make_config(
        table_name="rst_position",
        archival_logic="CONTRACT_MATURITY",
        date_column="",
        contract_table="rst_contract",
        contract_key_column="contractId",
        contract_reference_column="contractId",
        contract_maturity_column="maturityDate",
        hold_contract_column="",
        execution_priority=10,
    )
    run_cycle(cutoff=CUTOFF)
    run_cycle(cutoff=CUTOFF)
    yield positions
    with connections[SOURCE].cursor() as cur:
        for table in ("rst_position", "rst_contract"):
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
    drop_archive_tables()


def test_the_page_lists_the_parent_tables_first_with_the_rows_that_come_back_with_the_child(
    personas, contracts_and_positions
):
    response, _ = ask(personas, contracts_and_positions, key_from="20", key_to="32")
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    page = client_for(personas["compliance"]).get(response.url)
    tables = [(t.table_label.rsplit(".", 1)[-1], t.planned_count, t.parent_of) for t in page.context["restore_tables"]]
    # Positions 20-22 and 30-32 reference contracts 2 and 3: those two come back first.
    assert [(name, n) for name, n, _ in tables] == [("rst_contract", 2), ("rst_position", 6)]
    assert tables[0][2].endswith("rst_position")
    html = page.content.decode()
    assert html.index('id="restore-table-1"') < html.index('id="restore-table-2"')
    assert "referenced by" in html and "in 2 tables" in html


# -- roles -----------------------------------------------------------------------------
def test_each_role_holds_exactly_its_restore_permissions(personas):
    def restore_perms(persona):
        return sorted(
            p.split(".", 1)[1]
            for p in personas[persona].get_all_permissions()
            if "restore" in p and p.startswith("governance.")
        )

    read = ["view_restorecertificate", "view_restoreledger", "view_restorerequest", "view_restoretable"]
    assert restore_perms("administrator") == sorted([*read, "request_restore"])
    assert restore_perms("compliance") == sorted([*read, "approve_restore"])
    # Auditors read every model of the app (the keys and restored keys included) and export certificates.
    assert restore_perms("auditor") == sorted(
        [*read, "view_restorekey", "view_restoredkey", "export_restorecertificate"]
    )
    assert restore_perms("reader") == [] and restore_perms("outsider") == []


# -- decisions -------------------------------------------------------------------------
def test_a_compliance_officer_approves_with_a_comment_and_nothing_moves_yet(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    response = confirm(personas["compliance"], restore, "APPROVE", "Checked with the business: go ahead")
    assert response.status_code == 302
    assert response.url == reverse("admin:governance_restorerequest_change", args=[restore.pk])
    restore.refresh_from_db()
    assert (restore.status, restore.decided_by) == (RestoreStatus.APPROVED, "compliance")
    assert restore.decision_comment == "Checked with the business: go ahead"
    assert any("approved" in t for t in texts(response))
    assert source_ids() == []


def test_a_decision_without_a_comment_is_asked_again_and_changes_nothing(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    response = confirm(personas["compliance"], restore, "APPROVE", "")
    assert response.status_code == 200
    assert "comment" in response.context["form"].errors
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.PENDING_APPROVAL


def test_the_requester_may_not_approve_their_own_request_whatever_their_groups(personas, archived):
    both = personas["administrator"]
    both.groups.add(Group.objects.get(name=COMPLIANCE_OFFICER))
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    response = confirm(both, restore, "APPROVE", "I asked, I approve")
    assert response.status_code == 302
    message = " ".join(texts(response))
    assert "refused" in message and "requested restore" in message and "may not decide" in message
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.PENDING_APPROVAL
    assert not AuditEvent.objects.filter(action="restore.approved").exists()


def test_the_request_page_buttons_lead_to_the_actions_confirmation_and_back(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    officer = personas["compliance"]
    page = client_for(officer).get(reverse("admin:governance_restorerequest_change", args=[restore.pk]))
    html = page.content.decode()
    changelist = reverse("admin:governance_restorerequest_changelist")
    assert f'action="{changelist}"' in html and 'name="action" value="approve_requests"' in html
    confirmation = open_confirmation(officer, restore, "APPROVE")
    html = confirmation.content.decode()
    assert confirmation.status_code == 200 and is_confirmation(confirmation)
    assert f'name="_selected_action" value="{restore.pk}"' in html and 'name="post" value="yes"' in html
    assert 'name="comment"' in html and restore.reason in html
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.PENDING_APPROVAL  # opening the confirmation decides nothing
    response = confirm(officer, restore, "APPROVE", "Checked with the business")
    assert response.status_code == 302
    assert response.url == reverse("admin:governance_restorerequest_change", args=[restore.pk])


@pytest.mark.parametrize(
    ("persona", "what"),
    [
        ("administrator", "APPROVE"),
        ("auditor", "REJECT"),
        ("outsider", "APPROVE"),
        ("compliance", "EXECUTE"),
        ("auditor", "EXECUTE"),
    ],
)
def test_roles_without_the_permission_are_refused_the_operation(personas, archived, persona, what):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    assert not is_confirmation(open_confirmation(personas[persona], restore, what))
    response = confirm(personas[persona], restore, what, "Trying my luck")
    # The list again (or 403 for a role that may not see it): the action is neither offered nor run.
    assert response.status_code in (200, 302, 403) and not is_confirmation(response)
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.PENDING_APPROVAL and restore.decided_by == ""


def test_anonymous_visitors_are_sent_to_the_login_page_and_change_nothing(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    anonymous = Client()
    for url in (
        reverse("admin:governance_restorerequest_changelist"),
        reverse("admin:governance_restorerequest_add"),
        reverse("admin:governance_restorerequest_change", args=[restore.pk]),
        reverse("admin:governance_restoreledger_changelist"),
        reverse("admin:governance_restorecertificate_changelist"),
    ):
        response = anonymous.get(url)
        assert response.status_code == 302 and "/admin/login/" in response.url, url
    response = post_action(
        anonymous, "governance.restorerequest", "approve_requests", [restore.pk], confirm=True, comment="Who am I"
    )
    assert response.status_code == 302 and "/admin/login/" in response.url
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.PENDING_APPROVAL


def test_a_rejected_request_cannot_be_executed(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    confirm(personas["compliance"], restore, "REJECT", "Not without the regulator's letter")
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.REJECTED
    response = open_confirmation(personas["administrator"], restore, "EXECUTE")
    assert response.status_code == 302 and not is_confirmation(response)
    assert any("None of the selected requests can take this action" in t for t in texts(response))
    confirm(personas["administrator"], restore, "EXECUTE")
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.REJECTED and source_ids() == []


# -- execution ------------------------------------------------------------------------
def test_execute_enqueues_on_the_workers_and_moves_nothing_inside_the_request(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    confirm(personas["compliance"], restore, "APPROVE", "Go ahead")
    queued = OrmQ.objects.count()
    response = confirm(personas["administrator"], restore, "EXECUTE")
    assert response.status_code == 302
    assert any("queued for the workers" in t for t in texts(response))
    assert OrmQ.objects.count() == queued + 1
    assert source_ids() == []
    assert not RestoreLedger.objects.filter(request_id=restore.pk).exists()


def test_executed_on_the_workers_the_rows_are_back_and_the_page_shows_the_certificate(personas, archived, q2_sync):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    confirm(personas["compliance"], restore, "APPROVE", "Go ahead")
    response = confirm(personas["administrator"], restore, "EXECUTE")
    assert response.status_code == 302
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.COMPLETED, restore.last_error
    assert source_ids() == [3, 4, 5, 6]
    table = RestoreTable.objects.get(request=restore)
    assert (table.phase, table.restored_count) == ("RESTORED", 4)
    certificate = RestoreCertificate.objects.get(request_id=restore.pk)
    page = client_for(personas["auditor"]).get(response.url).content.decode()
    assert reverse("admin:governance_restorecertificate_change", args=[certificate.pk]) in page
    assert "Restored (certificate issued)" in page
    # Finished: no button to decide or execute, nobody's.
    for persona in ("administrator", "compliance"):
        html = client_for(personas[persona]).get(response.url).content.decode()
        assert 'id="restore-approve"' not in html and 'id="restore-execute"' not in html
    ledger = client_for(personas["auditor"]).get(reverse("admin:governance_restoreledger_changelist"))
    assert ledger.status_code == 200 and TABLE in ledger.content.decode()


def test_an_auditor_finds_every_restore_event_in_the_audit_csv_and_exports_the_certificate(personas, archived, q2_sync):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    confirm(personas["compliance"], restore, "APPROVE", "Go ahead")
    confirm(personas["administrator"], restore, "EXECUTE")
    auditor = client_for(personas["auditor"])
    response = auditor.get(reverse("admin:governance_auditevent_export"))
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    actions = [row["action"] for row in rows if row["action"].startswith("restore.")]
    # (In sync mode the task runs inside async_task, so "enqueued" is written after the execution's events.)
    for action in (
        "restore.requested",
        "restore.approved",
        "restore.enqueued",
        "restore.started",
        "restore.table_restored",
        "restore.completed",
    ):
        assert action in actions, actions
    approved = next(row for row in rows if row["action"] == "restore.approved")
    assert approved["actor"] == "compliance" and "Go ahead" in approved["details"]
    assert approved["object_id"] == str(restore.pk)

    certificate = RestoreCertificate.objects.get(request_id=restore.pk)
    exported = auditor.post(
        reverse("admin:governance_restorecertificate_changelist"),
        {"action": "export_csv", "_selected_action": [certificate.pk]},
    )
    assert exported.status_code == 200
    lines = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert lines[0][:4] == ["id", "request_id", "config_id", "table_label"]
    assert lines[1][1] == str(restore.pk) and lines[1][5] == "4"


# -- bad input: a form error, nothing saved, never a 500 ------------------------------------
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"key_from": "", "key_to": ""}, "key_from", "Required"),
        ({"key_from": "3", "key_to": ""}, "key_to", "Required"),
        ({"selection": "CONTRACT", "contract_value": ""}, "contract_value", "Required"),
        ({"selection": "CONTRACT", "contract_value": "C1\x00"}, "contract_value", "Null characters"),
        ({"selection": "KEYS", "keys": "\n  \n"}, "keys", "Required"),
        ({"selection": "DATE_RANGE", "date_from": "2015-01-01", "date_to": "notadate"}, "date_to", "valid date"),
        ({"selection": "DATE_RANGE", "date_from": "99999-01-01", "date_to": "2015-01-01"}, "date_from", "valid date"),
        ({"selection": "RUN", "archive_run_id": "abc"}, "archive_run_id", "whole number"),
        ({"selection": "RUN", "archive_run_id": HUGE}, "archive_run_id", "less than or equal"),
        ({"selection": "RUN", "archive_run_id": "0"}, "archive_run_id", "greater than or equal"),
        ({"selection": "EVERYTHING"}, "selection", "valid choice"),
        ({"config": HUGE, "key_from": "1", "key_to": "2"}, "config", "valid choice"),
        ({"config": "abc", "key_from": "1", "key_to": "2"}, "config", "valid choice"),
        ({"reason": "", "key_from": "1", "key_to": "2"}, "reason", "required"),
        ({"reason": "x" * 5000, "key_from": "1", "key_to": "2"}, "reason", "at most"),
    ],
)
def test_a_request_the_form_cannot_take_is_shown_again_with_the_error_beside_its_field(
    personas, archived, fields, field, words
):
    response, _ = ask(personas, archived, **fields)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and words in " ".join(errors[field]), errors
    assert not RestoreRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="restore.requested").exists()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"key_from": "1, 2015-01-02", "key_to": "5"}, "has 1 component"),
        ({"key_from": "one", "key_to": "5"}, "not a valid tradeId"),
        ({"key_from": "8", "key_to": "3"}, "first key of the range is after the last key"),
        ({"key_from": "100", "key_to": "200"}, "archived row of SourceDB1"),
        ({"selection": "KEYS", "keys": "1\n2\tC1"}, "has 1 component"),
        ({"selection": "DATE_RANGE", "date_from": "2015-02-01", "date_to": "2015-01-01"}, "first date"),
        ({"selection": "RUN", "archive_run_id": "424242"}, "no archival run 424242"),
    ],
)
def test_a_request_the_engine_refuses_is_explained_on_the_form_and_nothing_is_saved(personas, archived, fields, words):
    response, _ = ask(personas, archived, **fields)
    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()
    assert any(words in e for e in errors), errors
    assert not RestoreRequest.objects.exists() and not RestoreTable.objects.exists()
    assert not AuditEvent.objects.filter(action="restore.requested").exists()


def test_a_table_with_nothing_archived_is_refused_on_the_form(personas):
    create_source_table(table=TABLE)
    try:
        config = make_config(table_name=TABLE)
        response, _ = ask(personas, config, key_from="1", key_to="5")
        assert response.status_code == 200
        assert response.context["adminform"].form.non_field_errors()
        assert not RestoreRequest.objects.exists()
    finally:
        drop_source_table(table=TABLE)


@pytest.mark.parametrize("ids", [[HUGE], ["abc"], ["1", "abc"], [], ["-1"]])
def test_a_confirmation_with_ids_that_name_nothing_says_so_and_changes_nothing(personas, archived, ids):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    client = client_for(personas["compliance"])
    for confirmed in (False, True):
        response = post_action(
            client, "governance.restorerequest", "approve_requests", ids, confirm=confirmed, comment="Fine by me"
        )
        # The list again, with a warning that says why nothing was done (no selection at all: the list).
        assert response.status_code in (200, 302) and not is_confirmation(response), (ids, confirmed)
        assert texts(response) or not ids, (ids, confirmed)
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.PENDING_APPROVAL


@pytest.mark.parametrize("action", ["", "DELETE", "approve", "\x00", "delete_selected"])
def test_an_unknown_action_is_refused_to_everybody(personas, archived, action):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    for persona in ("compliance", "administrator"):
        response = post_action(
            client_for(personas[persona]),
            "governance.restorerequest",
            action,
            [restore.pk],
            confirm=True,
            comment="x" * 5,
        )
        assert response.status_code == 302 and not is_confirmation(response)
    restore.refresh_from_db()
    assert restore.status == RestoreStatus.PENDING_APPROVAL


def test_the_request_form_shows_only_the_chosen_selections_fields_without_inline_script(personas):
    html = client_for(personas["administrator"]).get(reverse("admin:governance_restorerequest_add")).content.decode()
    assert '<script src="/static/governance/scoped_fields.js"' in html
    assert "&quot;KEY_RANGE&quot;: [&quot;key_from&quot;, &quot;key_to&quot;]" in html
    assert "onchange=" not in html


def test_an_administrator_in_no_other_group_may_not_open_the_confirmation_to_approve(personas, archived):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    administrator = personas["administrator"]
    assert list(administrator.groups.values_list("name", flat=True)) == [ARCHIVAL_ADMINISTRATOR]
    assert not is_confirmation(open_confirmation(administrator, restore, "APPROVE"))


# -- keys as people type them and read them ---------------------------------------------------
def test_a_key_is_typed_with_commas_or_pasted_with_tabs_and_shown_in_words():
    from governance.admin.restore import key_words, plain, split_key

    assert split_key(" 3, p1 ,2021-04-30") == ["3", "p1", "2021-04-30"]
    # A tab (a spreadsheet's cells) wins: a comma inside a text key stays in its component.
    assert split_key("3\tp,1\t2021-04-30") == ["3", "p,1", "2021-04-30"]
    assert key_words([17]) == "17" and key_words([3, "p1", "2021-04-30"]) == "(3, p1, 2021-04-30)"
    assert plain({"kind": "KEY_RANGE", "key_low": [3], "key_high": [6]}) == "kind: KEY_RANGE; key low: 3; key high: 6"
    assert "[" not in plain({"kind": "REFERENCED", "child": {"kind": "KEYS", "request_id": 4}})


@pytest.mark.parametrize("term", ["abc", HUGE, "rst_trade", "administrator", "\x00"])
def test_the_lists_search_any_text_without_an_error(personas, archived, term):
    ask(personas, archived, key_from="3", key_to="6")
    client = client_for(personas["auditor"])
    for name in ("restorerequest", "restoreledger", "restorecertificate"):
        response = client.get(reverse(f"admin:governance_{name}_changelist"), {"q": term})
        assert response.status_code in (200, 400), (name, term, response.status_code)


def test_open_requests_are_on_the_dashboard_of_the_staff_who_act_on_them_until_they_finish(personas, archived, q2_sync):
    _, restore = ask(personas, archived, key_from="3", key_to="6")
    link = reverse("admin:governance_restorerequest_change", args=[restore.pk])
    for persona in ("compliance", "administrator", "auditor"):
        page = client_for(personas[persona]).get(reverse("admin:index")).content.decode()
        assert 'id="dashboard-restores"' in page and link in page and "waiting for approval" in page, persona
    assert (
        'id="dashboard-restores"' not in client_for(personas["outsider"]).get(reverse("admin:index")).content.decode()
    )
    confirm(personas["compliance"], restore, "APPROVE", "Go ahead")
    confirm(personas["administrator"], restore, "EXECUTE")
    page = client_for(personas["compliance"]).get(reverse("admin:index")).content.decode()
    assert 'id="dashboard-restores"' not in page
