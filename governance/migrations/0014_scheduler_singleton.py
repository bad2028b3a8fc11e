"""The scheduler settings stay one row without a CHECK on the primary key, which MariaDB refuses.

0005_sched no longer creates ``schedulersettings_singleton`` (CHECK pk = 1);
databases migrated before that change still have it, and this migration
drops it where it exists. One row is now kept by a unique column that can
only be true.
"""

from django.db import migrations, models

OLD_CHECK = "schedulersettings_singleton"


def drop_old_check(apps, schema_editor):
    model = apps.get_model("governance", "SchedulerSettings")
    table = model._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        existing = schema_editor.connection.introspection.get_constraints(cursor, table)
    if OLD_CHECK in existing:
        schema_editor.remove_constraint(model, models.CheckConstraint(condition=models.Q(pk=1), name=OLD_CHECK))


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0013_run_occurrence"),
    ]

    operations = [
        migrations.RunPython(drop_old_check, migrations.RunPython.noop),
        migrations.AddField(
            model_name="schedulersettings",
            name="singleton",
            field=models.BooleanField(default=True, editable=False, help_text="Always true: one row.", unique=True),
        ),
        migrations.AddConstraint(
            model_name="schedulersettings",
            constraint=models.CheckConstraint(condition=models.Q(singleton=True), name="schedulersettings_one_row"),
        ),
    ]
