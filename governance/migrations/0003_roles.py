"""Create the four roles (governance.roles.ROLES) as groups.

The permission sets live in governance.roles so that this migration, the
post_migrate hook and the documentation read one definition.
"""

from django.db import migrations


def create_roles(apps, schema_editor):
    from governance.roles import sync_roles

    sync_roles(apps, using=schema_editor.connection.alias)


def remove_roles(apps, schema_editor):
    from governance.roles import ROLES

    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0002_admin"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunPython(create_roles, remove_roles, hints={"target_db": "default"}),
    ]
