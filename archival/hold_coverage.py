"""Which holds cover which archived rows: one rule, in each form a caller needs.

The rule (DESIGN.md, Holds). A hold covers an archived row of a configured
table when its scope is

- ALL;
- TABLE: the table's source database and name, and its schema (an empty
  hold schema names the table in any schema);
- CONTRACT: the table's source database, the table carries a contract
  (``TableConfig.contract_column_for_holds``) and the row's value of that
  column, as text, is the hold's contract value;
- DATE_RANGE: the row has a reference date, inside the range (an empty end
  is open);
- KEYS: the same table as TABLE, and one of the hold's keys is the row's
  canonical key text (``archival.rowkeys.key_text``).

A hold is in force on a day when it is not released and its hold-until is
empty or not before that day (``Hold.objects.active``).

The forms, side by side below and tested against each other on generated
holds and rows (tests/test_hold_coverage.py):

- ``covers``: Python, one hold and one row (what the others must agree with);
- ``may_cover_table``: Python, whether a hold can cover any row of a table
  (the disposal plan's report of blocking holds asks only those);
- ``covering_q``: a Django filter on Hold for one row (the search's row page);
- ``hold_match_sql`` / ``held_by_sql``: SQL over an archive table and one
  hold (the hold preview, the plan's report of blocking holds);
- ``held_sql`` / ``unheld_sql``: SQL over an archive table and every hold in
  force, one test per scope, set-based (the disposal delete and its counts,
  the plan, restores, the forecast);
- ``covered_counts``: rows covered per hold in force, a few passes for all of
  them (the plan's report of blocking holds);
- ``TSQL_HOLD_MATCH`` and ``tsql_contract_match``: the same condition in the
  SQL Server procedures (sql/05_templates.sql, sql/07_procedures.sql), which
  no test here can execute: the test checks that the SQL form, rendered for
  SQL Server with the procedure's variables, is that text.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Q

from governance.models import Hold, HoldKey, HoldScope, TableConfig

if TYPE_CHECKING:
    from archival.disposal.tables import ArchiveTable


@dataclass(frozen=True)
class TableFacts:
    """What the rule reads of a configured table."""

    source_db: str
    schema_name: str
    table_name: str
    has_contract: bool  # the archive table carries the contract column holds match

    @classmethod
    def of(cls, config: TableConfig, contract_column: str | None) -> TableFacts:
        return cls(config.source_db, config.schema_name, config.table_name, bool(contract_column))


@dataclass(frozen=True)
class RowFacts:
    """What the rule reads of one archived row."""

    contract_text: str | None  # ``contract_text`` of the contract column's value
    reference_date: dt.date | None
    key_text: str  # ``rowkeys.key_text`` of the row's key


def contract_text(value: Any) -> str | None:
    """A contract column's value as the text a CONTRACT hold stores (the SQL casts it likewise)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return str(value)


# -- Python ------------------------------------------------------------------------
def in_force(hold: Hold, at: dt.date) -> bool:
    """Python form of ``Hold.objects.active(at)``."""
    return hold.released_at is None and (hold.hold_until is None or hold.hold_until >= at)


def _same_table(hold: Hold, table: TableFacts) -> bool:
    return (
        hold.source_db == table.source_db
        and hold.table_name == table.table_name
        and hold.schema_name in (table.schema_name, "")
    )


def covers(hold: Hold, hold_key_texts: Collection[str], table: TableFacts, row: RowFacts) -> bool:
    """Whether ``hold`` (whose HoldKey texts are ``hold_key_texts``) covers ``row`` of ``table``.

    In force or not: combine with ``in_force`` for protection.
    """
    if hold.scope == HoldScope.ALL:
        return True
    if hold.scope == HoldScope.TABLE:
        return _same_table(hold, table)
    if hold.scope == HoldScope.CONTRACT:
        return (
            table.has_contract
            and hold.source_db == table.source_db
            and row.contract_text is not None
            and row.contract_text == hold.contract_value
        )
    if hold.scope == HoldScope.DATE_RANGE:
        return (
            row.reference_date is not None
            and (hold.date_from is None or row.reference_date >= hold.date_from)
            and (hold.date_to is None or row.reference_date <= hold.date_to)
        )
    if hold.scope == HoldScope.KEYS:
        return _same_table(hold, table) and row.key_text in hold_key_texts
    return False


