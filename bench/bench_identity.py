"""Benchmark: joining a large inventory with the orchestrator's node list (the identity mapping).

``nodes``, ``verify`` and every Bacalhau query join the inventory with the
node list through :func:`fleetkit.hostfacts.identity.map_fleet`. This measures
it, and ``nodes``' whole reconciliation, on a fleet of N compute hosts where
every second node joined under its machine's hostname (found by fleetkit's
label) and a few strangers hold the token, against a baseline measured in the
same run: the rule before the identity change (for each inventory host, scan
the node list for its node ID, then its short name), which could not even
recognise the renamed half.

Target: the one mapping (label + node ID, strangers, conflicts) stays linear:
at 5,000 hosts it takes less time than the old per-host scan, which is quadratic.

    python bench/bench_identity.py [--hosts 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleetkit.clients.bacalhau import NodeState
from fleetkit.commands.nodes import reconcile
from fleetkit.foundation.inventory import Host
from fleetkit.hostfacts.identity import map_fleet


def fleet(count: int) -> tuple[list[Host], list[NodeState]]:
    hosts = [
        Host(f"web-{i}", f"10.0.{i // 250}.{i % 250}", groups=("compute",)) for i in range(count)
    ]
    nodes = []
    for i, host in enumerate(hosts):
        node_id = f"ip-10-0-{i // 250}-{i % 250}" if i % 2 else host.name
        labels = {"role": "osquery", "fleetkit-host": host.name, "fleetkit-hostname": node_id}
        nodes.append(node_state(node_id, labels))
    nodes += [node_state(f"stranger-{i}", {"role": "osquery"}) for i in range(count // 100)]
    return hosts, nodes


def node_state(node_id: str, labels: dict[str, str]) -> NodeState:
    return NodeState.from_json(
        {
            "Info": {"NodeID": node_id, "NodeType": "Compute", "Labels": labels},
            "Membership": "APPROVED",
            "ConnectionState": {"Status": "CONNECTED"},
        }
    )


def old_rule(hosts: Sequence[Host], nodes: Sequence[NodeState]) -> int:
    """The matching before the identity rule: per host, scan for its ID, then its short name."""
    found = 0
    for host in hosts:
        match = next((n for n in nodes if n.node_id == host.name), None)
        if match is None:
            short = host.name.split(".", 1)[0]
            match = next((n for n in nodes if n.node_id.split(".", 1)[0] == short), None)
        found += match is not None
    return found


def median_seconds(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    hosts, nodes = fleet(args.hosts)
    mapped = map_fleet(hosts, nodes)
    assert len(mapped.members) == args.hosts and not mapped.missing and not mapped.conflicts
    assert len(mapped.strangers) == args.hosts // 100
    recognised_before = old_rule(hosts, nodes)

    old = median_seconds(lambda: old_rule(hosts, nodes), args.repeat)
    new = median_seconds(lambda: map_fleet(hosts, nodes), args.repeat)
    view = median_seconds(lambda: reconcile(hosts, nodes), args.repeat)
    print(f"{args.hosts} hosts, {len(nodes)} nodes (half renamed, {args.hosts // 100} strangers)")
    print(f"baseline (old per-host scan): {old * 1000:9.1f} ms, recognised {recognised_before}")
    print(f"map_fleet (identity rule):    {new * 1000:9.1f} ms, recognised {len(mapped.members)}")
    print(f"nodes' reconcile (whole view):{view * 1000:9.1f} ms")
    print(f"ratio old/new: {old / new:.1f}x (medians of {args.repeat})")
    print("PASS" if new < old else "FAIL: the mapping is slower than the old scan")


if __name__ == "__main__":
    main()
