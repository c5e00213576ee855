"""The cluster as the orchestrator sees it, joined with the inventory.

``invoke nodes`` answers "is the cluster the fleet I think it is?". Every
inventory compute host is looked up in the orchestrator's node list, and every
compute node there is looked up in the inventory. Two sets must never be
missed:

- **missing**: inventory compute hosts the cluster does not know (a query
  would silently never reach them);
- **rogue**: compute nodes in the cluster that the inventory does not know.
  They hold the node token and receive query jobs, so they can read the SQL
  and answer in the fleet's name. A rogue node the orchestrator already
  REJECTED gets no work: it is listed, but it is not dangerous.

Exit status (decided here, documented in the README): 1 when either set is
non-empty, when an identity is in conflict (two nodes claim one inventory
host, or one node resolves to two), and also when an inventory host is
DISCONNECTED, PENDING or REJECTED, because a fleet query would miss it just
the same; 0 means "the cluster is exactly the inventory's compute fleet and
every node can take a query". ``--approve`` approves PENDING nodes that are
in the inventory and never one that is not, nor one in conflict.

Matching: :func:`fleetkit.hostfacts.identity.map_fleet` (``fleetkit-host``
label, else node ID), as for ``verify`` and ``query``; a node that joined
under another name is listed under its inventory name, with a note. Node IDs,
labels and states are the nodes' words: escaped and cut for a person, exact
in ``--json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fleetkit.clients.bacalhau import BacalhauClient, NodeState, OrchestratorError
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.output import emit_report
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.table import cell, make_table
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.hostfacts.identity import Conflict, FleetMap, map_fleet
from fleetkit.runtime import Runtime

#: Characters of one line quoting node IDs (a node chooses its own, of any length).
LINE_LIMIT = 500


class Standing(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    PENDING = "pending approval"
    REJECTED = "rejected"
    #: In the inventory, unknown to the orchestrator.
    MISSING = "not in cluster"
    #: Several nodes claim the inventory host (or its node resolves to several hosts).
    CONFLICT = "identity conflict"


def standing_of(node: NodeState | None) -> Standing:
    if node is None:
        return Standing.MISSING
    membership = node.membership.upper()
    if membership == "REJECTED":
        return Standing.REJECTED
    if membership == "PENDING":
        return Standing.PENDING
    return Standing.CONNECTED if node.is_connected else Standing.DISCONNECTED


@dataclass(frozen=True)
class NodeRow:
    """One line of the joined view."""

    name: str
    node_id: str | None
    in_inventory: bool
    standing: Standing
    membership: str = ""
    connection: str = ""
    #: When the current connection state began (DisconnectedSince for a lost node).
    since: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    version: str | None = None
    #: The machine's own hostname, when the node reports it (fleetkit's label).
    hostname: str | None = None
    #: How the node was matched to the inventory host (``label``, ``node ID``).
    claim: str | None = None
    #: The node is part of an identity conflict (never a match, never approved).
    conflict: bool = False

    @property
    def rogue(self) -> bool:
        return not (self.in_inventory or self.conflict) and self.standing is not Standing.REJECTED

    @property
    def joined_as_other(self) -> bool:
        """An inventory host whose node joined under another name (its persisted one)."""
        return self.in_inventory and self.node_id is not None and self.node_id != self.name

    @property
    def ready(self) -> bool:
        return self.in_inventory and self.standing is Standing.CONNECTED

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_id": self.node_id,
            "in_inventory": self.in_inventory,
            "state": self.standing.value,
            "membership": self.membership or None,
            "connection": self.connection or None,
            "since": self.since,
            "labels": dict(self.labels),
            "version": self.version,
            "hostname": self.hostname,
            "matched_by": self.claim,
            "rogue": self.rogue,
            "conflict": self.conflict,
        }


@dataclass(frozen=True)
class Reconciliation:
    rows: tuple[NodeRow, ...]
    orchestrator_url: str = ""
    #: What ``--approve`` did: node ID -> "approved" or why not.
    approvals: tuple[tuple[str, str], ...] = ()
    conflicts: tuple[Conflict, ...] = ()

    @property
    def missing(self) -> list[str]:
        return [r.name for r in self.rows if r.in_inventory and r.standing is Standing.MISSING]

    @property
    def rogue(self) -> list[str]:
        return [r.name for r in self.rows if r.rogue]

    @property
    def not_ready(self) -> list[NodeRow]:
        """Inventory hosts that are in the cluster but cannot take a query."""
        return [
            r
            for r in self.rows
            if r.in_inventory
            and r.standing not in (Standing.CONNECTED, Standing.MISSING, Standing.CONFLICT)
        ]

    def row(self, name: str) -> NodeRow | None:
        return next((r for r in self.rows if r.name == name or r.node_id == name), None)

    @property
    def exit_status(self) -> ExitStatus:
        refused = any(result != "approved" for _, result in self.approvals)
        bad = bool(self.missing or self.rogue or self.not_ready or self.conflicts) or refused
        return ExitStatus.FAILURE if bad else ExitStatus.SUCCESS

    @property
    def joined_as_other(self) -> list[NodeRow]:
        return [r for r in self.rows if r.joined_as_other]

    def to_json(self) -> dict[str, Any]:
        return {
            "orchestrator": self.orchestrator_url,
            "ok": self.exit_status is ExitStatus.SUCCESS,
            "nodes": [r.to_json() for r in self.rows],
            "missing": self.missing,
            "rogue": self.rogue,
            "not_ready": [r.name for r in self.not_ready],
            "conflicts": [c.to_json() for c in self.conflicts],
            "approvals": dict(self.approvals),
        }


def _row(name: str, node: NodeState | None, *, in_inventory: bool, **extra: Any) -> NodeRow:
    """``extra``: the row's identity fields (``hostname``, ``claim``, ``conflict``)."""
    standing = standing_of(node)
    if node is None:
        return NodeRow(name, None, in_inventory, standing)
    since = node.disconnected_since if standing is Standing.DISCONNECTED else node.connected_since
    return NodeRow(
        name=name,
        node_id=node.node_id,
        in_inventory=in_inventory,
        standing=standing,
        membership=node.membership,
        connection=node.connection,
        since=since,
        labels=tuple(sorted(node.labels.items())),
        version=node.version,
        **extra,
    )


