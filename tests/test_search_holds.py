"""The row detail page lists the holds that cover the row, whatever their scope."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from governance.models import Hold, HoldKey, HoldScope
from tests.search_fixtures import SOURCE, make_persona, make_position_config, maturity, source_schema

# Holds must be committed: the page reads them through the archive_readonly connection.
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "archive", "archive_readonly", "SourceDB1"]),
    pytest.mark.usefixtures("allow_test_flush_in_module", "search_archive"),
]

# Row i=6 of the fixture: basket 0, position 6, business date 2015-01-07, contract 7.
KEY = {"basketId": 0, "positionId": 6, "businessDate": "2015-01-07"}


def place(**fields) -> Hold:
    hold = Hold(reason=fields.pop("reason", "litigation"), placed_by="compliance", **fields)
    hold.full_clean()
    hold.save()
    return hold


def holds_shown(client) -> set[int]:
    url = reverse("search:row", args=[SOURCE, source_schema(SOURCE), "Position"])
    response = client.get(url, KEY)
    assert response.status_code == 200
    table = response.content.decode().split('id="holds"', 1)
    if len(table) == 1:
        return set()
    return {int(n) for n in re.findall(r"<tr><td>(\d+)</td>", table[1])}


def test_the_detail_page_shows_every_hold_covering_the_row_and_only_those(client):
    make_position_config()
    client.force_login(make_persona("reader", "view_archive_search"))
    schema = source_schema(SOURCE)
    ref = maturity(7)
    covering = {
        place(scope=HoldScope.ALL, reason="regulator request").pk,
        place(scope=HoldScope.TABLE, source_db=SOURCE, schema_name=schema, table_name="Position").pk,
        place(scope=HoldScope.CONTRACT, source_db=SOURCE, contract_value="7").pk,
        place(scope=HoldScope.DATE_RANGE, date_from=ref - dt.timedelta(days=1), date_to=ref).pk,
    }
    keys = place(scope=HoldScope.KEYS, source_db=SOURCE, schema_name=schema, table_name="Position")
    key = HoldKey(hold=keys, key_text="0\t6\t2015-01-07")
    key.full_clean()
    key.save()
    covering.add(keys.pk)
    other_key = place(scope=HoldScope.KEYS, source_db=SOURCE, schema_name=schema, table_name="Position")
    HoldKey(hold=other_key, key_text="0\t7\t2015-01-08").save()
    not_covering = {
        place(scope=HoldScope.TABLE, source_db=SOURCE, schema_name=schema, table_name="Contract").pk,
        place(scope=HoldScope.CONTRACT, source_db=SOURCE, contract_value="8").pk,
        place(scope=HoldScope.CONTRACT, source_db="SourceDB2", contract_value="7").pk,
        place(scope=HoldScope.DATE_RANGE, date_from=ref + dt.timedelta(days=1), date_to=ref + dt.timedelta(days=9)).pk,
        other_key.pk,
    }
    shown = holds_shown(client)
    assert shown == covering
    assert not shown & not_covering


def test_a_released_hold_is_shown_as_released_not_active(client):
    make_position_config()
    client.force_login(make_persona("reader", "view_archive_search"))
    hold = place(scope=HoldScope.CONTRACT, source_db=SOURCE, contract_value="7")
    Hold.objects.filter(pk=hold.pk).update(
        released_at=timezone.now(), released_by="compliance", release_reason="closed"
    )
    url = reverse("search:row", args=[SOURCE, source_schema(SOURCE), "Position"])
    html = client.get(url, KEY).content.decode()
    assert f"<tr><td>{hold.pk}</td><td>released</td>" in html
