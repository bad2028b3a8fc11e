"""Create the weekly disposal schedule (archival.schedules.DISPOSAL_SCHEDULE).

Idempotent like 0006_sched_schedules: ``ensure_schedules`` creates only the
schedules that are missing and keeps the others as the admin edited them.
"""

from django.db import migrations


def create(apps, schema_editor):
    from archival.schedules import ensure_schedules

    Schedule = apps.get_model("django_q", "Schedule")
    ensure_schedules(Schedule.objects.db_manager(schema_editor.connection.alias).model)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0008_disposal_held_in_range"),
    ]

    operations = [
        # Kept when migrating backwards, like the other schedules (an admin may have edited it).
        migrations.RunPython(create, migrations.RunPython.noop, hints={"target_db": "default"}),
    ]
