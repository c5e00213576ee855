"""Checks made from inside a host: pure judges of the facts its one probe read.

Each judge takes the :class:`~fleetkit.readiness.model.Subject` and the
parsed facts its check declares (:mod:`fleetkit.readiness.catalog`), in
that order, and returns one :class:`~fleetkit.readiness.model.CheckResult`.
A service counts as running by the same look provisioning uses, so verify
and provision never disagree about a daemon.
"""

from __future__ import annotations

import json
from typing import Any

from fleetkit.ask.osqueryi import OutputError, parse_osqueryi_json
from fleetkit.clients.ssh import HostKeyError, KeyProblem, SSHError
from fleetkit.clients.urls import nats_url
from fleetkit.foundation.status import ConfigError, HostError
from fleetkit.foundation.yamlfile import HOST_FILE_BYTES, parse_yaml
from fleetkit.hostfacts.facts import (
    FILE_LIMIT,
    FileState,
    HttpAnswer,
    PackageState,
    Raw,
    SocketState,
    VersionAnswer,
)
from fleetkit.hostfacts.services import ServiceSpec, ServiceState
from fleetkit.readiness.expected import PROBE_SQL, PROBE_TIMEOUT, Expected
from fleetkit.readiness.model import CheckResult, Subject, failed, passed, provision_fix


def check_ssh(s: Subject) -> CheckResult:
    host, error = s.target, s.ssh_error
    keys = ", ".join(s.pinned) or "none"
    if error is None:
        return passed("ssh", f"connected as {host.user}@{host.endpoint}; pinned key {keys}")
    message = str(error.detail if isinstance(error, HostError) else error)
    onboard = f"invoke onboard --host {host.name} --address {host.address} --port {host.port}"
    if isinstance(error, HostKeyError):
        if error.problem in (KeyProblem.CHANGED, KeyProblem.OTHER_TYPE):
            fix = (
                f"confirm {host.name}'s new key out of band (console); if it was reinstalled, "
                f"delete its line from the project known_hosts and run: {onboard}"
            )
        else:
            fix = f"pin its key explicitly: {onboard}"
    elif "authentication failed" in message:
        fix = (
            f"authorize fleetkit's SSH key for {host.user} on {host.name} "
            "(settings ssh.identity_file or the agent)"
        )
    elif isinstance(error, SSHError) and "timed out" in message and "command" in message:
        fix = f"look at {host.name}: the probe hung (load, a stuck osqueryi); then re-run verify"
    else:
        fix = (
            f"start sshd on {host.name} or correct its address/port in "
            f"{host.source or 'the inventory'}"
        )
    return failed("ssh", message, fix)


def check_osquery_package(s: Subject, package: PackageState) -> CheckResult:
    name, wanted = "osquery.package", s.expected.osquery_version
    if package.version == wanted:
        return passed(name, f"osquery {package.version} installed (dpkg)")
    found = f"installed version {package.version}" if package.version else "not installed"
    detail = f" (dpkg-query: {package.detail})" if package.detail else ""
    return failed(name, f"{found}; expected {wanted}{detail}", provision_fix(s.target.name))


def service_check(name: str, s: Subject, spec: ServiceSpec, state: ServiceState) -> CheckResult:
    manager = state.manager
    how = "systemctl is-active" if manager == "systemd" else f"pidfile {spec.pidfile}"
    if state.running:
        return passed(name, f"{spec.name} running ({manager}: {how})")
    return failed(
        name, f"{spec.name} is not running ({manager}: {how})", provision_fix(s.target.name)
    )


def check_osqueryd(s: Subject, state: ServiceState) -> CheckResult:
    return service_check("osqueryd.running", s, s.expected.osqueryd, state)


def check_socket(s: Subject, socket: SocketState) -> CheckResult:
    """The extensions socket; provisioning restarts a daemon that runs without it."""
    name, path = "osquery.socket", s.expected.socket
    if socket.present:
        return passed(name, f"{path} is a unix socket")
    return failed(name, f"{path}: {socket.detail}", provision_fix(s.target.name))


