"""The lab itself: isolated hosts, reachable over SSH with pinned keys, leaving nothing behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab.fleet import Lab
from lab.hosts import LabError, LabHost

pytestmark = pytest.mark.lab


def ssh(
    lab: Lab, host: LabHost, command: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Plain OpenSSH with the lab's key and strict pinned host keys (independent of fleetkit)."""
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(lab.identity_file),
            "-o",
            f"UserKnownHostsFile={lab.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-p",
            str(host.client_port),
            f"root@{host.address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def accepts(host: LabHost) -> bool:
    try:
        with socket.create_connection((host.address, host.ssh_port), timeout=1):
            return True
    except OSError:
        return False


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def test_each_host_answers_ssh_with_its_own_hostname(lab: Lab) -> None:
    for host in lab.hosts:
        result = ssh(lab, host, "hostname; cat /etc/hostname")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [host.hostname, host.hostname]


def test_generated_setup_is_complete_and_loads_in_fleetkit(lab: Lab) -> None:
    from fleetkit.foundation.inventory import load_inventory
    from fleetkit.foundation.settings import load_settings

    settings = load_settings(lab.environ(), os.getcwd())
    assert settings.path == str(lab.settings_path)
    inventory = load_inventory(settings.inventory_dir)
    assert inventory.control_plane is not None
    assert inventory.control_plane.name == "orch-1"
    assert [h.name for h in inventory.compute] == ["node-1", "node-2", "node-3"]
    assert all(h.labels == {"role": "osquery", "env": "lab"} for h in inventory.compute)
    # one network namespace: every agent needs its own API port
    api_ports = {h.bacalhau_api_port for h in inventory.compute}
    assert None not in api_ports
    assert len(api_ports) == 3
    assert settings.bacalhau.orchestrator_url == lab.orchestrator_url
    assert (lab.workdir / "secrets/node_token").stat().st_mode & 0o777 == 0o600
    assert lab.identity_file.stat().st_mode & 0o777 == 0o600
    deb = Path(settings.osquery.package.source)
    assert deb.name == "osquery_5.23.1-1.linux_amd64.deb"
    import hashlib

    assert hashlib.sha256(deb.read_bytes()).hexdigest() == settings.osquery.package.sha256


def test_unpinned_host_key_is_refused(lab: Lab) -> None:
    host = lab.compute_hosts[0]
    other = lab.compute_hosts[1]
    lines = lab.known_hosts_path.read_text().splitlines()
    # the key of another host pinned under this host's name = a changed key
    forged = lab.known_hosts_path.with_name("forged_known_hosts")
    forged.write_text(
        "\n".join(line for line in lines if not line.startswith(f"[{host.address}]"))
        + f"\n[{host.address}]:{host.ssh_port} {other.host_key}\n"
    )
    result = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(lab.identity_file),
            "-o",
            f"UserKnownHostsFile={forged}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-p",
            str(host.ssh_port),
            f"root@{host.address}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_etc_write_on_one_host_is_invisible_elsewhere(lab: Lab) -> None:
    marker = f"/etc/fleetkit-lab-test-{secrets.token_hex(4)}"
    first, second = lab.compute_hosts[0], lab.compute_hosts[1]
    first.write_file(marker, "only here\n", 0o640)
    try:
        assert ssh(lab, first, f"cat {marker}").stdout == "only here\n"
        assert first.sh(f"stat -c %a {marker}").stdout.strip() == "640"
        assert not second.exists(marker)
        assert ssh(lab, second, f"test -e {marker}").returncode == 1
        assert not Path(marker).exists()
    finally:
        first.sh(f"rm -f {marker}")


def test_processes_and_run_are_private(lab: Lab) -> None:
    first, second = lab.compute_hosts[0], lab.compute_hosts[1]
    first.sh("sleep 300 >/dev/null 2>&1 & echo $! > /run/lab-sleeper.pid")
    try:
        assert first.pids_of("sleep")
        assert second.pids_of("sleep") == []
        assert not second.exists("/run/lab-sleeper.pid")
        # pid 1 of a host is its init, not sshd (so sshd can stop while the host runs)
        assert first.sh("cat /proc/1/comm").stdout.strip() != "sshd"
    finally:
        first.sh("kill $(cat /run/lab-sleeper.pid); rm -f /run/lab-sleeper.pid")


