"""archival.hold_coverage: the forms of the hold coverage rule agree with each other.

On generated archive rows and holds of every scope (schemas empty or not,
other tables and databases, released and expired holds), the Python form,
the table prefilter, the Django filter (the search's row page) and the SQL
(the disposal delete, the plan, the preview) say the same thing. The
SQL Server form is checked by construction: the procedures' text is the
module's, clause for clause.

Examples: 25 by default, 50 under the ``ci`` profile, 1,000 with
DISPOSAL_HYPOTHESIS_PROFILE=full.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.db import connections, transaction
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from archival.backends.mssql import templates
from archival.disposal.tables import archive_table_for
from archival.hold_coverage import (
    TSQL_HOLD_MATCH,
    RowFacts,
    TableFacts,
    contract_text,
    covered_counts,
    covering_q,
    covers,
    in_force,
    may_cover_table,
    tsql_contract_match,
)
from archival.rowkeys import key_text
from governance.models import Hold, HoldKey, HoldScope
from tests.disposal_fixtures import (
    DATABASES,
    PROFILE,
    SOURCE,
    TABLE,
    TODAY,
    create_tables,
    insert_rows,
    make_config,
    normal_key,
    source_schema,
)

pytestmark = pytest.mark.django_db(databases=DATABASES)

PROFILE_EXAMPLES = {"dev": 25, "ci": 50}
DAY0 = dt.date(2010, 1, 1)
CONTRACTS = ["C0", "C1", "C2"]
POSITIONS = ["p1", "a\tb", "x\\y", "n\nl"]
GENERICS = ["int", "text", "date"]

rows_st = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.sampled_from(POSITIONS),
        st.integers(0, 10).map(lambda d: DAY0 + dt.timedelta(days=d)),
        st.one_of(st.none(), st.sampled_from(CONTRACTS)),
        st.just(TODAY),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda r: r[:3],
)
day_st = st.one_of(st.none(), st.integers(0, 10).map(lambda d: DAY0 + dt.timedelta(days=d)))
hold_st = st.fixed_dictionaries(
    {
        "scope": st.sampled_from(HoldScope.values),
        "source_db": st.sampled_from([SOURCE, "SourceDB2", ""]),
        "schema": st.sampled_from(["config", "", "other"]),
        "table_name": st.sampled_from([TABLE, "other_table"]),
        "contract_value": st.sampled_from([*CONTRACTS, ""]),
        "date_from": day_st,
        "date_to": day_st,
        "keys": st.lists(st.integers(0, 15), max_size=3),
        "released": st.booleans(),
        "hold_until": st.one_of(st.none(), st.integers(-2, 2).map(lambda d: TODAY + dt.timedelta(days=d))),
    }
)


def make_hold(spec: dict, rows: list[tuple]) -> tuple[Hold, set[str]]:
    """A hold saved as it is (the forms must agree on any stored hold, not only on checked ones)."""
    schema = {"config": source_schema(), "": "", "other": "other"}[spec["schema"]]
    hold = Hold(
        scope=spec["scope"],
        source_db=spec["source_db"],
        schema_name=schema,
        table_name=spec["table_name"],
        contract_value=spec["contract_value"],
        date_from=spec["date_from"],
        date_to=spec["date_to"],
        reason="generated",
        placed_by="compliance",
        hold_until=spec["hold_until"],
        released_by="compliance" if spec["released"] else "",
        released_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC) if spec["released"] else None,
    )
    hold.save(using="archive")
    texts = {key_text(rows[i][:3]) if i < len(rows) else key_text((9, "missing", DAY0)) for i in spec["keys"]}
    HoldKey.objects.using("archive").bulk_create([HoldKey(hold=hold, key_text=t) for t in texts])
    return hold, texts


def sql_rows(t, where: str, params: list) -> set[tuple]:
    with connections["archive"].cursor() as cur:
        cur.execute(f"SELECT {t.pk_select()} FROM {t.qualified} a WHERE {where}", params)
        return {normal_key(r) for r in cur.fetchall()}


@pytest.fixture
def empty_tables():
    """The source and archive tables, made before the examples' savepoints (MariaDB commits on DDL)."""
    create_tables()


