"""Restore requests: who may ask and approve, what is refused (with nothing saved), the command and the workers."""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django_q.conf import Conf

from archival.backends import backend_for
from archival.demo import source_schema
from archival.restore.errors import RestoreRefused
from archival.restore.executor import execute
from archival.restore.requests import approve, create_request, preview, reject
from archival.restore.workers import execute_on_workers
from archival.tasks import REGISTRY
from governance.models import (
    AuditEvent,
    RecoveryState,
    RestoreKey,
    RestoreRequest,
    RestoreStatus,
    RestoreTable,
    TableConfig,
)
from tests.engine_fixtures import union_check
from tests.restore_fixtures import _user, archive_count, config, configs

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def run_id() -> int:
    return RecoveryState.objects.values_list("run_id", flat=True).first()


def nothing_saved() -> None:
    assert not RestoreRequest.objects.exists()
    assert not RestoreTable.objects.exists()
    assert not RestoreKey.objects.using("archive").exists()
    assert not AuditEvent.objects.filter(action__startswith="restore.").exists()


def archived_keys(cfg) -> list[tuple]:
    from archival.backends import namespace_for

    arc = backend_for("archive")
    cols = ", ".join(arc.quote(c) for c in cfg.pk_columns)
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {arc.qualified(namespace_for(cfg.source_db), cfg.table_name)} ORDER BY {cols}")
        return [tuple(r) for r in cur.fetchall()]


def test_a_request_plans_its_tables_previews_them_and_is_audited(archived_demo, requester):
    position = config("SourceDB1", "Position")
    request = create_request(position, "RUN", actor=requester, reason="regulator case 2026-17", archive_run_id=run_id())

    assert request.status == RestoreStatus.PENDING_APPROVAL and request.requested_by == requester.username
    tables = list(RestoreTable.objects.filter(request=request).order_by("position"))
    assert [t.config.table_name for t in tables] == ["Contract", "Position"]
    assert tables[1].planned_count == archive_count(position) > 0
    assert 0 < tables[0].planned_count <= archive_count(config("SourceDB1", "Contract"))
    shown = preview(request)
    assert [t.pk for t in shown.tables] == [t.pk for t in tables]
    assert any("eligible under the current config" in p and "fix the config first" in p for p in shown.problems)
    event = AuditEvent.objects.get(action="restore.requested")
    assert event.actor == requester.username and event.details["reason"] == "regulator case 2026-17"
    assert event.counts[str(position)] == tables[1].planned_count


def test_keys_are_stored_canonically_and_select_exactly_those_rows(archived_demo, requester):
    position = config("SourceDB1", "Position")
    keys = archived_keys(position)[:3]
    listed = [[str(c) for c in k] for k in keys] + [[str(c) for c in keys[0]]]  # a duplicate counts once
    request = create_request(position, "KEYS", actor=requester, reason="three positions", keys=listed)
    assert request.key_count == 3
    assert RestoreKey.objects.using("archive").filter(request_id=request.pk).count() == 3
    assert RestoreTable.objects.get(request=request, config=position).planned_count == 3


def test_an_outsider_may_not_request_a_restore(archived_demo, restore_outsider):
    with pytest.raises(RestoreRefused, match=r"needs governance\.request_restore"):
        create_request(
            config("SourceDB1", "RefRate000"), "RUN", actor=restore_outsider, reason="r", archive_run_id=run_id()
        )
    nothing_saved()


def test_the_requester_never_approves_their_own_request(archived_demo):
    both = _user("dual_role", "governance.request_restore", "governance.approve_restore")
    request = create_request(config("SourceDB1", "RefRate000"), "RUN", actor=both, reason="r", archive_run_id=run_id())
    with pytest.raises(RestoreRefused, match=r"requested restore \d+ and may not decide on it"):
        approve(request, actor=both, comment="looks fine")
    request.refresh_from_db()
    assert request.status == RestoreStatus.PENDING_APPROVAL and not request.decided_by
    assert not AuditEvent.objects.filter(action="restore.approved").exists()


def test_approval_needs_the_permission_a_comment_and_a_waiting_request(
    archived_demo, requester, approver, restore_outsider
):
    request = create_request(
        config("SourceDB1", "RefRate000"), "RUN", actor=requester, reason="r", archive_run_id=run_id()
    )
    with pytest.raises(RestoreRefused, match=r"needs governance\.approve_restore"):
        approve(request, actor=restore_outsider, comment="ok")
    with pytest.raises(RestoreRefused, match="a comment is required"):
        approve(request, actor=approver, comment="  ")
    approve(request, actor=approver, comment="checked")
    with pytest.raises(RestoreRefused, match="not waiting for approval"):
        approve(request, actor=approver, comment="again")
    with pytest.raises(RestoreRefused, match="not waiting for approval"):
        reject(request, actor=approver, comment="changed my mind")
    request.refresh_from_db()
    assert request.status == RestoreStatus.APPROVED and request.decided_by == approver.username
    assert request.decided_user_id == approver.pk


