"""The SSH layer against real sshd hosts: ssh_config, sudo, stdin, timeouts.

Uses the session ``lab`` read-only (connections and a throwaway user), so it
needs no provisioning.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from fleetkit.clients.ssh import CommandTimeout, Connector, SSHError
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.runtime import Runtime
from lab.fleet import Lab

pytestmark = pytest.mark.lab


def _runtime(lab: Lab) -> Runtime:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ=lab.environ())
    return Runtime(env=env, settings_path=str(lab.settings_path))


def test_ssh_config_hostname_and_port_are_honoured(lab: Lab, tmp_path: Path) -> None:
    node = lab.host("node-1")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host fk-alias\n    HostName {node.address}\n    Port {node.ssh_port}\n")
    rt = _runtime(lab)
    ssh = dataclasses.replace(rt.settings.ssh, config_file=str(config), load_ssh_config=True)
    connector = Connector(ssh, rt.known_hosts)
    # The inventory names only the alias; ssh_config says where it really is.
    with connector.connect(Host(name="node-1", address="fk-alias")) as remote:
        assert remote.run("hostname").check().out.strip() == "node-1"


def test_stdin_arrives_byte_for_byte_and_is_closed(lab: Lab) -> None:
    rt = _runtime(lab)
    host = rt.inventory.get("node-2")
    assert host is not None
    payload = bytes(range(256)) * 300 + "ünïcødé $(touch /tmp/x) `id`\n".encode()
    with rt.connector.connect(host) as remote:
        result = remote.run("cat", stdin=payload).check()
    assert result.stdout == payload


def test_command_timeout_names_the_host_and_the_limit(lab: Lab) -> None:
    rt = _runtime(lab)
    host = rt.inventory.get("node-3")
    assert host is not None
    with rt.connector.connect(host) as remote, pytest.raises(CommandTimeout) as caught:
        remote.run("sleep 5", timeout=0.5)
    assert "node-3" in str(caught.value) and "0.5s" in str(caught.value)


def test_a_non_root_login_user_runs_commands_through_sudo(lab: Lab) -> None:
    node = lab.host("node-3")
    key = (lab.workdir / "ssh" / "id_ed25519.pub").read_text()
    node.sh(
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/sh deploy; usermod -p '*' deploy; "
        "install -d -m 700 -o deploy -g deploy /home/deploy/.ssh; "
        f"printf '%s\\n' {key.strip()!r} > /home/deploy/.ssh/authorized_keys; "
        "chown deploy:deploy /home/deploy/.ssh/authorized_keys; "
        "chmod 600 /home/deploy/.ssh/authorized_keys; "
        "echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy; "
        "chmod 440 /etc/sudoers.d/deploy"
    )
    rt = _runtime(lab)
    inventory_host = rt.inventory.get("node-3")
    assert inventory_host is not None
    deploy = dataclasses.replace(inventory_host, user="deploy")
    try:
        with rt.connector.connect(deploy) as remote:
            assert remote.run("id -un", root=False).check().out.strip() == "deploy"
            assert remote.run("id -u").check().out.strip() == "0"
        node.sh("rm /etc/sudoers.d/deploy")
        with rt.connector.connect(deploy) as remote, pytest.raises(SSHError) as caught:
            remote.run("id -u").check("become root")
        assert "become root failed" in str(caught.value)
        assert "password is required" in str(caught.value)
    finally:
        node.sh("rm -f /etc/sudoers.d/deploy; userdel -r deploy >/dev/null 2>&1 || true")
