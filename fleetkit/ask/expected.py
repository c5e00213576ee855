"""The expected set of a Bacalhau query: who must answer, who cannot (and why), who is a stranger.

Computed from the orchestrator's node list *before* the job is submitted,
because an ops job silently skips nodes that lack a capability: those are
named MISSING with the reason instead of being waited for. Which node is
which inventory host comes from the one identity mapping
(:func:`fleetkit.hostfacts.identity.map_fleet`); the :class:`Roster` files
each node's answer under its inventory name with its machine's hostname.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetkit.clients.bacalhau import NodeState
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.selectors import Selector
from fleetkit.hostfacts.identity import HOST_LABEL, FleetMap, Member, map_fleet

#: Label Bacalhau (v1.8+) sets to the node's name; pins a job when fleetkit's label cannot.
NAME_LABEL = "name"


@dataclass(frozen=True)
class Roster:
    """Who each node is, from the identity mapping: the name and hostname its answer gets."""

    #: Node ID -> the inventory compute host it is.
    members: Mapping[str, Member] = field(default_factory=dict)
    #: Node IDs in an identity conflict: never merged.
    conflicted: frozenset[str] = frozenset()
    #: Every inventory host name the nodes were mapped to (found or not).
    inventory: frozenset[str] = frozenset()

    @classmethod
    def of(cls, fleet: FleetMap, hosts: Iterable[Host] = ()) -> Roster:
        return cls(
            {m.node_id: m for m in fleet.members},
            frozenset(fleet.conflicted_nodes),
            frozenset(h.name for h in hosts) | {m.name for m in fleet.members},
        )

    def filing(self, node_id: str) -> tuple[str, str, bool]:
        """``(name, hostname, in inventory)`` of a node's answer; a stranger keeps its ID."""
        member = self.members.get(node_id)
        if member is None:
            return node_id, node_id, False
        return member.name, member.hostname, True

    def name_of(self, node_id: str) -> str:
        return self.filing(node_id)[0]


@dataclass
class ExpectedNodes:
    """Who the job is for, who matched but cannot run it (and why), and the strangers."""

    #: Node IDs at the orchestrator (what executions carry).
    ids: list[str] = field(default_factory=list)
    #: Name (inventory name; a stranger's node ID) -> why it will not answer.
    missing: dict[str, str] = field(default_factory=dict)
    #: Matching cluster nodes that are not inventory hosts (left out of ``ids``).
    strangers: list[str] = field(default_factory=list)
    roster: Roster = field(default_factory=Roster)
    #: Whether the expected set is narrower than "every matching node" (conflicts left out).
    conflicts: bool = False

    @property
    def names(self) -> list[str]:
        """The names the expected nodes' answers are filed under."""
        return [self.roster.name_of(node_id) for node_id in self.ids]

    def pin(self, nodes: Sequence[NodeState]) -> dict[str, Any] | None:
        """A constraint selecting exactly the expected nodes, or None when none can.

        By fleetkit's ``fleetkit-host`` label when every expected node carries
        its own; else by Bacalhau's ``name`` label (= node ID, v1.8+).
        """
        labels = {n.node_id: n.labels for n in nodes}
        names = self.names
        if all(
            labels.get(i, {}).get(HOST_LABEL) == n for i, n in zip(self.ids, names, strict=True)
        ):
            return {"Key": HOST_LABEL, "Operator": "in", "Values": names}
        if all(labels.get(i, {}).get(NAME_LABEL) == i for i in self.ids):
            return {"Key": NAME_LABEL, "Operator": "in", "Values": list(self.ids)}
        return None


def expected_nodes(
    nodes: Sequence[NodeState],
    selector: Selector,
    wanted: Collection[Host] | None,
    *,
    publisher: str | None,
    inventory_compute: Sequence[Host] = (),
    include_unknown: bool = True,
) -> ExpectedNodes:
    """The expected set: compute, CONNECTED, APPROVED, matching, advertising the needs.

    Nodes that match but cannot run the job (disconnected, pending approval,
    lacking docker / local storage / the publisher) are named as missing with
    the reason, because the orchestrator skips them without a word. Inventory
    compute hosts the orchestrator does not know are missing too, and so are
    hosts in an identity conflict (with the conflict). Without
    ``include_unknown``, matching nodes outside ``inventory_compute`` are
    strangers, not expected.
    """
    known = {h.name for h in inventory_compute}
    hosts = [*inventory_compute, *(h for h in wanted or () if h.name not in known)]
    fleet = map_fleet(hosts, nodes)
    names = {h.name for h in wanted} if wanted is not None else None
    roster = Roster.of(fleet, hosts)
    result = ExpectedNodes(roster=roster, conflicts=bool(fleet.conflicts))
    for node in sorted(nodes, key=lambda n: n.node_id):
        if not node.is_compute or node.node_id in roster.conflicted:
            continue
        name, _, member = roster.filing(node.node_id)
        if names is not None and name not in names:
            continue
        if not selector.matches(node.labels):
            continue
        if not member and names is None and not include_unknown:
            result.strangers.append(node.node_id)
            continue
        reason = unschedulable_reason(node, publisher)
        if reason:
            result.missing[name] = reason
            continue
        result.ids.append(node.node_id)
    for host in wanted if wanted is not None else inventory_compute:
        if not selector.matches(host.labels) or fleet.member(host.name) is not None:
            continue
        conflicts = fleet.conflicts_of_host(host.name)
        result.missing[host.name] = (
            "identity conflict, not asked: "
            + "; ".join(c.describe() for c in conflicts)
            + " (see: invoke nodes)"
            if conflicts
            else "not known to the orchestrator (never joined the cluster)"
        )
    return result


def unschedulable_reason(node: NodeState, publisher: str | None) -> str:
    if not node.is_approved:
        return f"not approved at the orchestrator (membership {node.membership or 'unknown'})"
    if not node.is_connected:
        since = f" since {node.disconnected_since}" if node.disconnected_since else ""
        return f"{(node.connection or 'not connected').lower()}{since}"
    lacking = node.advertises(engine="docker", storage="local", publisher=publisher)
    if lacking:
        return (
            "cannot run the query job: does not advertise "
            + ", ".join(lacking)
            + (
                " (is the osquery socket directory in Compute.AllowListedLocalPaths?)"
                if any(item.startswith("storage") for item in lacking)
                else ""
            )
        )
    return ""