def test_standin_deb_installs_on_one_host_and_its_daemon_answers(lab_factory) -> None:
    small = lab_factory(compute=2)
    deb = small.workdir / "packages/osquery_5.23.1-1.linux_amd64.deb"
    first, second = small.compute_hosts
    first.write_file("/root/osquery.deb", deb.read_bytes(), 0o644)
    first.sh("dpkg -i /root/osquery.deb")
    assert first.sh("dpkg-query -W -f='${Version}' osquery").stdout == "5.23.1-1.linux"
    assert first.sh("readlink /usr/bin/osqueryi").stdout.strip() == "/opt/osquery/bin/osqueryd"
    assert first.sh("osqueryi --version").stdout.strip() == "osqueryi version 5.23.1"
    assert "ExecStart=/opt/osquery/bin/osqueryd" in first.read_file(
        "/usr/lib/systemd/system/osqueryd.service"
    )
    assert 'FLAG_FILE="/etc/osquery/osquery.flags"' in first.read_file("/etc/default/osqueryd")
    assert not first.pids_of("osqueryd")  # the package never starts the daemon
    # only that host has it: not the other host, not the machine running the tests
    assert second.run(["dpkg-query", "-W", "osquery"]).returncode != 0
    assert not second.exists("/opt/osquery/bin/osqueryd")
    assert not Path("/opt/osquery").exists()
    real = subprocess.run(["dpkg-query", "-W", "osquery"], capture_output=True, check=False)
    assert real.returncode != 0

    # started by hand, as a service manager would, the daemon makes its socket
    first.write_file("/etc/osquery/osquery.flags", "--disable_tables=curl\n", 0o644)
    first.sh(
        "start-stop-daemon --start --background --make-pidfile --pidfile /run/osqueryd.pid"
        " --startas /opt/osquery/bin/osqueryd --"
        " --flagfile /etc/osquery/osquery.flags --config_path /etc/osquery/osquery.conf"
    )
    first.sh("for i in $(seq 200); do [ -S /var/osquery/osquery.em ] && exit 0; sleep 0.05; done")
    assert first.pids_of("osqueryd")
    answer = first.sh(
        "osqueryi --json --connect /var/osquery/osquery.em 'SELECT hostname FROM system_info'"
    ).stdout
    banner = "Connected to extension socket /var/osquery/osquery.em for debugging\n"
    assert answer == banner + f'[\n  {{"hostname":"{first.name}"}}\n]\n'
    refused = first.sh(
        "osqueryi --json --connect /var/osquery/osquery.em 'SELECT * FROM curl'", check=False
    )
    assert (refused.returncode, refused.stderr) == (1, "Error: no such table: curl\n")
    assert not second.exists("/var/osquery/osquery.em")
    first.sh("start-stop-daemon --stop --retry TERM/5 --remove-pidfile --pidfile /run/osqueryd.pid")
    assert not first.exists("/var/osquery/osquery.em")  # removed on SIGTERM


def test_standin_reports_the_keys_of_the_host_it_runs_on(lab_factory) -> None:
    small = lab_factory(compute=1)
    host = small.compute_hosts[0]
    deb = small.workdir / "packages/osquery_5.23.1-1.linux_amd64.deb"
    host.write_file("/root/osquery.deb", deb.read_bytes(), 0o644)
    host.sh("dpkg -i /root/osquery.deb")
    host.sh(
        "useradd -m -s /bin/bash alice && mkdir -p /home/alice/.ssh"
        " && ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f /home/alice/.ssh/id_rsa"
        " && ssh-keygen -q -t ed25519 -N 'pass phrase' -f /home/alice/.ssh/id_ed25519"
    )
    out = host.sh(
        'osqueryi --json "SELECT u.username, k.path, k.key_type, k.encrypted'
        ' FROM users u CROSS JOIN user_ssh_keys k USING (uid)"'
    ).stdout
    assert json.loads(out) == [
        {
            "encrypted": "1",
            "key_type": "",
            "path": "/home/alice/.ssh/id_ed25519",
            "username": "alice",
        },
        {
            "encrypted": "0",
            "key_type": "rsa",
            "path": "/home/alice/.ssh/id_rsa",
            "username": "alice",
        },
    ]
    assert not Path("/home/alice").exists()  # the user exists on that lab host only


