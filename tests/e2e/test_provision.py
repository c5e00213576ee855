"""``fleetkit provision`` end to end on the lab (real sshd hosts, stand-in packages).

Tests on the shared ``provisioned_lab`` restore what they change (inventory,
known_hosts, a hand-edited file, a stopped sshd) and re-provision when a
host's state moved; tests that must see a host before anything is installed
use their own small lab from ``lab_factory``.
"""

from __future__ import annotations

import functools
import http.server
import io
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from fleetkit.commands.provision import ProvisionReport, apply
from fleetkit.commands.verify import verify
from fleetkit.foundation.environment import Environment
from fleetkit.runtime import Runtime
from lab.fleet import Lab
from lab.hosts import HostKey
from tests.e2e.conftest import (
    CliResult,
    orchestrator_nodes,
    reprovision,
    run_cli,
    wait_connected,
)

pytestmark = pytest.mark.lab

COMPUTE_FILES = {
    "/etc/osquery/osquery.flags": 0o644,
    "/etc/bacalhau/config.yaml": 0o600,
    "/usr/local/bin/bacalhau": 0o755,
}


def token_of(lab: Lab) -> str:
    return (lab.workdir / "secrets" / "node_token").read_text().strip()


def recap_counts(result: CliResult) -> dict[str, tuple[int, int, int]]:
    """host -> (ok, changed, failed) from the PROVISION RECAP table on stderr."""
    recap = result.stderr.split("PROVISION RECAP", 1)[-1]
    found = re.findall(r"^(\S+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)$", recap, re.M)
    return {name: (int(ok), int(ch), int(fa)) for name, ok, ch, fa in found}


def provision_report(lab: Lab, *, check: bool = False) -> ProvisionReport:
    """Provision the whole lab in-process and return the report (round trips per host)."""
    env = Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), environ=lab.environ(), cwd=str(lab.workdir)
    )
    rt = Runtime(env=env)
    rt.load()
    return apply(rt, list(rt.inventory.hosts), check=check)


def mode_of(lab: Lab, host: str, path: str) -> int:
    return int(lab.host(host).sh(f"stat -c %a {path}").stdout.strip(), 8)


def changed_at(lab: Lab, host: str, path: str) -> str:
    """The file's modification time on the host, ISO with nanoseconds (sorts as text)."""
    return lab.host(host).sh(f"date -u -r {path} +%Y-%m-%dT%H:%M:%S.%N").stdout.strip()


def assert_clean(result: CliResult, lab: Lab) -> None:
    assert token_of(lab) not in result.output
    assert "Traceback" not in result.output


