"""Evaluating a compliance policy on the fleet: one verdict per host.

Verdicts are three-valued plus one (Zentral's model, not Fleet's two-valued
one, because a wrong PASS is the worst outcome of a compliance check):

- PASS    the host answered and complies;
- FAIL    the host answered and violates the policy (details list why);
- UNKNOWN the host answered but osquery cannot decide: its ``unknown_if_rows``
          query returned rows (e.g. SSH keys whose algorithm osquery does not
          report) and nothing proved a violation;
- ERROR   the host did not answer (unreachable, failed, timed out, missing).

Here (below the commands) so that ``policy``, scheduled packs and the report
evaluate the same way. A policy is anything shaped like :class:`PolicyLike`
(the pack model is :mod:`fleetkit.ask.packmodel`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fleetkit.ask.answer import NodeResult
from fleetkit.ask.engine import Asker
from fleetkit.ask.scope import NO_RULES, Question, Scope, SqlRules
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.status import ExitStatus
from fleetkit.history.policy import Verdict as Verdict  # one vocabulary, stored as judged


class PolicyLike(Protocol):
    """What evaluation needs of a policy (a pack's ``Policy`` has it)."""

    @property
    def pack(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def details(self) -> str: ...
    @property
    def unknown_if_rows(self) -> str | None: ...
    @property
    def resolution(self) -> str: ...
    def complies(self, rows: Sequence[dict[str, str]]) -> bool: ...


@dataclass(frozen=True)
class HostVerdict:
    """One host's result for one policy."""

    policy: PolicyLike
    node_id: str
    hostname: str
    verdict: Verdict
    details: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    @property
    def host(self) -> str:
        """The inventory name (what ``--hosts`` and ``quarantine`` take), not the machine's."""
        return self.node_id

    def record(self) -> dict[str, Any]:
        """The machine-readable shape (json/ndjson/csv)."""
        return {
            "pack": self.policy.pack,
            "policy": self.policy.name,
            "severity": self.policy.severity,
            "nodeID": self.node_id,
            "hostname": self.hostname,
            "status": self.verdict.value,
            "details": self.details,
            "error": self.error,
            "resolution": self.policy.resolution if self.verdict is not Verdict.PASS else "",
        }


def evaluate_policy(
    policy: PolicyLike,
    ask: Asker,
    scope: Scope,
    inventory: Mapping[str, Host],
    *,
    rules: SqlRules = NO_RULES,
) -> list[HostVerdict]:
    """Run one policy: the main query, then details (failing hosts) and unknown (passing hosts).

    Follow-up queries go only to the hosts concerned when they are all
    inventory hosts (``inventory`` maps names to hosts); else to the scope.
    Excluded strangers get no verdict (the asker's caller names them).
    """

    def question(sql: str) -> Question:
        return Question.parse(sql, rules=rules)

    verdicts: dict[str, HostVerdict] = {}
    main_rows: dict[str, list[dict[str, str]]] = {}
    order: list[str] = []
    with ask(question(policy.query), scope) as main:
        for node in main.counted:
            order.append(node.node_id)
            if not node.ok:
                verdicts[node.node_id] = _error(policy, node)
                continue
            rows = node.rows()
            main_rows[node.node_id] = rows
            verdict = Verdict.PASS if policy.complies(rows) else Verdict.FAIL
            verdicts[node.node_id] = HostVerdict(policy, node.node_id, node.hostname, verdict)
    failing = [n for n in order if verdicts[n].verdict is Verdict.FAIL]
    passing = [n for n in order if verdicts[n].verdict is Verdict.PASS]
    if failing:
        if policy.details == policy.query:
            for node_id in failing:
                verdicts[node_id] = replace(verdicts[node_id], details=main_rows[node_id])
        else:
            narrowed = _narrow(scope, failing, inventory)
            with ask(question(policy.details), narrowed) as answer:
                _attach_details(answer.counted, verdicts)
    if passing and policy.unknown_if_rows:
        narrowed = _narrow(scope, passing, inventory)
        with ask(question(policy.unknown_if_rows), narrowed) as answer:
            _settle_unknown(policy, answer.counted, passing, verdicts)
    return [verdicts[node_id] for node_id in order]


def _narrow(scope: Scope, node_ids: list[str], inventory: Mapping[str, Host]) -> Scope:
    """Ask only these nodes when they are inventory hosts (node ID = inventory name)."""
    if all(n in inventory for n in node_ids):
        return scope.narrowed(inventory[n] for n in node_ids)
    return scope


def _attach_details(nodes: Sequence[NodeResult], verdicts: dict[str, HostVerdict]) -> None:
    for node in nodes:
        verdict = verdicts.get(node.node_id)
        if verdict is None or verdict.verdict is not Verdict.FAIL:
            continue
        if node.ok:
            verdicts[node.node_id] = replace(verdict, details=node.rows())
        else:
            # The violation is proven by the main query; only the listing is missing.
            error = f"details query: {node.error or node.status.value}"
            verdicts[node.node_id] = replace(verdict, error=error)


def _settle_unknown(
    policy: PolicyLike,
    nodes: Sequence[NodeResult],
    passing: list[str],
    verdicts: dict[str, HostVerdict],
) -> None:
    answered: set[str] = set()
    for node in nodes:
        verdict = verdicts.get(node.node_id)
        if verdict is None or verdict.verdict is not Verdict.PASS:
            continue
        answered.add(node.node_id)
        if not node.ok:
            # A PASS that could not be confirmed is not a PASS.
            verdicts[node.node_id] = _error(policy, node, prefix="unknown_if_rows query: ")
        elif node.has_rows:
            verdicts[node.node_id] = replace(verdict, verdict=Verdict.UNKNOWN, details=node.rows())
    for node_id in passing:
        if node_id not in answered:
            verdicts[node_id] = replace(
                verdicts[node_id],
                verdict=Verdict.ERROR,
                error="unknown_if_rows query: node did not answer",
            )


def _error(policy: PolicyLike, node: NodeResult, prefix: str = "") -> HostVerdict:
    return HostVerdict(
        policy,
        node.node_id,
        node.hostname,
        Verdict.ERROR,
        error=f"{prefix}{node.status.value}: {node.error or 'no answer'}",
    )


def exit_status_for_verdicts(verdicts: Iterable[HostVerdict]) -> ExitStatus:
    """FAIL (3) wins over ERROR (1); PASS and UNKNOWN alone are 0."""
    seen = {v.verdict for v in verdicts}
    if Verdict.FAIL in seen:
        return ExitStatus.FINDINGS
    if Verdict.ERROR in seen or not seen:
        return ExitStatus.FAILURE
    return ExitStatus.SUCCESS
