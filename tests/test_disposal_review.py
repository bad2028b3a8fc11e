"""Disposal review, holds between approval and execution, proof and its chain.

Personas: the planner (archival administrator), Alice and Bob (compliance
officers), an outsider.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import DatabaseError, connections, transaction

from archival.backends.base import DisposedRange
from archival.disposal import (
    decide_batch,
    digest_of_keys,
    execute_disposal,
    forecast_disposal,
    place_hold,
    plan_disposal,
    release_hold,
    request_retention_change,
)
from archival.disposal.retention import decide_retention_change
from archival.disposal.tables import archive_table_for
from governance.chain_verification import verify_chains
from governance.models import (
    AuditEvent,
    BatchStatus,
    DisposalBatch,
    DisposalCertificate,
    Hold,
    HoldScope,
    RetentionChange,
)
from tests.disposal_fixtures import (
    DATABASES,
    SOURCE,
    TABLE,
    TODAY,
    archived_keys,
    create_tables,
    insert_rows,
    make_config,
)

pytestmark = pytest.mark.django_db(databases=DATABASES)

PAST = TODAY - dt.timedelta(days=30)
FUTURE = TODAY + dt.timedelta(days=30)


def rows_for(n: int, retention: dt.date, contract: str = "C1", basket: int = 1):
    return [(basket, f"p{i}", dt.date(2010, 1, 1) + dt.timedelta(days=i), contract, retention) for i in range(n)]


@pytest.fixture
def archive(disposal_personas):
    create_tables()
    insert_rows(rows_for(6, PAST) + rows_for(3, FUTURE, basket=2))
    return disposal_personas


def archival_backend_of(batch: DisposalBatch):
    return archive_table_for(batch.config).backend


def plan(table_type: str, disposal_personas) -> list[DisposalBatch]:
    make_config(table_type)
    result = plan_disposal(actor=disposal_personas["planner"], today=TODAY)
    assert result.ok, result.tables
    return list(DisposalBatch.objects.order_by("batch_no"))


def test_it_plans_only_expired_rows_and_changes_no_data(archive):
    before = archived_keys()
    make_config("FUNCTIONAL")
    dry = plan_disposal(actor=archive["planner"], today=TODAY, dry_run=True)
    assert dry.disposable_rows == 6 and DisposalBatch.objects.count() == 0
    plan_disposal(actor=archive["planner"], today=TODAY)
    batch = DisposalBatch.objects.get()
    assert (batch.row_count, batch.status, batch.required_approvals) == (6, BatchStatus.PENDING_REVIEW, 2)
    assert archived_keys() == before


def test_it_reports_held_rows_with_the_hold_that_blocks_them(archive):
    make_config("FUNCTIONAL")
    hold = place_hold(
        scope=HoldScope.CONTRACT, actor=archive["alice"], reason="Matter 42", source_db=SOURCE, contract_value="C1"
    )
    result = plan_disposal(actor=archive["planner"], today=TODAY)
    table = result.tables[0]
    assert table.held_rows == 6 and table.disposable_rows == 0 and not table.batches
    assert [(b.hold_id, b.rows) for b in table.blocking_holds] == [(hold.pk, 6)]


def test_the_planner_may_not_approve_their_own_batch(archive):
    (batch,) = plan("REFERENCE", archive)
    archive["planner"].user_permissions.add(*archive["alice"].user_permissions.all())
    from django.contrib.auth.models import User

    planner = User.objects.get(username="planner")
    result = decide_batch(batch.pk, user=planner, decision="APPROVE", comment="looks fine")
    assert not result.accepted and "planned this batch" in result.message
    assert DisposalBatch.objects.get(pk=batch.pk).status == BatchStatus.PENDING_REVIEW
    assert AuditEvent.objects.filter(action="disposal.review_refused", actor="planner").exists()


def test_superusers_are_not_exempt_from_the_planner_rule(archive):
    from django.contrib.auth.models import User

    boss = User.objects.create_superuser("boss", "boss@example.com", "x" * 20)
    make_config("REFERENCE")
    plan_disposal(actor=boss, today=TODAY)
    batch = DisposalBatch.objects.get()
    assert not decide_batch(batch.pk, user=boss, decision="APPROVE", comment="mine").accepted


def test_functional_tables_need_two_distinct_approvers(archive):
    (batch,) = plan("FUNCTIONAL", archive)
    assert decide_batch(batch.pk, user=archive["alice"], decision="APPROVE", comment="ok").accepted
    assert DisposalBatch.objects.get(pk=batch.pk).status == BatchStatus.PENDING_REVIEW
    again = decide_batch(batch.pk, user=archive["alice"], decision="APPROVE", comment="still ok")
    assert not again.accepted and "someone else" in again.message
    assert execute_disposal(actor=archive["planner"], today=TODAY).deleted == 0
    assert decide_batch(batch.pk, user=archive["bob"], decision="APPROVE", comment="ok too").accepted
    assert DisposalBatch.objects.get(pk=batch.pk).status == BatchStatus.APPROVED


def test_reference_tables_need_one_approval_and_operational_none(archive):
    (batch,) = plan("REFERENCE", archive)
    assert decide_batch(batch.pk, user=archive["bob"], decision="APPROVE", comment="ok").status == BatchStatus.APPROVED
    DisposalBatch.objects.filter(pk=batch.pk).update(status=BatchStatus.REJECTED)
    plan_disposal(actor=archive["planner"], today=TODAY)  # the config is still REFERENCE
    from governance.models import TableConfig

    TableConfig.objects.update(table_type="OPERATIONAL")
    DisposalBatch.objects.filter(status=BatchStatus.PENDING_REVIEW).update(status=BatchStatus.REJECTED)
    plan_disposal(actor=archive["planner"], today=TODAY)
    assert DisposalBatch.objects.filter(status=BatchStatus.APPROVED, required_approvals=0).count() == 1


def test_outsiders_and_empty_comments_are_refused(archive):
    (batch,) = plan("REFERENCE", archive)
    assert not decide_batch(batch.pk, user=archive["outsider"], decision="APPROVE", comment="x").accepted
    assert not decide_batch(batch.pk, user=archive["alice"], decision="APPROVE", comment="  ").accepted


def test_a_rejected_batch_is_never_executed(archive):
    (batch,) = plan("REFERENCE", archive)
    decide_batch(batch.pk, user=archive["alice"], decision="REJECT", comment="matter pending")
    assert execute_disposal(actor=archive["planner"], today=TODAY).deleted == 0
    assert len(archived_keys()) == 9


def test_a_hold_placed_between_approval_and_execution_blocks_its_rows(archive):
    (batch,) = plan("REFERENCE", archive)
    decide_batch(batch.pk, user=archive["alice"], decision="APPROVE", comment="ok")
    hold = place_hold(
        scope=HoldScope.KEYS,
        actor=archive["bob"],
        reason="Subpoena",
        source_db=SOURCE,
        table_name=TABLE,
        keys=[(1, "p0", dt.date(2010, 1, 1)), (1, "p3", dt.date(2010, 1, 4))],
    )
    result = execute_disposal(actor=archive["planner"], today=TODAY)
    assert result.ok, result.batches
    assert (result.deleted, result.held) == (4, 2)
    left = archived_keys()
    assert (1, "p0", dt.date(2010, 1, 1)) in left and (1, "p3", dt.date(2010, 1, 4)) in left
    assert len(left) == 3 + 2
    cert = DisposalCertificate.objects.get()
    destroyed = [(1, f"p{i}", dt.date(2010, 1, 1) + dt.timedelta(days=i)) for i in (1, 2, 4, 5)]
    assert cert.digest == digest_of_keys(destroyed)[0]
    assert cert.row_count == 4 and cert.held_count == 2 and cert.planned_count == 6
    assert [a["approver"] for a in cert.approvals] == ["alice"]
    # The certificate names every hold in force when it ran, as the admin shows it.
    in_force = Hold.objects.using("archive").active(TODAY).order_by("pk").values_list("pk", flat=True)
    assert [h["id"] for h in cert.holds_checked] == list(in_force)
    assert {
        "id": hold.pk,
        "scope": "KEYS",
        "description": str(hold),
        "placed_by": hold.placed_by,
        "reason": "Subpoena",
    } in (cert.holds_checked)
    assert str(hold) == f"Hold {hold.pk}: keys of {SOURCE}.{hold.schema_name}.{TABLE}"
    assert DisposalBatch.objects.get().status == BatchStatus.EXECUTED


def test_a_range_whose_counts_do_not_reconcile_rolls_the_delete_back(archive, monkeypatch):
    # The backend's count before the delete says one expired row more than
    # the delete took plus what it left: something else changed the range.
    (batch,) = plan("OPERATIONAL", archive)
    backend_class = type(archival_backend_of(batch))
    real = backend_class.dispose_batch

    def one_row_unaccounted(self, *args, **kwargs):
        disposed = real(self, *args, **kwargs)
        return DisposedRange(disposed.keys, disposed.expired_before + 1, disposed.expired_left)

    monkeypatch.setattr(backend_class, "dispose_batch", one_row_unaccounted)
    result = execute_disposal(actor=archive["planner"], today=TODAY)

    assert not result.ok and "reconciliation failed: 7 expired rows" in result.errors[0].error
    assert len(archived_keys()) == 9
    assert not DisposalCertificate.objects.exists()
    assert DisposalBatch.objects.get().status == BatchStatus.FAILED


def test_every_hold_scope_protects_its_rows(archive):
    make_config("OPERATIONAL")
    insert_rows(rows_for(2, PAST, contract="C9", basket=3) + rows_for(2, PAST, basket=4))
    place_hold(scope=HoldScope.CONTRACT, actor=archive["alice"], reason="c", source_db=SOURCE, contract_value="C9")
    place_hold(
        scope=HoldScope.DATE_RANGE,
        actor=archive["alice"],
        reason="d",
        date_from=dt.date(2010, 1, 2),
        date_to=dt.date(2010, 1, 2),
    )
    released = place_hold(scope=HoldScope.ALL, actor=archive["alice"], reason="everything")
    release_hold(released.pk, actor=archive["bob"], reason="matter closed")
    place_hold(scope=HoldScope.ALL, actor=archive["alice"], reason="lapsed", hold_until=TODAY - dt.timedelta(days=1))
    plan_disposal(actor=archive["planner"], today=TODAY)
    result = execute_disposal(actor=archive["planner"], today=TODAY)
    left = archived_keys()
    # C9 rows (2), rows dated 2010-01-02 in baskets 1 and 4 (2), future rows (3).
    assert len(left) == 7 and result.deleted == 6
    place_hold(scope=HoldScope.TABLE, actor=archive["alice"], reason="t", source_db=SOURCE, table_name=TABLE)
    assert plan_disposal(actor=archive["planner"], today=TODAY).tables[0].held_rows == 4


def test_the_database_refuses_to_delete_holds_and_audit_events(archive):
    hold = place_hold(scope=HoldScope.ALL, actor=archive["alice"], reason="r")
    with pytest.raises(DatabaseError), transaction.atomic(using="archive"):
        Hold.objects.filter(pk=hold.pk).delete()
    with pytest.raises(DatabaseError), transaction.atomic(using="default"):
        with connections["default"].cursor() as cur:
            cur.execute("DELETE FROM governance_auditevent")
    assert Hold.objects.filter(pk=hold.pk).exists() and AuditEvent.objects.exists()


def test_the_chain_check_names_a_tampered_certificate_and_audit_row(archive):
    (batch,) = plan("REFERENCE", archive)
    decide_batch(batch.pk, user=archive["alice"], decision="APPROVE", comment="ok")
    execute_disposal(actor=archive["planner"], today=TODAY)
    assert verify_chains(write_log=False).ok
    cert = DisposalCertificate.objects.get()
    DisposalCertificate.objects.filter(pk=cert.pk).update(row_count=5)
    report = verify_chains(write_log=False)
    assert not report.ok and f"certificate {cert.pk}" in report.first_broken
    DisposalCertificate.objects.filter(pk=cert.pk).update(row_count=cert.row_count)
    event = AuditEvent.objects.get(action="disposal.approved")
    AuditEvent.objects.filter(pk=event.pk).update(actor="mallory")
    report = verify_chains(write_log=False)
    assert not report.ok and report.first_broken.startswith(f"audit event {event.pk} ")


def test_verify_chain_exits_non_zero_and_logs_the_head(archive, tmp_path, settings):
    settings.ARCHIVAL = {**settings.ARCHIVAL, "LOG_DIR": tmp_path}
    place_hold(scope=HoldScope.ALL, actor=archive["alice"], reason="r")
    call_command("verify_chain")
    log = next(tmp_path.glob("archival_*.log")).read_text()
    head = AuditEvent.objects.order_by("-id").first().entry_hash
    assert f"audit={head}" in log
    victim = AuditEvent.objects.order_by("id").first()
    AuditEvent.objects.filter(pk=victim.pk).update(details={"forged": True})
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=f"audit event {victim.pk}"):
        call_command("verify_chain")


def test_lengthening_retention_applies_at_once_and_protects_rows(archive):
    config = make_config("FUNCTIONAL")
    result = request_retention_change(config.pk, new_years=60, actor=archive["planner"], reason="regulator")
    assert result.status == "APPLIED" and result.rows_updated == 9
    assert plan_disposal(actor=archive["planner"], today=TODAY).disposable_rows == 0


def test_shortening_retention_waits_for_a_compliance_officer(archive):
    config = make_config("FUNCTIONAL")
    result = request_retention_change(config.pk, new_years=1, actor=archive["planner"], reason="policy")
    assert result.status == "PENDING" and result.rows_updated is None
    assert plan_disposal(actor=archive["planner"], today=TODAY, dry_run=True).disposable_rows == 6
    with pytest.raises(ValidationError, match="may not approve"):
        decide_retention_change(result.change_id, user=archive["bob"], approve=True, comment="no perm")
    applied = decide_retention_change(result.change_id, user=archive["alice"], approve=True, comment="ok")
    assert applied.status == "APPLIED" and RetentionChange.objects.get().rows_updated == 9
    # reference dates 2010: + 1 year is long past, so every row is now expired.
    assert plan_disposal(actor=archive["planner"], today=TODAY, dry_run=True).disposable_rows == 9


def test_forecast_counts_rows_per_week_and_leaves_held_rows_out(archive):
    make_config("FUNCTIONAL")
    insert_rows([(7, "w", dt.date(2011, 1, 1), "C5", TODAY + dt.timedelta(days=8))])
    insert_rows([(7, "x", dt.date(2011, 1, 2), "C6", TODAY + dt.timedelta(days=8))])
    place_hold(scope=HoldScope.CONTRACT, actor=archive["alice"], reason="c", source_db=SOURCE, contract_value="C6")
    result = forecast_disposal(today=TODAY)
    (table,) = result.tables
    assert table.overdue == 6 and len(table.weeks) == 12
    assert table.weeks[1].rows == 1
    # The three rows kept until day 30 become disposable on day 31: week 4.
    assert table.weeks[4].rows == 3 and table.total == 6 + 1 + 3


@pytest.mark.parametrize("path", ["plain SQL", "ORM"])
def test_audit_chain_orm_path(archive, monkeypatch, path):
    """Both ways of appending (plain statements, or the ORM on other engines) write the same chain.

    On PostgreSQL the plain path takes the id from the sequence under the
    head's lock (two statements); the first of these appends, after the
    flush, creates the head.
    """
    from governance import audit_chain as chain
    from governance import rowsql
    from governance.models import AuditChainHead

    if path == "ORM":
        for module in (rowsql, chain):
            monkeypatch.setattr(module, "plain_sql", lambda using: False)
    assert rowsql.plain_sql("default") == (path == "plain SQL")
    before = AuditEvent.objects.count()
    appended = [
        AuditEvent.objects.record("bench.appended", actor="w", run_id=7, counts={"n": n}, details={"k": [n]})
        for n in range(3)
    ]
    rows = list(AuditEvent.objects.order_by("-id")[:3])[::-1]
    assert AuditEvent.objects.count() == before + 3
    assert [r.pk for r in rows] == [e.pk for e in appended] == sorted(e.pk for e in appended)
    for row, event, n in zip(rows, appended, range(3), strict=True):
        assert (row.counts, row.details, row.run_id) == ({"n": n}, {"k": [n]}, 7)
        assert row.occurred_at is not None and row.occurred_at == event.occurred_at
        assert row.entry_hash == event.entry_hash == chain.audit_entry_hash(row)
    assert [r.prev_hash for r in rows[1:]] == [r.entry_hash for r in rows[:-1]]
    head = AuditChainHead.objects.get(name=chain.CHAIN_NAME)
    assert (head.last_event_id, head.head_hash) == (rows[-1].pk, rows[-1].entry_hash)
    assert verify_chains(write_log=False).ok
