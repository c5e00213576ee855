"""Real headless Chromium for the report's browser tests: one browser per module.

Skipped, with the reason, when Chromium or the playwright package is missing
(``scripts/bootstrap.sh`` installs Debian's chromium; CI runs them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetkit.report.browser import launch, unavailable_reason
from fleetkit.report.html import render_html
from fleetkit.report.model import FleetReport

REASON = unavailable_reason()


@dataclass
class Opened:
    """A report open in Chromium, with what it logged and every request it made."""

    page: Any
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def rows(self, table_id: str, *, visible_only: bool = False) -> list[str]:
        """The first cell of each body row of a table, in page order."""
        return list(
            self.page.eval_on_selector_all(
                f"#{table_id} tbody tr",
                "(rows, v) => rows.filter(r => !v || !r.hidden).map(r => r.cells[0].textContent)",
                visible_only,
            )
        )


OpenPage = Callable[..., Opened]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if REASON is not None:
                item.add_marker(pytest.mark.skip(reason=f"browser test skipped: {REASON}"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as chromium:
        yield chromium


@pytest.fixture
def open_report(browser: Any, tmp_path: Path) -> Iterator[OpenPage]:
    """Write a report (a model or ready HTML) to a file and open it; pages close after the test."""
    contexts: list[Any] = []

    def opener(report: FleetReport | str, *, javascript: bool = True) -> Opened:
        page_html = report if isinstance(report, str) else render_html(report)
        path = tmp_path / f"report-{len(contexts)}.html"
        path.write_text(page_html, encoding="utf-8")
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, java_script_enabled=javascript
        )
        context.set_default_timeout(120_000)  # a loaded 2-core machine is slow, not broken
        contexts.append(context)
        opened = Opened(context.new_page())
        opened.page.on("console", lambda message: opened.console.append(message.text))
        opened.page.on("request", lambda request: opened.requests.append(request.url))
        opened.page.goto(path.as_uri(), wait_until="load")
        return opened

    yield opener
    for context in contexts:
        context.close()
