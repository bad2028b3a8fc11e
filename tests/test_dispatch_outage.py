"""A database that stops answering makes its tables wait, with one alert, while the other databases go on.

The outage is real at the network level: SourceDB3's connections go through a
relay the test stops (every connection dropped, new ones refused) and starts
again (tests.ops_fixtures.DatabaseOutage); the server itself is never
touched. Needs a database server for SourceDB3 (PostgreSQL or MariaDB runs).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.db import connections

from archival import dispatch
from archival.engine import resume_run, run_cycle
from archival.monitoring import health_check
from governance.models import (
    AuditEvent,
    BatchLedger,
    DispatchStatus,
    Phase,
    RecoveryState,
    RunStatus,
    TableDispatch,
)
from tests.admin_fixtures import create_source_table, drop_source_table, make_config
from tests.engine_fixtures import drop_archive_tables, snapshot, union_check
from tests.ops_fixtures import DatabaseOutage

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.skipif(
        connections["SourceDB3"].vendor == "sqlite", reason="an outage needs a database server (PostgreSQL or MariaDB)"
    ),
]
CUTOFF = dt.date(2026, 1, 1)
DOWN = "SourceDB3"
DOWN_TABLES = ["outage_a", "outage_b", "outage_c"]
UP = ("SourceDB1", "outage_up")


def _config(alias: str, table: str):
    create_source_table(alias, table)
    schema = {"mysql": connections[alias].settings_dict["NAME"]}.get(connections[alias].vendor)
    return make_config(
        source_db=alias,
        table_name=table,
        months_retention_source=1,
        batch_size=4,
        **({"schema_name": schema} if schema else {}),
    )


@pytest.fixture
def site(transactional_db, settings):
    settings.ADMINS = [("On call", "oncall@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with DatabaseOutage(DOWN) as outage:
        down = [_config(DOWN, t) for t in DOWN_TABLES]
        up = _config(*UP)
        configs = [*down, up]
        original = snapshot(configs)
        yield outage, down, up, configs, original
    for table in DOWN_TABLES:
        drop_source_table(DOWN, table)
    drop_source_table(*UP)
    drop_archive_tables()


def outage_mails():
    return [m for m in mail.outbox if "does not answer" in m.subject]


def test_a_cli_run_leaves_the_tables_of_a_stopped_database_waiting_and_sends_one_alert(site):
    outage, down, up, configs, original = site
    outage.stop()
    result = run_cycle(cutoff=CUTOFF)

    assert {t.label for t in result.waiting} == {str(c) for c in down}
    assert {t.waiting_for for t in result.waiting} == {f"database:{DOWN}"}
    assert not result.failed and not result.ok
    assert RecoveryState.objects.get(run_id=result.run_id, config=up).phase == Phase.COMPLETED
    assert result.status == RunStatus.RUNNING  # open: its waiting tables are unfinished work
    (alert,) = outage_mails()
    assert DOWN in alert.subject and "3 table(s)" in alert.subject
    assert all(str(c) in alert.body for c in down) and f"archival resume --run {result.run_id}" in alert.body
    assert not AuditEvent.objects.filter(action="table.failed").exists()
    check = health_check()
    assert check.label == "WARNING"
    assert any(f"waiting for database {DOWN}" in m and str(down[0]) in m for m in check.messages), check.messages

    outage.start()
    resumed = resume_run(result.run_id)
    assert resumed.ok and resumed.status == RunStatus.COMPLETED, [(t.label, t.phase, t.error) for t in resumed.tables]
    union_check(configs, original)
    assert len(outage_mails()) == 1


def test_an_outage_in_the_middle_of_a_table_loses_nothing(site):
    outage, down, up, configs, original = site
    stopped = []

    def stop_after_first_batch(_moved):
        # After the first batch of a table of the database that goes down.
        if not stopped and BatchLedger.objects.filter(config_id__in=[c.pk for c in down]).exists():
            stopped.append(outage.stop())

    result = run_cycle(cutoff=CUTOFF, on_batch=stop_after_first_batch)
    assert stopped
    states = RecoveryState.objects.filter(run_id=result.run_id, config__in=down)
    assert {s.phase for s in states} == {Phase.WAITING}
    assert sum(s.archived_count for s in states) >= 4  # the batch before the outage counts
    assert RecoveryState.objects.get(run_id=result.run_id, config=up).phase == Phase.COMPLETED
    assert len(outage_mails()) == 1

    outage.start()
    # A streamed batch may be caught between its copy and its delete: both identical.
    union_check(configs, original, allow_both=True)
    assert resume_run(result.run_id).ok
    union_check(configs, original)


def drain(run_id: int) -> None:
    """Run every enqueued slice of the run here, as the workers would, until none is queued."""
    for _ in range(200):
        row = TableDispatch.objects.filter(run_id=run_id, status=DispatchStatus.QUEUED).order_by("pk").first()
        if row is None:
            return
        dispatch.run_slice(row.pk, row.ticket)
    raise AssertionError("slices kept coming")


def test_the_workers_take_the_tables_up_again_by_themselves_when_the_database_answers(site):
    outage, down, up, configs, original = site
    outage.stop()
    started = dispatch.start_scheduled_run(trigger="test", cutoff=CUTOFF)
    drain(started.run_id)
    states = {s.config_id: s for s in RecoveryState.objects.filter(run_id=started.run_id)}
    assert {states[c.pk].phase for c in down} == {Phase.WAITING}
    assert states[up.pk].phase == Phase.COMPLETED
    assert not TableDispatch.objects.filter(run_id=started.run_id, status=DispatchStatus.QUEUED).exists()
    (alert,) = outage_mails()
    assert all(str(c) in alert.body for c in down)

    # Still down: a sweep leaves them waiting and sends nothing new.
    assert dispatch.sweep().taken_up == []
    assert len(outage_mails()) == 1

    outage.start()
    assert sorted(dispatch.sweep().taken_up) == sorted(str(c) for c in down)
    drain(started.run_id)
    dispatch.pump()
    dispatch.finalize(started.run_id)
    assert {s.phase for s in RecoveryState.objects.filter(run_id=started.run_id)} == {Phase.COMPLETED}
    union_check(configs, original)
    assert len(outage_mails()) == 1
