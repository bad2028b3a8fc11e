"""The holds that cover one archived row, read through archive_readonly.

Matches every scope DESIGN.md defines: all tables; the row's table; its
contract (the config's contract column, within its source database); its
reference date inside a date range; its key listed in a KEYS hold (canonical
key text: components in key order joined by a tab, dates ISO 8601).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Q
from django.utils import timezone

from archival.search.catalog import READONLY_ALIAS, SearchTable
from archival.search.query import value_text
from governance.models import Hold, HoldScope


def canonical_key_text(values: list[Any]) -> str:
    return "\t".join(value_text(v) or "" for v in values)


def _as_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def holds_covering(table: SearchTable, row: dict[str, Any]) -> list[Hold]:
    """Every hold (active or not) whose scope covers ``row``; newest first.

    The caller shows ``is_active`` per hold: a released or expired hold is
    history, not protection.
    """
    config = table.config
    same_table = Q(source_db=config.source_db, schema_name=config.schema_name, table_name=config.table_name)
    cover = Q(scope=HoldScope.ALL) | (Q(scope=HoldScope.TABLE) & same_table)
    if table.contract_column and row.get(table.contract_column) is not None:
        cover |= Q(
            scope=HoldScope.CONTRACT,
            source_db=config.source_db,
            contract_value=value_text(row[table.contract_column]),
        )
    reference = _as_date(row.get("reference_date"))
    if reference is not None:
        cover |= (
            Q(scope=HoldScope.DATE_RANGE)
            & (Q(date_from__isnull=True) | Q(date_from__lte=reference))
            & (Q(date_to__isnull=True) | Q(date_to__gte=reference))
        )
    key_text = canonical_key_text([row[name] for name in table.key])
    cover |= Q(scope=HoldScope.KEYS, keys__key_text=key_text) & same_table
    holds = list(Hold.objects.using(READONLY_ALIAS).filter(cover).distinct().order_by("-placed_at"))
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
