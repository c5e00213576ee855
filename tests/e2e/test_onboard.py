"""``invoke onboard`` on a lab of its own: refusals write nothing, a new host ends up ready.

The lab (1 control plane + 1 compute, provisioned) gets extra hosts that are
neither in the inventory nor pinned, exactly like a new device on the network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import paramiko
import pytest
import requests

from fleetkit.clients.ssh import fingerprint
from fleetkit.foundation.inventory import load_inventory
from lab.fleet import Lab
from lab.hosts import LabHost
from tests.e2e.conftest import CliResult, run_cli, wait_connected
from tests.unit.test_known_hosts import ecdsa, entry

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("onboard-lab"), compute=1).up()
    try:
        result = run_cli(lab, "provision")
        assert result.exit_code == 0, result.output
        wait_connected(lab, ["node-1"])
        yield lab
    finally:
        lab.down()


def host_fingerprint(host: LabHost) -> str:
    """The SHA256 fingerprint of the key the host's sshd offers (what its console would show)."""
    _, kind, blob = host.known_hosts_line.split()
    assert kind == "ssh-ed25519"
    return fingerprint(paramiko.Ed25519Key(data=base64.b64decode(blob)))


def snapshot(lab: Lab) -> dict[str, bytes]:
    """Every file of the inventory directory (known_hosts included), byte for byte."""
    root = lab.workdir / "inventory"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def run_onboard(lab: Lab, host: LabHost, *, fp: str | None, api_port: int | None) -> CliResult:
    """``invoke onboard`` through the real CLI (lab nodes need their own agent API port)."""
    argv = [
        "onboard",
        "--host",
        host.name,
        "--address",
        host.address,
        "--port",
        str(host.ssh_port),
        "--labels",
        "role=osquery,env=lab",
    ]
    if fp:
        argv += ["--host-key-fingerprint", fp]
    if api_port:
        argv += ["--bacalhau-api-port", str(api_port)]
    return run_cli(lab, *argv)


def test_wrong_fingerprint_or_no_confirmation_writes_nothing(small_lab: Lab) -> None:
    stranger = small_lab.add_host("node-5", in_inventory=False, pin_key=False)
    before = snapshot(small_lab)
    argv = ["onboard", "--host", "node-5", "--address", stranger.address]
    argv += ["--port", str(stranger.ssh_port)]

    wrong = run_cli(small_lab, *argv, "--host-key-fingerprint", "SHA256:" + "A" * 43)
    assert wrong.exit_code == 2
    assert "host key mismatch for node-5" in wrong.stderr
    assert host_fingerprint(stranger) in wrong.stderr  # what the host really offered
    assert "Nothing was written" in wrong.stderr

    unconfirmed = run_cli(small_lab, *argv, stdin="yes\n")  # not a terminal: never a yes
    assert unconfirmed.exit_code == 2
    assert "not confirmed" in unconfirmed.stderr

    assert snapshot(small_lab) == before
    assert not stranger.exists("/etc/bacalhau/config.yaml")
    assert not stranger.exists("/etc/osquery/osquery.flags")


def test_existing_name_at_another_address_is_refused(small_lab: Lab) -> None:
    before = snapshot(small_lab)
    result = run_cli(small_lab, "onboard", "--host", "node-1", "--address", "127.0.0.250")
    assert result.exit_code == 2
    assert "host 'node-1' is already in the inventory at" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(small_lab) == before


def test_onboard_a_new_host_end_to_end(small_lab: Lab) -> None:
    new = small_lab.add_host("node-4", in_inventory=False, pin_key=False)
    api_port = small_lab.entries["node-4"].bacalhau_api_port
    result = run_onboard(small_lab, new, fp=host_fingerprint(new), api_port=api_port)
    assert result.exit_code == 0, result.stderr
    assert "onboard: node-4 is ready" in result.stderr

    # Pinned, in the inventory (its own new file), provisioned, joined.
    known = (small_lab.workdir / "inventory" / "known_hosts").read_text()
    assert f"[{new.address}]:{new.ssh_port} ssh-ed25519 " in known
    file = small_lab.workdir / "inventory" / "hosts.d" / "node-4.yaml"
    inventory = load_inventory(small_lab.workdir / "inventory")
    added = inventory.get("node-4")
    assert added is not None and added.is_compute and added.source == str(file)
    assert added.labels == {"role": "osquery", "env": "lab"}
    assert new.exists("/etc/osquery/osquery.flags") and new.exists("/var/osquery/osquery.em")
    nodes = requests.get(f"{small_lab.orchestrator_url}/api/v1/orchestrator/nodes", timeout=10)
    states = {n["Info"]["NodeID"]: n["ConnectionState"]["Status"] for n in nodes.json()["Nodes"]}
    assert states.get("node-4") == "CONNECTED"

    # Its rows appear in the next fleet query.
    query = run_cli(small_lab, "query", "SELECT hostname FROM system_info", "--via", "bacalhau")
    assert query.exit_code == 0, query.stderr
    rows = json.loads(query.stdout)
    assert {"hostname": "node-4", "nodeID": "node-4"} in [
        {"hostname": r["hostname"], "nodeID": r["nodeID"]} for r in rows
    ]

    # Re-running resumes: nothing is refused, nothing is rewritten.
    before = snapshot(small_lab)
    again = run_onboard(small_lab, new, fp=None, api_port=api_port)
    assert again.exit_code == 0, again.stderr
    assert "already pinned" in again.stderr and "already in the inventory" in again.stderr
    assert snapshot(small_lab) == before


def test_a_reinstalled_host_is_refused_then_replaced_explicitly(small_lab: Lab) -> None:
    """Another key type pinned for the address: exit 2 and nothing written, until
    --replace-key (with the new key confirmed) swaps exactly that host's line."""
    new = small_lab.add_host("node-6", in_inventory=False, pin_key=False)
    api_port = small_lab.entries["node-6"].bacalhau_api_port
    name = new.known_hosts_line.split()[0]
    old = entry(name, ecdsa()) + "\n"  # what the host offered before its reinstall
    known = small_lab.workdir / "inventory" / "known_hosts"
    known.write_text(known.read_text() + old)
    before = snapshot(small_lab)

    refused = run_onboard(small_lab, new, fp=host_fingerprint(new), api_port=api_port)
    assert refused.exit_code == 2, refused.stderr
    assert "offers a key of another type (ssh-ed25519" in refused.stderr
    assert snapshot(small_lab) == before
    assert not new.exists("/etc/osquery/osquery.flags")

    replaced = run_cli(
        small_lab,
        "onboard",
        "--host",
        new.name,
        "--address",
        new.address,
        "--port",
        str(new.ssh_port),
        "--labels",
        "role=osquery,env=lab",
        "--host-key-fingerprint",
        host_fingerprint(new),
        "--bacalhau-api-port",
        str(api_port),
        "--replace-key",
    )
    assert replaced.exit_code == 0, replaced.stderr
    assert "onboard: replaced ecdsa-sha2-nistp256 " in replaced.stderr
    lines = known.read_text().splitlines()
    assert old.strip() not in lines
    assert new.known_hosts_line in lines
    assert "onboard: node-6 is ready" in replaced.stderr
