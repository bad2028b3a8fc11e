"""The dry run of the SQL Server path and the mssql settings.

An archival administrator reviews, before provisioning, the SQL the
procedures will run for each config: ``manage.py mssql_sql`` prints it from
the same templates the server stores, built from the demo's live catalog.
"""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from archival.demo import DemoSize, build_demo
from tests.mssql_fixtures import parse_errors

TINY = DemoSize(positions=30, contracts=10, trades=20, prices=20, generated_tables=0, generated_rows=0)
BASE_DIR = Path(__file__).resolve().parent.parent
PRINT_DEFAULT_DATABASE = (
    "import django; django.setup(); from django.conf import settings as s; "
    "d = s.DATABASES['default']; print(d['ENGINE'], d['OPTIONS']['python_driver'], d['OPTIONS']['extra_params'])"
)


@pytest.fixture
def demo_configs(db):
    build_demo(TINY, configs=True)


def dry_run(*args) -> str:
    out = StringIO()
    call_command("mssql_sql", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(databases="__all__")
class TestDryRun:
    def test_it_prints_sql_that_parses_for_every_demo_config(self, demo_configs):
        text = dry_run()
        assert text.count("-- ===== ") == 5
        assert parse_errors(text) == []

    def test_the_position_batch_is_an_ordered_keyset_move_with_explicit_columns(self, demo_configs):
        text = dry_run("--table", "SourceDB1.main.Position", "--template", "archive_batch")
        assert "FROM [SourceDB1].[dbo].[Position] AS s WITH (UPDLOCK, ROWLOCK)" in text
        assert "LEFT OUTER JOIN [SourceDB1].[dbo].[Contract] AS c ON c.[contractId] = s.[contractId]" in text
        assert (
            "s.[basketId] > @k1 OR (s.[basketId] = @k1 AND (s.[positionId] > @k2 OR "
            "(s.[positionId] = @k2 AND (s.[businessDate] > @k3))))"
        ) in text
        assert "ORDER BY s.[basketId], s.[positionId], s.[businessDate]" in text
        assert "OUTPUT deleted.[basketId], deleted.[positionId], deleted.[businessDate], deleted.[contractId]," in text
        assert "INTO [archive_sourcedb1].[Position] ([basketId]," in text
        assert "DECLARE @k3 date = CAST(JSON_VALUE(@key_after, N'$[2]') AS date);" in text
        assert parse_errors(text) == []

    def test_a_contract_waits_for_its_configured_children(self, demo_configs):
        text = dry_run("--table", "SourceDB1.main.Contract", "--template", "archive_batch")
        assert (
            "AND NOT EXISTS (SELECT 1 FROM [SourceDB1].[dbo].[Position] AS ch1 WHERE ch1.[contractId] = s.[contractId])"
        ) in text
        # Mark counts a contract whose positions all move in this run.
        marks = dry_run("--table", "SourceDB1.main.Contract", "--template", "mark_table")
        assert (
            "AND NOT EXISTS (SELECT 1 FROM [SourceDB1].[dbo].[Position] AS ch1 WHERE ch1.[contractId] = s.[contractId]"
            " AND NOT (EXISTS (SELECT 1 FROM [SourceDB1].[dbo].[Contract] AS cc1"
        ) in marks
        assert "WHERE s.[maturityDate] < @threshold" in marks

    def test_a_contract_waits_for_its_foreign_key_children(self, demo_configs):
        # Trade (DATE_BASED) references Contract by a foreign key only.
        text = dry_run("--table", "SourceDB2.main.Contract", "--template", "archive_batch")
        assert (
            "AND NOT EXISTS (SELECT 1 FROM [SourceDB2].[dbo].[Trade] AS ch1 WHERE ch1.[contractId] = s.[contractId])"
        ) in text

    def test_disposal_rechecks_contract_holds_where_the_config_names_a_contract_column(self, demo_configs):
        text = dry_run("--table", "SourceDB2.main.Trade", "--template", "dispose_batch")
        assert "h.[contract_value] = CONVERT(nvarchar(200), a.[contractId])" in text
        assert "h.[scope] = N'KEYS'" in text
        assert "k.[key_text] = CONVERT(nvarchar(4000), a.[tradeId]) COLLATE DATABASE_DEFAULT" in text
        prices = dry_run("--table", "SourceDB3.main.PriceHistory", "--template", "dispose_batch")
        assert "contract_value" not in prices
        assert (
            "CONCAT_WS(NCHAR(9), CONVERT(nvarchar(4000), a.[instrumentId]) COLLATE DATABASE_DEFAULT, "
            "CONVERT(nvarchar(10), a.[asOfDate], 23) COLLATE DATABASE_DEFAULT)"
        ) in prices

    def test_it_prints_the_dba_provisioning_call(self, demo_configs):
        text = dry_run("--table", "SourceDB3.main.PriceHistory")
        assert (
            "EXEC archival_admin.usp_provision_table @source_alias = N'SourceDB3', @source_database = N'SourceDB3', "
            "@schema_name = N'dbo', @table_name = N'PriceHistory', @archival_logic = N'DATE_BASED', "
            "@archive_schema = N'archive_sourcedb3', @date_column = N'asOfDate'"
        ) in text

    def test_an_unknown_table_is_a_user_error(self, demo_configs):
        with pytest.raises(CommandError, match=r"no active table config named SourceDB1\.main\.Nope"):
            dry_run("--table", "SourceDB1.main.Nope")


def _odbc_loads() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libodbc.so.2")
    except OSError:
        return False
    return True


# pyodbc (which mssql-django imports) needs the system's ODBC library. Skipped
# only on a machine without it and without CI set; .ci/run installs it.
@pytest.mark.skipif(
    not os.environ.get("CI") and not _odbc_loads(),
    reason="no libodbc.so.2 on this machine (apt-get install -y libodbc2 libltdl7); CI runs this test",
)
def test_an_mssql_url_selects_mssql_django_and_makemigrations_reports_no_changes(tmp_path):
    # makemigrations does not need the server: it warns that it could not
    # check the history (nothing listens on port 1) and compares models only.
    env = {
        **os.environ,
        "ARCHIVAL_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "governance.settings",
        "DATABASE_URL": "mssql://u:p@127.0.0.1:1/archival_control",
        "ARCHIVE_DATABASE_URL": "mssql://u:p@127.0.0.1:1/archival_archive",
        "MSSQL_CONNECTION_RETRIES": "0",
        "MSSQL_CONNECTION_TIMEOUT": "1",
    }
    check = subprocess.run(
        [sys.executable, "-c", PRINT_DEFAULT_DATABASE],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.stdout.split() == ["mssql", "mssql_python", "Encrypt=yes"], check.stderr
    result = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout
    # The mssql engine really was loaded (it tried to connect through mssql-python).
    assert "consistent migration history" in result.stderr


@pytest.mark.django_db(databases="__all__")
def test_the_restore_batch_is_printed_with_its_insert_back_into_the_source(demo_configs):
    text = dry_run("--table", "SourceDB2.main.Trade", "--template", "restore_batch")
    assert parse_errors(text) == []
    assert "-- restore_batch" in text and "selection shown: a KEY_RANGE" in text
    assert "INSERT INTO [SourceDB2].[dbo].[Trade] (" in text
    assert "DELETE a\nFROM [archive_sourcedb2].[Trade] AS a" in text
    # The demo tables have no identity column: no IDENTITY_INSERT.
    assert "SET IDENTITY_INSERT" not in text
