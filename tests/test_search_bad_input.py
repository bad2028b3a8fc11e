"""Archive search: malformed values are a 400 with a message, run no data query, and audit nothing.

Personas (tests/search_fixtures.py): a reader and an auditor (who may export).
"""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from archival.search.query import encode_cursor
from governance.models import AuditEvent
from tests.search_fixtures import SOURCE, source_schema

pytestmark = pytest.mark.django_db(databases=["default", "archive", "archive_readonly", "SourceDB1", "SourceDB2"])

HUGE = str(2**63)  # one past the largest signed 64-bit integer
HUGER = "9" * 40


def url(name: str) -> str:
    return reverse(f"search:{name}", args=[SOURCE, source_schema(SOURCE), "Position"])


def data_reads(captured) -> list[str]:
    return [q["sql"] for q in captured if '"Position"' in q["sql"] and "SELECT" in q["sql"]]


@pytest.mark.parametrize("column", ["archive_run_id", "basketId", "positionId", "contractId"])
@pytest.mark.parametrize("value", [HUGE, HUGER, "-" + HUGER])
def test_an_integer_filter_beyond_64_bits_is_a_400_with_the_limit(client, reader, position_config, column, value):
    client.force_login(reader)
    with CaptureQueriesContext(connections["archive_readonly"]) as archive_queries:
        response = client.get(url("table"), {column: value})
    assert response.status_code == 400
    assert "9223372036854775807" in response.content.decode() or "-9223372036854775808" in response.content.decode()
    assert data_reads(archive_queries.captured_queries) == []
    assert not AuditEvent.objects.filter(action="archive.search").exists()


@pytest.mark.parametrize("value", ["1e999999", "9" * 39, "0." + "0" * 38 + "1"])
def test_a_decimal_beyond_38_digits_is_a_400(client, reader, position_config, value):
    client.force_login(reader)
    response = client.get(url("table"), {"quantity__to": value})
    assert response.status_code == 400 and "38 digits" in response.content.decode()


def test_a_decimal_of_38_digits_is_searched(client, reader, position_config):
    client.force_login(reader)
    assert client.get(url("table"), {"quantity__from": "-" + "9" * 34 + ".9999"}).status_code == 200


def test_the_export_of_a_huge_integer_filter_sends_back_to_the_form_and_exports_nothing(
    client, auditor, position_config
):
    client.force_login(auditor)
    response = client.get(url("export"), {"archive_run_id": HUGE})
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Correct the filters before exporting."]
    back = client.get(response["Location"])
    assert back.status_code == 400 and "9223372036854775807" in back.content.decode()
    assert not AuditEvent.objects.filter(action="archive.export").exists()


@pytest.mark.parametrize("key", [{"basketId": HUGE}, {"positionId": HUGER}, {"basketId": "-" + HUGER}])
def test_a_row_key_beyond_64_bits_is_a_400_naming_the_column(client, reader, position_config, key):
    client.force_login(reader)
    params = {"basketId": "0", "positionId": "1", "businessDate": "2015-01-02", **key}
    response = client.get(url("row"), params)
    assert response.status_code == 400
    (column,) = key
    assert column in response.content.decode() and "out of range" in response.content.decode()
    assert not AuditEvent.objects.filter(action="archive.view_row").exists()


def test_a_cursor_carrying_a_huge_integer_is_a_400(client, reader, position_config):
    client.force_login(reader)
    cursor = encode_cursor([2**70, 1, "2015-01-02"])
    assert client.get(url("table"), {"_after": cursor}).status_code == 400
    assert client.get(url("table"), {"_before": cursor}).status_code == 400
