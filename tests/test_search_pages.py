"""Archive search pages: who may see them, what they find, how they page."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from governance.models import AuditEvent, TableConfig
from tests.search_fixtures import CONTRACTS, POSITIONS, SOURCE, maturity, source_schema

DBS = ["default", "archive", "archive_readonly", "SourceDB1", "SourceDB2"]
pytestmark = pytest.mark.django_db(databases=DBS)


def table_url(name: str = "Position", source: str = SOURCE, schema: str | None = None) -> str:
    return reverse("search:table", args=[source, schema or source_schema(SOURCE), name])


def row_links(html: str) -> list[dict[str, list[str]]]:
    return [parse_qs(m.replace("&amp;", "&")) for m in re.findall(r'row/\?([^"]+)"', html)]


# -- access ---------------------------------------------------------------------
def test_an_anonymous_visitor_is_sent_to_the_login_page(client, position_config):
    response = client.get(table_url())
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("search:login"))


@pytest.mark.parametrize("page", ["index", "table", "row", "export"])
def test_an_outsider_is_refused_every_page(client, outsider, position_config, page):
    client.force_login(outsider)
    args = [] if page == "index" else [SOURCE, source_schema(SOURCE), "Position"]
    query = "?basketId=0&positionId=1&businessDate=2015-01-02" if page == "row" else ""
    response = client.get(reverse(f"search:{page}", args=args) + query)
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action__startswith="archive.").exists()


def test_a_reader_without_the_export_permission_cannot_export(client, reader, position_config):
    client.force_login(reader)
    page = client.get(table_url())
    assert "Export CSV" not in page.content.decode()
    response = client.get(reverse("search:export", args=[SOURCE, source_schema(SOURCE), "Position"]))
    assert response.status_code == 403


def test_a_reader_signs_in_on_the_search_login_page(client, reader, position_config):
    response = client.post(
        reverse("search:login"), {"username": "reader", "password": "correct horse battery staple 42"}, follow=True
    )
    assert response.status_code == 200
    assert response.resolver_match.url_name == "index"


def test_a_reader_cannot_reach_the_admin(client, reader):
    client.force_login(reader)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# -- unconfigured names are 404s, before any archive query -------------------
def test_an_unconfigured_table_is_a_404_without_touching_the_archive(client, auditor, position_config):
    client.force_login(auditor)
    with CaptureQueriesContext(connections["archive_readonly"]) as archive_queries:
        for url in (
            table_url("sqlite_master"),
            table_url("Position", schema="other"),
            table_url("Position", source="default"),
            table_url("Position", source="NoSuchDB"),
            reverse("search:export", args=[SOURCE, source_schema(SOURCE), "Contract"]),
        ):
            assert client.get(url).status_code == 404, url
    assert archive_queries.captured_queries == []


def test_an_inactive_config_is_not_searchable(client, reader, position_config):
    TableConfig.objects.filter(pk=position_config.pk).update(is_active=False)
    client.force_login(reader)
    assert client.get(table_url()).status_code == 404


def test_an_unknown_filter_or_sort_column_is_a_404_and_runs_no_data_query(client, reader, position_config):
    client.force_login(reader)
    with CaptureQueriesContext(connections["archive_readonly"]) as archive_queries:
        for query in ({"password": "x"}, {"_sort": "1; DROP TABLE x"}, {"basketId__from": "1"}, {"_sort": "nosuch"}):
            assert client.get(table_url(), query).status_code == 404, query
    data_reads = [
        q["sql"] for q in archive_queries.captured_queries if '"Position"' in q["sql"] and "SELECT" in q["sql"]
    ]
    assert data_reads == []
    assert not AuditEvent.objects.filter(action="archive.search").exists()


def test_a_row_url_must_name_the_whole_key(client, reader, position_config):
    client.force_login(reader)
    row = reverse("search:row", args=[SOURCE, source_schema(SOURCE), "Position"])
    assert client.get(row, {"basketId": 0, "positionId": 1}).status_code == 404
    assert client.get(row, {"basketId": 0, "positionId": 1, "businessDate": "2015-01-02", "x": 1}).status_code == 404
    assert client.get(row, {"basketId": 9, "positionId": 1, "businessDate": "2015-01-02"}).status_code == 404
    assert client.get(row, {"basketId": "zero", "positionId": 1, "businessDate": "2015-01-02"}).status_code == 400


# -- finding rows -----------------------------------------------------------------
def test_the_index_lists_archived_and_not_yet_archived_tables(client, reader, position_config):
    TableConfig.objects.create(
        source_db=SOURCE, schema_name=source_schema(SOURCE), table_name="Contract", date_column="maturityDate"
    )
    client.force_login(reader)
    html = client.get(reverse("search:index")).content.decode()
    assert table_url() in html
    assert "Contract" in html and "nothing archived yet" in html


def test_the_form_is_generated_from_the_live_columns(client, reader, position_config):
    client.force_login(reader)
    html = client.get(table_url()).content.decode()
    # exact on key and contract columns, ranges on dates and numbers, contains on text
    for name in (
        "basketId",
        "positionId",
        "businessDate",
        "contractId",
        "archive_run_id",
        "book",
        "trader",
        "currency",
    ):
        assert f'name="{name}"' in html, name
    for name in ("quantity__from", "price__to", "reference_date__from", "retention_until__to", "archived_at__from"):
        assert f'name="{name}"' in html, name
    assert 'name="businessDate__from"' not in html  # a key column is matched exactly


def test_a_reader_finds_positions_by_contract_and_reference_date_range(client, reader, position_config):
    client.force_login(reader)
    day = maturity(7)
    response = client.get(table_url(), {"contractId": 7, "reference_date__from": day, "reference_date__to": day})
    rows = row_links(response.content.decode())
    assert len(rows) == POSITIONS // CONTRACTS
    assert {r["positionId"][0] for r in rows} >= {"6"}
    event = AuditEvent.objects.get(action="archive.search")
    assert event.actor == "reader"
    assert event.table_label == position_config.label
    assert event.counts == {"rows": POSITIONS // CONTRACTS}
    assert {"column": "contractId", "op": "=", "value": "7"} in event.details["filters"]


def test_text_filters_match_contains_and_treat_wildcards_as_text(client, reader, position_config):
    client.force_login(reader)
    assert len(row_links(client.get(table_url(), {"book": "ook03"}).content.decode())) > 0
    assert row_links(client.get(table_url(), {"book": "BOOK_3"}).content.decode()) == []
    assert row_links(client.get(table_url(), {"book": "%"}).content.decode()) == []


def test_an_invalid_filter_value_shows_the_form_error_and_runs_no_query(client, reader, position_config):
    client.force_login(reader)
    response = client.get(table_url(), {"quantity__from": "lots"})
    assert response.status_code == 400
    assert "Enter a number" in response.content.decode()
    assert not AuditEvent.objects.filter(action="archive.search").exists()


def _follow(client, url: str, rel: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Follow rel=next/prev links to the end; return every row key in page order, and each page's cells."""
    keys: list[tuple[str, str, str]] = []
    for _ in range(200):
        html = client.get(url).content.decode()
        page = [(r["basketId"][0], r["positionId"][0], r["businessDate"][0]) for r in row_links(html)]
        keys += page if rel == "next" else page[::-1]
        match = re.search(rf'<a href="(\?[^"]+)" rel="{rel}"', html)
        if not match:
            return keys, html
        url = table_url() + match.group(1).replace("&amp;", "&")
    raise AssertionError("paging did not end")


