"""Checks made from the orchestrator's point of view: one node list for the whole report.

The orchestrator's API is asked from the admin machine, as every other
command does; its answers (node IDs, labels, versions) are hostile text like
any host's and are shown only as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetkit.clients.bacalhau import BacalhauClient, NodeState, OrchestratorError
from fleetkit.hostfacts.identity import machine_hostname
from fleetkit.readiness.model import CheckResult, Subject, failed, passed, provision_fix


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
    url = client.display_url
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


# --------------------------------------------------------------------------- one node


def check_node(s: Subject) -> CheckResult:
    host, node = s.target, s.node
    if node is None:
        conflicts = s.fleet.conflicts_of_host(host.name)
        if conflicts:
            return failed(
                "cluster.node",
                "identity conflict: " + "; ".join(c.describe() for c in conflicts),
                conflicts[0].fix(),
            )
        known = len(s.cluster.nodes or ())
        return failed(
            "cluster.node",
            f"{host.name} is not in the orchestrator's node list ({known} nodes known) under "
            f"its name or its fleetkit-host label: {_unlabelled_hint(s)}",
            provision_fix(host.name),
        )
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
        f"start its agent: {provision_fix(host.name)}",
    )


def _unlabelled_hint(s: Subject) -> str:
    """Why the host has no node: a stranger named like the machine, or it never joined."""
    facts, fact = s.facts, s.looks.hostname
    reported = machine_hostname(facts[fact]) if facts is not None and fact in facts else None
    stranger = next((n for n in s.fleet.strangers if reported and n.node_id == reported), None)
    if stranger is not None:
        return (
            f"node {stranger.node_id} (this machine's hostname) is, without fleetkit's "
            "labels (started by hand or by an older fleetkit); provisioning adds them"
        )
    return "its agent never joined (wrong token, wrong orchestrator address, agent down)"


def _node(s: Subject) -> NodeState:
    if s.node is None:
        raise RuntimeError("a node check was asked without the node (catalog: needs NODE)")
    return s.node


def check_membership(s: Subject) -> CheckResult:
    node = _node(s)
    if node.is_approved:
        return passed("cluster.approved", f"membership {node.membership}")
    if node.membership.upper() == "PENDING":
        fix = "run: invoke nodes --approve"
    else:
        fix = (
            f"{s.target.name} was rejected at the orchestrator; if it belongs to the fleet, "
            f"approve it there (bacalhau node approve {node.node_id})"
        )
    return failed("cluster.approved", f"membership {node.membership or 'unknown'}", fix)


def check_labels(s: Subject) -> CheckResult:
    host, node = s.target, _node(s)
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


def check_features(s: Subject) -> CheckResult:
    node, expected = _node(s), s.expected
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
        provision_fix(s.target.name),
    )


def check_node_version(s: Subject) -> CheckResult:
    node, wanted = _node(s), s.expected.bacalhau_version
    if node.version == wanted:
        return passed("cluster.version", f"agent reports {node.version}")
    return failed(
        "cluster.version",
        f"agent reports {node.version or 'no version'}; expected {wanted}",
        provision_fix(s.target.name),
    )


# --------------------------------------------------------------------------- the orchestrator


def _orchestrator_fix(s: Subject) -> str:
    cp = s.control_plane
    return provision_fix(cp.name) if cp else "start the orchestrator at bacalhau.orchestrator_url"


def check_api(s: Subject) -> CheckResult:
    """The control plane as the admin machine sees it: the API alive and answering."""
    cluster = s.cluster
    if not cluster.alive:
        fix = _orchestrator_fix(s) + " (or check the address/firewall)"
        return failed("orchestrator.api", f"{cluster.error}", fix)
    if not cluster.answered:
        return failed("orchestrator.api", f"alive, but: {cluster.error}", _orchestrator_fix(s))
    return passed("orchestrator.api", f"GET {cluster.url}/api/v1/agent/alive -> OK")


def check_versions(s: Subject) -> CheckResult:
    """One version everywhere: settings, orchestrator, and the compute hosts being verified.

    Versions are compared with the --hosts selection only, so a scoped run is
    not failed by a node it was not asked about.
    """
    cluster, expected = s.cluster, s.expected
    problems = []
    if cluster.version != expected.bacalhau_version:
        problems.append(
            f"orchestrator runs {cluster.version or 'an unknown version'}, settings pin "
            f"{expected.bacalhau_version}"
        )
    drifted = []
    for host in s.compute:
        member = s.fleet.member(host.name)
        node = member.node if member is not None else None
        if node is not None and node.version != cluster.version:
            drifted.append((host.name, f"{host.name} runs {node.version or 'an unknown version'}"))
    if drifted:
        listed = ", ".join(text for _, text in drifted)
        problems.append(f"compute nodes differ from the orchestrator: {listed}")
    if problems:
        only_nodes = drifted and cluster.version == expected.bacalhau_version
        target = ",".join(name for name, _ in drifted) if only_nodes else ""
        fix = f"run: invoke provision --hosts {target}" if target else "run: invoke provision"
        return failed("orchestrator.version", "; ".join(problems), fix)
    return passed(
        "orchestrator.version",
        f"{cluster.version} on the orchestrator, in the settings and on every compute node seen",
    )
