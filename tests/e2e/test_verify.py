"""``invoke verify`` on the lab: a lab fleet passes, then each fault alone is named.

Every fault is injected by hand inside one host (``LabHost.sh``, not through
fleetkit), verify must name exactly the checks that fault breaks with the fix
a person would paste, and the test restores the host before the next one
(``reprovision``, which also proves the suggested fix works).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fleetkit.foundation.environment import Environment
from fleetkit.hostfacts.roles.bacalhau import bacalhau_service
from fleetkit.hostfacts.roles.osquery import osqueryd_service
from fleetkit.hostfacts.services import ServiceSpec, StartStopDaemon
from fleetkit.runtime import Runtime
from lab.fleet import Lab
from lab.hosts import LabHost
from tests.e2e.conftest import CliResult, run_cli

pytestmark = pytest.mark.lab

# --------------------------------------------------------------------------- helpers


def lab_runtime(lab: Lab) -> Runtime:
    env = Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), environ=lab.environ(), cwd=str(lab.workdir)
    )
    return Runtime(env=env)


def service_specs(lab: Lab) -> tuple[ServiceSpec, ServiceSpec]:
    """(bacalhau, osqueryd) exactly as provisioning runs them."""
    settings = lab_runtime(lab).settings
    return bacalhau_service(settings), osqueryd_service(settings)


def stop_service(host: LabHost, spec: ServiceSpec) -> None:
    host.sh(StartStopDaemon().stop_command(spec))


def restart_service(host: LabHost, spec: ServiceSpec) -> None:
    host.sh(StartStopDaemon().restart_command(spec, reload=False))


def verify_json(lab: Lab, *args: str) -> tuple[CliResult, dict[str, Any]]:
    result = run_cli(lab, "verify", "--json", *args)
    assert result.stdout, result.output
    return result, json.loads(result.stdout)


def failures(data: dict[str, Any]) -> dict[str, list[str]]:
    """Host -> names of its failed checks."""
    out: dict[str, list[str]] = {}
    for host in data["hosts"]:
        bad = [c["name"] for c in host["checks"] if c["verdict"] == "fail"]
        if bad:
            out[host["host"]] = bad
    return out


def check(data: dict[str, Any], host: str, name: str) -> dict[str, Any]:
    entry = next(h for h in data["hosts"] if h["host"] == host)
    return next(c for c in entry["checks"] if c["name"] == name)


def node_info(lab: Lab, name: str) -> dict[str, Any] | None:
    response = requests.get(f"{lab.orchestrator_url}/api/v1/orchestrator/nodes", timeout=10)
    response.raise_for_status()
    for node in response.json().get("Nodes") or []:
        if node["Info"]["NodeID"] == name:
            return dict(node)
    return None


def wait_node(lab: Lab, name: str, predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(node_info(lab, name)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {what} not seen within {timeout}s")
        time.sleep(0.2)


def wait_ready(lab: Lab, timeout: float = 20.0) -> None:
    """verify passes again (bounded): a restarted agent's new node info takes a heartbeat."""
    deadline = time.monotonic() + timeout
    while True:
        result, data = verify_json(lab)
        if result.exit_code == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"lab not ready {timeout}s after restoring: {failures(data)}")
        time.sleep(0.5)


@pytest.fixture
def broken(provisioned_lab: Lab) -> Iterator[list[str]]:
    """Names of the hosts a test breaks; restored with the fix verify names (provision)."""
    names: list[str] = []
    yield names
    if names:
        result = run_cli(provisioned_lab, "provision", "--hosts", ",".join(names))
        assert result.exit_code == 0, result.output
    wait_ready(provisioned_lab)


# --------------------------------------------------------------------------- lab


def test_healthy_lab_passes_every_check(provisioned_lab: Lab) -> None:
    table = run_cli(provisioned_lab, "verify")
    assert table.exit_code == 0, table.stderr
    assert table.stdout == ""
    assert "verify: all 4 hosts ready" in table.stderr
    assert "FAIL" not in table.stderr
    result, data = verify_json(provisioned_lab)
    assert result.exit_code == 0
    assert data["ready"] is True and failures(data) == {}
    assert [h["host"] for h in data["hosts"]] == ["orch-1", "node-1", "node-2", "node-3"]
    for name in ("node-1", "node-2", "node-3"):
        assert check(data, name, "osquery.probe")["verdict"] == "pass"
        assert check(data, name, "cluster.node")["evidence"].startswith(f"node {name} CONNECTED")
    token = (provisioned_lab.workdir / "secrets" / "node_token").read_text().strip()
    assert token not in result.output and token not in table.output


# --------------------------------------------------------------------------- faults


def test_osqueryd_stopped(provisioned_lab: Lab, broken: list[str]) -> None:
    lab = provisioned_lab
    broken.append("node-1")
    _, osqueryd = service_specs(lab)
    stop_service(lab.host("node-1"), osqueryd)
    result, data = verify_json(lab)
    assert result.exit_code == 1
    bad = failures(data)
    assert list(bad) == ["node-1"]
    assert bad["node-1"][0] == "osqueryd.running"
    assert set(bad["node-1"]) <= {"osqueryd.running", "osquery.socket", "osquery.probe"}
    daemon = check(data, "node-1", "osqueryd.running")
    assert "osqueryd is not running" in daemon["evidence"]
    assert daemon["fix"] == "run: invoke provision --hosts node-1"
    assert "node-1 (osqueryd.running" in result.stderr


