"""From raw replies to a trusted :class:`FleetAnswer`: every node's output checked first.

Why before any output: a node whose output turns out to be garbage must be
FAILED in the answer every consumer sees (exit status, summary, history),
not discovered halfway through writing the merged result.

Validation is also where the merge gets its speed. osqueryi prints one row
per line in a fixed framing; when a node's output has exactly that framing
(checked by one strict regular expression built from the first row's keys:
every row has exactly those keys in that order with string values, which
proves the region is valid JSON), its bytes are kept as they are and
:meth:`RowData.tagged_pieces` later inserts the tags with a byte split and
join, with no dict per row. Anything unusual (``\\u`` escapes, other
whitespace, a ``nodeID`` column, a redacted column, rows with different
keys) is parsed row by row, redacted and re-encoded as compact JSON lines
into a temporary file shared by the answer -- the same rows, byte for byte.

Memory: one node's output is in memory at a time; re-encoded rows go to
disk past a few megabytes.
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

from fleetkit.ask.answer import FleetAnswer, NodeResult, NodeStatus
from fleetkit.ask.osqueryi import OutputError, json_start, parse_osqueryi_json
from fleetkit.ask.rows import (
    HOSTNAME,
    NO_ROWS,
    TAG_COLUMNS,
    Blob,
    RowData,
    encode_row,
    json_string,
    read_blob,
    redact_row,
)
from fleetkit.ask.transport import Collected, NodeReply, Output

#: Why a stranger's answer is left out (the summary names the node with it).
EXCLUDED_REASON = (
    "not in the inventory (a cluster node fleetkit does not manage): its answer was "
    "not merged; pass --include-unknown-nodes to include it, marked"
)

# A JSON string value without escapes: any byte but '"', '\\' and controls
# (UTF-8 validity is checked apart). Positive ranges: the regex engine tests
# them faster than a negated class. With escapes: only the ones json.dumps
# writes itself (not \/ and never \u: those would read back as other bytes).
_VALUE_PLAIN = rb'"[ !#-\[\]-\xff]*+"'
_VALUE_ESCAPED = rb'"[ !#-\[\]-\xff]*+(?:\\["\\bfnrt][ !#-\[\]-\xff]*+)*+"'
_TAGS = frozenset(TAG_COLUMNS)
#: Columns that need the per-row tag rule (a query's own ``hostname`` does not).
_PER_ROW_TAGS = _TAGS - {HOSTNAME}
#: Re-encoded rows stay in memory up to this size, then go to disk.
_LEDGER_MEMORY = 4 << 20


def settle(
    collected: Collected,
    *,
    redacted: Iterable[str] = (),
    include_unknown: bool = False,
) -> FleetAnswer:
    """Validate every reply; the answer keeps the transport's order (node ID)."""
    hidden = frozenset(redacted)
    ledger = _Ledger()
    spools: list[IO[bytes]] = []
    nodes: list[NodeResult] = []
    for reply in collected.replies:
        node = settle_node(reply, redacted=hidden, include_unknown=include_unknown, ledger=ledger)
        nodes.append(node)
        if not node.ok:
            reply.discard()
        elif reply.output is not None and not isinstance(reply.output, bytes):
            spools.append(reply.output)
    if ledger.file is not None:
        spools.append(ledger.file)
    return FleetAnswer(
        nodes=tuple(nodes),
        job_id=collected.job_id,
        expected=tuple(collected.expected),
        redacted=hidden,
        spools=tuple(spools),
    )


def settle_node(
    reply: NodeReply,
    *,
    redacted: frozenset[str] = frozenset(),
    include_unknown: bool = False,
    ledger: _Ledger | None = None,
) -> NodeResult:
    """One reply as a :class:`NodeResult`: excluded, failed, or OK with checked rows."""
    unknown = not reply.in_inventory
    base = NodeResult(reply.node_id, reply.hostname, reply.status, reply.error, reply.exit_code)
    if unknown and not include_unknown:
        return NodeResult(
            reply.node_id, reply.hostname, NodeStatus.EXCLUDED, EXCLUDED_REASON, reply.exit_code
        )
    if reply.status is not NodeStatus.OK:
        return _with(base, unknown=unknown)
    try:
        data = check_rows(reply.output or b"", redacted, ledger or _Ledger())
    except OutputError as exc:
        return _with(
            base, status=NodeStatus.FAILED, error=f"unparseable output: {exc}", unknown=unknown
        )
    return _with(base, data=data, unknown=unknown)


def _with(base: NodeResult, **changes: object) -> NodeResult:
    fields = {
        "node_id": base.node_id,
        "hostname": base.hostname,
        "status": base.status,
        "error": base.error,
        "exit_code": base.exit_code,
        "data": base.data,
        "unknown": base.unknown,
        **changes,
    }
    return NodeResult(**fields)  # type: ignore[arg-type]


