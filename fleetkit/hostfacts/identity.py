"""Which cluster node an inventory host is: the one rule, in one place.

Provisioning sets ``NameProvider: hostname``, so a node ID is the host's
hostname; fleetkit expects inventory names to be those hostnames (an FQDN
node ID also matches its short name). Open question, tracked for a later
change: a compromised host can rename itself, so matching by a label
fleetkit sets at provisioning is the sturdier rule; callers go through
:func:`node_of_host` so that rule can replace this one in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleetkit.clients.bacalhau import NodeState
from fleetkit.foundation.inventory import Host


def find_node(nodes: Iterable[NodeState], *names: str | None) -> NodeState | None:
    """The node whose ID is one of ``names`` (in order), or whose FQDN starts with it."""
    node_list = list(nodes)
    for name in names:
        if not name:
            continue
        for node in node_list:
            if node.node_id == name:
                return node
        for node in node_list:
            if node.node_id.split(".", 1)[0] == name.split(".", 1)[0]:
                return node
    return None


def node_of_host(
    nodes: Iterable[NodeState], host: Host, hostname: str | None = None
) -> NodeState | None:
    """The node of ``host``: by its inventory name, else by the hostname it reported."""
    return find_node(nodes, host.name, hostname)
