"""Only our own tasks run on the workers (archival.task_guard, archival.tasks.REGISTRY).

Personas: an archival administrator (may edit schedules), a compliance
officer and an auditor (may read them), an outsider (staff, no role), a
superuser. Firing goes through django-q2 itself in sync mode: its scheduler
picks up the due schedule, the task is signed, run by q2's worker function and
its result saved, as on a cluster but in this process; so a foreign callable
that got through would really run (and create the marker file).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule, Task
from django_q.scheduler import scheduler
from django_q.tasks import async_task

from archival.schedules import HOLD_REVIEW_SCHEDULE
from governance.models import AuditEvent

pytestmark = pytest.mark.django_db(databases="__all__")

ADD_URL = reverse("admin:django_q_schedule_add")
PAST = timezone.now() - dt.timedelta(minutes=1)


@pytest.fixture
def q2_sync(monkeypatch, settings):
    monkeypatch.setattr(Conf, "SYNC", True)
    settings.ADMINS = [("Ops", "ops@example.com")]


@pytest.fixture
def marker(tmp_path):
    """A file the foreign command would create: its absence proves it did not run."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "the foreign callable ran"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def schedule_form(**overrides) -> dict:
    data = {
        "name": "probe",
        "func": "archival.tasks.sweep",
        "args": "",
        "kwargs": "",
        "schedule_type": Schedule.MINUTES,
        "minutes": "5",
        "cron": "",
        "repeats": "-1",
        "next_run_0": "2030-01-01",
        "next_run_1": "00:00:00",
        "cluster": "",
    }
    data.update(overrides)
    return data


def only_due(schedule: Schedule) -> None:
    """Make ``schedule`` the only one that fires on the next scheduler tick."""
    Schedule.objects.exclude(pk=schedule.pk).update(next_run=timezone.now() + dt.timedelta(days=7))
    Schedule.objects.filter(pk=schedule.pk).update(next_run=PAST)


# --- the admin ---------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"func": "os.system", "args": "'id'"}, "func"),
        ({"func": "builtins.exec", "args": "'import os'"}, "func"),
        # Ours, but not a schedulable task (the engine enqueues it with ids it wrote).
        ({"func": "archival.tasks.table_slice", "args": "1, 1"}, "func"),
        ({"args": "'id'"}, "args"),
        ({"kwargs": "q_options={'hook': 'os.system'}"}, "args"),
        ({"kwargs": "{'q_options': {'hook': 'os.system'}}"}, "args"),
        ({"args": "__import__('os').system('id')"}, "args"),
        ({"kwargs": "x=__import__('os')"}, "args"),
    ],
)
def test_an_administrator_cannot_save_a_schedule_that_runs_anything_else(personas, marker, overrides, field):
    before = Schedule.objects.count()
    response = client_for(personas["administrator"]).post(
        ADD_URL,
        schedule_form(args=f"'touch {marker}'", **overrides) if "args" not in overrides else schedule_form(**overrides),
    )
    assert response.status_code == 200  # the form again, with the error
    assert response.context["adminform"].form.errors.get(field), response.context["adminform"].form.errors
    assert Schedule.objects.count() == before
    assert not AuditEvent.objects.filter(action="schedule.added").exists()


def test_an_administrator_cannot_turn_the_weekly_run_into_os_system(personas, marker):
    schedule = Schedule.objects.get(name=HOLD_REVIEW_SCHEDULE)
    url = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    response = client_for(personas["administrator"]).post(
        url, schedule_form(name=schedule.name, func="os.system", args=f"'touch {marker}'")
    )
    assert response.status_code == 200
    assert "func" in response.context["adminform"].form.errors
    schedule.refresh_from_db()
    assert (schedule.func, schedule.args) == ("archival.tasks.hold_review_reminder", None)


def test_the_task_field_offers_only_the_schedulable_archival_tasks(personas):
    page = client_for(personas["administrator"]).get(ADD_URL)
    offered = [value for value, _ in page.context["adminform"].form.fields["func"].choices]
    assert offered == [
        "archival.tasks.scheduled_run",
        "archival.tasks.sweep",
        "archival.tasks.hold_review_reminder",
        "archival.tasks.scheduled_disposal",
    ]
    assert "hook" not in page.context["adminform"].form.fields


