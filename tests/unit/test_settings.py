"""Bad settings are refused before any host is contacted: exit 2, file and key named.

Every case runs ``provision`` through the CLI's error mapping
(``fleetkit.cli.run_command``) on a small setup in a temp dir; the runtime's
connector fails the test if anything tries to reach a host.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import fleetkit.commands.provision as provision
from fleetkit.cli import run_command
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.settings import load_settings
from fleetkit.foundation.status import ExitStatus
from fleetkit.runtime import Runtime

TOKEN = "unit-test-node-token-3f9a"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball_with(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o755
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def default_settings(root: Path) -> dict[str, Any]:
    deb = b"not really a deb"
    tarball = tarball_with("bacalhau", b"#!/bin/sh\necho bacalhau\n")
    (root / "packages").mkdir(exist_ok=True)
    (root / "packages" / "osquery_5.23.1-1.linux_amd64.deb").write_bytes(deb)
    (root / "packages" / "bacalhau_v1.9.3_linux_amd64.tar.gz").write_bytes(tarball)
    (root / "secrets").mkdir(exist_ok=True)
    (root / "secrets" / "node_token").write_text(TOKEN + "\n")
    return {
        "inventory": "inventory",
        "ssh": {"use_agent": False, "load_ssh_config": False},
        "osquery": {
            "package": {
                "source": "packages/osquery_5.23.1-1.linux_amd64.deb",
                "sha256": _sha(deb),
            }
        },
        "bacalhau": {
            "package": {
                "source": "packages/bacalhau_v1.9.3_linux_amd64.tar.gz",
                "sha256": _sha(tarball),
            },
            "node_token": {"file": "secrets/node_token"},
            "container_engine": "skip",
        },
    }


DEFAULT_INVENTORY = """\
control_plane:
  hosts:
    orch-1: {address: 127.0.0.1, port: 1}
compute:
  vars:
    labels: {role: osquery}
  hosts:
    node-1: {address: 127.0.0.1, port: 2, labels: {env: test}}
    node-2: {address: 127.0.0.1, port: 3}
