"""The identity rule: which node is which inventory host (pure), and what verify and nodes say.

One mapping (:func:`fleetkit.hostfacts.identity.map_fleet`) is read by nodes,
verify and the Bacalhau transport; these tests hold it to the rule: the
``fleetkit-host`` label or the node ID claims a host, a node claiming nothing
is a stranger, and ambiguity is an error, never merged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetkit.clients.bacalhau import NodeState
from fleetkit.commands import nodes as nodes_mod
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.status import ExitStatus
from fleetkit.hostfacts.identity import (
    Claim,
    ConflictKind,
    machine_hostname,
    map_fleet,
)
from fleetkit.hostfacts.roles import RoleContext
from fleetkit.readiness.engine import Gathered
from fleetkit.readiness.model import CheckVerdict
from fleetkit.readiness.render import render_table, summary_line
from fleetkit.runtime import Runtime
from tests.unit.test_verify_unit import (
    file_raw,
    healthy_cluster,
    healthy_facts,
    make_runtime,
    metadata_text,
    out,
    report_for,
    write_workdir,
)

COMPUTE = ("compute",)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    """orch-1 + node-1, node-2 (tests/unit/test_verify_unit.py's setup)."""
    return make_runtime(write_workdir(tmp_path))


@pytest.fixture
def context(rt: Runtime) -> RoleContext:
    return RoleContext(settings=rt.settings, inventory=rt.inventory, renderer=Renderer(None))


def hosts(*names: str) -> list[Host]:
    return [Host(name, f"10.0.0.{i}", groups=COMPUTE) for i, name in enumerate(names, 1)]


def node(node_id: str, host: str | None = None, machine: str | None = None, **kw: Any) -> NodeState:
    labels = dict(kw.pop("labels", {}))
    if host is not None:
        labels["fleetkit-host"] = host
    if machine is not None:
        labels["fleetkit-hostname"] = machine
    return NodeState.from_json(
        {
            "Info": {
                "NodeID": node_id,
                "NodeType": kw.get("node_type", "Compute"),
                "Labels": labels,
            },
            "Membership": kw.get("membership", "APPROVED"),
            "ConnectionState": {"Status": kw.get("status", "CONNECTED")},
        }
    )


# --------------------------------------------------------------------------- the pure mapping


def test_a_node_is_its_host_by_label_whatever_its_id_and_by_id_without_a_label() -> None:
    fleet = map_fleet(
        hosts("web-1", "web-2", "web-9", "db-1"),
        [
            node("web-1", "web-1", "ip-10-0-1-1"),
            node("ip-10-0-1-29", "web-9", "ip-10-0-1-29"),  # joined under its hostname first
            node("web-2.example.org"),  # an older fleetkit's node: FQDN of the inventory name
            node("rogue-1"),
            node("orch-1", node_type="Requester"),  # not a compute node: not looked at
        ],
    )
    by_name = {m.name: (m.node_id, m.claim, m.hostname, m.joined_as_other) for m in fleet.members}
    assert by_name == {
        "web-1": ("web-1", Claim.LABEL, "ip-10-0-1-1", False),
        "web-2": ("web-2.example.org", Claim.NODE_ID, "web-2.example.org", True),
        "web-9": ("ip-10-0-1-29", Claim.LABEL, "ip-10-0-1-29", True),
    }
    assert [h.name for h in fleet.missing] == ["db-1"]
    assert [n.node_id for n in fleet.strangers] == ["rogue-1"]
    assert fleet.conflicts == ()
    member = fleet.member_of_node("ip-10-0-1-29")
    assert member is not None and member.name == "web-9"


def test_a_label_naming_no_inventory_host_claims_nothing() -> None:
    fleet = map_fleet(hosts("web-1"), [node("n-1234", "web-old"), node("web-1", "web-gone")])
    assert [n.node_id for n in fleet.strangers] == ["n-1234"]
    # web-1 still claims its host by its node ID (verify then flags the stale label).
    member = fleet.member("web-1")
    assert member is not None and member.claim is Claim.NODE_ID


def test_two_nodes_claiming_one_host_is_a_conflict_never_a_match() -> None:
    fleet = map_fleet(
        hosts("web-1", "web-9"),
        [
            node("web-1", "web-1"),
            node("ip-10-0-1-29", "web-9", status="DISCONNECTED"),  # stale after a rename
            node("web-9", "web-9"),
        ],
    )
    assert [m.name for m in fleet.members] == ["web-1"]
    [conflict] = fleet.conflicts
    assert conflict.kind is ConflictKind.SHARED_HOST
    assert conflict.hosts == ("web-9",) and conflict.node_ids == ("ip-10-0-1-29", "web-9")
    assert "2 nodes claim inventory host web-9" in conflict.describe()
    assert "bacalhau node delete" in conflict.fix() and "bacalhau node reject" in conflict.fix()
    assert fleet.missing == () and fleet.strangers == ()
    assert fleet.conflicted_hosts == ["web-9"]


def test_one_node_resolving_to_two_hosts_is_a_conflict() -> None:
    """Its node ID names one inventory host, its label another (two entries, one machine?)."""
    fleet = map_fleet(hosts("web-3", "web-9"), [node("web-3", "web-9")])
    [conflict] = fleet.conflicts
    assert conflict.kind is ConflictKind.SPLIT_NODE
    assert conflict.hosts == ("web-9", "web-3")
    assert conflict.describe() == (
        "node web-3 resolves to 2 inventory hosts: web-9 (its label) and web-3 (its node ID)"
    )
    assert "invoke verify --hosts web-9" in conflict.fix()
    assert fleet.members == () and fleet.missing == () and fleet.strangers == ()


def test_node_ids_match_exactly_first_then_as_fqdn() -> None:
    both = hosts("web-3", "web-3.dc2")
    assert map_fleet(both, [node("web-3")]).member("web-3") is not None
    # A short ID that is the short name of two inventory FQDNs is ambiguous: an error.
    fleet = map_fleet(hosts("web-3.dc1", "web-3.dc2"), [node("web-3")])
    assert [c.kind for c in fleet.conflicts] == [ConflictKind.SPLIT_NODE]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ip-10-0-1-29\n", "ip-10-0-1-29"),
        ("web-1.example.org.", "web-1.example.org"),
        ("ip-10-0-1-29." + "a" * 60 + ".internal", "ip-10-0-1-29"),
        ("bad name", None),
        ("\x1b[2Jowned", None),
        ("", None),
        (None, None),
        ("-leading", None),
    ],
)
def test_a_machine_hostname_is_only_taken_when_valid(raw: object, expected: str | None) -> None:
    assert machine_hostname(raw) == expected


