"""Opening a report in the system's headless Chromium (tests, benchmark, README screenshot).

Playwright cannot download its own browsers here (no network), so it drives
Debian's ``chromium`` (``/usr/bin/chromium``, installed by
``scripts/bootstrap.sh``) through ``executable_path``. The flags keep a
headless Chromium from phoning home (background networking, component
updates, sync), which a closed network answers with refused connections.
Playwright is a test extra: it is imported only when a browser is launched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

#: Where to look for Chromium, first match wins ($FLEETKIT_CHROMIUM overrides).
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def find_chromium() -> str | None:
    """The Chromium executable to use, or None when there is none."""
    override = os.environ.get("FLEETKIT_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium")
    return found


def unavailable_reason() -> str | None:
    """Why a report cannot be opened in a real browser here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing (pip install -e '.[test]')"
    if find_chromium() is None:
        return "Chromium is missing (scripts/bootstrap.sh installs Debian's chromium)"
    return None


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """A Playwright ``Browser`` on the system Chromium; closed after.

    Playwright gives every launch a new, empty profile (its own
    ``--user-data-dir`` in a temporary directory) and removes it on close.
    """
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError(unavailable_reason() or "Chromium is missing")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(FLAGS[1:])
        )
        try:
            yield browser
        finally:
            browser.close()