def test_socket_removed(provisioned_lab: Lab, broken: list[str]) -> None:
    lab = provisioned_lab
    broken.append("node-2")
    node = lab.host("node-2")
    node.sh("rm -f /var/osquery/osquery.em")
    result, data = verify_json(lab)
    assert result.exit_code == 1
    assert failures(data) == {"node-2": ["osquery.socket", "osquery.probe"]}
    sock = check(data, "node-2", "osquery.socket")
    assert "/var/osquery/osquery.em: no such file" in sock["evidence"]
    assert sock["fix"] == "run: invoke provision --hosts node-2"
    # The fix works: provisioning restarts the running daemon that lost its socket.
    pid_before = node.pids_of("osqueryd")
    assert run_cli(lab, "provision", "--hosts", "node-2").exit_code == 0
    assert node.exists("/var/osquery/osquery.em")
    assert node.pids_of("osqueryd") != pid_before
    assert verify_json(lab)[0].exit_code == 0


def test_flags_file_edited(provisioned_lab: Lab, broken: list[str]) -> None:
    lab = provisioned_lab
    broken.append("node-1")
    edit = r"sed -i 's/^\(--disable_tables=.*\)curl,/\1/' /etc/osquery/osquery.flags"
    lab.host("node-1").sh(edit)
    result, data = verify_json(lab, "--hosts", "node-1")
    assert result.exit_code == 1
    assert failures(data) == {"node-1": ["osquery.flags"]}
    flags = check(data, "node-1", "osquery.flags")
    assert "--disable_tables lacks curl" in flags["evidence"]
    assert flags["fix"] == "run: invoke provision --hosts node-1"


def test_agent_stopped(provisioned_lab: Lab, broken: list[str]) -> None:
    lab = provisioned_lab
    broken.append("node-2")
    bacalhau, _ = service_specs(lab)
    stop_service(lab.host("node-2"), bacalhau)
    result, data = verify_json(lab)
    assert result.exit_code == 1
    bad = failures(data)
    assert list(bad) == ["node-2"]
    # The orchestrator notices only after its disconnect timeout; the node itself at once.
    assert bad["node-2"][0] == "bacalhau.agent"
    assert set(bad["node-2"]) <= {"bacalhau.agent", "cluster.node"}
    agent = check(data, "node-2", "bacalhau.agent")
    assert "bacalhau is not running" in agent["evidence"]
    assert agent["fix"] == "run: invoke provision --hosts node-2"


def test_wrong_token_node_never_joins(provisioned_lab: Lab, broken: list[str]) -> None:
    lab = provisioned_lab
    broken.append("node-3")
    bacalhau, _ = service_specs(lab)
    node = lab.host("node-3")
    wrong = r"s/^\(    Token: \).*/\1not-the-cluster-token-123/"
    node.sh(f"sed -i '{wrong}' /etc/bacalhau/config.yaml")
    restart_service(node, bacalhau)
    # Forget the node so it must join again, with the wrong token this time.
    requests.put(
        f"{lab.orchestrator_url}/api/v1/orchestrator/nodes/node-3",
        json={"NodeID": "node-3", "Action": "delete", "Message": "test"},
        timeout=10,
    ).raise_for_status()
    time.sleep(1.5)  # a few heartbeats of the lab (1s): it must stay out
    assert node_info(lab, "node-3") is None
    result, data = verify_json(lab)
    assert result.exit_code == 1
    assert failures(data) == {"node-3": ["bacalhau.config", "cluster.node"]}
    config = check(data, "node-3", "bacalhau.config")
    assert "Compute.Auth.Token differs from bacalhau.node_token" in config["evidence"]
    assert config["fix"] == "run: invoke provision --hosts node-3"
    assert (
        "not in the orchestrator's node list" in check(data, "node-3", "cluster.node")["evidence"]
    )
    assert "not-the-cluster-token-123" not in result.output


def test_allow_list_missing(provisioned_lab: Lab, broken: list[str]) -> None:
    lab = provisioned_lab
    broken.append("node-1")
    bacalhau, _ = service_specs(lab)
    node = lab.host("node-1")
    node.sh("sed -i '/AllowListedLocalPaths:/,+1d' /etc/bacalhau/config.yaml")
    restart_service(node, bacalhau)
    wait_node(
        lab,
        "node-1",
        lambda n: (
            n is not None
            and "local" not in n["Info"]["ComputeNodeInfo"]["StorageSources"]
            and n["ConnectionState"]["Status"] == "CONNECTED"
        ),
        "node without local storage",
    )
    result, data = verify_json(lab)
    assert result.exit_code == 1
    assert failures(data) == {"node-1": ["bacalhau.config", "cluster.features"]}
    features = check(data, "node-1", "cluster.features")
    assert "storage local" in features["evidence"]
    assert "Compute.AllowListedLocalPaths must list /var/osquery" in features["evidence"]
    assert "AllowListedLocalPaths is []" in check(data, "node-1", "bacalhau.config")["evidence"]


