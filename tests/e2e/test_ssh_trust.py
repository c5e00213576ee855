"""SSH trust rules against real sshd hosts: @revoked, other key types, @cert-authority,
ssh_config's HostName, and onboarding's refusals through the CLI.

The session ``lab`` is used read-only: each test gives the Connector its own
copy of known_hosts (and ssh_config). The onboarding tests use a lab of their
own, since they change its settings.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from fleetkit.clients.ssh import Connector, HostKeyError, KeyProblem, KnownHosts, fingerprint
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.runtime import Runtime
from lab.fleet import Lab
from lab.hosts import LabHost
from tests.e2e.conftest import run_cli
from tests.e2e.test_onboard import snapshot
from tests.unit.test_known_hosts import ecdsa, ed, entry

pytestmark = pytest.mark.lab


def host_key(host: LabHost) -> paramiko.PKey:
    kind, blob = host.host_key.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


def name_of(host: LabHost) -> str:
    return host.known_hosts_line.split()[0]


def line(names: str, key: paramiko.PKey, marker: str = "") -> str:
    return entry(names, key, marker) + "\n"


def connector(lab: Lab, tmp_path: Path, known: str, ssh_config: str | None = None) -> Connector:
    """A Connector on the lab's settings, with this known_hosts (and ssh_config)."""
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ=lab.environ())
    rt = Runtime(env=env, settings_path=str(lab.settings_path))
    path = tmp_path / "known_hosts"
    path.write_text(known)
    changes: dict[str, object] = {"known_hosts": str(path)}
    if ssh_config is not None:
        config = tmp_path / "ssh_config"
        config.write_text(ssh_config)
        changes.update(config_file=str(config), load_ssh_config=True)
    settings = dataclasses.replace(rt.settings.ssh, **changes)  # type: ignore[arg-type]
    return Connector(settings, KnownHosts(str(path)))


def inventory_host(host: LabHost) -> Host:
    return Host(name=host.name, address=host.address, port=host.ssh_port)


def test_a_revoked_key_is_refused_where_it_is_pinned(lab: Lab, tmp_path: Path) -> None:
    node1, node2 = lab.host("node-1"), lab.host("node-2")
    known = lab.known_hosts_path.read_text() + line("*", host_key(node1), "@revoked")
    ssh = connector(lab, tmp_path, known)
    with pytest.raises(HostKeyError) as caught:
        ssh.connect(inventory_host(node1))
    assert caught.value.problem is KeyProblem.REVOKED
    message = str(caught.value)
    assert f"REVOKED host key offered by {name_of(node1)}" in message
    assert fingerprint(host_key(node1)) in message and "marked @revoked by line" in message
    with ssh.connect(inventory_host(node2)) as remote:  # other keys are not affected
        assert remote.run("hostname").check().out.strip() == node2.hostname


def test_a_key_of_another_type_pinned_is_refused(lab: Lab, tmp_path: Path) -> None:
    node = lab.host("node-1")
    pinned = ecdsa()
    ssh = connector(lab, tmp_path, line(name_of(node), pinned))
    with pytest.raises(HostKeyError) as caught:
        ssh.connect(inventory_host(node))
    assert caught.value.problem is KeyProblem.OTHER_TYPE
    message = str(caught.value)
    assert f"{name_of(node)} offers a host key of another type: ssh-ed25519 " in message
    assert fingerprint(host_key(node)) in message and fingerprint(pinned) in message


def test_a_cert_authority_does_not_vouch_for_a_host(lab: Lab, tmp_path: Path) -> None:
    node = lab.host("node-1")
    ssh = connector(lab, tmp_path, "# site CA\n" + line("*", ed(), "@cert-authority"))
    assert any("@cert-authority lines are not supported" in w for w in ssh.known_hosts.warnings)
    with pytest.raises(HostKeyError) as caught:
        ssh.connect(inventory_host(node))
    assert caught.value.problem is KeyProblem.NOT_PINNED
    assert "Line 2 is a @cert-authority line for it" in str(caught.value)


def test_ssh_config_hostname_the_key_of_the_host_reached_is_checked(
    lab: Lab, tmp_path: Path
) -> None:
    node1, node2 = lab.host("node-1"), lab.host("node-2")
    config = f"Host fk-alias\n    HostName {node2.address}\n    Port {node2.ssh_port}\n"
    alias = Host(name="node-1", address="fk-alias")

    # node-1's key pinned under the alias name must not let node-2 in.
    trusting_the_alias = line("fk-alias", host_key(node1))
    ssh = connector(lab, tmp_path, trusting_the_alias, config)
    with pytest.raises(HostKeyError) as caught:
        ssh.connect(alias)
    message = str(caught.value)
    assert f"host key for {name_of(node2)} (ssh_config HostName for fk-alias) is not pinned" in (
        message
    )
    assert fingerprint(host_key(node2)) in message  # the key shown is the reached host's

    ssh = connector(lab, tmp_path, lab.known_hosts_path.read_text(), config)
    with ssh.connect(alias) as remote:
        assert remote.reached == name_of(node2)
        assert remote.run("hostname").check().out.strip() == node2.hostname
    offered = ssh.offered_key(alias)
    assert offered.key.asbytes() == host_key(node2).asbytes()
    assert (offered.address, offered.port, offered.rewritten) == (
        node2.address,
        node2.ssh_port,
        True,
    )


# ---------------------------------------------------------------- onboarding refusals


def test_onboard_through_ssh_config_refuses_what_it_must(
    lab_factory: Callable[..., Lab],
) -> None:
    lab = lab_factory(compute=1)
    new = lab.add_host("node-7", in_inventory=False, pin_key=False)
    config = lab.workdir / "ssh_config"
    config.write_text(f"Host fk-new\n    HostName {new.address}\n    Port {new.ssh_port}\n")
    lab.write_settings(ssh={"config_file": str(config), "load_ssh_config": True})
    argv = ["onboard", "--host", "node-7", "--address", "fk-new"]
    real = fingerprint(host_key(new))
    known = lab.known_hosts_path

    before = snapshot(lab)
    wrong = run_cli(lab, *argv, "--host-key-fingerprint", "SHA256:" + "A" * 43)
    assert wrong.exit_code == 2, wrong.stderr
    assert f"ssh_config sends node-7 (fk-new, port 22) to {name_of(new)}" in wrong.stderr
    assert f"node-7 ({name_of(new)}) offers host key ssh-ed25519 {real}" in wrong.stderr
    assert "host key mismatch" in wrong.stderr
    assert snapshot(lab) == before

    known.write_text(known.read_text() + line(name_of(new), ecdsa()))
    before = snapshot(lab)
    other = run_cli(lab, *argv, "--host-key-fingerprint", real)
    assert other.exit_code == 2, other.stderr
    assert "offers a key of another type (ssh-ed25519" in other.stderr
    assert "--replace-key" in other.stderr and "Traceback" not in other.output
    assert snapshot(lab) == before

    known.write_text(known.read_text() + line("*", host_key(new), "@revoked"))
    before = snapshot(lab)
    revoked = run_cli(lab, *argv, "--host-key-fingerprint", real, "--replace-key")
    assert revoked.exit_code == 2, revoked.stderr
    assert "marks @revoked" in revoked.stderr and "never pins a revoked key" in revoked.stderr
    assert snapshot(lab) == before
    assert not new.exists("/etc/osquery/osquery.flags")