def _walk(client, params: dict) -> list[tuple[str, str, str]]:
    return _follow(client, table_url() + "?" + urlencode(params), "next")[0]


SORTS = [
    {},
    {"_sort": "book"},
    {"_sort": "quantity", "_dir": "desc"},
    {"_sort": "businessDate"},
    {"_sort": "trader"},
    {"_sort": "reference_date", "_dir": "desc"},
]


@pytest.mark.parametrize("sort", SORTS)
def test_keyset_pages_visit_every_row_once_in_order(client, reader, position_config, settings, sort):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "PAGE_SIZE": 45}
    client.force_login(reader)
    keys = _walk(client, sort)
    assert len(keys) == POSITIONS
    assert len(set(keys)) == POSITIONS
    if not sort:
        assert keys == sorted(keys, key=lambda k: (int(k[0]), int(k[1]), k[2]))


@pytest.mark.parametrize("sort", [{"_sort": "trader"}, {"_sort": "reference_date", "_dir": "desc"}])
def test_rows_without_a_value_come_last_in_key_order(client, reader, position_config, settings, sort):
    """NULLs last in both directions; among them the key breaks ties, in the sort's direction."""
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "PAGE_SIZE": 45}
    client.force_login(reader)
    keys = _walk(client, sort)
    without = [(str(b), str(p)) for b, p in (divmod(i, 200) for i in range(0, POSITIONS, 50))]
    if sort.get("_dir") == "desc":
        without.reverse()
    assert [k[:2] for k in keys[-len(without) :]] == without


