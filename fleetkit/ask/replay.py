"""Recorded runs read back: what ``show`` prints, and what ``--retry-missing`` asks again.

``show``: a query run's nodes are rebuilt into a :class:`FleetAnswer` from
their stored blocks -- framed as osqueryi prints them and validated again
like any node's output (the history file is input too) -- and written by the
same merge writer the run used, with the run's redacted columns; a policy or
hunt run is rendered by its view (:mod:`fleetkit.ask.views`) from its
recorded rows. Either way the bytes are the run's, and nodes that answered
late (``--retry-missing``) carry ``answeredLate``. One node's rows are read
at a time; rebuilt outputs stay in memory up to a budget, then go to
anonymous temporary files (as outputs spooled from S3 do), so a run is never
held whole.

``--retry-missing RUN``: the question comes from the run itself
(``RunSummary.asked``). Query runs record their SQL and hunt runs their SQL
batches, so both can be asked again of the nodes that failed, timed out or
were missing. Policy runs are not retried: a verdict needs the pack's
policies (meaning, details and unknown queries), which a run records only by
fingerprint; ``invoke policy`` again asks every host, and its states
(first failed, fixed) continue from the earlier runs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO

from fleetkit.ask.answer import FleetAnswer, NodeStatus
from fleetkit.ask.merge import write_merged
from fleetkit.ask.scope import Question, Scope, SqlRules, Via
from fleetkit.ask.transport import Collected, NodeReply, Output, by_node_id
from fleetkit.ask.validate import settle
from fleetkit.ask.views import NodeRows, policy_records, render_hunt, render_policy
from fleetkit.foundation.inventory import Host, Inventory
from fleetkit.foundation.output import ByteSink
from fleetkit.foundation.selectors import Selector
from fleetkit.foundation.status import UsageError
from fleetkit.history import History, HistoryError, NodeEntry, NodeState, RowBlock, RunSummary
from fleetkit.history import as_osqueryi_output as framed

#: The engine's status of a recorded node that did not answer.
_STATUS = {
    NodeState.FAILED: NodeStatus.FAILED,
    NodeState.TIMED_OUT: NodeStatus.TIMED_OUT,
    NodeState.MISSING: NodeStatus.MISSING,
    NodeState.EXCLUDED: NodeStatus.EXCLUDED,
}
#: Rebuilt outputs kept in memory, all nodes together; beyond, each goes to a temporary file.
_MEMORY_BUDGET = 8 << 20
#: Kinds whose rows are the merged answer (``watch`` runs of packs are recorded that way too).
VIEWED_KINDS = ("policy", "hunt")


# --------------------------------------------------------------------------- show


def write_run(history: History, run: RunSummary, fmt: str, out: ByteSink) -> None:
    """What ``run`` printed in ``fmt`` (late answers marked), onto ``out``."""
    if run.kind == "policy":
        grace = run.asked.get("grace")
        states = history.policy_states(
            run.run_id, grace_days=float(grace) if isinstance(grace, int | float) else None
        )
        policies = [str(p) for p in run.asked.get("policies", []) if isinstance(p, str)]
        out.write(render_policy(policy_records(recorded_rows(history, run), policies, states), fmt))
    elif run.kind == "hunt":
        out.write(render_hunt(recorded_rows(history, run), frozenset(run.redacted), fmt))
    else:
        with recorded_answer(history, run) as answer:
            write_merged(answer, fmt, out)


def recorded_answer(history: History, run: RunSummary) -> FleetAnswer:
    """The run's answer, rebuilt node by node and validated; close it after use."""
    spool = _Spool()
    replies: list[NodeReply] = []
    late: set[str] = set()
    try:
        for entry, block in history.node_blocks(run.run_id):
            if entry.late:
                late.add(entry.node_id)
            ok = entry.state.answered
            replies.append(
                NodeReply(
                    entry.node_id,
                    entry.hostname,
                    NodeStatus.OK if ok else _STATUS[entry.state],
                    output=spool.keep(framed(block)) if ok else None,
                    error=entry.error,
                    exit_code=entry.exit_code,
                    in_inventory=not entry.unknown,
                )
            )
    except BaseException:
        for reply in replies:
            reply.discard()
        raise
    answer = settle(
        Collected(by_node_id(replies), job_id=run.job_id),
        redacted=run.redacted,
        include_unknown=True,
    )
    answered = {reply.node_id for reply in replies if reply.status is NodeStatus.OK}
    broken = [n for n in answer.nodes if n.node_id in answered and not n.ok]
    if broken:
        answer.close()
        raise HistoryError(
            f"history file {history.path}: run {run.run_id}, node {broken[0].node_id}: its "
            f"recorded rows do not read back ({broken[0].error}); the record is corrupt"
        )
    nodes = tuple(replace(n, late=True) if n.node_id in late else n for n in answer.nodes)
    return replace(answer, nodes=nodes)


