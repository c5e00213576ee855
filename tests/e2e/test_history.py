"""Fleet memory on the lab: what changed between runs, policy state over runs, late answers.

Shared ``provisioned_lab`` (orch-1 + node-1..3); every test undoes what it
planted on the hosts. The history is the lab's own (``.fleetkit/history.db``
beside its fleetkit.yaml), recorded by the commands as a user runs them.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import requests

from lab.fleet import Lab
from tests.e2e.conftest import CliResult, reprovision, run_cli
from tests.e2e.test_query import wait_for

pytestmark = pytest.mark.lab

#: Long-lived processes only (what a query for "what runs here" is about), so the only
#: change between two runs is the one the test makes.
PROCESSES = "SELECT pid, name, cmdline FROM processes WHERE name IN ('sleep', 'sshd', 'osqueryd')"
TROJAN_PATH = "/var/www/htdocs/wp-content/themes/goldenrod/functions.php"
TROJAN = b"<?php /* fleetkit history test trojan */ eval($_GET['q']); ?>\n"
TROJAN_SHA = hashlib.sha256(TROJAN).hexdigest()
SSH_RULE = "ssh_private_keys_encrypted_ec"


def run_id_of(result: CliResult) -> str:
    """The run the command recorded (named on stderr)."""
    match = re.search(r"history: recorded as run (\S+)", result.stderr)
    assert match, result.stderr
    return match.group(1)


def test_diff_shows_exactly_the_process_started_between_two_runs(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    host = lab.host("node-2")
    first = run_cli(lab, "query", PROCESSES)
    assert first.exit_code == 0, first.output
    # show prints, byte for byte, what the run printed
    shown = run_cli(lab, "show", run_id_of(first), "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == first.stdout
    pid = host.sh("sleep 3599.25 >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        wait_for(lambda: bool(host.pids_of("sleep")), "the new process on node-2")
        second = run_cli(lab, "query", PROCESSES, "--diff")
        assert second.exit_code == 0, second.output
        events = json.loads(second.stdout)
        assert events == [
            {
                "action": "added",
                "nodeID": "node-2",
                "hostname": host.hostname,  # the machine's own (ip-10-... in the lab)
                "columns": {"cmdline": "sleep 3599.25", "name": "sleep", "pid": pid},
            }
        ], second.stderr
        assert "1 row change(s), 0 node(s) appeared, 0 disappeared" in second.stderr
        # The same through invoke diff (the last two runs of this question and scope).
        again = run_cli(lab, "diff")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout) == events
        runs = run_cli(lab, "history", "--kind", "query", "--limit", "2", "--format", "json")
        newest, older = json.loads(runs.stdout)
        assert newest["run_id"] == run_id_of(second) and older["run_id"] == run_id_of(first)
        assert newest["coverage"]["rows"] == 3 and newest["status"] == "complete"
    finally:
        host.sh(f"kill {pid}", check=False)


def test_policy_state_newly_failing_still_failing_fixed(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    host = lab.host("node-2")
    key = "/root/.ssh/id_rsa_history_test"

    def node_2() -> dict[str, object]:
        result = run_cli(lab, "policy", "--format", "json")
        records = json.loads(result.stdout)
        (record,) = [r for r in records if r["policy"] == SSH_RULE and r["nodeID"] == "node-2"]
        record["exit"] = result.exit_code
        return dict(record)

    before = node_2()
    assert before["status"] == "PASS", before
    host.sh(f"ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f {key}")
    try:
        planted = node_2()
        assert (planted["exit"], planted["status"], planted["transition"]) == (
            3,
            "FAIL",
            "newly_failing",
        )
        assert planted["first_failed_at"] and planted["last_passed_at"]
        still = node_2()
        assert (still["status"], still["transition"]) == ("FAIL", "still_failing")
        assert still["first_failed_at"] == planted["first_failed_at"]
        table = run_cli(lab, "policy", "--grace", "0.00001")
        # the host named by its inventory name, the machine's own hostname beside it
        assert re.search(
            rf"{SSH_RULE}\s+high\s+node-2 \({re.escape(host.hostname)}\)\s+FAIL\s+still failing",
            table.stdout,
        ), table.stdout
        assert "OVERDUE" in table.stdout
    finally:
        host.sh(f"rm -f {key} {key}.pub")
    fixed = node_2()
    assert (fixed["exit"], fixed["status"], fixed["transition"]) == (0, "PASS", "fixed")
    assert fixed["first_failed_at"] is None


def test_a_node_stopped_during_a_hunt_answers_late_with_retry_missing(
    provisioned_lab: Lab,
) -> None:
    lab = provisioned_lab
    infected = [lab.host("node-1"), lab.host("node-2")]
    for host in infected:
        host.sh(f"mkdir -p $(dirname {TROJAN_PATH})")
        host.write_file(TROJAN_PATH, TROJAN)
    broken = lab.host("node-2")
    try:
        for pid in broken.pids_of("osqueryd"):
            broken.sh(f"kill {pid}", check=False)
        wait_for(lambda: not broken.pids_of("osqueryd"), "osqueryd to stop on node-2")
        hunt = run_cli(
            lab, "hunt", "--path", TROJAN_PATH, "--sha256", TROJAN_SHA, "--format", "json"
        )
        assert hunt.exit_code == 3, hunt.output
        assert [r["nodeID"] for r in json.loads(hunt.stdout)] == ["node-1"]
        assert "node-2: could not answer" in hunt.stderr
        assert "1 failed" in hunt.stderr
        run_id = run_id_of(hunt)
        shown = run_cli(lab, "show", run_id, "--format", "json")
        assert shown.stdout == hunt.stdout

        reprovision(lab)  # node-2's osqueryd runs again
        late = run_cli(lab, "query", "--retry-missing", run_id, "--format", "json")
        assert late.exit_code == 3, late.output  # the late answer is a finding too
        assert "retry: asking node-2 again" in late.stderr
        assert [r["nodeID"] for r in json.loads(late.stdout)] == ["node-2"]
        assert "coverage: 3/3 nodes answered" in late.stderr

        complete = run_cli(lab, "show", run_id, "--format", "json")
        assert complete.exit_code == 0, complete.output
        rows = json.loads(complete.stdout)
        assert rows == [
            {
                "hostname": name,
                "nodeID": name,
                "path": TROJAN_PATH,
                "sha256": TROJAN_SHA,
                "answeredLate": "true" if name == "node-2" else "",
            }
            for name in ("node-1", "node-2")
        ]
        assert "node-2: answered late" in complete.stderr
        listed = run_cli(lab, "history", "--kind", "hunt", "--limit", "1", "--format", "json")
        (run,) = json.loads(listed.stdout)
        assert run["run_id"] == run_id and run["late_nodes"] == 1
        assert run["coverage"]["failed"] == 0
    finally:
        for host in infected:
            host.sh("rm -rf /var/www/htdocs", check=False)
        if not broken.pids_of("osqueryd"):
            reprovision(lab)


def test_a_bad_history_stops_before_submitting_and_no_history_runs_anyway(
    provisioned_lab: Lab,
) -> None:
    lab = provisioned_lab
    original = (lab.workdir / "fleetkit.yaml").read_text()
    assert "history:" not in original
    settings = lab.workdir / "fleetkit-bad-history.yaml"
    bad = lab.workdir / "bad-history.db"
    settings.write_text(original + f"\nhistory:\n  path: {bad.name}\n")
    bad.write_bytes(b"garbage, not SQLite\n" * 64)
    try:
        jobs_before = _jobs(lab)
        refused = run_cli(lab, "query", "SELECT 1 AS one", "--settings", str(settings))
        assert refused.exit_code == 2, refused.output
        assert str(bad) in refused.stderr and refused.stdout == ""
        assert _jobs(lab) == jobs_before
        anyway = run_cli(
            lab, "query", "SELECT 1 AS one", "--no-history", "--settings", str(settings)
        )
        assert anyway.exit_code == 0, anyway.output
        assert len(json.loads(anyway.stdout)) == 3
        assert bad.read_bytes() == b"garbage, not SQLite\n" * 64
    finally:
        settings.unlink(missing_ok=True)
        bad.unlink(missing_ok=True)


def _jobs(lab: Lab) -> int:
    response = requests.get(f"{lab.orchestrator_url}/api/v1/orchestrator/jobs", timeout=10)
    response.raise_for_status()
    return len(response.json().get("Items") or [])