def may_cover_table(hold: Hold, table: TableFacts) -> bool:
    """Whether ``hold`` can cover some row of ``table`` (``covers`` with the row left open)."""
    if hold.scope in (HoldScope.TABLE, HoldScope.KEYS):
        return _same_table(hold, table)
    if hold.scope == HoldScope.CONTRACT:
        return table.has_contract and hold.source_db == table.source_db
    return hold.scope in (HoldScope.ALL, HoldScope.DATE_RANGE)


# -- Django filter -------------------------------------------------------------------
def covering_q(table: TableFacts, row: RowFacts) -> Q:
    """Filter on Hold: the holds (in force or not) that cover ``row`` of ``table``."""
    same_table = (
        Q(source_db=table.source_db, table_name=table.table_name)
        & (Q(schema_name=table.schema_name) | Q(schema_name=""))
    )  # fmt: skip
    cover = Q(scope=HoldScope.ALL) | (Q(scope=HoldScope.TABLE) & same_table)
    if table.has_contract and row.contract_text is not None:
        cover |= Q(scope=HoldScope.CONTRACT, source_db=table.source_db, contract_value=row.contract_text)
    if row.reference_date is not None:
        cover |= (
            Q(scope=HoldScope.DATE_RANGE)
            & (Q(date_from__isnull=True) | Q(date_from__lte=row.reference_date))
            & (Q(date_to__isnull=True) | Q(date_to__gte=row.reference_date))
        )
    cover |= Q(scope=HoldScope.KEYS, keys__key_text=row.key_text) & same_table
    return cover


# -- SQL -----------------------------------------------------------------------------
def hold_match_sql(table: ArchiveTable, alias: str = "a", hold_alias: str = "h") -> tuple[str, list]:
    """Condition on ``hold_alias`` (a Hold row) and ``alias`` (a row of ``table``): the hold covers the row.

    The clauses follow the scopes in the order of the SQL Server procedures'
    text (``TSQL_HOLD_MATCH``), so the two can be compared clause by clause.
    """
    q = table.backend.quote
    h = hold_alias
    cfg = table.config
    same_table = (
        f"{h}.{q('source_db')} = %s AND ({h}.{q('schema_name')} = %s OR {h}.{q('schema_name')} = %s) "
        f"AND {h}.{q('table_name')} = %s"
    )
    table_params = [cfg.source_db, cfg.schema_name, "", cfg.table_name]
    ref = table.col("reference_date", alias)
    key_sql, key_params = table.key_text_sql(alias)
    hk = q(HoldKey._meta.db_table)
    parts = [
        f"{h}.{q('scope')} = %s",
        f"({h}.{q('scope')} = %s AND {same_table})",
        f"({h}.{q('scope')} = %s AND {ref} IS NOT NULL "
        f"AND ({h}.{q('date_from')} IS NULL OR {ref} >= {h}.{q('date_from')}) "
        f"AND ({h}.{q('date_to')} IS NULL OR {ref} <= {h}.{q('date_to')}))",
        f"({h}.{q('scope')} = %s AND {same_table} AND EXISTS (SELECT 1 FROM {hk} k "
        f"WHERE k.{q('hold_id')} = {h}.{q('id')} AND k.{q('key_text')} = {key_sql}))",
    ]
    params: list = [
        HoldScope.ALL,
        HoldScope.TABLE,
        *table_params,
        HoldScope.DATE_RANGE,
        HoldScope.KEYS,
        *table_params,
        *key_params,
    ]
    if table.contract_column:
        contract = table.backend.text_cast_sql(table.col(table.contract_column, alias))
        parts.append(
            f"({h}.{q('scope')} = %s AND {h}.{q('source_db')} = %s AND {h}.{q('contract_value')} = {contract})"
        )
        params += [HoldScope.CONTRACT, cfg.source_db]
    return "(" + " OR ".join(parts) + ")", params


