"""Verify a fleet: one probe per host over SSH, one node list from the orchestrator.

Every host is looked at from the inside with ONE SSH command (the probe the
check catalog derives for its role, run in the bounded pool) and from the
orchestrator's point of view (one node list for the whole fleet); then every
declared check is judged from those facts, with no further I/O.

The Bacalhau agent's ``/api/v1/agent/alive`` is asked *on the node itself*
(over the SSH session), not from the admin machine: compute nodes' API ports
are often firewalled from administrators (and closed by ``quarantine``),
while SSH is the one channel fleetkit always has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleetkit.clients.ssh import Outcome, SSHError, fan_out, fingerprint
from fleetkit.foundation.inventory import COMPUTE, CONTROL_PLANE, Host
from fleetkit.hostfacts.facts import FactView
from fleetkit.hostfacts.identity import map_fleet
from fleetkit.hostfacts.probe import build_probe, shell_command
from fleetkit.readiness.catalog import checks_for, evaluate, orchestrator_checks, probe_facts
from fleetkit.readiness.cluster import ClusterView, observe_cluster
from fleetkit.readiness.expected import Expected, Looks
from fleetkit.readiness.model import HostReadiness, Subject, VerifyReport, skipped

if TYPE_CHECKING:
    from fleetkit.runtime import Runtime

#: Seconds the whole probe may take on one host.
SCRIPT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Gathered:
    """What SSH produced for one host: its facts, or the error that stopped it."""

    facts: FactView | None
    error: BaseException | None
    round_trips: int = 0


def role_of(host: Host) -> str:
    return CONTROL_PLANE if host.is_control_plane else COMPUTE


def looks_for(host: Host, expected: Expected) -> Looks:
    return Looks.build(expected, host.bacalhau_api_port or expected.api_port, host.name)


def gather(
    rt: Runtime, host: Host, expected: Expected, sent: dict[str, int] | None = None
) -> FactView:
    """Run the host's probe over SSH: one command (raises the SSH error).

    ``sent`` counts the commands sent, by host (for the report's round trips).
    """
    probe = build_probe(probe_facts(role_of(host), expected, looks_for(host, expected)))
    with rt.connector.connect(host) as remote:
        if sent is not None:
            sent[host.name] = sent.get(host.name, 0) + 1
        result = remote.run(shell_command(probe.script), timeout=SCRIPT_TIMEOUT)
    found = probe.results(result.stdout)
    if not found:
        raise SSHError(
            host.name, f"the probe script printed nothing usable: {result.err.strip()[:200]}"
        )
    return FactView.parsed(found)


def build_report(
    hosts: Sequence[Host],
    gathered: Mapping[str, Gathered],
    cluster: ClusterView,
    expected: Expected,
    *,
    control_plane: Host | None,
    pinned: Callable[[Host], list[str]],
    inventory: Sequence[Host] | None = None,
) -> VerifyReport:
    """Assemble the report from facts already gathered (pure: the tests call it directly).

    Nodes are matched with the whole ``inventory`` (default: ``hosts``), so a
    node claiming a host outside the selection is still that host's.
    """
    compute = [h for h in hosts if not h.is_control_plane]
    fleet = map_fleet(inventory if inventory is not None else hosts, cluster.nodes or ())

    def subject(host: Host | None, got: Gathered) -> Subject:
        member = fleet.member(host.name) if host is not None else None
        return Subject(
            host=host,
            expected=expected,
            looks=looks_for(host, expected) if host else Looks.build(expected, expected.api_port),
            facts=got.facts,
            ssh_error=got.error,
            cluster=cluster,
            node=member.node
            if member is not None and host is not None and host.is_compute
            else None,
            control_plane=control_plane,
            compute=compute,
            pinned=pinned(host) if host else (),
            fleet=fleet,
        )

    reports: list[HostReadiness] = []
    if control_plane is None or all(h.name != control_plane.name for h in hosts):
        row = subject(control_plane, Gathered(None, None))
        checks = tuple(evaluate(spec, row) for spec in orchestrator_checks())
        name = control_plane.name if control_plane else "orchestrator"
        endpoint = control_plane.endpoint if control_plane else cluster.url
        reports.append(HostReadiness(name, CONTROL_PLANE, endpoint, checks))
    for host in hosts:
        if not (host.is_control_plane or host.is_compute):
            why = "in neither control_plane nor compute: fleetkit manages nothing here"
            checks = (skipped("role", why),)
            reports.append(HostReadiness(host.name, host.role, host.endpoint, checks))
            continue
        got = gathered.get(host.name, Gathered(None, RuntimeError("not checked")))
        s = subject(host, got)
        checks = tuple(evaluate(spec, s) for spec in checks_for(role_of(host)))
        node_id = s.node.node_id if s.node and host.is_compute else None
        reports.append(
            HostReadiness(host.name, host.role, host.endpoint, checks, node_id, got.round_trips)
        )
    return VerifyReport(tuple(reports), cluster.url)


def verify(rt: Runtime, hosts: Sequence[Host]) -> VerifyReport:
    """Check ``hosts`` (and the orchestrator); progress on stderr, no report printed."""
    expected = Expected.from_settings(rt.settings)
    cluster = observe_cluster(rt.orchestrator)
    probed = [h for h in hosts if h.is_control_plane or h.is_compute]
    done = 0

    def on_done(outcome: Outcome[FactView]) -> None:
        nonlocal done
        done += 1
        rt.env.progress(f"verify: {done}/{len(probed)} hosts probed")

    sent: dict[str, int] = {}
    outcomes = fan_out(
        probed,
        lambda h: gather(rt, h, expected, sent),
        parallelism=rt.settings.ssh.parallelism,
        on_done=on_done,
    )
    if probed:
        rt.env.end_progress()
    gathered = {o.host.name: Gathered(o.value, o.error, sent.get(o.host.name, 0)) for o in outcomes}

    def pinned(host: Host) -> list[str]:
        keys = rt.known_hosts.lookup(host.address, host.port)
        return [f"{kind} {fingerprint(key)}" for kind, key in sorted(keys.items())]

    return build_report(
        hosts,
        gathered,
        cluster,
        expected,
        control_plane=rt.inventory.control_plane,
        pinned=pinned,
        inventory=rt.inventory.hosts,
    )
