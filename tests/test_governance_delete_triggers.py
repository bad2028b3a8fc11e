"""The DELETE-refusing triggers come back after every migrate.

SQLite alters a table by rebuilding it, which drops its triggers; a later
migration touching holds or audit events would silently leave them
unprotected. The post_migrate hook (governance/apps.py) restores them.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connections, transaction

from archival.disposal.triggers import drop_triggers, trigger_name
from governance.models import AuditEvent, Hold, HoldScope

pytestmark = pytest.mark.django_db(databases=["default", "archive"])


def triggers_on(alias: str, table: str) -> list[str]:
    connection = connections[alias]
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
        elif connection.vendor == "mysql":
            cur.execute(
                "SELECT trigger_name FROM information_schema.triggers "
                "WHERE event_object_schema = DATABASE() AND event_object_table = %s",
                [table],
            )
        else:
            cur.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                [connection.ops.quote_name(table)],
            )
        return [name for (name,) in cur.fetchall()]


def a_hold() -> Hold:
    hold = Hold(
        scope=HoldScope.CONTRACT, source_db="SourceDB1", contract_value="C9", reason="Matter 3", placed_by="compliance"
    )
    hold.full_clean()
    hold.save()
    return hold


def test_migrate_restores_the_hold_triggers_a_table_rebuild_dropped():
    hold = a_hold()
    # What a later ALTER on SQLite does to the triggers of the rebuilt table.
    drop_triggers(connections["archive"], "archive")
    assert triggers_on("archive", "governance_hold") == []

    call_command("migrate", database="archive", verbosity=0)

    assert triggers_on("archive", "governance_hold") == [trigger_name("governance_hold")]
    assert triggers_on("archive", "governance_holdkey") == [trigger_name("governance_holdkey")]
    with pytest.raises(DatabaseError, match="holds are never deleted"), transaction.atomic(using="archive"):
        Hold.objects.filter(pk=hold.pk).delete()
    assert Hold.objects.filter(pk=hold.pk).exists()


def test_migrate_restores_the_audit_trigger_and_running_it_again_changes_nothing():
    event = AuditEvent.objects.record("test.event", details={"why": "trigger test"})
    drop_triggers(connections["default"], "default")
    assert triggers_on("default", "governance_auditevent") == []

    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)  # idempotent: one trigger, no error

    assert triggers_on("default", "governance_auditevent") == [trigger_name("governance_auditevent")]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()