"""


@dataclass
class Setup:
    root: Path

    @property
    def settings_file(self) -> Path:
        return self.root / "fleetkit.yaml"

    @property
    def inventory_file(self) -> Path:
        return self.root / "inventory" / "fleet.yaml"


def make_setup(
    root: Path,
    *,
    settings: dict[str, Any] | None = None,
    settings_text: str | None = None,
    inventory: str = DEFAULT_INVENTORY,
) -> Setup:
    """A complete, valid fleetkit setup in ``root`` (change one piece per test)."""
    data = default_settings(root)
    for key, value in (settings or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    (root / "inventory").mkdir(exist_ok=True)
    (root / "inventory" / "fleet.yaml").write_text(inventory)
    text = settings_text if settings_text is not None else yaml.safe_dump(data)
    (root / "fleetkit.yaml").write_text(text)
    return Setup(root)


class NoContact:
    """Stands in for the SSH connector: any use means a host would have been contacted."""

    def connect(self, host: Host) -> None:
        raise AssertionError(f"{host.name} was contacted although the input is bad")


@dataclass
class Outcome:
    status: ExitStatus
    stdout: str
    stderr: str


def provision_cli(
    setup: Setup, *, hosts: str = "", check: bool = False, environ: dict[str, str] | None = None
) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, environ=environ or {}, cwd=str(setup.root))
    rt = Runtime(env=env)
    rt.__dict__["connector"] = NoContact()  # cached_property: this instance wins
    status = run_command(lambda r: provision.run(r, hosts=hosts, check=check), rt)
    return Outcome(status, out.getvalue(), err.getvalue())


def assert_bad_input(outcome: Outcome, *fragments: str) -> None:
    assert outcome.status == ExitStatus.BAD_INPUT, outcome.stderr
    assert "Traceback" not in outcome.stderr
    for fragment in fragments:
        assert fragment in outcome.stderr, f"{fragment!r} not in {outcome.stderr!r}"
    assert TOKEN not in outcome.stderr + outcome.stdout


def test_the_valid_setup_is_valid(tmp_path: Path) -> None:
    setup = make_setup(tmp_path)
    settings = load_settings({}, str(tmp_path))
    assert settings.inventory_dir == str(tmp_path / "inventory")
    assert settings.templates_dir is None
    assert setup.settings_file.is_file()


def test_unknown_settings_key(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings={"bacalhau": {"api_prot": 1234}})
    assert_bad_input(provision_cli(setup), str(setup.settings_file), "bacalhau.api_prot")


def test_bad_sha256(tmp_path: Path) -> None:
    setup = make_setup(
        tmp_path, settings={"osquery": {"package": {"source": "x.deb", "sha256": "abc"}}}
    )
    assert_bad_input(provision_cli(setup), str(setup.settings_file), "osquery.package.sha256")


def test_missing_token_source(tmp_path: Path) -> None:
    data = default_settings(tmp_path)
    del data["bacalhau"]["node_token"]
    setup = make_setup(tmp_path, settings_text=yaml.safe_dump(data))
    assert_bad_input(provision_cli(setup), str(setup.settings_file), "bacalhau.node_token")


def test_token_file_missing_is_bad_input_before_contact(tmp_path: Path) -> None:
    setup = make_setup(tmp_path)
    (tmp_path / "secrets" / "node_token").unlink()
    assert_bad_input(provision_cli(setup), str(setup.settings_file), "bacalhau.node_token")


def test_token_from_an_unset_environment_variable(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings={"bacalhau": {"node_token": {"env": "FK_TOKEN"}}})
    assert_bad_input(provision_cli(setup), "bacalhau.node_token", "FK_TOKEN")


def test_settings_not_a_mapping(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings_text="- just\n- a list\n")
    assert_bad_input(provision_cli(setup), str(setup.settings_file), "expected a mapping")


def test_settings_bad_yaml(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings_text="ssh: {parallelism: [\n")
    assert_bad_input(provision_cli(setup), str(setup.settings_file), "invalid YAML")


def test_bad_transfer_mode(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings={"transfer_mode": "carrier-pigeon"})
    assert_bad_input(provision_cli(setup), str(setup.settings_file), "transfer_mode")


def test_pull_mode_needs_urls(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings={"transfer_mode": "pull"})
    assert_bad_input(
        provision_cli(setup), str(setup.settings_file), "package.source", "transfer_mode: push"
    )


def test_bad_duration(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings={"bacalhau": {"heartbeat_interval": "soon"}})
    assert_bad_input(provision_cli(setup), "bacalhau.heartbeat_interval")


def test_undefined_template_variable(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    builtin = Path(provision.__file__).resolve().parent.parent / "templates"
    for template in builtin.glob("*.j2"):
        (templates / template.name).write_text(template.read_text())
    (templates / "osquery.flags.j2").write_text("--extensions_socket={{ extension_socket }}\n")
    setup = make_setup(tmp_path, settings={"templates_dir": "templates"})
    assert_bad_input(provision_cli(setup), str(templates / "osquery.flags.j2"), "extension_socket")


@pytest.mark.parametrize("hosts", ["node-9", "computers"])
def test_unknown_host_or_group(tmp_path: Path, hosts: str) -> None:
    setup = make_setup(tmp_path)
    assert_bad_input(provision_cli(setup, hosts=hosts), "--hosts", hosts)


def test_example_settings_load_with_the_official_osquery_hash() -> None:
    repo = Path(__file__).resolve().parents[2]
    settings = load_settings({}, str(repo), "fleetkit.example.yaml")
    assert settings.osquery.package.source.startswith("https://pkg.osquery.io/deb/")
    assert settings.osquery.package.sha256 == (
        "1431a9a6394657eba3cdd3476a462a6fe9721fc3664a70f23efcf7e37816787a"
    )
    assert settings.osquery.dpkg_version == "5.23.1-1.linux"