def test_a_rejected_request_is_never_executed(archived_demo, requester, approver):
    cfg = config("SourceDB1", "RefRate000")
    before = archive_count(cfg)
    request = create_request(cfg, "RUN", actor=requester, reason="r", archive_run_id=run_id())
    reject(request, actor=approver, comment="wrong table")
    assert AuditEvent.objects.filter(action="restore.rejected", actor=approver.username).exists()
    with pytest.raises(RestoreRefused, match="only an approved request"):
        execute(request.pk, actor=requester)
    with pytest.raises(RestoreRefused, match="only an approved request"):
        execute_on_workers(request, actor=requester)
    assert archive_count(cfg) == before


BAD_INPUT = [
    ("Position", "KEY_RANGE", {"key_low": [1, 2], "key_high": [1, 2, "2020-01-01"]}, "has 3 component"),
    (
        "Position",
        "KEY_RANGE",
        {"key_low": ["x", 1, "2020-01-01"], "key_high": [9, 1, "2020-01-01"]},
        "'x' is not a valid basketId",
    ),
    (
        "Position",
        "KEY_RANGE",
        {"key_low": [1, 1, "2020-02-30"], "key_high": [9, 1, "2020-03-01"]},
        "not a valid businessDate",
    ),
    (
        "Position",
        "KEY_RANGE",
        {"key_low": [9, 1, "2020-01-01"], "key_high": [1, 1, "2020-01-01"]},
        "after the last key",
    ),
    ("Position", "KEY_RANGE", {"key_low": [1, 1, "2020-01-01"]}, "needs its first and its last key"),
    ("Position", "KEYS", {"keys": []}, "at least one key"),
    ("Position", "KEYS", {"keys": [[1, 1]]}, "has 3 component"),
    ("Position", "CONTRACT", {"contract_value": "  "}, "needs the contract id"),
    ("RefRate000", "CONTRACT", {"contract_value": "C-1"}, "has no contract column"),
    ("RefRate000", "DATE_RANGE", {"date_from": date(2024, 2, 1), "date_to": date(2024, 1, 1)}, "after the last date"),
    ("RefRate000", "DATE_RANGE", {"date_from": "31/01/2024", "date_to": "2024-02-01"}, "is not a date"),
    ("RefRate000", "RUN", {"archive_run_id": 99999}, "no archival run 99999"),
    ("RefRate000", "RUN", {"archive_run_id": "seven"}, "must be a run number"),
    ("RefRate000", "EVERYTHING", {}, "unknown selection"),
    ("RefRate000", "KEY_RANGE", {"key_low": [10**8], "key_high": [10**8 + 5]}, "no archived row"),
]


@pytest.mark.parametrize(("table", "selection", "values", "message"), BAD_INPUT)
def test_bad_input_is_refused_with_a_clear_message_and_nothing_saved(
    archived_demo, requester, table, selection, values, message
):
    with pytest.raises(RestoreRefused, match=message):
        create_request(config("SourceDB1", table), selection, actor=requester, reason="r", **values)
    nothing_saved()


def test_a_request_needs_a_reason(archived_demo, requester):
    with pytest.raises(RestoreRefused, match="say why"):
        create_request(config("SourceDB1", "RefRate000"), "RUN", actor=requester, reason=" ", archive_run_id=run_id())
    nothing_saved()


def test_a_table_never_archived_is_refused(archived_demo, requester):
    alias = "SourceDB1"
    src = backend_for(alias)
    with connections[alias].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {src.qualified(source_schema(alias), 'Fresh')}")
        cur.execute(
            f"CREATE TABLE {src.qualified(source_schema(alias), 'Fresh')} ({src.quote('id')} INTEGER PRIMARY KEY, {src.quote('d')} DATE)"
        )
    cfg = TableConfig(
        source_db=alias, schema_name=source_schema(alias), table_name="Fresh", table_type="OPERATIONAL", date_column="d"
    )
    cfg.full_clean()
    cfg.save()
    with pytest.raises(RestoreRefused, match=r"nothing of \S+Fresh has been archived"):
        create_request(cfg, "RUN", actor=requester, reason="r", archive_run_id=run_id())
    nothing_saved()


# -- the command ----------------------------------------------------------------


