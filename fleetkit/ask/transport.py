"""How a question reaches the nodes: the :class:`Transport` protocol and what it hands back.

A transport carries one :class:`~fleetkit.ask.scope.Question` to the nodes of
a :class:`~fleetkit.ask.scope.Scope` and returns a :class:`Collected`: one raw
:class:`NodeReply` per node, as received, not yet trusted. The engine then
validates every reply (:func:`fleetkit.ask.validate.settle`) before anyone
reads a row. A new transport (an osquery extension socket, another
scheduler) implements ``ask`` and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Protocol

from fleetkit.ask.answer import NodeStatus
from fleetkit.ask.osqueryi import classify_exit

if TYPE_CHECKING:  # validation and the merge import this module: keep them light
    from fleetkit.ask.scope import Question, Scope
    from fleetkit.foundation.environment import Environment

#: A node's raw osqueryi stdout: bytes, or an anonymous temporary file (spooled from S3).
Output = bytes | IO[bytes]


@dataclass(frozen=True)
class NodeReply:
    """One node's answer as the transport received it (untrusted, unparsed)."""

    node_id: str
    hostname: str
    #: OK = osqueryi exited 0 (its output still has to pass validation).
    status: NodeStatus
    output: Output | None = None
    error: str | None = None
    exit_code: int | None = None
    #: The node is an inventory host (answers of strangers are excluded by default).
    in_inventory: bool = True

    def discard(self) -> None:
        """Close a spooled output that will not be read."""
        if self.output is not None and not isinstance(self.output, bytes):
            with contextlib.suppress(OSError):
                self.output.close()


def osqueryi_reply(
    node_id: str,
    hostname: str,
    *,
    exit_code: int | None,
    stdout: Output | None,
    stderr: bytes | str | None,
    in_inventory: bool = True,
) -> NodeReply:
    """A finished osqueryi run: the exit code decides before the output is looked at."""
    head = stdout if isinstance(stdout, bytes) or stdout is None else None
    problem = classify_exit(exit_code, head, stderr)
    if problem is not None:
        return NodeReply(
            node_id,
            hostname,
            NodeStatus.FAILED,
            error=problem,
            exit_code=exit_code,
            in_inventory=in_inventory,
        )
    return NodeReply(
        node_id,
        hostname,
        NodeStatus.OK,
        output=stdout if stdout is not None else b"",
        exit_code=0,
        in_inventory=in_inventory,
    )


@dataclass(frozen=True)
class Collected:
    """Everything a transport gathered for one question."""

    replies: tuple[NodeReply, ...]
    job_id: str | None = None
    #: Node IDs the question was meant for.
    expected: tuple[str, ...] = ()


class Transport(Protocol):
    """Carries one question to the nodes of a scope; never prints results."""

    def ask(self, question: Question, scope: Scope) -> Collected: ...


class Progress:
    """``query: 3/10 nodes answered`` on stderr, one update per change."""

    def __init__(self, env: Environment, expected: int) -> None:
        self.env = env
        self.expected = expected
        self.answered = 0
        self.shown = -1

    def step(self) -> None:
        self.show(self.answered + 1)

    def show(self, answered: int) -> None:
        self.answered = answered
        if answered != self.shown:
            self.shown = answered
            self.env.progress(f"query: {answered}/{self.expected} nodes answered")


def by_node_id(replies: Sequence[NodeReply]) -> tuple[NodeReply, ...]:
    """Replies in the answer's stable order."""
    return tuple(sorted(replies, key=lambda r: r.node_id))