@pytest.mark.parametrize("sort", SORTS)
def test_previous_links_walk_back_through_the_same_rows(client, reader, position_config, settings, sort):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "PAGE_SIZE": 45}
    client.force_login(reader)
    forward, last_html = _follow(client, table_url() + "?" + urlencode(sort), "next")
    # Start from the last page reached and follow Previous to the first page.
    last_page = [(r["basketId"][0], r["positionId"][0], r["businessDate"][0]) for r in row_links(last_html)]
    prev = re.search(r'<a href="(\?[^"]+)" rel="prev"', last_html).group(1).replace("&amp;", "&")
    backward, _ = _follow(client, table_url() + prev, "prev")
    assert backward[::-1] + last_page == forward


def test_no_page_uses_offset_or_counts_the_table(client, reader, position_config, settings):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "PAGE_SIZE": 50}
    client.force_login(reader)
    with CaptureQueriesContext(connections["archive_readonly"]) as archive_queries:
        _walk(client, {"_sort": "trader"})
    sql = " ".join(q["sql"].upper() for q in archive_queries.captured_queries)
    assert "OFFSET" not in sql
    assert "COUNT(" not in sql
    assert "LIMIT" in sql


def test_previous_returns_the_page_before(client, reader, position_config, settings):
    settings.ARCHIVAL_SEARCH = {**settings.ARCHIVAL_SEARCH, "PAGE_SIZE": 10}
    client.force_login(reader)
    first = client.get(table_url()).content.decode()
    next_url = re.search(r'<a href="(\?[^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = client.get(table_url() + next_url).content.decode()
    prev_url = re.search(r'<a href="(\?[^"]+)" rel="prev"', second).group(1).replace("&amp;", "&")
    again = client.get(table_url() + prev_url).content.decode()
    assert row_links(again) == row_links(first)
    assert row_links(second) != row_links(first)


def test_a_tampered_cursor_is_a_bad_request(client, reader, position_config):
    client.force_login(reader)
    assert client.get(table_url(), {"_after": "not-a-cursor"}).status_code == 400


# -- the row detail page ------------------------------------------------------------
def test_the_detail_page_shows_archive_metadata_and_no_holds(client, reader, position_config):
    client.force_login(reader)
    html = client.get(table_url(), {"contractId": 7}).content.decode()
    link = re.search(r'href="([^"]*row/\?[^"]+)"', html).group(1).replace("&amp;", "&")
    detail = client.get(link)
    assert detail.status_code == 200
    text = detail.content.decode()
    for label in ("archived_at", "archive_run_id", "retention_until", "reference_date"):
        assert label in text
    assert str(maturity(7)) in text and str(maturity(7).replace(year=maturity(7).year + 10)) in text
    assert "No hold covers this row." in text
    event = AuditEvent.objects.get(action="archive.view_row")
    assert event.details["key"]["basketId"] == parse_qs(urlparse(link).query)["basketId"][0]
