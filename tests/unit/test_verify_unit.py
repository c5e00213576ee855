"""verify, nodes and onboard without hosts: checks as data, reports, refusals.

The checks are pure judges of what a host's probe read and what the
orchestrator answered, so every verdict, evidence and fix a user would read is
asserted here without a lab. Host outputs go through the real fact parsers;
the probe's encoding is exercised by running it for real (read-only).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
import pytest

from fleetkit.clients.bacalhau import NodeState
from fleetkit.clients.ssh import HostKeyError, KeyProblem, SSHError, fingerprint
from fleetkit.commands import nodes as nodes_mod
from fleetkit.commands import onboard as onboard_mod
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import COMPUTE, CONTROL_PLANE, Host
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.status import ExitStatus, UsageError
from fleetkit.hostfacts.facts import Fact, FactView, Raw
from fleetkit.hostfacts.probe import build_probe, read_results, shell_command
from fleetkit.hostfacts.roles import RoleContext, plan_for
from fleetkit.hostfacts.roles import bacalhau as bacalhau_role
from fleetkit.hostfacts.roles import osquery as osquery_role
from fleetkit.hostfacts.steps import PlanContext
from fleetkit.readiness import host_checks
from fleetkit.readiness.catalog import CHECKS, Need, checks_for, evaluate, probe_facts, probe_script
from fleetkit.readiness.cluster import ClusterView, observe_cluster
from fleetkit.readiness.engine import Gathered, build_report, looks_for
from fleetkit.readiness.expected import Expected
from fleetkit.readiness.model import CheckVerdict, Subject, VerifyReport
from fleetkit.readiness.render import render_table, summary_line
from fleetkit.runtime import Runtime

TOKEN = "unit-test-node-token-0123456789"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return write_workdir(tmp_path)


def write_workdir(tmp_path: Path) -> Path:
    """A minimal fleetkit setup: settings, a secret, an inventory of 1 + 2 hosts."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "node_token").write_text(TOKEN + "\n")
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "fleet.yaml").write_text(
        "control_plane:\n"
        "  hosts:\n"
        "    orch-1: {address: 10.0.0.1}\n"
        "compute:\n"
        "  vars:\n"
        "    labels: {role: osquery}\n"
        "  hosts:\n"
        "    node-1: {address: 10.0.0.11, labels: {env: prod}}\n"
        "    node-2: {address: 10.0.0.12, labels: {env: prod}}\n"
    )
    sha = "0" * 64
    (tmp_path / "fleetkit.yaml").write_text(
        "osquery:\n"
        f"  package: {{source: packages/osquery.deb, sha256: '{sha}'}}\n"
        "bacalhau:\n"
        f"  package: {{source: packages/bacalhau.tgz, sha256: '{sha}'}}\n"
        "  node_token: {file: secrets/node_token}\n"
        "  container_engine: skip\n"
    )
    return tmp_path


def make_runtime(workdir: Path, stdin: str = "") -> Runtime:
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        stdin=io.StringIO(stdin),
        environ={},
        cwd=str(workdir),
    )
    return Runtime(env=env)


@pytest.fixture
def rt(workdir: Path) -> Runtime:
    return make_runtime(workdir)


@pytest.fixture
def expected(rt: Runtime) -> Expected:
    return Expected.from_settings(rt.settings)


@pytest.fixture
def context(rt: Runtime) -> RoleContext:
    return RoleContext(settings=rt.settings, inventory=rt.inventory, renderer=Renderer(None))


def host(rt: Runtime, name: str) -> Host:
    found = rt.inventory.get(name)
    assert found is not None
    return found


def node_json(
    node_id: str,
    *,
    labels: dict[str, str] | None = None,
    membership: str = "APPROVED",
    status: str = "CONNECTED",
    version: str = "v1.9.3",
    storage: tuple[str, ...] = ("urlDownload", "inline", "s3", "local", "localDirectory"),
    node_type: str = "Compute",
) -> dict[str, Any]:
    """One NodeState in the v1.9 wire shape."""
    return {
        "Info": {
            "NodeID": node_id,
            "NodeType": node_type,
            "Labels": {"os_type": "linux", "name": node_id, **(labels or {})},
            "ComputeNodeInfo": {
                "ExecutionEngines": ["docker"],
                "Publishers": ["noop", "local"],
                "StorageSources": list(storage),
            },
            "BacalhauVersion": {"Major": "1", "Minor": "9", "GitVersion": version},
        },
        "Membership": membership,
        "Connection": status,
        "ConnectionState": {
            "Status": status,
            "LastHeartbeat": "2026-11-27T06:00:01Z",
            "ConnectedSince": "2026-11-27T05:00:00Z",
            "DisconnectedSince": "2026-11-27T06:00:04Z" if status != "CONNECTED" else None,
        },
    }


def node(node_id: str, **kwargs: Any) -> NodeState:
    return NodeState.from_json(node_json(node_id, **kwargs))


def file_raw(text: str, mode: str = "600") -> Raw:
    """What the file fact prints for an existing file."""
    return Raw(0, f"{mode} root root\n{text}".encode())


def out(text: str, code: int = 0, err: str = "") -> Raw:
    return Raw(code, text.encode(), err.encode())