def check_rows(output: Output, redacted: frozenset[str], ledger: _Ledger) -> RowData:
    """The node's rows, checked; raises :class:`OutputError` when the output is not osqueryi's."""
    blob: Blob
    if isinstance(output, bytes):
        data, blob = output, output
    else:
        output.seek(0, os.SEEK_END)
        blob = (output, 0, output.tell())
        in_place = _framed_in_file(output, blob, redacted)
        if in_place is not None:
            return in_place
        data = read_blob(blob)
    framed = framed_rows(data, blob, redacted)
    if framed is not None:
        return framed
    return ledger.add(parse_osqueryi_json(data), redacted)


def _framed_in_file(handle: IO[bytes], blob: Blob, redacted: frozenset[str]) -> RowData | None:
    """An ASCII output in a file checked where it lies (mapped, not read into a copy).

    None for anything else -- not mappable, empty, not ASCII, not the framing:
    the caller reads the output and checks it the general way.
    """
    size = blob[2] if isinstance(blob, tuple) else 0
    if size == 0 or isinstance(handle, tempfile.SpooledTemporaryFile):
        return None
    try:
        with mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            return framed_rows(mapped, blob, redacted, ascii_only=True)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- the fast path


def framed_rows(
    data: bytes | mmap.mmap, blob: Blob, redacted: frozenset[str], *, ascii_only: bool = False
) -> RowData | None:
    """Rows kept as osqueryi printed them, when the output is exactly its framing; else None.

    The framing: ``[\n``, rows ``  {...}`` joined by ``,\n``, ``\n]\n``
    (a banner line may come first). The first row names the columns; a
    pattern built from them (cached) then checks that *every* row has
    exactly those keys, in that order, with string values. Every check runs
    on ``data`` in place: a large output is never copied here. With
    ``ascii_only`` the pattern admits ASCII only (``data`` may then be a
    mapped file, which has no ``isascii``); else UTF-8 is checked apart.
    """
    start = json_start(data)
    if start < 0 or data[start : start + 2] != b"[\n":
        return None
    end = len(data)
    while end > start and data[end - 1] == 0x0A:
        end -= 1
    if end - start < 3 or data[end - 2 : end] != b"\n]":
        return None
    first, last = start + 2, end - 2
    if first == last:  # "[\n\n]": no rows
        return NO_ROWS
    escaped = data.find(b"\\", first, last) >= 0
    if escaped and data.find(b"\\u", first, last) >= 0:
        return None
    keys = _first_row_keys(data, first, last)
    if keys is None or redacted.intersection(keys) or not _PER_ROW_TAGS.isdisjoint(keys):
        return None
    if _rows_pattern(keys, escaped, ascii_only).fullmatch(data, first, last) is None:
        return None
    if not ascii_only:
        assert isinstance(data, bytes)
        if not data.isascii():
            try:
                data[first:last].decode("utf-8")
            except UnicodeDecodeError:
                return None
    return RowData(blob=blob, known_count=None, columns=keys, framed=True, start=first, end=last)


def _first_row_keys(data: bytes | mmap.mmap, first: int, last: int) -> tuple[str, ...] | None:
    newline = data.find(b"\n", first, last)
    line = data[first : newline if newline >= 0 else last]
    if line.endswith(b","):
        line = line[:-1]
    try:
        row = parse_osqueryi_json(b"[" + line + b"]")[0]
    except (OutputError, IndexError):
        return None
    return tuple(row) or None


@functools.lru_cache(maxsize=256)
def _rows_pattern(keys: tuple[str, ...], escaped: bool, ascii_only: bool) -> re.Pattern[bytes]:
    """Rows with exactly these keys in this order (osqueryi sorts them), string values."""
    value = _VALUE_ESCAPED if escaped else _VALUE_PLAIN
    if ascii_only:
        value = value.replace(rb"\]-\xff", rb"\]-\x7f")
    members = b",".join(re.escape(json_string(key)) + b":" + value for key in keys)
    row = rb"  \{" + members + rb"\}"
    return re.compile(row + rb"(?:,\n" + row + rb")*+")


# --------------------------------------------------------------------------- the other rows


@dataclass
class _Ledger:
    """Re-encoded rows of every node that left the fast path, in one temporary file."""

    file: IO[bytes] | None = field(default=None)

    def add(self, rows: list[dict[str, str]], redacted: frozenset[str]) -> RowData:
        if not rows:
            return NO_ROWS
        columns: dict[str, None] = {}
        plain = True
        lines = []
        for row in rows:
            redact_row(row, redacted)
            columns.update(dict.fromkeys(row))
            line, ascii_escaped = encode_row(row)
            if ascii_escaped or not row or not _TAGS.isdisjoint(row):
                plain = False
            lines.append(line)
        payload = b"\n".join(lines) + b"\n"
        if self.file is None:
            self.file = tempfile.SpooledTemporaryFile(max_size=_LEDGER_MEMORY)  # noqa: SIM115 - the answer closes it
        self.file.seek(0, 2)
        offset = self.file.tell()
        self.file.write(payload)
        blob: Blob = (self.file, offset, len(payload))
        return RowData(blob=blob, known_count=len(lines), columns=tuple(columns), plain=plain)
