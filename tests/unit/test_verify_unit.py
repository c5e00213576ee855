"""verify, nodes and onboard without hosts: checks as data, reports, refusals.

The checks are plain functions of what a host printed and what the
orchestrator answered, so every verdict, evidence and fix a user would read is
asserted here without a lab. The probe script's encoding is exercised by
running its shell prelude for real (read-only, in a temp dir).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
import pytest

from fleetkit.clients.bacalhau import NodeState
from fleetkit.clients.ssh import HostKeyError, SSHError, fingerprint
from fleetkit.commands import nodes as nodes_mod
from fleetkit.commands import onboard as onboard_mod
from fleetkit.commands import verify as v
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.status import ExitStatus, UsageError
from fleetkit.hostfacts.roles import RoleContext
from fleetkit.hostfacts.roles import bacalhau as bacalhau_role
from fleetkit.hostfacts.roles import osquery as osquery_role
from fleetkit.runtime import Runtime

TOKEN = "unit-test-node-token-0123456789"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
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
def expected(rt: Runtime) -> v.Expected:
    return v.Expected.from_settings(rt.settings)


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


def healthy_facts(rt: Runtime, context: RoleContext, name: str, **override: v.Probe) -> v.HostFacts:
    """What the probe script prints on a host provisioned from the real templates."""
    h = host(rt, name)
    probes = {
        "hostname": v.Probe(0, name + "\n", ""),
        "bacalhau_binary": v.Probe(
            0, json.dumps({"clientVersion": {"Major": "1", "GitVersion": "v1.9.3"}}), ""
        ),
        "bacalhau_service": v.Probe(0, "start-stop-daemon running disabled\n", ""),
        "bacalhau_agent": v.Probe(0, '{"Status":"OK"}', ""),
    }
    if h.is_control_plane:
        probes["bacalhau_config"] = v.Probe(0, bacalhau_role.orchestrator_config(h, context), "")
    else:
        probes |= {
            "bacalhau_config": v.Probe(0, bacalhau_role.compute_config(h, context), ""),
            "osquery_package": v.Probe(0, "5.23.1-1.linux", ""),
            "osqueryd_service": v.Probe(0, "start-stop-daemon running disabled\n", ""),
            "osquery_socket": v.Probe(0, "srwxr-xr-x 1 root root 0 /var/osquery/osquery.em\n", ""),
            "osquery_probe": v.Probe(
                0,
                "Connected to extension socket /var/osquery/osquery.em for debugging\n"
                '[\n  {"ok":"1"}\n]\n',
                "",
            ),
            "osquery_flags": v.Probe(0, osquery_role.flags_content(h, context), ""),
        }
    probes.update(override)
    return v.HostFacts(probes)


def healthy_cluster(version: str = "v1.9.3", **per_node: dict[str, Any]) -> v.ClusterView:
    base = {
        "node-1": node_json("node-1", labels={"role": "osquery", "env": "prod"}),
        "node-2": node_json("node-2", labels={"role": "osquery", "env": "prod"}),
    }
    for name, changes in per_node.items():
        base[name] = node_json(name, **{"labels": {"role": "osquery", "env": "prod"}, **changes})
    nodes = tuple(NodeState.from_json(n) for n in base.values())
    return v.ClusterView("http://10.0.0.1:1234", alive=True, version=version, nodes=nodes)


def report_for(
    rt: Runtime,
    context: RoleContext,
    *,
    facts: dict[str, v.Gathered] | None = None,
    cluster: v.ClusterView | None = None,
) -> v.VerifyReport:
    hosts = list(rt.inventory.hosts)
    gathered = {h.name: v.Gathered(healthy_facts(rt, context, h.name), None) for h in hosts}
    gathered.update(facts or {})
    return v.build_report(
        hosts,
        gathered,
        cluster or healthy_cluster(),
        v.Expected.from_settings(rt.settings),
        control_plane=rt.inventory.control_plane,
        pinned=lambda h: ["ssh-ed25519 SHA256:abc"],
    )


def only_failures(report: v.VerifyReport) -> dict[str, list[str]]:
    return {h.name: [c.name for c in h.failures] for h in report.hosts if h.failures}


# --------------------------------------------------------------------------- probe encoding


def run_prelude(body: str) -> bytes:
    """Run the probe script's shell helpers for real with ``body`` and the closing tar."""
    script = v._PROBE_PRELUDE + body + "fk_done\n"
    done = subprocess.run(["sh", "-c", script], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_probe_results_carry_any_output_exit_code_and_stderr() -> None:
    facts = v.parse_probe_output(
        run_prelude(
            "fk multi printf 'line one\\nline two \\0 with a NUL\\n'\n"
            "fk failing sh -c 'echo oops >&2; exit 3'\n"
            "fk silent true\n"
        )
    )
    assert facts.get("multi") == v.Probe(0, "line one\nline two \0 with a NUL\n", "")
    assert facts.get("failing") == v.Probe(3, "", "oops\n")
    assert facts.get("silent") == v.Probe(0, "", "")
    assert facts.get("absent") is None


def test_garbage_instead_of_the_tar_stream_gives_no_facts() -> None:
    assert v.parse_probe_output(b"Welcome to the host!\n").probes == {}
    assert v.parse_probe_output(b"").probes == {}


def test_socket_helper_tells_socket_from_plain_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    out = run_prelude(f"fk a fk_socket {plain}\nfk b fk_socket {tmp_path / 'none'}\n")
    facts = v.parse_probe_output(out)
    a, b = facts.get("a"), facts.get("b")
    assert a is not None and a.exit_code == 2 and "not a socket" in a.stderr
    assert b is not None and b.exit_code == 1 and "no such file" in b.stderr


def test_probe_script_quotes_paths_and_probes_only_what_the_role_needs(
    expected: v.Expected,
) -> None:
    compute = v.probe_script(expected, role="compute", api_port=4321)
    plane = v.probe_script(expected, role="control_plane", api_port=1234)
    assert "fk osquery_probe timeout 20 osqueryi --connect=/var/osquery/osquery.em" in compute
    assert "http://127.0.0.1:4321/api/v1/agent/alive" in compute
    assert "osquery" not in plane.split("fk hostname", 1)[1]
    assert "container_engine" not in compute  # settings say skip
    assert TOKEN not in compute


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
        "cluster.approved",
        "cluster.labels",
        "cluster.features",
        "cluster.version",
    ):
        assert wanted in names
    engine = node1.check("container.engine")
    assert engine is not None and engine.verdict is v.Verdict.SKIP
    orch = report.host("orch-1")
    assert orch is not None
    assert orch.check("orchestrator.api") is not None
    assert orch.check("orchestrator.version").passed  # type: ignore[union-attr]


