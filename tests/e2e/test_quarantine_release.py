"""``quarantine --release`` on the netns lab: what it restores, and what it reports.

The contract (README, quarantine module docstring): release deletes fleetkit's
own table and nothing else; whatever else changed on the host during the
quarantine is kept and REPORTED per host as a bounded, terminal-safe diff,
compared with fleetkit's own copy of the pre-quarantine ruleset (kept on the
admin machine, so an intruder who rewrites the host's copy cannot hide).

Plus the pure parts (sections, the report, the bounded diff) without a lab.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetkit.commands import quarantine
from fleetkit.commands.quarantine.release import new_marker
from fleetkit.foundation import rulediff
from lab.fleet import Lab
from tests.e2e.conftest import run_cli, wait_connected

STATE = "/var/lib/fleetkit/quarantine"


# --------------------------------------------------------------------------- without a lab


def test_sections_need_the_run_s_marker() -> None:
    marker = new_marker()
    text = (
        f"--- {marker} table\ntable inet fleetkit_quarantine {{}}\n"
        f'--- {marker} now\ntable inet x {{ comment "--- fleetkit-0000 before" }}\n'
        f"--- {marker} before\n"
    )
    found = quarantine.sections(text, marker)
    assert set(found) == {"table", "now", "before"}
    assert "fleetkit-0000" in found["now"] and found["before"] == ""


def test_an_unchanged_host_gives_no_report(tmp_path: Path) -> None:
    copies = quarantine.LocalCopies(tmp_path)
    copies.write("n1", "pre", "table inet keep {}\n")
    copies.write("n1", "applied", "table inet fleetkit_quarantine {}\n")
    found = {
        "table": "table inet fleetkit_quarantine {}\n",
        "now": "table inet keep {}\n",
        "before": "table inet keep {}\n",
    }
    assert quarantine.release_report("n1", found, copies) == []


def test_every_change_is_named_bounded_and_escaped(tmp_path: Path) -> None:
    copies = quarantine.LocalCopies(tmp_path)
    copies.write("n1", "pre", "table inet keep {}\n")
    hostile = "".join(f'table inet t{i} {{ comment "\x1b[2J{i}" }}\n' for i in range(500))
    found = {"no table": "", "now": "table inet keep {}\n" + hostile, "before": "(forged)\n"}
    warnings = quarantine.release_report("n1", found, copies)
    text = "\n".join(warnings)
    assert "n1: the host's saved pre-quarantine ruleset was changed" in text
    assert "n1: the quarantine table was already gone" in text
    assert "n1: the ruleset differs from before the quarantine" in text
    assert "500 line(s) added, 0 removed" in text
    assert "\x1b" not in text and "\\x1b[2J" in text
    assert len(text.splitlines()) < rulediff.MAX_DIFF_LINES + 10


def test_a_huge_ruleset_is_not_diffed_line_by_line() -> None:
    huge = "x\n" * rulediff.MAX_RULESET_BYTES
    (line,) = rulediff.bounded_diff("a\n", huge, labels=("before", "after"))
    assert "too large" in line


# --------------------------------------------------------------------------- on the netns lab


@pytest.fixture(scope="module")
def fleet(netns_lab: Lab) -> Lab:
    """The netns lab, provisioned (idempotent if another module did it already)."""
    result = run_cli(netns_lab, "provision")
    assert result.exit_code == 0, result.output
    wait_connected(netns_lab, [h.name for h in netns_lab.compute_hosts])
    return netns_lab


@pytest.fixture
def node(fleet: Lab) -> Iterator[str]:
    """node-2, released and cleaned whatever the test did to it."""
    host = fleet.host("node-2")
    yield "node-2"
    if "fleetkit_quarantine" in host.sh("nft list ruleset", check=False).stdout:
        run_cli(fleet, "quarantine", "--hosts", "node-2", "--release")
    for table in ("responder", "backdoor", "fleetkit_quarantine"):
        host.sh(f"nft delete table inet {table}", check=False)


def _copies(fleet: Lab) -> Path:
    return fleet.workdir / "inventory" / "hosts.d" / "_quarantine.d"


@pytest.mark.lab
def test_release_restores_exactly_when_nothing_else_changed(fleet: Lab, node: str) -> None:
    host = fleet.host(node)
    before = host.sh("nft list ruleset").stdout
    result = run_cli(fleet, "quarantine", "--hosts", node)
    assert result.exit_code == 0, result.output
    assert (_copies(fleet) / f"{node}.pre.nft").read_text() == before
    assert "table inet fleetkit_quarantine" in (_copies(fleet) / f"{node}.applied.nft").read_text()
    result = run_cli(fleet, "quarantine", "--hosts", node, "--release")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert host.sh("nft list ruleset").stdout == before
    assert not (_copies(fleet) / f"{node}.pre.nft").exists()


@pytest.mark.lab
def test_changes_made_during_the_quarantine_are_kept_and_reported(fleet: Lab, node: str) -> None:
    host = fleet.host(node)
    before = host.sh("nft list ruleset").stdout
    assert run_cli(fleet, "quarantine", "--hosts", node).exit_code == 0
    # a responder adds a block of their own; an intruder punches a hole in fleetkit's table
    host.sh("nft add table inet responder && nft add chain inet responder c")
    host.sh("nft add rule inet responder c ip saddr 203.0.113.7 drop")
    host.sh("nft insert rule inet fleetkit_quarantine input tcp dport 4444 accept")

    result = run_cli(fleet, "quarantine", "--hosts", node, "--release")

    assert result.exit_code == 0, result.output
    err = result.stderr
    assert f"warning: {node}: the quarantine table was changed during the quarantine" in err
    assert "tcp dport 4444 accept" in err
    assert f"warning: {node}: the ruleset differs from before the quarantine" in err
    assert "+table inet responder {" in err and "203.0.113.7 drop" in err
    assert "kept as it is" in err
    after = host.sh("nft list ruleset").stdout
    assert "fleetkit_quarantine" not in after  # only fleetkit's table went
    assert "table inet responder" in after  # the responder's block stays
    host.sh("nft delete table inet responder")
    assert host.sh("nft list ruleset").stdout == before


@pytest.mark.lab
def test_an_intruder_cannot_hide_changes_by_rewriting_the_host_s_copy(
    fleet: Lab, node: str
) -> None:
    host = fleet.host(node)
    before = host.sh("nft list ruleset").stdout
    assert run_cli(fleet, "quarantine", "--hosts", node).exit_code == 0
    # root on the node: drop the quarantine, add a backdoor table, forge the saved "before"
    host.sh("nft delete table inet fleetkit_quarantine")
    host.sh("nft add table inet backdoor && nft add chain inet backdoor c")
    host.sh(f"nft list ruleset > {STATE}/pre-quarantine.nft")

    result = run_cli(fleet, "quarantine", "--hosts", node, "--release")

    assert result.exit_code == 0, result.output
    err = result.stderr
    assert f"warning: {node}: the quarantine table was already gone" in err
    assert f"warning: {node}: the host's saved pre-quarantine ruleset was changed" in err
    assert "+table inet backdoor {" in err
    host.sh("nft delete table inet backdoor")
    assert host.sh("nft list ruleset").stdout == before
