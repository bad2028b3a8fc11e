"""Monitoring tells the truth: health is the state of every configured table, alerts say where they went.

An outage that fails a table in one run leaves it BLOCKED in the next; that
next run may complete, and still nothing is OK until the failed run is
resumed or abandoned. Each scenario is made by the real engine on real
source tables; only the clock and the settings are the test's.
"""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from archival import alerts
from archival.engine import abandon_run, run_cycle
from archival.monitoring import CRITICAL, WARNING, health_check
from governance.checks import deployment_warnings
from governance.models import AuditEvent, Phase, RecoveryState
from tests.admin_fixtures import create_source_table, drop_source_table, make_config
from tests.engine_fixtures import drop_archive_tables

CUTOFF = dt.date(2026, 1, 1)
TABLES = ("mon_trade", "mon_fill")


@pytest.fixture
def two_tables(transactional_db):
    for table in TABLES:
        create_source_table(table=table)
    configs = [make_config(table_name=table, months_retention_source=1) for table in TABLES]
    yield configs
    for table in TABLES:
        drop_source_table(table=table)
    drop_archive_tables()


def fail_one_then_run_again(configs):
    """Run 1 fails mon_fill (its table is gone); run 2 completes mon_trade and blocks mon_fill."""
    drop_source_table(table="mon_fill")
    first = run_cycle(cutoff=CUTOFF)
    create_source_table(table="mon_fill")
    second = run_cycle(cutoff=CUTOFF)
    return first, second


@pytest.mark.django_db(databases="__all__", transaction=True)
class TestHealthIsEveryTable:
    def test_a_completed_run_with_a_table_blocked_behind_a_failed_one_is_critical_and_names_it(self, two_tables):
        first, second = fail_one_then_run_again(two_tables)
        phases = {s.table_label.rsplit(".", 1)[1]: s.phase for s in RecoveryState.objects.filter(run_id=second.run_id)}
        assert phases == {"mon_trade": Phase.COMPLETED, "mon_fill": Phase.BLOCKED}
        assert second.status == "COMPLETED"
        check = health_check()
        assert check.code == CRITICAL
        failed = [m for m in check.messages if "failed" in m and m.startswith("CRITICAL")]
        assert len(failed) == 1 and "mon_fill" in failed[0] and f"run {first.run_id}" in failed[0]
        assert any(m.startswith("WARNING") and "blocked" in m and "mon_fill" in m for m in check.messages)

    def test_status_check_exits_critical_where_it_said_ok(self, two_tables):
        fail_one_then_run_again(two_tables)
        out = StringIO()
        with pytest.raises(SystemExit) as exited:
            call_command("archival", "status", "--check", stdout=out)
        assert exited.value.code == CRITICAL
        assert "mon_fill" in out.getvalue() and "CRITICAL" in out.getvalue()

    def test_abandoning_the_failed_table_clears_the_critical(self, two_tables):
        first, _ = fail_one_then_run_again(two_tables)
        abandon_run(first.run_id, actor="administrator", reason="source restored; archive it next week")
        check = health_check()
        assert not any(m.startswith("CRITICAL") for m in check.messages)
        assert not any("mon_fill" in m and "failed" in m for m in check.messages)

    def test_a_table_that_never_completed_is_overdue_once_runs_exist(self, two_tables):
        run_cycle(cutoff=CUTOFF, tables=[str(two_tables[0])])
        check = health_check()
        overdue = [m for m in check.messages if "have not completed a run" in m]
        assert len(overdue) == 1 and "mon_fill" in overdue[0] and "mon_trade" not in overdue[0]
        assert check.code == WARNING

    def test_two_healthy_tables_are_ok_for_the_tables(self, two_tables):
        run_cycle(cutoff=CUTOFF)
        check = health_check()
        assert not [m for m in check.messages if "table" in m], check.messages


@pytest.mark.django_db
class TestComponents:
    def test_healthz_reports_each_component(self, client, workers_running):
        body = client.get("/healthz").json()
        assert body["components"] == {"web": "up", "control_database": "up", "workers": "up"}

    def test_a_cli_only_deployment_is_not_down_for_want_of_workers(self, client, settings):
        from django_q.models import Schedule

        from archival.schedules import SWEEP_SCHEDULE

        Schedule.objects.filter(name=SWEEP_SCHEDULE).update(next_run=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        assert client.get("/healthz").status_code == 503
        settings.ARCHIVAL_SCHEDULER = {**settings.ARCHIVAL_SCHEDULER, "WORKERS": False}
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json()["components"]["workers"] == "not configured"
        assert not any("worker cluster" in m for m in health_check().messages)


@pytest.mark.django_db
class TestAlertsToNobody:
    @override_settings(ADMINS=[], EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
    def test_an_alert_without_recipients_is_recorded_as_reaching_no_one(self):
        from django.core import mail

        assert alerts.send("table_failed", "t failed", "body") is False
        event = AuditEvent.objects.get(action="alert.sent")
        assert event.outcome == alerts.NO_RECIPIENTS and event.details["recipients"] == []
        assert mail.outbox == []
        assert any("alerts go nowhere" in m for m in health_check().messages)
        assert [w.id for w in deployment_warnings()] == ["governance.W002"]

    @override_settings(
        ADMINS=[("on call", "oncall@example.com")], EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"
    )
    def test_with_recipients_it_is_mailed_and_ok(self):
        from django.core import mail

        assert alerts.send("table_failed", "t failed", "body") is True
        assert AuditEvent.objects.get(action="alert.sent").outcome == "OK"
        assert len(mail.outbox) == 1 and mail.outbox[0].to == ["oncall@example.com"]
        assert deployment_warnings() == []

    def test_deployment_warnings_are_for_check_deploy_not_every_command(self):
        with override_settings(ADMINS=[]):
            plain, plain_err = StringIO(), StringIO()
            call_command("check", stdout=plain, stderr=plain_err)
            assert "governance.W002" not in plain.getvalue() + plain_err.getvalue()
            deploy, deploy_err = StringIO(), StringIO()
            call_command("check", "--deploy", stdout=deploy, stderr=deploy_err)
            assert "governance.W002" in deploy.getvalue() + deploy_err.getvalue()


@pytest.fixture
def on_call(settings):
    settings.ADMINS = [("on call", "oncall@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.mark.django_db
@pytest.mark.usefixtures("on_call")
class TestHoldViolations:
    def test_a_plan_that_left_held_rows_out_is_not_alerted(self):
        AuditEvent.objects.record("disposal.planned", counts={"expired": 10, "held": 4, "batches": 1})
        assert alerts.scan_hold_violations() == 0

    def test_an_execution_that_met_rows_held_since_approval_is_alerted_once(self):
        AuditEvent.objects.record("disposal.executed", counts={"planned": 10, "deleted": 6, "held": 4})
        assert alerts.scan_hold_violations() == 1
        assert alerts.scan_hold_violations() == 0
        sent = AuditEvent.objects.get(action="alert.sent")
        assert sent.details["kind"] == "hold_violation" and sent.outcome == "OK"
        assert sent.details["subject"] == "hold protected data: disposal.executed by system"

    def test_a_refused_review_is_not_a_hold_violation(self):
        AuditEvent.objects.record("disposal.review_refused", outcome="REFUSED", details={"reason": "own plan"})
        assert alerts.scan_hold_violations() == 0

    def test_a_refused_hold_change_is(self):
        AuditEvent.objects.record("hold.release_refused", outcome="REFUSED")
        assert alerts.scan_hold_violations() == 1
