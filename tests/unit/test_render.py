"""Rendering: strict templates, and the files a host gets (no host needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetkit.foundation.inventory import load_inventory
from fleetkit.foundation.render import BUILTIN_TEMPLATES, Renderer
from fleetkit.foundation.settings import load_settings
from fleetkit.foundation.status import ConfigError
from fleetkit.hostfacts.facts import FactView, FileLook, Hostname, Raw
from fleetkit.hostfacts.roles import RoleContext, plan_for
from fleetkit.hostfacts.steps import (
    AbsentFileStep,
    FileStep,
    PlanContext,
    ServiceStep,
    TarballBinaryStep,
)
from tests.unit.test_settings import TOKEN, make_setup


def _context(root: Path) -> RoleContext:
    settings = load_settings({}, str(root))
    return RoleContext(settings, load_inventory(settings.inventory_dir), Renderer())


def _files(root: Path, name: str) -> dict[str, FileStep]:
    context = _context(root)
    host = context.inventory.get(name)
    assert host is not None
    plan = plan_for(host, context)
    return {s.path: s for s in plan.steps if isinstance(s, FileStep)}


def test_undefined_variable_names_template_and_variable(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("a={{ a }} b={{ b }}\n")
    renderer = Renderer(tmp_path)
    assert renderer.render("t.j2", {"a": 1, "b": 2}) == "a=1 b=2\n"
    with pytest.raises(ConfigError) as caught:
        renderer.render("t.j2", {"a": 1})
    assert caught.value.file == str(tmp_path / "t.j2")
    assert caught.value.key == "b"


def test_missing_template_and_syntax_error_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.j2").write_text("{% if %}\n")
    renderer = Renderer(tmp_path)
    with pytest.raises(ConfigError, match="template not found"):
        renderer.render("nope.j2", {})
    with pytest.raises(ConfigError, match="line 1"):
        renderer.render("bad.j2", {})


def test_compute_config(tmp_path: Path) -> None:
    make_setup(tmp_path)
    files = _files(tmp_path, "node-1")
    config = files["/etc/bacalhau/config.yaml"]
    assert config.mode == 0o600 and config.secret
    data = yaml.safe_load(config.content)
    assert data["NameProvider"] == "hostname"
    assert data["DataDir"] == "/var/lib/bacalhau"
    assert data["API"]["Port"] == 1234
    # The inventory's labels, and fleetkit's identity label (the hostname label
    # is added from the host's own `uname -n` when the step plans on the host).
    assert data["Labels"] == {"env": "test", "fleetkit-host": "node-1", "role": "osquery"}
    assert list(data["Labels"]) == ["env", "fleetkit-host", "role"]  # sorted
    assert data["Compute"]["Enabled"] is True
    assert data["Compute"]["Orchestrators"] == ["nats://127.0.0.1:4222"]
    assert data["Compute"]["Auth"]["Token"] == TOKEN
    assert data["Compute"]["AllowListedLocalPaths"] == ["/var/osquery"]
    assert data["Compute"]["Heartbeat"]["Interval"] == "15s"
    assert "Orchestrator" not in data


def test_orchestrator_config(tmp_path: Path) -> None:
    make_setup(
        tmp_path,
        settings={"bacalhau": {"manual_approval": True, "disconnect_timeout": "3s"}},
    )
    files = _files(tmp_path, "orch-1")
    data = yaml.safe_load(files["/etc/bacalhau/config.yaml"].content)
    orchestrator = data["Orchestrator"]
    assert orchestrator["Enabled"] is True
    assert orchestrator["Port"] == 4222
    assert orchestrator["Auth"]["Token"] == TOKEN
    assert orchestrator["NodeManager"] == {"DisconnectTimeout": "3s", "ManualApproval": True}
    assert data["API"]["Port"] == 1234
    assert "Compute" not in data
    assert "/etc/osquery/osquery.flags" not in files


def test_osquery_flags(tmp_path: Path) -> None:
    make_setup(tmp_path, settings={"osquery": {"disabled_tables": ["curl", "shadow"]}})
    flags = _files(tmp_path, "node-2")["/etc/osquery/osquery.flags"].content
    lines = [line for line in flags.splitlines() if not line.startswith("#")]
    assert "--extensions_socket=/var/osquery/osquery.em" in lines
    assert "--disable_tables=curl,shadow" in lines
    assert "--host_identifier=hostname" in lines
    assert all(line.startswith("--") for line in lines)


def test_s3_environment_file_only_with_s3_publisher(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("AKIAEXAMPLEKEY\n")
    s3 = {
        "bucket": "b",
        "region": "eu-west-1",
        "endpoint": "http://127.0.0.1:9000",
        "access_key_id": {"file": "k"},
        "secret_access_key": {"env": "S3_SECRET"},
    }
    make_setup(tmp_path, settings={"query": {"publisher": "s3", "s3": s3}})
    settings = load_settings({"S3_SECRET": "very-secret-value"}, str(tmp_path))
    context = RoleContext(settings, load_inventory(settings.inventory_dir), Renderer())
    host = context.inventory.get("node-1")
    assert host is not None
    steps = {s.path: s for s in plan_for(host, context).steps if isinstance(s, FileStep)}
    env = steps["/etc/bacalhau/env"]
    assert env.mode == 0o600 and env.secret
    assert "AWS_ACCESS_KEY_ID=AKIAEXAMPLEKEY\n" in env.content
    assert "AWS_SECRET_ACCESS_KEY=very-secret-value\n" in env.content
    assert "AWS_REGION=eu-west-1\n" in env.content
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:9000\n" in env.content


def test_without_s3_the_environment_file_must_be_absent(tmp_path: Path) -> None:
    make_setup(tmp_path)
    context = _context(tmp_path)
    host = context.inventory.get("node-1")
    assert host is not None
    steps = plan_for(host, context).steps
    assert AbsentFileStep("/etc/bacalhau/env", notify=(("bacalhau", "restart"),)) in steps


def test_compute_plan_order(tmp_path: Path) -> None:
    """osquery first (the socket must exist before the agent may mount it), agent last."""
    make_setup(tmp_path)
    context = _context(tmp_path)
    host = context.inventory.get("node-1")
    assert host is not None
    plan = plan_for(host, context)
    described = plan.describe()
    assert described[0] == "package osquery 5.23.1-1.linux"
    assert described.index("socket /var/osquery/osquery.em") < described.index(
        "file /etc/bacalhau/config.yaml"
    )
    assert described[-1] == "service bacalhau"
    [binary] = [s for s in plan.steps if isinstance(s, TarballBinaryStep)]
    assert binary.path == "/usr/local/bin/bacalhau" and binary.mode == 0o755
    services = [s.spec for s in plan.steps if isinstance(s, ServiceStep)]
    assert services[0].argv == (
        "/opt/osquery/bin/osqueryd",
        "--flagfile",
        "/etc/osquery/osquery.flags",
        "--config_path",
        "/etc/osquery/osquery.conf",
    )
    assert services[1].exec_start == (
        "/usr/local/bin/bacalhau serve --config /etc/bacalhau/config.yaml --name node-1"
    )


def test_unit_runs_the_same_command_as_the_fallback(tmp_path: Path) -> None:
    make_setup(tmp_path)
    unit = _files(tmp_path, "orch-1")["/etc/systemd/system/bacalhau.service"]
    assert unit.systemd_only
    assert (
        "ExecStart=/usr/local/bin/bacalhau serve --config /etc/bacalhau/config.yaml --name orch-1\n"
        in unit.content
    )
    assert "EnvironmentFile=-/etc/bacalhau/env\n" in unit.content


def test_host_api_port_overrides_the_default(tmp_path: Path) -> None:
    inventory = (
        "control_plane:\n  hosts:\n    orch-1: {address: 127.0.0.1, port: 1}\n"
        "compute:\n  hosts:\n    node-1: {address: 127.0.0.1, port: 2, bacalhau_api_port: 4321}\n"
    )
    make_setup(tmp_path, inventory=inventory)
    data = yaml.safe_load(_files(tmp_path, "node-1")["/etc/bacalhau/config.yaml"].content)
    assert data["API"]["Port"] == 4321
    assert data["Labels"] == {"fleetkit-host": "node-1"}


# --- a project's templates override the shipped ones, file by file -------------------------


def test_project_templates_beside_the_settings_override_one_file(tmp_path: Path) -> None:
    make_setup(tmp_path)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "bacalhau.service.j2").write_text(
        "# site unit for {{ host.name }}\nExecStart={{ exec_start }}\n"
    )
    settings = load_settings({}, str(tmp_path))
    renderer = Renderer.for_settings(settings)
    context = RoleContext(settings, load_inventory(settings.inventory_dir), renderer)
    node = context.inventory.get("node-1")
    assert node is not None
    steps = {s.path: s for s in plan_for(node, context).steps if isinstance(s, FileStep)}
    unit = steps["/etc/systemd/system/bacalhau.service"].content
    assert unit.startswith("# site unit for node-1\nExecStart=/usr/local/bin/bacalhau serve")
    flags = steps["/etc/osquery/osquery.flags"].content  # not overridden: the shipped one
    assert flags.startswith("# Managed by fleetkit (templates/osquery.flags.j2)")
    assert renderer.path_of("bacalhau.service.j2") == str(
        tmp_path / "templates" / "bacalhau.service.j2"
    )
    assert renderer.path_of("osquery.flags.j2") == str(BUILTIN_TEMPLATES / "osquery.flags.j2")


def test_templates_dir_setting_overrides_file_by_file_too(tmp_path: Path) -> None:
    make_setup(tmp_path, settings={"templates_dir": "site-templates"})
    (tmp_path / "site-templates").mkdir()
    (tmp_path / "site-templates" / "osquery.flags.j2").write_text("--verbose={{ nope }}\n")
    settings = load_settings({}, str(tmp_path))
    renderer = Renderer.for_settings(settings)
    with pytest.raises(ConfigError) as caught:
        renderer.render("osquery.flags.j2", {})
    assert caught.value.file == str(tmp_path / "site-templates" / "osquery.flags.j2")
    assert caught.value.key == "nope"
    assert "Managed by fleetkit" in renderer.render(
        "bacalhau.env.j2", {"host": None, "variables": []}
    )


def test_without_project_templates_the_shipped_ones_are_used(tmp_path: Path) -> None:
    make_setup(tmp_path)
    settings = load_settings({}, str(tmp_path))
    renderer = Renderer.for_settings(settings)
    assert renderer.directories == [BUILTIN_TEMPLATES]
    with pytest.raises(ConfigError, match="template not found") as caught:
        renderer.render("nope.j2", {})
    assert str(BUILTIN_TEMPLATES) in str(caught.value)


# --- node identity: the inventory name, the fleetkit labels, the machine's hostname ----------


def _config_after_probe(tmp_path: Path, uname: str, exit_code: int = 0) -> dict[str, Any]:
    """The compute config as planned on a host whose ``uname -n`` printed ``uname``."""
    context = _context(tmp_path)
    host = context.inventory.get("node-1")
    assert host is not None
    [config] = [s for s in plan_for(host, context).steps if getattr(s, "path", "") == CONFIG_PATH]
    plan_context = PlanContext(host=host, service_manager="start-stop-daemon")
    looks = config.looks(plan_context)
    assert Hostname() in looks  # read in the host's one probe, no extra round trip
    raws = {
        FileLook(CONFIG_PATH): Raw(0, b"-\n", b""),
        Hostname(): Raw(exit_code, uname.encode(), b""),
    }
    plan = config.plan(FactView.parsed(raws), plan_context)
    [write] = plan.changes
    assert write.stdin is not None
    data: dict[str, Any] = yaml.safe_load(write.stdin.decode())
    return data


CONFIG_PATH = "/etc/bacalhau/config.yaml"


def test_the_machine_hostname_label_comes_from_the_host_itself(tmp_path: Path) -> None:
    make_setup(tmp_path)
    labels = _config_after_probe(tmp_path, "ip-10-0-1-29\n")["Labels"]
    assert labels["fleetkit-host"] == "node-1"
    assert labels["fleetkit-hostname"] == "ip-10-0-1-29"
    # An FQDN too long for a label value keeps its first DNS label.
    long_fqdn = "ip-10-0-1-29." + "a" * 60 + ".compute.internal\n"
    assert _config_after_probe(tmp_path, long_fqdn)["Labels"]["fleetkit-hostname"] == (
        "ip-10-0-1-29"
    )
    # The host's word is hostile: garbage, or no answer, leaves the label out.
    for junk, code in (("bad name; rm -rf /\n", 0), ("", 1), ("x" * 300 + "\n", 0)):
        labels = _config_after_probe(tmp_path, junk, code)["Labels"]
        assert "fleetkit-hostname" not in labels and labels["fleetkit-host"] == "node-1"


def test_inventory_labels_may_not_use_fleetkit_identity_keys(tmp_path: Path) -> None:
    inventory = (
        "control_plane:\n  hosts:\n    orch-1: {address: 127.0.0.1, port: 1}\n"
        "compute:\n  hosts:\n"
        "    node-1: {address: 127.0.0.1, port: 2, labels: {fleetkit-host: node-2}}\n"
    )
    make_setup(tmp_path, inventory=inventory)
    context = _context(tmp_path)
    host = context.inventory.get("node-1")
    assert host is not None
    with pytest.raises(ConfigError) as caught:
        plan_for(host, context)
    assert caught.value.key == "node-1.labels.fleetkit-host"
    assert "set by fleetkit" in str(caught.value)
