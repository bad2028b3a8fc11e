"""In a real browser (Playwright + Debian's Chromium): a compliance officer
places a contract hold, sees it on the dashboard and releases it with a
reason; an archive reader is refused the admin.

Skipped only on a machine without /usr/bin/chromium and without CI set; in
CI a missing browser is a failure. Install: ``apt-get install -y chromium``
and ``pip install -r requirements-dev.txt`` (playwright; no browser download:
the test drives the system Chromium).
"""

from __future__ import annotations

import os
import shutil

import pytest

from governance.models import Hold
from tests.admin_fixtures import PASSWORD, SOURCE, make_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)

if not HAVE_CHROMIUM and not os.environ.get("CI"):
    pytest.skip("no Chromium on this machine (apt-get install -y chromium); CI runs this test", allow_module_level=True)

if os.environ.get("CI"):
    from playwright import sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api")

# live_server runs in another thread; the test database must be a real file
# shared by both, and rows must commit: transactional_db.
pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("admin_allow_test_flush"),
]


@pytest.fixture(autouse=True)
def _allow_sync_orm_in_playwright_loop(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls
    # the test makes between browser steps are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def test_a_compliance_officer_places_sees_and_releases_a_contract_hold(live_server, browser, personas, source_table):
    make_config()
    page = browser.new_page()
    log_in(page, live_server.url, "compliance")
    assert page.locator("#dashboard").is_visible()

    page.goto(f"{live_server.url}/admin/governance/hold/add/")
    page.select_option("#id_scope", "CONTRACT")
    page.select_option("#id_source_db", SOURCE)
    page.fill("#id_contract_value", "C-2024-0042")
    page.fill("#id_reason", "Litigation hold: matter 2024-0042")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/governance/hold/")
    hold = Hold.objects.get(contract_value="C-2024-0042")

    page.goto(f"{live_server.url}/admin/")
    holds_panel = page.locator("#dashboard-holds")
    assert "C-2024-0042" in holds_panel.inner_text()

    page.goto(f"{live_server.url}/admin/governance/hold/")
    page.check(f"input[name=_selected_action][value='{hold.pk}']")
    page.select_option("select[name=action]", "release_holds")
    page.click("button[name=index]")
    # The action's own confirmation: the hold, a mandatory reason, one button.
    page.wait_for_selector("#id_reason")
    assert "C-2024-0042" in page.inner_text("#confirm-objects")
    page.fill("#id_reason", "Matter 2024-0042 settled; counsel approved release")
    page.click("#confirm-action")
    page.wait_for_selector(".messagelist")
    assert "Released 1 hold" in page.inner_text(".messagelist")

    hold.refresh_from_db()
    assert hold.released_by == "compliance"
    assert hold.release_reason.startswith("Matter 2024-0042 settled")
    page.goto(f"{live_server.url}/admin/")
    assert "C-2024-0042" not in page.locator("#dashboard-holds").inner_text()


def test_an_archive_reader_is_refused_the_admin(live_server, browser, personas):
    page = browser.new_page()
    log_in(page, live_server.url, "reader")
    # Not staff: the admin keeps the reader on its login page with an error.
    assert "/admin/login/" in page.url
    assert page.locator(".errornote").is_visible()
    page.goto(f"{live_server.url}/admin/governance/hold/")
    assert "/admin/login/" in page.url
