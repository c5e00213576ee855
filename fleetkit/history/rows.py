"""A node's rows as stored: osqueryi's own row framing, compressed.

The recorder never builds a Python object per row on its fast path. A node's
rows are one block of bytes: compact JSON objects (keys sorted, string
values) joined by ``,\\n  `` -- exactly the lines between ``[`` and ``]`` of
``osqueryi --json`` output, so the engine hands over a slice of what the
node printed (:meth:`RowBlock.from_osqueryi_output`, after the merge's fast
path proved the framing) and ``show`` rebuilds the output the merge writer
read with two concatenations (:func:`as_osqueryi_output`). Per-row ``bytes``
(compact JSON of the untagged row, keys sorted) or ``dict``s of strings are
accepted too and joined the same way. Inside a JSON string a raw newline
cannot occur, so the separator only ever separates rows.

The block is compressed with zstd (level 1: ~500-750 MB/s on one core here,
~12x smaller for osquery rows) and stored whole, with a digest.

Rows are stored **untagged** (no ``nodeID``/``hostname``): the node entry
carries those, and ``show`` re-tags them through the same writer the run used.

Redaction happens before rows reach the recorder (the engine applies
``query.redact_columns``); :func:`guard_redaction` is a second wall that
finds a redacted column anywhere in the block and replaces its values.
"""

from __future__ import annotations

import hashlib
import json
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
    """``count`` rows joined by :data:`SEPARATOR`; b"" = no rows."""

    data: bytes
    count: int

    @classmethod
    def from_osqueryi_output(cls, stdout: bytes, start: int, count: int | None = None) -> RowBlock:
        """The rows of a node's osqueryi output whose JSON array begins at ``start``
        (after the ``--connect`` banner): one slice, no per-row work.

        For output the merge accepted: its fast path proved the framing and knows
        ``count``; without ``count`` the line structure is checked here (two
        counting passes) and ValueError raised when it is not one row per line.
        """
        end = len(stdout)
        while end > start and stdout[end - 1] == 0x0A:  # rstrip without copying the output
            end -= 1
        if end - start <= 4 and stdout[start:end] in (b"[\n\n]", b"[]"):
            return cls(b"", 0)
        if not stdout.startswith(b"[\n  {", start) or not stdout.endswith(b"}\n]", 0, end):
            raise ValueError("not osqueryi's one-row-per-line JSON framing")
        data = stdout[start + 4 : end - 2]
        if count is not None:
            return cls(data, count)
        # Not proven by the caller: every line break must be a row separator (a valid JSON
        # string holds no raw newline, so this is exactly "one row per line").
        lines = data.count(b"\n")
        if data.count(SEPARATOR + b"{") != lines:
            raise ValueError("not osqueryi's one-row-per-line JSON framing")
        return cls(data, lines + 1)

    @classmethod
    def joined(cls, rows: list[bytes]) -> RowBlock:
        """Rows given one by one; each must be compact JSON (no newline in it)."""
        if not rows:
            return cls(b"", 0)
        data = SEPARATOR.join(rows)
        if data.count(b"\n") != len(rows) - 1 or not data.startswith(b"{"):
            raise ValueError("each row must be one compact JSON object (no newline)")
        return cls(data, len(rows))

    def lines(self) -> list[bytes]:
        """The rows, each compact JSON bytes."""
        return self.data.split(SEPARATOR) if self.data else []

    def ndjson(self) -> bytes:
        """One row per line, each line ending with a newline."""
        return self.data.replace(SEPARATOR, b"\n") + b"\n" if self.data else b""


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
    if b"\\u" not in block.data and not any(needle in block.data for needle in needles):
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
