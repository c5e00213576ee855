"""Which cluster node is which inventory host: the one identity rule, in one place.

The rule: **the inventory name is the node's identity at the orchestrator.**

- Provisioning makes it so for new nodes: the agent starts with
  ``bacalhau serve --name <inventory name>``, and Bacalhau persists that
  name as ``NodeName`` in ``$DataDir/system_metadata.yaml`` on first start.
- A node that first joined under another name keeps it (Bacalhau ignores a
  later ``--name`` once a name is persisted), so fleetkit also maps nodes by
  a label it owns: provisioning writes ``fleetkit-host: <inventory name>``
  into the compute config's ``Labels`` (and ``fleetkit-hostname: <the
  machine's uname -n>``, so answers keep the machine's own hostname).
- A node claims an inventory host by that label, or by its node ID (equal to
  the inventory name, or its FQDN): nodes provisioned before the label
  existed are still found. A node claiming nothing is a stranger.
- Never merged, always an error: two nodes claiming one host (an impostor,
  or a stale record left by a rename) and one node resolving to two hosts
  (its label names one, its node ID another).

Every command that joins nodes with the inventory (``nodes``, ``verify``,
the Bacalhau transport of ``query``/``policy``/``hunt``) asks
:func:`map_fleet`, so they can never disagree about who a node is.

Trust: a node's ID and labels are the node's own words (relayed by the
orchestrator), so the mapping is only as strong as the node token. What it
adds is detection: a second node claiming a host is a conflict, and
``verify`` checks each node against the name its host persisted (read over
SSH with a pinned key).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from fleetkit.clients.bacalhau import NodeState
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.validate import HOSTNAME, LABEL_VALUE, matches

#: The label fleetkit sets to the inventory name (no dots or slashes: Bacalhau's
#: config loader splits keys on dots, and it is a plain key in ``--select``).
HOST_LABEL = "fleetkit-host"
#: The label fleetkit sets to the machine's own hostname (``uname -n``, read at provisioning).
HOSTNAME_LABEL = "fleetkit-hostname"
#: Label keys an inventory may not set: fleetkit owns them.
RESERVED_LABELS = (HOST_LABEL, HOSTNAME_LABEL)
#: Where Bacalhau persists the first node name, inside its ``DataDir``.
SYSTEM_METADATA = "system_metadata.yaml"


def metadata_path(data_dir: str) -> str:
    return posixpath.join(data_dir, SYSTEM_METADATA)


def machine_hostname(value: object) -> str | None:
    """A machine hostname fit for a label value and a table cell, or None.

    The name as the machine reports it when it is a valid hostname of at most
    63 characters; the first DNS label of a longer FQDN; else None (a node's
    or a host's word for its own name is hostile input).
    """
    if not isinstance(value, str):
        return None
    name = value.strip().rstrip(".")
    if not matches(HOSTNAME, name):
        return None
    if matches(LABEL_VALUE, name):
        return name
    first = name.split(".", 1)[0]
    return first if matches(LABEL_VALUE, first) else None


class Claim(StrEnum):
    """How a node says which inventory host it is."""

    LABEL = "label"
    NODE_ID = "node ID"


@dataclass(frozen=True)
class Member:
    """An inventory host and the one node that is it."""

    host: Host
    node: NodeState
    claim: Claim

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def hostname(self) -> str:
        """The machine's own hostname: fleetkit's label, else the node's ID."""
        return machine_hostname(self.node.labels.get(HOSTNAME_LABEL)) or self.node.node_id

    @property
    def joined_as_other(self) -> bool:
        """The node's ID is not the inventory name (it joined under another name first)."""
        return self.node.node_id != self.host.name


class ConflictKind(StrEnum):
    #: Two or more nodes claim one inventory host.
    SHARED_HOST = "nodes claim one host"
    #: One node resolves to two or more inventory hosts.
    SPLIT_NODE = "node resolves to several hosts"


@dataclass(frozen=True)
class Conflict:
    """An identity that cannot be decided: reported as an error, never merged."""

    kind: ConflictKind
    hosts: tuple[str, ...]
    #: ``(node ID, how it claims)`` pairs.
    claims: tuple[tuple[str, str], ...]

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(node_id for node_id, _ in self.claims))

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": list(self.hosts),
            "nodes": list(self.node_ids),
            "error": self.describe(),
            "fix": self.fix(),
        }

    def describe(self) -> str:
        """One line naming every node and host involved (raw: escape it for a terminal)."""
        if self.kind is ConflictKind.SHARED_HOST:
            how = "; ".join(f"{node_id} by its {claim}" for node_id, claim in self.claims)
            return (
                f"{len(self.claims)} nodes claim inventory host {self.hosts[0]}: {how}; "
                "none of them is taken for it"
            )
        how = " and ".join(f"{host} (its {claim})" for host, claim in self._per_host())
        return f"node {self.claims[0][0]} resolves to {len(self.hosts)} inventory hosts: {how}"

    def _per_host(self) -> list[tuple[str, str]]:
        return [(host, claim) for host, (_, claim) in zip(self.hosts, self.claims, strict=True)]

    def fix(self) -> str:
        if self.kind is ConflictKind.SHARED_HOST:
            return (
                "keep one node per host: delete a stale record (DISCONNECTED, e.g. after a "
                "rename) at the orchestrator (bacalhau node delete <id>); reject an impostor "
                "(bacalhau node reject <id>) and stop its agent"
            )
        labelled = [host for host, claim in self._per_host() if claim == Claim.LABEL]
        label_host = labelled[0] if labelled else self.hosts[0]
        return (
            f"if {' and '.join(self.hosts)} are one machine, keep one of them in the inventory; "
            f"else rename the node to {label_host} (see: invoke verify --hosts {label_host})"
        )


