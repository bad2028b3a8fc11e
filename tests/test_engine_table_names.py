"""Table names: one grammar, and a name of no table is an error on every entry point."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from archival.disposal import execute_disposal, forecast_disposal, plan_disposal
from archival.engine.table_names import UnknownTable, matches, select_configs
from governance.models import ArchivalRun, AuditEvent, DisposalBatch, TableConfig

pytestmark = pytest.mark.django_db(databases="__all__")


def _config(source_db: str, table: str, *, active: bool = True) -> TableConfig:
    return TableConfig.objects.create(
        source_db=source_db,
        schema_name="main",
        table_name=table,
        table_type="OPERATIONAL",
        date_column="businessDate",
        is_active=active,
    )


@pytest.fixture
def positions():
    """Position in two source databases, Trade in one, and a switched-off Legacy."""
    return {
        "one": _config("SourceDB1", "Position"),
        "two": _config("SourceDB2", "Position"),
        "trade": _config("SourceDB1", "Trade"),
        "legacy": _config("SourceDB1", "Legacy", active=False),
    }


def test_a_name_is_a_table_a_source_and_table_a_label_or_a_config_id(positions):
    one = positions["one"]
    for name in ("Position", "SourceDB1.Position", "SourceDB1.main.Position", str(one.pk)):
        assert matches(one, name), name
    for name in ("SourceDB2.Position", "SourceDB1.dbo.Position", "Trade", "x.SourceDB1.main.Position", ""):
        assert not matches(one, name), name


def test_the_configs_come_in_the_order_named_each_once(positions):
    chosen = select_configs(["Trade", "Position", "SourceDB1.main.Position"])
    assert chosen == [positions["trade"], positions["one"], positions["two"]]
    assert select_configs(["SourceDB2.Position"]) == [positions["two"]]


def test_every_unknown_name_is_named_in_one_error(positions):
    with pytest.raises(UnknownTable, match=r"no active table config named Nope, SourceDB3\.Position \(name a table"):
        select_configs(["Position", "Nope", "SourceDB3.Position"])


def test_a_switched_off_config_is_found_only_where_inactive_ones_count(positions):
    with pytest.raises(UnknownTable, match="no active table config named Legacy"):
        select_configs(["Legacy"])
    assert select_configs(["Legacy"], active_only=False) == [positions["legacy"]]


# -- every entry point ----------------------------------------------------------------


def _command(*args):
    call_command(*args, stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize("action", ["plan", "run"])
def test_the_archival_command_refuses_an_unknown_table(positions, action):
    with pytest.raises(CommandError, match="no active table config named Nope"):
        _command("archival", action, "--table", "Nope")
    assert not ArchivalRun.objects.exists()


def test_abandoning_an_unknown_table_of_a_run_is_refused(positions):
    run = ArchivalRun.objects.create(cutoff=dt.date(2026, 11, 25), started_by="test")
    with pytest.raises(CommandError, match="no table config named Nope"):
        _command("archival", "abandon", "--run", str(run.pk), "--reason", "typo", "--table", "Nope")
    assert not AuditEvent.objects.filter(action="run.abandoned").exists()


def test_a_run_on_the_workers_of_an_unknown_table_is_refused_before_anything_starts(positions):
    with pytest.raises(CommandError, match="no active table config named Nope"):
        _command("schedule_archival", "--run-now", "--table", "Nope")
    assert not ArchivalRun.objects.exists()


@pytest.mark.parametrize("mode", ["--plan", "--execute", "--forecast"])
def test_the_dispose_command_refuses_an_unknown_table(positions, mode):
    with pytest.raises(CommandError, match=r"no (active )?table config named Nope"):
        _command("dispose", mode, "--table", "Nope")
    assert not DisposalBatch.objects.exists()


@pytest.mark.parametrize("dispose", [plan_disposal, execute_disposal, forecast_disposal])
def test_the_disposal_engine_refuses_an_unknown_table(positions, dispose):
    with pytest.raises(UnknownTable, match="named Nope"):
        dispose(tables=["Nope"])


def test_the_sql_server_dry_run_refuses_an_unknown_table(positions):
    with pytest.raises(CommandError, match="no active table config named Nope"):
        _command("mssql_sql", "--table", "Nope")


def test_a_restore_request_for_an_unknown_table_is_refused(positions):
    User.objects.create_user("requester")
    with pytest.raises(CommandError, match=r"no active table config named SourceDB1\.Nope"):
        _command(
            "archival", "restore", "request", "--table", "SourceDB1.Nope", "--rows", "run", "--run", "1",
            "--reason", "typo", "--as", "requester",
        )  # fmt: skip
