"""Disposal: the archive lock row, the audit chain head (backfilled over
existing events) and the triggers that refuse DELETE on holds, hold keys and
audit events (archival.disposal.triggers)."""

from django.db import migrations


def archive_forward(apps, schema_editor):
    from archival.disposal.triggers import ensure_triggers

    ArchiveLock = apps.get_model("governance", "ArchiveLock")
    ArchiveLock.objects.using(schema_editor.connection.alias).get_or_create(name="archive")
    ensure_triggers(schema_editor.connection, "archive")


def archive_backward(apps, schema_editor):
    from archival.disposal.triggers import drop_triggers

    drop_triggers(schema_editor.connection, "archive")


def control_forward(apps, schema_editor):
    import json

    from governance.audit_chain import audit_entry_hash
    from archival.disposal.triggers import ensure_triggers

    alias = schema_editor.connection.alias
    AuditEvent = apps.get_model("governance", "AuditEvent")
    AuditChainHead = apps.get_model("governance", "AuditChainHead")
    prev, last = "", None
    # Chain the events written before this migration, in id order.
    for event in AuditEvent.objects.using(alias).order_by("id").iterator():
        event.counts = json.loads(json.dumps(event.counts or {}))
        event.prev_hash = prev
        event.entry_hash = audit_entry_hash(event)
        AuditEvent.objects.using(alias).filter(pk=event.pk).update(
            prev_hash=event.prev_hash, entry_hash=event.entry_hash
        )
        prev, last = event.entry_hash, event.pk
    AuditChainHead.objects.using(alias).update_or_create(
        name="audit", defaults={"head_hash": prev, "last_event_id": last}
    )
    ensure_triggers(schema_editor.connection, "default")


def control_backward(apps, schema_editor):
    from archival.disposal.triggers import drop_triggers

    drop_triggers(schema_editor.connection, "default")


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0004_disposal"),
    ]

    operations = [
        migrations.RunPython(archive_forward, archive_backward, hints={"target_db": "archive"}),
        migrations.RunPython(control_forward, control_backward, hints={"target_db": "default"}),
    ]