# --------------------------------------------------------------------------- nodes


def test_nodes_lists_a_renamed_node_under_its_inventory_name_with_a_note(rt: Runtime) -> None:
    cluster = [node("node-1", "node-1", "node-1"), node("ip-10-0-0-12", "node-2", "ip-10-0-0-12")]
    view = nodes_mod.reconcile(list(rt.inventory.hosts), cluster)
    assert view.exit_status == ExitStatus.SUCCESS and view.rogue == [] and view.missing == []
    row = view.row("node-2")
    assert row is not None and row.node_id == "ip-10-0-0-12" and row.hostname == "ip-10-0-0-12"
    table = nodes_mod.render_table(view)
    assert "note: node-2 joined the cluster as ip-10-0-0-12" in table
    assert "invoke verify --hosts node-2" in table
    data = view.to_json()
    assert {"name": "node-2", "node_id": "ip-10-0-0-12", "matched_by": "label"}.items() <= next(
        n for n in data["nodes"] if n["name"] == "node-2"
    ).items()


def test_nodes_names_conflicts_as_errors_and_never_approves_them(rt: Runtime) -> None:
    cluster = [
        node("node-1", "node-1", membership="PENDING"),
        node("node-2", "node-2"),
        node("impostor", "node-2", membership="PENDING"),
    ]
    view = nodes_mod.reconcile(list(rt.inventory.hosts), cluster)
    assert view.exit_status == ExitStatus.FAILURE
    assert view.rogue == []  # in conflict, not a stranger
    assert [c.hosts for c in view.conflicts] == [("node-2",)]
    host_row = view.row("node-2")
    assert host_row is not None and host_row.standing is nodes_mod.Standing.CONFLICT
    table = nodes_mod.render_table(view)
    assert "CONFLICT: 2 nodes claim inventory host node-2: impostor by its label" in table
    assert "CONFLICT: node-2" in nodes_mod.summary_line(view)
    assert view.to_json()["conflicts"][0]["nodes"] == ["impostor", "node-2"]

    class Client:
        def __init__(self) -> None:
            self.approved: list[str] = []

        def approve_node(self, node_id: str, message: str = "") -> None:
            self.approved.append(node_id)

    client = Client()
    results = dict(nodes_mod.approve_pending(client, view))  # type: ignore[arg-type]
    assert client.approved == ["node-1"]
    assert results["impostor"] == "not approved: identity conflict (see below)"


def test_rogue_detection_still_names_a_node_without_the_label(rt: Runtime) -> None:
    cluster = [node("node-1", "node-1"), node("node-2", "node-2"), node("ip-10-9-9-9")]
    view = nodes_mod.reconcile(list(rt.inventory.hosts), cluster)
    assert view.rogue == ["ip-10-9-9-9"] and view.exit_status == ExitStatus.FAILURE


# --------------------------------------------------------------------------- verify


def renamed_cluster() -> Any:
    """node-2's agent joined as ip-10-0-0-12 before fleetkit named it (a persisted name)."""
    return healthy_cluster(
        **{
            "ip-10-0-0-12": {
                "labels": {"fleetkit-host": "node-2", "fleetkit-hostname": "ip-10-0-0-12"}
            }
        }
    )