@dataclass(frozen=True)
class FleetMap:
    """The inventory joined with the orchestrator's compute nodes (see :func:`map_fleet`)."""

    #: Inventory hosts with exactly one node, in inventory order.
    members: tuple[Member, ...] = ()
    #: Inventory hosts no node claims (in inventory order).
    missing: tuple[Host, ...] = ()
    #: Compute nodes that claim no inventory host (sorted by node ID).
    strangers: tuple[NodeState, ...] = ()
    conflicts: tuple[Conflict, ...] = ()

    def member(self, name: str) -> Member | None:
        return self._by_name.get(name)

    def member_of_node(self, node_id: str) -> Member | None:
        return self._by_node_id.get(node_id)

    @cached_property
    def _by_name(self) -> dict[str, Member]:
        return {m.name: m for m in self.members}

    @cached_property
    def _by_node_id(self) -> dict[str, Member]:
        return {m.node_id: m for m in self.members}

    def conflicts_of_host(self, name: str) -> list[Conflict]:
        return [c for c in self.conflicts if name in c.hosts]

    @cached_property
    def conflicted_hosts(self) -> list[str]:
        return list(dict.fromkeys(h for c in self.conflicts for h in c.hosts))

    @cached_property
    def conflicted_nodes(self) -> list[str]:
        return list(dict.fromkeys(n for c in self.conflicts for n in c.node_ids))


@dataclass(frozen=True)
class _Names:
    """The inventory's names, indexed for the node-ID rules (one pass, then lookups)."""

    by_name: dict[str, Host]
    #: ``web-3`` -> hosts named ``web-3.<anything>`` (an inventory FQDN's short names).
    by_prefix: dict[str, list[Host]]

    @classmethod
    def of(cls, hosts: Iterable[Host]) -> _Names:
        by_name: dict[str, Host] = {}
        by_prefix: dict[str, list[Host]] = {}
        for host in hosts:
            by_name.setdefault(host.name, host)
            for prefix in _dotted_prefixes(host.name):
                by_prefix.setdefault(prefix, []).append(host)
        return cls(by_name, by_prefix)

    def of_node_id(self, node_id: str) -> list[Host]:
        """Inventory hosts a node ID names: exactly, else as the FQDN of a short name
        (``web-3.example.com`` is ``web-3``), else as the short name of FQDNs."""
        if node_id in self.by_name:
            return [self.by_name[node_id]]
        for prefix in reversed(_dotted_prefixes(node_id)):
            if prefix in self.by_name:
                return [self.by_name[prefix]]
        return list(self.by_prefix.get(node_id, ()))


def _dotted_prefixes(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]`` (the names it is an FQDN of)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _claims_of(node: NodeState, names: _Names) -> list[tuple[Host, Claim]]:
    """Every inventory host ``node`` claims, and how (several = a conflict)."""
    found: list[tuple[Host, Claim]] = []
    labelled = names.by_name.get(node.labels.get(HOST_LABEL, ""))
    if labelled is not None:
        found.append((labelled, Claim.LABEL))
    for host in names.of_node_id(node.node_id):
        if host is not labelled:
            found.append((host, Claim.NODE_ID))
    return found


def map_fleet(hosts: Iterable[Host], nodes: Iterable[NodeState]) -> FleetMap:
    """Which compute node is which inventory host; strangers; conflicts (pure).

    ``hosts`` are the inventory hosts a node may be (compute hosts, or every
    host); only compute nodes are looked at.
    """
    host_list = list(hosts)
    names = _Names.of(host_list)
    compute = sorted((n for n in nodes if n.is_compute), key=lambda n: n.node_id)
    claims = {node.node_id: _claims_of(node, names) for node in compute}
    by_id = {node.node_id: node for node in compute}
    conflicts: list[Conflict] = []
    claimants: dict[str, list[tuple[str, Claim]]] = {}
    for node_id, found in claims.items():
        if len(found) > 1:
            conflicts.append(
                Conflict(
                    ConflictKind.SPLIT_NODE,
                    tuple(h.name for h, _ in found),
                    tuple((node_id, c.value) for _, c in found),
                )
            )
        for host, claim in found:
            claimants.setdefault(host.name, []).append((node_id, claim))
    members: list[Member] = []
    missing: list[Host] = []
    for host in host_list:
        mine = claimants.get(host.name, [])
        if len(mine) > 1:
            conflicts.append(
                Conflict(
                    ConflictKind.SHARED_HOST,
                    (host.name,),
                    tuple((node_id, c.value) for node_id, c in mine),
                )
            )
        elif not mine:
            missing.append(host)
        elif len(claims[mine[0][0]]) == 1:
            node_id, claim = mine[0]
            members.append(Member(host, by_id[node_id], claim))
    strangers = tuple(node for node in compute if not claims[node.node_id])
    return FleetMap(tuple(members), tuple(missing), strangers, tuple(conflicts))
