"""A run that loses a table's lease to another worker says so, by name, and does not claim success."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from io import StringIO

import pytest
from django.utils import timezone

from archival.engine import run_cycle
from archival.management.commands.archival import Command
from governance.models import RecoveryState
from tests.admin_fixtures import create_source_table, drop_source_table, make_config
from tests.engine_fixtures import drop_archive_tables

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
THIEF = "other-host:4242:takeover"


@pytest.fixture
def table(transactional_db):
    create_source_table(table="lease_trade")
    config = make_config(table_name="lease_trade", months_retention_source=1, batch_size=2)
    yield config
    drop_source_table(table="lease_trade")
    drop_archive_tables()


def steal_after_first_batch(config):
    """What a second process does once this one's lease has expired under a long lock: take the table."""

    def on_batch(_moved):
        RecoveryState.objects.filter(config=config).exclude(lease_owner=THIEF).update(
            lease_owner=THIEF, lease_expires_at=timezone.now() + timedelta(minutes=10)
        )

    return on_batch


def test_the_run_reports_the_table_and_who_took_it(table):
    result = run_cycle(cutoff=dt.date(2026, 1, 1), on_batch=steal_after_first_batch(table))
    (lost,) = result.lease_lost
    assert lost.label == str(table) and lost.lease_taken_by == THIEF
    assert not result.ok
    assert RecoveryState.objects.get(pk=lost.state_id).lease_owner == THIEF


def test_the_command_exits_non_zero_and_names_the_table(table):
    result = run_cycle(cutoff=dt.date(2026, 1, 1), on_batch=steal_after_first_batch(table))
    command = Command(stdout=StringIO(), stderr=StringIO())
    with pytest.raises(SystemExit) as exited:
        command.render_run(result, {"json": False})
    out = command.stdout.getvalue()
    assert exited.value.code == 1
    assert f"{table}: lease lost to {THIEF}" in out
    assert "Nothing new to archive" not in out