def test_stop_sshd_keeps_the_host_running_and_start_brings_it_back(lab_factory) -> None:
    small = lab_factory(compute=1)
    host = small.compute_hosts[0]
    host.sh("sleep 300 >/dev/null 2>&1 &")
    host.stop_sshd()
    assert not accepts(host)
    assert ssh(small, host, "true").returncode == 255
    assert host.pids_of("sleep"), "daemons must survive sshd going away"
    host.start_sshd()
    result = ssh(small, host, "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == host.name


def test_kill_then_start_is_a_reboot_that_keeps_the_disk(lab_factory) -> None:
    small = lab_factory(compute=1)
    host = small.compute_hosts[0]
    host.write_file("/etc/kept-across-reboot", "disk\n")
    host.write_file("/run/gone-after-reboot", "tmpfs\n")
    host.sh("sleep 300 >/dev/null 2>&1 &")
    host.kill()
    assert not host.is_running()
    assert not accepts(host)
    host.start()
    assert ssh(small, host, "cat /etc/kept-across-reboot").stdout == "disk\n"
    assert not host.exists("/run/gone-after-reboot")
    assert host.pids_of("sleep") == []


def test_add_host_unpinned_and_outside_the_inventory(lab_factory) -> None:
    small = lab_factory(compute=1)
    device = small.add_host("device-1", in_inventory=False, pin_key=False)
    assert device.sh("hostname").stdout.strip() == "device-1"
    assert "device-1" not in (small.inventory_dir / "lab.yaml").read_text()
    assert device.host_key not in small.known_hosts_path.read_text()
    assert ssh(small, device, "true").returncode == 255  # unknown key: refused
    listed = small.add_host("node-9", labels={"role": "osquery", "env": "lab", "zone": "b"})
    assert "node-9" in (small.inventory_dir / "lab.yaml").read_text()
    assert ssh(small, listed, "hostname").stdout.strip() == "node-9"


def test_write_settings_merges_deletes_and_resets(lab_factory) -> None:
    from fleetkit.foundation.settings import load_settings

    small = lab_factory(compute=1)
    small.write_settings(query={"timeout": 7, "redact_columns": ["uuid"]}, ssh={"parallelism": 3})
    settings = load_settings(small.environ(), str(small.workdir))
    assert (settings.query.timeout, settings.query.redact_columns) == (7.0, ("uuid",))
    assert settings.ssh.parallelism == 3
    assert settings.osquery.package.sha256 == small.packages["osquery_5.23.1-1.linux_amd64.deb"]
    small.write_settings(query={"redact_columns": None})
    assert "redact_columns" not in small.settings_path.read_text()
    assert load_settings(small.environ(), "/").query.timeout == 7.0  # earlier change kept
    small.reset_settings()
    assert load_settings(small.environ(), "/").query.timeout == 60.0


def test_machine_hostnames_can_differ_from_inventory_names(lab_factory) -> None:
    from lab.tasks import describe_host

    small = lab_factory(compute=3, cloud_hostnames=True, machine_names={"node-3": "web-3-prod"})
    node1, node2, node3 = small.compute_hosts
    cloud = "ip-10-" + "-".join(node2.address.split(".")[1:])
    assert [h.hostname for h in (node1, node2, node3)] == ["node-1", cloud, "web-3-prod"]
    for host in (node1, node2, node3):
        answer = ssh(small, host, "hostname; uname -n; cat /etc/hostname; getent hosts $(hostname)")
        assert answer.returncode == 0, answer.stderr
        lines = answer.stdout.splitlines()
        assert lines[:3] == [host.hostname] * 3
        assert lines[3].split() == [host.address, host.hostname]
    # the inventory keeps the lab names: fleetkit must map nodes to them itself
    inventory = (small.inventory_dir / "lab.yaml").read_text()
    assert "node-2:" in inventory and cloud not in inventory
    shown = describe_host(small, node2)
    assert f"== hostname: {cloud}" in shown
    assert "== inventory name: node-2" in shown
    device = small.add_host("device-7", machine_name="ip-172-31-5-7", in_inventory=False)
    assert device.sh("hostname").stdout.strip() == "ip-172-31-5-7"
    reloaded = Lab.load(small.workdir)
    assert reloaded.host("node-2").hostname == cloud
    with pytest.raises(LabError, match="not a valid hostname"):
        Lab(small.workdir / "never", machine_names={"node-1": "bad name; rm -rf /"})
    with pytest.raises(LabError, match="shared loopback network"):
        Lab(small.workdir / "never", netns=True, latency=0.04)


def test_latency_mode_proxies_ssh_and_counts_what_it_carries(lab_factory) -> None:
    from lab.counters import snapshot, usage
    from lab.tasks import _print_latency

    slow = lab_factory(compute=1, s3=True, latency=0.05)
    node = slow.compute_hosts[0]
    assert node.client_port != node.ssh_port
    assert f"[{node.address}]:{node.client_port} " in slow.known_hosts_path.read_text()
    assert f"port: {node.client_port}" in (slow.inventory_dir / "lab.yaml").read_text()
    assert slow.settings["bacalhau"]["orchestrator_url"] == slow.orchestrator_url
    assert slow.orchestrator_url != slow.direct_orchestrator_url
    assert slow.settings["query"]["s3"]["endpoint"] == slow.s3_endpoint != slow.s3.endpoint
    assert slow.s3 is not None and slow.s3_endpoint != slow.s3.endpoint
    assert requests_ok(slow.s3_endpoint)

    before = snapshot(slow)
    answer = ssh(slow, node, "hostname")
    assert (answer.returncode, answer.stdout.strip()) == (0, "node-1")
    spent = usage(before, snapshot(slow)).hosts["node-1"]
    assert (spent.logins, spent.exec_channels, spent.tcp_connections) == (1, 1, 1)
    assert spent.round_trips >= 5  # key exchange, auth, channel, command
    assert usage(before, snapshot(slow)).hosts["orch-1"].tcp_connections == 0

    late = slow.add_host("node-2", labels={"role": "osquery"})  # proxied like the others
    assert late.client_port != late.ssh_port
    assert ssh(slow, late, "hostname").stdout.strip() == late.hostname

    slow.freeze("node-1")
    with pytest.raises(subprocess.TimeoutExpired):
        ssh(slow, node, "true", timeout=2)  # no answer, no reset: it hangs
    slow.thaw("node-1")
    assert ssh(slow, node, "true").returncode == 0

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        _print_latency(Lab.load(slow.workdir))
    assert "latency: 50 ms one way" in buffer.getvalue()
    proxy_pid = slow.proxy.pid
    slow.down()
    assert not Path(f"/proc/{proxy_pid}").exists()


def requests_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url + "/", timeout=10) as reply:
        return reply.status == 200


