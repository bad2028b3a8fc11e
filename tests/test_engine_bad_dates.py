"""Reference values that are not dates: never eligible, counted, left untouched in the source.

A DATE column of SQLite holds any value; a text column configured as the
date column holds any text on every engine. Runs on SQLite, PostgreSQL and
MariaDB (whichever the suite is pointed at); the DATE-column cases only
where such a column can hold them (SQLite).
"""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connections

from archival import engine
from archival.backends import backend_for
from archival.backends.base import Column
from archival.backends.sqlite import namespace_for
from archival.demo import source_schema
from archival.engine.dates import add_years, subtract_months
from governance.models import AuditEvent, RecoveryState, TableConfig
from tests.engine_fixtures import rows_of, snapshot, union_check

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUTOFF = date(2026, 11, 25)
THRESHOLD = subtract_months(CUTOFF, 1)  # 2026-10-25

# (key, value): dates before the threshold, dates not before it, values that are not dates.
OLD_DATES = [(1, "2020-01-15"), (2, "2024-02-29"), (3, "2026-10-24")]
# Text with a time of day (a text column keeps it as written).
OLD_TIMES = [(13, "2020-03-01T08:00"), (14, "2026-10-24 23:59:59")]
RECENT_DATES = [(4, "2026-10-25"), (5, "2027-01-01")]
NOT_DATES = [(6, "12/31/2026"), (7, "2021-13-45"), (8, " 2021-01-01"), (9, "2021-02-30"), (10, "2021-1-5")]
NO_DATE = [(11, None)]


def _vendor(alias: str) -> str:
    return connections[alias].vendor


def _streaming(settings, alias: str) -> None:
    """Work ``alias`` as a streamed source (the archive connection reattaches without it on SQLite)."""
    settings.ARCHIVAL = {**settings.ARCHIVAL, "STREAMING_SOURCES": [alias]}
    connections["archive"].close()


def _fill_ops_event(rows: list[tuple[int, object]]) -> TableConfig:
    """OpsEvent001 (a DATE column "eventDate") holding ``rows``; one month kept in the source."""
    config = TableConfig.objects.get(table_name="OpsEvent001")
    config.months_retention_source = 1
    config.full_clean()
    config.save()
    src = backend_for(config.source_db)
    table = src.qualified(config.schema_name, config.table_name)
    with connections[config.source_db].cursor() as cur:
        cur.execute(f"DELETE FROM {table}")
        for key, value in rows:
            cur.execute(
                f'INSERT INTO {table} ("id", "eventDate", "category", "amount") VALUES (%s, %s, %s, %s)',
                [key, value, "x", "1.00"],
            )
    return config


def _archived(config: TableConfig, date_column: str) -> dict[int, tuple[str, str, str]]:
    """Archived rows by id: (the date column, reference_date, retention_until) as text."""
    arc = backend_for("archive")
    q = arc.quote
    with connections["archive"].cursor() as cur:
        cur.execute(
            # As text: the driver's SQLite date converter reads '2026-10-24 23:59:59' in a DATE column as None.
            f"SELECT {q('id')}, "
            + ", ".join(f"CAST({q(c)} AS CHAR(40))" for c in (date_column, "reference_date", "retention_until"))
            + " "
            f"FROM {arc.qualified(namespace_for(config.source_db), config.table_name)}"
        )
        return {int(r[0]): (str(r[1])[:10], str(r[2])[:10], str(r[3])[:10]) for r in cur.fetchall()}


@pytest.mark.parametrize("topology", ["same_server", "streaming"])
def test_values_of_a_date_column_that_are_not_dates_are_never_eligible_and_stay_in_the_source(demo, settings, topology):
    if _vendor(TableConfig.objects.get(table_name="OpsEvent001").source_db) != "sqlite":
        pytest.skip("a DATE column holds only dates on PostgreSQL and MariaDB")
    config = _fill_ops_event([*OLD_DATES, *RECENT_DATES, *NOT_DATES, (12, 20210105), *NO_DATE])
    if topology == "streaming":
        _streaming(settings, config.source_db)
    original = snapshot([config])
    unreadable_keys = sorted([k for k, _ in NOT_DATES] + [12])

    plan = engine.plan(tables=["OpsEvent001"], cutoff=CUTOFF).tables[0]

    assert (plan.eligible, plan.null_dates, plan.unreadable_dates) == (3, 1, 6)
    assert plan.unreadable_examples == [[k] for k in unreadable_keys[:5]]
    assert not plan.problems

    result = engine.run_cycle(cutoff=CUTOFF, tables=["OpsEvent001"])

    assert result.ok and result.moved == 3
    assert result.unreadable_dates == 6
    state = RecoveryState.objects.get(run_id=result.run_id)
    assert (state.eligible_count, state.null_date_count, state.unreadable_date_count) == (3, 1, 6)
    marked = AuditEvent.objects.get(run_id=result.run_id, action="table.marked")
    assert marked.counts["unreadable_dates"] == 6
    # Every old date moved with its reference date and retention; nothing else did.
    years = config.effective_years
    assert _archived(config, "eventDate") == {
        k: (v[:10], v[:10], add_years(date.fromisoformat(v[:10]), years).isoformat()) for k, v in OLD_DATES
    }
    counts = union_check([config], original)
    assert counts[str(config)] == (len(original[str(config)]) - 3, 3)
    # The rows that are not dates are still in the source, value for value.
    left = snapshot([config])[str(config)]
    assert {(k,): left[(k,)] for k in unreadable_keys} == {(k,): original[str(config)][(k,)] for k in unreadable_keys}


