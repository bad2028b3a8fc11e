"""Retry classification, the stop flag, /healthz and alerts, against real databases.

No mocks: the transient errors are produced by a real SQLite lock and a real
PostgreSQL deadlock.
"""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from archival import retry, stopping


def test_a_real_sqlite_lock_is_transient_and_a_constraint_violation_is_not(tmp_path):
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("BEGIN IMMEDIATE")
    holder.execute("ROLLBACK")
    with pytest.raises(sqlite3.IntegrityError) as dup:
        other.execute("INSERT INTO t VALUES (1)")
    assert retry.is_transient(locked.value)
    assert not retry.is_transient(dup.value)


def test_retry_transient_repeats_a_locked_write_until_the_lock_is_gone(tmp_path):
    path = tmp_path / "busy.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.execute("BEGIN IMMEDIATE")
    writer = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    calls = []

    def write():
        calls.append(1)
        writer.execute("INSERT INTO t VALUES (?)", (len(calls),))

    def release_after_first_retry(attempt, exc, delay):
        holder.execute("COMMIT")

    retry.retry_transient(write, attempts=3, base_delay=0.01, on_retry=release_after_first_retry)
    assert len(calls) == 2
    assert writer.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def test_a_permanent_error_is_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("not a database error")

    with pytest.raises(ValueError):
        retry.retry_transient(broken, attempts=5, base_delay=0.01)
    assert calls == [1]


def test_a_real_postgresql_deadlock_is_transient():
    psycopg = pytest.importorskip("psycopg")
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        a = psycopg.connect(url, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    b = psycopg.connect(url)
    name = f"sched_deadlock_{os.getpid()}"
    a.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (id int)")  # harmless per-session, proves the link
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE IF NOT EXISTS {name} (id int primary key, v int)")
        setup.execute(f"INSERT INTO {name} VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING")
    errors = []
    try:
        a.execute(f"UPDATE public.{name} SET v = v + 1 WHERE id = 1")
        b.execute(f"UPDATE public.{name} SET v = v + 1 WHERE id = 2")

        def cross():
            try:
                b.execute(f"UPDATE public.{name} SET v = v + 1 WHERE id = 1")
            except psycopg.Error as exc:
                errors.append(exc)

        t = threading.Thread(target=cross)
        t.start()
        try:
            a.execute(f"UPDATE public.{name} SET v = v + 1 WHERE id = 2")
        except psycopg.Error as exc:
            errors.append(exc)
        t.join(30)
    finally:
        a.rollback()
        b.rollback()
        a.close()
        b.close()
        with psycopg.connect(url, autocommit=True) as setup:
            setup.execute(f"DROP TABLE IF EXISTS public.{name}")
    assert errors, "no deadlock happened"
    assert all(retry.is_transient(e) for e in errors)
    assert errors[0].sqlstate == "40P01"


def test_sigterm_in_a_worker_raises_the_stop_flag_and_a_second_one_is_not_swallowed():
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    stopping._state["installed_in_pid"] = None
    try:
        assert stopping.install_sigterm_handler()
        assert not stopping.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopping.stop_requested() and stopping.stop_reason() == "SIGTERM"
        assert not stopping.install_sigterm_handler()  # once per process
    finally:
        stopping.clear()
        stopping._state["installed_in_pid"] = None
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.django_db
def test_healthz_answers_an_outsider_without_login_and_gives_away_no_data(client, workers_running):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "up",
        "components": {"web": "up", "control_database": "up", "workers": "up"},
        "last_run_age_seconds": None,
    }
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_status_check_turns_critical_when_no_cluster_moves_the_sweeper(workers_running):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from archival.monitoring import CRITICAL, WARNING, health_check
    from archival.schedules import SWEEP_SCHEDULE

    assert health_check().code == WARNING  # no run has finished yet
    Schedule.objects.filter(name=SWEEP_SCHEDULE).update(next_run=timezone.now() - timedelta(minutes=30))
    check = health_check()
    assert check.code == CRITICAL
    assert any("no worker cluster is running" in m for m in check.messages)


@pytest.mark.django_db(databases=["default", "archive"])
def test_an_archival_administrator_sees_the_scheduler_page_and_an_outsider_is_refused(client, django_user_model):
    from django.contrib.auth.models import Permission

    from governance.models import AuditEvent, SchedulerSettings

    outsider = django_user_model.objects.create_user("outsider", password="x" * 16, is_staff=True)
    admin_user = django_user_model.objects.create_user("administrator", password="x" * 16, is_staff=True)
    admin_user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=[
                "view_schedulersettings",
                "change_schedulersettings",
                "start_run",
                "pause_scheduler",
            ]
        )
    )
    changelist = "/admin/governance/schedulersettings/"
    settings_pk = SchedulerSettings.objects.current().pk

    def act(action: str, confirm: bool = True):
        data = {"action": action, "_selected_action": [str(settings_pk)], **({"post": "yes"} if confirm else {})}
        return client.post(changelist, data, follow=True)

    client.force_login(outsider)
    assert client.get(changelist).status_code == 403
    assert client.post(changelist, {"action": "run_now", "_selected_action": [str(settings_pk)]}).status_code == 403
    client.force_login(admin_user)
    page = client.get(changelist, follow=True)
    assert page.status_code == 200 and b"Run now" in page.content
    confirmation = act("pause_scheduler", confirm=False)
    assert confirmation.status_code == 200 and b'name="post" value="yes"' in confirmation.content
    assert not SchedulerSettings.objects.current().paused
    act("pause_scheduler")

    assert SchedulerSettings.objects.current().paused
    assert AuditEvent.objects.filter(action="scheduler.paused", actor="administrator").exists()
    refused = act("run_now")
    assert b"the scheduler is paused" in refused.content