def healthy_raws(rt: Runtime, context: RoleContext, name: str) -> dict[str, Raw]:
    """What each fact's command prints on a host provisioned from the real templates."""
    h = host(rt, name)
    raws = {
        "hostname": out(name + "\n"),
        "bacalhau_binary": out(
            json.dumps({"clientVersion": {"Major": "1", "GitVersion": "v1.9.3"}})
        ),
        "bacalhau": out("start-stop-daemon running disabled\n"),
        "agent": out('{"Status":"OK"}'),
    }
    if h.is_control_plane:
        raws["bacalhau_config"] = file_raw(bacalhau_role.orchestrator_config(h, context))
    else:
        raws |= {
            "bacalhau_config": file_raw(bacalhau_role.compute_config(h, context)),
            "osquery_package": out("ii 5.23.1-1.linux"),
            "osqueryd": out("start-stop-daemon running disabled\n"),
            "socket": out("srwxr-xr-x 1 root root 0 /var/osquery/osquery.em\n"),
            "probe_query": out(
                "Connected to extension socket /var/osquery/osquery.em for debugging\n"
                '[\n  {"ok":"1"}\n]\n'
            ),
            "flags": file_raw(osquery_role.flags_content(h, context), "644"),
            "node_metadata": file_raw(metadata_text(name)),
        }
    return raws


def metadata_text(node_name: str) -> str:
    """A Bacalhau v1.9 ``system_metadata.yaml`` whose persisted name is ``node_name``."""
    return (
        "RepoVersion: 4\nInstanceID: i-0123\nLastUpdateCheck: 1970-01-01T00:00:00Z\n"
        f"NodeName: {node_name}\n"
    )


def healthy_facts(rt: Runtime, context: RoleContext, name: str, **override: Raw) -> FactView:
    """The host's facts, parsed by the real facts from what their commands print.

    ``override`` replaces what one fact printed, by its name in :class:`Looks`.
    """
    looks = looks_for(host(rt, name), Expected.from_settings(rt.settings))
    raws = healthy_raws(rt, context, name) | override
    facts: dict[Fact[Any], Raw] = {getattr(looks, key): raw for key, raw in raws.items()}
    return FactView.parsed(facts)


def healthy_labels(name: str) -> dict[str, str]:
    """What a node provisioned by fleetkit for host ``name`` carries (machine named alike)."""
    return {"role": "osquery", "env": "prod", "fleetkit-host": name, "fleetkit-hostname": name}


def healthy_cluster(version: str = "v1.9.3", **per_node: dict[str, Any]) -> ClusterView:
    """node-1 and node-2 as provisioned; ``per_node`` changes them or adds nodes (their
    ``labels`` are merged into :func:`healthy_labels`)."""
    base = {name: node_json(name, labels=healthy_labels(name)) for name in ("node-1", "node-2")}
    for name, changes in per_node.items():
        labels = {**healthy_labels(name), **changes.get("labels", {})}
        base[name] = node_json(name, **{**changes, "labels": labels})
    nodes = tuple(NodeState.from_json(n) for n in base.values())
    return ClusterView("http://10.0.0.1:1234", alive=True, version=version, nodes=nodes)


def report_for(
    rt: Runtime,
    context: RoleContext,
    *,
    facts: dict[str, Gathered] | None = None,
    cluster: ClusterView | None = None,
) -> VerifyReport:
    hosts = list(rt.inventory.hosts)
    gathered = {h.name: Gathered(healthy_facts(rt, context, h.name), None) for h in hosts}
    gathered.update(facts or {})
    return build_report(
        hosts,
        gathered,
        cluster or healthy_cluster(),
        Expected.from_settings(rt.settings),
        control_plane=rt.inventory.control_plane,
        pinned=lambda h: ["ssh-ed25519 SHA256:abc"],
    )


def only_failures(report: VerifyReport) -> dict[str, list[str]]:
    return {h.name: [c.name for c in h.failures] for h in report.hosts if h.failures}


def subject(rt: Runtime, expected: Expected, name: str = "node-1") -> Subject:
    """The world one judge sees, for calling a judge directly."""
    h = host(rt, name)
    return Subject(
        host=h,
        expected=expected,
        looks=looks_for(h, expected),
        facts=FactView(),
        ssh_error=None,
        cluster=healthy_cluster(),
        node=None,
        control_plane=rt.inventory.control_plane,
        compute=[],
    )


# --------------------------------------------------------------------------- probe encoding


@dataclass(frozen=True)
class Cmd(Fact[Raw]):
    """Any command as a fact (to exercise the probe's encoding)."""

    text: str

    def command(self) -> str:
        return self.text

    def parse(self, raw: Raw) -> Raw:
        return raw