def reconcile(
    inventory_hosts: Sequence[Host], nodes: Sequence[NodeState], *, orchestrator_url: str = ""
) -> Reconciliation:
    """Join inventory compute hosts with the orchestrator's compute nodes (pure).

    Any inventory host (the control plane included) is known: a compute node
    that is the control plane running compute is listed, not a rogue.
    """
    fleet = map_fleet(inventory_hosts, nodes)
    rows: list[NodeRow] = []
    for host in inventory_hosts:
        if not host.is_compute:
            continue
        member = fleet.member(host.name)
        if member is not None:
            identity = {"hostname": member.hostname, "claim": member.claim.value}
            rows.append(_row(host.name, member.node, in_inventory=True, **identity))
        elif host.name in fleet.conflicted_hosts:
            rows.append(NodeRow(host.name, None, True, Standing.CONFLICT, conflict=True))
        else:
            rows.append(_row(host.name, None, in_inventory=True))
    rows += _other_rows(fleet, nodes)
    return Reconciliation(tuple(rows), orchestrator_url, conflicts=fleet.conflicts)


def _other_rows(fleet: FleetMap, nodes: Sequence[NodeState]) -> list[NodeRow]:
    """Compute nodes that are not an inventory compute host's match, by node ID."""
    rows: list[NodeRow] = []
    for member in fleet.members:
        if not member.host.is_compute:
            rows.append(_row(member.node_id, member.node, in_inventory=True))
    conflicted = set(fleet.conflicted_nodes)
    for node in sorted(nodes, key=lambda n: n.node_id):
        if node.is_compute and node.node_id in conflicted:
            rows.append(_row(node.node_id, node, in_inventory=False, conflict=True))
    rows += [_row(node.node_id, node, in_inventory=False) for node in fleet.strangers]
    return rows


def approve_pending(client: BacalhauClient, view: Reconciliation) -> list[tuple[str, str]]:
    """Approve PENDING nodes that are in the inventory; never the others."""
    results: list[tuple[str, str]] = []
    for row in view.rows:
        if row.standing is not Standing.PENDING or row.node_id is None:
            continue
        if row.conflict:
            results.append((row.node_id, "not approved: identity conflict (see below)"))
            continue
        if not row.in_inventory:
            results.append((row.node_id, "not approved: not in the inventory"))
            continue
        try:
            client.approve_node(row.node_id, "approved by fleetkit: host is in the inventory")
        except OrchestratorError as exc:
            results.append((row.node_id, f"approval failed: {exc}"))
        else:
            results.append((row.node_id, "approved"))
    return results


# --------------------------------------------------------------------------- output


