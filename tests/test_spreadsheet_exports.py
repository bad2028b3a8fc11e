"""Every export writes cells a spreadsheet will not run (governance.spreadsheet, OWASP "CSV injection").

Each export path (audit trail, archive search, disposal certificates, table
configs in CSV and XLSX) gets text starting with each character a spreadsheet
reads as the start of a formula, tab and carriage return included, and must
hand it back as text: a leading apostrophe, the rest of the value intact.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import openpyxl
import pytest
from django.test import Client
from django.urls import reverse

from archival.search.export import csv_lines
from governance.models import AuditEvent, DisposalCertificate, TableConfig
from governance.spreadsheet import SafeCSV, SafeXLSX, escape_cell
from tests.admin_fixtures import make_config

pytestmark = pytest.mark.django_db(databases="__all__")

# What OWASP lists (= + - @ tab CR), what defusedcsv adds (| %), and a DDE payload.
DANGEROUS = [
    "=1+1",
    "+1+1",
    "-1+1",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "%0A=1+1",
    "=cmd|' /C calc'!A0",
]


def escaped(value: str) -> str:
    """What a dangerous value must read as in an export."""
    return "'" + value.replace("|", "\\|")


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def streamed(response) -> str:
    assert response.status_code == 200, response.status_code
    return b"".join(response.streaming_content).decode()


@pytest.mark.parametrize("value", DANGEROUS)
def test_a_cell_that_starts_a_formula_becomes_text(value):
    assert escape_cell(value) == escaped(value)


@pytest.mark.parametrize("value", ["-5", "-1,000.50", "0.5", "plain text", "a=b", "", "'=already"])
def test_numbers_and_harmless_text_are_left_alone(value):
    assert escape_cell(value) == value


def test_numbers_from_the_database_stay_numbers():
    assert escape_cell(-5) == -5 and escape_cell(Decimal("-2.50")) == Decimal("-2.50") and escape_cell(None) is None


def test_the_audit_export_escapes_every_dangerous_cell(personas):
    for value in DANGEROUS:
        AuditEvent.objects.record("probe.csv", actor=value, table_label=value, details={"note": value})
    client = Client()
    client.force_login(personas["auditor"])
    text = streamed(client.get(reverse("admin:governance_auditevent_export"), {"action__exact": "probe.csv"}))
    rows = read_csv(text)
    header, body = rows[0], rows[1:]
    actors = [dict(zip(header, row, strict=True))["actor"] for row in body]
    labels = [dict(zip(header, row, strict=True))["table_label"] for row in body]
    assert sorted(actors) == sorted(escaped(v) for v in DANGEROUS)
    assert sorted(labels) == sorted(escaped(v) for v in DANGEROUS)
    # Every cell quoted (OWASP): a separator inside a value cannot open a new cell.
    assert text.startswith('"id","occurred_at"')


def test_the_search_export_escapes_every_dangerous_cell():
    # The search service streams csv_lines(header, rows) of the rows it read (archival.search.service).
    rows = [(i, value, Decimal("-3.5"), dt.date(2020, 1, 2)) for i, value in enumerate(DANGEROUS)]
    body = read_csv("".join(csv_lines(["id", "=book", "quantity", "asOfDate"], rows)))
    assert body[0] == ["id", "'=book", "quantity", "asOfDate"]
    assert [r[1] for r in body[1:]] == [escaped(v) for v in DANGEROUS]
    assert {r[2] for r in body[1:]} == {"-3.5"}  # a negative number is data
    assert {r[3] for r in body[1:]} == {"2020-01-02"}


def certificate(value: str, n: int) -> DisposalCertificate:
    return DisposalCertificate.objects.create(
        batch_id=n,
        config_id=1,
        table_label=value,
        key_columns=["id"],
        key_low=[1],
        key_high=[2],
        planned_count=2,
        row_count=2,
        held_count=0,
        digest="0" * 64,
        disposable_before=dt.date(2026, 1, 1),
        approvals=[],
        holds_checked=[],
        planned_by=value,
        executed_by="administrator",
    )


def test_the_certificate_export_escapes_every_dangerous_cell(personas):
    certificates = [certificate(value, n) for n, value in enumerate(DANGEROUS, start=1)]
    client = Client()
    client.force_login(personas["auditor"])
    response = client.post(
        reverse("admin:governance_disposalcertificate_changelist"),
        {"action": "export_csv", "_selected_action": [c.pk for c in certificates]},
    )
    rows = read_csv(streamed(response))
    header, body = rows[0], rows[1:]
    records = [dict(zip(header, row, strict=True)) for row in body]
    assert [r["table_label"] for r in records] == [escaped(v) for v in DANGEROUS]
    assert [r["planned_by"] for r in records] == [escaped(v) for v in DANGEROUS]


def export_configs(client: Client, file_format: int) -> bytes:
    fields = ("source_db", "table_name", "execution_priority", "months_retention_source")
    data = {"format": str(file_format), "resource": "0", **{f"tableconfigresource_{f}": "on" for f in fields}}
    response = client.post(reverse("admin:governance_tableconfig_export"), data)
    assert response.status_code == 200, response.content[:500]
    return response.content


@pytest.mark.parametrize("file_format", ["csv", "xlsx"])
def test_the_config_export_escapes_every_dangerous_cell(personas, source_table, file_format):
    for n, value in enumerate(DANGEROUS):
        config = make_config(table_name=source_table, execution_priority=n + 1)
        # Stored past the form's schema check, as a database write could.
        TableConfig.objects.filter(pk=config.pk).update(table_name=value)
    client = Client()
    client.force_login(personas["administrator"])
    content = export_configs(client, {"csv": 0, "xlsx": 1}[file_format])
    if file_format == "csv":
        rows = read_csv(content.decode())
        assert content.startswith(b'"')
    else:
        sheet = openpyxl.load_workbook(io.BytesIO(content)).active
        rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
        # openpyxl marks a formula cell "f": none may be one.
        assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)
    header, body = rows[0], rows[1:]
    names = [dict(zip(header, row, strict=True))["table_name"] for row in body]
    expected = [escaped(v) for v in DANGEROUS]
    if file_format == "xlsx":
        # XLSX is XML, whose parsers read a carriage return as a line feed.
        expected = [e.replace("\r", "\n") for e in expected]
    assert sorted(names) == sorted(expected)


def test_the_admin_offers_only_the_escaping_formats():
    from django.contrib import admin

    assert admin.site._registry[TableConfig].formats == [SafeCSV, SafeXLSX]
