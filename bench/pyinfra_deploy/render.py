"""What fleetkit would write on a lab's hosts, handed to the pyinfra deploy beside this file.

Runs in fleetkit's environment (the deploy runs in pyinfra's own venv and
imports nothing of fleetkit). :func:`render_run` asks fleetkit's own roles
for every host's plan (:func:`fleetkit.hostfacts.provisioning.build_plans`:
the same templates, settings, secrets and packages ``fleetkit provision``
uses) and writes, under one directory:

- ``manifest.json``: per host, its plan's steps in order, as plain data
  (paths, modes, owners, the service command lines fleetkit's
  start-stop-daemon fallback runs, the socket wait, the orchestrator URL);
- ``files/<host>/...``: every file's rendered content, byte for byte what
  fleetkit would write (a file that carries the host's own hostname, the
  compute config's ``fleetkit-hostname`` label, is rendered with the name the
  caller says the host has: fleetkit reads it in its probe, the deploy gets it
  for free);
- ``packages/``: the osquery .deb and the bacalhau binary, taken from
  fleetkit's :class:`~fleetkit.hostfacts.packages.PackageStore` (so both went
  through the same pinned SHA-256 check on this machine);
- ``inventory.py`` + ``group_data/all.py``: a pyinfra inventory of the same
  hosts, addresses and ports, the same SSH key and pinned known_hosts with
  strict host key checking.

So the comparison is of transport and orchestration, not of content. A plan
step the deploy does not know makes rendering fail (``UnknownStep``): the
bench must never compare fleetkit against a deploy that does less.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.hostfacts.packages import PackageStore
from fleetkit.hostfacts.provisioning import build_plans
from fleetkit.hostfacts.roles.bacalhau import MachineFileStep
from fleetkit.hostfacts.services import ServiceSpec, StartStopDaemon
from fleetkit.hostfacts.steps import (
    AbsentFileStep,
    DebPackageStep,
    DirectoryStep,
    FileStep,
    OrchestratorAliveStep,
    ServiceStep,
    SocketStep,
    Step,
    TarballBinaryStep,
    socket_wait_command,
)
from fleetkit.runtime import Runtime

MANIFEST_VERSION = 1


class UnknownStep(RuntimeError):
    """fleetkit's plan has a step the pyinfra deploy does not implement."""


@dataclass(frozen=True)
class RenderedRun:
    """Where a rendered run lives; ``pyinfra inventory deploy`` is run from ``directory``."""

    directory: Path
    inventory: Path
    manifest: Path
    hosts: int
    #: fleetkit's ``ssh.parallelism`` for this lab (pyinfra gets the same ``--parallel``).
    parallelism: int


def render_run(
    environ: dict[str, str], cwd: str, out: Path, machine_names: Mapping[str, str]
) -> RenderedRun:
    """Render every inventory host's plan (fleetkit's settings from ``environ``/``cwd``).

    ``machine_names``: each host's own hostname (``uname -n``), by inventory name.
    """
    rt = Runtime(
        env=Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ=environ, cwd=cwd)
    )
    rt.load()
    hosts = list(rt.inventory.hosts)
    plans = build_plans(rt, hosts)
    store = PackageStore(rt.settings, rt.http_session_factory)
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out, store, machine_names)
    manifest: dict[str, Any] = {"version": MANIFEST_VERSION, "hosts": {}}
    for plan in plans:
        manifest["hosts"][plan.host.name] = {
            "role": plan.host.role,
            "steps": [writer.step(plan.host, step) for step in plan.steps],
        }
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    ssh = rt.settings.ssh
    if ssh.identity_file is None:
        raise UnknownStep("the pyinfra inventory needs ssh.identity_file in fleetkit.yaml")
    inventory = _write_inventory(out, hosts)
    _write_group_data(
        out,
        key=ssh.identity_file,
        known_hosts=ssh.known_hosts,
        manifest=manifest_path,
        connect_timeout=ssh.connect_timeout,
    )
    return RenderedRun(out, inventory, manifest_path, len(hosts), ssh.parallelism)