def facts_of_node2(rt: Runtime, context: RoleContext, persisted: str, hostname: str) -> Gathered:
    return Gathered(
        healthy_facts(
            rt,
            context,
            "node-2",
            node_metadata=file_raw(metadata_text(persisted)),
            hostname=out(hostname + "\n"),
        ),
        None,
    )


def test_verify_recognises_a_persisted_name_warns_and_names_the_fix(
    rt: Runtime, context: RoleContext
) -> None:
    cluster = renamed_cluster()
    cluster = type(cluster)(
        cluster.url,
        cluster.alive,
        cluster.version,
        tuple(n for n in cluster.nodes or () if n.node_id != "node-2"),
    )
    facts = {"node-2": facts_of_node2(rt, context, "ip-10-0-0-12", "ip-10-0-0-12")}
    report = report_for(rt, context, facts=facts, cluster=cluster)
    assert report.ready, render_table(report)  # the node works: recognised by its label
    node2 = report.host("node-2")
    assert node2 is not None and node2.node_id == "ip-10-0-0-12"
    check = node2.check("cluster.identity")
    assert check is not None and check.verdict is CheckVerdict.WARN
    assert "node-2 joined the cluster as ip-10-0-0-12" in check.evidence
    assert "persisted in /var/lib/bacalhau/system_metadata.yaml" in check.evidence
    assert check.fix == (
        "to rename it to node-2: stop its bacalhau agent; on node-2: sed -i '/^NodeName:/d' "
        "/var/lib/bacalhau/system_metadata.yaml; run: invoke provision --hosts node-2 (the "
        "agent starts again with --name node-2); then delete the old record at the "
        "orchestrator: bacalhau node delete ip-10-0-0-12"
    )
    assert "WARN" in render_table(report)
    assert "(warnings: node-2 (cluster.identity))" in summary_line(report)
    assert report.to_json()["warnings"][0]["host"] == "node-2"
    # nodes agrees: node-2 is that node, exit 0.
    view = nodes_mod.reconcile(list(rt.inventory.hosts), list(cluster.nodes or ()))
    assert view.exit_status == ExitStatus.SUCCESS
    row = view.row("node-2")
    assert row is not None and row.node_id == "ip-10-0-0-12"


def test_verify_fails_a_node_that_is_not_this_hosts_agent(
    rt: Runtime, context: RoleContext
) -> None:
    """The orchestrator's node-2 carries the right label, but node-2's agent persisted
    another name: whoever answers as node-2 is not the machine verify logged into."""
    facts = {"node-2": facts_of_node2(rt, context, "ip-10-0-0-12", "node-2")}
    report = report_for(rt, context, facts=facts)
    check = report.host("node-2").check("cluster.identity")  # type: ignore[union-attr]
    assert check is not None and check.failed
    assert "persisted the node name ip-10-0-0-12" in check.evidence
    assert "bacalhau node reject node-2" in (check.fix or "")
    assert not report.ready


def test_verify_fails_stale_or_missing_fleetkit_labels(rt: Runtime, context: RoleContext) -> None:
    cluster = healthy_cluster(
        **{
            "node-1": {"labels": {"fleetkit-host": "", "fleetkit-hostname": "node-1"}},
            "node-2": {"labels": {"fleetkit-hostname": "old-name"}},
        }
    )
    report = report_for(rt, context, cluster=cluster)
    one = report.host("node-1").check("cluster.identity")  # type: ignore[union-attr]
    two = report.host("node-2").check("cluster.identity")  # type: ignore[union-attr]
    assert one is not None and one.failed and "label fleetkit-host is ''" in one.evidence
    assert two is not None and two.failed
    assert "fleetkit-hostname is 'old-name', but the machine is named 'node-2'" in two.evidence
    assert two.fix == "run: invoke provision --hosts node-2"


def test_verify_names_conflicts_and_unlabelled_nodes_named_like_the_machine(
    rt: Runtime, context: RoleContext
) -> None:
    cluster = healthy_cluster(
        **{"impostor": {"labels": {"fleetkit-host": "node-1"}}},
    )
    cluster = type(cluster)(
        cluster.url,
        cluster.alive,
        cluster.version,
        (
            *(n for n in cluster.nodes or () if n.node_id != "node-2"),
            node("ip-10-0-0-12", labels={"role": "osquery"}),
        ),
    )
    facts = {"node-2": facts_of_node2(rt, context, "ip-10-0-0-12", "ip-10-0-0-12")}
    report = report_for(rt, context, facts=facts, cluster=cluster)
    one = report.host("node-1").check("cluster.node")  # type: ignore[union-attr]
    assert one is not None and one.failed
    assert one.evidence.startswith("identity conflict: 2 nodes claim inventory host node-1")
    two = report.host("node-2").check("cluster.node")  # type: ignore[union-attr]
    assert two is not None and two.failed
    assert "node ip-10-0-0-12 (this machine's hostname) is, without fleetkit's labels" in (
        two.evidence
    )
    assert two.fix == "run: invoke provision --hosts node-2"
