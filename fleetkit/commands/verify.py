"""Readiness: is every node really able to answer a fleet query?

``invoke verify`` looks at each host twice: from the inside over SSH (one
probe script per host, run in the bounded pool) and from the orchestrator's
point of view (one node list for the whole fleet). Every finding is a
:class:`Check` -- a name, a verdict, the evidence that led to it and, when it
fails, the fix a person can paste -- so the report is plain data that the
table, the JSON and the tests all read without a host.

Decisions worth knowing:

- The Bacalhau agent's ``/api/v1/agent/alive`` is asked *on the node itself*
  (over the SSH session, with curl, wget or python3, whichever exists), not
  from the admin machine: compute nodes' API ports are often firewalled from
  administrators (and closed by ``quarantine``), while SSH is the one channel
  fleetkit always has. The orchestrator's API is asked from the admin machine,
  as every other command does.
- A service counts as running by the same look provisioning uses
  (:mod:`fleetkit.hostfacts.services`: systemd's ``is-active`` or the fallback's
  pidfile), so verify and provision never disagree about a daemon.
- A node is matched to an inventory host by its node ID: provisioning sets
  ``NameProvider: hostname``, so the node ID is the host's hostname, learnt
  over SSH, falling back to the inventory name (see
  :func:`fleetkit.commands.nodes.find_node`).
- Checks that cannot be made because an earlier one failed (no SSH, no
  orchestrator) are SKIPPED, never passed: the report then still fails on the
  cause, and names it.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml

from fleetkit.ask.osqueryi import OutputError, parse_osqueryi_json
from fleetkit.clients.bacalhau import BacalhauClient, NodeState, OrchestratorError
from fleetkit.clients.ssh import HostKeyError, Outcome, SSHError, fan_out, fingerprint
from fleetkit.clients.urls import nats_url
from fleetkit.commands.nodes import find_node
from fleetkit.foundation.inventory import Host, parse_hosts_option
from fleetkit.foundation.output import emit_report
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import ExitStatus, HostError
from fleetkit.hostfacts.services import RUN_DIR, ServiceSpec, StartStopDaemon, Systemd
from fleetkit.runtime import Runtime

#: The probe query: any running osqueryd answers it, and its exact output is known.
PROBE_SQL = "SELECT 1 AS ok"
#: Seconds a single probe command may take on a host before it counts as hung.
PROBE_TIMEOUT = 20
#: Seconds the whole probe script may take on one host.
SCRIPT_TIMEOUT = 120.0


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    #: Not checked, because something it depends on failed (named in the evidence).
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One finding about one host: what was checked, the verdict, why, and what to do."""

    name: str
    verdict: Verdict
    evidence: str
    #: What a person runs or does when the check fails (None when it passes).
    fix: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "passed": self.passed,
            "evidence": self.evidence,
            "fix": self.fix,
        }


def passed(name: str, evidence: str) -> Check:
    return Check(name, Verdict.PASS, redact(evidence))


def failed(name: str, evidence: str, fix: str) -> Check:
    return Check(name, Verdict.FAIL, redact(evidence), redact(fix))


def skipped(name: str, why: str) -> Check:
    return Check(name, Verdict.SKIP, redact(why))