class _Writer:
    """Turns plan steps into manifest entries, writing the files they upload."""

    def __init__(self, out: Path, store: PackageStore, machine_names: Mapping[str, str]) -> None:
        self.out = out
        self.store = store
        self.machine_names = machine_names
        self.ssd = StartStopDaemon()

    def _file(self, relative: str, data: bytes) -> str:
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        return str(path)

    def step(self, host: Host, step: Step) -> dict[str, Any]:
        if isinstance(step, MachineFileStep) and step.render is not None:
            content = step.render(self.machine_names[host.name])
            step = replace(step, content=content, render=None)
        if isinstance(step, FileStep):
            name = step.path.strip("/").replace("/", "__")
            return {
                "kind": "file",
                "path": step.path,
                "src": self._file(f"files/{host.name}/{name}", step.content.encode()),
                "mode": f"{step.mode:o}",
                "owner": step.owner,
                "group": step.group,
                "notify": _restarts(step.notify),
                "systemd_only": step.systemd_only,
            }
        if isinstance(step, AbsentFileStep):
            return {"kind": "absent", "path": step.path, "notify": _restarts(step.notify)}
        if isinstance(step, DirectoryStep):
            return {
                "kind": "directory",
                "path": step.path,
                "mode": f"{step.mode:o}",
                "owner": step.owner,
                "group": step.group,
            }
        if isinstance(step, DebPackageStep):
            artifact = self.store.artifact(step.ref)
            return {
                "kind": "deb",
                "package": step.package,
                "version": step.version,
                "src": str(artifact.path.resolve()),
                "filename": step.ref.source.filename,
                "sha256": step.ref.source.sha256,
                "notify": _restarts(step.notify),
            }
        if isinstance(step, TarballBinaryStep):
            artifact = self.store.artifact(step.ref)
            name = os.path.basename(step.path)
            return {
                "kind": "binary",
                "path": step.path,
                "src": self._file(f"packages/{name}", artifact.payload),
                "sha256": artifact.payload_sha256,
                "tarball": step.ref.source.filename,
                "mode": f"{step.mode:o}",
                "notify": _restarts(step.notify),
            }
        if isinstance(step, ServiceStep):
            return self._service(step.spec, step.socket)
        if isinstance(step, SocketStep):
            return {
                "kind": "socket",
                "path": step.path,
                "timeout": step.timeout,
                "wait": socket_wait_command(step.path, step.timeout),
            }
        if isinstance(step, OrchestratorAliveStep):
            return {
                "kind": "alive",
                "url": f"{step.url}/api/v1/agent/alive",
                "timeout": step.timeout,
            }
        raise UnknownStep(
            f"{host.name}: fleetkit's plan has a step the pyinfra deploy does not do: "
            f"{step.describe()} ({type(step).__name__}); extend bench/pyinfra_deploy first"
        )

    def _service(self, spec: ServiceSpec, socket: str | None) -> dict[str, Any]:
        """The same command lines fleetkit's start-stop-daemon fallback runs."""
        return {
            "kind": "service",
            "name": spec.name,
            "unit": spec.unit,
            "pidfile": spec.pidfile,
            "socket": socket,
            "start": self.ssd.start_command(spec, reload=False),
            "restart": self.ssd.restart_command(spec, reload=False),
        }


def _restarts(notify: tuple[tuple[str, str], ...]) -> list[str]:
    return sorted({service for service, _ in notify})


def _write_inventory(out: Path, hosts: list[Host]) -> Path:
    """``inventory.py``: one pyinfra group per fleetkit group, the hosts' SSH address and port."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for host in hosts:
        data = {"ssh_hostname": host.address, "ssh_port": host.port, "ssh_user": host.user}
        for group in host.groups:
            groups.setdefault(group, []).append((host.name, data))
    lines = [
        "# Generated by bench/pyinfra_deploy/render.py from fleetkit's inventory of one lab.",
        "# Global SSH settings and the manifest path are in group_data/all.py.",
    ]
    for group, members in groups.items():
        if not group.isidentifier():
            raise UnknownStep(f"group {group!r} is not a Python identifier (pyinfra groups are)")
        lines.append(f"{group} = [")
        lines += [f"    ({name!r}, {data!r})," for name, data in members]
        lines.append("]")
    path = out / "inventory.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_group_data(
    out: Path, *, key: str, known_hosts: str, manifest: Path, connect_timeout: float
) -> None:
    """SSH as fleetkit does it: this key only, pinned host keys, strict checking, no agent."""
    ssh_config = out / "ssh_config"
    ssh_config.write_text("# empty: nothing from ~/.ssh/config leaks into the benchmark\n")
    values = {
        "ssh_key": str(Path(key).resolve()),
        "ssh_known_hosts_file": str(Path(known_hosts).resolve()),
        "ssh_strict_host_key_checking": "yes",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_config_file": str(ssh_config),
        "ssh_paramiko_connect_kwargs": {"timeout": connect_timeout},
        "fleet_manifest": str(manifest),
    }
    lines = ["# Generated by bench/pyinfra_deploy/render.py (data for every host)."]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    directory = out / "group_data"
    directory.mkdir(exist_ok=True)
    (directory / "all.py").write_text("\n".join(lines) + "\n", encoding="utf-8")
