"""Every page compliance staff use, as each role, at 1366×768 (a common office
laptop) and 1920×1080: the key columns are on screen, nothing runs off the
right edge, and a screenshot of each is saved under ``$ARCHIVAL_DATA_DIR/screenshots``
(CI keeps ``data/`` as its artifacts).

Playwright drives Debian's Chromium; skipped only without /usr/bin/chromium
outside CI.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from governance.models import BatchLedger
from tests.admin_fixtures import PASSWORD, make_config
from tests.search_fixtures import build_search_archive, make_position_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("no Chromium on this machine (apt-get install -y chromium); CI runs this test", allow_module_level=True)

if os.environ.get("CI"):
    from playwright import sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("allow_test_flush_in_module"),
    pytest.mark.browser,
]

VIEWPORTS = [(1366, 768), (1920, 1080)]

# Elements that end right of the viewport and are not inside a scroll box
# that itself fits: what a reader would have to scroll the page sideways for.
OVERFLOWING = """
() => {
  const width = document.documentElement.clientWidth;
  const found = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || box.right <= width + 1) continue;
    if (getComputedStyle(el).visibility === "hidden") continue;
    let parent = el.parentElement, clipped = false;
    while (parent && parent !== document.body) {
      const overflow = getComputedStyle(parent).overflowX;
      if (overflow !== "visible" && parent.getBoundingClientRect().right <= width + 1) { clipped = true; break; }
      parent = parent.parentElement;
    }
    if (!clipped) found.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} right=${Math.round(box.right)}`);
  }
  return found.slice(0, 10);
}
"""


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots() -> Path:
    folder = Path(settings.DATA_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(browser, base: str, username: str, width: int, height: int):
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(15_000)
    login = "/search/login/" if username == "reader" else "/admin/login/"
    page.goto(f"{base}{login}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form [type=submit]")
    page.wait_for_load_state()
    return page


def check_page(page, folder: Path, name: str, width: int, height: int, columns=(), selectors=()) -> None:
    """The page fits the window, its key columns and panels are on screen; a screenshot is kept."""
    page.screenshot(path=str(folder / f"{name}-{width}x{height}.png"), full_page=True)
    assert page.evaluate(OVERFLOWING) == [], f"{name} at {width}px overflows"
    assert page.evaluate("document.documentElement.scrollWidth") <= width, name
    headers = {}
    for th in page.locator("thead th").all():
        text = " ".join((th.text_content() or "").split()).lower()
        if text:
            headers[text] = th
    for column in columns:
        assert column in headers, f"{name}: no column {column!r} in {sorted(headers)}"
        box = headers[column].bounding_box()
        assert headers[column].is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= width, (
            f"{name} at {width}px: column {column!r} is off screen ({box})"
        )
    for selector in selectors:
        element = page.locator(selector).first
        assert element.is_visible(), f"{name}: {selector} not shown"
        box = element.bounding_box()
        assert box["x"] + box["width"] <= width, f"{name} at {width}px: {selector} runs off screen"


@pytest.fixture
def schedules(transactional_db):
    """The migration's schedules, again: a live-server test's flush empties them."""
    from django_q.models import Schedule

    from archival.schedules import ensure_schedules

    ensure_schedules(Schedule)


@pytest.fixture
def estate(schedules, objects):
    """The admin fixture's objects (a failed table, a hold, a batch waiting for
    approval, a retention change) plus a week of archived rows for the chart
    and an archived table for the search."""
    BatchLedger.objects.create(
        run_id=objects["archivalrun"].pk,
        config_id=objects["tableconfig"].pk,
        table_label=str(objects["tableconfig"]),
        batch_no=1,
        key_low=[1],
        key_high=[10],
        row_count=181_663,
        state="DELETED",
        committed_at=timezone.now() - dt.timedelta(days=1),
    )
    # Rebuilt here rather than through the session fixture: tests between this
    # module and the search modules drop every archive table.
    build_search_archive()
    objects["position"] = make_position_config()
    return objects


def admin_pages(objects) -> list[tuple[str, str, str, tuple, tuple]]:
    config, run, restore = objects["tableconfig"], objects["archivalrun"], objects["restorerequest"]
    return [
        # (persona, page name, url, key columns, key panels)
        (
            "compliance",
            "dashboard",
            "/admin/",
            (),
            (
                "#estate-line",
                "#dashboard-attention",
                "#dashboard-holds",
                "#dashboard-restores",
                "#dashboard-schedule",
                "#dashboard-chart",
            ),
        ),
        (
            "compliance",
            "holds",
            "/admin/governance/hold/",
            ("covers", "reason", "review by", "hold until", "status"),
            (),
        ),
        (
            "compliance",
            "disposal-batches",
            "/admin/governance/disposalbatch/",
            ("table label", "rows", "status", "approvals", "planned by", "planned at", "deleted"),
            (),
        ),
        (
            "compliance",
            "table-configs",
            "/admin/governance/tableconfig/",
            ("table", "years in archive", "active", "last run outcome", "rows archived"),
            (),
        ),
        ("compliance", "audit", "/admin/governance/auditevent/", ("actor", "action", "table label", "run id"), ()),
        (
            "compliance",
            "run",
            f"/admin/governance/archivalrun/{run.pk}/change/",
            (),
            ("#run-summary", "#run-attention"),
        ),
        ("compliance", "config", f"/admin/governance/tableconfig/{config.pk}/change/", (), ("fieldset",)),
        ("compliance", "hold-add", "/admin/governance/hold/add/", (), ("#id_scope",)),
        ("administrator", "dashboard", "/admin/", (), ("#estate-line", "#dashboard-chart")),
        (
            "administrator",
            "table-configs",
            "/admin/governance/tableconfig/",
            ("table", "years in archive", "active", "last run outcome", "rows archived"),
            (),
        ),
        (
            "administrator",
            "runs",
            "/admin/governance/archivalrun/",
            ("cutoff", "status", "failed", "rows archived"),
            (),
        ),
        ("administrator", "config-export", "/admin/governance/tableconfig/export/", (), ("input.select-toggle",)),
        ("auditor", "dashboard", "/admin/", (), ("#estate-line", "#dashboard-holds")),
        ("auditor", "audit", "/admin/governance/auditevent/", ("actor", "action", "table label", "run id"), ()),
        # Restore: the requests, one request's page (a failed execution: its
        # progress and the way to execute again), the request form, batches and certificates.
        (
            "administrator",
            "restore-requests",
            "/admin/governance/restorerequest/",
            ("table label", "rows", "status", "requested by", "decided by", "planned", "restored"),
            (),
        ),
        (
            "administrator",
            "restore-request",
            f"/admin/governance/restorerequest/{restore.pk}/change/",
            (),
            ("#restore-summary", "#restore-plan", "#restore-execute"),
        ),
        ("administrator", "restore-add", "/admin/governance/restorerequest/add/", (), ("#id_config", "#id_selection")),
        (
            "compliance",
            "restore-requests",
            "/admin/governance/restorerequest/",
            ("table label", "rows", "status", "requested by", "planned"),
            (),
        ),
        (
            "auditor",
            "restore-batches",
            "/admin/governance/restoreledger/",
            ("request", "table label", "rows", "skipped", "deleted", "held", "state", "committed at"),
            (),
        ),
        (
            "auditor",
            "restore-certificates",
            "/admin/governance/restorecertificate/",
            ("request", "table label", "rows", "held", "digest", "approved by", "executed at"),
            (),
        ),
    ]


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_every_admin_page_fits_and_shows_its_key_columns_per_role(
    live_server, browser, personas, estate, screenshots, width, height
):
    pages = {}
    for persona, name, url, columns, selectors in admin_pages(estate):
        page = pages.get(persona) or sign_in(browser, live_server.url, persona, width, height)
        pages[persona] = page
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, (persona, url)
        check_page(page, screenshots, f"{persona}-{name}", width, height, columns, selectors)
    for page in pages.values():
        page.context.close()


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_every_search_page_fits_and_shows_its_key_columns(
    live_server, browser, personas, estate, screenshots, width, height
):
    page = sign_in(browser, live_server.url, "reader", width, height)
    base = f"{live_server.url}/search/"
    page.goto(base)
    check_page(page, screenshots, "reader-search-index", width, height, ("table", "source database", "archive"))
    table = f"{base}SourceDB1/{estate['position'].schema_name}/Position/"
    page.goto(f"{table}?contractId=7")
    check_page(
        page,
        screenshots,
        "reader-search-results",
        width,
        height,
        ("basket id", "position id", "business date", "contract id"),
        ("#search-form", "#results"),
    )
    page.locator("#results a", has_text="detail").first.click()
    page.wait_for_selector("#archive-metadata")
    check_page(page, screenshots, "reader-search-row", width, height, (), ("#row-values", "#archive-metadata"))
    response = page.goto(f"{table}?_after=damaged")
    assert response.status == 400
    check_page(page, screenshots, "reader-search-bad-link", width, height, (), ("#problem", "#problem-restart"))
    page.context.close()


def test_the_export_select_all_toggle_works_under_the_content_security_policy(live_server, browser, personas, estate):
    page = sign_in(browser, live_server.url, "administrator", 1366, 768)
    response = page.goto(f"{live_server.url}/admin/governance/tableconfig/export/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    fields = page.locator('.selectable-field-export-row input[type="checkbox"]')
    assert fields.count() > 5
    assert all(box.is_checked() for box in fields.all())
    page.uncheck("input.select-toggle")
    assert not any(box.is_checked() for box in fields.all())
    page.check("input.select-toggle")
    assert all(box.is_checked() for box in fields.all())
    page.context.close()


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_the_config_import_shows_failed_rows_first_and_fits(live_server, browser, personas, screenshots, width, height):
    from archival.demo import DemoSize, build_demo
    from tests.admin_fixtures import sample_csv

    build_demo(
        DemoSize(positions=50, contracts=10, trades=20, prices=20, generated_tables=0, generated_rows=0), configs=False
    )
    bad = screenshots.parent / "configs-with-a-bad-row.csv"
    bad.write_bytes(sample_csv().replace(b"settlementDate", b"settledOn"))
    good = screenshots.parent / "configs.csv"
    good.write_bytes(sample_csv())
    page = sign_in(browser, live_server.url, "administrator", width, height)
    for name, upload in (("config-import-errors", bad), ("config-import-preview", good)):
        page.goto(f"{live_server.url}/admin/governance/tableconfig/import/")
        page.set_input_files("#id_import_file", str(upload))
        page.select_option("#id_format", "0")
        page.click("input[type=submit]")
        page.wait_for_load_state()
        if name == "config-import-errors":
            check_page(
                page,
                screenshots,
                f"administrator-{name}",
                width,
                height,
                ("column", "value in the file", "error"),
                ("#import-row-3",),
            )
            assert "settledOn" in page.inner_text("#import-row-3 tbody")
        else:
            check_page(page, screenshots, f"administrator-{name}", width, height, (), ("input[name=confirm]",))
    page.context.close()


def test_a_compliance_officer_holds_rows_found_in_the_search(live_server, browser, personas, estate, screenshots):
    from governance.models import Hold, HoldKey

    page = sign_in(browser, live_server.url, "compliance", 1366, 768)
    page.goto(f"{live_server.url}/admin/governance/hold/add/")
    # Only the chosen scope's fields show.
    page.select_option("#id_scope", "CONTRACT")
    assert page.locator("#id_source_db").is_visible() and not page.locator("#id_table").is_visible()
    page.select_option("#id_scope", "KEYS")
    assert page.locator("#id_table").is_visible() and page.locator("#id_keys").is_visible()
    assert not page.locator("#id_contract_value").is_visible()

    position = estate["position"]
    page.goto(f"{live_server.url}/search/SourceDB1/{position.schema_name}/Position/?contractId=7")
    boxes = page.locator("#results input[name=keys]")
    chosen = [boxes.nth(0).get_attribute("value"), boxes.nth(1).get_attribute("value")]
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("#hold-selected")
    page.wait_for_selector("#id_keys")
    assert page.input_value("#id_keys").splitlines() == chosen
    assert page.input_value("#id_scope") == "KEYS"
    page.fill("#id_reason", "Matter 7: two positions under review")
    page.click("#hold-preview-button")
    page.wait_for_selector("#hold-preview")
    assert "cover 2 archived rows" in page.inner_text("#hold-preview").lower()
    check_page(page, screenshots, "compliance-hold-preview", 1366, 768, (), ("#hold-preview",))
    assert not Hold.objects.filter(scope="KEYS").exists()
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/governance/hold/")
    hold = Hold.objects.get(scope="KEYS")
    assert hold.scope == "KEYS" and hold.table_name == "Position" and hold.placed_by == "compliance"
    assert HoldKey.objects.filter(hold=hold).count() == 2
    page.context.close()


@pytest.fixture
def archived_trades(personas):
    """Ten trades of 2015 archived by a run (the config keeps one month in the source)."""
    from archival.engine import run_cycle
    from tests.admin_fixtures import create_source_table, drop_source_table
    from tests.engine_fixtures import drop_archive_tables

    create_source_table(table="rst_trade")
    config = make_config(table_name="rst_trade", months_retention_source=1)
    run_cycle(cutoff=dt.date(2026, 1, 1))
    yield config
    drop_source_table(table="rst_trade")
    drop_archive_tables()


def test_a_restore_is_asked_for_approved_and_executed_on_the_workers(
    live_server, browser, personas, archived_trades, screenshots, monkeypatch
):
    """An administrator asks for trades 3 to 6 back and sees the preview; a
    compliance officer approves with a comment; the administrator executes it
    on the workers (django-q2 in sync mode: the enqueued task runs at once, in
    the live server's thread) and the page shows the rows restored and the
    certificate."""
    from django.db import connections
    from django_q.conf import Conf

    from governance.models import RestoreCertificate, RestoreRequest

    config = archived_trades
    admin_page = sign_in(browser, live_server.url, "administrator", 1366, 768)
    admin_page.goto(f"{live_server.url}/admin/governance/restorerequest/add/")
    admin_page.select_option("#id_config", str(config.pk))
    admin_page.select_option("#id_selection", "CONTRACT")
    assert admin_page.locator("#id_contract_value").is_visible() and not admin_page.locator("#id_key_from").is_visible()
    admin_page.select_option("#id_selection", "KEY_RANGE")
    assert admin_page.locator("#id_key_from").is_visible() and not admin_page.locator("#id_keys").is_visible()
    admin_page.fill("#id_key_from", "3")
    admin_page.fill("#id_key_to", "6")
    admin_page.fill("#id_reason", "Ticket 4711: recalculation of the 2015 trades")
    admin_page.click("input[name=_save]")
    admin_page.wait_for_selector("#restore-plan")
    restore = RestoreRequest.objects.get()
    assert "4 archived rows selected" in admin_page.inner_text("#restore-summary")
    assert "fix the config first" in admin_page.inner_text("#restore-problems")
    assert admin_page.locator("#restore-approve").count() == 0
    check_page(admin_page, screenshots, "administrator-restore-preview", 1366, 768, (), ("#restore-plan",))

    officer = sign_in(browser, live_server.url, "compliance", 1366, 768)
    officer.goto(f"{live_server.url}/admin/governance/restorerequest/{restore.pk}/change/")
    officer.click("#restore-approve")
    officer.wait_for_selector("#id_comment")
    officer.fill("#id_comment", "Checked with the desk: restore for the recalculation")
    officer.click("#confirm-action")
    officer.wait_for_selector("#restore-summary")
    assert "approved" in officer.inner_text(".messagelist").lower()
    restore.refresh_from_db()
    assert (restore.status, restore.decided_by) == ("APPROVED", "compliance")
    officer.context.close()

    monkeypatch.setattr(Conf, "SYNC", True)
    admin_page.goto(f"{live_server.url}/admin/governance/restorerequest/{restore.pk}/change/")
    admin_page.click("#restore-execute")
    admin_page.wait_for_selector("#confirm-action")
    admin_page.click("#confirm-action")
    admin_page.wait_for_selector("#restore-summary")
    assert "queued for the workers" in admin_page.inner_text(".messagelist")
    admin_page.click("#restore-refresh")
    admin_page.wait_for_selector("#restore-plan")
    restore.refresh_from_db()
    assert restore.status == "COMPLETED", restore.last_error
    certificate = RestoreCertificate.objects.get(request_id=restore.pk)
    plan = admin_page.inner_text("#restore-plan")
    assert "Restored (certificate issued)" in plan and str(certificate.pk) in plan
    check_page(admin_page, screenshots, "administrator-restore-completed", 1366, 768, (), ("#restore-plan",))
    with connections["SourceDB1"].cursor() as cur:
        cur.execute('SELECT "tradeId" FROM "rst_trade" ORDER BY 1')
        assert [row[0] for row in cur.fetchall()] == [3, 4, 5, 6]
    admin_page.context.close()
