"""The operator CLI refuses bad input with one line and changes nothing.

Cutoffs are YYYY-MM-DD dates no later than today; a finished run is not
resumed; ``status`` shows what the batch ledger says committed, also after a
kill.
"""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from archival import engine
from archival.engine.cutoff import CutoffError, parse_cutoff, resolve_cutoff
from governance.models import ArchivalRun, AuditEvent, BatchLedger, RecoveryState
from tests.engine_fixtures import manage, subprocess_env

CUTOFF = "2026-11-25"


@pytest.mark.parametrize(
    "text", ["20261207", "2026-1-05", " 2026-01-05", "2026-01-05 ", "2021-13-45", "31/12/2025", "2026-02-30", ""]
)
def test_a_cutoff_is_exactly_a_yyyy_mm_dd_calendar_date(text):
    with pytest.raises(CutoffError):
        parse_cutoff(text)


def test_a_well_written_cutoff_is_that_date_and_none_is_today():
    assert parse_cutoff("2024-02-29") == dt.date(2024, 2, 29)
    assert resolve_cutoff(None, today=dt.date(2026, 12, 7)) == dt.date(2026, 12, 7)
    assert resolve_cutoff("2026-12-07", today=dt.date(2026, 12, 7)) == dt.date(2026, 12, 7)
    with pytest.raises(CutoffError, match="later than today"):
        resolve_cutoff("2026-12-08", today=dt.date(2026, 12, 7))


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.parametrize("action", ["plan", "run"])
def test_a_malformed_cutoff_is_a_usage_error_with_exit_2(demo, action):
    with pytest.raises(CommandError, match="YYYY-MM-DD") as caught:
        call_command("archival", action, "--cutoff", "20261207", stdout=StringIO(), stderr=StringIO())
    assert caught.value.returncode == 2
    assert not ArchivalRun.objects.exists()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_from_the_shell_a_malformed_cutoff_prints_one_line_not_a_traceback(demo):
    done = manage("archival", "run", "--cutoff", "20261207", env=subprocess_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    # One line (after any system-check warnings the environment causes).
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: cutoff '20261207'") and "YYYY-MM-DD" in last, done.stderr
    assert sum("20261207" in line for line in done.stderr.splitlines()) == 1, done.stderr
    assert not ArchivalRun.objects.exists()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_cutoff_later_than_today_is_refused_by_every_entry_point(demo):
    tomorrow = timezone.localdate() + dt.timedelta(days=1)
    with pytest.raises(CommandError, match="later than today") as caught:
        call_command("archival", "run", "--cutoff", tomorrow.isoformat(), stdout=StringIO(), stderr=StringIO())
    assert caught.value.returncode == 2
    with pytest.raises(CutoffError, match="later than today"):
        engine.start_run(cutoff=tomorrow, tables=["Trade"])
    with pytest.raises(CutoffError, match="later than today"):
        engine.plan(["Trade"], tomorrow)
    from archival import dispatch

    with pytest.raises(CutoffError, match="later than today"):
        dispatch.start_scheduled_run(actor="test", trigger="test", cutoff=tomorrow)
    assert not ArchivalRun.objects.exists()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_resuming_a_completed_run_is_refused_and_changes_nothing(demo):
    result = engine.run_cycle(cutoff=dt.date.fromisoformat(CUTOFF), tables=["Trade"])
    run = ArchivalRun.objects.get(pk=result.run_id)
    assert run.status == "COMPLETED"
    events = list(AuditEvent.objects.filter(run_id=run.pk).values_list("action", flat=True))

    with pytest.raises(CommandError, match="nothing to resume"):
        call_command("archival", "resume", "--run", str(run.pk), stdout=StringIO(), stderr=StringIO())

    after = ArchivalRun.objects.get(pk=run.pk)
    assert (after.status, after.finished_at) == (run.status, run.finished_at)
    assert (
        list(
            AuditEvent.objects.filter(run_id=run.pk)
            .exclude(action="run.resume_refused")
            .values_list("action", flat=True)
        )
        == events
    )
    assert AuditEvent.objects.filter(run_id=run.pk, action="run.resume_refused", outcome="REFUSED").count() == 1


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_status_after_a_kill_shows_what_the_ledger_committed_in_one_ledger_query(demo):
    env = subprocess_env(ARCHIVAL_BATCH_SIZE="100", ARCHIVAL_FAULT="batch_after_commit:12")
    killed = manage("archival", "run", "--cutoff", CUTOFF, "--table", "Position", env=env)
    assert killed.returncode < 0, killed.stdout + killed.stderr  # SIGKILL
    state = RecoveryState.objects.get()
    in_ledger = sum(
        BatchLedger.objects.filter(run_id=state.run_id, config_id=state.config_id).values_list(
            "deleted_count", flat=True
        )
    )
    # What the tester saw: the state lags the ledger after a kill.
    assert in_ledger == 1200 and state.archived_count < in_ledger

    out = StringIO()
    with CaptureQueriesContext(connections["archive"]) as archive_queries:
        call_command("archival", "status", "--json", stdout=out, stderr=StringIO())
    (run,) = json.loads(out.getvalue())
    (table,) = run["tables"]
    assert (table["archived"], table["batches"], table["state_archived"]) == (1200, 12, state.archived_count)
    ledger_reads = [q for q in archive_queries.captured_queries if "ledger" in q["sql"].lower()]
    assert len(ledger_reads) == 1, ledger_reads

    text = StringIO()
    call_command("archival", "status", stdout=text, stderr=StringIO())
    line = next(li for li in text.getvalue().splitlines() if li.startswith(state.table_label))
    assert " 1200 " in line and "ARCHIVING" in line, line
