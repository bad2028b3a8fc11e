"""The audit trail in the admin: read-only for everyone, CSV export streamed and escaped."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse

from governance.admin.audit import iter_audit_csv
from governance.models import AuditEvent

pytestmark = pytest.mark.django_db(databases="__all__")


def test_an_auditor_exports_the_filtered_trail_with_formulas_escaped(personas):
    AuditEvent.objects.record("hold.placed", actor='=HYPERLINK("http://evil")', table_label="SourceDB1.main.Trade")
    AuditEvent.objects.record("hold.placed", actor="+cmd", table_label="@SUM(A1)")
    AuditEvent.objects.record("run.started", actor="-1", table_label="SourceDB2.main.Trade")
    client = Client()
    client.force_login(personas["auditor"])
    response = client.get(reverse("admin:governance_auditevent_export"), {"action__exact": "hold.placed"})
    assert response.status_code == 200 and response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["id", "occurred_at", "actor", "action"]
    body = rows[1:]
    assert [r[3] for r in body] == ["hold.placed", "hold.placed"]
    assert [r[2] for r in body] == ['\'=HYPERLINK("http://evil")', "'+cmd"]
    assert body[1][9] == "'@SUM(A1)"
    # The export itself is audited.
    assert AuditEvent.objects.filter(action="audit.exported", actor="auditor").exists()


@pytest.mark.parametrize("persona", ["compliance", "administrator", "outsider"])
def test_staff_without_the_export_permission_get_403(personas, persona):
    client = Client()
    client.force_login(personas[persona])
    assert client.get(reverse("admin:governance_auditevent_export")).status_code == 403


def test_the_export_reads_in_keyset_pages_in_id_order(personas, django_assert_max_num_queries):
    for i in range(7):
        AuditEvent.objects.record("batch.moved", actor="worker", counts={"rows": i})
    # 7 rows in pages of 3: pages of 3, 3, 1 and the empty page that ends it.
    with django_assert_max_num_queries(4):
        lines = list(iter_audit_csv(AuditEvent.objects.all(), page_size=3))
    ids = [int(row[0]) for row in csv.reader(io.StringIO("".join(lines[1:])))]
    assert ids == sorted(ids) and len(ids) == 7


def test_nobody_adds_changes_or_deletes_events_superusers_included(personas, django_user_model):
    event = AuditEvent.objects.record("config.changed", actor="someone")
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "another long password 99")
    client = Client()
    client.force_login(boss)
    assert client.get(reverse("admin:governance_auditevent_add")).status_code == 403
    assert client.get(reverse("admin:governance_auditevent_delete", args=[event.pk])).status_code == 403
    page = client.post(reverse("admin:governance_auditevent_change", args=[event.pk]), {"actor": "forged"})
    assert page.status_code == 403
    event.refresh_from_db()
    assert event.actor == "someone"
