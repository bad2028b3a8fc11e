"""The pages compliance staff live in: the dashboard reads at a glance, a run
page leads with what needs attention, action results are sentences.

Scenarios are made by the real engine on real source tables (as in
test_monitoring): run 1 fails one table, run 2 completes the other and
blocks the failed one.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from archival.engine import run_cycle
from archival.schedules import DISPOSAL_SCHEDULE, RUN_SCHEDULE, SWEEP_SCHEDULE
from governance.admin.dashboard import axis_top, weekly_chart
from governance.models import BatchLedger, BatchStatus, DisposalBatch, Phase, RecoveryState
from tests.admin_fixtures import create_source_table, drop_source_table, make_config, run_queued_tasks
from tests.engine_fixtures import drop_archive_tables

CUTOFF = dt.date(2026, 1, 1)
TABLES = ("dash_trade", "dash_fill")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def section(page: str, element_id: str) -> str:
    start = page.index(">", page.index(f'id="{element_id}"')) + 1
    return page[start : page.index("</div>", start)]


@pytest.fixture
def failed_then_blocked(transactional_db):
    """Run 1 fails dash_fill (its table is gone), run 2 completes dash_trade and blocks dash_fill."""
    for table in TABLES:
        create_source_table(table=table)
    configs = {t: make_config(table_name=t, months_retention_source=1) for t in TABLES}
    drop_source_table(table="dash_fill")
    first = run_cycle(cutoff=CUTOFF)
    create_source_table(table="dash_fill")
    second = run_cycle(cutoff=CUTOFF)
    yield configs, first, second
    for table in TABLES:
        drop_source_table(table=table)
    drop_archive_tables()


@pytest.mark.django_db(databases="__all__", transaction=True)
class TestDashboardWithAFailedTable:
    def test_it_leads_with_the_estate_in_one_line(self, personas, failed_then_blocked):
        _configs, _first, _second = failed_then_blocked
        page = client_for(personas["compliance"]).get(reverse("admin:index")).content.decode()
        archived = sum(BatchLedger.objects.values_list("row_count", flat=True))
        assert archived > 0
        line = text_of(section(page, "estate-line"))
        assert line.startswith("2 tables: 1 OK , 1 failed , 0 blocked , 0 waiting")
        assert f"this week {archived:,} rows archived" in line
        assert "0 holds active , 0 due for review" in line
        # The estate line comes before every other panel.
        assert page.index('id="estate-line"') < page.index('id="dashboard-holds"') < page.index('id="dashboard-chart"')

    def test_it_lists_only_the_tables_that_need_attention_linked(self, personas, failed_then_blocked):
        configs, _first, _ = failed_then_blocked
        page = client_for(personas["compliance"]).get(reverse("admin:index")).content.decode()
        attention = section(page, "dashboard-attention")
        fill, trade = configs["dash_fill"], configs["dash_trade"]
        assert reverse("admin:governance_tableconfig_change", args=[fill.pk]) in attention
        assert str(trade) not in attention
        assert ">failed<" in attention
        # Its latest run, where the block is, is one click away.
        latest = RecoveryState.objects.filter(config=fill).order_by("-run_id").first()
        assert reverse("admin:governance_archivalrun_change", args=[latest.run_id]) in attention

    def test_a_resumed_run_is_queued_on_the_workers_with_a_link_and_the_workers_finish_it(
        self, personas, failed_then_blocked
    ):
        configs, first, _ = failed_then_blocked
        client = client_for(personas["administrator"])
        changelist = reverse("admin:governance_archivalrun_changelist")
        run_page = reverse("admin:governance_archivalrun_change", args=[first.run_id])
        response = client.post(changelist, {"action": "resume_runs", "_selected_action": [first.run_id]})
        body = " ".join(text_of(str(m)) for m in get_messages(response.wsgi_request))
        assert f"Run {first.run_id} queued on the workers: 1 table(s) to do, 1 failed table(s) to be redone" in body
        assert "Its page shows the progress" in body and "RunResult(" not in body
        assert run_page in " ".join(str(m) for m in get_messages(response.wsgi_request))
        # Nothing moved inside the request: the failed table waits for a worker.
        state = RecoveryState.objects.get(run_id=first.run_id, config=configs["dash_fill"])
        assert state.phase in (Phase.PENDING, Phase.ARCHIVING) and not state.archived_count
        assert OrmQ.objects.exists()

        # Resumed again while queued: refused, in words, and nothing enqueued twice.
        queued = OrmQ.objects.count()
        again = client.post(changelist, {"action": "resume_runs", "_selected_action": [first.run_id]})
        body = " ".join(text_of(str(m)) for m in get_messages(again.wsgi_request))
        assert f"Run {first.run_id} not resumed: run {first.run_id} is already being worked on" in body
        assert OrmQ.objects.count() == queued

        run_queued_tasks()

        state.refresh_from_db()
        assert state.phase == Phase.COMPLETED and state.archived_count > 0
        summary = text_of(section(client.get(run_page).content.decode(), "run-summary").split("</p>")[0])
        assert "2 tables: 2 completed" in summary

    def test_the_run_page_puts_the_failed_table_first_and_collapses_the_rest(self, personas, failed_then_blocked):
        configs, _first, second = failed_then_blocked
        page = (
            client_for(personas["compliance"])
            .get(reverse("admin:governance_archivalrun_change", args=[second.run_id]))
            .content.decode()
        )
        summary = text_of(section(page, "run-summary").split("</p>")[0])
        assert "2 tables: 1 blocked by an unfinished run, 1 completed" in summary or (
            "2 tables: 1 completed, 1 blocked by an unfinished run" in summary
        )
        attention = page[page.index('id="run-attention"') : page.index('id="run-other-tables"')]
        assert str(configs["dash_fill"]) in attention and "dash_trade" not in attention
        rest = page[page.index('id="run-other-tables"') :]
        assert "dash_trade" in rest.split("</details>")[0]
        assert '"phases"' not in page  # no raw summary JSON


@pytest.mark.django_db(databases="__all__")
def test_next_scheduled_runs_are_the_weekly_run_and_disposal_not_the_sweeper(personas):
    now = timezone.now()
    Schedule.objects.filter(name=SWEEP_SCHEDULE).update(next_run=now - dt.timedelta(minutes=1))
    weekly = now + dt.timedelta(days=3)
    Schedule.objects.filter(name=RUN_SCHEDULE).update(next_run=weekly)
    Schedule.objects.filter(name=DISPOSAL_SCHEDULE).update(next_run=weekly + dt.timedelta(hours=3))
    page = client_for(personas["compliance"]).get(reverse("admin:index")).content.decode()
    panel = text_of(section(page, "dashboard-schedule"))
    local = timezone.localtime(weekly)
    assert f"Weekly archival run {local:%a} {local.day} {local:%b %Y, %H:%M}" in panel
    assert "Weekly disposal" in panel
    assert "sweep" not in panel.lower()


def test_the_chart_axis_is_round_and_fits_its_labels():
    assert axis_top(181_663) == 200_000
    assert axis_top(90_831) == 100_000
    assert axis_top(1) == 1 and axis_top(0) == 1
    assert axis_top(2_400) == 2_500


@pytest.mark.django_db(databases="__all__")
def test_the_chart_labels_are_grouped_with_a_table_of_the_numbers(personas):
    week = timezone.localdate() - dt.timedelta(days=timezone.localdate().weekday())
    BatchLedger.objects.create(
        run_id=1,
        config_id=1,
        table_label="SourceDB1.main.t",
        batch_no=1,
        key_low=[1],
        key_high=[2],
        row_count=181_663,
        state="DELETED",
        committed_at=timezone.make_aware(dt.datetime.combine(week, dt.time(12))),
    )
    chart = weekly_chart()
    labels = [t["label"] for t in chart["ticks"]]
    assert labels == ["0", "50,000", "100,000", "150,000", "200,000"]
    # The longest label fits left of the axis at ~6 px a character.
    assert chart["left"] - 6 >= 6 * len("200,000")
    assert min(t["y"] for t in chart["ticks"]) >= 10  # the top label is not clipped
    assert chart["total_archived"] == "181,663"
    page = client_for(personas["auditor"]).get(reverse("admin:index")).content.decode()
    numbers = section(page, "dashboard-chart")
    assert "181,663 archived" in text_of(numbers)
    assert 'aria-describedby="chart-numbers"' in numbers and f"{week:%-d %b %Y}" in text_of(numbers)


@pytest.mark.django_db(databases="__all__")
def test_the_disposal_queue_shows_each_open_status_with_its_count_linked_to_the_list(personas, objects):
    batch = objects["disposalbatch"]  # waiting for its second approval
    DisposalBatch.objects.create(
        **{
            f.name: getattr(batch, f.name)
            for f in DisposalBatch._meta.concrete_fields
            if f.name not in ("id", "status", "batch_no")
        },
        batch_no=2,
        status=BatchStatus.EXECUTING,
    )
    page = client_for(personas["administrator"]).get(reverse("admin:index")).content.decode()
    panel = section(page, "dashboard-disposal")
    assert "Waiting for approval" in text_of(panel) and "Executing" in text_of(panel)
    listed = reverse("admin:governance_disposalbatch_changelist")
    assert f"{listed}?status__exact=EXECUTING" in panel and f"{listed}?status__exact=PENDING_REVIEW" in panel
    assert (
        'id="dashboard-disposal"' not in client_for(personas["outsider"]).get(reverse("admin:index")).content.decode()
    )
