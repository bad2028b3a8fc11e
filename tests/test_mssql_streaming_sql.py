"""The streaming path speaks T-SQL when a source is a SQL Server on another instance.

No SQL Server runs here: the statements the engine would send are built for
the demo's Position (composite key, contract join) and Trade (date based) and
parsed with sqlfluff's T-SQL dialect, the same check the install scripts get.
"""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import pytest
import sqlfluff

from archival.backends import Column, TableInfo
from archival.backends.mssql.backend import MSSQLBackend
from archival.engine import phases, streaming
from archival.engine.spec import TableSpec


def backend(alias: str) -> MSSQLBackend:
    b = object.__new__(MSSQLBackend)
    b.alias = alias
    b.connection = SimpleNamespace(vendor="microsoft", settings_dict={"NAME": alias})
    return b


def column(name: str, db_type: str) -> Column:
    return Column(name, db_type, "text", True)


POSITION = TableInfo(
    "dbo",
    "Position",
    [column(c, "int") for c in ("basketId", "positionId")]
    + [column("businessDate", "date"), column("contractId", "int")],
    ["basketId", "positionId", "businessDate"],
)
TRADE = TableInfo("dbo", "Trade", [column("tradeId", "bigint"), column("settlementDate", "date")], ["tradeId"])


# The contract table a CONTRACT_MATURITY spec reads its maturity from.
CONTRACT_TABLE = TableInfo(
    "dbo", "Contract", [column("contractId", "int"), column("maturityDate", "date")], ["contractId"]
)


def spec_for(info: TableInfo, **config) -> TableSpec:
    cfg = SimpleNamespace(source_db="SourceDB1", schema_name="dbo", table_name=info.name, **config)
    contract = CONTRACT_TABLE if config.get("archival_logic") == "CONTRACT_MATURITY" else None
    return TableSpec(
        cfg, info, backend("SourceDB1"), backend("archive"), "streaming", dt.date(2024, 11, 25), contract_info=contract
    )


CONTRACT = dict(
    archival_logic="CONTRACT_MATURITY",
    contract_table="Contract",
    contract_key_column="contractId",
    contract_reference_column="contractId",
    contract_maturity_column="maturityDate",
    date_column="",
)
DATED = dict(archival_logic="DATE_BASED", date_column="settlementDate", contract_table="")


def parses_as_tsql(sql: str) -> None:
    numbered = iter(range(1, 1000))
    text = re.sub(r"%s", lambda _: f"@p{next(numbered)}", sql)
    sqlfluff.parse(text, dialect="tsql")  # raises on a parse error


@pytest.mark.parametrize(("info", "config"), [(POSITION, CONTRACT), (TRADE, DATED)])
def test_the_locking_batch_read_uses_top_and_lock_hints(info, config):
    spec = spec_for(info, **config)
    sql, params = streaming._select_sql(
        spec, [1, 2, "2020-01-01"][: len(info.primary_key)], None, lock=True, limit=4000
    )
    assert sql.startswith("SELECT TOP (%s) ") and "WITH (UPDLOCK, HOLDLOCK)" in sql
    assert "LIMIT" not in sql and "FOR UPDATE" not in sql
    assert params[0] == 4000 and sql.count("%s") == len(params)
    parses_as_tsql(sql)


@pytest.mark.parametrize(("info", "config"), [(POSITION, CONTRACT), (TRADE, DATED)])
def test_the_range_delete_and_the_key_bounds_are_t_sql(info, config):
    spec = spec_for(info, **config)
    key = [1, 2, "2020-01-01"][: len(info.primary_key)]
    sql, params = streaming._delete_range_sql(spec, None, key)
    assert sql.startswith("DELETE s FROM [dbo].") and sql.count("%s") == len(params)
    parses_as_tsql(sql)
    pk_s = spec.q(spec.source, "s", spec.pk)
    where, _ = spec.selection(spec.source, at_mark=True)
    first = phases.first_key_sql(spec.source, pk_s, spec.from_clause(spec.source), where, descending=True)
    assert first.endswith("OFFSET 0 ROWS FETCH NEXT 1 ROWS ONLY") and "LIMIT" not in first
    parses_as_tsql(first)


def test_a_text_date_column_is_read_with_try_convert_and_a_date_column_as_it_is():
    """TRY_CONVERT returns NULL instead of raising when a value does not convert
    (https://learn.microsoft.com/en-us/sql/t-sql/functions/try-convert-transact-sql);
    style 23 is yyyy-mm-dd whatever DATEFORMAT says
    (https://learn.microsoft.com/en-us/sql/t-sql/functions/cast-and-convert-transact-sql)."""
    text_dates = TableInfo("dbo", "Memo", [column("id", "int"), column("noteDate", "varchar(40)")], ["id"])
    real_dates = TableInfo(
        "dbo", "Trade", [column("tradeId", "bigint"), Column("settlementDate", "date", "date", True)], ["tradeId"]
    )
    memo = spec_for(text_dates, archival_logic="DATE_BASED", date_column="noteDate", contract_table="")
    trade = spec_for(real_dates, **DATED)
    for spec in (memo, trade):
        sql, _ = streaming._select_sql(spec, [1], None, lock=True, limit=4000)
        parses_as_tsql(sql)
        delete, _ = streaming._delete_range_sql(spec, [1], [9])
        parses_as_tsql(delete)
        assert ("TRY_CONVERT(date, SUBSTRING(" in sql + delete) == (spec is memo)
    assert "s.[settlementDate] < %s" in streaming._select_sql(trade, [1], None, lock=True, limit=4000)[0]
