"""The HTML report in a real browser: headless Chromium (Debian ``chromium`` and
``chromium-driver``, `make peers`) driven by selenium, with no network. It renders, logs no
console error (a CSP violation or a failed load would be one), loads nothing but itself,
runs no script from a certificate name, draws the three charts at a visible size, prints,
and leaves a screenshot in tmp_path."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.report_sample import HOSTILE, sample_assessment
from audit.scenario import Org
from smimekit.audit.report import render_html
from smimekit.cli.main import main

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None,
                       reason="chromium and chromium-driver are not installed (make peers)"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,1400", "--hide-scrollbars",
                # No network: every host name fails to resolve, any proxy use goes nowhere.
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
                "--disable-background-networking", "--no-first-run",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(sample_assessment()), encoding="utf-8")
    return path


@pytest.fixture
def page(browser: Any, report: Path) -> Any:
    browser.get_log("browser")  # what earlier pages logged
    browser.get(report.as_uri())
    return browser


def test_report_renders_without_console_errors(page: Any) -> None:
    assert page.title == "Sovereignty assessment: Example Org"
    errors = [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    headings = [h.text for h in page.find_elements("css selector", "h2")]
    assert headings == ["Summary", "Charts", "Data Protection and Sovereignty (DPS): 50%",
                        "Identity, Access and Trust (IAT): 88%", "Crisis drill"]


def test_console_check_sees_a_blocked_script(browser: Any, tmp_path: Path) -> None:
    """The console check above can fail: the report's CSP blocking a script is an error
    in the same log."""
    html = render_html(sample_assessment()).replace(
        "<main>", "<main><script>document.title = 'ran'</script>", 1)
    bad = tmp_path / "bad.html"
    bad.write_text(html, encoding="utf-8")
    browser.get_log("browser")  # drain
    browser.get(bad.as_uri())
    assert browser.title != "ran"
    assert any("Content Security Policy" in e["message"] for e in browser.get_log("browser")
               if e["level"] == "SEVERE")


def test_report_loads_nothing_but_itself(page: Any) -> None:
    resources = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []


def test_certificate_name_script_does_not_run(page: Any) -> None:
    assert page.title != "owned"
    evidence = page.find_element("css selector", "#f-DPS-OUTSIDE-CA ul.evidence li")
    assert evidence.text == f"20 certificates in use issued by 'CN={HOSTILE}, O=Outside CA'"
    assert page.find_elements("css selector", "script, img") == []


def test_charts_are_drawn_at_a_visible_size(page: Any) -> None:
    svgs = page.find_elements("css selector", "figure svg")
    assert len(svgs) == 3
    for svg in svgs:
        assert svg.size["width"] > 300 and svg.size["height"] > 100, svg.size
    # Bars that stand for a count above zero are visibly drawn.
    widths = page.execute_script(
        "return [...document.querySelectorAll('#chart-archive rect')]"
        ".map(r => r.getBoundingClientRect().width)")
    assert len(widths) == 6 and all(w > 1 for w in widths)


def test_report_prints(page: Any) -> None:
    from pypdf import PdfReader
    from selenium.webdriver.common.print_page_options import PrintOptions

    options = PrintOptions()
    options.background = True
    pdf = PdfReader(io.BytesIO(base64.b64decode(page.print_page(options))))
    # Summary and charts, each domain on a new page, the drill on its own.
    assert len(pdf.pages) >= 4
    text = " ".join(p.extract_text() for p in pdf.pages)
    assert "Sovereignty assessment: Example Org" in text and "Crisis drill" in text
    # On paper the charts' data tables are shown (a click away on screen).
    assert "Week starting" in text and "The data as a table" not in text


def test_screenshot_shows_the_charts(page: Any, tmp_path: Path) -> None:
    charts = page.find_element("css selector", "#h-charts")
    page.execute_script("arguments[0].scrollIntoView()", charts)
    shot = tmp_path / "report.png"
    assert page.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # The whole page, for a human to look at (docs/assess-report.png is its top part).
    full = page.execute_cdp_cmd("Page.captureScreenshot",
                                {"format": "png", "captureBeyondViewport": True})
    (tmp_path / "report-full.png").write_bytes(base64.b64decode(full["data"]))


def test_scenario_report_from_the_cli_in_the_browser(browser: Any, broken: Org,
                                                      tmp_path: Path) -> None:
    """End to end: `smimekit assess --html` over the broken scenario organisation (200
    people, an outside CA, an RC2/3DES archive), the file opened in Chromium."""
    out = tmp_path / "assessment.html"
    args = ["--data-dir", str(broken.data_dir), "assess", "--html", str(out),
            "--archive", str(broken.archive), "--at", broken.at.isoformat()]
    assert main(args) == 1  # a critical finding failed
    browser.get(out.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    assert browser.execute_script(
        "return performance.getEntriesByType('resource').length") == 0
    assessment = broken.assess()
    shown = {row.get_attribute("id")[2:] for row in
             browser.find_elements("css selector", "table.findings tr[id^='f-']")}
    assert shown == {f.id for f in assessment.findings}
    for chart in ("chart-expiry", "chart-coverage", "chart-archive"):
        svg = browser.find_element("css selector", f"#{chart} svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 100, chart
        assert browser.find_elements("css selector", f"#{chart} rect"), chart
    # 200 people in departments: one pair of bars per department.
    departments = assessment.charts["coverage"]
    assert len(browser.find_elements("css selector", "#chart-coverage rect")) == \
        2 * len(departments)
    full = browser.execute_cdp_cmd("Page.captureScreenshot",
                                   {"format": "png", "captureBeyondViewport": True})
    (tmp_path / "scenario-report.png").write_bytes(base64.b64decode(full["data"]))
