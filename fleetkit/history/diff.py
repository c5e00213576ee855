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
query of digests. A node whose rows changed is compared by its row index
(:class:`~fleetkit.history.rows.RowIndex`, computed once when it was
recorded): the two runs' row keys as sets of integers, so unchanged rows are
never split, hashed or compared again; only a side that lost or gained rows
is decompressed, and only those rows are cut out of it. Rows sharing a key
are taken as equal (two different rows of one node share a 64-bit key with
odds of about 2**-64). A node recorded without an index (or with one that
does not match its rows) is compared row by row, as multisets of bytes.
Memory is bounded by one node's rows from each run.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fleetkit.history.errors import HistoryError
from fleetkit.history.model import NodeEntry, NodeState, RunSummary
from fleetkit.history.reader import RunReader
from fleetkit.history.rows import RowIndex

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

    def _compare(self, pair: tuple[NodeEntry, NodeEntry]) -> list[RowChange]:
        reader = self._reader
        assert reader is not None
        old, new = pair
        before, after = self.before.run_id, self.after.run_id
        index_a, index_b = reader.row_index(before, old), reader.row_index(after, new)
        if index_a is not None and index_b is not None:
            try:
                return indexed_changes(reader, (before, old, index_a), (after, new, index_b))
            except ValueError:
                pass  # an index that does not tile its rows: compare the rows themselves
        lines_a = reader.node_block(before, old.node_id).lines()
        lines_b = reader.node_block(after, new.node_id).lines()
        return list(node_changes(new.node_id, new.hostname, lines_a, lines_b))

    def node_events(self) -> list[NodeChange]:
        return [*self.appeared, *self.disappeared]


def node_changes(
    node_id: str, hostname: str, before: list[bytes], after: list[bytes]
) -> Iterator[RowChange]:
    """Multiset difference of one node's rows, in recorded order.

    Sets do the work in C; rows repeated within a node (rare: osquery rows
    usually differ in some column) take the counting path.
    """
    old, new = set(before), set(after)
    if len(old) != len(before) or len(new) != len(after):
        yield from _counted_changes(node_id, hostname, before, after)
        return
    removed, added = old - new, new - old
    if removed:
        for row in [row for row in before if row in removed]:
            yield RowChange(REMOVED, node_id, hostname, row)
    if added:
        for row in [row for row in after if row in added]:
            yield RowChange(ADDED, node_id, hostname, row)


#: One side of an indexed comparison: the run, the node's entry in it, its row index.
Side = tuple[str, NodeEntry, RowIndex]


def indexed_changes(reader: RunReader, old: Side, new: Side) -> list[RowChange]:
    """:func:`node_changes` on row keys: the rows' bytes are read only for the rows whose
    keys are not on both sides (ValueError when an index does not match its rows)."""
    (run_a, entry_a, index_a), (run_b, entry, index_b) = old, new
    keys_a, keys_b = index_a.keys, index_b.keys
    set_a, set_b = set(keys_a), set(keys_b)
    if len(set_a) == len(keys_a) and len(set_b) == len(keys_b):
        if set_a == set_b:
            return []
        gone, fresh = set_a - set_b, set_b - set_a
        want_a: Iterable[bool] = map(gone.__contains__, keys_a)
        want_b: Iterable[bool] = map(fresh.__contains__, keys_b)
    else:  # a key repeated within a node: multisets
        count_a, count_b = Counter(keys_a), Counter(keys_b)
        if count_a == count_b:
            return []
        gone, fresh = set(count_a - count_b), set(count_b - count_a)
        want_a, want_b = _first(keys_a, count_a - count_b), _first(keys_b, count_b - count_a)
    removed = index_a.cut(reader.node_block(run_a, entry_a.node_id).raw(), want_a) if gone else []
    added = index_b.cut(reader.node_block(run_b, entry.node_id).raw(), want_b) if fresh else []
    return [
        *(RowChange(REMOVED, entry.node_id, entry.hostname, row) for row in removed),
        *(RowChange(ADDED, entry.node_id, entry.hostname, row) for row in added),
    ]


def _first(keys: Iterable[int], pending: Counter[int]) -> list[bool]:
    """Flags marking, in order, the first ``pending[key]`` occurrences of each key."""
    flags = []
    for key in keys:
        take = pending.get(key, 0) > 0
        if take:
            pending[key] -= 1
        flags.append(take)
    return flags


def _counted_changes(
    node_id: str, hostname: str, before: list[bytes], after: list[bytes]
) -> Iterator[RowChange]:
    old, new = Counter(before), Counter(after)
    if old == new:
        return
    for action, rows, pending in ((REMOVED, before, old - new), (ADDED, after, new - old)):
        for row in rows:
            if pending.get(row):
                pending[row] -= 1
                yield RowChange(action, node_id, hostname, row)


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