def test_version_drift(provisioned_lab: Lab, broken: list[str]) -> None:
    lab = provisioned_lab
    broken.append("node-2")
    from lab.standins.bacalhau.build import build_zipapp

    bacalhau, _ = service_specs(lab)
    node = lab.host("node-2")
    node.write_file("/usr/local/bin/bacalhau", build_zipapp("v1.9.2"), 0o755)
    restart_service(node, bacalhau)
    wait_node(
        lab,
        "node-2",
        lambda n: (
            n is not None
            and n["Info"]["BacalhauVersion"]["GitVersion"] == "v1.9.2"
            and n["ConnectionState"]["Status"] == "CONNECTED"
        ),
        "v1.9.2 reported",
    )
    result, data = verify_json(lab)
    assert result.exit_code == 1
    assert failures(data) == {
        "orch-1": ["orchestrator.version"],
        "node-2": ["bacalhau.binary", "cluster.version"],
    }
    assert "-> v1.9.2; expected v1.9.3" in check(data, "node-2", "bacalhau.binary")["evidence"]
    versions = check(data, "orch-1", "orchestrator.version")
    assert "node-2 runs v1.9.2" in versions["evidence"]
    assert versions["fix"] == "run: invoke provision --hosts node-2"


def test_one_host_unreachable(provisioned_lab: Lab) -> None:
    node = provisioned_lab.host("node-3")
    node.stop_sshd()
    try:
        table = run_cli(provisioned_lab, "verify")
        result, data = verify_json(provisioned_lab)
    finally:
        node.start_sshd()
    assert table.exit_code == 1 and result.exit_code == 1
    assert failures(data) == {"node-3": ["ssh"]}
    ssh = check(data, "node-3", "ssh")
    assert "connection refused" in ssh["evidence"]
    assert ssh["fix"].startswith("start sshd on node-3")
    # Its daemons still run: the orchestrator vouches for it, the on-host checks are skipped.
    assert check(data, "node-3", "cluster.node")["verdict"] == "pass"
    assert check(data, "node-3", "osquery.probe")["verdict"] == "skip"
    assert re.search(r"node-3 +ssh +FAIL +cannot connect", table.stderr)
    assert "verify: 1 of 4 hosts NOT ready: node-3 (ssh)" in table.stderr


def test_orchestrator_unreachable_is_named_once(provisioned_lab: Lab) -> None:
    from lab.hosts import free_ports

    [closed] = free_ports(1)
    environ = {
        **provisioned_lab.environ(),
        "FLEETKIT_ORCHESTRATOR_URL": f"http://127.0.0.1:{closed}",
    }
    result = run_cli(provisioned_lab, "verify", "--json", environ=environ)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert failures(data) == {"orch-1": ["orchestrator.api"]}
    api = check(data, "orch-1", "orchestrator.api")
    assert f"127.0.0.1:{closed}" in api["evidence"]
    assert check(data, "node-1", "cluster.node")["verdict"] == "skip"
    assert "Traceback" not in result.output


def test_a_hostile_node_is_reported_escaped_and_bounded(
    provisioned_lab: Lab, broken: list[str]
) -> None:
    """Escape codes in a node's files and a YAML alias bomb in its agent config: verify and
    provision --check end with the documented exit code and print escape codes escaped."""
    lab = provisioned_lab
    broken.append("node-2")
    node = lab.host("node-2")
    flags = node.read_file("/etc/osquery/osquery.flags")
    hostile = flags.replace("--disable_tables=", "--disable_tables=\x1b]0;owned\x07\x1b[2J,")
    node.write_file("/etc/osquery/osquery.flags", hostile, mode=0o644)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
        for i in range(9)
    )
    node.write_file("/etc/bacalhau/config.yaml", bomb, mode=0o600)
    table = run_cli(lab, "verify", "--hosts", "node-2")
    result, data = verify_json(lab, "--hosts", "node-2")
    assert table.exit_code == 1 and result.exit_code == 1
    assert {"osquery.flags", "bacalhau.config"} <= set(failures(data)["node-2"])
    assert "\x1b" not in table.stderr and "\x07" not in table.stderr
    assert "\\x1b]0;owned\\x07\\x1b[2J" in table.stderr
    flags_check = check(data, "node-2", "osquery.flags")
    assert "\x1b]0;owned" in flags_check["evidence"]  # JSON keeps the exact value
    assert len(check(data, "node-2", "bacalhau.config")["evidence"]) <= 500
    plan = run_cli(lab, "provision", "--check", "--hosts", "node-2")
    assert plan.exit_code == 0, plan.output
    assert "\x1b" not in plan.output and "\\x1b]0;owned\\x07" in plan.stdout
    assert node.read_file("/etc/osquery/osquery.flags") == hostile
