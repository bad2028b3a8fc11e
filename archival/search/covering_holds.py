"""The holds that cover one archived row, read through archive_readonly.

Coverage is ``archival.hold_coverage``'s rule (its Django filter form); this
module reads the row's facts from the search's view of the table and says,
per hold, whether it is in force.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from archival.engine.dates import as_date
from archival.hold_coverage import RowFacts, TableFacts, contract_text, covering_q
from archival.rowkeys import key_text
from archival.search.catalog import READONLY_ALIAS, SearchTable
from governance.models import Hold


def _as_date(value: Any) -> dt.date | None:
    try:
        return as_date(value)
    except ValueError:
        return None


def row_facts(table: SearchTable, row: dict[str, Any]) -> tuple[TableFacts, RowFacts]:
    """The facts hold coverage reads, of ``row`` (column name -> value as the driver returns it)."""
    contract = table.contract_column
    table_facts = TableFacts.of(table.config, contract)
    return table_facts, RowFacts(
        contract_text=contract_text(row.get(contract)) if contract else None,
        reference_date=_as_date(row.get("reference_date")),
        key_text=key_text(
            [row[name] for name in table.key],
            [table.column(name).generic for name in table.key],
            [table.column(name).scale for name in table.key],
        ),
    )


def holds_covering(table: SearchTable, row: dict[str, Any]) -> list[Hold]:
    """Every hold (active or not) whose scope covers ``row``; newest first.

    The caller shows ``is_active`` per hold: a released or expired hold is
    history, not protection.
    """
    table_facts, facts = row_facts(table, row)
    holds = list(
        Hold.objects.using(READONLY_ALIAS).filter(covering_q(table_facts, facts)).distinct().order_by("-placed_at")
    )
    active = {h.pk for h in Hold.objects.using(READONLY_ALIAS).filter(pk__in=[h.pk for h in holds]).active()}
    today = timezone.localdate()
    for hold in holds:
        hold.is_active = hold.pk in active
        hold.status_text = (
            "active"
            if hold.is_active
            else (
                "released"
                if hold.released_at
                else f"expired {hold.hold_until}"
                if hold.hold_until and hold.hold_until < today
                else "inactive"
            )
        )
    return holds