def test_an_administrator_schedules_one_of_our_tasks_and_it_is_audited(personas):
    response = client_for(personas["administrator"]).post(ADD_URL, schedule_form())
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    schedule = Schedule.objects.get(name="probe")
    assert (schedule.func, schedule.args, schedule.kwargs, schedule.hook) == ("archival.tasks.sweep", "", "", None)
    event = AuditEvent.objects.get(action="schedule.added")
    assert (event.actor, event.details["func"]) == ("administrator", "archival.tasks.sweep")


@pytest.mark.parametrize("persona, status", [("compliance", 403), ("auditor", 403), ("outsider", 403), ("reader", 302)])
def test_other_roles_cannot_add_or_change_a_schedule(personas, persona, status):
    schedule = Schedule.objects.get(name=HOLD_REVIEW_SCHEDULE)
    client = client_for(personas[persona])
    assert client.post(ADD_URL, schedule_form()).status_code == status
    change = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    assert client.post(change, schedule_form(name=schedule.name, func="archival.tasks.sweep")).status_code == status
    assert not Schedule.objects.filter(name="probe").exists()
    schedule.refresh_from_db()
    assert schedule.func == "archival.tasks.hold_review_reminder"


def test_saving_in_the_admin_clears_a_hook_written_behind_its_back(personas):
    schedule = Schedule.objects.get(name=HOLD_REVIEW_SCHEDULE)
    Schedule.objects.filter(pk=schedule.pk).update(hook="os.system", intended_date_kwarg="when")
    change = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    form = schedule_form(name=schedule.name, func=schedule.func, schedule_type=Schedule.CRON, cron="0 6 * * 1")
    assert client_for(personas["administrator"]).post(change, form).status_code == 302
    schedule.refresh_from_db()
    assert (schedule.hook, schedule.intended_date_kwarg, schedule.cron) == (None, None, "0 6 * * 1")


# --- when a schedule fires -----------------------------------------------------


def insert_raw_schedule(func: str, args: str, hook: str | None = None) -> Schedule:
    """A schedule written straight into the table, as a database user could."""
    table = connection.ops.quote_name(Schedule._meta.db_table)
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (name, func, hook, args, kwargs, schedule_type, repeats, next_run) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            ["raw", func, hook, args, "", Schedule.MINUTES, -1, PAST],
        )
    return Schedule.objects.get(name="raw")


def superuser_schedule(django_user_model, func: str, args: str, hook: str | None = None) -> Schedule:
    """A superuser's schedule made in a shell, past the admin's form."""
    django_user_model.objects.create_superuser("boss", "boss@example.com", "another long password 99")
    return Schedule.objects.create(
        name="boss", func=func, args=args, hook=hook, schedule_type=Schedule.MINUTES, minutes=1, next_run=PAST
    )


@pytest.mark.parametrize("made_by", ["superuser", "raw_sql"])
def test_a_foreign_schedule_does_not_run_when_it_fires_and_is_audited_and_alerted(
    q2_sync, marker, django_user_model, made_by
):
    command = f"'touch {marker}'"
    if made_by == "superuser":
        schedule = superuser_schedule(django_user_model, "os.system", command)
    else:
        schedule = insert_raw_schedule("os.system", command)
    only_due(schedule)

    scheduler()

    assert not marker.exists()
    event = AuditEvent.objects.get(action="task.refused")
    assert event.outcome == "REFUSED"
    assert event.details["func"] == "os.system"
    assert event.details["group"] == schedule.name
    assert str(marker) in event.details["args"]
    assert "not one of the archival tasks" in event.details["reason"]
    # The admins are told, and the alert itself is audited.
    assert [m.subject for m in mail.outbox] == [f"[Django] [archival] refused to run os.system ({schedule.name})"]
    assert AuditEvent.objects.filter(action="alert.sent", details__kind="task_refused", outcome="OK").count() == 1
    # What ran instead is visible as the schedule's last task.
    task = Task.objects.get()
    assert (task.func, task.result["refused"]) == ("archival.tasks.refused_task", "os.system")
    schedule.refresh_from_db()
    assert schedule.task == task.id and schedule.next_run > timezone.now()


