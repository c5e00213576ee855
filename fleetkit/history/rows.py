"""A node's rows as stored: osqueryi's own row framing, compressed.

The recorder never builds a Python object per row on its fast path. A node's
rows are one block of bytes: compact JSON objects (string values) joined by
``,\n  `` -- exactly the lines between ``[`` and ``]`` of ``osqueryi --json``
output. The ask engine's validated rows (:class:`fleetkit.ask.rows.RowData`)
are the same framing: the adapter in :mod:`fleetkit.ask.record` hands the
history a window onto what the node printed (a ``memoryview``: no copy, no
re-encoding, no second parse). ``show`` rebuilds the output the merge writer
read with two concatenations (:func:`as_osqueryi_output`) and validates it
again like any node output. Per-row ``bytes`` (compact JSON) or ``dict``s of
strings are accepted too and joined the same way. Inside a JSON string a raw
newline cannot occur, so the separator only ever separates rows.

The block is compressed with zstd (level 1: ~500-750 MB/s on one core here,
~12x smaller for osquery rows) and stored whole, with a digest.

Two runs' rows compare as multisets of these bytes (:func:`row_changes`).

Rows are stored **untagged** (no ``nodeID``/``hostname``): the node entry
carries those, and ``show`` re-tags them through the same writer the run used.

Redaction happens before rows reach the recorder (the engine applies
``query.redact_columns``); :func:`guard_redaction` is a second wall that
finds a redacted column anywhere in the block and replaces its values.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import zstandard

from fleetkit.foundation.secrets import REDACTED

CODEC = "zstd"
_LEVEL = 1
#: Between two rows of a block (and of osqueryi's output).
SEPARATOR = b",\n  "


@dataclass(frozen=True)
class RowBlock:
    """``count`` rows joined by :data:`SEPARATOR`; empty = no rows.

    ``data`` may be a ``memoryview`` onto a node's output (the recorder
    compresses and indexes it without copying); blocks read back are bytes.
    """

    data: bytes | memoryview
    count: int

    @classmethod
    def joined(cls, rows: list[bytes]) -> RowBlock:
        """Rows given one by one; each must be compact JSON (no newline in it)."""
        if not rows:
            return cls(b"", 0)
        data = SEPARATOR.join(rows)
        if data.count(b"\n") != len(rows) - 1 or not data.startswith(b"{"):
            raise ValueError("each row must be one compact JSON object (no newline)")
        return cls(data, len(rows))

    def raw(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else bytes(self.data)

    def lines(self) -> list[bytes]:
        """The rows, each compact JSON bytes."""
        return self.raw().split(SEPARATOR) if self.data else []

    def ndjson(self) -> bytes:
        """One row per line, each line ending with a newline."""
        return self.raw().replace(SEPARATOR, b"\n") + b"\n" if self.data else b""


def encode_row(row: Mapping[str, str]) -> bytes:
    """A row as compact JSON, keys in the order given (osqueryi's: sorted), as the
    merge's per-row path writes it -- so ``show`` re-renders the same bytes."""
    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it escaped
        return json.dumps(row, separators=(",", ":")).encode("ascii")


def to_block(rows: RowBlock | Iterable[bytes | Mapping[str, str]]) -> RowBlock:
    """Whatever the caller gave, as one :class:`RowBlock`."""
    if isinstance(rows, RowBlock):
        return rows
    items = rows if isinstance(rows, list) else list(rows)
    if all(type(row) is bytes for row in items):
        return RowBlock.joined(items)  # type: ignore[arg-type]
    return RowBlock.joined([row if isinstance(row, bytes) else encode_row(row) for row in items])


def guard_redaction(block: RowBlock, columns: AbstractSet[str]) -> tuple[RowBlock, int]:
    """Replace any value under a redacted column; (block, values replaced).

    A substring search settles the common case (no such key in the block, no
    ``\\u`` escape that could spell one) without decoding; otherwise each line
    is decoded and only rows holding a live value are re-encoded.
    """
    if not columns or not block.data:
        return block, 0
    needles = [json.dumps(column, ensure_ascii=False).encode("utf-8") + b":" for column in columns]
    suspect = re.compile(b"|".join([re.escape(b"\\u"), *(re.escape(n) for n in needles)]))
    if suspect.search(block.data) is None:  # a buffer search: a memoryview is not copied
        return block, 0
    replaced = 0
    lines = block.lines()
    for index, line in enumerate(lines):
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"row {index} is not a JSON object")
        live = [key for key in columns & row.keys() if row[key] != REDACTED]
        if live:
            for key in live:
                row[key] = REDACTED
            lines[index] = encode_row(row)
            replaced += len(live)
    return (RowBlock(SEPARATOR.join(lines), block.count), replaced) if replaced else (block, 0)


def row_changes(before: list[bytes], after: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(rows removed, rows added) from ``before`` to ``after``, as multisets of bytes,
    each in its side's order; identical rows in another order are no change.

    Sets do the work in C (each row hashed once, compared byte for byte only on
    a hash match: exact); rows repeated within a node (rare: osquery rows
    usually differ in some column) take the counting path.
    """
    old, new = set(before), set(after)
    if len(old) == len(before) and len(new) == len(after):
        gone, fresh = old - new, new - old
        if not (gone or fresh):
            return [], []
        return list(filter(gone.__contains__, before)), list(filter(fresh.__contains__, after))
    counted_old, counted_new = Counter(before), Counter(after)
    return _first(before, counted_old - counted_new), _first(after, counted_new - counted_old)


def _first(rows: list[bytes], pending: Counter[bytes]) -> list[bytes]:
    """The first ``pending[row]`` occurrences of each row, in order."""
    taken = []
    for row in rows:
        if pending.get(row, 0) > 0:
            pending[row] -= 1
            taken.append(row)
    return taken


class Codec:
    """zstd one-shot compression; one per recorder or reader (not thread-safe)."""

    def __init__(self) -> None:
        self._compressor = zstandard.ZstdCompressor(level=_LEVEL)
        self._decompressor = zstandard.ZstdDecompressor()

    def pack(self, block: RowBlock) -> tuple[bytes, bytes]:
        """(compressed bytes, digest); equal digests mean equal rows in equal order."""
        packed = self._compressor.compress(block.data) if block.data else b""
        return packed, hashlib.blake2b(packed, digest_size=16).digest()

    def unpack(self, packed: bytes, raw_size: int) -> bytes:
        """The NDJSON bytes; ValueError when they are not what the entry says."""
        if not packed:
            if raw_size:
                raise ValueError("rows missing")
            return b""
        try:
            data = self._decompressor.decompress(packed, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise ValueError(f"undecodable rows ({exc})") from None
        if len(data) != raw_size:
            raise ValueError(f"rows are {len(data)} bytes, the entry says {raw_size}")
        return data


def as_osqueryi_output(block: RowBlock) -> bytes:
    """The rows framed as ``osqueryi --json`` prints them (for re-rendering through
    the merge's writer, which then takes the same path it took for the run)."""
    return b"[\n  " + block.data + b"\n]\n" if block.data else b"[\n\n]\n"