def cmd(*args) -> str:
    out = StringIO()
    call_command("archival", "restore", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_command_requests_approves_executes_and_reports(archived_demo, requester, approver, tmp_path):
    position = config("SourceDB1", "Position")
    keys = archived_keys(position)[:4]
    keys_file = tmp_path / "keys.tsv"
    keys_file.write_text("".join("\t".join(str(c) for c in k) + "\n" for k in keys), encoding="utf-8")

    out = cmd("request", "--table", "SourceDB1.Position", "--rows", "keys", "--keys-file", str(keys_file),
              "--reason", "recalculation R-5", "--as", requester.username)  # fmt: skip
    request = RestoreRequest.objects.get()
    assert f"Restore {request.pk} requested" in out and "Position: 4 rows" in out
    with pytest.raises(CommandError, match="may not approve or reject restores"):
        cmd("approve", str(request.pk), "--as", requester.username, "--comment", "mine")
    with pytest.raises(CommandError, match="only an approved request"):
        cmd("execute", str(request.pk))
    assert "approved by carl_compliance" in cmd(
        "approve", str(request.pk), "--as", approver.username, "--comment", "ok"
    )

    out = cmd("execute", str(request.pk), "--as", requester.username)

    assert f"Restore {request.pk} COMPLETED" in out
    assert "Position: RESTORED, 4 restored" in out and "Contract: RESTORED" in out
    assert "COMPLETED" in cmd("status", str(request.pk))
    assert str(request.pk) in cmd("status")
    union_check(configs(), archived_demo)


def test_the_command_refuses_unknown_tables_users_and_bad_ranges(archived_demo, requester):
    with pytest.raises(CommandError, match=r"no active table config named SourceDB1\.Nope"):
        cmd(
            "request",
            "--table",
            "SourceDB1.Nope",
            "--rows",
            "run",
            "--run",
            "1",
            "--reason",
            "r",
            "--as",
            requester.username,
        )
    with pytest.raises(CommandError, match="no active user"):
        cmd(
            "request",
            "--table",
            "SourceDB1.RefRate000",
            "--rows",
            "run",
            "--run",
            "1",
            "--reason",
            "r",
            "--as",
            "nobody",
        )
    with pytest.raises(CommandError, match="not a valid id"):
        cmd("request", "--table", "SourceDB1.RefRate000", "--rows", "key-range", "--from", "a", "--to", "9",
            "--reason", "r", "--as", requester.username)  # fmt: skip
    with pytest.raises(CommandError, match="no restore request 4242"):
        cmd("preview", "4242")
    nothing_saved()


def test_a_failed_execution_exits_non_zero(archived_demo, requester, approver):
    cfg = config("SourceDB1", "RefRate000")
    key = archived_keys(cfg)[0]
    src = backend_for(cfg.source_db)
    with connections[cfg.source_db].cursor() as cur:
        cur.execute(
            f"INSERT INTO {src.qualified(cfg.schema_name, cfg.table_name)} ({src.quote('id')}, {src.quote('category')}) "
            "VALUES (%s, %s)",
            [key[0], "a different row"],
        )
    request = create_request(cfg, "RUN", actor=requester, reason="r", archive_run_id=run_id())
    approve(request, actor=approver, comment="ok")
    with pytest.raises(SystemExit) as exited:
        cmd("execute", str(request.pk))
    assert exited.value.code == 1
    assert RestoreRequest.objects.get().status == RestoreStatus.FAILED


# -- the workers ----------------------------------------------------------------


def test_the_execute_task_is_registered_and_checks_its_arguments():
    from django.core.exceptions import ValidationError

    entry = REGISTRY["archival.tasks.execute_restore"]
    assert not entry.schedulable
    entry.check_arguments((3, "ada_admin"), {})
    for args, kwargs in (((3,), {}), (("3", "x"), {}), ((3, ""), {}), ((0, "x"), {}), ((3, "x"), {"extra": 1})):
        with pytest.raises(ValidationError):
            entry.check_arguments(args, kwargs)


def test_executing_on_the_workers_runs_the_same_engine(archived_demo, requester, approver, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)
    cfg = config("SourceDB1", "RefRate000")
    request = create_request(cfg, "RUN", actor=requester, reason="r", archive_run_id=run_id())
    with pytest.raises(RestoreRefused, match="only an approved request"):
        execute_on_workers(request, actor=requester)
    approve(request, actor=approver, comment="ok")
    with pytest.raises(RestoreRefused, match=r"needs governance\.request_restore"):
        execute_on_workers(request, actor=approver)

    task_id = execute_on_workers(request, actor=requester)

    assert task_id
    request.refresh_from_db()
    assert request.status == RestoreStatus.COMPLETED and request.executed_by == requester.username
    assert archive_count(cfg) == 0
    assert AuditEvent.objects.filter(action="restore.enqueued", actor=requester.username).exists()
    union_check(configs(), archived_demo)


def test_a_typed_key_is_read_as_the_hold_form_reads_it():
    """``1`` and ``true`` name one boolean component, as in a KEYS hold; a word that is not a boolean is refused."""
    from types import SimpleNamespace

    from archival.restore.requests import _key

    target = SimpleNamespace(archive=SimpleNamespace(pk=["active", "id"], pk_generic=["bool", "int"], label="T"))
    assert _key(target, ["1", "7"], "key 1") == [True, 7] == _key(target, ["true", "7"], "key 1")
    assert _key(target, ["0", 7], "key 1") == [False, 7]
    with pytest.raises(RestoreRefused, match="'maybe' is not a valid active"):
        _key(target, ["maybe", "7"], "key 1")
