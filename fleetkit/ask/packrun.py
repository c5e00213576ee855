"""A pack run: ONE ops job per node answers every statement of a pack, then one answer each.

A pack of K statements used to cost K jobs (K submissions, K waits, K
result reads). Here the task is :data:`fleetkit.ask.batch.SCRIPT`, which
answers every statement inside one execution and frames each answer, and
the Bacalhau transport runs it like any query job (expected node set,
strangers, RunOutput or the S3 copy; :meth:`BacalhauTransport.run_task`).
Each node's framed stdout is then split by
:func:`~fleetkit.ask.batch.parse_pack_output` and every statement's part
goes through the engine's ordinary validation
(:func:`~fleetkit.ask.validate.settle`), so a pack's answer to one statement
is exactly what ``invoke query`` would have made of it: a
:class:`~fleetkit.ask.answer.FleetAnswer` per statement, with every node
OK, FAILED (that statement's own osquery error, or the frame that broke),
TIMED OUT, MISSING or EXCLUDED.

What the answers mean then depends on the pack's kind (the consumers read
them through :class:`PackRun`): policy verdicts (:meth:`PackRun.verdicts`,
the same evaluation ``invoke policy`` makes, replayed over the answers
instead of asking again), hunt rows (any row is a hit) and inventory rows.

Memory, candidly: a node's framed output is split into per-statement
``bytes``, so one run holds every node's answers in memory until it is
closed (the single-query path keeps large outputs in spooled files). Packs
are meant for small answers; ``batch.DEFAULT_MAX_QUERY_BYTES`` bounds each one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from fleetkit.ask.answer import FleetAnswer, NodeResult, NodeStatus
from fleetkit.ask.batch import DEFAULT_QUERY_TIMEOUT, PackCommand, pack_command, parse_pack_output
from fleetkit.ask.engine import Asker
from fleetkit.ask.packs import Pack
from fleetkit.ask.scope import Question, Scope
from fleetkit.ask.transport import Collected, NodeReply, osqueryi_reply
from fleetkit.ask.validate import settle
from fleetkit.ask.verdicts import HostVerdict, evaluate_policy
from fleetkit.ask.via_bacalhau import BacalhauTransport
from fleetkit.clients.bacalhau import TaskCommand

#: ``Tasks[0].Name`` of a pack job (a query job's is ``osquery``).
TASK_NAME = "osquery-pack"
#: The ``fleetkit`` label of a pack job at the orchestrator.
PURPOSE = "pack"


@dataclass(frozen=True)
class PackNode:
    """One node's part in the job, before it is split into statements."""

    node_id: str
    hostname: str
    #: The job's status on this node (OK = the task ran and its output was read).
    status: NodeStatus
    #: Why the node has no answer, or what was wrong around its frames.
    error: str | None = None
    in_inventory: bool = True


@dataclass
class PackRun:
    """A pack's answers: per statement a validated :class:`FleetAnswer`, in pack order."""

    pack: Pack
    job_id: str | None
    expected: tuple[str, ...]
    #: statement name -> the fleet's answer to it (same nodes in every answer).
    answers: Mapping[str, FleetAnswer]
    nodes: tuple[PackNode, ...] = ()
    _closed: bool = field(default=False, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.answers)

    def node_results(self, node_id: str) -> list[tuple[str, NodeResult]]:
        """(statement name, this node's result) for every statement, in pack order."""
        return self._by_node.get(node_id, [])

    @cached_property
    def _by_node(self) -> dict[str, list[tuple[str, NodeResult]]]:
        index: dict[str, list[tuple[str, NodeResult]]] = {}
        for name, answer in self.answers.items():
            for node in answer.nodes:
                index.setdefault(node.node_id, []).append((name, node))
        return index

    def replay(self) -> Asker:
        """An asker that answers the pack's statements from this run (nothing is sent).

        ``evaluate_policy`` asks its main, details and unknown queries through
        it and reads exactly what the one job brought back. The answers it
        hands out do not own the run's temporary files (closing them is a no-op:
        :meth:`close` frees them), so a statement asked twice reads the same rows.
        """
        by_sql: dict[str, FleetAnswer] = {}
        for statement in self.pack.statements:
            by_sql.setdefault(statement.sql, self.answers[statement.name])

        def ask(question: Question, scope: Scope) -> FleetAnswer:
            answer = by_sql.get(question.sql)
            if answer is None:  # a policy asking what its pack does not hold: a bug
                raise KeyError(f"pack {self.pack.name} has no statement {question.sql[:80]!r}")
            return replace(answer, spools=())

        return ask

    def verdicts(self, scope: Scope) -> list[HostVerdict]:
        """Per policy, per host: PASS / FAIL / UNKNOWN / ERROR, as ``invoke policy`` decides."""
        ask = self.replay()
        return [
            verdict
            for policy in self.pack.policies
            for verdict in evaluate_policy(policy, ask, scope, {})
        ]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for answer in self.answers.values():
                answer.close()

    def __enter__(self) -> PackRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pack_task(
    pack: Pack, *, socket_path: str, query_timeout: int
) -> tuple[TaskCommand, PackCommand]:
    """The task that answers every statement of ``pack`` (and its framing, to read it back)."""
    command = pack_command(pack.statements, socket_path=socket_path, query_timeout=query_timeout)
    return TaskCommand(command.entrypoint, command.parameters, name=TASK_NAME), command


