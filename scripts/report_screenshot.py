#!/usr/bin/env python3
"""Regenerate the README's screenshot of the fleet report from the real lab fleet.

By default (needs root, like the lab): start a lab of 1 control plane + 3 nodes,
each in its own network namespace, and tell the README's story with fleetkit's
own commands (the ``fleetkit`` console script, as a user types them):

1. ``provision``; ``verify`` (recorded: the report's readiness);
2. ``policy`` with the SSH-key pack: everything passes;
3. an unencrypted RSA key planted on node-2; ``policy`` again: node-2 fails;
4. the trojan planted on node-1 and node-3; ``hunt`` for it: found on both;
5. ``quarantine --hosts node-3``;
6. a ``query`` of the installed OpenSSH packages (quarantined hosts excluded);
7. ``report``, opened in headless Chromium and saved as a PNG.

The lab is torn down at the end, whatever happens. ``--sample`` renders the
built-in sample model of the same story instead (no lab, no root), and
``--report FILE`` takes any report written by ``invoke report``.

    sudo .venv/bin/python scripts/report_screenshot.py [--sample | --report FILE] \
        [--output docs/report.png] [--width 1280] [--max-height 2400]

Needs Debian's chromium and the playwright package (scripts/bootstrap.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the lab ships with the repository, not with fleetkit
    sys.path.insert(0, str(REPO))

from fleetkit.foundation.atomic import atomic_write  # noqa: E402
from fleetkit.report.browser import launch, unavailable_reason  # noqa: E402
from fleetkit.report.html import render_html  # noqa: E402
from fleetkit.report.samples import TROJAN_PATH, lab_sample  # noqa: E402
from lab.fleet import Lab  # noqa: E402

DEFAULT_OUTPUT = REPO / "docs" / "report.png"
SSH_PACK = REPO / "fleetkit" / "packs" / "ssh-keys.yaml"
TROJAN = b"<?php /* goldenrod worm */ eval($_POST['x']); ?>\n"
WEAK_KEY = "/root/.ssh/id_rsa_legacy"
JOIN_TIMEOUT = 60.0


def screenshot(report: Path, output: Path, *, width: int, max_height: int) -> tuple[int, int]:
    """Write a PNG of ``report`` (the whole page, cut at ``max_height``); returns its size."""
    with launch() as browser:
        page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
        page.set_default_timeout(120_000)
        page.goto(report.as_uri(), wait_until="load")
        # The newest query unfolded, so its rows are in the picture too.
        page.evaluate("document.querySelector('#queries details')?.setAttribute('open', '')")
        # A viewport as tall as the page, so rows laid out lazily are on screen too.
        height = min(int(page.evaluate("document.documentElement.scrollHeight")), max_height)
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        png = page.screenshot(type="png", full_page=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, png, mode=0o644)
    return width, height


class Story:
    """fleetkit's commands on a lab, as a user types them (a new process each)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.workdir = lab.workdir
        self.environ = lab.environ()
        script = Path(sys.executable).parent / "fleetkit"
        self.command = (
            [str(script)]
            if script.exists()
            else [sys.executable, "-c", "from fleetkit.cli import main; main()"]
        )

    def fleetkit(self, *argv: str, expect: Sequence[int] = (0,)) -> str:
        print("$ fleetkit " + " ".join(argv), flush=True)
        done = subprocess.run(
            [*self.command, *argv],
            cwd=self.workdir,
            env=self.environ,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in expect:
            raise SystemExit(f"fleetkit {argv[0]} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def wait_ready(self) -> None:
        """Until verify passes (the agents join the orchestrator a moment after provision)."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            done = subprocess.run(
                [*self.command, "verify", "--no-history"],
                cwd=self.workdir,
                env=self.environ,
                capture_output=True,
                check=False,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"the lab is not ready:\n{done.stderr.decode()[-3000:]}")
            time.sleep(1)

    def tell(self, report: Path) -> None:
        self.fleetkit("provision")
        self.wait_ready()
        self.fleetkit("verify")
        self.fleetkit("policy", "--pack", str(SSH_PACK), expect=(0, 3))
        self.lab.host("node-2").sh(f"ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f {WEAK_KEY}")
        self.fleetkit("policy", "--pack", str(SSH_PACK), expect=(3,))
        for name in ("node-1", "node-3"):
            self.lab.host(name).write_file(TROJAN_PATH, TROJAN)
        sha = hashlib.sha256(TROJAN).hexdigest()
        self.fleetkit("hunt", "--path", TROJAN_PATH, "--sha256", sha, expect=(3,))
        self.fleetkit("quarantine", "--hosts", "node-3")
        self.fleetkit(
            "query",
            "SELECT name, version, arch FROM deb_packages WHERE name LIKE 'openssh%'",
            "--select",
            "quarantined!=true",
        )
        self.fleetkit("report", "--output", str(report))


def from_lab(report: Path) -> None:
    """Tell the story on a new lab (torn down after), ending with ``report`` written."""
    with tempfile.TemporaryDirectory(prefix="fleetkit-screenshot-lab-") as tmp:
        lab = Lab(Path(tmp) / "lab", compute=3, netns=True, cloud_hostnames=True).up()
        try:
            Story(lab).tell(report)
        finally:
            lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--sample", action="store_true", help="the sample model (no lab)")
    source.add_argument("--report", type=Path, help="an HTML report written by invoke report")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--max-height", type=int, default=2400)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"report_screenshot: {reason}", file=sys.stderr)
        return 2
    if not (args.sample or args.report) and os.geteuid() != 0:
        print("report_screenshot: the lab needs root (or use --sample)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fleetkit-screenshot-") as tmp:
        report = args.report
        if report is None:
            report = Path(tmp) / "report.html"
            if args.sample:
                report.write_text(render_html(lab_sample()), encoding="utf-8")
            else:
                from_lab(report)
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
