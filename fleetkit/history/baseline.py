"""The previous run as a node's baseline: its changes, computed once, while the rows are at hand.

When a run is recorded, each node is compared, on the recorder's writer
thread, with the same node in the previous run of the same question and
scope (its *baseline*): rows that are the same bytes (equal block digests)
cost nothing; otherwise the rows removed and added are computed
(:func:`~fleetkit.history.rows.row_changes`: the new rows are the block at
hand, the baseline's are decompressed -- without the GIL -- and split) and
stored with the node (``node_changes``). A diff of those two runs -- what
``query --diff`` and a plain ``invoke diff`` ask -- then reads them and
compares nothing; so a node's rows are compared once in their life, on the
thread that was compressing them anyway, while the merge writes the output.

Why not per-row digests stored with each block (compared as integers): in
CPython a checksum per row (``zlib.crc32``, ``adler32``) costs more than the
hash a ``set`` takes of the same bytes, and the rows that changed must be
read from both blocks anyway; measured, an index of (CRC-32, Adler-32,
length) per row made the every-node-changed diff slower, not faster.

The stored changes name the baseline's block digest: a baseline entry
replaced since (a late answer) no longer matches, and the diff computes again.
Everything here is best effort for speed: a baseline that cannot be read
only means the diff will compute the changes itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from fleetkit.history.rows import SEPARATOR, Codec, RowBlock, row_changes


@dataclass(frozen=True)
class Previous:
    """The previous run of the same question and scope: its nodes' block digests."""

    run_id: str
    digests: Mapping[str, bytes]


@dataclass(frozen=True)
class NodeChanges:
    """A node's rows removed since its baseline and added, each side in recorded order."""

    base_run_id: str
    base_digest: bytes
    removed: list[bytes]
    added: list[bytes]

    def packed(self, codec: Codec) -> tuple[object, ...]:
        """The ``node_changes`` columns after (run_id, node_id)."""
        removed, added = RowBlock.joined(self.removed), RowBlock.joined(self.added)
        return (
            self.base_run_id,
            self.base_digest,
            codec.pack(removed)[0],
            len(removed.data),
            codec.pack(added)[0],
            len(added.data),
        )

    @classmethod
    def unpacked(cls, row: tuple[object, ...], codec: Codec) -> NodeChanges:
        """From the columns :meth:`packed` wrote; ValueError when they do not read back."""
        base_run_id, base_digest, removed, removed_size, added, added_size = row
        if not isinstance(base_run_id, str) or not isinstance(base_digest, bytes):
            raise ValueError("bad baseline")
        return cls(
            base_run_id,
            base_digest,
            _rows(codec, removed, removed_size),
            _rows(codec, added, added_size),
        )


def _rows(codec: Codec, packed: object, size: object) -> list[bytes]:
    if not isinstance(packed, bytes | type(None)) or not isinstance(size, int):
        raise ValueError("bad changes")
    data = codec.unpack(packed or b"", size)
    return data.split(SEPARATOR) if data else []


class Baseline:
    """Computes, for one recorder, each node's changes since ``previous``."""

    def __init__(
        self, connection: sqlite3.Connection, codec: Codec, previous: Previous | None
    ) -> None:
        self.connection = connection
        self.codec = codec
        self.previous = previous

    def changes(self, node_id: str, block: RowBlock, digest: bytes) -> NodeChanges | None:
        """The node's rows removed and added since its baseline (None: no baseline,
        or the same rows byte for byte -- a diff settles those by their digests)."""
        previous = self.previous
        if previous is None or previous.digests.get(node_id, digest) == digest:
            return None
        try:
            found = self.connection.execute(
                "SELECT digest, raw_size, data FROM nodes"
                " WHERE run_id = ? AND node_id = ? AND state IN ('rows', 'empty')",
                (previous.run_id, node_id),
            ).fetchone()
            if found is None or not isinstance(found[0], bytes):
                return None
            base = self.codec.unpack(found[2] or b"", found[1])
        except (ValueError, sqlite3.Error):
            return None
        removed, added = row_changes(base.split(SEPARATOR) if base else [], block.lines())
        return NodeChanges(previous.run_id, found[0], removed, added)