def test_table_and_json_say_ready_and_never_show_the_token(
    rt: Runtime, context: RoleContext
) -> None:
    report = report_for(rt, context)
    table = v.render_table(report)
    assert table.splitlines()[0].split() == ["HOST", "CHECK", "RESULT", "EVIDENCE"]
    assert table.rstrip().endswith("verify: all 3 hosts ready")
    data = json.loads(json.dumps(report.to_json()))
    assert data["ready"] is True and data["failed"] == []
    assert TOKEN not in table and TOKEN not in json.dumps(data)


# --------------------------------------------------------------------------- each fault


def fault(rt: Runtime, context: RoleContext, name: str, **probes: v.Probe) -> v.VerifyReport:
    facts = healthy_facts(rt, context, name, **probes)
    return report_for(rt, context, facts={name: v.Gathered(facts, None)})


def test_osqueryd_stopped_names_daemon_socket_and_probe(rt: Runtime, context: RoleContext) -> None:
    report = fault(
        rt,
        context,
        "node-2",
        osqueryd_service=v.Probe(0, "start-stop-daemon stopped disabled\n", ""),
        osquery_socket=v.Probe(1, "", "no such file\n"),
        osquery_probe=v.Probe(1, "", "Error: cannot connect to /var/osquery/osquery.em\n"),
    )
    assert only_failures(report) == {
        "node-2": ["osqueryd.running", "osquery.socket", "osquery.probe"]
    }
    daemon = report.host("node-2").check("osqueryd.running")  # type: ignore[union-attr]
    assert daemon is not None
    assert "osqueryd is not running" in daemon.evidence
    assert daemon.fix == "run: invoke provision --hosts node-2"
    assert report.exit_status == ExitStatus.FAILURE


