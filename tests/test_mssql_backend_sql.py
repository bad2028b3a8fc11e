"""The SQL Server backend's pieces of the Backend contract are T-SQL.

No SQL Server runs here: each fragment the engine, disposal and search take
from MSSQLBackend is built and parsed with sqlfluff's T-SQL dialect, and
checked for constructs T-SQL lacks (``||``, ``LIMIT``, ``RETURNING``,
``ILIKE``, ``ADD COLUMN``). The key text follows the CONVERT styles of
https://learn.microsoft.com/en-us/sql/t-sql/functions/cast-and-convert-transact-sql
(23: yyyy-mm-dd; 120: ODBC canonical; binary style 2: hex without 0x).
"""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import pytest
import sqlfluff

from archival.backends import ArchiveIndex
from archival.backends.mssql.backend import MSSQLBackend
from archival.disposal.tables import ArchiveTable
from archival.engine.archive_tables import planned_indexes

FORBIDDEN = re.compile(r"\|\||\bLIMIT\b|\bRETURNING\b|\bILIKE\b|ADD COLUMN|ON CONFLICT", re.IGNORECASE)


def backend(alias: str, name: str) -> MSSQLBackend:
    b = object.__new__(MSSQLBackend)
    b.alias = alias
    b.connection = SimpleNamespace(vendor="microsoft", settings_dict={"NAME": name})
    return b


def tsql(sql: str) -> str:
    """``sql`` with its %s placeholders as T-SQL variables, parsed (raises on a parse error)."""
    assert not FORBIDDEN.search(sql), sql
    numbered = iter(range(1, 1000))
    text = re.sub(r"%s", lambda _: f"@p{next(numbered)}", sql)
    sqlfluff.parse(text, dialect="tsql")
    return text


ARCHIVE = backend("archive", "ArchiveDB")


def test_a_source_table_is_named_through_its_database_on_the_archive_instance():
    # The docs' example: alias SourceDB1 on database Sales.
    name = ARCHIVE.source_table_sql(backend("SourceDB1", "Sales"), "SourceDB1", "dbo", "Trade")
    assert name == "[Sales].[dbo].[Trade]"
    tsql(f"SELECT COUNT(*) FROM {name} s")


def test_a_limited_locking_read_puts_top_first_and_locks_by_hint():
    body = f"FROM [dbo].[Trade] s{ARCHIVE.lock_hint()} WHERE s.[d] < %s ORDER BY s.[id]"
    sql, params = ARCHIVE.select_sql("s.[id], s.[d]", body, [dt.date(2024, 1, 1)], limit=500, lock_alias="s")
    assert sql.startswith("SELECT TOP (%s) ") and params == [500, dt.date(2024, 1, 1)]
    assert "WITH (UPDLOCK, HOLDLOCK)" in sql
    tsql(sql)


def test_the_archive_table_ddl_and_a_new_column_are_t_sql():
    statements = ARCHIVE.archive_table_ddl(
        "archive_sourcedb1",
        "Trade",
        [
            "[id] bigint NOT NULL",
            "[archived_at] datetimeoffset(6) NOT NULL",
            "CONSTRAINT [Trade_src_key] PRIMARY KEY ([id])",
        ],
        [ArchiveIndex("Trade_retention", ("retention_until",)), ArchiveIndex("Trade_contract", ("contractId",))],
    )
    assert len(statements) == 3
    for sql in statements:
        tsql(sql)
    # What reshape_archive_tables prints for the DBA of a table provisioned before.
    old_key = ArchiveIndex("Trade_src_key", ("id",), unique=True, constraint=True)
    reshape = ARCHIVE.reshape_archive_sql(
        "archive_sourcedb1",
        "Trade",
        drop=[ArchiveIndex("ix_Trade_reference", ("reference_date",))],
        create=[ArchiveIndex("Trade_contract", ("contractId",))],
        primary_key=(old_key, "Trade_src_key"),
    )
    assert reshape == [
        "ALTER TABLE [archive_sourcedb1].[Trade] DROP CONSTRAINT [Trade_src_key]",
        "ALTER TABLE [archive_sourcedb1].[Trade] ADD CONSTRAINT [Trade_src_key] PRIMARY KEY CLUSTERED ([id])",
        "DROP INDEX [ix_Trade_reference] ON [archive_sourcedb1].[Trade]",
        "CREATE INDEX [Trade_contract] ON [archive_sourcedb1].[Trade] ([contractId])",
    ]
    for sql in reshape:
        tsql(sql)
    alter = ARCHIVE.add_column_sql("[archive_sourcedb1].[Trade]", "[note] nvarchar(40)")
    assert alter == "ALTER TABLE [archive_sourcedb1].[Trade] ADD [note] nvarchar(40)"
    tsql(alter)