def run_probe(*facts: Fact[Any]) -> dict[Fact[Any], Raw]:
    """Run a probe for real on this machine and read its answer back."""
    probe = build_probe(list(facts))
    done = subprocess.run(
        ["sh", "-c", shell_command(probe.script)], capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return probe.results(done.stdout)


def test_probe_results_carry_any_output_exit_code_and_stderr() -> None:
    multi = Cmd("printf 'line one\\nline two \\0 with a NUL\\n'")
    failing = Cmd("echo oops >&2; exit 3")
    silent = Cmd("true")
    found = run_probe(multi, failing, silent)
    assert found[multi] == Raw(0, b"line one\nline two \0 with a NUL\n", b"")
    assert found[failing] == Raw(3, b"", b"oops\n")
    assert found[silent] == Raw(0, b"", b"")


def test_garbage_instead_of_the_tar_stream_gives_no_facts() -> None:
    assert read_results(b"Welcome to the host!\n") == {}
    assert read_results(b"") == {}


def test_probe_script_quotes_paths_and_probes_only_what_the_role_needs(
    expected: Expected,
) -> None:
    compute = probe_script(expected, role="compute", api_port=4321)
    plane = probe_script(expected, role="control_plane", api_port=1234)
    assert "timeout 20 osqueryi --connect=/var/osquery/osquery.em --json" in compute
    assert "http://127.0.0.1:4321/api/v1/agent/alive" in compute
    assert "osquery" not in plane
    assert "docker" not in compute  # settings say skip
    assert TOKEN not in compute and TOKEN not in plane


# --------------------------------------------------------------------------- healthy


def test_healthy_fleet_passes_every_check(rt: Runtime, context: RoleContext) -> None:
    report = report_for(rt, context)
    assert only_failures(report) == {}
    assert report.ready and report.exit_status == ExitStatus.SUCCESS
    node1 = report.host("node-1")
    assert node1 is not None and node1.node_id == "node-1"
    names = [c.name for c in node1.checks]
    for wanted in (
        "ssh",
        "osquery.package",
        "osqueryd.running",
        "osquery.socket",
        "osquery.probe",
        "osquery.flags",
        "bacalhau.binary",
        "bacalhau.config",
        "bacalhau.agent",
        "cluster.node",
        "cluster.identity",
        "cluster.approved",
        "cluster.labels",
        "cluster.features",
        "cluster.version",
    ):
        assert wanted in names
    engine = node1.check("container.engine")
    assert engine is not None and engine.verdict is CheckVerdict.SKIP
    orch = report.host("orch-1")
    assert orch is not None
    assert orch.check("orchestrator.api") is not None
    assert orch.check("orchestrator.version").passed  # type: ignore[union-attr]


def test_table_and_json_say_ready_and_never_show_the_token(
    rt: Runtime, context: RoleContext
) -> None:
    report = report_for(rt, context)
    table = render_table(report)
    assert table.splitlines()[0].split() == ["HOST", "CHECK", "RESULT", "EVIDENCE"]
    assert table.rstrip().endswith("verify: all 3 hosts ready")
    data = json.loads(json.dumps(report.to_json()))
    assert data["ready"] is True and data["failed"] == []
    assert TOKEN not in table and TOKEN not in json.dumps(data)


# --------------------------------------------------------------------------- each fault


def fault(rt: Runtime, context: RoleContext, name: str, **raws: Raw) -> VerifyReport:
    facts = healthy_facts(rt, context, name, **raws)
    return report_for(rt, context, facts={name: Gathered(facts, None)})


def test_osqueryd_stopped_names_daemon_socket_and_probe(rt: Runtime, context: RoleContext) -> None:
    report = fault(
        rt,
        context,
        "node-2",
        osqueryd=out("start-stop-daemon stopped disabled\n"),
        socket=out("", 1, "no such file\n"),
        probe_query=out("", 1, "Error: cannot connect to /var/osquery/osquery.em\n"),
    )
    assert only_failures(report) == {
        "node-2": ["osqueryd.running", "osquery.socket", "osquery.probe"]
    }
    daemon = report.host("node-2").check("osqueryd.running")  # type: ignore[union-attr]
    assert daemon is not None
    assert "osqueryd is not running" in daemon.evidence
    assert "pidfile /run/fleetkit/osqueryd.pid" in daemon.evidence
    assert daemon.fix == "run: invoke provision --hosts node-2"
    assert report.exit_status == ExitStatus.FAILURE


def test_socket_removed_under_a_running_daemon_says_provision(
    rt: Runtime, context: RoleContext
) -> None:
    report = fault(
        rt,
        context,
        "node-1",
        socket=out("", 1, "no such file\n"),
        probe_query=out("Connected to extension socket\n", 1, "Error: no socket\n"),
    )
    assert only_failures(report) == {"node-1": ["osquery.socket", "osquery.probe"]}
    sock = report.host("node-1").check("osquery.socket")  # type: ignore[union-attr]
    assert sock is not None and sock.fix is not None
    assert "/var/osquery/osquery.em: no such file" in sock.evidence
    # provision restarts a running osqueryd whose socket is gone
    assert sock.fix == "run: invoke provision --hosts node-1"


def test_probe_output_that_is_not_the_expected_row_fails(rt: Runtime, expected: Expected) -> None:
    s = subject(rt, expected)
    wrong = host_checks.check_probe_query(s, out('[\n  {"ok":"2"}\n]\n'))
    garbage = host_checks.check_probe_query(s, out("hello"))
    hung = host_checks.check_probe_query(s, out("", 124))
    assert wrong.failed and "expected" in wrong.evidence
    assert garbage.failed and "no JSON array" in garbage.evidence
    assert hung.failed and "hung" in hung.evidence


def test_flags_file_edited_names_the_table(rt: Runtime, context: RoleContext) -> None:
    flags = osquery_role.flags_content(host(rt, "node-1"), context)
    edited = flags.replace("curl,", "").replace("--extensions_socket=", "--extensions_socket=/x")
    report = fault(rt, context, "node-1", flags=file_raw(edited, "644"))
    assert only_failures(report) == {"node-1": ["osquery.flags"]}
    check = report.host("node-1").check("osquery.flags")  # type: ignore[union-attr]
    assert check is not None
    assert "--disable_tables lacks curl" in check.evidence
    assert "--extensions_socket is '/x/var/osquery/osquery.em'" in check.evidence
    assert check.fix == "run: invoke provision --hosts node-1"


def test_flags_that_disable_more_tables_are_named_too(rt: Runtime, expected: Expected) -> None:
    tables = ",".join(sorted(expected.disabled_tables | {"users"}))
    text = f"--extensions_socket={expected.socket}\n--disable_tables={tables}\n"
    check = host_checks.check_flags(
        subject(rt, expected), looks_for(host(rt, "node-1"), expected).flags.parse(file_raw(text))
    )
    assert check.failed and "also disables users" in check.evidence


def test_agent_stopped_fails_on_the_node(rt: Runtime, context: RoleContext) -> None:
    report = fault(
        rt,
        context,
        "node-1",
        bacalhau=out("start-stop-daemon stopped disabled\n"),
        agent=out("", 7, "curl: (7) Failed to connect to 127.0.0.1 port 1234\n"),
    )
    assert only_failures(report) == {"node-1": ["bacalhau.agent"]}
    agent = report.host("node-1").check("bacalhau.agent")  # type: ignore[union-attr]
    assert agent is not None
    assert "bacalhau is not running" in agent.evidence and "Failed to connect" in agent.evidence


def test_wrong_token_is_named_without_showing_either_token(
    rt: Runtime, context: RoleContext
) -> None:
    config = bacalhau_role.compute_config(host(rt, "node-2"), context)
    wrong = config.replace(TOKEN, "some-other-token-value-xyz")
    cluster = healthy_cluster()
    cluster = ClusterView(
        cluster.url,
        alive=True,
        version="v1.9.3",
        nodes=tuple(n for n in cluster.nodes or () if n.node_id != "node-2"),
    )
    facts = healthy_facts(rt, context, "node-2", bacalhau_config=file_raw(wrong))
    report = report_for(rt, context, facts={"node-2": Gathered(facts, None)}, cluster=cluster)
    assert only_failures(report) == {"node-2": ["bacalhau.config", "cluster.node"]}
    cfg = report.host("node-2").check("bacalhau.config")  # type: ignore[union-attr]
    assert cfg is not None and "Compute.Auth.Token differs" in cfg.evidence
    text = render_table(report)
    assert "not in the orchestrator's node list" in text
    assert TOKEN not in text and "some-other-token-value-xyz" not in text


def test_allow_list_missing_is_named_on_host_and_at_orchestrator(
    rt: Runtime, context: RoleContext
) -> None:
    config = bacalhau_role.compute_config(host(rt, "node-1"), context)
    without = re.sub(r"  AllowListedLocalPaths:\n    - .*\n", "", config)
    assert without != config
    facts = healthy_facts(rt, context, "node-1", bacalhau_config=file_raw(without))
    cluster = healthy_cluster(**{"node-1": {"storage": ("urlDownload", "inline", "s3")}})
    report = report_for(rt, context, facts={"node-1": Gathered(facts, None)}, cluster=cluster)
    assert only_failures(report) == {"node-1": ["bacalhau.config", "cluster.features"]}
    features = report.host("node-1").check("cluster.features")  # type: ignore[union-attr]
    assert features is not None
    assert "storage local" in features.evidence and "/var/osquery" in features.evidence


def test_version_drift_names_the_node_on_it_and_at_the_control_plane(
    rt: Runtime, context: RoleContext
) -> None:
    facts = healthy_facts(rt, context, "node-2", bacalhau_binary=out("CLIENT\nv1.9.2\n"))
    cluster = healthy_cluster(**{"node-2": {"version": "v1.9.2"}})
    report = report_for(rt, context, facts={"node-2": Gathered(facts, None)}, cluster=cluster)
    assert only_failures(report) == {
        "orch-1": ["orchestrator.version"],
        "node-2": ["bacalhau.binary", "cluster.version"],
    }
    binary = report.host("node-2").check("bacalhau.binary")  # type: ignore[union-attr]
    assert binary is not None and "v1.9.2; expected v1.9.3" in binary.evidence
    versions = report.host("orch-1").check("orchestrator.version")  # type: ignore[union-attr]
    assert versions is not None and "node-2 runs v1.9.2" in versions.evidence
    assert versions.fix == "run: invoke provision --hosts node-2"


def test_osquery_package_versions(rt: Runtime, expected: Expected) -> None:
    s, fact = subject(rt, expected), looks_for(host(rt, "node-1"), expected).osquery_package
    ok = host_checks.check_osquery_package(s, fact.parse(out("ii 5.23.1-1.linux")))
    old = host_checks.check_osquery_package(s, fact.parse(out("ii 5.22.0-1.linux")))
    absent = host_checks.check_osquery_package(
        s, fact.parse(out("", 1, "dpkg-query: no packages found matching osquery\n"))
    )
    assert ok.passed
    assert (
        old.failed and "installed version 5.22.0-1.linux; expected 5.23.1-1.linux" in old.evidence
    )
    assert absent.failed and "not installed" in absent.evidence


def test_unreachable_host_fails_ssh_and_skips_the_rest(rt: Runtime, context: RoleContext) -> None:
    error = SSHError("node-1", "cannot connect to 10.0.0.11:22: connection refused")
    report = report_for(rt, context, facts={"node-1": Gathered(None, error)})
    node1 = report.host("node-1")
    assert node1 is not None
    assert [c.name for c in node1.failures] == ["ssh"]
    ssh = node1.checks[0]
    assert "connection refused" in ssh.evidence
    assert ssh.fix is not None and "start sshd on node-1" in ssh.fix
    skipped = [c for c in node1.checks if c.verdict is CheckVerdict.SKIP]
    assert any(c.name == "osquery.probe" for c in skipped)
    # The orchestrator still answers for it.
    assert node1.check("cluster.node").passed  # type: ignore[union-attr]
    assert report.exit_status == ExitStatus.FAILURE
    assert "node-1 (ssh)" in summary_line(report)


def test_host_key_errors_point_at_onboarding(rt: Runtime, expected: Expected) -> None:
    s = subject(rt, expected)
    unknown = host_checks.check_ssh(
        replace(s, ssh_error=HostKeyError("node-1", "host key for x is not pinned"))
    )
    changed = host_checks.check_ssh(
        replace(
            s,
            ssh_error=HostKeyError("node-1", "HOST KEY CHANGED", problem=KeyProblem.CHANGED),
        )
    )
    assert unknown.fix is not None and "invoke onboard --host node-1" in unknown.fix
    assert changed.fix is not None and "out of band" in changed.fix


def test_orchestrator_down_fails_api_and_skips_cluster_checks(
    rt: Runtime, context: RoleContext
) -> None:
    down = ClusterView("http://10.0.0.1:1234", alive=False, error="no answer from x")
    report = report_for(rt, context, cluster=down)
    assert only_failures(report) == {"orch-1": ["orchestrator.api"]}
    node1 = report.host("node-1")
    assert node1 is not None
    assert node1.check("cluster.node").verdict is CheckVerdict.SKIP  # type: ignore[union-attr]
    assert report.exit_status == ExitStatus.FAILURE


def test_disconnected_pending_and_label_drift(rt: Runtime, context: RoleContext) -> None:
    cluster = healthy_cluster(
        **{
            "node-1": {"status": "DISCONNECTED"},
            "node-2": {"membership": "PENDING", "labels": {"role": "osquery", "env": "dev"}},
        }
    )
    report = report_for(rt, context, cluster=cluster)
    assert only_failures(report) == {
        "node-1": ["cluster.node"],
        "node-2": ["cluster.approved", "cluster.labels"],
    }
    lost = report.host("node-1").check("cluster.node")  # type: ignore[union-attr]
    assert lost is not None and "DISCONNECTED since 2026-11-27T06:00:04Z" in lost.evidence
    pending = report.host("node-2").check("cluster.approved")  # type: ignore[union-attr]
    assert pending is not None and pending.fix == "run: invoke nodes --approve"
    labels = report.host("node-2").check("cluster.labels")  # type: ignore[union-attr]
    assert labels is not None and "env=prod (node has 'dev')" in labels.evidence


def test_selected_compute_host_still_gets_the_orchestrator_row(
    rt: Runtime, context: RoleContext
) -> None:
    h = host(rt, "node-1")
    report = build_report(
        [h],
        {"node-1": Gathered(healthy_facts(rt, context, "node-1"), None)},
        healthy_cluster(),
        Expected.from_settings(rt.settings),
        control_plane=rt.inventory.control_plane,
        pinned=lambda _: [],
    )
    assert [r.name for r in report.hosts] == ["orch-1", "node-1"]
    orch = report.hosts[0]
    assert [c.name for c in orch.checks] == ["orchestrator.api", "orchestrator.version"]


def test_docker_required_by_settings_is_checked(rt: Runtime, expected: Expected) -> None:
    need = replace(expected, container_engine="verify")
    s = replace(subject(rt, expected), expected=need)
    missing = host_checks.check_container_engine(s, out("", 127, "docker: command not found"))
    present = host_checks.check_container_engine(s, out("server 24.0.7\n"))
    assert missing.failed and missing.fix is not None and "docker.io" in missing.fix
    assert present.passed
    assert "docker version --format" in probe_script(need, role="compute", api_port=1)


def test_bad_hosts_option_is_exit_2_before_any_contact(workdir: Path) -> None:
    """Moved from the lab: an unknown --hosts name is bad input, nothing is contacted."""
    from fleetkit.cli import run_command
    from fleetkit.commands import verify as verify_command
    from tests.unit.test_settings import NoContact

    rt = make_runtime(workdir)
    rt.__dict__["connector"] = NoContact()  # cached_property: this instance wins
    status = run_command(lambda r: verify_command.run(r, hosts="nosuch", as_json=False), rt)
    stderr = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
    assert status == ExitStatus.BAD_INPUT
    assert "unknown host or group 'nosuch'" in stderr
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- hostile nodes


def test_escape_codes_from_a_node_are_shown_not_obeyed(rt: Runtime, context: RoleContext) -> None:
    report = fault(
        rt,
        context,
        "node-1",
        agent=out("", 7, "curl: \x1b]0;owned\x07\x1b[2Jfailed\r\n"),
        bacalhau=out("start-stop-daemon stopped\n"),
    )
    table = render_table(report)
    assert "\x1b" not in table and "\x07" not in table and "\r" not in table
    assert "\\x1b]0;owned\\x07\\x1b[2Jfailed" in table
    agent = report.host("node-1").check("bacalhau.agent")  # type: ignore[union-attr]
    assert agent is not None and "\x1b]0;owned" in agent.evidence  # the JSON keeps exact values


def test_a_yaml_bomb_or_a_huge_config_on_a_node_fails_its_check(
    rt: Runtime, context: RoleContext
) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    report = fault(rt, context, "node-1", bacalhau_config=file_raw(bomb))
    config = report.host("node-1").check("bacalhau.config")  # type: ignore[union-attr]
    assert config is not None and config.failed and len(config.evidence) <= 500
    huge = Raw(0, b"600 root root\n" + b"x" * (256 * 1024 + 1))
    report = fault(rt, context, "node-1", bacalhau_config=huge)
    config = report.host("node-1").check("bacalhau.config")  # type: ignore[union-attr]
    assert config is not None and config.failed and "larger than" in config.evidence


def test_a_probe_that_stopped_early_skips_what_it_did_not_read(
    rt: Runtime, context: RoleContext
) -> None:
    looks = looks_for(host(rt, "node-1"), Expected.from_settings(rt.settings))
    full = healthy_raws(rt, context, "node-1")
    partial = FactView.parsed(
        {getattr(looks, k): raw for k, raw in full.items() if k not in ("flags", "agent")}
    )
    report = report_for(rt, context, facts={"node-1": Gathered(partial, None)})
    node1 = report.host("node-1")
    assert node1 is not None
    for name in ("osquery.flags", "bacalhau.agent"):
        check = node1.check(name)
        assert check is not None and check.verdict is CheckVerdict.SKIP
        assert "probe script stopped" in check.evidence


# --------------------------------------------------------------------------- the catalog


def test_every_check_is_named_once_and_reading_facts_means_needing_ssh(
    expected: Expected,
) -> None:
    names = [spec.name for spec in CHECKS]
    assert len(names) == len(set(names))
    looks = looks_for(host_of_role(COMPUTE), expected)
    for spec in CHECKS:
        if spec.facts(looks):
            assert Need.SSH in spec.needs, spec.name


def host_of_role(role: str) -> Host:
    return Host("h", "10.0.0.9", groups=(role,))


@pytest.mark.parametrize("role", [COMPUTE, CONTROL_PLANE])
@pytest.mark.parametrize("engine", ["skip", "verify"])
def test_the_probe_reads_exactly_the_facts_of_the_declared_checks(
    expected: Expected, role: str, engine: str
) -> None:
    settings = replace(expected, container_engine=engine)
    looks = looks_for(host_of_role(role), settings)
    declared: set[Fact[Any]] = {looks.hostname} if role == COMPUTE else set()
    for spec in checks_for(role):
        if spec.required(settings) is None:
            declared |= set(spec.facts(looks))
    probe = build_probe(probe_facts(role, settings, looks))
    assert set(probe.keys.values()) == declared
    script = probe_script(settings, role=role, api_port=settings.api_port)
    assert script.count("\nfk f") == len(declared)
    assert ("docker version" in script) == (role == COMPUTE and engine == "verify")


def test_every_judge_answers_for_its_own_check(
    rt: Runtime, context: RoleContext, expected: Expected
) -> None:
    """Each judge gets the facts its declaration names (run on a healthy host)."""
    for name in ("orch-1", "node-1"):
        h = host(rt, name)
        s = _subject(rt, expected, h.name, facts=healthy_facts(rt, context, name))
        for spec in checks_for(CONTROL_PLANE if h.is_control_plane else COMPUTE):
            result = evaluate(spec, s)
            assert result.name == spec.name
            assert result.verdict is not CheckVerdict.FAIL, result


def _subject(
    rt: Runtime,
    expected: Expected,
    name: str,
    *,
    facts: FactView | None,
    cluster: ClusterView | None = None,
    with_node: bool = True,
) -> Subject:
    h = host(rt, name)
    cluster = cluster or healthy_cluster()
    node = next((n for n in cluster.nodes or () if n.node_id == name), None)
    return Subject(
        host=h,
        expected=expected,
        looks=looks_for(h, expected),
        facts=facts,
        ssh_error=None if facts is not None else OSError("connection refused"),
        cluster=cluster,
        node=node if with_node else None,
        control_plane=rt.inventory.control_plane,
        compute=[host(rt, "node-1"), host(rt, "node-2")],
    )


def verdicts(s: Subject) -> dict[str, tuple[CheckVerdict, str]]:
    return {spec.name: _short(evaluate(spec, s)) for spec in checks_for(COMPUTE)}


def _short(result: Any) -> tuple[CheckVerdict, str]:
    return result.verdict, result.evidence


def test_skip_rules_follow_the_declared_dependencies(
    rt: Runtime, context: RoleContext, expected: Expected
) -> None:
    healthy = healthy_facts(rt, context, "node-1")
    no_ssh = verdicts(_subject(rt, expected, "node-1", facts=None))
    for spec in checks_for(COMPUTE):
        verdict, evidence = no_ssh[spec.name]
        if spec.required(expected) is not None:
            assert verdict is CheckVerdict.SKIP and "not required" in evidence
        elif Need.SSH in spec.needs:
            assert (verdict, evidence) == (CheckVerdict.SKIP, "not checked: no SSH session")
        else:
            assert verdict is not CheckVerdict.SKIP, spec.name
    down = ClusterView("http://o:1", alive=False, error="refused")
    no_orch = verdicts(_subject(rt, expected, "node-1", facts=healthy, cluster=down))
    for spec in checks_for(COMPUTE):
        if Need.ORCHESTRATOR in spec.needs:
            assert no_orch[spec.name] == (
                CheckVerdict.SKIP,
                "not checked: orchestrator unavailable (refused)",
            )
        else:
            assert no_orch[spec.name][1] != "not checked: orchestrator unavailable (refused)"
    no_node = verdicts(_subject(rt, expected, "node-1", facts=healthy, with_node=False))
    assert no_node["cluster.node"][0] is CheckVerdict.FAIL
    for spec in checks_for(COMPUTE):
        if Need.NODE in spec.needs:
            assert no_node[spec.name] == (
                CheckVerdict.SKIP,
                "not checked: the node is not in the cluster",
            )


def test_provision_and_verify_read_the_same_facts(
    rt: Runtime, context: RoleContext, expected: Expected
) -> None:
    """The host looks are written once: verify's facts are the ones provisioning plans with."""
    h = host(rt, "node-1")
    plan = plan_for(h, context)
    plan_context = PlanContext(host=h, service_manager=rt.settings.service_manager)
    provision_facts = {f for step in plan.steps for f in step.looks(plan_context)}
    looks = looks_for(h, expected)
    for shared in (looks.osquery_package, looks.osqueryd, looks.socket, looks.flags):
        assert shared in provision_facts, shared
    assert looks.bacalhau_config in provision_facts and looks.bacalhau in provision_facts


# --------------------------------------------------------------------------- nodes


def inventory_hosts(rt: Runtime) -> list[Host]:
    return list(rt.inventory.hosts)


def test_nodes_reconcile_names_rogue_missing_and_disconnected(rt: Runtime) -> None:
    cluster = [
        node("node-1", status="DISCONNECTED"),
        node("rogue-1"),
        node("old-rejected", membership="REJECTED"),
        node("orch-1", node_type="Requester"),
    ]
    view = nodes_mod.reconcile(inventory_hosts(rt), cluster)
    assert view.rogue == ["rogue-1"]
    assert view.missing == ["node-2"]
    assert [r.name for r in view.not_ready] == ["node-1"]
    lost = view.row("node-1")
    assert lost is not None and lost.since == "2026-11-27T06:00:04Z"
    rejected = view.row("old-rejected")
    assert rejected is not None and not rejected.rogue and not rejected.in_inventory
    assert view.row("orch-1") is None
    assert view.exit_status == ExitStatus.FAILURE
    now = datetime(2026, 11, 27, 6, 3, 14, tzinfo=UTC)
    table = nodes_mod.render_table(view, now=now)
    assert "ROGUE" in table and "rogue-1" in table
    assert "MISSING: in the inventory but not in the cluster: node-2" in table
    assert "disconnected since 2026-11-27T06:00:04Z (3m10s ago)" in table


def test_nodes_all_good_is_exit_0_and_fqdn_matches(rt: Runtime) -> None:
    cluster = [node("node-1.example.org"), node("node-2")]
    view = nodes_mod.reconcile(inventory_hosts(rt), cluster)
    assert view.rogue == [] and view.missing == [] and view.not_ready == []
    assert view.exit_status == ExitStatus.SUCCESS
    assert "matches the inventory" in nodes_mod.render_table(view)
    data = view.to_json()
    assert data["ok"] is True
    assert [n["node_id"] for n in data["nodes"]] == ["node-1.example.org", "node-2"]


class FakeClient:
    def __init__(self) -> None:
        self.approved: list[str] = []

    def approve_node(self, node_id: str, message: str = "") -> None:
        self.approved.append(node_id)


def test_approve_only_pending_nodes_of_the_inventory(rt: Runtime) -> None:
    cluster = [
        node("node-1", membership="PENDING"),
        node("node-2"),
        node("x", membership="PENDING"),
    ]
    view = nodes_mod.reconcile(inventory_hosts(rt), cluster)
    client = FakeClient()
    results = nodes_mod.approve_pending(client, view)  # type: ignore[arg-type]
    assert client.approved == ["node-1"]
    assert dict(results) == {"node-1": "approved", "x": "not approved: not in the inventory"}


# --------------------------------------------------------------------------- onboard


def test_labels_and_fingerprints_are_parsed() -> None:
    assert onboard_mod.parse_labels("role=osquery, env=lab") == {"role": "osquery", "env": "lab"}
    assert onboard_mod.parse_labels("") == {}
    with pytest.raises(UsageError, match="--labels"):
        onboard_mod.parse_labels("role")
    with pytest.raises(UsageError, match="given twice"):
        onboard_mod.parse_labels("a=1,a=2")
    assert onboard_mod.normalize_fingerprint("abc=") == "SHA256:abc"
    assert onboard_mod.normalize_fingerprint(" sha256:abc ") == "SHA256:abc"


def request(**changes: Any) -> onboard_mod.OnboardRequest:
    base: dict[str, Any] = {
        "name": "node-9",
        "address": "10.0.0.19",
        "port": 22,
        "user": "root",
        "labels": {},
        "fingerprint": None,
    }
    base.update(changes)
    return onboard_mod.OnboardRequest(**base)


def snapshot(workdir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "node-1", "address": "10.0.0.99"}, "already in the inventory at 10.0.0.11:22"),
        ({"name": "orch-1", "address": "10.0.0.1"}, "onboard adds compute nodes only"),
        ({"name": "node-1", "address": "10.0.0.11", "labels": {"env": "dev"}}, "edit that file"),
        ({"address": "10.0.0.12"}, "duplicate host"),
        ({"name": "bad name!"}, "invalid host name"),
        ({"labels": {"role": "has space"}}, "invalid label value"),
        ({"port": 70000}, "port must be an integer"),
    ],
)
def test_refusals_before_contact_write_nothing(
    workdir: Path, changes: dict[str, Any], message: str
) -> None:
    before = snapshot(workdir)
    rt = make_runtime(workdir)
    rt.load()
    with pytest.raises(UsageError, match=message) as caught:
        req = request(**changes)
        if onboard_mod.existing_entry(rt, req) is None:
            onboard_mod.validate_new_entry(rt, req)
    assert caught.value.exit_status == ExitStatus.BAD_INPUT
    assert snapshot(workdir) == before