@hsettings(hsettings.get_profile(PROFILE), max_examples=PROFILE_EXAMPLES.get(PROFILE, 1000))
@given(rows=rows_st, specs=st.lists(hold_st, min_size=1, max_size=6))
def test_the_python_django_and_sql_forms_agree(empty_tables, rows, specs):
    sid_default = transaction.savepoint(using="default")
    sid_archive = transaction.savepoint(using="archive")
    try:
        config = make_config()
        insert_rows(rows)
        t = archive_table_for(config)
        table = TableFacts.of(config, t.contract_column)
        assert table.has_contract
        holds = [make_hold(spec, rows) for spec in specs]
        facts = {
            r[:3]: RowFacts(contract_text=contract_text(r[3]), reference_date=r[2], key_text=key_text(r[:3], GENERICS))
            for r in rows
        }
        python = {hold.pk: {k for k, f in facts.items() if covers(hold, texts, table, f)} for hold, texts in holds}
        for hold, _ in holds:
            # The SQL form, one hold at a time (the preview, the blocked report).
            assert sql_rows(t, *t.held_by_sql(hold.pk)) == python[hold.pk], hold.scope
            # The prefilter never leaves out a hold that covers a row.
            if python[hold.pk]:
                assert may_cover_table(hold, table), hold.scope
        # The SQL form with holds in force (the disposal delete), and its negation.
        protected = {k for hold, _ in holds if in_force(hold, TODAY) for k in python[hold.pk]}
        assert sql_rows(t, *t.held_sql(TODAY)) == protected
        assert sql_rows(t, *t.unheld_sql(TODAY)) == set(facts) - protected
        # Rows covered per hold in force, counted set-based (the plan's report).
        counted = covered_counts(t, TODAY, "1=1", [])
        expected = {hold.pk: len(python[hold.pk]) for hold, _ in holds if in_force(hold, TODAY) and python[hold.pk]}
        assert {h: n for h, n in counted.items() if n} == expected
        # The Django filter (the search's row page).
        for k, f in facts.items():
            found = set(Hold.objects.using("archive").filter(covering_q(table, f)).values_list("pk", flat=True))
            assert found == {hold.pk for hold, _ in holds if k in python[hold.pk]}, k
    finally:
        transaction.savepoint_rollback(sid_archive, using="archive")
        transaction.savepoint_rollback(sid_default, using="default")


# -- SQL Server, by construction -------------------------------------------------------
SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


def _words(sql: str) -> list[str]:
    return re.findall(r"\[\w+\]|@\w+|N'\w*'|\w+|[()]|[=<>]+", sql)


def test_the_procedures_hold_check_is_the_modules_t_sql_text():
    script = (SQL_DIR / "05_templates.sql").read_text()
    bodies = templates.load_templates()
    doubled = TSQL_HOLD_MATCH.replace("'", "''")
    assert script.count(doubled) == 2
    assert all(TSQL_HOLD_MATCH in bodies[name] for name in ("dispose_batch", "restore_batch"))


def test_the_t_sql_hold_check_has_the_clauses_of_the_sql_form():
    """Each scope's clause of the SQL form, with the procedure's variables for
    its parameters, is the T-SQL clause (word for word, aliases and schema
    prefixes aside)."""
    from types import SimpleNamespace

    from archival.backends.mssql.backend import MSSQLBackend
    from archival.disposal.tables import ArchiveTable
    from archival.hold_coverage import hold_match_sql

    backend = object.__new__(MSSQLBackend)
    backend.alias = "archive"
    backend.connection = SimpleNamespace(vendor="microsoft", settings_dict={"NAME": "Archive"})
    config = SimpleNamespace(source_db="SourceDB1", schema_name="dbo", table_name="Position")
    table = ArchiveTable(config, backend, "sourcedb1", "Position", ["id", "day"], ["int", "date"], "contractId")
    sql, params = hold_match_sql(table)
    variables = {"SourceDB1": "@source_alias", "dbo": "@schema_name", "Position": "@table_name", "": "N''"}
    values = iter(params)
    rendered = re.sub(
        r"%s", lambda _: variables.get(v := next(values), f"N'{v}'"), sql
    )  # scopes are literals in the procedure
    key_text_sql = templates.key_text(["id", "day"], "a", ["int", "date"])
    expected = TSQL_HOLD_MATCH.split("AND (\n", 1)[1].rsplit(")", 1)[0]
    expected = expected.replace("{KEY_TEXT_A}", key_text_sql).replace(
        "{HOLD_CONTRACT_MATCH}", tsql_contract_match("[contractId]")
    )
    # The procedure names the hold key table with its schema and "AS"; the
    # SQL form reads the contract with the backend's text cast.
    expected = expected.replace("[dbo].[governance_holdkey] AS k", "[governance_holdkey] k")
    rendered = rendered.replace(
        "CAST(a.[contractId] AS nvarchar(max))", "CONVERT(nvarchar(200), a.[contractId]) COLLATE DATABASE_DEFAULT"
    )
    assert _words(rendered) == _words(f"({expected})")


def test_the_procedure_builds_the_contract_clause_of_the_module():
    procedure = (SQL_DIR / "07_procedures.sql").read_text()
    built = re.search(r"SET @hold_contract_match = (NCHAR\(10\) \+ N'.*?COLLATE DATABASE_DEFAULT\)';)", procedure, re.S)
    assert built
    # Evaluate the T-SQL string expression for column contractId.
    text = built.group(1).rstrip(";")
    text = text.replace("QUOTENAME(@hold_contract_column)", "N'[contractId]'").replace("NCHAR(10)", "N'\n'")
    pieces = re.findall(r"N'((?:[^']|'')*)'", text)
    assert "".join(p.replace("''", "'") for p in pieces) == tsql_contract_match("[contractId]")
