"""A run remembers the schedule firing that started it, so a redelivered firing starts no second run.

The weekly run schedule passes its intended instant (django-q2's
``intended_date_kwarg``) from now on; ``ensure_schedules`` sets it on an
existing schedule and keeps the rest as the admin edited it.
"""

from django.db import migrations, models


def pass_occurrence(apps, schema_editor):
    from archival.schedules import ensure_schedules

    Schedule = apps.get_model("django_q", "Schedule")
    ensure_schedules(Schedule.objects.db_manager(schema_editor.connection.alias).model)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0012_free_text_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="archivalrun",
            name="occurrence",
            field=models.CharField(
                blank=True,
                help_text="The schedule firing that started this run (schedule @ intended time); empty when started by hand.",
                max_length=200,
                null=True,
                unique=True,
            ),
        ),
        migrations.RunPython(pass_occurrence, migrations.RunPython.noop, hints={"target_db": "default"}),
    ]