def test_validation_errors_name_the_real_file(workdir: Path) -> None:
    rt = make_runtime(workdir)
    rt.load()
    with pytest.raises(UsageError) as caught:
        onboard_mod.validate_new_entry(rt, request(labels={"role": "has space"}))
    assert caught.value.file == str(workdir / "inventory" / "hosts.d" / "node-9.yaml")


def new_key() -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(_ed25519_pem()))


def _ed25519_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return raw.decode()


def test_fingerprint_mismatch_and_unconfirmed_keys_are_refused(workdir: Path) -> None:
    key = new_key()
    before = snapshot(workdir)
    rt = make_runtime(workdir)
    with pytest.raises(UsageError, match="host key mismatch") as caught:
        onboard_mod.confirm_key(rt, request(fingerprint="SHA256:" + "A" * 43), key)
    assert "Nothing was written" in str(caught.value)
    with pytest.raises(UsageError, match="not confirmed"):
        onboard_mod.confirm_key(make_runtime(workdir, stdin="no\n"), request(), key)
    assert snapshot(workdir) == before


def test_matching_fingerprint_or_yes_confirms(workdir: Path) -> None:
    key = new_key()
    offered = fingerprint(key)
    rt = make_runtime(workdir)
    assert onboard_mod.confirm_key(rt, request(fingerprint=offered), key) == offered
    assert offered in rt.env.stderr.getvalue()  # type: ignore[attr-defined]


