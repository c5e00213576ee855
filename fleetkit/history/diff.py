"""What changed between two runs of the same question, per node.

The shape is osquery's differential log: one event per row that was
``added`` or ``removed``, with the node (``nodeID``, ``hostname``) and the
row under ``columns``; plus the nodes that ``appeared`` (answered in the
later run but not the earlier: new, or back from missing/failed) or
``disappeared`` (answered before, not now). Rows of a node that appeared or
disappeared are not listed as added or removed: nothing is known about
them in the other run (``show`` lists them).

Semantics, decided here:

- Rows compare by their recorded bytes (compact JSON, keys in the order
  osqueryi printed them), so equal rows are equal bytes.
- Order does not matter: identical rows in a different order are no change.
- Duplicates count (multisets): a row present twice before and three times
  now is one ``added`` event; present twice and now once, one ``removed``.
- Events come node by node in the later run's node order (removed first,
  each side in its recorded row order), then the nodes that disappeared.

Speed: every node entry carries a digest of its stored rows; equal digests
settle a node without reading its rows, so an unchanged fleet costs one
query of digests. A node whose rows changed is compared as multisets of row
bytes (:func:`~fleetkit.history.rows.row_changes`: each row hashed once, in
C, and compared byte for byte on a hash match): its two blocks are read and
decompressed (no GIL held) on a worker thread one node ahead of the
comparison. Memory is bounded by one node's rows from each run (and the next
node's blocks).

Two designs were measured against this one and dropped
(``bench/bench_history.py``): a per-row index stored with each block
(CRC-32 and Adler-32 of every row, compared as integer sets) costs more to
build than the set hashing it saves, since in CPython a checksum call per
row is dearer than the hash a set takes; and comparing each node with the
previous run while recording (so the diff only reads stored changes) does
the same work, contends with the merge for the GIL, and makes every run pay
for a diff nobody may ask for.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fleetkit.history.errors import HistoryError
from fleetkit.history.model import NodeEntry, NodeState, RunSummary
from fleetkit.history.reader import RunReader
from fleetkit.history.rows import SEPARATOR, row_changes

ADDED = "added"
REMOVED = "removed"
APPEARED = "appeared"
DISAPPEARED = "disappeared"


@dataclass(frozen=True)
class RowChange:
    action: str
    node_id: str
    hostname: str
    #: The row as recorded: compact JSON of the untagged row.
    row: bytes

    def columns(self) -> dict[str, str]:
        try:
            value = json.loads(self.row)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise HistoryError(f"corrupt row of node {self.node_id} in the history")
        return value

    def record(self) -> dict[str, Any]:
        """The differential-log event: action, nodeID, hostname, columns."""
        return {
            "action": self.action,
            "nodeID": self.node_id,
            "hostname": self.hostname,
            "columns": self.columns(),
        }

    def flat(self) -> dict[str, str]:
        """For CSV and tables: action, nodeID, hostname, then the row's columns."""
        return {"action": self.action, "nodeID": self.node_id, "hostname": self.hostname} | {
            k: v for k, v in self.columns().items() if k not in ("action", "nodeID", "hostname")
        }

    def json_bytes(self) -> bytes:
        """:meth:`record` as compact JSON, built without decoding the row."""
        return _event_head(self.action, self.node_id, self.hostname) + self.row + b"}"


@dataclass(frozen=True)
class NodeChange:
    action: str
    node_id: str
    hostname: str
    #: The node's state in the earlier and the later run (None: not in that run).
    before: NodeState | None
    after: NodeState | None

    def record(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "nodeID": self.node_id,
            "hostname": self.hostname,
            "before": self.before.value if self.before else None,
            "after": self.after.value if self.after else None,
        }


@dataclass
class RunDiff:
    """``before`` -> ``after``; :meth:`changes` streams the row events."""

    before: RunSummary
    after: RunSummary
    appeared: list[NodeChange] = field(default_factory=list)
    disappeared: list[NodeChange] = field(default_factory=list)
    _reader: RunReader | None = field(default=None, repr=False)
    #: Nodes to compare: (entry before, entry after).
    _pairs: list[tuple[NodeEntry, NodeEntry]] = field(default_factory=list, repr=False)

    @classmethod
    def between(cls, reader: RunReader, before: RunSummary, after: RunSummary) -> RunDiff:
        old = reader.digests(before.run_id)
        new = reader.digests(after.run_id)
        diff = cls(before, after, _reader=reader)
        for node_id, (entry, digest) in new.items():
            previous = old.get(node_id)
            was_answered = previous is not None and previous[0].state.answered
            if entry.state.answered and not was_answered:
                diff.appeared.append(_node_change(APPEARED, previous, entry))
            elif was_answered and not entry.state.answered:
                assert previous is not None
                diff.disappeared.append(_node_change(DISAPPEARED, previous, entry))
            elif entry.state.answered and previous is not None:
                same = digest is not None and digest == previous[1]
                if (entry.row_count or previous[0].row_count) and not same:
                    diff._pairs.append((previous[0], entry))
        for node_id, (entry, _) in old.items():
            if node_id not in new and entry.state.answered:
                diff.disappeared.append(_node_change(DISAPPEARED, (entry, None), None))
        return diff

    def changes(self) -> Iterator[RowChange]:
        """Row events, node by node (see the module doc for order and semantics)."""
        reader = self._reader
        if reader is None or not self._pairs:
            return
        pairs = self._pairs

        def load(pair: tuple[NodeEntry, NodeEntry]) -> tuple[bytes, bytes]:
            return (
                reader.node_block(self.before.run_id, pair[0].node_id).raw(),
                reader.node_block(self.after.run_id, pair[1].node_id).raw(),
            )

        # Reading and decompressing (no GIL held) run one node ahead of comparing.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-diff") as pool:
            pending = pool.submit(load, pairs[0])
            for index, (_, entry) in enumerate(pairs):
                before, after = pending.result()
                if index + 1 < len(pairs):
                    pending = pool.submit(load, pairs[index + 1])
                lines_a = before.split(SEPARATOR) if before else []
                lines_b = after.split(SEPARATOR) if after else []
                yield from events(entry, *row_changes(lines_a, lines_b))

    def node_events(self) -> list[NodeChange]:
        return [*self.appeared, *self.disappeared]


def node_changes(
    node_id: str, hostname: str, before: list[bytes], after: list[bytes]
) -> list[RowChange]:
    """One node's row events from its rows before and after (see :func:`row_changes`)."""
    entry = NodeEntry(node_id, hostname, NodeState.ROWS, len(after))
    return events(entry, *row_changes(before, after))


def events(entry: NodeEntry, removed: list[bytes], added: list[bytes]) -> list[RowChange]:
    """Removed rows first, then added ones (each side in its recorded order)."""
    return [
        *(RowChange(REMOVED, entry.node_id, entry.hostname, row) for row in removed),
        *(RowChange(ADDED, entry.node_id, entry.hostname, row) for row in added),
    ]


@functools.lru_cache(maxsize=64)
def _event_head(action: str, node_id: str, hostname: str) -> bytes:
    head = json.dumps(
        {"action": action, "nodeID": node_id, "hostname": hostname},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8", "backslashreplace")
    return head[:-1] + b',"columns":'


def _node_change(
    action: str, previous: tuple[NodeEntry, bytes | None] | None, entry: NodeEntry | None
) -> NodeChange:
    old = previous[0] if previous else None
    named = entry or old
    assert named is not None
    return NodeChange(
        action=action,
        node_id=named.node_id,
        hostname=named.hostname,
        before=old.state if old else None,
        after=entry.state if entry else None,
    )
