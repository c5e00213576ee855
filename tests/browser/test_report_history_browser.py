"""``invoke report`` of a history written through the history's API, opened in real Chromium.

The history holds what a compromised node could send: host names, row values,
hunt paths and check evidence carrying markup, ``javascript:`` and escape codes.
The page must show them as text, run nothing, and still count and mark right.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fleetkit.cli import run_command
from fleetkit.commands import report as command
from fleetkit.history.verifyrun import CheckRecord, HostRecord, record_verify
from tests.browser.conftest import OpenPage
from tests.browser.hostile import ATTACKS, INVISIBLE
from tests.browser.test_report_browser import PWNED
from tests.unit.history_helpers import START, Clock, Node, open_store, record
from tests.unit.test_policy import err, make_runtime
from tests.unit.test_report_fromhistory import SSH, policy_run

EVIL_HOST = ATTACKS[0]


def hostile_history(tmp_path: Path) -> None:
    clock = Clock(START + timedelta(days=2))
    with open_store(tmp_path, clock) as history:
        for day in range(3):
            policy_run(
                history,
                START + timedelta(days=day),
                {
                    ("node-1", SSH): "PASS",
                    ("node-2", SSH): "PASS" if day == 0 else "FAIL",
                    (EVIL_HOST, SSH): "PASS",
                },
            )
        record_verify(
            history,
            [
                HostRecord("node-1", "compute", True, (CheckRecord("ssh", "pass"),)),
                HostRecord(
                    "node-2",
                    "compute",
                    False,
                    (CheckRecord("osqueryd.running", "fail", ATTACKS[1], "run: x"),),
                ),
            ],
            scope={},
            started_at=START + timedelta(days=2),
        )
        values = {f"c{i}": attack for i, attack in enumerate(ATTACKS + tuple(INVISIBLE))}
        record(history, [Node("node-1", [values], hostname=ATTACKS[4])], started_at=START)
        record(
            history,
            [Node("node-2", [{"path": ATTACKS[2], "sha256": "ab" * 32}]), Node("node-1", [])],
            kind="hunt",
            started_at=START,
        )


def test_a_report_of_a_hostile_history_is_text_counts_and_marks(
    open_report: OpenPage, tmp_path: Path
) -> None:
    hostile_history(tmp_path)
    rt = make_runtime(tmp_path)
    status = run_command(lambda r: command.run(r, since="all", now=START + timedelta(days=3)), rt)
    assert status == 0, err(rt)
    opened = open_report((tmp_path / "report.html").read_text(encoding="utf-8"))
    page = opened.page
    assert page.get_attribute("html", "data-js") == "ready"
    assert page.evaluate(PWNED) is None
    assert page.evaluate("document.scripts.length") == 1
    assert page.locator("img, iframe, svg[onload], a[href^='javascript']").count() == 0
    # Counts: 1 of the 2 verified hosts ready; 1 of 3 hosts failing a policy (first).
    assert page.inner_text("#summary .tile >> nth=0").startswith("1 / 2")
    assert page.inner_text("#summary .tile >> nth=1").startswith("1")
    assert opened.rows("t-policy") == ["node-2", EVIL_HOST, "node-1"]
    failing = page.locator("#t-policy tbody tr.bad")
    assert failing.count() == 1
    assert failing.locator("td").first.inner_text() == "node-2"
    assert "since 2026-11-02" in failing.inner_text()
    assert page.locator("#t-ready tbody tr.bad td").first.inner_text() == "node-2"
    # The hunt hit node-2; its path is an attack, shown as text.
    assert page.locator("#hunts tbody tr").all_inner_texts()[0].startswith("node-2")
    text = page.evaluate("document.body.textContent")
    for attack in ATTACKS:
        assert attack in text
    for shown in INVISIBLE.values():
        assert shown in text
    assert "\x1b" not in text