class TerminalInput(io.StringIO):
    """stdin that says it is a terminal, so ``Environment.ask`` reads the answer."""

    def isatty(self) -> bool:
        return True


def test_typing_yes_on_a_terminal_confirms(workdir: Path) -> None:
    key = new_key()
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        stdin=TerminalInput("yes\n"),
        environ={},
        cwd=str(workdir),
    )
    rt = Runtime(env=env)
    assert onboard_mod.confirm_key(rt, request(), key) == fingerprint(key)
    prompt = env.stderr.getvalue()  # type: ignore[attr-defined]
    assert "Type 'yes' to pin it" in prompt and fingerprint(key) in prompt


def test_a_different_pinned_key_is_refused(workdir: Path) -> None:
    rt = make_runtime(workdir)
    rt.known_hosts.pin("10.0.0.19", 22, new_key())
    before = snapshot(workdir)
    other = new_key()
    with pytest.raises(UsageError, match="is pinned for it"):
        onboard_mod.confirm_key(rt, request(fingerprint=fingerprint(other)), other)
    assert snapshot(workdir) == before


def test_host_file_is_one_new_file_the_loader_reads(workdir: Path) -> None:
    rt = make_runtime(workdir)
    rt.load()
    req = request(labels={"role": "osquery", "extra": "yes"}, api_port=4444)
    path = onboard_mod.write_host_file(rt, req)
    assert path == workdir / "inventory" / "hosts.d" / "node-9.yaml"
    assert path.read_text().startswith("# Onboarded by fleetkit")
    rt.reload_inventory()
    added = rt.inventory.get("node-9")
    assert added is not None and added.is_compute
    assert added.labels == {"role": "osquery", "extra": "yes"}
    assert added.bacalhau_api_port == 4444
    # Re-running finds the same host: resume, nothing refused.
    assert onboard_mod.existing_entry(rt, req) == added