def test_the_delete_names_its_alias():
    sql = f"{ARCHIVE.delete_sql('s', '[Sales].[dbo].[Trade] AS s')} WHERE s.[id] <= %s"
    assert sql.startswith("DELETE s FROM ")
    tsql(sql)


@pytest.mark.parametrize("generic", ["int", "date", "datetime", "binary", "bool", "text", "decimal"])
def test_the_key_text_of_each_column_type_is_t_sql(generic):
    sql, params = ARCHIVE.key_text_sql([("a.[id]", "int", None), (f"a.[k_{generic}]", generic, None)])
    # The procedures' own key text (archival.fn_key_text): literals, no parameters.
    assert sql.startswith("CONCAT_WS(NCHAR(9), ") and params == []
    tsql(f"SELECT {sql} FROM [archive_sourcedb1].[T] a")


def test_the_hold_coverage_condition_is_t_sql(db):
    config = SimpleNamespace(source_db="SourceDB1", schema_name="dbo", table_name="Position", label="Position")
    table = ArchiveTable(
        config=config,
        backend=ARCHIVE,
        namespace="archive_sourcedb1",
        table="Position",
        pk=["basketId", "businessDate"],
        pk_generic=["int", "date"],
        contract_column="contractId",
    )
    sql, params = table.held_sql(dt.date(2025, 1, 1))
    assert sql.count("%s") == len(params)
    assert "CAST(a.[contractId] AS nvarchar(max))" in sql
    tsql(f"SELECT COUNT(*) FROM {table.qualified} a WHERE {sql}")


def test_a_contains_filter_escapes_with_one_backslash():
    sql = ARCHIVE.contains_sql("[book]")
    assert sql == "[book] LIKE %s ESCAPE '\\'"
    tsql(f"SELECT 1 FROM [archive_sourcedb1].[T] WHERE {sql}")


def test_sql_server_moves_through_its_procedures_and_creates_no_namespace():
    assert ARCHIVE.moves_through_procedures() and not ARCHIVE.moves_in_one_statement()
    assert "sql/02_archive_schemas.sql" in ARCHIVE.namespace_missing("archive_sourcedb1", "SourceDB1")
    # The hold tables' INSTEAD OF DELETE triggers come from sql/08, not the migration.
    assert ARCHIVE.refuse_delete_trigger_sql("governance_hold", "t", "m") == []


def test_a_limit_comes_last_so_the_parameters_keep_their_order():
    # Disposal planning and the search pass the limit as the last parameter,
    # as LIMIT takes it on the other engines; TOP at the front would bind it
    # to the first placeholder instead.
    ordered = ARCHIVE.limit_sql("SELECT a.[id] FROM [x].[T] a WHERE a.[d] < %s ORDER BY a.[id]", "%s")
    assert ordered.endswith("WHERE a.[d] < %s ORDER BY a.[id] OFFSET 0 ROWS FETCH NEXT %s ROWS ONLY")
    unordered = ARCHIVE.limit_sql("SELECT v FROM (SELECT a.[id] AS v FROM [x].[T] a ORDER BY a.[id]) t", "5")
    assert unordered.endswith(") t ORDER BY (SELECT NULL) OFFSET 0 ROWS FETCH NEXT 5 ROWS ONLY")
    tsql(ordered.replace("%s", "@P1"))
    tsql(unordered)


def test_the_planned_indexes_carry_the_names_the_provisioning_script_gives():
    assert planned_indexes(ARCHIVE, "Trade", "contractId") == [
        ArchiveIndex("ix_Trade_retention", ("retention_until",)),
        ArchiveIndex("ix_Trade_contract", ("contractId",)),
        ArchiveIndex("ix_Trade_run", ("archive_run_id",)),
    ]
    assert [i.name for i in planned_indexes(ARCHIVE, "Trade", "")] == ["ix_Trade_retention", "ix_Trade_run"]