def check_probe_query(s: Subject, answer: Raw) -> CheckResult:
    name, host = "osquery.probe", s.target.name
    shown = f"osqueryi --connect={s.expected.socket} --json {PROBE_SQL!r}"
    if answer.exit_code == 124:
        return failed(
            name,
            f"{shown} hung for {PROBE_TIMEOUT}s",
            f"restart osqueryd on {host}: {provision_fix(host)}",
        )
    if not answer.ok:
        return failed(
            name, f"{shown} -> exit {answer.exit_code}: {answer.said()}", provision_fix(host)
        )
    try:
        rows = parse_osqueryi_json(answer.stdout)
    except OutputError as exc:
        return failed(name, f"{shown}: {exc}", provision_fix(host))
    if rows != [{"ok": "1"}]:
        return failed(
            name, f"{shown} answered {rows!r}, expected [{{'ok': '1'}}]", provision_fix(host)
        )
    return passed(name, f'{shown} -> [{{"ok":"1"}}]')


def parse_flags(text: str) -> dict[str, str]:
    """``--name=value`` lines of an osquery flagfile (the last occurrence wins, like gflags)."""
    flags: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("--"):
            continue
        key, _, value = line[2:].partition("=")
        flags[key.strip()] = value.strip()
    return flags


def _unreadable(file: FileState, path: str) -> str | None:
    """Why a file read back from a host cannot be judged (None: it can)."""
    if not file.exists:
        return f"{path}: no such file"
    if file.truncated:
        return f"{path} is larger than {FILE_LIMIT} bytes; not read"
    return None


def check_flags(s: Subject, file: FileState) -> CheckResult:
    name, expected, host = "osquery.flags", s.expected, s.target.name
    path = expected.flags_file
    if problem := _unreadable(file, path):
        return failed(name, problem, provision_fix(host))
    flags = parse_flags(file.text)
    problems: list[str] = []
    tables = {t.strip() for t in flags.get("disable_tables", "").split(",") if t.strip()}
    if "disable_tables" not in flags:
        problems.append("no --disable_tables")
    else:
        if missing := sorted(expected.disabled_tables - tables):
            problems.append(f"--disable_tables lacks {', '.join(missing)}")
        if extra := sorted(tables - expected.disabled_tables):
            problems.append(f"--disable_tables also disables {', '.join(extra)}")
    socket = flags.get("extensions_socket")
    if socket != expected.socket:
        problems.append(
            f"--extensions_socket is {socket!r}, expected {expected.socket!r}"
            if socket is not None
            else "no --extensions_socket"
        )
    if problems:
        return failed(name, f"{path}: {'; '.join(problems)}", provision_fix(host))
    shown = ",".join(sorted(tables))
    return passed(name, f"{path}: --disable_tables={shown} --extensions_socket={expected.socket}")


def check_bacalhau_binary(s: Subject, answer: VersionAnswer) -> CheckResult:
    name, expected, host = "bacalhau.binary", s.expected, s.target.name
    shown = f"{expected.bacalhau_binary} version --client"
    if answer.exit_code == 127:
        return failed(name, f"{expected.bacalhau_binary} is not installed", provision_fix(host))
    if answer.exit_code != 0:
        return failed(name, f"{shown}: {answer.said}", provision_fix(host))
    if answer.version == expected.bacalhau_version:
        return passed(name, f"{shown} -> {answer.version}")
    return failed(
        name,
        f"{shown} -> {answer.version or 'unreadable output'}; expected {expected.bacalhau_version}",
        provision_fix(host),
    )


