"""``invoke nodes``: the cluster joined with the inventory, on labs of their own.

A rogue compute node is started by hand (the stand-in ``bacalhau serve`` with
the right token) inside an extra lab host that is not in the inventory; these
tests use their own small labs so the shared lab never sees a stranger.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from lab.fleet import Lab
from lab.hosts import LabHost, free_ports
from lab.standins.bacalhau.build import build_zipapp
from tests.e2e.conftest import orchestrator_nodes, run_cli, wait_connected
from tests.e2e.test_verify import lab_runtime, service_specs, stop_service

pytestmark = pytest.mark.lab


def provisioned(lab_factory: Callable[..., Lab], **settings: Any) -> Lab:
    lab = lab_factory(compute=2)
    if settings:
        lab.write_settings(**settings)
    result = run_cli(lab, "provision")
    assert result.exit_code == 0, result.output
    return lab


def start_rogue(lab: Lab, name: str = "rogue-1", labels: str = "role=osquery,env=lab") -> LabHost:
    """A compute node nobody onboarded: right token, own API port, not in the inventory."""
    host = lab.add_host(name, in_inventory=False, pin_key=False)
    start_agent_by_hand(lab, host, data_dir="/var/lib/rogue", labels=labels, tag="rogue")
    return host


def start_agent_by_hand(
    lab: Lab, host: LabHost, *, data_dir: str, labels: str, tag: str = "by-hand"
) -> None:
    """``bacalhau serve`` started on ``host`` the way a person would, not by fleetkit:
    the right token, ``NameProvider: hostname`` (so it joins under the machine's
    hostname, persisted in ``data_dir``), its own API port; pidfile ``/run/<tag>.pid``."""
    host.write_file("/usr/local/bin/bacalhau", build_zipapp(), 0o755)
    token = (lab.workdir / "secrets" / "node_token").read_text().strip()
    [api_port] = free_ports(1)
    argv = [
        "/usr/local/bin/bacalhau",
        "serve",
        "-c",
        "NameProvider=hostname",
        "-c",
        f"DataDir={data_dir}",
        "-c",
        f"API.Port={api_port}",
        "-c",
        "Compute.Enabled=true",
        "-c",
        f"Compute.Orchestrators=nats://{lab.control_plane.address}:{lab.nats_port}",
        "-c",
        f"Compute.Auth.Token={token}",
        "-c",
        "Compute.AllowListedLocalPaths=/var/osquery",
        "-c",
        "Compute.Heartbeat.Interval=1s",
        "-c",
        f"Labels={labels}",
    ]
    script = f"exec {shlex.join(argv)} >>/var/log/{tag}.log 2>&1"
    host.sh(
        f"start-stop-daemon --start --background --make-pidfile --pidfile /run/{tag}.pid "
        f"--startas /bin/sh -- -c {shlex.quote(script)}"
    )


def stop_agent_by_hand(host: LabHost, tag: str = "by-hand") -> None:
    host.sh(f"start-stop-daemon --stop --oknodo --retry TERM/10/KILL/5 --pidfile /run/{tag}.pid")


def wait_for(lab: Lab, name: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + 30
    while True:
        nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(lab)}
        if name in nodes and predicate(nodes[name]):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not in the expected state: {nodes.get(name)}")
        time.sleep(0.2)


def status_of(node: dict[str, Any]) -> str:
    return str((node.get("ConnectionState") or {}).get("Status") or node.get("Connection"))


def test_matching_cluster_is_exit_0(lab_factory: Callable[..., Lab]) -> None:
    lab = provisioned(lab_factory)
    wait_connected(lab, ["node-1", "node-2"])
    result = run_cli(lab, "nodes")
    assert result.exit_code == 0, result.stderr
    assert "the cluster matches the inventory (2 compute nodes" in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].split()[:3] == ["NODE", "INVENTORY", "STATE"]
    assert any(line.split()[:3] == ["node-1", "yes", "connected"] for line in lines)


def test_rogue_node_and_stopped_agent(lab_factory: Callable[..., Lab]) -> None:
    lab = provisioned(lab_factory)
    wait_connected(lab, ["node-1", "node-2"])
    start_rogue(lab)
    wait_for(lab, "rogue-1", lambda n: status_of(n) == "CONNECTED")

    result = run_cli(lab, "nodes")
    assert result.exit_code == 1
    assert "ROGUE: in the cluster but not in the inventory" in result.stderr
    assert "rogue-1" in result.stderr.split("ROGUE:", 1)[1]
    rogue_line = next(line for line in result.stderr.splitlines() if line.startswith("rogue-1"))
    assert rogue_line.split()[:3] == ["rogue-1", "NO", "connected"]

    # An inventory host whose agent stops: DISCONNECTED (with since) once the
    # orchestrator's disconnect timeout passes.
    bacalhau, _ = service_specs(lab)
    stop_service(lab.host("node-2"), bacalhau)
    timeout = _seconds(lab_runtime(lab).settings.bacalhau.disconnect_timeout)
    deadline = time.monotonic() + timeout + 15
    while True:
        nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(lab)}
        if status_of(nodes["node-2"]) == "DISCONNECTED":
            break
        assert time.monotonic() < deadline, "node-2 never shown DISCONNECTED"
        time.sleep(0.25)
    as_json = run_cli(lab, "nodes", "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["rogue"] == ["rogue-1"]
    assert data["missing"] == []
    assert data["not_ready"] == ["node-2"]
    lost = next(n for n in data["nodes"] if n["name"] == "node-2")
    assert lost["state"] == "disconnected" and lost["since"]
    table = run_cli(lab, "nodes").stderr
    assert "NOT READY: node-2 is disconnected" in table
    assert "run: invoke provision --hosts node-2" in table


def _seconds(duration: str) -> float:
    """A Go duration (``3s``, ``1m``, ``1m30s``, ``500ms``) in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", duration))


def test_manual_approval_approves_only_inventory_nodes(lab_factory: Callable[..., Lab]) -> None:
    lab = provisioned(lab_factory, bacalhau={"manual_approval": True})
    for name in ("node-1", "node-2"):
        wait_for(lab, name, lambda n: n.get("Membership") == "PENDING")
    start_rogue(lab)
    wait_for(lab, "rogue-1", lambda n: n.get("Membership") == "PENDING")

    before = run_cli(lab, "nodes", "--json")
    assert before.exit_code == 1
    data = json.loads(before.stdout)
    assert sorted(data["not_ready"]) == ["node-1", "node-2"]
    assert data["rogue"] == ["rogue-1"]

    approved = run_cli(lab, "nodes", "--approve")
    assert approved.exit_code == 1  # the rogue is still there, and was not approved
    assert "approve node-1: approved" in approved.stderr
    assert "approve rogue-1: not approved: not in the inventory" in approved.stderr
    url = f"{lab.orchestrator_url}/api/v1/orchestrator/nodes"
    membership = {
        n["Info"]["NodeID"]: n["Membership"] for n in requests.get(url, timeout=10).json()["Nodes"]
    }
    assert membership == {"node-1": "APPROVED", "node-2": "APPROVED", "rogue-1": "PENDING"}