def test_compute_hosts_have_their_files_and_running_daemons(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    token = token_of(lab)
    for host in lab.compute_hosts:
        for path, mode in COMPUTE_FILES.items():
            assert mode_of(lab, host.name, path) == mode, f"{host.name}:{path}"
        flags = host.read_file("/etc/osquery/osquery.flags").splitlines()
        assert "--extensions_socket=/var/osquery/osquery.em" in flags
        assert any(line.startswith("--disable_tables=curl,") for line in flags)
        config = yaml.safe_load(host.read_file("/etc/bacalhau/config.yaml"))
        compute = config["Compute"]
        assert compute["AllowListedLocalPaths"] == ["/var/osquery"]
        assert compute["Auth"]["Token"] == token
        assert compute["Orchestrators"] == [f"nats://{lab.control_plane.address}:{lab.nats_port}"]
        # The inventory's labels and fleetkit's identity labels: the inventory name, and the
        # machine's own hostname (node-2's machine is ip-10-..., read from the host).
        assert config["Labels"] == {
            "env": "lab",
            "role": "osquery",
            "fleetkit-host": host.name,
            "fleetkit-hostname": host.hostname,
        }
        version = host.sh("dpkg-query -W -f='${Version}' osquery").stdout
        assert version == "5.23.1-1.linux"
        assert host.sh("test -S /var/osquery/osquery.em", check=False).returncode == 0
        assert host.pids_of("osqueryd"), f"osqueryd not running on {host.name}"
        assert host.pids_of("bacalhau"), f"bacalhau not running on {host.name}"
        assert not host.exists("/etc/bacalhau/env")  # no S3 publisher in this lab


def test_control_plane_runs_the_orchestrator(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    cp = lab.control_plane
    assert mode_of(lab, cp.name, "/etc/bacalhau/config.yaml") == 0o600
    config = yaml.safe_load(cp.read_file("/etc/bacalhau/config.yaml"))
    assert config["Orchestrator"]["Enabled"] is True
    assert config["Orchestrator"]["Port"] == lab.nats_port
    assert config["Orchestrator"]["Auth"]["Token"] == token_of(lab)
    assert config["Orchestrator"]["NodeManager"]["DisconnectTimeout"] == "3s"
    assert config["API"]["Port"] == lab.api_port
    assert cp.pids_of("bacalhau")
    assert not cp.exists("/usr/bin/osqueryi"), "the control plane got osquery"


def test_compute_nodes_are_connected_with_their_inventory_labels(provisioned_lab: Lab) -> None:
    nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(provisioned_lab)}
    for host in provisioned_lab.compute_hosts:
        node = nodes[host.name]
        assert node["ConnectionState"]["Status"] == "CONNECTED"
        assert node["Membership"] == "APPROVED"
        labels = node["Info"]["Labels"]
        assert labels["role"] == "osquery" and labels["env"] == "lab"


def test_second_run_changes_nothing(provisioned_lab: Lab) -> None:
    result = run_cli(provisioned_lab, "provision")
    assert result.exit_code == 0, result.output
    counts = recap_counts(result)
    assert set(counts) == {h.name for h in provisioned_lab.hosts}
    assert all(changed == 0 and failed == 0 for _, changed, failed in counts.values()), counts
    assert "no changes" in result.stderr
    assert_clean(result, provisioned_lab)


def test_round_trips_first_run_rerun_check_and_verify(lab_factory: object) -> None:
    """Issue 13's targets per host: first run <= 6 SSH commands, rerun <= 2, verify 1;
    check mode reads (one probe) and touches nothing."""
    lab: Lab = lab_factory(compute=1)  # type: ignore[operator]
    first = provision_report(lab)
    assert first.exit_status == 0, [h.reason() for h in first.hosts]
    assert all(1 <= n <= 6 for n in first.round_trips.values()), first.round_trips
    # Compute hosts read their facts while the control plane runs, but change nothing
    # until it is up: the compute host's files are younger than the orchestrator's start.
    started = changed_at(lab, "orch-1", "/run/fleetkit/bacalhau.pid")
    assert started < changed_at(lab, "node-1", "/etc/osquery/osquery.flags")
    wait_connected(lab, ["node-1"])
    again = provision_report(lab)
    assert again.exit_status == 0 and again.changed == 0
    assert all(n <= 2 for n in again.round_trips.values()), again.round_trips
    node = lab.host("node-1")
    flags = node.read_file("/etc/osquery/osquery.flags")
    node.write_file("/etc/osquery/osquery.flags", flags + "--verbose\n", mode=0o644)
    check = provision_report(lab, check=True)
    assert check.results["node-1"].changed == 2  # the file, and the restart it would need
    assert check.round_trips == {"orch-1": 1, "node-1": 1}
    assert node.read_file("/etc/osquery/osquery.flags") == flags + "--verbose\n"
    rt = Runtime(
        env=Environment(
            stdout=io.StringIO(), stderr=io.StringIO(), environ=lab.environ(), cwd=str(lab.workdir)
        )
    )
    rt.load()
    readiness = verify(rt, list(rt.inventory.hosts))
    assert readiness.round_trips == {"orch-1": 1, "node-1": 1}


def test_check_shows_the_diff_of_a_drifted_host_and_changes_nothing(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    host = lab.host("node-2")
    good = host.read_file("/etc/bacalhau/config.yaml")
    drifted = good.replace("Interval: 1s", "Interval: 9s")
    assert drifted != good
    host.write_file("/etc/bacalhau/config.yaml", drifted, mode=0o600)
    try:
        result = run_cli(lab, "provision", "--check")
        assert result.exit_code == 0, result.output
        assert "-    Interval: 9s" in result.stdout
        assert "+    Interval: 1s" in result.stdout
        assert "would restart bacalhau" in result.stdout
        assert host.read_file("/etc/bacalhau/config.yaml") == drifted
        counts = recap_counts(result)
        assert counts["node-2"][1] == 2  # the config and the restart it would need
        assert counts["node-1"][1] == 0 and counts["orch-1"][1] == 0
        assert_clean(result, lab)
    finally:
        host.write_file("/etc/bacalhau/config.yaml", good, mode=0o600)


def test_a_label_change_rewrites_one_node_and_restarts_its_agent_once(
    provisioned_lab: Lab,
) -> None:
    lab = provisioned_lab
    before = {h.name: h.pids_of("bacalhau") for h in lab.compute_hosts}
    extra = lab.inventory_dir / "zz-test-label.yaml"
    extra.write_text("compute:\n  hosts:\n    node-1:\n      labels: {tier: web}\n")
    try:
        result = run_cli(lab, "provision")
        assert result.exit_code == 0, result.output
        counts = recap_counts(result)
        assert counts["node-1"][1] == 2, counts  # config rewritten + one restart
        assert all(counts[h][1] == 0 for h in ("orch-1", "node-2", "node-3")), counts
        after = {h.name: h.pids_of("bacalhau") for h in lab.compute_hosts}
        assert after["node-1"] != before["node-1"]
        assert after["node-2"] == before["node-2"] and after["node-3"] == before["node-3"]
        config = yaml.safe_load(lab.host("node-1").read_file("/etc/bacalhau/config.yaml"))
        assert config["Labels"]["tier"] == "web"
        assert labels_become(lab, "node-1", "tier", "web")
    finally:
        extra.unlink(missing_ok=True)
        reprovision(lab)


def labels_become(lab: Lab, node: str, key: str, value: str, timeout: float = 20.0) -> bool:
    """Whether the orchestrator shows the node's new label within ``timeout`` (it re-joins)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(lab)}
        labels = nodes.get(node, {}).get("Info", {}).get("Labels", {})
        if labels.get(key) == value and nodes[node]["ConnectionState"]["Status"] == "CONNECTED":
            return True
        time.sleep(0.25)
    return False


def test_one_host_down_the_others_converge(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    down = lab.host("node-3")
    down.stop_sshd()
    try:
        result = run_cli(lab, "provision")
    finally:
        down.start_sshd()
    assert result.exit_code == 1, result.output
    counts = recap_counts(result)
    assert counts["node-3"] == (0, 0, 1)
    assert counts["node-1"] == (counts["node-1"][0], 0, 0)
    assert counts["orch-1"][2] == 0 and counts["node-2"][2] == 0
    assert re.search(
        r"^failed: node-3: cannot connect to .*connection refused", result.stderr, re.M
    )
    assert_clean(result, lab)


@contextmanager
def known_hosts_edited(lab: Lab, host: str, replacement: str | None) -> Iterator[None]:
    """known_hosts with ``host``'s line removed, or its key replaced; restored afterwards."""
    path = lab.known_hosts_path
    original = path.read_text()
    line = lab.host(host).known_hosts_line
    assert line in original
    new_line = "" if replacement is None else f"{line.split()[0]} {replacement}\n"
    path.write_text(original.replace(line + "\n", new_line))
    try:
        yield
    finally:
        path.write_text(original)


def test_unknown_host_key_is_refused_before_anything_runs(provisioned_lab: Lab) -> None:
    with known_hosts_edited(provisioned_lab, "node-2", None):
        result = run_cli(provisioned_lab, "provision", "--hosts", "node-2")
    assert result.exit_code == 1
    assert recap_counts(result)["node-2"] == (0, 0, 1)
    assert "host key for" in result.stderr and "is not pinned" in result.stderr
    assert_clean(result, provisioned_lab)


def test_changed_host_key_is_refused_with_a_warning(provisioned_lab: Lab) -> None:
    other = HostKey.generate("impostor").public_key
    with known_hosts_edited(provisioned_lab, "node-2", other):
        result = run_cli(provisioned_lab, "provision", "--hosts", "node-2")
    assert result.exit_code == 1
    assert recap_counts(result)["node-2"] == (0, 0, 1)
    assert "HOST KEY CHANGED" in result.stderr and "man-in-the-middle" in result.stderr


def test_wrong_package_hash_is_refused_and_nothing_installed(lab_factory: object) -> None:
    lab: Lab = lab_factory(compute=1)  # type: ignore[operator]
    wrong = "0" * 64
    right = lab.settings["osquery"]["package"]["sha256"]
    lab.write_settings(osquery={"package": {"sha256": wrong}})
    result = run_cli(lab, "provision")
    assert result.exit_code == 1
    assert "packages/osquery_5.23.1-1.linux_amd64.deb: SHA-256 mismatch" in result.stderr
    assert wrong in result.stderr and right in result.stderr
    node = lab.host("node-1")
    assert node.sh("dpkg-query -W osquery", check=False).returncode != 0
    assert not node.exists("/usr/local/bin/bacalhau")
    assert not lab.control_plane.exists("/usr/local/bin/bacalhau")


def test_control_plane_failure_leaves_compute_hosts_untouched(lab_factory: object) -> None:
    lab: Lab = lab_factory(compute=1)  # type: ignore[operator]
    lab.control_plane.stop_sshd()
    result = run_cli(lab, "provision")
    assert result.exit_code == 1
    assert "failed: node-1: not touched: the control plane orch-1 failed" in result.stderr
    assert recap_counts(result)["node-1"] == (0, 0, 1)
    assert lab.host("node-1").sh("dpkg-query -W osquery", check=False).returncode != 0


@contextmanager
def serving(directory: Path) -> Iterator[str]:
    """A loopback HTTP server for the lab's packages (pull mode); yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass

    server = Quiet(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_pull_mode_hosts_download_and_verify(lab_factory: object) -> None:
    lab: Lab = lab_factory(compute=1)  # type: ignore[operator]
    with serving(lab.workdir / "packages") as base:
        packages = {
            name: {
                "source": f"{base}/{Path(lab.settings[name]['package']['source']).name}",
                "sha256": lab.settings[name]["package"]["sha256"],
            }
            for name in ("osquery", "bacalhau")
        }
        lab.write_settings(
            transfer_mode="pull",
            osquery={"package": packages["osquery"]},
            bacalhau={"package": packages["bacalhau"]},
        )
        first = run_cli(lab, "provision")
        assert first.exit_code == 0, first.output
        wait_connected(lab, ["node-1"])
        again = run_cli(lab, "provision")
        assert again.exit_code == 0 and "no changes" in again.stderr, again.output
        node = lab.host("node-1")
        node.sh("rm -f /usr/local/bin/bacalhau /var/lib/fleetkit/bacalhau.source")
        lab.write_settings(bacalhau={"package": {"sha256": "1" * 64}})
        bad = run_cli(lab, "provision", "--hosts", "node-1")
    assert bad.exit_code == 1
    assert "bacalhau_v1.9.3_linux_amd64.tar.gz: SHA-256 mismatch" in bad.stderr
    assert "1" * 64 in bad.stderr and packages["bacalhau"]["sha256"] in bad.stderr
    assert not node.exists("/usr/local/bin/bacalhau")


def test_s3_publisher_credentials_reach_the_agent_and_nowhere_else(lab_factory: object) -> None:
    lab: Lab = lab_factory(compute=1, s3=True)  # type: ignore[operator]
    assert lab.s3 is not None
    result = run_cli(lab, "provision")
    assert result.exit_code == 0, result.output
    node = lab.host("node-1")
    assert mode_of(lab, "node-1", "/etc/bacalhau/env") == 0o600
    env_file = node.read_file("/etc/bacalhau/env")
    assert f"AWS_SECRET_ACCESS_KEY={lab.s3.secret_access_key}" in env_file
    assert f"AWS_ENDPOINT_URL={lab.s3.endpoint}" in env_file
    [pid] = node.pids_of("bacalhau")
    environ = node.read_bytes(f"/proc/{pid}/environ").split(b"\0")
    assert f"AWS_ACCESS_KEY_ID={lab.s3.access_key_id}".encode() in environ
    assert not lab.control_plane.exists("/etc/bacalhau/env")
    assert lab.s3.secret_access_key not in result.output
    check = run_cli(lab, "provision", "--check")
    assert check.exit_code == 0 and "no changes needed" in check.stderr, check.output
    assert lab.s3.secret_access_key not in check.output


#: A stand-in ``systemctl`` for one lab host (the lab has no systemd): it logs every call,
#: keeps enabled units as files, and runs a unit's ExecStart (after its EnvironmentFile=)
#: under start-stop-daemon, so services really run and the plan's calls can be counted.
SYSTEMCTL_SHIM = r"""#!/usr/bin/python3
import os, subprocess, sys
args = [a for a in sys.argv[1:] if a != "--quiet"]
with open("/var/log/systemctl-shim.log", "a") as log:
    log.write(" ".join(args) + "\n")
verb, units = args[0], args[1:]
state = "/var/lib/systemctl-shim"
os.makedirs(state, exist_ok=True)
os.makedirs("/run/systemctl-shim", exist_ok=True)

def unit_file(unit):
    for d in ("/etc/systemd/system", "/usr/lib/systemd/system"):
        if os.path.exists(os.path.join(d, unit)):
            return os.path.join(d, unit)
    sys.exit(f"Unit {unit} not found.")

def pidfile(unit):
    return f"/run/systemctl-shim/{unit}.pid"

def active(unit):
    cmd = ["start-stop-daemon", "--status", "--pidfile", pidfile(unit)]
    return subprocess.run(cmd).returncode == 0

def start(unit):
    text = open(unit_file(unit)).read().replace("\\\n", " ")
    lines = text.splitlines()
    env = [l.split("=", 1)[1].lstrip("-") for l in lines if l.startswith("EnvironmentFile=")]
    [execstart] = [l.split("=", 1)[1] for l in lines if l.startswith("ExecStart=")]
    load = "".join(f"[ -r {e} ] && . {e}; " for e in env)
    script = f"set -a; {load}set +a; exec {execstart} >>/var/log/{unit}.log 2>&1"
    subprocess.run(["start-stop-daemon", "--start", "--background", "--make-pidfile",
                    "--pidfile", pidfile(unit), "--startas", "/bin/sh", "--", "-c", script],
                   check=True)

def stop(unit):
    subprocess.run(["start-stop-daemon", "--stop", "--oknodo", "--retry", "TERM/10/KILL/5",
                    "--remove-pidfile", "--pidfile", pidfile(unit)], check=True)

if verb == "daemon-reload":
    sys.exit(0)
for unit in units:
    if verb == "is-active":
        sys.exit(0 if active(unit) else 3)
    if verb == "is-enabled":
        sys.exit(0 if os.path.exists(f"{state}/{unit}") else 1)
    if verb == "enable":
        unit_file(unit)
        open(f"{state}/{unit}", "w").close()
    elif verb == "start":
        if not active(unit):
            start(unit)
    elif verb == "restart":
        stop(unit)
        start(unit)
"""


def shim_calls(lab: Lab, host: str) -> list[str]:
    text = lab.host(host).read_file("/var/log/systemctl-shim.log")
    return [line for line in text.splitlines() if not line.startswith("is-")]


def test_systemd_hosts_get_a_unit_reloaded_enabled_and_restarted_once(
    lab_factory: object,
) -> None:
    lab: Lab = lab_factory(compute=1)  # type: ignore[operator]
    for host in lab.hosts:
        host.write_file("/usr/local/sbin/systemctl", SYSTEMCTL_SHIM, mode=0o755)
        host.sh("mkdir -p /run/systemd/system && : > /var/log/systemctl-shim.log")
    first = run_cli(lab, "provision")
    assert first.exit_code == 0, first.output
    wait_connected(lab, ["node-1"])
    node = lab.host("node-1")
    unit = node.read_file("/etc/systemd/system/bacalhau.service")
    assert (
        "ExecStart=/usr/local/bin/bacalhau serve --config /etc/bacalhau/config.yaml --name node-1\n"
        in unit
    )
    assert "EnvironmentFile=-/etc/bacalhau/env\n" in unit
    assert shim_calls(lab, "node-1") == [
        "daemon-reload",  # the osquery package's postinst, as with the official one
        "enable osqueryd.service",
        "start osqueryd.service",
        "daemon-reload",
        "enable bacalhau.service",
        "start bacalhau.service",
    ]
    assert not node.exists("/run/fleetkit/bacalhau.pid")  # systemd, not the fallback
    assert node.pids_of("osqueryd") and node.pids_of("bacalhau")

    node.sh(": > /var/log/systemctl-shim.log")
    again = run_cli(lab, "provision")
    assert again.exit_code == 0 and "no changes" in again.stderr, again.output
    assert shim_calls(lab, "node-1") == []

    node.sh("sed -i 's/^RestartSec=5s/RestartSec=1s/' /etc/systemd/system/bacalhau.service")
    fixed = run_cli(lab, "provision", "--hosts", "node-1")
    assert fixed.exit_code == 0, fixed.output
    assert shim_calls(lab, "node-1") == [
        "daemon-reload",
        "enable bacalhau.service",
        "restart bacalhau.service",
    ]