def in_force_sql(hold_alias: str, quote: Callable[[str], str]) -> str:
    """SQL form of ``in_force``; one parameter, the day."""
    h = hold_alias
    return (
        f"{h}.{quote('released_at')} IS NULL AND ({h}.{quote('hold_until')} IS NULL OR {h}.{quote('hold_until')} >= %s)"
    )


def _hold_column(table: ArchiveTable) -> Callable[[str], str]:
    """A column of the hold row ``h``, quoted for ``table``'s backend."""
    q = table.backend.quote
    return lambda name: f"h.{q(name)}"


def _same_table_sql(table: ArchiveTable) -> tuple[str, list]:
    """The hold row ``h`` names ``table`` (TABLE and KEYS scopes; an empty schema names any)."""
    col, cfg = _hold_column(table), table.config
    sql = (
        f"{col('source_db')} = %s AND ({col('schema_name')} = %s OR {col('schema_name')} = %s) "
        f"AND {col('table_name')} = %s"
    )
    return sql, [cfg.source_db, cfg.schema_name, "", cfg.table_name]


def _scope_checks(table: ArchiveTable, at: dt.date, alias: str) -> list[tuple[str, list]]:
    """The hold check on row ``alias`` as one test per scope, each over the holds in force on ``at``.

    (test, parameters) pairs. A row is held when any test is true. Each
    test is shaped so that the database evaluates the holds once per
    statement, not once per row: ALL and TABLE do not depend on the row
    (evaluated once); KEYS and CONTRACT are the row's value ``IN`` the set of
    held values (hashed once); DATE_RANGE is the only one comparing the row
    with each hold (a handful of holds, materialised once: an anti-join
    under ``NOT``). KEYS is not two-valued for a row whose key text is NULL
    (no archive key is): such a row is neither held nor unheld, so never
    deleted.
    """
    q, cfg, col = table.backend.quote, table.config, _hold_column(table)
    hold, hk = q(Hold._meta.db_table), q(HoldKey._meta.db_table)
    force = in_force_sql("h", q)
    same_table, table_params = _same_table_sql(table)
    ref = table.col("reference_date", alias)
    key_sql, key_params = table.key_text_sql(alias)
    checks = [
        (f"EXISTS (SELECT 1 FROM {hold} h WHERE {force} AND {col('scope')} = %s)", [at, HoldScope.ALL]),
        (
            f"EXISTS (SELECT 1 FROM {hold} h WHERE {force} AND {col('scope')} = %s AND {same_table})",
            [at, HoldScope.TABLE, *table_params],
        ),
        (
            # An open end as the earliest / latest date: two comparisons per row
            # and hold (a NULL reference date compares to nothing: not covered).
            f"EXISTS (SELECT 1 FROM {hold} h WHERE {force} AND {col('scope')} = %s "
            f"AND {ref} >= COALESCE({col('date_from')}, %s) AND {ref} <= COALESCE({col('date_to')}, %s))",
            [at, HoldScope.DATE_RANGE, dt.date.min, dt.date.max],
        ),
        (
            f"{key_sql} IN (SELECT k.{q('key_text')} FROM {hk} k JOIN {hold} h ON h.{q('id')} = k.{q('hold_id')} "
            f"WHERE {force} AND {col('scope')} = %s AND {same_table})",
            [*key_params, at, HoldScope.KEYS, *table_params],
        ),
    ]
    if table.contract_column:
        contract = table.col(table.contract_column, alias)
        checks.append(
            (
                f"({contract} IS NOT NULL AND {table.backend.text_cast_sql(contract)} IN "
                f"(SELECT {col('contract_value')} FROM {hold} h WHERE {force} AND {col('scope')} = %s "
                f"AND {col('source_db')} = %s AND {col('contract_value')} IS NOT NULL))",
                [at, HoldScope.CONTRACT, cfg.source_db],
            )
        )
    return checks


