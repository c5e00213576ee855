"""Security workflows end to end: policy, hunt, denied tables, quarantine with rollback.

Two layers:

- the quarantine ruleset and its rollback protocol against the real ``nft`` in a
  throwaway network namespace (no SSH; a local stand-in for the remote shell),
  so no rule ever touches the machine running the tests;
- the incident on the netns lab (1 control plane + 3 compute, each host in its
  own network namespace): policy pack, hunt, quarantine of the infected hosts,
  release. Every change to the shared lab is undone by the test that made it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from fleetkit.cli import run_command
from fleetkit.clients.ssh import CommandResult, SSHError
from fleetkit.commands import quarantine
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host, load_inventory
from fleetkit.foundation.selectors import Selector
from fleetkit.foundation.status import ConfigError, ExitStatus, HostError
from fleetkit.runtime import Runtime
from lab.fleet import Lab
from lab.hosts import LabHost
from tests.e2e.conftest import (
    CliResult,
    connection_of,
    orchestrator_nodes,
    run_cli,
    wait_connected,
)
from tests.unit.test_policy import err, make_runtime

NFT_OK = os.geteuid() == 0 and shutil.which("nft") is not None and shutil.which("ip") is not None
needs_nft = pytest.mark.skipif(not NFT_OK, reason="needs root, nft and ip (network namespaces)")

HOST = Host(name="node-9", address="10.9.9.9", port=22, groups=("compute",))
ISOLATION = quarantine.Isolation(
    ssh_port=22,
    admin_networks=quarantine.parse_admin_networks(("10.9.9.1/32", "fd00::/64"), file="f"),
    peers=(quarantine.Peer("10.9.9.2", (4222, 1234)),),
)


# --------------------------------------------------------------------------- ruleset rendering


def test_ruleset_keeps_admin_ssh_and_the_orchestrator_link_and_drops_the_rest() -> None:
    text = quarantine.render_ruleset(ISOLATION, "node-9")
    assert "table inet fleetkit_quarantine {" in text
    assert "ip saddr 10.9.9.1/32 tcp dport 22 accept" in text
    assert "ip6 saddr fd00::/64 tcp dport 22 accept" in text
    assert "ip daddr 10.9.9.2 tcp dport { 4222, 1234 } accept" in text
    assert text.count("policy drop;") == 3
    assert "established,related accept" not in text  # an intruder's open session is cut


def test_no_admin_network_is_refused() -> None:
    with pytest.raises(ConfigError, match="admin network"):
        quarantine.render_ruleset(
            quarantine.Isolation(ssh_port=22, admin_networks=(), peers=()), "n"
        )
    with pytest.raises(ConfigError, match="invalid network 'nope'"):
        quarantine.parse_admin_networks(("nope",), file="fleetkit.yaml")


@needs_nft
def test_rendered_ruleset_passes_nft_check() -> None:
    text = quarantine.render_ruleset(ISOLATION, "node-9")
    checked = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"], input=text, text=True, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr


def test_the_node_keeps_its_orchestrator_and_result_store(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    settings = tmp_path / "fleetkit.yaml"
    settings.write_text(
        settings.read_text()
        + "query:\n  publisher: s3\n  s3: {bucket: b, endpoint: 'http://10.0.0.9:9000'}\n"
    )
    peers = quarantine.orchestrator_peers(rt.settings, rt.inventory.control_plane)
    assert peers == (
        quarantine.Peer("10.0.0.2", (4222, 1234)),
        quarantine.Peer("10.0.0.9", (9000,)),
    )


# --------------------------------------------------------------------------- inventory label


def test_state_file_labels_hosts_without_touching_the_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    original = "compute:\n  hosts:\n    node-1: {address: 10.0.0.1, labels: {env: lab}}\n"
    original += "    node-2: {address: 10.0.0.2}\n"
    (inventory / "fleet.yaml").write_text(original)
    quarantine.write_quarantine_state(str(inventory), ["node-1"])
    loaded = load_inventory(inventory)
    node1, node2 = loaded.get("node-1"), loaded.get("node-2")
    assert node1 is not None and node2 is not None
    assert node1.labels == {"env": "lab", "quarantined": "true"}
    assert "quarantined" in node1.groups and loaded.select(["quarantined"]) == [node1]
    keep = Selector.parse("quarantined!=true")
    assert [h.name for h in loaded.hosts if keep.matches(h.labels)] == ["node-2"]
    assert (inventory / "fleet.yaml").read_text() == original
    quarantine.write_quarantine_state(str(inventory), [])
    assert not quarantine.state_file(str(inventory)).exists()
    assert load_inventory(inventory).get("node-1").labels == {"env": "lab"}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("", "name the hosts"),
        ("orch-1", "is the control plane"),
        ("node-1,nosuch", "unknown host or group 'nosuch'"),
    ],
)
def test_quarantine_bad_targets_are_refused_before_any_contact(
    tmp_path: Path, hosts: str, message: str
) -> None:
    rt = make_runtime(tmp_path)
    status = run_command(lambda r: quarantine.run(r, hosts=hosts, release=False), rt)
    assert status == ExitStatus.BAD_INPUT
    assert message in err(rt)


def test_quarantine_without_admin_networks_is_refused(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    settings = tmp_path / "fleetkit.yaml"
    settings.write_text(settings.read_text().replace('admin_networks: ["10.0.0.0/24"]', ""))
    status = run_command(lambda r: quarantine.run(r, hosts="node-1", release=False), rt)
    assert status == ExitStatus.BAD_INPUT
    assert f"{settings}: admin_networks: admin_networks is empty" in err(rt)


# --------------------------------------------------------------------------- rollback protocol


@dataclass
class NetnsHost:
    """A shell in a throwaway network namespace, shaped like fleetkit's Remote."""

    netns: str
    log: list[str] = field(default_factory=list)
    closed: int = 0

    def sh(
        self, command: str, stdin: str | bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, "sh", "-c", command],
            input=data,
            capture_output=True,
            timeout=30,
        )

    def run(
        self,
        command: str,
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        root: bool = True,
    ) -> CommandResult:
        self.log.append(command)
        done = self.sh(command, stdin)
        return CommandResult("node-9", command, done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        self.closed += 1

    def ruleset(self) -> str:
        return self.sh("nft list ruleset").stdout.decode()


@pytest.fixture
def netns_host(tmp_path: Path) -> Iterator[NetnsHost]:
    name = f"fkq-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    host = NetnsHost(name)
    host.sh("nft add table inet keepme; nft add chain inet keepme c")  # a pre-existing ruleset
    try:
        yield host
    finally:
        pid_file = tmp_path / "state" / "rollback.pid"
        if pid_file.exists():
            subprocess.run(["kill", "-TERM", "--", f"-{pid_file.read_text().strip()}"])
        subprocess.run(["ip", "netns", "del", name], check=False)


def isolator(host: NetnsHost, tmp_path: Path, *, reconnect: bool, seconds: float = 2):  # type: ignore[no-untyped-def]
    connections = {"n": 0}

    def connect(_: Host) -> NetnsHost:
        connections["n"] += 1
        if connections["n"] > 1 and not reconnect:
            raise SSHError("node-9", "cannot connect to 10.9.9.9:22: timed out")
        return host

    return quarantine.Isolator(
        connect=connect,  # type: ignore[arg-type]
        rollback_seconds=seconds,
        paths=quarantine.HostPaths(str(tmp_path / "state")),
        sleep=lambda s: time.sleep(min(s, 0.2)),
    )


@needs_nft
def test_quarantine_is_confirmed_over_a_new_connection_and_the_timer_cancelled(
    netns_host: NetnsHost, tmp_path: Path
) -> None:
    before = netns_host.ruleset()
    work = isolator(netns_host, tmp_path, reconnect=True)
    outcome = work.quarantine(HOST, quarantine.render_ruleset(ISOLATION, "node-9"))
    assert outcome.ok
    # save happened before apply, the timer started before apply, cancel came last
    steps = [c for c in netns_host.log]
    assert "nft list ruleset" in steps[0]
    assert "setsid" in steps[2] and 'nft -f "$D/quarantine.nft"' in steps[3]
    assert 'kill -TERM -- "-$P"' in steps[4]
    time.sleep(2.5)  # past the window: the cancelled timer must not have restored anything
    assert "table inet fleetkit_quarantine" in netns_host.ruleset()
    assert "table inet keepme" in netns_host.ruleset()
    # quarantining again keeps the first saved state: release still restores the original
    assert work.quarantine(HOST, quarantine.render_ruleset(ISOLATION, "node-9")).ok
    released = work.release(HOST)
    assert released.ok and released.warnings == []
    assert netns_host.ruleset() == before


@needs_nft
def test_without_a_new_connection_the_host_rolls_back_by_itself(
    netns_host: NetnsHost, tmp_path: Path
) -> None:
    before = netns_host.ruleset()
    work = isolator(netns_host, tmp_path, reconnect=False, seconds=2)
    with pytest.raises(HostError, match="restores its previous ruleset by itself"):
        work.quarantine(HOST, quarantine.render_ruleset(ISOLATION, "node-9"))
    deadline = time.monotonic() + 10
    while "fleetkit_quarantine" in netns_host.ruleset() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert netns_host.ruleset() == before
    assert (tmp_path / "state" / "rolled-back").exists()


@needs_nft
def test_an_invalid_ruleset_is_never_applied(netns_host: NetnsHost, tmp_path: Path) -> None:
    before = netns_host.ruleset()
    work = isolator(netns_host, tmp_path, reconnect=True)
    with pytest.raises(SSHError, match="nft -c"):
        work.quarantine(HOST, "table inet fleetkit_quarantine { chain input { nonsense } }\n")
    assert netns_host.ruleset() == before
    assert not any("setsid" in c for c in netns_host.log)


# =========================================================================== the incident (lab)

REPO = Path(__file__).resolve().parents[2]
SSH_PACK = str(REPO / "fleetkit" / "packs" / "ssh-keys.yaml")
WEB_ROOT = "/var/www/htdocs/wp-content/themes/goldenrod"
TROJAN_PATH = f"{WEB_ROOT}/functions.php"
TROJAN = b"<?php /* goldenrod worm */ eval($_POST['x']); ?>\n"
TROJAN_SHA = hashlib.sha256(TROJAN).hexdigest()
WEB_PORT = 8080
RULE = "ssh_private_keys_encrypted_ec"


@pytest.fixture(scope="module")
def fleet(netns_lab: Lab) -> Lab:
    """The netns lab (hosts in their own network namespaces), provisioned."""
    result = run_cli(netns_lab, "provision")
    assert result.exit_code == 0, result.output
    wait_connected(netns_lab, [h.name for h in netns_lab.compute_hosts])
    return netns_lab


def jobs_submitted(lab: Lab) -> int:
    response = requests.get(
        f"{lab.orchestrator_url}/api/v1/orchestrator/jobs", params={"namespace": "*"}, timeout=10
    )
    response.raise_for_status()
    return len(response.json().get("Items") or [])


def reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def wait_labels(lab: Lab, expected: dict[str, str | None], timeout: float = 30) -> None:
    """Until each node's ``quarantined`` label at the orchestrator is as expected."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(lab)}
        seen = {
            name: (nodes.get(name, {}).get("Info", {}).get("Labels") or {}).get("quarantined")
            for name in expected
        }
        if seen == expected and all(
            connection_of(nodes.get(n, {})) == "CONNECTED" for n in expected
        ):
            return
        assert time.monotonic() < deadline, f"labels at the orchestrator: {seen}"
        time.sleep(0.3)


def node_ids(result: CliResult) -> set[str]:
    return {row["nodeID"] for row in json.loads(result.stdout)}


@pytest.mark.lab
def test_the_incident_policy_hunt_quarantine_release(fleet: Lab) -> None:
    n1, n2, n3 = (fleet.host(f"node-{i}") for i in (1, 2, 3))
    planted_keys = [(n1, "/root/.ssh/id_rsa_weak"), (n2, "/root/.ssh/id_ed25519_new")]
    servers: list[tuple[LabHost, str]] = []
    quarantined = False
    try:
        # 1. policy: a weak PEM RSA key (unencrypted) on node-1, an encrypted OpenSSH-format
        #    ed25519 key on node-2 (osquery cannot tell its algorithm), nothing on node-3.
        weak, openssh = planted_keys[0][1], planted_keys[1][1]
        n1.sh(f"ssh-keygen -q -t rsa -b 1024 -m PEM -N '' -f {weak}")
        n2.sh(f"ssh-keygen -q -t ed25519 -N 'correct horse' -f {openssh}")
        result = run_cli(fleet, "policy", "--pack", SSH_PACK, "--format", "json")
        assert result.exit_code == 3, result.output
        verdicts = {r["nodeID"]: r for r in json.loads(result.stdout) if r["policy"] == RULE}
        assert {n: v["status"] for n, v in verdicts.items()} == {
            "node-1": "FAIL",
            "node-2": "UNKNOWN",
            "node-3": "PASS",
        }
        assert [d["path"] for d in verdicts["node-1"]["details"]] == [weak]
        assert verdicts["node-1"]["hostname"] == n1.hostname

        # 2. hunt: the trojan on node-1 and node-3; node-2 has the legit file at the same path.
        for host, content in ((n1, TROJAN), (n2, b"<?php /* legit */ ?>\n"), (n3, TROJAN)):
            host.sh(f"mkdir -p {WEB_ROOT}")
            host.write_file(TROJAN_PATH, content)
        expected = [
            {"hostname": h.hostname, "nodeID": h.name, "path": TROJAN_PATH, "sha256": TROJAN_SHA}
            for h in (n1, n3)
        ]
        for where in (TROJAN_PATH, "/var/www/*/wp-content/themes/*/functions.php"):
            result = run_cli(
                fleet, "hunt", "--path", where, "--sha256", TROJAN_SHA.upper(), "--format", "json"
            )
            assert result.exit_code == 3, result.output
            assert sorted(json.loads(result.stdout), key=lambda r: r["nodeID"]) == expected
            assert "FOUND on 2 host(s): node-1, node-3" in result.stderr  # as quarantine takes

        # ... by hash alone (default scope includes /var/www/**) and from an IOC file
        result = run_cli(fleet, "hunt", "--sha256", TROJAN_SHA, "--format", "json")
        assert result.exit_code == 3, result.output
        assert sorted(json.loads(result.stdout), key=lambda r: r["nodeID"]) == expected
        iocs = fleet.workdir / "iocs.csv"
        iocs.write_text(f"path,sha256\n{TROJAN_PATH},{TROJAN_SHA}\n/srv/nothing.php,{'0' * 64}\n")
        result = run_cli(fleet, "hunt", "--ioc-file", str(iocs), "--format", "csv")
        assert result.exit_code == 3, result.output
        assert sorted(result.stdout.splitlines()[1:]) == [
            f"node-1,node-1,{TROJAN_PATH},{TROJAN_SHA}",
            f"node-3,node-3,{TROJAN_PATH},{TROJAN_SHA}",
        ]

        # 3. quarantine the two infected hosts: their web service goes dark, SSH and fleet
        #    queries still work, and they carry the label at Bacalhau and in the inventory.
        for host in (n1, n2, n3):
            pid = host.sh(
                f"cd /tmp && nohup python3 -m http.server {WEB_PORT} >/dev/null 2>&1 & echo $!"
            ).stdout.strip()
            servers.append((host, pid))
        assert all(_wait_reachable(h.address) for h in (n1, n2, n3))
        before = [h.sh("nft list ruleset").stdout for h in (n1, n3)]
        result = run_cli(fleet, "quarantine", "--hosts", "node-1,node-3")
        quarantined = True
        assert result.exit_code == 0, result.output
        assert not reachable(n1.address, WEB_PORT)
        assert not reachable(n3.address, WEB_PORT)
        assert reachable(n2.address, WEB_PORT)
        wait_labels(fleet, {"node-1": "true", "node-2": None, "node-3": "true"})
        assert (fleet.workdir / "inventory/hosts.d/_quarantine.yaml").exists()
        over_ssh = run_cli(
            fleet,
            "query",
            "SELECT hostname FROM system_info",
            "--via",
            "ssh",
            "--hosts",
            "node-1,node-3",
        )
        assert over_ssh.exit_code == 0, over_ssh.output
        assert node_ids(over_ssh) == {"node-1", "node-3"}
        isolated = run_cli(fleet, "query", "SELECT 1 AS one", "--select", "quarantined=true")
        assert isolated.exit_code == 0, isolated.output
        assert node_ids(isolated) == {"node-1", "node-3"}
        healthy = run_cli(fleet, "query", "SELECT 1 AS one", "--select", "quarantined!=true")
        assert node_ids(healthy) == {"node-2"}

        # 4. release: previous ruleset exactly, reachable again, labels gone.
        result = run_cli(fleet, "quarantine", "--hosts", "node-1,node-3", "--release")
        assert result.exit_code == 0, result.output
        quarantined = False
        assert "warning" not in result.stderr
        assert [h.sh("nft list ruleset").stdout for h in (n1, n3)] == before
        assert reachable(n1.address, WEB_PORT) and reachable(n3.address, WEB_PORT)
        assert not (fleet.workdir / "inventory/hosts.d/_quarantine.yaml").exists()
        wait_labels(fleet, {"node-1": None, "node-2": None, "node-3": None})
    finally:
        if quarantined:
            run_cli(fleet, "quarantine", "--hosts", "node-1,node-3", "--release")
        for host, pid in servers:
            host.sh(f"kill {pid}", check=False)
        for host, key in planted_keys:
            host.sh(f"rm -f {key} {key}.pub", check=False)
        for host in (n1, n2, n3):
            host.sh("rm -rf /var/www/htdocs", check=False)


def _wait_reachable(address: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not reachable(address, WEB_PORT):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.lab
def test_a_denied_table_is_refused_here_and_disabled_on_the_nodes(fleet: Lab) -> None:
    jobs = jobs_submitted(fleet)
    for via in ("bacalhau", "ssh"):
        result = run_cli(
            fleet, "query", "SELECT * FROM \"CURL\" WHERE url = 'http://x'", "--via", via
        )
        assert result.exit_code == 2, result.output
        assert "query reads denied table 'curl'" in result.stderr
        assert "nothing was submitted" in result.stderr
    assert jobs_submitted(fleet) == jobs
    # a client that bypasses fleetkit meets the provisioned --disable_tables on the node
    node = fleet.host("node-1")
    direct = node.sh(
        "osqueryi --connect /var/osquery/osquery.em --json 'SELECT * FROM curl'", check=False
    )
    assert direct.returncode != 0
    assert "no such table: curl" in direct.stderr
    allowed = node.sh("osqueryi --connect /var/osquery/osquery.em --json 'SELECT 1 AS one'")
    assert '"one":"1"' in allowed.stdout.replace(" ", "")


@pytest.mark.lab
def test_hostile_hunt_inputs(fleet: Lab, tmp_path: Path) -> None:
    odd_dir = '/srv/it\'s "odd" $(touch /tmp/canary) `id` 100%_'
    node = fleet.host("node-2")
    node.sh(f"mkdir -p {shlex.quote(odd_dir)}")
    node.write_file(f"{odd_dir}/evil.php", TROJAN)
    jobs = jobs_submitted(fleet)
    try:
        # quotes and shell syntax in a path are data: found exactly, nothing executed
        for via in ("bacalhau", "ssh"):
            result = run_cli(
                fleet,
                "hunt",
                "--path",
                f"{odd_dir}/evil.php",
                "--sha256",
                TROJAN_SHA,
                "--format",
                "json",
                "--via",
                via,
            )
            assert result.exit_code == 3, result.output
            assert [(r["nodeID"], r["path"]) for r in json.loads(result.stdout)] == [
                ("node-2", f"{odd_dir}/evil.php")
            ]
        assert not any(h.exists("/tmp/canary") for h in fleet.compute_hosts)
        jobs = jobs_submitted(fleet)
        # bad input: clear errors, exit 2, nothing submitted
        (tmp_path / "huge.csv").write_text(
            "path,sha256\n" + "".join(f"/srv/{i},{i:064x}\n" for i in range(6000))
        )
        for argv, message in (
            (("--sha256", "not-a-hash"), "64 hexadecimal"),
            (("--path", "relative/x", "--sha256", TROJAN_SHA), "absolute"),
            (("--path", "/var/www/*/x?.php"), "only * and **"),
            (("--ioc-file", str(tmp_path / "huge.csv")), "more than 5000 indicators"),
        ):
            result = run_cli(fleet, "hunt", *argv)
            assert result.exit_code == 2, result.output
            assert message in result.stderr
            assert "Traceback" not in result.output
        assert jobs_submitted(fleet) == jobs
    finally:
        node.sh(f"rm -rf {shlex.quote(odd_dir)}", check=False)


@pytest.mark.lab
def test_redacted_columns_are_wired_into_query_and_policy_output(fleet: Lab) -> None:
    fleet.write_settings(query={"redact_columns": ["uuid", "path"]})
    key = "/root/.ssh/id_rsa_redact"
    node = fleet.host("node-3")
    try:
        result = run_cli(
            fleet, "query", "SELECT uuid, hostname FROM system_info", "--hosts", "node-3"
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[0]["uuid"] == "<redacted>"
        node.sh(f"ssh-keygen -q -t rsa -b 1024 -m PEM -N '' -f {key}")
        result = run_cli(
            fleet, "policy", "--pack", SSH_PACK, "--hosts", "node-3", "--format", "json"
        )
        assert result.exit_code == 3, result.output
        assert key not in result.output
        details = [d for r in json.loads(result.stdout) for d in r["details"]]
        assert details and all(d["path"] == "<redacted>" for d in details)
    finally:
        fleet.write_settings(query={"redact_columns": None})
        node.sh(f"rm -f {key} {key}.pub", check=False)


@pytest.mark.lab
def test_a_quarantine_that_would_lock_us_out_rolls_back_by_itself(fleet: Lab) -> None:
    """A wrong admin network cuts SSH: no new connection, so the host restores its ruleset."""
    node, down = fleet.host("node-2"), fleet.host("node-3")
    before = node.sh("nft list ruleset").stdout
    admin = list(fleet.settings["admin_networks"]) if fleet.settings else []
    fleet.write_settings(admin_networks=["192.0.2.0/24"])  # not where the tests connect from
    down.stop_sshd()
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, environ=fleet.environ(), cwd=str(fleet.workdir))
    try:
        status = run_command(
            lambda rt: quarantine.run(rt, hosts="node-2,node-3", release=False, rollback_seconds=5),
            Runtime(env=env),
        )
        assert status == ExitStatus.FAILURE
        assert "node-2: FAILED" in err.getvalue()
        assert "restores its previous ruleset by itself" in err.getvalue()
        assert "node-3: FAILED" in err.getvalue() and "cannot connect" in err.getvalue()
        deadline = time.monotonic() + 20
        while node.sh("nft list ruleset").stdout != before:
            assert time.monotonic() < deadline, "the host did not roll back"
            time.sleep(0.3)
        assert reachable(node.address, 22)
        assert not quarantine.state_file(str(fleet.workdir / "inventory")).exists()
    finally:
        fleet.write_settings(admin_networks=admin)
        down.start_sshd()
        if node.sh("nft list table inet fleetkit_quarantine", check=False).returncode == 0:
            node.sh("nft delete table inet fleetkit_quarantine")