class ScriptedOrchestrator:
    """Stands in for BacalhauClient in observe_cluster: answers, or fails, as told."""

    display_url = "http://10.0.0.1:1234"

    def __init__(self, *, alive: bool | Exception = True, nodes: Exception | None = None) -> None:
        self._alive = alive
        self._nodes = nodes

    def alive(self) -> bool:
        if isinstance(self._alive, Exception):
            raise self._alive
        return self._alive

    def version(self) -> Any:
        from fleetkit.clients.bacalhau import AgentVersion

        return AgentVersion(1, 9, "v1.9.3")

    def nodes(self) -> list[NodeState]:
        if self._nodes is not None:
            raise self._nodes
        return [node("node-1")]


def test_observe_cluster_turns_every_orchestrator_failure_into_a_finding() -> None:
    from fleetkit.clients.bacalhau import OrchestratorError

    def observe(client: ScriptedOrchestrator) -> ClusterView:
        return observe_cluster(client)  # type: ignore[arg-type]

    fine = observe(ScriptedOrchestrator())
    assert fine.answered and fine.version == "v1.9.3"
    down = observe(ScriptedOrchestrator(alive=False))
    assert not down.alive and "no answer from http://10.0.0.1:1234" in (down.error or "")
    broken = observe(ScriptedOrchestrator(alive=OrchestratorError("500 boom")))
    assert not broken.alive and broken.error == "500 boom"
    refused = observe(ScriptedOrchestrator(nodes=OrchestratorError("refused (401)")))
    assert refused.alive and not refused.answered and refused.error == "refused (401)"