def processes_in_namespace(ns: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns/pid") == ns:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_teardown_leaves_no_process_and_load_reattaches(tmp_path: Path) -> None:
    started = Lab(tmp_path / "lab", compute=2).up()
    try:
        started.host("node-1").sh("sleep 300 >/dev/null 2>&1 &")
        namespaces = [os.readlink(f"/proc/{h.init_pid}/ns/pid") for h in started.hosts]
        assert all(len(processes_in_namespace(ns)) >= 2 for ns in namespaces)  # init + sshd
        assert json.loads((tmp_path / "lab/lab.json").read_text())["state"] == "up"
        Lab.load(tmp_path / "lab").down()  # as `invoke lab.down` does, from another process
        assert processes_mentioning(str(tmp_path)) == []
        assert all(processes_in_namespace(ns) == [] for ns in namespaces)
        assert all(not accepts(h) for h in started.hosts)
        assert json.loads((tmp_path / "lab/lab.json").read_text())["state"] == "down"
    finally:
        started.down()


def test_netns_hosts_have_their_own_network_and_reach_s3(tmp_path: Path) -> None:
    from fleetkit.foundation.settings import load_settings

    started = Lab(tmp_path / "lab", compute=2, netns=True, s3=True).up()
    try:
        first, second = started.compute_hosts
        assert first.address.startswith("10.") and first.ssh_port == 22
        assert ssh(started, first, "hostname").stdout.strip() == "node-1"
        # hosts reach each other over the bridge (bash's /dev/tcp: no extra tools needed)
        probe = f"bash -c 'exec 3<>/dev/tcp/{second.address}/22 && head -c 4 <&3'"
        assert first.sh(probe).stdout == "SSH-"
        addresses = first.sh("ip -4 -o addr show").stdout
        assert f"{first.address}/24" in addresses
        assert "127.0.0.1/8" in addresses
        assert "default" not in first.sh("ip route").stdout  # no way out of the lab
        # the S3 server listens on the lab network, where compute nodes publish
        assert started.s3 is not None
        settings = load_settings(started.environ(), str(tmp_path))
        assert settings.query.publisher == "s3"
        assert settings.query.s3 is not None
        assert settings.query.s3.endpoint == started.s3.endpoint
        assert started.s3.endpoint.startswith(f"http://{started.network.gateway}:")
        fetch = f"import urllib.request as u; print(u.urlopen('{started.s3.endpoint}/').status)"
        assert first.sh(f'python3 -c "{fetch}"').stdout.strip() == "200"
        started.s3.client().put_object(Bucket="fleetkit-results", Key="probe", Body=b"x")
        assert started.s3.keys() == ["probe"]
        names = [*started.network.hosts.values(), started.network.switch]
        existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert all(name in existing.stdout for name in names)
        moto_pid = started.s3.pid
    finally:
        started.down()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert all(name not in left for name in names)
    assert not Path(f"/sys/class/net/{started.network.root_link}").exists()
    assert not Path(f"/proc/{moto_pid}").exists()


def lab_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_lab_cli_up_show_status_down(tmp_path: Path) -> None:
    workdir = tmp_path / "cli-lab"
    try:
        up = lab_cli(
            "up", "--dir", str(workdir), "--compute", "1",
            "--latency", "40ms", "--machine-names", "node-1=ip-10-9-9-9",
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert "latency: 40 ms one way" in up.stdout
        assert f"export FLEETKIT_SETTINGS={workdir}/fleetkit.yaml" in up.stdout
        # the hosts outlived the process that started them
        lab = Lab.load(workdir)
        assert lab.cloud_hostnames  # the default: every second compute machine named ip-10-...
        node = lab.host("node-1")
        token = (workdir / "secrets/node_token").read_text().strip()
        node.write_file(
            "/etc/bacalhau/config.yaml",
            f"Compute:\n  Auth:\n    Token: {token}\nAPI:\n  Port: 1234\n",
            0o600,
        )
        shown = lab_cli("show", "node-1", "--dir", str(workdir))
        assert shown.returncode == 0, shown.stderr
        assert "== hostname: ip-10-9-9-9" in shown.stdout
        assert "== inventory name: node-1" in shown.stdout
        assert "(osquery is not installed)" in shown.stdout
        assert "Token: <redacted>" in shown.stdout
        assert "Port: 1234" in shown.stdout
        assert token not in shown.stdout + shown.stderr
        unknown = lab_cli("show", "node-9", "--dir", str(workdir))
        assert unknown.returncode == 2
        assert "no lab host 'node-9'" in unknown.stderr
        status = lab_cli("status", "--dir", str(workdir))
        assert status.returncode == 0
        assert len([line for line in status.stdout.splitlines() if "ssh ok" in line]) == 2
        assert "hostname ip-10-9-9-9" in status.stdout
        assert "latency: 40 ms one way" in status.stdout
        down = lab_cli("down", "--dir", str(workdir))
        assert down.returncode == 0, down.stderr
        assert not node.is_running()
        assert not Lab.load(workdir).proxy.is_running()
        assert processes_mentioning(str(workdir)) == []  # (a reaped pid or a zombie)
        stopped = lab_cli("status", "--dir", str(workdir)).stdout
        assert stopped.count("stopped") == 2
        assert "proxy" in stopped and "not running" in stopped
    finally:
        if (workdir / "lab.json").exists():
            Lab.load(workdir).down()