@dataclass
class _Spool:
    """Rebuilt outputs: bytes while the budget lasts, then anonymous temporary files."""

    used: int = 0

    def keep(self, data: bytes) -> Output:
        if self.used + len(data) <= _MEMORY_BUDGET:
            self.used += len(data)
            return data
        handle: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - the answer closes it
        handle.write(data)
        return handle


def recorded_rows(history: History, run: RunSummary) -> list[NodeRows]:
    """A policy or hunt run's nodes with their recorded rows, in node order."""
    nodes = [
        NodeRows(entry.node_id, entry.hostname, _rows(entry, block, run), entry.unknown, entry.late)
        for entry, block in history.node_blocks(run.run_id)
    ]
    return sorted(nodes, key=lambda node: node.node_id)


def _rows(entry: NodeEntry, block: RowBlock, run: RunSummary) -> list[dict[str, str]]:
    rows = []
    for line in block.lines():
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not all(isinstance(v, str) for v in row.values()):
            raise HistoryError(
                f"history: run {run.run_id}, node {entry.node_id}: a recorded row is not an "
                "object of strings; the record is corrupt"
            )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- retry


@dataclass(frozen=True)
class Retry:
    """What ``--retry-missing`` asks: the run's questions, of its unanswered nodes."""

    run: RunSummary
    questions: tuple[Question, ...]
    scope: Scope
    #: Unanswered nodes that are not (or no longer) inventory hosts: not asked.
    skipped: tuple[str, ...]


def plan_retry(
    history: History, run_id: str, inventory: Inventory, rules: SqlRules
) -> Retry | None:
    """The retry of ``run_id``; None when every node answered. UsageError (exit 2) for a run
    that cannot be retried, naming why."""
    run = history.get_run(run_id)
    questions = _recorded_questions(run, rules)
    unanswered = history.unanswered(run.run_id)
    if not unanswered:
        return None
    hosts: list[Host] = []
    skipped: list[str] = []
    for entry in unanswered:
        host = inventory.get(entry.node_id)
        if host is not None and host.is_compute:
            hosts.append(host)
        else:
            skipped.append(entry.node_id)
    timeout = run.scope.get("timeout")
    scope = Scope(
        selector=Selector(),
        hosts=tuple(hosts),
        via=Via.parse(run.transport),
        timeout=float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 120.0,
    )
    return Retry(run, questions, scope, tuple(skipped))


def _recorded_questions(run: RunSummary, rules: SqlRules) -> tuple[Question, ...]:
    if run.kind == "query" and isinstance(run.asked.get("sql"), str):
        statements = [run.asked["sql"]]
    elif run.kind == "hunt" and isinstance(run.asked.get("batches"), list):
        statements = [s for s in run.asked["batches"] if isinstance(s, str)]
    elif run.kind == "policy":
        raise UsageError(
            f"run {run.run_id} is a policy run: policies are evaluated from their packs, not "
            "from recorded SQL; run invoke policy again (its states continue from this run)",
            key="--retry-missing",
        )
    else:
        raise UsageError(
            f"run {run.run_id} ({run.kind}) did not record the SQL it asked; it cannot be retried",
            key="--retry-missing",
        )
    if not statements:
        raise UsageError(f"run {run.run_id} recorded no SQL to ask again", key="--retry-missing")
    return tuple(Question.parse(sql, rules=rules) for sql in statements)


def late_nodes(answer: FleetAnswer) -> FleetAnswer:
    """``answer`` with every node marked as answering late (the retry's own output)."""
    return replace(answer, nodes=tuple(replace(node, late=True) for node in answer.nodes))


def retry_nodes(retry: Retry) -> Iterator[str]:
    """The node IDs the retry asks (for the summary)."""
    return (host.name for host in retry.scope.hosts or ())
