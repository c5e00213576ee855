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
query of digests. A node whose rows changed since the previous run of the
same question and scope had its changes computed when it was recorded
(:mod:`~fleetkit.history.baseline`): the diff of those two runs reads them.
Any other pair of blocks is decompressed (on a worker thread, one node
ahead) and compared as multisets of row bytes
(:func:`~fleetkit.history.rows.row_changes`). Memory is bounded by one
node's rows from each run.
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
from fleetkit.history.rows import row_changes

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
    #: Nodes to compare: (entry before, entry after, digest of the rows before).
    _pairs: list[tuple[NodeEntry, NodeEntry, bytes | None]] = field(
        default_factory=list, repr=False
    )

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
                    diff._pairs.append((previous[0], entry, previous[1]))
        for node_id, (entry, _) in old.items():
            if node_id not in new and entry.state.answered:
                diff.disappeared.append(_node_change(DISAPPEARED, (entry, None), None))
        return diff

    def changes(self) -> Iterator[RowChange]:
        """Row events, node by node (see the module doc for order and semantics)."""
        if self._reader is None or not self._pairs:
            return
        pairs = self._pairs
        # Reading, decompressing (no GIL held) and comparing run one node ahead of the caller.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-diff") as pool:
            pending = pool.submit(self._compare, pairs[0])
            for index in range(len(pairs)):
                found = pending.result()
                if index + 1 < len(pairs):
                    pending = pool.submit(self._compare, pairs[index + 1])
                yield from found

    def _compare(self, pair: tuple[NodeEntry, NodeEntry, bytes | None]) -> list[RowChange]:
        reader = self._reader
        assert reader is not None
        old, new, old_digest = pair
        before, after = self.before.run_id, self.after.run_id
        known = reader.node_changes(after, new.node_id)
        if known is not None and (known.base_run_id, known.base_digest) == (before, old_digest):
            return events(new, known.removed, known.added)  # computed when it was recorded
        lines_a = reader.node_block(before, old.node_id).lines()
        lines_b = reader.node_block(after, new.node_id).lines()
        return events(new, *row_changes(lines_a, lines_b))

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
