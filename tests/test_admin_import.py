"""Bulk onboarding of table configs: CSV import with preview, then confirm."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from archival.demo import DemoSize, build_demo, source_schema
from governance.models import TableConfig
from tests.admin_fixtures import SAMPLE_CONFIGS_CSV, confirm, sample_csv, upload

pytestmark = pytest.mark.django_db(databases="__all__")

TINY = DemoSize(positions=50, contracts=10, trades=20, prices=20, generated_tables=0, generated_rows=0)


@pytest.fixture
def demo_sources():
    build_demo(TINY, configs=False)


def label(alias: str, table: str) -> str:
    return f"{alias}.{source_schema(alias)}.{table}"


def test_importing_the_sample_csv_onboards_the_demo_tables(personas, demo_sources):
    client = Client()
    client.force_login(personas["administrator"])
    preview = upload(client, sample_csv())
    assert preview.status_code == 200
    assert not preview.context["result"].has_validation_errors(), preview.content.decode()[:3000]
    # The preview changes nothing.
    assert TableConfig.objects.count() == 0
    done = confirm(client, preview)
    assert done.status_code == 302
    labels = {str(c) for c in TableConfig.objects.all()}
    assert labels == {
        label("SourceDB1", "Position"),
        label("SourceDB1", "Contract"),
        label("SourceDB2", "Trade"),
        label("SourceDB2", "Contract"),
        label("SourceDB3", "PriceHistory"),
    }
    position = TableConfig.objects.get(table_name="Position")
    # clean() filled the key from the live schema.
    assert position.pk_columns == ["basketId", "positionId", "businessDate"]
    assert position.history.count() == 1


def test_a_csv_with_one_bad_row_shows_its_error_and_imports_nothing(personas, demo_sources):
    client = Client()
    client.force_login(personas["administrator"])
    lines = sample_csv().decode().splitlines()
    # The third data row names a date column that does not exist.
    lines[3] = lines[3].replace("settlementDate", "settledOn")
    preview = upload(client, ("\n".join(lines) + "\n").encode())
    assert preview.status_code == 200
    result = preview.context["result"]
    assert result.has_validation_errors()
    bad = result.invalid_rows
    assert [row.number for row in bad] == [3]
    assert "settledOn" in str(bad[0].error_dict)
    assert "settledOn" in preview.content.decode()
    # No confirm button is offered and nothing was written.
    assert 'name="import_file_name"' not in preview.content.decode()
    assert TableConfig.objects.count() == 0


def test_a_failed_row_shows_each_error_beside_its_value(personas, demo_sources):
    client = Client()
    client.force_login(personas["administrator"])
    lines = sample_csv().decode().splitlines()
    lines[3] = lines[3].replace("settlementDate", "settledOn")
    html = upload(client, ("\n".join(lines) + "\n").encode()).content.decode()
    row = html[html.index('id="import-row-3"') :]
    row = row[: row.index("</div>")]
    errors = row[: row.index("<details>")]
    # The failing column, the value from the file and the error, in one table row.
    cells = re.search(
        r'<tr><th scope="row">([^<]+)</th><td class="value">([^<]*)</td><td class="error">([^<]+)</td>', errors
    )
    assert cells is not None, errors
    column, value, error = cells.groups()
    assert (column, value) == ("date_column", "settledOn")
    assert "settledOn" in error
    # The row's other values are there, folded.
    assert '<th scope="row">table_name</th><td class="value">Trade</td>' in row.split("<details>")[1]


def test_a_compliance_officer_may_not_import(personas, demo_sources):
    client = Client()
    client.force_login(personas["compliance"])
    assert upload(client, SAMPLE_CONFIGS_CSV.read_bytes()).status_code == 403
    assert TableConfig.objects.count() == 0


def test_saving_a_config_in_the_admin_shows_schema_errors_on_the_field(personas, demo_sources):
    client = Client()
    client.force_login(personas["administrator"])
    response = client.post(
        reverse("admin:governance_tableconfig_add"),
        {
            "source_db": "SourceDB3",
            "schema_name": source_schema("SourceDB3"),
            "table_name": "PriceHistory",
            "table_type": "REFERENCE",
            "archival_logic": "DATE_BASED",
            "date_column": "noSuchColumn",
            "execution_priority": "50",
            "is_active": "on",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "date_column" in errors and "noSuchColumn" in str(errors["date_column"])
    assert TableConfig.objects.count() == 0


def test_the_preview_action_runs_the_dry_run_plan_and_changes_nothing(personas, demo_sources):
    build_demo(TINY, configs=True)
    client = Client()
    client.force_login(personas["auditor"])
    ids = list(TableConfig.objects.filter(table_name__in=["Trade", "PriceHistory"]).values_list("pk", flat=True))
    response = client.post(
        reverse("admin:governance_tableconfig_changelist"), {"action": "preview_plan", "_selected_action": ids}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert label("SourceDB2", "Trade") in page and label("SourceDB3", "PriceHistory") in page
    assert response.context["result"].eligible >= 0
    from governance.models import ArchivalRun

    assert not ArchivalRun.objects.exists()