def test_a_batch_of_nothing_but_values_that_are_not_dates_moves_none_and_the_move_goes_on(demo, settings):
    """A batch's bound takes its candidates by the plain comparison: values below the threshold that are not dates
    fill whole batches that move nothing, and the eligible rows after them still move."""
    if _vendor(TableConfig.objects.get(table_name="OpsEvent001").source_db) != "sqlite":
        pytest.skip("a DATE column holds only dates on PostgreSQL and MariaDB")
    settings.ARCHIVAL = {**settings.ARCHIVAL, "DEFAULT_BATCH_SIZE": 2}
    # Keys 1-4 compare below the threshold as text but are not dates; 5-7 are old dates.
    not_dates = [(1, "2021-02-30"), (2, "2021-13-45"), (3, "2020-02-30"), (4, "2019-00-10")]
    old = [(5, "2020-01-15"), (6, "2024-02-29"), (7, "2026-10-24")]
    config = _fill_ops_event([*not_dates, *old])
    original = snapshot([config])

    result = engine.run_cycle(cutoff=CUTOFF, tables=["OpsEvent001"])

    assert result.ok and result.moved == 3
    assert sorted(_archived(config, "eventDate")) == [5, 6, 7]
    assert union_check([config], original)[str(config)] == (4, 3)
    assert sorted(k for (k,) in snapshot([config])[str(config)]) == [1, 2, 3, 4]


def test_a_contract_whose_maturity_is_not_a_date_keeps_its_positions_and_itself(demo):
    if _vendor("SourceDB1") != "sqlite":
        pytest.skip("a DATE column holds only dates on PostgreSQL and MariaDB")
    src = backend_for("SourceDB1")
    schema = source_schema("SourceDB1")
    contract, position = src.qualified(schema, "Contract"), src.qualified(schema, "Position")
    with connections["SourceDB1"].cursor() as cur:
        # An old, referenced contract: its positions would all be eligible.
        cur.execute(
            f'SELECT c."contractId", COUNT(*) FROM {contract} c JOIN {position} p ON p."contractId" = c."contractId" '
            f'WHERE c."maturityDate" < %s GROUP BY c."contractId" ORDER BY c."contractId" LIMIT 1',
            [subtract_months(CUTOFF, 12).isoformat()],
        )
        contract_id, positions = cur.fetchone()
        cur.execute(f'UPDATE {contract} SET "maturityDate" = %s WHERE "contractId" = %s', ["12/31/2020", contract_id])
    configs = list(TableConfig.objects.filter(source_db="SourceDB1", table_name__in=["Position", "Contract"]))
    original = snapshot(configs)

    plan = {
        t.label.rsplit(".", 1)[-1]: t
        for t in engine.plan(tables=["SourceDB1.Position", "SourceDB1.Contract"], cutoff=CUTOFF).tables
    }
    assert plan["Position"].unreadable_dates == positions
    assert plan["Contract"].unreadable_dates == 1 and plan["Contract"].unreadable_examples == [[contract_id]]

    result = engine.run_cycle(cutoff=CUTOFF, tables=["SourceDB1.Position", "SourceDB1.Contract"])

    assert result.ok, [t.error for t in result.tables]
    union_check(configs, original)
    with connections["SourceDB1"].cursor() as cur:
        cur.execute(f'SELECT COUNT(*) FROM {position} WHERE "contractId" = %s', [contract_id])
        assert cur.fetchone()[0] == positions
        cur.execute(f'SELECT +"maturityDate" FROM {contract} WHERE "contractId" = %s', [contract_id])
        assert cur.fetchone()[0] == "12/31/2020"


