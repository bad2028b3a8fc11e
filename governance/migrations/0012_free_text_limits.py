"""Free text people type is limited to 4,000 characters (governance.models.text).

Rows already longer (reasons of 100,000 characters were saved before the
limit) are cut before the CHECK constraints go in, with a note; their full
text stays in the audit trail, which recorded every reason and comment when
it was written (hold.placed, hold.released, disposal.approved/rejected,
retention.*).
"""

import django.core.validators
import django.db.models.functions.text
import django.db.models.lookups
from django.conf import settings
from django.db import migrations, models

LIMIT = 4000
NOTE = " [cut to 4,000 characters by migration 0012; the full text is in the audit trail]"
# (model, field) typed by people.
FREE_TEXT = (
    ("hold", "reason"),
    ("hold", "release_reason"),
    ("disposalapproval", "comment"),
    ("retentionchange", "reason"),
    ("retentionchange", "comment"),
)


def cut_overlong_text(apps, schema_editor):
    from django.db import router
    from django.db.models.functions import Length

    alias = schema_editor.connection.alias
    for model_name, field in FREE_TEXT:
        model = apps.get_model("governance", model_name)
        if not router.allow_migrate_model(alias, model):
            continue
        rows = model.objects.using(alias).annotate(n=Length(field)).filter(n__gt=LIMIT)
        for pk, text in rows.values_list("pk", field):
            model.objects.using(alias).filter(pk=pk).update(**{field: text[: LIMIT - len(NOTE)] + NOTE})


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0011_dispatch_position_help"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="disposalapproval",
            name="comment",
            field=models.TextField(
                help_text="Why (required for both decisions).",
                max_length=4000,
                validators=[django.core.validators.MaxLengthValidator(4000)],
            ),
        ),
        migrations.AlterField(
            model_name="hold",
            name="reason",
            field=models.TextField(
                help_text="Why the rows are held (matter, regulator, ticket).",
                max_length=4000,
                validators=[django.core.validators.MaxLengthValidator(4000)],
            ),
        ),
        migrations.AlterField(
            model_name="hold",
            name="release_reason",
            field=models.TextField(
                blank=True,
                help_text="Why the hold was released.",
                max_length=4000,
                validators=[django.core.validators.MaxLengthValidator(4000)],
            ),
        ),
        migrations.AlterField(
            model_name="retentionchange",
            name="comment",
            field=models.TextField(
                blank=True,
                help_text="The decider's comment.",
                max_length=4000,
                validators=[django.core.validators.MaxLengthValidator(4000)],
            ),
        ),
        migrations.AlterField(
            model_name="retentionchange",
            name="reason",
            field=models.TextField(
                help_text="Why the retention changes (policy, regulation).",
                max_length=4000,
                validators=[django.core.validators.MaxLengthValidator(4000)],
            ),
        ),
        # Holds live in the archive database, reviews in the control database.
        migrations.RunPython(cut_overlong_text, migrations.RunPython.noop, hints={"target_db": "archive"}),
        migrations.RunPython(cut_overlong_text, migrations.RunPython.noop, hints={"target_db": "default"}),
        migrations.AddConstraint(
            model_name="disposalapproval",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.LessThanOrEqual(
                    django.db.models.functions.text.Length("comment"), 4000
                ),
                name="disposalapproval_comment_max_length",
                violation_error_message="comment is limited to 4000 characters.",
            ),
        ),
        migrations.AddConstraint(
            model_name="hold",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.LessThanOrEqual(
                    django.db.models.functions.text.Length("reason"), 4000
                ),
                name="hold_reason_max_length",
                violation_error_message="reason is limited to 4000 characters.",
            ),
        ),
        migrations.AddConstraint(
            model_name="hold",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.LessThanOrEqual(
                    django.db.models.functions.text.Length("release_reason"), 4000
                ),
                name="hold_release_reason_max_length",
                violation_error_message="release_reason is limited to 4000 characters.",
            ),
        ),
        migrations.AddConstraint(
            model_name="retentionchange",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.LessThanOrEqual(
                    django.db.models.functions.text.Length("reason"), 4000
                ),
                name="retentionchange_reason_max_length",
                violation_error_message="reason is limited to 4000 characters.",
            ),
        ),
        migrations.AddConstraint(
            model_name="retentionchange",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.LessThanOrEqual(
                    django.db.models.functions.text.Length("comment"), 4000
                ),
                name="retentionchange_comment_max_length",
                violation_error_message="comment is limited to 4000 characters.",
            ),
        ),
    ]
