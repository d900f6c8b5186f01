"""The status page in a real headless browser (Debian's chromium driven by Playwright) over a
real gunicorn: the colours an operator sees, the rerun command of a failed day, a phone-sized
screen, and screenshots under the test's tmp_path.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``; or set JANKYCRON_TEST_CHROMIUM)
and the ``playwright`` package (the ``test`` extra). Never ``playwright install``: the browser is
the distribution's. Without them this test fails, saying so; it does not skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import gunicorn
from test_status_page import SCRIPT, failed_run, loaded_run, write_jobs

from jankycron.ledger import Ledger
from jankycron.schedule import Interval

CHROMIUM = os.environ.get("JANKYCRON_TEST_CHROMIUM", "/usr/bin/chromium")
USER, PASSWORD = "ops", "browser-pw"
COLOURS = {  # jankycron/static/status.css
    "success": "rgb(46, 125, 50)",
    "deadletters": "rgb(249, 168, 37)",
    "failed": "rgb(198, 40, 40)",
    "running": "rgb(21, 101, 192)",
    "notdue": "rgb(227, 230, 234)",
}


def need_chromium():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no chromium at {CHROMIUM}: the browser test needs Debian's chromium "
                    "(apt-get install -y chromium) or JANKYCRON_TEST_CHROMIUM=/path/to/chromium",
                    pytrace=False)
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        pytest.fail("the browser test needs playwright: pip install -e '.[test]' (do not run "
                    "`playwright install`; it drives the system chromium)", pytrace=False)
    return sync_playwright


def today() -> date:
    return datetime.now(UTC).date()


def day(n: int) -> date:
    return today() + timedelta(days=n)


def daily(n: int) -> Interval:
    d = day(n)
    start = datetime(d.year, d.month, d.day, 4, tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """gunicorn serving the web app over a ledger with: orders -5 success, -4 failed, -3 with
    dead letters, -2 running, -1 success; today not yet due."""
    write_jobs(tmp_path / "jobs", ["orders", "invoices"])
    state = f"sqlite:///{tmp_path / 'state.db'}"
    ledger = Ledger(state)
    loaded_run(ledger, "orders", "orders", daily(-5), 100)
    failed_run(ledger, "orders", daily(-4), f"ValueError: bad payload {SCRIPT}\nsecond line")
    loaded_run(ledger, "orders", "orders", daily(-3), 60, rejected=2)
    ledger.start_run("orders", daily(-2), heartbeat=True)
    loaded_run(ledger, "orders", "orders", daily(-1), 80)
    ledger.close()
    env = {"JANKYCRON_STATE_URL": state, "JANKYCRON_JOBS_PATH": "jobs",
           "JANKYCRON_LOCK_URL": "off", "JANKYCRON_STATUS_USER": USER,
           "JANKYCRON_STATUS_PASSWORD": PASSWORD}
    with gunicorn(tmp_path, env) as web:
        yield web.url


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (path, len(data))


def test_the_grid_and_a_failed_days_rerun_command_in_chromium(server: str,
                                                             tmp_path: Path) -> None:
    sync_playwright = need_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            ctx = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                      viewport={"width": 1280, "height": 800})
            ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
            page = ctx.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("dialog", lambda d: problems.append(f"dialog: {d.message}") or d.dismiss())

            page.goto(f"{server}/")

            def cell(n: int) -> str:
                return f'tr[data-job="orders"] td.cell[data-day="{day(n)}"]'

            def colour(selector: str) -> str:
                return page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor")

            seen = {n: colour(cell(n)) for n in (-5, -4, -3, -2, -1, 0)}
            assert seen == {-5: COLOURS["success"], -4: COLOURS["failed"],
                            -3: COLOURS["deadletters"], -2: COLOURS["running"],
                            -1: COLOURS["success"], 0: COLOURS["notdue"]}
            # the legend uses the same colours as the cells
            for status, rgb in COLOURS.items():
                assert colour(f".legend .st-{status}") == rgb
            assert "60 rows loaded, 2 rejected" in page.get_attribute(cell(-3), "title")
            # the filter box hides rows as you type
            page.fill("#q", "invoice")
            assert page.is_hidden('tr[data-job="orders"]')
            assert page.is_visible('tr[data-job="invoices"]')
            page.fill("#q", "")
            assert page.is_visible('tr[data-job="orders"]')
            page.screenshot(path=str(tmp_path / "grid.png"), full_page=True)

            page.click(f"{cell(-4)} a")  # the failed day
            page.wait_for_url(f"**/jobs/orders?date={day(-4)}#rerun")
            assert page.inner_text("#rerun code.cmd") == f"jankycron run orders --date {day(-4)}"
            assert page.inner_text("#rerun .interval .badge") == "failed"
            # the job's error shows as text, and no script of it ran (no dialog)
            assert f"bad payload {SCRIPT}" in page.inner_text("#rerun .interval .err")
            page.click("#rerun button.copy")
            page.wait_for_function("document.querySelector('#rerun button.copy')"
                                   ".textContent === 'Copied'")
            assert page.evaluate("navigator.clipboard.readText()") == \
                f"jankycron run orders --date {day(-4)}"
            assert "(local)" in page.get_attribute("#rerun time", "title")
            page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
            assert problems == []

            # without JavaScript: same command, selectable; no dead copy button
            plain = browser.new_context(
                java_script_enabled=False,
                http_credentials={"username": USER, "password": PASSWORD}).new_page()
            plain.goto(f"{server}/jobs/orders?date={day(-4)}")
            assert plain.inner_text("#rerun code.cmd") == f"jankycron run orders --date " \
                                                          f"{day(-4)}"
            assert plain.is_hidden("#rerun button.copy")

            # a phone: the page itself does not scroll sideways; the grid scrolls in its box
            phone = browser.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                http_credentials={"username": USER, "password": PASSWORD}).new_page()
            phone.goto(f"{server}/")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            assert phone.evaluate("document.querySelector('.scroll').scrollWidth") > 390
            # ... and it opens on the newest days
            assert phone.eval_on_selector(cell(0), "e => e.getBoundingClientRect().right") <= 390
            phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        finally:
            browser.close()
    for name in ("grid.png", "job.png", "phone.png"):
        assert_png(tmp_path / name)
    print(f"screenshots: {tmp_path}")


def test_with_a_wrong_password_the_browser_gets_no_page(server: str) -> None:
    sync_playwright = need_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_context(
                http_credentials={"username": USER, "password": "wrong"}).new_page()
            response = page.goto(f"{server}/jobs/orders")
            assert response.status == 401 and "jankycron run" not in page.content()
            assert page.goto(f"{server}/healthz").status == 200  # probes stay open
        finally:
            browser.close()
