"""Create the archival schedules (weekly run, sweeper, hold review reminder) and the scheduler settings row.

Idempotent: a schedule the admin already edited is kept as it is. The same
code runs from ``manage.py schedule_archival``.
"""

from django.db import migrations


def create(apps, schema_editor):
    from archival.schedules import ensure_schedules

    Schedule = apps.get_model("django_q", "Schedule")
    SchedulerSettings = apps.get_model("governance", "SchedulerSettings")
    ensure_schedules(Schedule.objects.db_manager(schema_editor.connection.alias).model)
    SchedulerSettings.objects.using(schema_editor.connection.alias).get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0005_sched"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        # Schedules are kept on purpose when migrating backwards: they may carry an admin's edits.
        migrations.RunPython(
            create, migrations.RunPython.noop, hints={"target_db": "default"}
        ),
    ]
