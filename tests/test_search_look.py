"""The search pages in the admin's look: labels readers understand, errors that say what to do."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.urls import reverse

from tests.search_fixtures import SOURCE, source_schema

DBS = ["default", "archive", "archive_readonly", "SourceDB1", "SourceDB2"]
pytestmark = pytest.mark.django_db(databases=DBS)


def table_url() -> str:
    return reverse("search:table", args=[SOURCE, source_schema(SOURCE), "Position"])


def text_of(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip())


def test_columns_carry_readable_labels_with_the_raw_name_on_hover(client, reader, position_config):
    client.force_login(reader)
    html = client.get(table_url(), {"contractId": 7}).content.decode()
    headers = dict(re.findall(r'<th scope="col" title="([^"]+)"><a [^>]*>([^<]+)</a>', html))
    assert headers["businessDate"] == "Business date"
    assert headers["contractId"] == "Contract id"
    assert headers["reference_date"] == "Reference date"
    # The archive's bookkeeping columns are on the row page, not in the list.
    assert "archived_at" not in headers and "archive_run_id" not in headers
    assert '<div title="businessDate"><label for="id_businessDate">Business date:</label>' in html


def test_the_pages_share_the_admin_header_breadcrumbs_and_stylesheet(client, reader, position_config):
    client.force_login(reader)
    html = client.get(table_url()).content.decode()
    assert "admin/css/base.css" in html
    assert 'id="site-name"' in html and 'class="breadcrumbs"' in html
    crumbs = text_of(html.split('class="breadcrumbs">')[1].split("</div>")[0])
    assert crumbs == f"Archive search › {position_config.label}"
    # A reader is not staff: no link to the admin, a logout of the search.
    assert reverse("admin:index") not in html.split('id="user-tools"')[1].split("</div>")[0]
    assert reverse("search:logout") in html


def test_staff_with_search_access_get_a_link_back_to_the_dashboard(client, auditor, position_config):
    auditor.is_staff = True
    auditor.save(update_fields=["is_staff"])
    client.force_login(auditor)
    tools = client.get(table_url()).content.decode().split('id="user-tools"')[1].split("</div>")[0]
    assert reverse("admin:index") in tools


def test_a_damaged_page_link_is_a_400_page_that_offers_a_fresh_search(client, reader, position_config):
    client.force_login(reader)
    response = client.get(table_url(), {"_after": "not-a-cursor"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Unreadable page cursor." in text_of(html)
    assert "Start again from the first page" in html
    assert f'id="problem-restart" href="{table_url()}"' in html
    assert "admin/css/base.css" in html


def test_a_range_on_a_key_column_is_a_404_page_that_says_how_to_search_it(client, reader, position_config):
    client.force_login(reader)
    response = client.get(table_url(), {"basketId__from": "1"})
    assert response.status_code == 404
    text = text_of(response.content.decode())
    assert "Basket id (basketId) is matched exactly, not by a range" in text
    assert "Start a new search of" in text


def test_an_unknown_table_is_a_404_page_leading_to_the_table_list(client, reader, position_config):
    client.force_login(reader)
    response = client.get(reverse("search:table", args=[SOURCE, source_schema(SOURCE), "Nope"]))
    assert response.status_code == 404
    html = response.content.decode()
    assert "No active config for" in text_of(html)
    assert f'href="{reverse("search:index")}"' in html