@dataclass(frozen=True)
class HostReport:
    """Every check of one host (the control plane row also carries the API checks)."""

    name: str
    role: str
    endpoint: str
    checks: tuple[Check, ...]
    #: The node ID the orchestrator knows this host by (None: not found there).
    node_id: str | None = None

    @property
    def ready(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.name,
            "role": self.role,
            "endpoint": self.endpoint,
            "node_id": self.node_id,
            "ready": self.ready,
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass(frozen=True)
class VerifyReport:
    hosts: tuple[HostReport, ...]
    orchestrator_url: str

    @property
    def ready(self) -> bool:
        return all(h.ready for h in self.hosts)

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.SUCCESS if self.ready else ExitStatus.FAILURE

    def host(self, name: str) -> HostReport | None:
        return next((h for h in self.hosts if h.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "orchestrator": self.orchestrator_url,
            "hosts": [h.to_json() for h in self.hosts],
            "failed": [
                {"host": h.name, "check": c.name, "fix": c.fix}
                for h in self.hosts
                for c in h.failures
            ],
        }


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expected:
    """What a ready node looks like, taken from the settings once."""

    osquery_version: str
    socket: str
    socket_dir: str
    flags_file: str
    disabled_tables: frozenset[str]
    bacalhau_version: str
    bacalhau_binary: str
    bacalhau_config: str
    api_port: int
    nats_port: int
    container_engine: str
    publisher: str | None
    service_manager: str
    #: The cluster's node token, compared with the one in each node's config and never shown.
    token: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Expected:
        osq, bac = settings.osquery, settings.bacalhau
        return cls(
            osquery_version=osq.dpkg_version,
            socket=osq.extensions_socket,
            socket_dir=osq.socket_dir,
            flags_file=osq.flags_file,
            disabled_tables=frozenset(osq.disabled_tables),
            bacalhau_version=bac.version,
            bacalhau_binary=bac.install_path,
            bacalhau_config=bac.config_path,
            api_port=bac.api_port,
            nats_port=bac.nats_port,
            container_engine=bac.container_engine,
            publisher="s3" if settings.query.publisher == "s3" else None,
            token=bac.node_token.reveal(),
            service_manager=settings.service_manager,
        )


def provision_fix(host: str) -> str:
    """The one fix most failures share; the same words everywhere so people learn them."""
    return f"run: invoke provision --hosts {host}"


# --------------------------------------------------------------------------- host probe

#: Shell helpers of the probe script. Each probe leaves ``<name>.rc``, ``<name>.out``
#: and ``<name>.err`` in a private temp dir, and the script ends by writing that
#: dir as one tar stream on stdout: any output (binary, multi-line, a token in a
#: config file) travels back unambiguously, for one extra process per host.
_PROBE_PRELUDE = r"""
set +e
umask 077
fk_dir=$(mktemp -d 2>/dev/null) || { fk_dir=/tmp/fleetkit-verify.$$; mkdir -p "$fk_dir"; }
trap 'rm -rf "$fk_dir"' EXIT
fk() {
  fk_name=$1; shift
  "$@" >"$fk_dir/$fk_name.out" 2>"$fk_dir/$fk_name.err" </dev/null
  echo $? >"$fk_dir/$fk_name.rc"
}
fk_done() { cd "$fk_dir" && tar -cf - -- *.rc *.out *.err; }
fk_http() {
  if command -v curl >/dev/null 2>&1; then curl -fsS --max-time 5 "$1"
  elif command -v wget >/dev/null 2>&1; then wget -q -T 5 -O - "$1"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request as u
sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
  else echo "no curl, wget or python3 on this host to ask the agent" >&2; return 127
  fi
}
fk_socket() {
  if [ -S "$1" ]; then ls -l "$1"; return 0
  elif [ -e "$1" ]; then ls -l "$1"; echo "exists but is not a socket" >&2; return 2
  else echo "no such file" >&2; return 1
  fi
}
fk_docker() {
  command -v docker >/dev/null 2>&1 || { echo "docker: command not found" >&2; return 127; }
  timeout 20 docker version --format 'server {{.Server.Version}}'
}
fk_service() {
  if [ "$1" = systemd ] || { [ "$1" = auto ] && [ -d /run/systemd/system ]; }; then
    echo systemd; eval "$2"
  else
    echo start-stop-daemon; eval "$3"
  fi
}
"""


@dataclass(frozen=True)
class Probe:
    """One command's result on a host."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def said(self) -> str:
        """The most telling line the command printed (for evidence)."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1][:200]
        return f"exit {self.exit_code}, no output"


@dataclass(frozen=True)
class HostFacts:
    """Everything the probe script learnt about one host, by probe name."""

    probes: Mapping[str, Probe] = field(default_factory=dict)

    def get(self, name: str) -> Probe | None:
        return self.probes.get(name)

    @property
    def hostname(self) -> str | None:
        probe = self.get("hostname")
        return probe.stdout.strip() or None if probe and probe.ok else None


def parse_probe_output(data: bytes) -> HostFacts:
    """Read the tar stream the probe script ends with; members it cannot use are ignored."""
    probes: dict[str, Probe] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            files = {
                m.name.removeprefix("./"): archive.extractfile(m)
                for m in archive.getmembers()
                if m.isfile()
            }
            texts = {n: f.read().decode("utf-8", "replace") for n, f in files.items() if f}
    except tarfile.TarError:
        return HostFacts({})
    for member, text in texts.items():
        name, dot, kind = member.rpartition(".")
        if not dot or kind != "rc" or not text.strip().lstrip("-").isdigit():
            continue
        probes[name] = Probe(
            int(text.strip()), texts.get(f"{name}.out", ""), texts.get(f"{name}.err", "")
        )
    return HostFacts(probes)


def _spec(service: str, unit: str) -> ServiceSpec:
    """Enough of provisioning's ServiceSpec to look at a service (pidfile and unit names)."""
    return ServiceSpec(name=service, argv=(service,), unit=unit)


def _service_look(expected: Expected, service: str, unit: str) -> str:
    """Shell line that prints the manager then ``running|stopped`` the way provision looks."""
    spec = _spec(service, unit)
    systemd = Systemd().look_command(spec)
    fallback = StartStopDaemon().look_command(spec)
    return " ".join(
        shlex.quote(part) for part in ("fk_service", expected.service_manager, systemd, fallback)
    )


def probe_script(expected: Expected, *, role: str, api_port: int) -> str:
    """The shell script verify runs on one host (one SSH command per host)."""
    q = shlex.quote
    lines = [
        "# fleetkit verify probe",
        _PROBE_PRELUDE,
        "fk hostname uname -n",
        f"fk bacalhau_binary timeout {PROBE_TIMEOUT} {q(expected.bacalhau_binary)} "
        "version --client --output json",
        f"fk bacalhau_config cat {q(expected.bacalhau_config)}",
        f"fk bacalhau_service {_service_look(expected, 'bacalhau', 'bacalhau.service')}",
        f"fk bacalhau_agent fk_http http://127.0.0.1:{api_port}/api/v1/agent/alive",
    ]
    if role != "control_plane":
        lines += [
            "fk osquery_package dpkg-query -W -f='${Version}' osquery",
            f"fk osqueryd_service {_service_look(expected, 'osqueryd', 'osqueryd.service')}",
            f"fk osquery_socket fk_socket {q(expected.socket)}",
            f"fk osquery_probe timeout {PROBE_TIMEOUT} osqueryi --connect={q(expected.socket)} "
            f"--json {q(PROBE_SQL)}",
            f"fk osquery_flags cat {q(expected.flags_file)}",
        ]
        if expected.container_engine != "skip":
            lines.append("fk container_engine fk_docker")
    lines.append("fk_done")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class ClusterView:
    """The orchestrator's answers, gathered once for the whole report."""

    url: str
    alive: bool
    version: str | None = None
    nodes: tuple[NodeState, ...] | None = None
    #: Why the orchestrator could not be asked (None when it answered).
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.nodes is not None


def observe_cluster(client: BacalhauClient) -> ClusterView:
    url = client.base_url
    try:
        alive = client.alive()
    except OrchestratorError as exc:
        return ClusterView(url, alive=False, error=str(exc))
    if not alive:
        return ClusterView(url, alive=False, error=f"no answer from {url}/api/v1/agent/alive")
    try:
        version = client.version().git_version
        nodes = tuple(client.nodes())
    except OrchestratorError as exc:
        return ClusterView(url, alive=True, error=str(exc))
    return ClusterView(url, alive=True, version=version, nodes=nodes)


# --------------------------------------------------------------------------- checks: SSH


def check_ssh(host: Host, error: BaseException | None, pinned: Iterable[str]) -> Check:
    keys = ", ".join(pinned) or "none"
    if error is None:
        return passed("ssh", f"connected as {host.user}@{host.endpoint}; pinned key {keys}")
    message = str(error.detail if isinstance(error, HostError) else error)
    if isinstance(error, HostKeyError):
        if "CHANGED" in message:
            fix = (
                f"confirm {host.name}'s new key out of band (console); if it was reinstalled, "
                f"delete its line from the project known_hosts and run: invoke onboard --host "
                f"{host.name} --address {host.address} --port {host.port}"
            )
        else:
            fix = (
                f"pin its key explicitly: invoke onboard --host {host.name} "
                f"--address {host.address} --port {host.port}"
            )
        return failed("ssh", message, fix)
    if "authentication failed" in message:
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


# --------------------------------------------------------------------------- checks: on host


def _missing_probe(name: str) -> Check:
    return skipped(name, "not checked: the probe script stopped before this step")


def check_osquery_package(host: str, probe: Probe | None, expected: Expected) -> Check:
    name = "osquery.package"
    if probe is None:
        return _missing_probe(name)
    version = probe.stdout.strip()
    if probe.ok and version == expected.osquery_version:
        return passed(name, f"osquery {version} installed (dpkg)")
    found = f"installed version {version}" if probe.ok and version else "not installed"
    return failed(
        name,
        f"{found}; expected {expected.osquery_version} (dpkg-query: {probe.said()})"
        if not probe.ok
        else f"{found}; expected {expected.osquery_version}",
        provision_fix(host),
    )


def _service_state(probe: Probe) -> tuple[str, bool]:
    words = probe.stdout.split()
    manager = words[0] if words else "?"
    return manager, "running" in words[1:]


def check_service(name: str, host: str, service: str, probe: Probe | None) -> Check:
    if probe is None:
        return _missing_probe(name)
    manager, running = _service_state(probe)
    how = "systemctl is-active" if manager == "systemd" else f"pidfile {RUN_DIR}/{service}.pid"
    if running:
        return passed(name, f"{service} running ({manager}: {how})")
    return failed(name, f"{service} is not running ({manager}: {how})", provision_fix(host))


def check_socket(host: str, probe: Probe | None, expected: Expected) -> Check:
    """The extensions socket; provisioning restarts a daemon that runs without it."""
    name = "osquery.socket"
    if probe is None:
        return _missing_probe(name)
    if probe.ok:
        return passed(name, f"{expected.socket} is a unix socket")
    return failed(name, f"{expected.socket}: {probe.said()}", provision_fix(host))


def check_probe_query(host: str, probe: Probe | None, expected: Expected) -> Check:
    name = "osquery.probe"
    if probe is None:
        return _missing_probe(name)
    shown = f"osqueryi --connect={expected.socket} --json {PROBE_SQL!r}"
    if probe.exit_code == 124:
        return failed(
            name,
            f"{shown} hung for {PROBE_TIMEOUT}s",
            f"restart osqueryd on {host}: {provision_fix(host)}",
        )
    if not probe.ok:
        return failed(
            name, f"{shown} -> exit {probe.exit_code}: {probe.said()}", provision_fix(host)
        )
    try:
        rows = parse_osqueryi_json(probe.stdout.encode())
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


def check_flags(host: str, probe: Probe | None, expected: Expected) -> Check:
    name = "osquery.flags"
    if probe is None:
        return _missing_probe(name)
    if not probe.ok:
        return failed(name, f"{expected.flags_file}: {probe.said()}", provision_fix(host))
    flags = parse_flags(probe.stdout)
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
        return failed(name, f"{expected.flags_file}: {'; '.join(problems)}", provision_fix(host))
    shown = ",".join(sorted(tables))
    return passed(
        name,
        f"{expected.flags_file}: --disable_tables={shown} --extensions_socket={expected.socket}",
    )


def parse_client_version(text: str) -> str | None:
    """``bacalhau version --client`` output (JSON or the table) -> ``v1.9.3``."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        client = data.get("clientVersion") or data.get("ClientVersion") or data
        if isinstance(client, dict) and client.get("GitVersion"):
            return str(client["GitVersion"])
    for line in text.splitlines():
        for word in line.split():
            if word.startswith("v") and word[1:2].isdigit():
                return word
    return None


def check_bacalhau_binary(host: str, probe: Probe | None, expected: Expected) -> Check:
    name = "bacalhau.binary"
    if probe is None:
        return _missing_probe(name)
    shown = f"{expected.bacalhau_binary} version --client"
    if probe.exit_code == 127:
        return failed(name, f"{expected.bacalhau_binary} is not installed", provision_fix(host))
    if not probe.ok:
        return failed(name, f"{shown}: {probe.said()}", provision_fix(host))
    version = parse_client_version(probe.stdout)
    if version == expected.bacalhau_version:
        return passed(name, f"{shown} -> {version}")
    return failed(
        name,
        f"{shown} -> {version or 'unreadable output'}; expected {expected.bacalhau_version}",
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


def check_bacalhau_config(
    host: Host, probe: Probe | None, expected: Expected, control_plane: Host | None
) -> Check:
    """The agent's config holds what makes a node join and serve queries.

    The token is compared, never shown: a wrong token is the one fault the
    orchestrator cannot report (the node simply never appears).
    """
    name = "bacalhau.config"
    path = expected.bacalhau_config
    if probe is None:
        return _missing_probe(name)
    if not probe.ok:
        return failed(name, f"{path}: {probe.said()}", provision_fix(host.name))
    try:
        config = yaml.safe_load(probe.stdout)
    except yaml.YAMLError:
        return failed(name, f"{path} is not valid YAML", provision_fix(host.name))
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
        if control_plane is not None:
            wanted = nats_url(control_plane.address, expected.nats_port)
            if not any(o in (wanted, wanted.removeprefix("nats://")) for o in orchestrators):
                problems.append(f"Compute.Orchestrators is {orchestrators or '[]'}, not {wanted}")
        shown = (
            f"token matches bacalhau.node_token; allow-list {allowed}; "
            f"orchestrators {orchestrators}"
        )
    if problems:
        return failed(name, f"{path}: {'; '.join(problems)}", provision_fix(host.name))
    return passed(name, f"{path}: {shown}")


def check_agent(host: str, service: Probe | None, alive: Probe | None, api_port: int) -> Check:
    name = "bacalhau.agent"
    if service is None or alive is None:
        return _missing_probe(name)
    manager, running = _service_state(service)
    url = f"http://127.0.0.1:{api_port}/api/v1/agent/alive"
    answer = alive.stdout.strip()
    try:
        status = json.loads(answer).get("Status") if alive.ok else None
    except (ValueError, AttributeError):
        status = None
    if running and str(status).upper() == "OK":
        return passed(name, f"bacalhau running ({manager}); GET {url} (on the node) -> {answer}")
    parts = ["bacalhau is not running" if not running else f"bacalhau running ({manager})"]
    parts.append(f"GET {url} (on the node): {answer[:120] or alive.said()}")
    return failed(name, "; ".join(parts), provision_fix(host))


def check_container_engine(host: str, probe: Probe | None, expected: Expected) -> Check:
    name = "container.engine"
    if expected.container_engine == "skip":
        return skipped(name, "not required (settings bacalhau.container_engine: skip)")
    if probe is None:
        return _missing_probe(name)
    if probe.ok:
        return passed(name, f"docker answers: {probe.stdout.strip()}")
    fix = (
        provision_fix(host)
        if expected.container_engine == "install"
        else f"install Docker on {host} (apt-get install docker.io) or set "
        "bacalhau.container_engine: install and " + provision_fix(host)
    )
    return failed(name, f"docker: {probe.said()}", fix)


# --------------------------------------------------------------------------- checks: cluster


def cluster_checks(
    host: Host, node: NodeState | None, cluster: ClusterView, expected: Expected
) -> list[Check]:
    """What the orchestrator says about one compute host."""
    names = [
        "cluster.node",
        "cluster.approved",
        "cluster.labels",
        "cluster.features",
        "cluster.version",
    ]
    if not cluster.answered:
        return [
            skipped(n, f"not checked: orchestrator unavailable ({cluster.error})") for n in names
        ]
    if node is None:
        known = len(cluster.nodes or ())
        first = failed(
            "cluster.node",
            f"{host.name} is not in the orchestrator's node list ({known} nodes known): its "
            "agent never joined (wrong token, wrong orchestrator address, agent down)",
            provision_fix(host.name),
        )
        return [first] + [
            skipped(n, "not checked: the node is not in the cluster") for n in names[1:]
        ]
    return [
        _check_connected(host.name, node),
        _check_membership(host.name, node),
        _check_labels(host, node),
        _check_features(host.name, node, expected),
        _check_node_version(host.name, node, expected),
    ]


def _check_connected(host: str, node: NodeState) -> Check:
    if node.is_connected:
        return passed(
            "cluster.node",
            f"node {node.node_id} CONNECTED since {node.connected_since or '?'} "
            f"(last heartbeat {node.last_heartbeat or '?'})",
        )
    since = f" since {node.disconnected_since}" if node.disconnected_since else ""
    return failed(
        "cluster.node",
        f"node {node.node_id} is {node.connection or 'in no connection state'}{since} "
        f"(last heartbeat {node.last_heartbeat or 'never'})",
        f"start its agent: {provision_fix(host)}",
    )


def _check_membership(host: str, node: NodeState) -> Check:
    if node.is_approved:
        return passed("cluster.approved", f"membership {node.membership}")
    if node.membership.upper() == "PENDING":
        fix = "run: invoke nodes --approve"
    else:
        fix = (
            f"{host} was rejected at the orchestrator; if it belongs to the fleet, approve it "
            f"there (bacalhau node approve {node.node_id})"
        )
    return failed("cluster.approved", f"membership {node.membership or 'unknown'}", fix)


def _check_labels(host: Host, node: NodeState) -> Check:
    wrong = {k: v for k, v in host.labels.items() if node.labels.get(k) != v}
    if not wrong:
        shown = ",".join(f"{k}={v}" for k, v in sorted(host.labels.items())) or "(none)"
        return passed("cluster.labels", f"inventory labels present: {shown}")
    detail = ", ".join(
        f"{k}={v} (node has {node.labels[k]!r})" if k in node.labels else f"{k}={v} (absent)"
        for k, v in sorted(wrong.items())
    )
    return failed(
        "cluster.labels", f"node lacks inventory labels: {detail}", provision_fix(host.name)
    )


def _check_features(host: str, node: NodeState, expected: Expected) -> Check:
    missing = node.advertises(engine="docker", storage="local", publisher=expected.publisher)
    wanted = "engine docker, storage local" + (
        f", publisher {expected.publisher}" if expected.publisher else ""
    )
    if not missing:
        return passed("cluster.features", f"advertises {wanted}")
    reasons = []
    for item in missing:
        if item.startswith("storage"):
            reasons.append(
                f"no local storage: Compute.AllowListedLocalPaths must list {expected.socket_dir}"
            )
        elif item.startswith("publisher"):
            reasons.append("no s3 publisher: the agent has no AWS credentials (/etc/bacalhau/env)")
        else:
            reasons.append(f"no {item}: the container engine is missing")
    return failed(
        "cluster.features",
        f"does not advertise {', '.join(missing)} ({'; '.join(reasons)}); query jobs skip it",
        provision_fix(host),
    )


def _check_node_version(host: str, node: NodeState, expected: Expected) -> Check:
    if node.version == expected.bacalhau_version:
        return passed("cluster.version", f"agent reports {node.version}")
    return failed(
        "cluster.version",
        f"agent reports {node.version or 'no version'}; expected {expected.bacalhau_version}",
        provision_fix(host),
    )


def orchestrator_checks(
    control_plane: Host | None, cluster: ClusterView, expected: Expected, compute: Sequence[Host]
) -> list[Check]:
    """The control plane as the admin machine sees it: API alive, one version everywhere.

    Versions are compared with the compute hosts being verified (the --hosts
    selection), so a scoped run is not failed by a node it was not asked about.
    """
    name = control_plane.name if control_plane else None
    fix = provision_fix(name) if name else "start the orchestrator at bacalhau.orchestrator_url"
    if not cluster.alive:
        return [
            failed(
                "orchestrator.api", f"{cluster.error}", fix + " (or check the address/firewall)"
            ),
            skipped("orchestrator.version", "not checked: orchestrator unavailable"),
        ]
    if not cluster.answered:
        return [
            failed("orchestrator.api", f"alive, but: {cluster.error}", fix),
            skipped("orchestrator.version", "not checked: orchestrator unavailable"),
        ]
    api = passed("orchestrator.api", f"GET {cluster.url}/api/v1/agent/alive -> OK")
    return [api, _check_versions(cluster, expected, compute)]


def _check_versions(cluster: ClusterView, expected: Expected, compute: Sequence[Host]) -> Check:
    problems = []
    if cluster.version != expected.bacalhau_version:
        problems.append(
            f"orchestrator runs {cluster.version or 'an unknown version'}, settings pin "
            f"{expected.bacalhau_version}"
        )
    drift = []
    for host in compute:
        node = find_node(cluster.nodes or (), host.name)
        if node is not None and node.version != cluster.version:
            drift.append(f"{host.name} runs {node.version or 'an unknown version'}")
    if drift:
        problems.append(f"compute nodes differ from the orchestrator: {', '.join(drift)}")
    if problems:
        hosts = [h.name for h in compute if any(d.startswith(h.name + " ") for d in drift)]
        target = ",".join(hosts) if hosts and cluster.version == expected.bacalhau_version else ""
        fix = f"run: invoke provision --hosts {target}" if target else "run: invoke provision"
        return failed("orchestrator.version", "; ".join(problems), fix)
    return passed(
        "orchestrator.version",
        f"{cluster.version} on the orchestrator, in the settings and on every compute node seen",
    )


# --------------------------------------------------------------------------- one host


@dataclass(frozen=True)
class Gathered:
    """What SSH produced for one host: facts, or the error that stopped it."""

    facts: HostFacts | None
    error: BaseException | None


def host_checks(
    host: Host,
    gathered: Gathered,
    expected: Expected,
    *,
    pinned: Iterable[str],
    control_plane: Host | None,
) -> list[Check]:
    """Every on-host check of one host, from its facts (no I/O)."""
    api_port = host.bacalhau_api_port or expected.api_port
    checks = [check_ssh(host, gathered.error, pinned)]
    names = ["bacalhau.binary", "bacalhau.config", "bacalhau.agent"]
    if not host.is_control_plane:
        names = ["osquery.package", "osqueryd.running", "osquery.socket", "osquery.probe"]
        names += ["osquery.flags", "bacalhau.binary", "bacalhau.config", "bacalhau.agent"]
        names += ["container.engine"]
    if gathered.facts is None:
        return checks + [skipped(n, "not checked: no SSH session") for n in names]
    f = gathered.facts.get
    if host.is_control_plane:
        return [
            *checks,
            check_bacalhau_binary(host.name, f("bacalhau_binary"), expected),
            check_bacalhau_config(host, f("bacalhau_config"), expected, control_plane),
            check_agent(host.name, f("bacalhau_service"), f("bacalhau_agent"), api_port),
        ]
    daemon = check_service("osqueryd.running", host.name, "osqueryd", f("osqueryd_service"))
    return [
        *checks,
        check_osquery_package(host.name, f("osquery_package"), expected),
        daemon,
        check_socket(host.name, f("osquery_socket"), expected),
        check_probe_query(host.name, f("osquery_probe"), expected),
        check_flags(host.name, f("osquery_flags"), expected),
        check_bacalhau_binary(host.name, f("bacalhau_binary"), expected),
        check_bacalhau_config(host, f("bacalhau_config"), expected, control_plane),
        check_agent(host.name, f("bacalhau_service"), f("bacalhau_agent"), api_port),
        check_container_engine(host.name, f("container_engine"), expected),
    ]


def build_report(
    hosts: Sequence[Host],
    gathered: Mapping[str, Gathered],
    cluster: ClusterView,
    expected: Expected,
    *,
    control_plane: Host | None,
    pinned: Callable[[Host], list[str]],
) -> VerifyReport:
    """Assemble the report from facts already gathered (pure: the tests call it directly)."""
    reports: list[HostReport] = []
    compute = [h for h in hosts if not h.is_control_plane]
    cp_selected = control_plane is not None and any(h.name == control_plane.name for h in hosts)
    api = orchestrator_checks(control_plane, cluster, expected, compute)
    if not cp_selected:
        name = control_plane.name if control_plane else "orchestrator"
        endpoint = control_plane.endpoint if control_plane else cluster.url
        reports.append(HostReport(name, "control_plane", endpoint, tuple(api)))
    for host in hosts:
        if not (host.is_control_plane or host.is_compute):
            why = "in neither control_plane nor compute: fleetkit manages nothing here"
            reports.append(HostReport(host.name, host.role, host.endpoint, (skipped("role", why),)))
            continue
        got = gathered.get(host.name, Gathered(None, RuntimeError("not checked")))
        checks = host_checks(host, got, expected, pinned=pinned(host), control_plane=control_plane)
        node_id = None
        if host.is_control_plane:
            checks += api
        else:
            hostname = got.facts.hostname if got.facts else None
            node = find_node(cluster.nodes or (), host.name, hostname)
            node_id = node.node_id if node else None
            checks += cluster_checks(host, node, cluster, expected)
        reports.append(HostReport(host.name, host.role, host.endpoint, tuple(checks), node_id))
    return VerifyReport(tuple(reports), cluster.url)


# --------------------------------------------------------------------------- I/O


def gather(rt: Runtime, host: Host, expected: Expected) -> HostFacts:
    """Run the probe script on one host over SSH (raises the SSH error)."""
    role = "control_plane" if host.is_control_plane else "compute"
    script = probe_script(expected, role=role, api_port=host.bacalhau_api_port or expected.api_port)
    with rt.connector.connect(host) as remote:
        result = remote.run(f"sh -c {shlex.quote(script)}", timeout=SCRIPT_TIMEOUT)
    facts = parse_probe_output(result.stdout)
    if not facts.probes:
        raise SSHError(
            host.name, f"the probe script printed nothing usable: {result.err.strip()[:200]}"
        )
    return facts


def verify(rt: Runtime, hosts: Sequence[Host]) -> VerifyReport:
    """Check ``hosts`` (and the orchestrator); progress on stderr, no report printed."""
    settings = rt.settings
    expected = Expected.from_settings(settings)
    control_plane = rt.inventory.control_plane
    client = BacalhauClient.from_runtime(rt)
    cluster = observe_cluster(client)
    total = sum(1 for h in hosts if h.is_control_plane or h.is_compute)
    done = 0

    def on_done(outcome: Outcome[HostFacts]) -> None:
        nonlocal done
        done += 1
        rt.env.progress(f"verify: {done}/{total} hosts probed")

    outcomes = fan_out(
        [h for h in hosts if h.is_control_plane or h.is_compute],
        lambda h: gather(rt, h, expected),
        parallelism=settings.ssh.parallelism,
        on_done=on_done,
    )
    if total:
        rt.env.end_progress()
    gathered = {o.host.name: Gathered(o.value, o.error) for o in outcomes}

    def pinned(host: Host) -> list[str]:
        keys = rt.known_hosts.lookup(host.address, host.port)
        return [f"{kind} {fingerprint(key)}" for kind, key in sorted(keys.items())]

    return build_report(
        hosts, gathered, cluster, expected, control_plane=control_plane, pinned=pinned
    )


# --------------------------------------------------------------------------- output

_MARK = {Verdict.PASS: "ok", Verdict.FAIL: "FAIL", Verdict.SKIP: "skip"}


def render_table(report: VerifyReport) -> str:
    """The human report: one line per check, the fix under each failure, a summary."""
    rows = [(h.name, c) for h in report.hosts for c in h.checks]
    host_w = max([len("HOST"), *(len(name) for name, _ in rows)])
    check_w = max([len("CHECK"), *(len(c.name) for _, c in rows)])
    lines = [f"{'HOST':<{host_w}}  {'CHECK':<{check_w}}  {'RESULT':<6}  EVIDENCE"]
    previous = None
    for name, check in rows:
        shown = name if name != previous else ""
        previous = name
        lines.append(
            f"{shown:<{host_w}}  {check.name:<{check_w}}  {_MARK[check.verdict]:<6}  "
            f"{check.evidence}"
        )
        if check.fix:
            lines.append(f"{'':<{host_w}}  {'':<{check_w}}  {'':<6}  fix: {check.fix}")
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def summary_line(report: VerifyReport) -> str:
    bad = [h for h in report.hosts if not h.ready]
    if not bad:
        return f"verify: all {len(report.hosts)} hosts ready"
    named = "; ".join(f"{h.name} ({', '.join(c.name for c in h.failures)})" for h in bad)
    return f"verify: {len(bad)} of {len(report.hosts)} hosts NOT ready: {named}"


def run(rt: Runtime, *, hosts: str, as_json: bool) -> ExitStatus:
    """``invoke verify``: table on stderr (or JSON on stdout); 0 only when every check passes."""
    rt.load()
    selected = rt.inventory.select(parse_hosts_option(hosts))
    report = verify(rt, selected)
    emit_report(
        rt.env,
        as_json=as_json,
        data=report.to_json(),
        summary=summary_line(report),
        table=render_table(report),
    )
    return report.exit_status
