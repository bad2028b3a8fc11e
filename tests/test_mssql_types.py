"""SQL Server column types in the archive, and names QUOTENAME cannot take.

The archive copies each source column with ``DELETE ... OUTPUT deleted.<c>
INTO`` the archive table; the OUTPUT clause puts no limit on column types
(its limits are on the target: triggers, foreign keys, CHECK constraints,
https://learn.microsoft.com/sql/t-sql/queries/output-clause-transact-sql),
but a rowversion column cannot be inserted into: the archive keeps its value
as binary(8), the documented equivalent of a non-nullable rowversion
(https://learn.microsoft.com/sql/t-sql/data-types/rowversion-transact-sql).
QUOTENAME returns NULL above 128 characters
(https://learn.microsoft.com/sql/t-sql/functions/quotename-transact-sql).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.db import connections

from archival.backends import Column
from archival.backends.mssql.sqltypes import type_sql
from archival.engine.archive_tables import _alter_statements
from governance.models import TableConfig
from tests.mssql_fixtures import backend_answering

# sys.columns + sys.types rows: name, type name, max_length, precision, scale, is_nullable
OPERATIONAL_TABLE = [
    ("id", "int", 4, 10, 0, 0),
    ("row_version", "timestamp", 8, 0, 0, 0),
    ("attribute", "sql_variant", 8016, 0, 0, 1),
    ("node", "hierarchyid", 892, 0, 0, 1),
    ("site", "geography", -1, 0, 0, 1),
    ("outline", "geometry", -1, 0, 0, 1),
]


@pytest.mark.parametrize(
    ("type_name", "max_length", "archived_as"),
    [
        ("timestamp", 8, "binary(8)"),
        ("rowversion", 8, "binary(8)"),
        ("sql_variant", 8016, "sql_variant"),
        ("hierarchyid", 892, "hierarchyid"),
        ("geography", -1, "geography"),
        ("geometry", -1, "geometry"),
        ("xml", -1, None),
        ("ntext", 16, None),
        ("image", 16, None),
    ],
)
def test_the_archive_type_of_each_sql_server_type(type_name, max_length, archived_as):
    assert type_sql(type_name, max_length, 0, 0) == archived_as


def test_an_operational_table_with_rowversion_and_clr_columns_is_described_and_archivable():
    source, _ = backend_answering(OPERATIONAL_TABLE, [("id",)], [], alias="SourceDB1")
    info = source.describe("dbo", "Orders")
    by_name = {c.name: c for c in info.columns}
    assert by_name["row_version"].db_type == "rowversion" and by_name["row_version"].generic == "binary"
    assert [source.archive_type(c, source) for c in info.columns] == [
        "int", "binary(8)", "sql_variant", "hierarchyid", "geography", "geometry",
    ]  # fmt: skip


def test_a_provisioned_archive_with_binary8_matches_its_rowversion_source():
    source, _ = backend_answering(OPERATIONAL_TABLE, [("id",)], [], alias="SourceDB1")
    archived = [
        (n, "binary", 8, 0, 0, 0) if t == "timestamp" else (n, t, m, p, s, nl)
        for n, t, m, p, s, nl in OPERATIONAL_TABLE
    ]
    meta = [
        ("archived_at", "datetime2", 8, 27, 6, 0), ("archive_run_id", "bigint", 8, 19, 0, 0),
        ("reference_date", "date", 3, 10, 0, 1), ("retention_until", "date", 3, 10, 0, 1),
    ]  # fmt: skip
    archive, _ = backend_answering(archived + meta, [("id",)], [])
    source_info = source.describe("dbo", "Orders")
    spec = SimpleNamespace(
        source=source, archive=archive, info=source_info, label="SourceDB1.dbo.Orders",
        archive_table=lambda: "[archive_sourcedb1].[Orders]",
    )  # fmt: skip

    assert _alter_statements(spec, archive.describe("archive_sourcedb1", "Orders")) == []


@pytest.mark.parametrize("type_name", ["rowversion", "sql_variant", "hierarchyid", "geography"])
def test_a_key_column_the_procedures_cannot_carry_is_refused(type_name):
    backend, _ = backend_answering()
    assert type_name in backend.key_column_error(Column("k", type_name, "binary", False))
    assert backend.key_column_error(Column("k", "int", "int", False)) is None


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_table_whose_provisioned_names_pass_128_characters_is_refused_on_sql_server(demo, monkeypatch):
    if connections["SourceDB1"].vendor != "sqlite":
        pytest.skip("the source needs a 110-character table name (PostgreSQL stops at 63); the SQLite leg runs it")
    long_name = "T" * 110  # pk_archive_sourcedb1_<name> is 131 characters
    with connections["SourceDB1"].cursor() as cur:
        cur.execute(f'CREATE TABLE "{long_name}" (id INTEGER PRIMARY KEY, booked DATE)')
    try:
        config = TableConfig(
            source_db="SourceDB1", schema_name="main", table_name=long_name, table_type="OPERATIONAL",
            archival_logic="DATE_BASED", date_column="booked",
        )  # fmt: skip
        config.full_clean()  # an archive on SQLite takes it

        monkeypatch.setattr(connections["archive"], "vendor", "microsoft")  # the archive on SQL Server
        with pytest.raises(ValidationError) as caught:
            config.full_clean()
        message = caught.value.message_dict["table_name"][0]
        assert "131 characters" in message and "QUOTENAME returns NULL" in message
    finally:
        with connections["SourceDB1"].cursor() as cur:
            cur.execute(f'DROP TABLE "{long_name}"')
