"""At most one run per schedule firing: the firing's intended instant is the run's idempotency key.

django-q2 redelivers a task whose worker died, and two clusters may both
fire one schedule; either way the weekly run must start once. Each delivery
here is its own process against the site's SQLite databases, as on workers.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests import sched_fixtures

pytestmark = pytest.mark.timeout(300)
FIRING = "2026-12-06T02:00:00+00:00"
DELIVER = f"from archival.tasks import scheduled_run; import json; print('RESULT' + json.dumps(scheduled_run(occurrence={FIRING!r})))"
COUNTS = (
    "from governance.models import ArchivalRun, RecoveryState, TableDispatch, AuditEvent; import json; "
    "print('COUNTS' + json.dumps({'runs': ArchivalRun.objects.count(), "
    "'occurrences': list(ArchivalRun.objects.values_list('occurrence', flat=True)), "
    "'states': RecoveryState.objects.count(), 'dispatch': TableDispatch.objects.count(), "
    "'repeated': AuditEvent.objects.filter(action='run.start_repeated').count()}))"
)


def result_of(out: str, tag: str) -> dict:
    return json.loads(next(line for line in out.splitlines() if line.startswith(tag))[len(tag) :])


def counts(site) -> dict:
    return result_of(site.py(COUNTS), "COUNTS")


def test_the_same_firing_delivered_twice_starts_one_run(sqlite_site):
    sqlite_site.build("--small")
    first = result_of(sqlite_site.py(DELIVER), "RESULT")
    second = result_of(sqlite_site.py(DELIVER), "RESULT")
    assert second["run_id"] == first["run_id"] and second["already_started"] and not first["already_started"]
    seen = counts(sqlite_site)
    assert seen["runs"] == 1 and seen["occurrences"] == [f"archival: weekly run @ {FIRING}"]
    assert seen["repeated"] == 1
    # A different firing is a different run.
    later = sqlite_site.py(DELIVER.replace("2026-12-06", "2026-12-13"))
    assert result_of(later, "RESULT")["run_id"] != first["run_id"]


def test_two_deliveries_at_once_start_one_run(sqlite_site):
    sqlite_site.build("--small")
    script = "import django; django.setup()\n" + DELIVER
    procs = [
        subprocess.Popen(
            [sched_fixtures.PYTHON, "-c", script],
            cwd=sched_fixtures.ROOT,
            env=sqlite_site.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [result_of(out, "RESULT") for out, _ in outs]
    assert results[0]["run_id"] == results[1]["run_id"]
    assert sorted(r["already_started"] for r in results) == [False, True]
    assert counts(sqlite_site)["runs"] == 1


def test_a_redelivery_after_the_worker_died_mid_start_puts_the_same_run_on_the_workers(sqlite_site):
    sqlite_site.build("--small")
    script = "import django; django.setup()\n" + DELIVER
    env = {**sqlite_site.env, "ARCHIVAL_FAULT": "scheduled_run_started:1"}
    killed = subprocess.run([sched_fixtures.PYTHON, "-c", script], cwd=sched_fixtures.ROOT, env=env, check=False)
    assert killed.returncode == -9
    before = counts(sqlite_site)
    assert before["runs"] == 1 and before["dispatch"] == 0  # the run committed, its dispatch rows never did
    again = result_of(sqlite_site.py(DELIVER), "RESULT")
    after = counts(sqlite_site)
    assert again["already_started"] and after["runs"] == 1
    assert after["dispatch"] == after["states"] > 0


def test_the_weekly_schedule_passes_its_firing_and_the_guard_lets_it_through(sqlite_site):
    sqlite_site.build("--small")
    out = sqlite_site.py(
        "from django_q.models import Schedule; from archival.schedules import RUN_SCHEDULE\n"
        "print('KWARG' + Schedule.objects.get(name=RUN_SCHEDULE).intended_date_kwarg)"
    )
    assert "KWARGoccurrence" in out
    from archival.task_guard import problem_with

    assert problem_with({"func": "archival.tasks.scheduled_run", "args": (), "kwargs": {"occurrence": FIRING}}) == ""
    assert "ISO" in problem_with({"func": "archival.tasks.scheduled_run", "args": (), "kwargs": {"occurrence": "x"}})
    assert problem_with({"func": "archival.tasks.scheduled_run", "args": (), "kwargs": {"cmd": "id"}})