def test_socket_removed_under_a_running_daemon_says_provision(
    rt: Runtime, context: RoleContext
) -> None:
    report = fault(
        rt,
        context,
        "node-1",
        osquery_socket=v.Probe(1, "", "no such file\n"),
        osquery_probe=v.Probe(1, "Connected to extension socket\n", "Error: no socket\n"),
    )
    assert only_failures(report) == {"node-1": ["osquery.socket", "osquery.probe"]}
    sock = report.host("node-1").check("osquery.socket")  # type: ignore[union-attr]
    assert sock is not None and sock.fix is not None
    assert "/var/osquery/osquery.em: no such file" in sock.evidence
    # provision restarts a running osqueryd whose socket is gone
    assert sock.fix == "run: invoke provision --hosts node-1"


def test_probe_output_that_is_not_the_expected_row_fails(expected: v.Expected) -> None:
    wrong = v.check_probe_query("n", v.Probe(0, '[\n  {"ok":"2"}\n]\n', ""), expected)
    garbage = v.check_probe_query("n", v.Probe(0, "hello", ""), expected)
    hung = v.check_probe_query("n", v.Probe(124, "", ""), expected)
    assert wrong.failed and "expected" in wrong.evidence
    assert garbage.failed and "no JSON array" in garbage.evidence
    assert hung.failed and "hung" in hung.evidence


def test_flags_file_edited_names_the_table(rt: Runtime, context: RoleContext) -> None:
    flags = osquery_role.flags_content(host(rt, "node-1"), context)
    edited = flags.replace("curl,", "").replace("--extensions_socket=", "--extensions_socket=/x")
    report = fault(rt, context, "node-1", osquery_flags=v.Probe(0, edited, ""))
    assert only_failures(report) == {"node-1": ["osquery.flags"]}
    check = report.host("node-1").check("osquery.flags")  # type: ignore[union-attr]
    assert check is not None
    assert "--disable_tables lacks curl" in check.evidence
    assert "--extensions_socket is '/x/var/osquery/osquery.em'" in check.evidence
    assert check.fix == "run: invoke provision --hosts node-1"


def test_flags_that_disable_more_tables_are_named_too(expected: v.Expected) -> None:
    tables = ",".join(sorted(expected.disabled_tables | {"users"}))
    text = f"--extensions_socket={expected.socket}\n--disable_tables={tables}\n"
    check = v.check_flags("n", v.Probe(0, text, ""), expected)
    assert check.failed and "also disables users" in check.evidence


