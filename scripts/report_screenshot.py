#!/usr/bin/env python3
"""Regenerate the README's screenshot of the fleet report (headless Chromium, PNG).

By default it renders the sample report of the lab fleet (1 control plane +
3 nodes after the README's story: node-2 fails the SSH-key policy, the trojan
hunt hit node-1 and node-3, node-3 is quarantined). ``--report FILE`` takes a
report written by ``invoke report`` instead, e.g. of the real lab's history.

    .venv/bin/python scripts/report_screenshot.py [--report report.html] \
        [--output docs/report.png] [--width 1280] [--max-height 2000]

Needs Debian's chromium and the playwright package (scripts/bootstrap.sh).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fleetkit.foundation.atomic import atomic_write
from fleetkit.report.browser import launch, unavailable_reason
from fleetkit.report.html import render_html
from fleetkit.report.samples import lab_sample

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "docs" / "report.png"


def screenshot(report: Path, output: Path, *, width: int, max_height: int) -> tuple[int, int]:
    """Write a PNG of ``report`` (the whole page, cut at ``max_height``); returns its size."""
    with launch() as browser:
        page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
        page.set_default_timeout(120_000)
        page.goto(report.as_uri(), wait_until="load")
        # A viewport as tall as the page, so rows laid out lazily are on screen too.
        height = min(int(page.evaluate("document.documentElement.scrollHeight")), max_height)
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        png = page.screenshot(type="png", full_page=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, png, mode=0o644)
    return width, height


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="an HTML report (default: the lab sample)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--max-height", type=int, default=2400)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"report_screenshot: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fleetkit-screenshot-") as tmp:
        report = args.report
        if report is None:
            report = Path(tmp) / "lab-report.html"
            report.write_text(render_html(lab_sample()), encoding="utf-8")
        elif not report.is_file():
            print(f"report_screenshot: {report}: no such file", file=sys.stderr)
            return 2
        width, height = screenshot(
            report.resolve(), args.output, width=args.width, max_height=args.max_height
        )
    print(f"wrote {args.output} ({width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