def held_sql(table: ArchiveTable, at: dt.date, alias: str = "a") -> tuple[str, list]:
    """True when a hold in force on ``at`` covers the archive row ``alias`` (``hold_match_sql`` by scope)."""
    checks = _scope_checks(table, at, alias)
    return "(" + " OR ".join(sql for sql, _ in checks) + ")", [p for _, params in checks for p in params]


def unheld_sql(table: ArchiveTable, at: dt.date, alias: str = "a") -> tuple[str, list]:
    """True when no hold in force on ``at`` covers the archive row ``alias``: what disposal may delete.

    ``NOT held_sql`` written as one ``NOT`` per scope, so that each is a
    condition of its own the planner can turn into an anti-join or a hashed
    lookup (a ``NOT`` over the whole ``OR`` is evaluated row by row, hold by
    hold). Never true for a row ``held_sql`` is not false for.
    """
    checks = _scope_checks(table, at, alias)
    parts = [f"NOT {sql}" if sql.startswith("EXISTS") else f"NOT ({sql})" for sql, _ in checks]
    return "(" + " AND ".join(parts) + ")", [p for _, params in checks for p in params]


def covered_counts(table: ArchiveTable, at: dt.date, where: str, where_params: list) -> dict[int, int]:
    """Rows of ``table`` matching ``where`` (a condition on the archive row ``a``,
    with ``where_params``) that each hold in force on ``at`` covers, by hold id.

    Every hold counted in a few passes over the table, whatever their number
    (one scan per hold is what this replaces): ALL and TABLE holds take one
    count; KEYS and CONTRACT holds one join each, on the key text and the
    contract text (``hold_match_sql``, clause by clause); DATE_RANGE holds
    one count of the rows per reference date (a few thousand dates), summed
    per hold by ``covers``. A hold covering no row may be missing or 0.
    """
    q, cfg, col = table.backend.quote, table.config, _hold_column(table)
    hold, hk = q(Hold._meta.db_table), q(HoldKey._meta.db_table)
    force = in_force_sql("h", q)
    same_table, table_params = _same_table_sql(table)
    key_sql, key_params = table.key_text_sql()
    hid = col("id")
    statements = [
        (
            f"SELECT {hid}, (SELECT COUNT(*) FROM {table.qualified} a WHERE {where}) FROM {hold} h "
            f"WHERE {force} AND ({col('scope')} = %s OR ({col('scope')} = %s AND {same_table}))",
            [*where_params, at, HoldScope.ALL, HoldScope.TABLE, *table_params],
        ),
        (
            f"SELECT {hid}, COUNT(*) FROM {hold} h JOIN {hk} k ON k.{q('hold_id')} = {hid} "
            f"JOIN {table.qualified} a ON k.{q('key_text')} = {key_sql} "
            f"WHERE {force} AND {col('scope')} = %s AND {same_table} AND {where} GROUP BY {hid}",
            [*key_params, at, HoldScope.KEYS, *table_params, *where_params],
        ),
    ]
    if table.contract_column:
        contract = table.col(table.contract_column)
        statements.append(
            (
                f"SELECT {hid}, COUNT(*) FROM {hold} h JOIN {table.qualified} a ON {contract} IS NOT NULL "
                f"AND {table.backend.text_cast_sql(contract)} = {col('contract_value')} "
                f"WHERE {force} AND {col('scope')} = %s AND {col('source_db')} = %s AND {where} GROUP BY {hid}",
                [at, HoldScope.CONTRACT, cfg.source_db, *where_params],
            )
        )
    counts: dict[int, int] = {}
    ranges = list(Hold.objects.using(table.backend.alias).active(at).filter(scope=HoldScope.DATE_RANGE))
    with table.backend.connection.cursor() as cur:
        for sql, params in statements:
            cur.execute(sql, params)
            for hold_id, n in cur.fetchall():
                counts[hold_id] = counts.get(hold_id, 0) + int(n or 0)
        if ranges:
            ref = table.col("reference_date")
            cur.execute(
                f"SELECT {ref}, COUNT(*) FROM {table.qualified} a WHERE {ref} IS NOT NULL AND {where} GROUP BY {ref}",
                where_params,
            )
            days = [(_as_date(day), int(n)) for day, n in cur.fetchall()]
            facts = TableFacts.of(cfg, table.contract_column)
            for h in ranges:
                counts[h.pk] = sum(n for day, n in days if covers(h, (), facts, RowFacts(None, day, "")))
    return counts


