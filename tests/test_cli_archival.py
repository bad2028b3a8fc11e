"""The operator CLI: the same engine calls, rendered; exit codes for cron and monitoring."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from governance.models import ArchivalRun, TableConfig

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def run_cli(*args) -> tuple[int, str]:
    """Exit code and everything printed (stdout, then stderr)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("archival", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


def json_of(*args) -> tuple[int, dict | list]:
    out = StringIO()
    try:
        call_command("archival", *args, stdout=out, stderr=StringIO())
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(out.getvalue())


def test_a_dry_run_plans_and_changes_nothing(demo):
    code, out = run_cli("run", "--dry-run", "--cutoff", "2026-11-25", "--table", "Trade")
    assert code == 0 and "nothing changed" in out
    assert not ArchivalRun.objects.exists()


def test_a_run_then_a_second_run_says_nothing_new(demo):
    code, report = json_of("run", "--cutoff", "2026-11-25", "--json")
    assert code == 0
    assert report["moved"] > 0 and report["failed"] == 0
    code, out = run_cli("run", "--cutoff", "2026-11-25")
    assert code == 0 and "0 rows moved" in out and "Nothing new to archive" in out


def test_a_failed_table_makes_the_exit_code_non_zero_and_status_shows_it(demo):
    config = TableConfig.objects.get(table_name="PriceHistory")
    TableConfig.objects.filter(pk=config.pk).update(date_column="vanished")  # as if the column was dropped
    code, out = run_cli("run", "--cutoff", "2026-11-25", "--table", "PriceHistory", "--table", "Trade")
    assert code == 1 and "1 failed" in out
    code, runs = json_of("status", "--runs", "2", "--json")
    tables = runs[0]["tables"]
    assert {t["phase"] for t in tables} == {"FAILED", "COMPLETED"}
    assert any("vanished" in t["error"] for t in tables)


def test_unknown_tables_and_bad_dates_are_command_errors(demo):
    with pytest.raises(CommandError, match="no active table config named Nope"):
        call_command("archival", "plan", "--table", "Nope", stdout=StringIO())
    with pytest.raises(CommandError, match="not a date"):
        call_command("archival", "plan", "--cutoff", "31/12/2025", stdout=StringIO())