def test_agent_stopped_fails_on_the_node(rt: Runtime, context: RoleContext) -> None:
    report = fault(
        rt,
        context,
        "node-1",
        bacalhau_service=v.Probe(0, "start-stop-daemon stopped disabled\n", ""),
        bacalhau_agent=v.Probe(7, "", "curl: (7) Failed to connect to 127.0.0.1 port 1234\n"),
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
    cluster = v.ClusterView(
        cluster.url,
        alive=True,
        version="v1.9.3",
        nodes=tuple(n for n in cluster.nodes or () if n.node_id != "node-2"),
    )
    facts = healthy_facts(rt, context, "node-2", bacalhau_config=v.Probe(0, wrong, ""))
    report = report_for(rt, context, facts={"node-2": v.Gathered(facts, None)}, cluster=cluster)
    assert only_failures(report) == {"node-2": ["bacalhau.config", "cluster.node"]}
    cfg = report.host("node-2").check("bacalhau.config")  # type: ignore[union-attr]
    assert cfg is not None and "Compute.Auth.Token differs" in cfg.evidence
    text = v.render_table(report)
    assert "not in the orchestrator's node list" in text
    assert TOKEN not in text and "some-other-token-value-xyz" not in text


def test_allow_list_missing_is_named_on_host_and_at_orchestrator(
    rt: Runtime, context: RoleContext
) -> None:
    config = bacalhau_role.compute_config(host(rt, "node-1"), context)
    without = re.sub(r"  AllowListedLocalPaths:\n    - .*\n", "", config)
    assert without != config
    facts = healthy_facts(rt, context, "node-1", bacalhau_config=v.Probe(0, without, ""))
    cluster = healthy_cluster(**{"node-1": {"storage": ("urlDownload", "inline", "s3")}})
    report = report_for(rt, context, facts={"node-1": v.Gathered(facts, None)}, cluster=cluster)
    assert only_failures(report) == {"node-1": ["bacalhau.config", "cluster.features"]}
    features = report.host("node-1").check("cluster.features")  # type: ignore[union-attr]
    assert features is not None
    assert "storage local" in features.evidence and "/var/osquery" in features.evidence


def test_version_drift_names_the_node_on_it_and_at_the_control_plane(
    rt: Runtime, context: RoleContext
) -> None:
    facts = healthy_facts(
        rt,
        context,
        "node-2",
        bacalhau_binary=v.Probe(0, "CLIENT\nv1.9.2\n", ""),
    )
    cluster = healthy_cluster(**{"node-2": {"version": "v1.9.2"}})
    report = report_for(rt, context, facts={"node-2": v.Gathered(facts, None)}, cluster=cluster)
    assert only_failures(report) == {
        "orch-1": ["orchestrator.version"],
        "node-2": ["bacalhau.binary", "cluster.version"],
    }
    binary = report.host("node-2").check("bacalhau.binary")  # type: ignore[union-attr]
    assert binary is not None and "v1.9.2; expected v1.9.3" in binary.evidence
    versions = report.host("orch-1").check("orchestrator.version")  # type: ignore[union-attr]
    assert versions is not None and "node-2 runs v1.9.2" in versions.evidence
    assert versions.fix == "run: invoke provision --hosts node-2"


def test_osquery_package_versions(expected: v.Expected) -> None:
    ok = v.check_osquery_package("n", v.Probe(0, "5.23.1-1.linux", ""), expected)
    old = v.check_osquery_package("n", v.Probe(0, "5.22.0-1.linux", ""), expected)
    absent = v.check_osquery_package(
        "n", v.Probe(1, "", "dpkg-query: no packages found matching osquery\n"), expected
    )
    assert ok.passed
    assert (
        old.failed and "installed version 5.22.0-1.linux; expected 5.23.1-1.linux" in old.evidence
    )
    assert absent.failed and "not installed" in absent.evidence


def test_client_version_read_from_json_or_table() -> None:
    js = json.dumps({"clientVersion": {"Major": "1", "Minor": "9", "GitVersion": "v1.9.3"}})
    assert v.parse_client_version(js) == "v1.9.3"
    assert v.parse_client_version("CLIENT\nv1.9.3\n") == "v1.9.3"
    assert v.parse_client_version("Error: unknown flag: --output") is None


def test_unreachable_host_fails_ssh_and_skips_the_rest(rt: Runtime, context: RoleContext) -> None:
    error = SSHError("node-1", "cannot connect to 10.0.0.11:22: connection refused")
    report = report_for(rt, context, facts={"node-1": v.Gathered(None, error)})
    node1 = report.host("node-1")
    assert node1 is not None
    assert [c.name for c in node1.failures] == ["ssh"]
    ssh = node1.checks[0]
    assert "connection refused" in ssh.evidence
    assert ssh.fix is not None and "start sshd on node-1" in ssh.fix
    skipped = [c for c in node1.checks if c.verdict is v.Verdict.SKIP]
    assert any(c.name == "osquery.probe" for c in skipped)
    # The orchestrator still answers for it.
    assert node1.check("cluster.node").passed  # type: ignore[union-attr]
    assert report.exit_status == ExitStatus.FAILURE
    assert "node-1 (ssh)" in v.summary_line(report)


def test_host_key_errors_point_at_onboarding(rt: Runtime) -> None:
    h = host(rt, "node-1")
    unknown = v.check_ssh(h, HostKeyError("node-1", "host key for x is not pinned"), [])
    changed = v.check_ssh(h, HostKeyError("node-1", "HOST KEY CHANGED for x"), [])
    assert unknown.fix is not None and "invoke onboard --host node-1" in unknown.fix
    assert changed.fix is not None and "out of band" in changed.fix


def test_orchestrator_down_fails_api_and_skips_cluster_checks(
    rt: Runtime, context: RoleContext
) -> None:
    down = v.ClusterView("http://10.0.0.1:1234", alive=False, error="no answer from x")
    report = report_for(rt, context, cluster=down)
    assert only_failures(report) == {"orch-1": ["orchestrator.api"]}
    node1 = report.host("node-1")
    assert node1 is not None
    assert node1.check("cluster.node").verdict is v.Verdict.SKIP  # type: ignore[union-attr]
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
    report = v.build_report(
        [h],
        {"node-1": v.Gathered(healthy_facts(rt, context, "node-1"), None)},
        healthy_cluster(),
        v.Expected.from_settings(rt.settings),
        control_plane=rt.inventory.control_plane,
        pinned=lambda _: [],
    )
    assert [r.name for r in report.hosts] == ["orch-1", "node-1"]
    orch = report.hosts[0]
    assert [c.name for c in orch.checks] == ["orchestrator.api", "orchestrator.version"]


def test_docker_required_by_settings_is_checked(expected: v.Expected) -> None:
    from dataclasses import replace

    need = replace(expected, container_engine="verify")
    missing = v.check_container_engine("n", v.Probe(127, "", "docker: command not found"), need)
    present = v.check_container_engine("n", v.Probe(0, "server 24.0.7\n", ""), need)
    assert missing.failed and missing.fix is not None and "docker.io" in missing.fix
    assert present.passed
    assert "fk container_engine fk_docker" in v.probe_script(need, role="compute", api_port=1)


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

    base_url = "http://10.0.0.1:1234"

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

    def observe(client: ScriptedOrchestrator) -> v.ClusterView:
        return v.observe_cluster(client)  # type: ignore[arg-type]

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
    report = v.build_report(
        [*rt.inventory.hosts, other],
        {h.name: v.Gathered(healthy_facts(rt, context, h.name), None) for h in rt.inventory.hosts},
        healthy_cluster(),
        v.Expected.from_settings(rt.settings),
        control_plane=rt.inventory.control_plane,
        pinned=lambda _: [],
    )
    mon = report.host("mon-1")
    assert mon is not None and [c.verdict for c in mon.checks] == [v.Verdict.SKIP]
    assert report.ready


def test_expectations_never_show_the_token(expected: v.Expected) -> None:
    assert expected.token == TOKEN
    assert TOKEN not in repr(expected)


def test_age_of_bacalhau_timestamps() -> None:
    now = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
    assert nodes_mod.age("2026-11-27T07:59:55.123456789Z", now) == "4s"
    assert nodes_mod.age("2026-11-27T05:30:00Z", now) == "2h30m"
    assert nodes_mod.age("0001-01-01T00:00:00Z", now) is None
    assert nodes_mod.age("yesterday", now) is None
