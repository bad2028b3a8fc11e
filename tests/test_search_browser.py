"""Archive search in a real browser (Playwright driving Debian's Chromium).

Skipped only when /usr/bin/chromium is absent and CI is not set: in CI a
missing browser is a failure, not a skip.
"""

from __future__ import annotations

import csv
import io
import os
import shutil

import pytest
from playwright import sync_api

from tests.search_fixtures import CONTRACTS, PASSWORD, POSITIONS, make_persona, make_position_config, maturity

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)


pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "archive", "archive_readonly", "SourceDB1"]),
    pytest.mark.usefixtures("allow_test_flush_in_module", "search_archive"),
]

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an event loop; Django must not mistake the
    # test thread for async code when the ORM is used beside it.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/search/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_a_reader_finds_a_position_opens_it_and_exports_the_csv(page, live_server):
    make_position_config()
    make_persona("reader", "view_archive_search", "export_archive_search")
    sign_in(page, live_server, "reader")
    page.wait_for_url("**/search/")
    page.click("text=Position")
    page.wait_for_selector("#search-form")

    day = maturity(7)
    page.fill("input[name=contractId]", "7")
    page.fill("input[name=reference_date__from]", day.isoformat())
    page.fill("input[name=reference_date__to]", day.isoformat())
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#results")
    rows = page.locator("#results tbody tr")
    assert rows.count() == POSITIONS // CONTRACTS
    assert "contractId=7" in page.url

    rows.first.locator("a", has_text="detail").click()
    page.wait_for_selector("#archive-metadata")
    metadata = page.inner_text("#archive-metadata")
    # Labels a reader understands; the raw column name on hover.
    for label, name in (
        ("Archived at", "archived_at"),
        ("Archive run", "archive_run_id"),
        ("Reference date", "reference_date"),
        ("Kept until", "retention_until"),
    ):
        assert label in metadata
        assert page.get_attribute(f"#archive-metadata th:has-text('{label}')", "title") == name
    assert day.isoformat() in metadata
    assert "No hold covers this row." in page.inner_text("body")

    page.go_back()
    page.wait_for_selector("#export-link")
    with page.expect_download() as download_info:
        page.click("#export-link")
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), encoding="utf-8") as handle:
        exported = list(csv.reader(io.StringIO(handle.read())))
    assert len(exported) == POSITIONS // CONTRACTS + 1
    contract = exported[0].index("contractId")
    assert {row[contract] for row in exported[1:]} == {"7"}


def test_an_outsider_is_refused(page, live_server):
    make_position_config()
    make_persona("outsider")
    sign_in(page, live_server, "outsider")
    page.wait_for_load_state()
    response = page.goto(f"{live_server.url}/search/")
    assert response.status == 403
    assert "Position" not in page.content()


def test_a_reader_cannot_reach_the_admin(page, live_server):
    make_persona("reader", "view_archive_search", "export_archive_search")
    sign_in(page, live_server, "reader")
    page.wait_for_url("**/search/")
    page.goto(f"{live_server.url}/admin/")
    assert "/admin/login/" in page.url
    assert "Site administration" not in page.content()
