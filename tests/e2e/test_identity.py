"""Node identity end to end: the inventory name is the node's identity at the orchestrator.

Real machines are rarely named as the inventory names them (``web-9`` is
``ip-10-0-1-29`` to itself). On labs of their own:

- a device onboarded as ``web-9`` whose machine is ``ip-10-0-1-29``: ``nodes``,
  ``query`` (rows under ``web-9`` with the machine's hostname, ``--hosts web-9``)
  and ``verify`` agree on who it is;
- a machine whose agent joined under its hostname before fleetkit provisioned
  it (Bacalhau persisted that name): recognised by fleetkit's label, ``verify``
  names the persisted name and the fix, and following the fix renames it;
- a second node claiming an inventory host: an error everywhere, never merged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests

from lab.fleet import Lab
from tests.e2e.conftest import CliResult, orchestrator_nodes, run_cli, wait_connected
from tests.e2e.test_nodes import (
    start_agent_by_hand,
    start_rogue,
    status_of,
    stop_agent_by_hand,
    wait_for,
)
from tests.e2e.test_onboard import host_fingerprint, run_onboard
from tests.e2e.test_query import executed_on, rows_of
from tests.e2e.test_verify import verify_json

pytestmark = pytest.mark.lab

METADATA = "/var/lib/bacalhau/system_metadata.yaml"


def provisioned(lab_factory: Callable[..., Lab]) -> Lab:
    lab = lab_factory(compute=1)
    result = run_cli(lab, "provision")
    assert result.exit_code == 0, result.output
    wait_connected(lab, ["node-1"])
    return lab


def labels_of(node: dict[str, Any]) -> dict[str, str]:
    return dict(node["Info"].get("Labels") or {})


def nodes_json(lab: Lab) -> tuple[CliResult, dict[str, Any]]:
    result = run_cli(lab, "nodes", "--json")
    return result, json.loads(result.stdout)


def row(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in data["nodes"] if n["name"] == name)


def check(data: dict[str, Any], host: str, name: str) -> dict[str, Any]:
    entry = next(h for h in data["hosts"] if h["host"] == host)
    return next(c for c in entry["checks"] if c["name"] == name)


def test_an_onboarded_machine_named_otherwise_is_its_inventory_name_everywhere(
    lab_factory: Callable[..., Lab],
) -> None:
    lab = provisioned(lab_factory)
    device = lab.add_host("web-9", in_inventory=False, pin_key=False, machine_name="ip-10-0-1-29")
    assert device.sh("uname -n").stdout.strip() == "ip-10-0-1-29"
    api_port = lab.entries["web-9"].bacalhau_api_port
    onboard = run_onboard(lab, device, fp=host_fingerprint(device), api_port=api_port)
    assert onboard.exit_code == 0, onboard.stderr
    assert "onboard: web-9 is ready" in onboard.stderr

    # The node joined under its inventory name (--name), labelled with both names.
    nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(lab)}
    assert "web-9" in nodes and "ip-10-0-1-29" not in nodes
    assert {"fleetkit-host": "web-9", "fleetkit-hostname": "ip-10-0-1-29"}.items() <= (
        labels_of(nodes["web-9"]).items()
    )

    listed, data = nodes_json(lab)
    assert listed.exit_code == 0, listed.output
    assert data["rogue"] == [] and data["missing"] == [] and data["conflicts"] == []
    assert {"node_id": "web-9", "hostname": "ip-10-0-1-29", "matched_by": "label"}.items() <= (
        row(data, "web-9").items()
    )

    for via in ("bacalhau", "ssh"):
        everyone = run_cli(lab, "query", "SELECT 1 AS one", "--via", via)
        assert everyone.exit_code == 0, everyone.output
        assert {"nodeID": "web-9", "hostname": "ip-10-0-1-29", "one": "1"} in rows_of(everyone)
        only = run_cli(
            lab, "query", "SELECT hostname FROM system_info", "--via", via, "--hosts", "web-9"
        )
        assert only.exit_code == 0, only.output
        assert rows_of(only) == [{"nodeID": "web-9", "hostname": "ip-10-0-1-29"}]
    pinned = run_cli(lab, "query", "SELECT 1 AS one", "--hosts", "web-9")
    assert executed_on(lab, pinned) == ["web-9"]  # the job reached it, and only it

    verified, report = verify_json(lab, "--hosts", "web-9")
    assert verified.exit_code == 0, verified.output
    host = next(h for h in report["hosts"] if h["host"] == "web-9")
    assert host["node_id"] == row(data, "web-9")["node_id"] == "web-9"  # verify and nodes agree
    assert check(report, "web-9", "cluster.identity")["verdict"] == "pass"


def test_a_node_that_joined_under_its_hostname_is_recognised_and_the_fix_renames_it(
    lab_factory: Callable[..., Lab],
) -> None:
    lab = provisioned(lab_factory)
    # A machine whose agent was started by hand before fleetkit knew it: it joined as
    # its hostname, and Bacalhau persisted that name in its data dir.
    host = lab.add_host("web-7", machine_name="ip-10-0-1-17")
    start_agent_by_hand(lab, host, data_dir="/var/lib/bacalhau", labels="role=osquery,env=lab")
    wait_for(lab, "ip-10-0-1-17", lambda n: status_of(n) == "CONNECTED")
    assert "NodeName: ip-10-0-1-17" in host.sh(f"cat {METADATA}").stdout
    stop_agent_by_hand(host)

    provision = run_cli(lab, "provision", "--hosts", "web-7")
    assert provision.exit_code == 0, provision.output
    # Bacalhau ignores --name web-7 (a name is persisted): it rejoins as ip-10-0-1-17,
    # now carrying fleetkit's label.
    wait_for(
        lab,
        "ip-10-0-1-17",
        lambda n: status_of(n) == "CONNECTED" and labels_of(n).get("fleetkit-host") == "web-7",
    )

    listed, data = nodes_json(lab)
    assert listed.exit_code == 0, listed.output  # recognised: not missing, not rogue
    assert data["rogue"] == [] and data["missing"] == []
    assert {"node_id": "ip-10-0-1-17", "matched_by": "label"}.items() <= row(data, "web-7").items()
    assert "note: web-7 joined the cluster as ip-10-0-1-17" in run_cli(lab, "nodes").stderr

    rows = run_cli(lab, "query", "SELECT 1 AS one", "--hosts", "web-7")
    assert rows.exit_code == 0, rows.output
    assert rows_of(rows) == [{"nodeID": "web-7", "hostname": "ip-10-0-1-17", "one": "1"}]

    verified, report = verify_json(lab, "--hosts", "web-7")
    assert verified.exit_code == 0, verified.output  # it works; the name differs
    identity = check(report, "web-7", "cluster.identity")
    assert identity["verdict"] == "warn"
    assert "web-7 joined the cluster as ip-10-0-1-17" in identity["evidence"]
    assert f"persisted in {METADATA}" in identity["evidence"]
    fix = identity["fix"]
    assert f"sed -i '/^NodeName:/d' {METADATA}" in fix
    assert "invoke provision --hosts web-7" in fix and "bacalhau node delete ip-10-0-1-17" in fix

    # The fix, step by step, as written.
    host.sh(
        "start-stop-daemon --stop --oknodo --retry TERM/10/KILL/5 "
        "--pidfile /run/fleetkit/bacalhau.pid"
    )
    host.sh(f"sed -i '/^NodeName:/d' {METADATA}")
    again = run_cli(lab, "provision", "--hosts", "web-7")
    assert again.exit_code == 0, again.output
    wait_for(lab, "web-7", lambda n: status_of(n) == "CONNECTED")
    # Until the old record is deleted, two nodes claim web-7: an error, never merged.
    stale, data = nodes_json(lab)
    assert stale.exit_code == 1
    assert data["conflicts"][0]["nodes"] == ["ip-10-0-1-17", "web-7"]
    url = f"{lab.orchestrator_url}/api/v1/orchestrator/nodes/ip-10-0-1-17"
    deleted = requests.put(url, json={"Action": "delete", "NodeID": "ip-10-0-1-17"}, timeout=10)
    assert deleted.json().get("Success") is True, deleted.text  # bacalhau node delete

    listed, data = nodes_json(lab)
    assert listed.exit_code == 0, listed.output
    assert row(data, "web-7")["node_id"] == "web-7"
    verified, report = verify_json(lab, "--hosts", "web-7")
    assert verified.exit_code == 0, verified.output
    assert check(report, "web-7", "cluster.identity")["verdict"] == "pass"


def test_a_second_node_claiming_an_inventory_host_is_an_error_everywhere(
    lab_factory: Callable[..., Lab],
) -> None:
    lab = lab_factory(compute=2)
    assert run_cli(lab, "provision").exit_code == 0
    wait_connected(lab, ["node-1", "node-2"])
    # A token holder that labels itself as node-1 (what an impostor would do).
    start_rogue(lab, "impostor", labels="role=osquery,env=lab,fleetkit-host=node-1")
    wait_for(lab, "impostor", lambda n: status_of(n) == "CONNECTED")

    listed = run_cli(lab, "nodes")
    assert listed.exit_code == 1
    assert "CONFLICT: 2 nodes claim inventory host node-1: impostor by its label" in (listed.stderr)
    _, data = nodes_json(lab)
    assert data["rogue"] == [] and data["conflicts"][0]["hosts"] == ["node-1"]

    asked = run_cli(lab, "query", "SELECT 1 AS one")
    assert asked.exit_code == 1
    assert [r["nodeID"] for r in rows_of(asked)] == ["node-2"]
    assert "node-1 missing: identity conflict, not asked" in asked.stderr
    assert executed_on(lab, asked) == ["node-2"]  # neither claimant got the SQL

    verified, report = verify_json(lab, "--hosts", "node-1")
    assert verified.exit_code == 1
    node = check(report, "node-1", "cluster.node")
    assert node["verdict"] == "fail" and node["evidence"].startswith("identity conflict")

    # Rogue detection still works for a node that carries no fleetkit label.
    start_rogue(lab, "rogue-1")
    wait_for(lab, "rogue-1", lambda n: status_of(n) == "CONNECTED")
    _, data = nodes_json(lab)
    assert data["rogue"] == ["rogue-1"]