def _as_date(value: Any) -> dt.date:
    """A DATE column's value as the driver returns it (SQLite: text) as a date."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def held_by_sql(table: ArchiveTable, hold_id: int, alias: str = "a") -> tuple[str, list]:
    """EXISTS: the given hold covers the row, in force or not (the preview and the blocked report)."""
    q = table.backend.quote
    match, params = hold_match_sql(table, alias, "h")
    return f"EXISTS (SELECT 1 FROM {q(Hold._meta.db_table)} h WHERE h.{q('id')} = %s AND {match})", [
        hold_id,
        *params,
    ]


# -- T-SQL (SQL Server procedures) ---------------------------------------------------
# The hold check of sql/05_templates.sql (dispose_batch, and restore_batch's
# held rows), after the template's quotes are undoubled. ``{KEY_TEXT_A}`` is
# archival.fn_key_text (twin: backends.mssql.templates.key_text),
# ``{HOLD_CONTRACT_MATCH}`` the CONTRACT clause when the table carries a
# contract (``tsql_contract_match``). The procedure's variables stand where
# ``hold_match_sql`` has parameters: @source_alias, @schema_name,
# @table_name, @as_of.
TSQL_HOLD_MATCH = """    FROM [dbo].[governance_hold] AS h
    WHERE h.[released_at] IS NULL
        AND (h.[hold_until] IS NULL OR h.[hold_until] >= @as_of)
        AND (
            h.[scope] = N'ALL'
            OR (h.[scope] = N'TABLE' AND h.[source_db] = @source_alias
                AND (h.[schema_name] = @schema_name OR h.[schema_name] = N'') AND h.[table_name] = @table_name)
            OR (h.[scope] = N'DATE_RANGE' AND a.[reference_date] IS NOT NULL
                AND (h.[date_from] IS NULL OR a.[reference_date] >= h.[date_from])
                AND (h.[date_to] IS NULL OR a.[reference_date] <= h.[date_to]))
            OR (h.[scope] = N'KEYS' AND h.[source_db] = @source_alias
                AND (h.[schema_name] = @schema_name OR h.[schema_name] = N'') AND h.[table_name] = @table_name
                AND EXISTS (
                    SELECT 1 FROM [dbo].[governance_holdkey] AS k
                    WHERE k.[hold_id] = h.[id] AND k.[key_text] = {KEY_TEXT_A}
                )){HOLD_CONTRACT_MATCH}
        )"""


def tsql_contract_match(quoted_column: str) -> str:
    """The ``{HOLD_CONTRACT_MATCH}`` clause for a table whose contract column is ``quoted_column``.

    Twin of the text archival.usp_build_sql builds (sql/07_procedures.sql).
    """
    return (
        "\n            OR (h.[scope] = N'CONTRACT' AND h.[source_db] = @source_alias"
        f" AND h.[contract_value] = CONVERT(nvarchar(200), a.{quoted_column})"
        " COLLATE DATABASE_DEFAULT)"
    )