def test_a_second_firing_is_audited_again_but_mailed_once(q2_sync, marker, django_user_model):
    schedule = superuser_schedule(django_user_model, "os.system", f"'touch {marker}'")
    only_due(schedule)
    scheduler()
    only_due(schedule)
    scheduler()
    assert AuditEvent.objects.filter(action="task.refused").count() == 2
    assert len(mail.outbox) == 1


@pytest.mark.parametrize(
    "func, args, hook",
    [
        # Our function, but a result hook is a second callable by dotted path.
        ("archival.tasks.hold_review_reminder", "", "os.system"),
        # Our function with arguments it does not take.
        ("archival.tasks.finalize_run", "'x'", None),
        ("archival.tasks.sweep", "1", None),
        # A look-alike path.
        ("archival.tasks.os.system", "'id'", None),
    ],
)
def test_our_tasks_with_a_hook_or_bad_arguments_are_refused_when_they_fire(q2_sync, func, args, hook):
    schedule = insert_raw_schedule(func, args, hook)
    only_due(schedule)
    scheduler()
    event = AuditEvent.objects.get(action="task.refused")
    assert event.details["func"] == func
    assert Task.objects.get().func == "archival.tasks.refused_task"
    assert not AuditEvent.objects.filter(action="alert.sent", details__kind="hold_review").exists()


def test_a_hook_smuggled_in_through_q_options_is_refused(q2_sync, marker):
    schedule = insert_raw_schedule("archival.tasks.hold_review_reminder", "")
    Schedule.objects.filter(pk=schedule.pk).update(kwargs="q_options={'hook': 'os.system'}")
    only_due(schedule)
    scheduler()
    assert AuditEvent.objects.get(action="task.refused").details["hook"] == "os.system"
    assert Task.objects.get().func == "archival.tasks.refused_task"


def test_a_foreign_task_enqueued_directly_is_refused(q2_sync, marker):
    # The path the admin's "resubmit" action and any other caller of async_task take.
    async_task("os.system", f"touch {marker}")
    assert not marker.exists()
    assert AuditEvent.objects.get(action="task.refused").details["func"] == "os.system"


def test_our_registered_tasks_still_run_when_they_fire(q2_sync):
    schedule = Schedule.objects.get(name=HOLD_REVIEW_SCHEDULE)
    only_due(schedule)
    scheduler()
    task = Task.objects.get()
    assert (task.func, task.success, task.result) == (
        "archival.tasks.hold_review_reminder",
        True,
        {"due": 0, "sent_to": []},
    )
    assert not AuditEvent.objects.filter(action="task.refused").exists()


def test_the_engine_s_own_tasks_pass_the_check():
    from archival.task_guard import problem_with

    assert problem_with({"func": "archival.tasks.table_slice", "args": (3, 1), "kwargs": {}}) == ""
    assert problem_with({"func": "archival.tasks.table_slice", "args": (3, 0), "kwargs": {}}) == ""
    assert problem_with({"func": "archival.tasks.finalize_run", "args": (3,), "kwargs": {}}) == ""
    assert problem_with({"func": "archival.tasks.dispose_slice", "args": (), "kwargs": {"failed": [4, 5]}}) == ""
    selection = {"failed": [], "batches": [4, 5], "actor": "planner"}
    assert problem_with({"func": "archival.tasks.dispose_slice", "args": (), "kwargs": selection}) == ""
    assert problem_with({"func": "archival.tasks.dispose_slice", "args": (), "kwargs": {"batches": "4,5"}})
    assert problem_with({"func": "archival.tasks.dispose_slice", "args": (), "kwargs": {"actor": ""}})
    assert problem_with({"func": "archival.tasks.table_slice", "args": (True, 1), "kwargs": {}})


def test_a_superuser_gets_the_same_choice_in_the_admin(django_user_model, marker):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "another long password 99")
    response = client_for(boss).post(ADD_URL, schedule_form(func="os.system", args=f"'touch {marker}'"))
    assert response.status_code == 200
    assert "func" in response.context["adminform"].form.errors
    assert not Schedule.objects.filter(name="probe").exists()