def run_pack(
    transport: BacalhauTransport,
    pack: Pack,
    scope: Scope,
    *,
    query_timeout: int = DEFAULT_QUERY_TIMEOUT,
    redacted: Sequence[str] = (),
    on_submitted: Callable[[str], None] | None = None,
) -> PackRun:
    """Ask ``pack`` of the scope's nodes in one job; raises OrchestratorError when the
    cluster cannot be asked at all (and KeyboardInterrupt after the job was stopped)."""
    task, command = pack_task(
        pack, socket_path=transport.settings.osquery.extensions_socket, query_timeout=query_timeout
    )
    collected = transport.run_task(task, scope, purpose=PURPOSE, on_submitted=on_submitted)
    return settle_pack(
        pack, collected, command, redacted=redacted, include_unknown=scope.include_unknown_nodes
    )


def settle_pack(
    pack: Pack,
    collected: Collected,
    command: PackCommand,
    *,
    redacted: Sequence[str] = (),
    include_unknown: bool = False,
) -> PackRun:
    """Split every node's framed reply into statements and validate each statement's answers."""
    per_statement: dict[str, list[NodeReply]] = {name: [] for name in command.names}
    nodes: list[PackNode] = []
    for reply in collected.replies:
        parts, node = split_reply(reply, command)
        nodes.append(node)
        for name, part in zip(command.names, parts, strict=True):
            per_statement[name].append(part)
    answers: dict[str, FleetAnswer] = {}
    try:
        for name, replies in per_statement.items():
            answers[name] = settle(
                Collected(tuple(replies), collected.job_id, collected.expected),
                redacted=redacted,
                include_unknown=include_unknown,
            )
    except BaseException:
        for answer in answers.values():
            answer.close()
        raise
    return PackRun(pack, collected.job_id, tuple(collected.expected), answers, tuple(nodes))


def split_reply(reply: NodeReply, command: PackCommand) -> tuple[list[NodeReply], PackNode]:
    """One node's reply as one raw reply per statement (in ``command.names`` order)."""
    node = PackNode(reply.node_id, reply.hostname, reply.status, reply.error, reply.in_inventory)
    if reply.status is not NodeStatus.OK or reply.output is None:
        reply.discard()
        same = NodeReply(
            reply.node_id,
            reply.hostname,
            reply.status,
            error=reply.error,
            exit_code=reply.exit_code,
            in_inventory=reply.in_inventory,
        )
        return [same] * len(command.names), node
    output = reply.output
    if not isinstance(output, bytes):
        output.seek(0)
    try:
        parsed = parse_pack_output(output, command.names, stderr_limit=command.stderr_limit)
    finally:
        reply.discard()
    parts = []
    for part in parsed.answers:
        if part.error is not None:
            parts.append(
                NodeReply(
                    reply.node_id,
                    reply.hostname,
                    NodeStatus.FAILED,
                    error=f"pack output: {part.error}",
                    in_inventory=reply.in_inventory,
                )
            )
            continue
        parts.append(
            osqueryi_reply(
                reply.node_id,
                reply.hostname,
                exit_code=part.exit_code,
                stdout=part.stdout,
                stderr=part.stderr_text,
                in_inventory=reply.in_inventory,
            )
        )
    if parsed.problem is not None:
        node = replace(node, error=f"pack output: {parsed.problem}")
    return parts, node


def statement_rows(run: PackRun, node_id: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(statement name, row) of every statement this node answered, in pack order."""
    for name, result in run.node_results(node_id):
        if result.ok:
            for row in result.iter_rows():
                yield name, row


def statement_errors(run: PackRun, node_id: str) -> dict[str, str]:
    """statement name -> why this node has no answer to it (only the statements it missed)."""
    return {
        name: f"{result.status.value}: {result.error or 'no answer'}"
        for name, result in run.node_results(node_id)
        if not result.ok
    }


def close_quietly(run: PackRun | None) -> None:
    if run is not None:
        with contextlib.suppress(OSError):
            run.close()