def test_a_child_row_whose_date_is_not_a_date_keeps_its_parent_and_the_counts_agree(demo):
    """Mark counts a parent eligible when its children will move: a child that will not must hold it."""
    trade_config = TableConfig.objects.get(table_name="Trade")
    if _vendor(trade_config.source_db) != "sqlite":
        pytest.skip("a DATE column holds only dates on PostgreSQL and MariaDB")
    src = backend_for(trade_config.source_db)
    schema = trade_config.schema_name
    trade, contract = src.qualified(schema, "Trade"), src.qualified(schema, "Contract")
    threshold = subtract_months(CUTOFF, trade_config.effective_months).isoformat()
    with connections[trade_config.source_db].cursor() as cur:
        # A contract that goes in this run, with a trade that goes too.
        cur.execute(
            f'SELECT t."tradeId", c."contractId" FROM {trade} t JOIN {contract} c ON c."contractId" = t."contractId" '
            f'WHERE t."settlementDate" < %s AND c."maturityDate" < %s ORDER BY t."tradeId" LIMIT 1',
            [threshold, threshold],
        )
        trade_id, contract_id = cur.fetchone()
        cur.execute(f'UPDATE {trade} SET "settlementDate" = %s WHERE "tradeId" = %s', ["2021-02-30", trade_id])
    configs = list(TableConfig.objects.filter(source_db=trade_config.source_db, table_name__in=["Trade", "Contract"]))
    original = snapshot(configs)

    result = engine.run_cycle(cutoff=CUTOFF, tables=[str(c) for c in configs])

    assert result.ok, [t.error for t in result.tables]
    union_check(configs, original)
    with connections[trade_config.source_db].cursor() as cur:
        cur.execute(f'SELECT COUNT(*) FROM {contract} WHERE "contractId" = %s', [contract_id])
        assert cur.fetchone()[0] == 1
        cur.execute(f'SELECT +"settlementDate" FROM {trade} WHERE "tradeId" = %s', [trade_id])
        assert cur.fetchone()[0] == "2021-02-30"


# -- a text column that holds dates ---------------------------------------------


def _memo_table(alias: str, rows: list[tuple[int, object]]) -> str:
    """A table "Memo" whose "noteDate" is a varchar column, holding ``rows``; returns its qualified name."""
    src = backend_for(alias)
    table = src.qualified(source_schema(alias), "Memo")
    with connections[alias].cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f'CREATE TABLE {table} ("id" INTEGER NOT NULL PRIMARY KEY, "noteDate" VARCHAR(40), "body" VARCHAR(40))'
        )
        for key, value in rows:
            cur.execute(
                f'INSERT INTO {table} ("id", "noteDate", "body") VALUES (%s, %s, %s)', [key, value, f"memo {key}"]
            )
    return table


@pytest.fixture
def memo_table(demo):
    made = []

    def make(alias: str, rows) -> str:
        made.append(alias)
        return _memo_table(alias, rows)

    yield make
    for alias in made:
        with connections[alias].cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {backend_for(alias).qualified(source_schema(alias), 'Memo')}")


def _memo_config(alias: str, column: str = "noteDate") -> TableConfig:
    config = TableConfig(
        source_db=alias,
        schema_name=source_schema(alias),
        table_name="Memo",
        table_type="OPERATIONAL",
        date_column=column,
        months_retention_source=1,
    )
    config.full_clean()
    config.save()
    return config


@pytest.mark.parametrize("alias", ["SourceDB1", "SourceDB3"])
def test_a_text_column_holding_iso_dates_is_accepted_and_only_its_dates_move(memo_table, settings, alias):
    # On PostgreSQL SourceDB3 is another database (streamed); on SQLite and
    # MariaDB it is made a streamed source here.
    if alias == "SourceDB3" and _vendor("SourceDB3") != "postgresql":
        _streaming(settings, alias)
    memo_table(alias, [*OLD_DATES, *OLD_TIMES, *RECENT_DATES, *NOT_DATES, (12, "20210105"), *NO_DATE])
    config = _memo_config(alias)
    original = snapshot([config])
    unreadable_keys = sorted([k for k, _ in NOT_DATES] + [12])

    plan = engine.plan(tables=[str(config)], cutoff=CUTOFF).tables[0]

    assert not plan.problems, plan.problems
    assert (plan.eligible, plan.null_dates, plan.unreadable_dates) == (5, 1, 6)
    assert plan.unreadable_examples == [[k] for k in unreadable_keys[:5]]

    result = engine.run_cycle(cutoff=CUTOFF, tables=[str(config)])

    assert result.ok, [t.error for t in result.tables]
    assert result.moved == 5 and result.unreadable_dates == 6
    moved = dict([*OLD_DATES, *OLD_TIMES])
    years = config.effective_years
    assert _archived(config, "noteDate") == {
        k: (v[:10], v[:10], add_years(date.fromisoformat(v[:10]), years).isoformat()) for k, v in moved.items()
    }
    union_check([config], original)
    left = snapshot([config])[str(config)]
    assert {k: left[(k,)] for k in unreadable_keys} == {k: original[str(config)][(k,)] for k in unreadable_keys}
    # A second run finds nothing new: the values that are not dates stay where they are.
    again = engine.run_cycle(cutoff=CUTOFF, tables=[str(config)])
    assert again.ok and again.moved == 0 and again.unreadable_dates == 6


