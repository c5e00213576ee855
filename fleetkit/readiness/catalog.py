"""Every readiness check, declared once as data; the probe and the skip rules derive from it.

A check is a name, the roles it applies to, what it depends on (an SSH
session, the orchestrator's answer, the host's node there), the host facts it
reads, and a pure judge. From these declarations:

- the probe script of a host is exactly the facts of the checks that apply
  to its role (plus its hostname, which finds its node): one SSH command;
- a check whose dependency is unavailable is SKIPPED, naming the cause,
  never passed: the report then still fails on the cause (the ``ssh`` or
  ``orchestrator.api`` check), and says so;
- a check whose facts the probe did not bring back (it stopped early) is
  skipped the same way.

Adding a check: write its judge (``host_checks``, ``cluster``), add one
:class:`CheckSpec` here. Adding a fact: a class in :mod:`fleetkit.hostfacts.facts`
and an attribute of :class:`~fleetkit.readiness.expected.Looks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fleetkit.foundation.inventory import COMPUTE, CONTROL_PLANE
from fleetkit.hostfacts.facts import Fact, unique
from fleetkit.hostfacts.probe import build_probe
from fleetkit.readiness import cluster as c
from fleetkit.readiness import host_checks as h
from fleetkit.readiness import watch_check as w
from fleetkit.readiness.expected import Expected, Looks
from fleetkit.readiness.identity import check_identity
from fleetkit.readiness.model import CheckResult, Subject, skipped

BOTH = frozenset({CONTROL_PLANE, COMPUTE})
ONLY_COMPUTE = frozenset({COMPUTE})
ONLY_CONTROL_PLANE = frozenset({CONTROL_PLANE})


class Need(StrEnum):
    """What a check depends on besides its facts."""

    #: An SSH session and its probe (every check that reads host facts).
    SSH = "ssh"
    #: The orchestrator's node list.
    ORCHESTRATOR = "orchestrator"
    #: The host's node in that list.
    NODE = "node"


def _no_facts(looks: Looks) -> tuple[Fact[Any], ...]:
    return ()


def _always(expected: Expected) -> str | None:
    return None


@dataclass(frozen=True)
class CheckSpec:
    name: str
    roles: frozenset[str]
    #: ``judge(subject, *facts)``: the parsed facts in the order ``facts`` declares them.
    judge: Callable[..., CheckResult]
    facts: Callable[[Looks], tuple[Fact[Any], ...]] = _no_facts
    needs: tuple[Need, ...] = ()
    #: Why the check does not apply under these settings (None: it applies).
    required: Callable[[Expected], str | None] = _always
    #: Also on the orchestrator's own row when the control plane is not being verified.
    orchestrator_row: bool = False


SSH, ORCH, NODE = (Need.SSH,), (Need.ORCHESTRATOR,), (Need.ORCHESTRATOR, Need.NODE)
SSH_AND_NODE = (Need.SSH, *NODE)

CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("ssh", BOTH, h.check_ssh),
    CheckSpec(
        "osquery.package",
        ONLY_COMPUTE,
        h.check_osquery_package,
        lambda x: (x.osquery_package,),
        SSH,
    ),
    CheckSpec("osqueryd.running", ONLY_COMPUTE, h.check_osqueryd, lambda x: (x.osqueryd,), SSH),
    CheckSpec("osquery.socket", ONLY_COMPUTE, h.check_socket, lambda x: (x.socket,), SSH),
    CheckSpec("osquery.probe", ONLY_COMPUTE, h.check_probe_query, lambda x: (x.probe_query,), SSH),
    CheckSpec("osquery.flags", ONLY_COMPUTE, h.check_flags, lambda x: (x.flags,), SSH),
    CheckSpec(
        "bacalhau.binary", BOTH, h.check_bacalhau_binary, lambda x: (x.bacalhau_binary,), SSH
    ),
    CheckSpec(
        "bacalhau.config", BOTH, h.check_bacalhau_config, lambda x: (x.bacalhau_config,), SSH
    ),
    CheckSpec("bacalhau.agent", BOTH, h.check_agent, lambda x: (x.bacalhau, x.agent), SSH),
    CheckSpec(
        "container.engine",
        ONLY_COMPUTE,
        h.check_container_engine,
        lambda x: (x.docker,),
        SSH,
        required=h.container_engine_required,
    ),
    CheckSpec("cluster.node", ONLY_COMPUTE, c.check_node, needs=ORCH),
    CheckSpec(
        "cluster.identity",
        ONLY_COMPUTE,
        check_identity,
        lambda x: (x.hostname, x.node_metadata),
        SSH_AND_NODE,
    ),
    CheckSpec("cluster.approved", ONLY_COMPUTE, c.check_membership, needs=NODE),
    CheckSpec("cluster.labels", ONLY_COMPUTE, c.check_labels, needs=NODE),
    CheckSpec("cluster.features", ONLY_COMPUTE, c.check_features, needs=NODE),
    CheckSpec("cluster.version", ONLY_COMPUTE, c.check_node_version, needs=NODE),
    CheckSpec("orchestrator.api", ONLY_CONTROL_PLANE, c.check_api, orchestrator_row=True),
    CheckSpec(
        "orchestrator.version",
        ONLY_CONTROL_PLANE,
        c.check_versions,
        needs=ORCH,
        orchestrator_row=True,
    ),
    CheckSpec(w.NAME, ONLY_CONTROL_PLANE, w.check_watch, w.watch_facts, SSH, w.watch_required),
)


def checks_for(role: str) -> list[CheckSpec]:
    return [spec for spec in CHECKS if role in spec.roles]


def orchestrator_checks() -> list[CheckSpec]:
    return [spec for spec in CHECKS if spec.orchestrator_row]


def probe_facts(role: str, expected: Expected, looks: Looks) -> list[Fact[Any]]:
    """Exactly the facts of the checks that apply to ``role`` (and the hostname, for identity)."""
    facts: list[Fact[Any]] = [looks.hostname] if role == COMPUTE else []
    for spec in checks_for(role):
        if spec.required(expected) is None:
            facts += spec.facts(looks)
    return unique(facts)


def probe_script(expected: Expected, *, role: str, api_port: int) -> str:
    """The shell script verify runs on one host (one SSH command per host)."""
    return build_probe(probe_facts(role, expected, Looks.build(expected, api_port))).script


def unavailable(need: Need, s: Subject) -> str | None:
    """Why ``need`` is not there for ``s`` (the skip evidence), or None."""
    if need is Need.SSH and s.facts is None:
        return "not checked: no SSH session"
    if need is Need.ORCHESTRATOR and not s.cluster.answered:
        return f"not checked: orchestrator unavailable ({s.cluster.error})"
    if need is Need.NODE and s.node is None:
        return "not checked: the node is not in the cluster"
    return None


def evaluate(spec: CheckSpec, s: Subject) -> CheckResult:
    """One check for one subject: skipped by the derived rules, else judged."""
    if (reason := spec.required(s.expected)) is not None:
        return skipped(spec.name, reason)
    for need in spec.needs:
        if (why := unavailable(need, s)) is not None:
            return skipped(spec.name, why)
    facts = spec.facts(s.looks)
    if facts and (s.facts is None or not s.facts.has_all(facts)):
        return skipped(spec.name, "not checked: the probe script stopped before this step")
    values = [s.facts[fact] for fact in facts] if s.facts is not None else []
    return spec.judge(s, *values)
