"""The report in real headless Chromium: what a person sees and clicks, and what never runs."""

from __future__ import annotations

import pytest

from fleetkit.report.html import render_html
from fleetkit.report.samples import lab_sample, large_fleet
from tests.browser.conftest import OpenPage
from tests.browser.hostile import ATTACKS, INVISIBLE, hostile_report

PWNED = "typeof window.__pwned === 'undefined' ? null : window.__pwned"


def test_lab_report_tables_and_failing_hosts_marked(open_report: OpenPage) -> None:
    opened = open_report(lab_sample())
    page = opened.page
    assert page.get_attribute("html", "data-js") == "ready"  # our script passed the CSP
    assert opened.rows("t-ready") == ["node-3", "node-1", "node-2", "orch-1"]
    assert opened.rows("t-policy") == ["node-2", "node-1", "node-3"]
    assert len(opened.rows("t-coverage")) == 5
    assert page.locator("#t-ready tbody tr.bad").all_inner_texts()[0].startswith("node-3")
    failing = page.locator("#t-policy tbody tr.bad")
    assert failing.count() == 1
    assert failing.locator("td.f").count() == 2
    assert "since 2026-11-24" in failing.inner_text()
    assert page.locator("#hunts tbody tr").count() == 2
    assert page.locator("#t-quarantine tbody tr").all_inner_texts() == [
        "node-3\t2026-11-27 05:30 UTC"
    ]


def test_clicking_a_header_sorts_and_again_reverses(open_report: OpenPage) -> None:
    opened = open_report(lab_sample())
    header = opened.page.locator("#t-ready thead th", has_text="Host")
    header.click()
    assert opened.rows("t-ready") == ["node-1", "node-2", "node-3", "orch-1"]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert opened.rows("t-ready") == ["orch-1", "node-3", "node-2", "node-1"]
    # A status column sorts failures first, whatever their text.
    opened.page.locator("#t-policy thead th").nth(2).click()
    assert opened.rows("t-policy")[0] == "node-2"


def test_filters_narrow_the_rows(open_report: OpenPage) -> None:
    opened = open_report(lab_sample())
    page = opened.page
    page.fill('input[type=search][data-filter="t-policy"]', "node-1")
    assert opened.rows("t-policy", visible_only=True) == ["node-1"]
    assert page.inner_text('[data-count="t-policy"]') == "1 of 3 shown"
    page.fill('input[type=search][data-filter="t-policy"]', "")
    page.check('input[type=checkbox][data-filter="t-policy"]')
    assert opened.rows("t-policy", visible_only=True) == ["node-2"]
    page.check('input[type=checkbox][data-filter="t-ready"]')
    assert opened.rows("t-ready", visible_only=True) == ["node-3"]


def test_screenshot_artifact(
    open_report: OpenPage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    opened = open_report(lab_sample())
    shot = tmp_path_factory.mktemp("report-screenshots") / "lab-report.png"
    opened.page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000
    print(f"screenshot: {shot}")


def test_hostile_values_are_text_and_nothing_runs(open_report: OpenPage) -> None:
    opened = open_report(hostile_report())
    page = opened.page
    assert page.evaluate(PWNED) is None
    assert page.title().startswith("Fleet report")
    assert page.evaluate("document.scripts.length") == 1
    assert page.locator("img, iframe, object, embed, a[href^='javascript']").count() == 0
    with_handlers = page.evaluate(
        "[...document.querySelectorAll('*')]"
        ".filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length"
    )
    assert with_handlers == 0
    assert page.evaluate("getComputedStyle(document.body).display") != "none"
    text = page.evaluate("document.body.textContent")
    for attack in ATTACKS:
        assert attack in text
    for shown in INVISIBLE.values():
        assert shown in text
    # The page's own script still works on hostile rows.
    page.fill('input[type=search][data-filter="t-ready"]', "<script>")
    assert len(opened.rows("t-ready", visible_only=True)) == 3


def test_the_csp_blocks_markup_that_slipped_through(open_report: OpenPage) -> None:
    """Defence in depth: even if escaping failed, an injected script or handler would not run."""
    injected = (
        "<script>window.__pwned = 'script'</script>"
        "<img src=x onerror=\"window.__pwned = 'img'\">"
        "<div id=probe></div>"
    )
    page_html = render_html(lab_sample()).replace("</main>", injected + "</main>")
    opened = open_report(page_html)
    assert opened.page.locator("#probe").count() == 1  # the markup did land...
    assert opened.page.evaluate(PWNED) is None  # ...and did nothing
    assert opened.page.get_attribute("html", "data-js") == "ready"
    assert any("Content Security Policy" in line for line in opened.console)


def test_nothing_is_fetched(open_report: OpenPage) -> None:
    opened = open_report(lab_sample())
    opened.page.locator("#queries summary").first.click()
    assert len(opened.requests) == 1
    assert opened.requests[0].startswith("file://")


def test_readable_without_javascript(open_report: OpenPage) -> None:
    opened = open_report(lab_sample(), javascript=False)
    page = opened.page
    assert page.get_attribute("html", "data-js") is None
    assert page.locator("#t-ready tbody tr").count() == 4
    assert page.locator("#t-policy tbody tr").count() == 3
    assert not page.locator("#readiness .controls").is_visible()  # no dead controls
    assert page.locator("#t-policy tbody tr").first.is_visible()


def test_a_thousand_host_fleet_loads_sorts_and_filters(open_report: OpenPage) -> None:
    opened = open_report(large_fleet(1000, 20, 30))
    page = opened.page
    assert page.locator("#t-policy tbody tr").count() == 1000
    assert page.locator("#t-policy thead th").count() == 22
    page.fill('input[type=search][data-filter="t-policy"]', "web-0007")
    assert opened.rows("t-policy", visible_only=True) == ["web-0007"]
    page.locator("#t-policy thead th", has_text="Host").click()
    assert opened.rows("t-policy")[:2] == ["web-0001", "web-0002"]