def age(since: str, now: datetime) -> str | None:
    """``3m12s`` between a Bacalhau timestamp and ``now``; None when unreadable or zero-time."""
    try:
        then = datetime.fromisoformat(since)
    except ValueError:
        return None
    if then.year < 2000:  # Go's zero time: "never"
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int((now - then).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _state(row: NodeRow, now: datetime) -> str:
    if not row.since or row.ready:
        return row.standing.value
    ago = age(row.since, now)
    return f"{row.standing.value} since {row.since}" + (f" ({ago} ago)" if ago else "")


def render_table(view: Reconciliation, now: datetime | None = None) -> str:
    """The joined view for a terminal: every value the orchestrator sent is escaped and cut."""
    now = now or datetime.now(UTC)
    headers = (
        "NODE",
        "INVENTORY",
        "STATE",
        "MEMBERSHIP",
        "VERSION",
        "NODE ID",
        "HOSTNAME",
        "LABELS",
    )
    rows = [
        (
            r.name,
            "yes" if r.in_inventory else "CONFLICT" if r.conflict else "NO",
            _state(r, now),
            r.membership or "-",
            r.version or "-",
            r.node_id or "-",
            r.hostname or "-",
            ",".join(f"{k}={v}" for k, v in r.labels) or "-",
        )
        for r in view.rows
    ]
    lines = make_table(headers, rows).lines()
    for node_id, result in view.approvals:
        lines.append(f"approve {cell(node_id)}: {terminal_safe(result)}")
    lines += _dangers(view)
    return "\n".join(lines) + "\n"


def _names(names: Sequence[str]) -> str:
    """Node names as one line: each escaped and cut (a node chooses its own ID)."""
    return ", ".join(cell(name) for name in names)


def _dangers(view: Reconciliation) -> list[str]:
    lines: list[str] = []
    for conflict in view.conflicts:
        lines.append(f"CONFLICT: {cell(conflict.describe(), max_width=LINE_LIMIT)}")
        lines.append(f"  fix: {conflict.fix()}")
    if view.rogue:
        lines.append(
            "ROGUE: in the cluster but not in the inventory (they receive query jobs): "
            + _names(view.rogue)
        )
        lines.append(
            "  fix: reject them at the orchestrator (bacalhau node reject <id>) and stop their "
            "agent, or onboard them: invoke onboard --host <name> --address <address>"
        )
    if view.missing:
        lines.append("MISSING: in the inventory but not in the cluster: " + _names(view.missing))
        lines.append(f"  fix: run: invoke provision --hosts {','.join(view.missing)}")
    for row in view.not_ready:
        if row.standing is Standing.PENDING:
            fix = "run: invoke nodes --approve"
        elif row.standing is Standing.DISCONNECTED:
            fix = f"start its agent: run: invoke provision --hosts {row.name}"
        else:
            fix = f"if it belongs, approve it there: bacalhau node approve {cell(row.node_id)}"
        lines.append(f"NOT READY: {row.name} is {row.standing.value}; fix: {fix}")
    if not lines:
        lines.append(
            f"nodes: the cluster matches the inventory ({_count(view)}, all connected and approved)"
        )
    for row in view.joined_as_other:
        lines.append(
            f"note: {row.name} joined the cluster as {cell(row.node_id)} (a name persisted "
            f"before fleetkit named it), recognised by its {row.claim}; to rename it, see: "
            f"invoke verify --hosts {row.name}"
        )
    return lines


def _count(view: Reconciliation) -> str:
    return f"{len(view.rows)} compute node{'' if len(view.rows) == 1 else 's'}"


def summary_line(view: Reconciliation) -> str:
    """One line for stderr when the table is not shown (``--json``)."""
    if view.exit_status is ExitStatus.SUCCESS:
        return f"nodes: the cluster matches the inventory ({_count(view)})"
    parts = [
        f"{label}: {_names(names)}"
        for label, names in (
            ("ROGUE", view.rogue),
            ("MISSING", view.missing),
            ("NOT READY", [r.name for r in view.not_ready]),
            ("CONFLICT", [h for c in view.conflicts for h in c.hosts]),
        )
        if names
    ]
    return "nodes: " + "; ".join(parts or ["approval failed (see approvals)"])


def run(rt: Runtime, *, as_json: bool, approve: bool) -> ExitStatus:
    """``invoke nodes [--json] [--approve]``."""
    rt.load()
    client = rt.orchestrator
    hosts = list(rt.inventory.hosts)
    view = reconcile(hosts, client.nodes(), orchestrator_url=client.display_url)
    if approve:
        approvals = approve_pending(client, view)
        if any(result == "approved" for _, result in approvals):
            view = reconcile(hosts, client.nodes(), orchestrator_url=client.display_url)
        view = replace(view, approvals=tuple(approvals))
    emit_report(
        rt.env,
        as_json=as_json,
        data=view.to_json(),
        summary=summary_line(view),
        table=render_table(view),
    )
    return view.exit_status