def test_nodes_summary_line_names_every_dangerous_set(rt: Runtime) -> None:
    view = nodes_mod.reconcile(
        inventory_hosts(rt), [node("node-1", status="DISCONNECTED"), node("x")]
    )
    line = nodes_mod.summary_line(view)
    assert line == "nodes: ROGUE: x; MISSING: node-2; NOT READY: node-1"


def test_hosts_without_a_fleetkit_role_are_listed_not_probed(
    rt: Runtime, context: RoleContext
) -> None:
    other = Host(name="mon-1", address="10.0.0.50", groups=("monitoring",))
    report = build_report(
        [*rt.inventory.hosts, other],
        {h.name: Gathered(healthy_facts(rt, context, h.name), None) for h in rt.inventory.hosts},
        healthy_cluster(),
        Expected.from_settings(rt.settings),
        control_plane=rt.inventory.control_plane,
        pinned=lambda _: [],
    )
    mon = report.host("mon-1")
    assert mon is not None and [c.verdict for c in mon.checks] == [CheckVerdict.SKIP]
    assert report.ready


def test_expectations_never_show_the_token(expected: Expected) -> None:
    assert expected.token == TOKEN
    assert TOKEN not in repr(expected)


def test_age_of_bacalhau_timestamps() -> None:
    now = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
    assert nodes_mod.age("2026-11-27T07:59:55.123456789Z", now) == "4s"
    assert nodes_mod.age("2026-11-27T05:30:00Z", now) == "2h30m"
    assert nodes_mod.age("0001-01-01T00:00:00Z", now) is None
    assert nodes_mod.age("yesterday", now) is None
