"""The report in a real headless Chromium (Debian's chromium + chromedriver, via Selenium).

The page is opened from file:// with a CSP that forbids every fetch, so any network access
would show up as a console error. Install the browser with ``scripts/install-browser.sh``.
Outside CI the tests skip when the browser is missing; on CI (``CI`` set) they fail instead.

``HARNESS_SCREENSHOT=docs/leaderboard.png`` saves the full-page screenshot there (default: a
temporary file); ``HARNESS_SCREENSHOT_DB=results/leaderboard.duckdb`` takes it of that
database instead of the test fixture (e.g. after ``make search``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from harness.record import Leaderboard, TrialRecord
from harness.report import generate_report
from tests.test_report_fixtures import XSS_NAME, build_report_db, make_result

CHROMIUM = Path(os.environ.get("HARNESS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("HARNESS_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in containers/CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1000",
)


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing: run scripts/install-browser.sh"
    return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Any:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run on CI: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, Any]]:
    root = tmp_path_factory.mktemp("browser-site")
    ids = build_report_db(root / "leaderboard.duckdb")
    files = generate_report(root / "leaderboard.duckdb", root / "leaderboard" / "index.html")
    return files.html, ids, json.loads(files.json.read_text())


def load(driver: Any, page: Path, fragment: str = "") -> list[dict[str, Any]]:
    """Open the page, wait for the charts, return the console errors seen meanwhile."""
    driver.get_log("browser")  # drop entries from earlier pages
    driver.get(page.resolve().as_uri() + fragment)
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.body.getAttribute('data-ready')") is None:
        assert time.monotonic() < deadline, "the page script never finished"
        time.sleep(0.05)
    return console_errors(driver)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def visible_ids(driver: Any) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard > tbody'))"
        ".filter(tb => !tb.hidden).map(tb => tb.dataset.id)"
    )


def header(driver: Any, text: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//table[@id='leaderboard']/thead//th[.='{text}']")


def test_loads_from_file_with_no_console_errors_and_no_fetches(driver, site):
    page, _, payload = site
    assert load(driver, page) == []
    assert driver.execute_script("return document.body.dataset.ready") == "true"
    assert driver.title == "Merge leaderboard"
    assert len(visible_ids(driver)) == len(payload["trials"]) == 13
    # Nothing was requested besides the page itself.
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_sorting_by_a_column_reorders_rows(driver, site):
    page, _, payload = site
    load(driver, page)
    initial = visible_ids(driver)
    assert initial == [t["id"] for t in payload["trials"]]  # ranked by average

    def expected(key: str, reverse: bool) -> list[str]:
        have = [t for t in payload["trials"] if t["cells"][key]["value"] is not None]
        none = [t for t in payload["trials"] if t["cells"][key]["value"] is None]
        sign = -1 if reverse else 1
        have.sort(key=lambda t: (sign * t["cells"][key]["value"], t["order"]))
        return [t["id"] for t in have + none]  # no data always last, in rank order

    header(driver, "KMMLU").click()  # numbers: best first
    assert visible_ids(driver) == expected("kmmlu", reverse=True) != initial
    header(driver, "KMMLU").click()
    assert visible_ids(driver) == expected("kmmlu", reverse=False)
    assert header(driver, "KMMLU").get_attribute("aria-sort") == "ascending"

    header(driver, "Method").click()  # text: A-Z, trials without a method last
    methods = [t["merge_method"] for t in payload["trials"]]
    by_method = sorted(range(len(methods)), key=lambda i: (methods[i] is None, methods[i] or "", i))
    assert visible_ids(driver) == [payload["trials"][i]["id"] for i in by_method]
    # Each trial's details row travels with it.
    assert driver.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard > tbody'))"
        ".every(tb => tb.rows.length === 2 && tb.rows[1].id === tb.id + '-details')"
    )
    assert console_errors(driver) == []


def test_filters_hide_rows(driver, site):
    from selenium.webdriver.support.ui import Select

    page, ids, payload = site
    load(driver, page)
    box = driver.find_element("id", "filter-text")
    box.send_keys("ties")
    ties = {t["id"] for t in payload["trials"] if "ties" in (t["merge_method"] or "")}
    assert set(visible_ids(driver)) == ties and len(ties) == 4
    assert driver.find_element("id", "shown-count").text == "4 of 13 shown"
    box.send_keys(" #3")  # every word must match
    assert visible_ids(driver) == [ids["ko-en-merge#3"]]
    box.clear()
    box.send_keys("no such model")
    assert visible_ids(driver) == [] and driver.find_element("id", "no-match").is_displayed()
    box.clear()
    driver.execute_script("document.getElementById('filter-text').dispatchEvent(new Event('input'))")
    assert len(visible_ids(driver)) == 13

    Select(driver.find_element("id", "filter-study")).select_by_value("dus-48")
    assert visible_ids(driver) == [ids["dus"]]
    Select(driver.find_element("id", "filter-study")).select_by_value("ko-en-merge")
    Select(driver.find_element("id", "filter-method")).select_by_value("slerp")
    slerp = [
        t["id"] for t in payload["trials"] if t["study"] == "ko-en-merge" and t["merge_method"] == "slerp"
    ]
    assert visible_ids(driver) == slerp and len(slerp) == 4
    Select(driver.find_element("id", "filter-study")).select_by_value("")
    Select(driver.find_element("id", "filter-align")).select_by_value("sdpo")
    assert visible_ids(driver) == [ids["dpo"]]
    Select(driver.find_element("id", "filter-method")).select_by_value("")
    Select(driver.find_element("id", "filter-align")).select_by_value("-")
    assert len(visible_ids(driver)) == 12 and ids["dpo"] not in visible_ids(driver)
    assert console_errors(driver) == []


def test_expanding_a_row_shows_the_recipe(driver, site):
    from selenium.webdriver.common.by import By

    page, ids, _ = site
    load(driver, page)
    tbody = driver.find_element(By.CSS_SELECTOR, f"tbody[data-id='{ids['dpo']}']")
    details = tbody.find_element(By.CSS_SELECTOR, "tr.details")
    assert not details.is_displayed()
    tbody.find_element(By.CSS_SELECTOR, "button.toggle").click()
    assert details.is_displayed()
    mergekit = details.find_element(By.CSS_SELECTOR, "pre[id$='-mergekit']")
    assert mergekit.is_displayed() and "merge_method: slerp" in mergekit.text
    assert "method: sdpo" in details.find_element(By.CSS_SELECTOR, "pre[id$='-align']").text
    steps = details.find_elements(By.CSS_SELECTOR, "section.align-steps tbody tr")
    assert len(steps) == 2 and "0.27" in steps[1].text
    copy = details.find_element(By.CSS_SELECTOR, "button.copy")
    copy.click()
    # The label changes when the clipboard promise settles: wait for it, don't race it.
    deadline = time.monotonic() + 5
    while copy.text == "copy" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert copy.text in ("copied", "selected: press Ctrl+C")
    tbody.find_element(By.CSS_SELECTOR, "button.toggle").click()
    assert not details.is_displayed()
    # A permalink opens the trial expanded.
    anchor = tbody.get_attribute("id")
    load(driver, page, f"#{anchor}")
    again = driver.find_element(By.ID, f"{anchor}-details")
    assert again.is_displayed() and "ties" not in again.find_element(By.TAG_NAME, "pre").text
    assert console_errors(driver) == []


def test_script_names_render_as_text(driver, site):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    page, ids, _ = site
    load(driver, page)
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018  (alert(1) never ran)
    name = driver.find_element(By.CSS_SELECTOR, f"tbody[data-id='{ids['xss']}'] .trial-name")
    assert name.text == XSS_NAME
    error = driver.find_element(By.CSS_SELECTOR, f"tbody[data-id='{ids['failed']}'] .error")
    assert error.text.startswith("RuntimeError: <img src=x onerror=")
    assert driver.title == "Merge leaderboard"  # the onerror payload did not run
    assert driver.execute_script("return document.scripts.length") == 3
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    failed = driver.find_element(By.CSS_SELECTOR, f"tbody[data-id='{ids['failed']}']")
    assert "status-failed" in failed.get_attribute("class")
    assert console_errors(driver) == []


def test_charts_render(driver, site):
    page, _, _ = site
    load(driver, page)
    charts = driver.execute_script(
        "return Array.from(document.querySelectorAll('div.chart')).map(el => ({"
        "id: el.id, rendered: el.dataset.rendered, svg: el.querySelectorAll('svg.main-svg').length,"
        "traces: (el.data || []).length, points: el.querySelectorAll('.point').length}))"
    )
    ids = {c["id"] for c in charts}
    assert {"chart-history", "chart-importance", "chart-pareto", "chart-param-0"} <= ids
    for chart in charts:
        assert chart["rendered"] == "true" and chart["svg"] >= 1 and chart["traces"] >= 1, chart
    scatter = [c for c in charts if c["id"] != "chart-importance"]
    assert all(c["points"] >= 1 for c in scatter), scatter
    bars = driver.execute_script("return document.querySelectorAll('#chart-importance .bars .point').length")
    assert bars >= 4
    assert console_errors(driver) == []


def test_empty_database_page(driver, tmp_path):
    db = tmp_path / "empty.duckdb"
    with Leaderboard(db).connect():  # the schema, no rows
        pass
    files = generate_report(db, tmp_path / "index.html")
    assert load(driver, files.html) == []
    assert "No trials yet" in driver.find_element("id", "empty").text


def test_a_single_evaluation_shows_chart_notes_instead_of_charts(driver, tmp_path):
    db = tmp_path / "one.duckdb"
    Leaderboard(db).record(
        TrialRecord(name="only-model", source="eval"),
        make_result(0.4, 0.4, 0.3, 0.3, 0.3, 0.4),
    )
    files = generate_report(db, tmp_path / "index.html")
    assert load(driver, files.html) == []
    assert driver.find_elements("css selector", "div.chart") == []
    notes = [e.text for e in driver.find_elements("css selector", "p.chart-note")]
    assert any("not enough trials" in n for n in notes) and len(notes) == 5
    assert any("no trial has both a search and a held-out objective" in n for n in notes)
    assert driver.find_element("css selector", "#leaderboard .trial-name").text == "only-model"


def test_screenshot(driver, site, tmp_path):
    """Screenshots for the README (HARNESS_SCREENSHOT=docs/leaderboard.png): the top of the
    page (table) there, and the charts section beside it as ``<name>-charts.png``."""
    page = site[0]
    source_db = os.environ.get("HARNESS_SCREENSHOT_DB")
    if source_db:
        page = generate_report(Path(source_db), tmp_path / "shot" / "index.html").html
    assert load(driver, page) == []
    height = driver.execute_script("return document.documentElement.scrollHeight")
    full = capture(driver, 0, height)
    assert len(full) > 50_000
    charts = driver.execute_script(
        "const r = document.getElementById('charts').getBoundingClientRect();"
        "return [r.top + window.scrollY, r.height];"
    )
    target = Path(os.environ.get("HARNESS_SCREENSHOT") or tmp_path / "leaderboard.png")
    save(target, capture(driver, 0, min(height, 1400)))
    save(target.with_name(f"{target.stem}-charts.png"), capture(driver, charts[0], charts[1]))


def capture(driver: Any, top: float, height: float) -> bytes:
    """A PNG of the page region [top, top + height) at 1440 px wide, beyond the viewport."""
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": top, "width": 1440, "height": height, "scale": 1},
        },
    )
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return png


def save(target: Path, png: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.png")
    tmp.write_bytes(png)
    shutil.move(tmp, target)
