"""Coverage: which nodes of a run answered, and what that means for the exit status.

Each node of a run ends answered with rows, answered empty, failed, timed
out, missing or excluded (:class:`~fleetkit.history.Coverage`). The closing
summary of every run says so (recorded or not: coverage is counted from the
answers), and ``--min-coverage PCT`` turns a run in which fewer of the asked
nodes answered into exit 1 -- what was obtained is still delivered.

A run that asks several questions (a policy pack, a hunt in batches) counts a
node as answered only if it answered every question it was asked:
:class:`Tally` watches every answer of the run and keeps each node's first
failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleetkit.ask.answer import FleetAnswer, NodeResult, NodeStatus
from fleetkit.ask.engine import Asker
from fleetkit.ask.scope import Question, Scope
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.status import ExitStatus, UsageError
from fleetkit.history import Coverage, NodeState

if TYPE_CHECKING:
    from fleetkit.ask.record import Recording

#: A node's state in the history, from the engine's status (OK splits by rows).
_STATES = {
    NodeStatus.FAILED: NodeState.FAILED,
    NodeStatus.TIMED_OUT: NodeState.TIMED_OUT,
    NodeStatus.MISSING: NodeState.MISSING,
    NodeStatus.EXCLUDED: NodeState.EXCLUDED,
}


def node_state(node: NodeResult) -> NodeState:
    if node.ok:
        return NodeState.ROWS if node.has_rows else NodeState.EMPTY
    return _STATES[node.status]


# --------------------------------------------------------------------------- coverage


def coverage_of(states: Mapping[str, NodeState]) -> Coverage:
    """How many nodes ended in each state (``states``: node ID -> state)."""
    counts = {state: 0 for state in NodeState}
    for state in states.values():
        counts[state] += 1
    return Coverage(*(counts[state] for state in NodeState))


def answer_states(answer: FleetAnswer) -> dict[str, NodeState]:
    return {node.node_id: node_state(node) for node in answer.nodes}


def coverage_line(coverage: Coverage) -> str:
    """The closing summary's coverage line (every run, recorded or not)."""
    return (
        f"coverage: {coverage.answered}/{coverage.asked} nodes answered "
        f"({coverage.percent:.0f}%): {coverage.rows} with rows, {coverage.empty} empty, "
        f"{coverage.failed} failed, {coverage.timed_out} timed out, {coverage.missing} missing"
        + (f"; {coverage.excluded} excluded" if coverage.excluded else "")
    )


def optional_number(
    value: str | float | None, *, key: str, low: float, high: float, expected: str
) -> float | None:
    """An optional number option (empty: None) within ``low..high``; exit 2 naming ``key``."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not low <= number <= high:
        raise UsageError(f"must be {expected}, got {value!r}", key=key)
    return number


def check_min_coverage(value: str | float | None) -> float | None:
    """``--min-coverage PCT``: a percentage from 0 to 100 (bad input: exit 2, nothing asked)."""
    return optional_number(
        value, key="--min-coverage", low=0, high=100, expected="a percentage from 0 to 100"
    )


def coverage_status(env: Environment, coverage: Coverage, minimum: float | None) -> ExitStatus:
    """FAILURE when fewer nodes answered than ``--min-coverage`` asks (said on stderr)."""
    if minimum is None or coverage.percent >= minimum:
        return ExitStatus.SUCCESS
    env.say(
        f"coverage {coverage.percent:.0f}% is below --min-coverage {minimum:g}% "
        f"({coverage.answered} of {coverage.asked} nodes answered) (exit 1)"
    )
    return ExitStatus.FAILURE


@dataclass(frozen=True)
class Seen:
    """A node as a run that asks several questions saw it (its first failure wins)."""

    hostname: str
    state: NodeState
    error: str | None = None
    unknown: bool = False


@dataclass
class Tally:
    """Every node's state over all the answers of one run (policy, hunt): a node answered
    only if it answered every question it was asked."""

    nodes: dict[str, Seen] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)

    def add(self, answer: FleetAnswer) -> None:
        if answer.job_id:
            self.job_ids.append(answer.job_id)
        for node in answer.nodes:
            seen = self.nodes.get(node.node_id)
            if seen is None or (seen.state.answered and not node.ok):
                state = NodeState.ROWS if node.ok else node_state(node)
                self.nodes[node.node_id] = Seen(node.hostname, state, node.error, node.unknown)

    def wrap(self, ask: Asker) -> Asker:
        def asking(question: Question, scope: Scope) -> FleetAnswer:
            answer = ask(question, scope)
            self.add(answer)
            return answer

        return asking

    @property
    def job_id(self) -> str | None:
        """The run's jobs, for the history's ``job_id`` (several: comma-separated)."""
        return ",".join(self.job_ids)[:1000] or None

    def record(self, recording: Recording, rows: Mapping[str, list[bytes]]) -> dict[str, NodeState]:
        """Record every node with its rows; returns the states coverage counts."""
        states = {}
        for node_id in sorted(self.nodes):
            seen = self.nodes[node_id]
            mine = rows.get(node_id, [])
            state = seen.state
            if state.answered:
                state = NodeState.ROWS if mine else NodeState.EMPTY
            states[node_id] = state
            recording.add_node(
                node_id=node_id,
                hostname=seen.hostname,
                state=state,
                rows=mine,
                error=seen.error,
                unknown=seen.unknown,
            )
        return states


def worst(*statuses: ExitStatus) -> ExitStatus:
    """The exit status that says most: findings (3) over failures (1) over success."""
    order = (ExitStatus.FINDINGS, ExitStatus.FAILURE, ExitStatus.SUCCESS)
    return next((s for s in order if s in statuses), ExitStatus.SUCCESS)
