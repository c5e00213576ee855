"""A fleet's answer: one immutable :class:`NodeResult` per node, already validated.

:func:`fleetkit.ask.validate.settle` builds a :class:`FleetAnswer` from what a
transport collected. By the time anyone holds one, every node's output has
been checked against osqueryi's contract: a node whose output is garbage is
FAILED *before* the first byte is written anywhere, so :attr:`FleetAnswer.complete`
and :attr:`FleetAnswer.problems` are final, and reading an answer never changes it.

Interface for consumers (merge writers, policy, hunt, the history recorder,
scheduled packs, the report)::

    with answer:                                  # closes spooled outputs at the end
        answer.job_id, answer.expected            # job at the orchestrator (or None), asked nodes
        answer.complete                           # every counted node answered OK
        for node in answer.nodes:                 # sorted by node ID, every node exactly once
            node.node_id, node.hostname           # str: inventory name, machine's own hostname
            node.status                           # NodeStatus: ok / failed / timed out /
                                                  #   missing / excluded
            node.error                            # str | None: why it is not OK
            node.exit_code                        # osqueryi's exit code when it ran
            node.unknown                          # True: not an inventory host (included
                                                  #   on request, marked in the output)
            node.has_rows, node.row_count         # 0 rows for every status but ok (a large
                                                  #   output is counted on first need)
            node.columns                          # tuple[str, ...]: its rows' columns
            node.iter_rows()                      # Iterator[dict[str, str]], output order
            node.row_lines()                      # bytes: one compact JSON object per line
            answer.tags(node).apply(row)          # a row as the merge writes it (tagged)

A recorder tells "answered with rows" from "answered empty" by
``status is OK`` and ``has_rows``. Rows are the query's own columns, untagged
(``nodeID``/``hostname`` are the node's fields), with ``query.redact_columns``
already replaced by ``<redacted>``: an answer never holds a redacted value, so
nothing downstream (output, history, report) can leak one.

Memory: a node's rows stay where the transport left them (bytes received
over SSH or RunOutput, or an anonymous temporary file spooled from S3) and
are read one node at a time; rows that had to be re-encoded during
validation wait in one temporary file per answer. Nothing holds the parsed
rows of more than one node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO

from fleetkit.ask.rows import NO_ROWS, TAG_COLUMNS, RowData, Tags


class NodeStatus(StrEnum):
    OK = "ok"
    #: The node ran the query and it failed (non-zero exit, bad output) or the
    #: node could not be reached.
    FAILED = "failed"
    #: The node had not answered when the deadline passed.
    TIMED_OUT = "timed out"
    #: The node was expected (it matches the selection) but never ran the query.
    MISSING = "missing"
    #: A cluster node that is not an inventory host: its answer was not merged.
    EXCLUDED = "excluded"


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class NodeResult:
    """What one node answered, validated (see the module docstring for the interface)."""

    node_id: str
    hostname: str
    status: NodeStatus
    #: Why the node is not OK (osquery's stderr, the SSH error, the reason it is missing).
    error: str | None = None
    exit_code: int | None = None
    data: RowData = field(default=NO_ROWS, repr=False)
    #: Not an inventory host (only ever OK/FAILED/... when included on request).
    unknown: bool = False
    #: Answered after its run ended (a run read back from the history: ``answeredLate``).
    late: bool = False

    @property
    def ok(self) -> bool:
        return self.status is NodeStatus.OK

    @property
    def row_count(self) -> int:
        return self.data.count

    @property
    def has_rows(self) -> bool:
        return self.data.has_rows

    @property
    def columns(self) -> tuple[str, ...]:
        return self.data.columns

    def iter_rows(self) -> Iterator[dict[str, str]]:
        """The node's rows (untagged, redacted), in output order; nothing unless OK."""
        return self.data.rows()

    def rows(self) -> list[dict[str, str]]:
        return list(self.iter_rows())

    def row_lines(self) -> bytes:
        """The node's rows as compact JSON lines (untagged, redacted)."""
        return self.data.lines()

    def describe(self) -> str:
        """One line for the closing summary (raw: print it through terminal_safe)."""
        name = self.node_id
        if self.hostname not in ("", self.node_id):
            name = f"{self.node_id} ({self.hostname})"
        if self.unknown:
            name += " [not in the inventory]"
        detail = f": {self.error}" if self.error else ""
        return f"{name} {self.status.value}{detail}"


@dataclass(frozen=True)
class FleetAnswer:
    """Every node's result in a stable order (node ID), validated, immutable."""

    nodes: tuple[NodeResult, ...]
    job_id: str | None = None
    #: Node IDs the question was meant for (answered or not).
    expected: tuple[str, ...] = ()
    #: ``query.redact_columns`` in force when the answer was validated.
    redacted: frozenset[str] = frozenset()
    #: Temporary files the rows live in; closed by :meth:`close`.
    spools: tuple[IO[bytes], ...] = field(default=(), repr=False, compare=False)

    @property
    def counted(self) -> tuple[NodeResult, ...]:
        """The nodes that count for completeness: all but the excluded strangers."""
        return tuple(n for n in self.nodes if n.status is not NodeStatus.EXCLUDED)

    @property
    def complete(self) -> bool:
        """True when at least one node was asked and every counted node answered OK."""
        counted = self.counted
        return bool(counted) and all(node.ok for node in counted)

    @property
    def problems(self) -> list[NodeResult]:
        """Counted nodes that did not answer OK."""
        return [node for node in self.counted if not node.ok]

    @property
    def excluded(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.status is NodeStatus.EXCLUDED]

    @property
    def answered(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.ok]

    @property
    def row_count(self) -> int:
        return sum(node.row_count for node in self.nodes)

    @property
    def columns(self) -> tuple[str, ...]:
        """Union of the answering nodes' columns, first seen first."""
        seen: dict[str, None] = {}
        for node in self.answered:
            seen.update(dict.fromkeys(node.columns))
        return tuple(seen)

    def tags(self, node: NodeResult) -> Tags:
        """The columns fleetkit adds to ``node``'s rows."""
        return Tags(
            node.node_id, node.hostname, node.unknown, self.redacted & set(TAG_COLUMNS), node.late
        )

    def close(self) -> None:
        for spool in self.spools:
            with contextlib.suppress(OSError):
                spool.close()

    def __enter__(self) -> FleetAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