def test_the_command_names_the_unreadable_dates_in_the_plan_and_the_run_summary(memo_table):
    memo_table("SourceDB1", [*OLD_DATES, *OLD_TIMES, *RECENT_DATES, *NOT_DATES])
    config = _memo_config("SourceDB1")
    plan_out, run_out = StringIO(), StringIO()

    call_command("archival", "plan", "--table", str(config), "--cutoff", CUTOFF.isoformat(), stdout=plan_out)
    call_command("archival", "run", "--table", str(config), "--cutoff", CUTOFF.isoformat(), stdout=run_out)

    assert "unreadable dates: 5 rows (never eligible), keys 6; 7; 8; 9; 10" in plan_out.getvalue()
    assert "5 rows with unreadable dates; nothing changed." in plan_out.getvalue()
    assert f"5 rows have a date that is not a date and stay in the source ({config})" in run_out.getvalue()
    status_out = StringIO()
    call_command("archival", "status", stdout=status_out)
    assert "(5 unreadable dates left in the source)" in status_out.getvalue()


def test_a_text_column_that_does_not_hold_dates_is_refused(memo_table):
    memo_table("SourceDB1", [(1, "2020-01-15")])
    with pytest.raises(ValidationError) as excinfo:
        _memo_config("SourceDB1", column="body")
    assert "not a date" in excinfo.value.message_dict["date_column"][0]
    assert "1 of 1 values" in excinfo.value.message_dict["date_column"][0]
    assert not TableConfig.objects.filter(table_name="Memo").exists()


# -- the validity predicate, engine by engine -----------------------------------

CASES = {
    "2021-01-01": True,
    "2024-02-29": True,
    "2021-12-31 23:59:59": True,
    "2021-06-30T10:00": True,
    "2023-02-29": False,
    "2021-02-30": False,
    "2021-04-31": False,
    "2021-13-45": False,
    "2021-00-10": False,
    "2021-01-00": False,
    " 2021-01-01": False,
    "2021-1-5": False,
    "12/31/2026": False,
    "20210105": False,
    "2021-01-01xyz": False,
    "soon": False,
    "": False,
}


def test_each_engine_reads_the_same_values_as_dates_without_an_error(memo_table):
    """The predicate's verdict per value, and the date value and comparison of those it reads, inside DML too."""
    alias = "SourceDB1"
    rows = list(enumerate(CASES, start=1))
    table = memo_table(alias, rows)
    src = backend_for(alias)
    column = Column("noteDate", "varchar(40)", "text", True)
    expr = src.quote("noteDate")
    readable = src.readable_date_sql(expr, column)

    def day(d: date):
        return d.isoformat() if src.vendor == "sqlite" else d

    with connections[alias].cursor() as cur:
        cur.execute(f"SELECT {src.quote('id')}, CASE WHEN {readable} THEN 1 ELSE 0 END FROM {table}")
        verdicts = {rows[k - 1][1]: bool(v) for k, v in cur.fetchall()}
        assert verdicts == CASES
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE {src.date_before_sql(expr, column)}", [day(date(2021, 7, 1))])
        assert cur.fetchone()[0] == 2  # 2021-01-01 and 2021-06-30T10:00
        # In a DELETE (strict mode turns MariaDB's date warnings into errors there).
        cur.execute(f"DELETE FROM {table} WHERE {src.date_before_sql(expr, column)}", [day(date(2000, 1, 1))])
        assert cur.rowcount == 0
        unreadable = src.unreadable_date_sql(expr, column)
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE {unreadable}")
        assert cur.fetchone()[0] == sum(not ok for ok in CASES.values())
    assert rows_of(alias, table, ["id"], src.quote)