def _lookup(config: Any, dotted: str) -> Any:
    """A Bacalhau config key, case-insensitively (Bacalhau's own rule)."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = next((v for k, v in node.items() if str(k).lower() == part.lower()), None)
    return node


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def check_bacalhau_config(s: Subject, file: FileState) -> CheckResult:
    """The agent's config holds what makes a node join and serve queries.

    The token is compared, never shown: a wrong token is the one fault the
    orchestrator cannot report (the node simply never appears). The file
    comes from the host: size-capped by the fact, parsed by the strict,
    bounded YAML loader.
    """
    name, expected, host = "bacalhau.config", s.expected, s.target
    path = expected.bacalhau_config
    if problem := _unreadable(file, path):
        return failed(name, problem, provision_fix(host.name))
    try:
        config = parse_yaml(file.text, file=f"{host.name}:{path}", max_bytes=HOST_FILE_BYTES)
    except ConfigError as exc:
        return failed(name, f"{path} is not valid YAML: {exc.detail}", provision_fix(host.name))
    problems: list[str] = []
    if host.is_control_plane:
        if _lookup(config, "Orchestrator.Auth.Token") != expected.token:
            problems.append("Orchestrator.Auth.Token differs from bacalhau.node_token (settings)")
        shown = "Orchestrator.Auth.Token matches bacalhau.node_token"
    else:
        token = _lookup(config, "Compute.Auth.Token")
        if token != expected.token:
            what = "is missing" if not token else "differs from bacalhau.node_token (settings)"
            problems.append(f"Compute.Auth.Token {what}: the node cannot join the orchestrator")
        allowed = _as_list(_lookup(config, "Compute.AllowListedLocalPaths"))
        bare = [entry.removesuffix(":ro").removesuffix(":rw") for entry in allowed]
        if expected.socket_dir not in bare:
            problems.append(
                f"Compute.AllowListedLocalPaths is {allowed or '[]'}, must list "
                f"{expected.socket_dir} (the directory query jobs mount)"
            )
        orchestrators = _as_list(_lookup(config, "Compute.Orchestrators"))
        if s.control_plane is not None:
            wanted = nats_url(s.control_plane.address, expected.nats_port)
            if not any(o in (wanted, wanted.removeprefix("nats://")) for o in orchestrators):
                problems.append(f"Compute.Orchestrators is {orchestrators or '[]'}, not {wanted}")
        shown = (
            f"token matches bacalhau.node_token; allow-list {allowed}; "
            f"orchestrators {orchestrators}"
        )
    if problems:
        return failed(name, f"{path}: {'; '.join(problems)}", provision_fix(host.name))
    return passed(name, f"{path}: {shown}")


def check_agent(s: Subject, service: ServiceState, alive: HttpAnswer) -> CheckResult:
    name, url = "bacalhau.agent", s.looks.agent.url
    try:
        status = json.loads(alive.body).get("Status") if alive.ok else None
    except (ValueError, AttributeError, RecursionError):
        status = None
    running = f"bacalhau running ({service.manager})"
    if service.running and str(status).upper() == "OK":
        return passed(name, f"{running}; GET {url} (on the node) -> {alive.body}")
    parts = [running if service.running else "bacalhau is not running"]
    parts.append(f"GET {url} (on the node): {alive.body[:120] or alive.said}")
    return failed(name, "; ".join(parts), provision_fix(s.target.name))


def container_engine_required(expected: Expected) -> str | None:
    """Why the container engine is not checked (None: it is required)."""
    if expected.container_engine == "skip":
        return "not required (settings bacalhau.container_engine: skip)"
    return None


def check_container_engine(s: Subject, answer: Raw) -> CheckResult:
    name, host = "container.engine", s.target.name
    if answer.ok:
        return passed(name, f"docker answers: {answer.text.strip()}")
    fix = (
        provision_fix(host)
        if s.expected.container_engine == "install"
        else f"install Docker on {host} (apt-get install docker.io) or set "
        "bacalhau.container_engine: install and " + provision_fix(host)
    )
    return failed(name, f"docker: {answer.said()}", fix)
