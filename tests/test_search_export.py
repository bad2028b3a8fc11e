"""CSV export of a search: streamed in keyset batches, formula-escaped, capped, audited."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from archival.search import service
from governance.models import AuditEvent
from tests.search_fixtures import CONTRACTS, FORMULA_BOOK, FORMULA_TRADER, POSITIONS, SOURCE, source_schema

pytestmark = pytest.mark.django_db(databases=["default", "archive", "archive_readonly", "SourceDB1"])


def export_url() -> str:
    return reverse("search:export", args=[SOURCE, source_schema(SOURCE), "Position"])


def read_csv(response) -> list[list[str]]:
    assert response.streaming
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_an_auditor_exports_the_filtered_rows_as_csv(client, auditor, position_config):
    client.force_login(auditor)
    response = client.get(export_url(), {"contractId": 6})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    header, body = rows[0], rows[1:]
    assert header[:4] == ["basketId", "positionId", "businessDate", "contractId"]
    assert header[-4:] == ["archived_at", "archive_run_id", "reference_date", "retention_until"]
    assert len(body) == POSITIONS // CONTRACTS
    assert {r[3] for r in body} == {"6"}
    event = AuditEvent.objects.get(action="archive.export")
    assert (event.actor, event.outcome, event.counts["rows"]) == ("auditor", "OK", POSITIONS // CONTRACTS)
    assert event.table_label == position_config.label
    assert {"column": "contractId", "op": "=", "value": "6"} in event.details["filters"]


def test_cells_that_a_spreadsheet_would_run_as_formulas_are_escaped(client, auditor, position_config):
    client.force_login(auditor)
    body = read_csv(client.get(export_url(), {"contractId": 6, "basketId": 0, "positionId": 5}))[1:]
    assert len(body) == 1
    header = read_csv(client.get(export_url(), {"contractId": 6, "basketId": 0, "positionId": 5}))[0]
    row = dict(zip(header, body[0], strict=True))
    assert row["book"] == "'" + FORMULA_BOOK
    assert row["trader"] == "'" + FORMULA_TRADER
    # A negative number from a numeric column is data, not a formula.
    assert row["quantity"].startswith("-") and float(row["quantity"]) < 0


def test_the_export_reads_in_keyset_batches_never_offset(client, auditor, position_config, monkeypatch):
    monkeypatch.setattr(service, "EXPORT_BATCH_ROWS", 100)
    client.force_login(auditor)
    with CaptureQueriesContext(connections["archive_readonly"]) as queries:
        rows = read_csv(client.get(export_url()))
    assert len(rows) == POSITIONS + 1
    assert len({tuple(r[:3]) for r in rows[1:]}) == POSITIONS
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('SELECT "basketId"')]
    # 600 rows in batches of 100: six full batches and one empty read to find the end.
    assert len(selects) == 7
    assert all("OFFSET" not in sql.upper() for sql in selects)


def test_an_export_over_the_cap_stops_with_a_clear_message(client, auditor, position_config, settings):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "EXPORT_MAX_ROWS": 50}
    client.force_login(auditor)
    response = client.get(export_url())
    assert response.status_code == 200 and not response.streaming
    text = response.content.decode()
    assert "matches more than 50 rows" in text
    assert "_accept_cap=1" in text
    event = AuditEvent.objects.get(action="archive.export")
    assert (event.outcome, event.counts["rows"], event.counts["cap"]) == ("OVER_CAP", 0, 50)


def test_an_accepted_capped_export_sends_exactly_the_cap_and_says_so(client, auditor, position_config, settings):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "EXPORT_MAX_ROWS": 50}
    client.force_login(auditor)
    response = client.get(export_url(), {"_accept_cap": "1"})
    rows = read_csv(response)
    assert len(rows) == 51
    assert response["X-Export-Capped"] == "1"
    assert "first-50" in response["Content-Disposition"]
    event = AuditEvent.objects.get(action="archive.export")
    assert (event.outcome, event.counts["rows"], event.counts["capped"]) == ("OK", 50, True)


def test_an_export_within_the_cap_is_not_marked_capped(client, auditor, position_config, settings):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "EXPORT_MAX_ROWS": POSITIONS}
    client.force_login(auditor)
    response = client.get(export_url())
    assert len(read_csv(response)) == POSITIONS + 1
    assert "X-Export-Capped" not in response


def test_a_broken_cap_setting_fails_closed(client, auditor, position_config, settings):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "EXPORT_MAX_ROWS": -1}
    client.force_login(auditor)
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        client.get(export_url())
