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
            node.node_id, node.hostname           # str (hostname = inventory name here)
            node.status                           # NodeStatus: ok / failed / timed out /
                                                  #   missing / excluded
            node.error                            # str | None: why it is not OK
            node.exit_code                        # osqueryi's exit code when it ran
            node.unknown                          # True: not an inventory host (included
                                                  #   on request, marked in the output)
            node.row_count                        # 0 for every status but ok
            node.iter_rows()                      # Iterator[dict[str, str]], output order
            node.row_lines()                      # bytes: one compact JSON object per line

A recorder tells "answered with rows" from "answered empty" by
``status is OK`` and ``row_count``. Rows are the query's own columns, untagged
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
import json
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO

from fleetkit.foundation.secrets import REDACTED

NODE_ID = "nodeID"
HOSTNAME = "hostname"
#: Set to "true" on rows of a node that is not in the inventory (``--include-unknown-nodes``).
UNKNOWN_NODE = "unknownNode"
TAG_COLUMNS = (NODE_ID, HOSTNAME, UNKNOWN_NODE)


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


#: Bytes in memory, or ``(file, offset, length)`` in a temporary file.
Blob = bytes | tuple[IO[bytes], int, int]


def read_blob(blob: Blob) -> bytes:
    if isinstance(blob, bytes):
        return blob
    handle, offset, length = blob
    handle.seek(offset)
    return handle.read(length)


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class RowData:
    """A node's validated rows. Two layouts, both checked when they were built.

    - ``framed``: osqueryi's own output, untouched (``blob`` is what the node
      printed, rows are ``blob[start:end]`` as ``  {...}`` joined by ``,\\n``),
      every row with exactly ``columns`` in that order and string values,
      no ``\\u`` escape, valid UTF-8. Tagging is then a byte operation.
    - lines: ``blob`` holds one compact JSON object per line (re-encoded
      rows of any other valid output). ``plain`` means no row is empty, none
      carries a tag column and none needed ASCII escaping, so tags can still
      be inserted as bytes.
    """

    blob: Blob = b""
    #: The number of rows; None = not counted yet (framed rows: at least one).
    #: Counting a large output costs a pass over it of its own, while the
    #: merge splits the rows anyway: it is counted there, or on first need.
    known_count: int | None = 0
    #: Union of the rows' columns, first seen first.
    columns: tuple[str, ...] = ()
    framed: bool = False
    start: int = 0
    end: int = 0
    plain: bool = True
    #: A memo, not state: the count once known (a function of the bytes above).
    _counted: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def count(self) -> int:
        if self.known_count is not None:
            return self.known_count
        if not self._counted:
            data = read_blob(self.blob)
            # bytes.count of one byte is a plain loop, while replace finds it
            # with memchr: the growth of a replace counts several times faster.
            newlines = len(data.replace(b"\n", b"\n\n")) - len(data)
            outside = data.count(b"\n", 0, self.start) + data.count(b"\n", self.end)
            self._counted.append(newlines - outside + 1)
        return self._counted[0]

    @property
    def has_rows(self) -> bool:
        """Whether there is at least one row (known without counting)."""
        return self.known_count != 0

    def region(self) -> bytes:
        data = read_blob(self.blob)
        return data[self.start : self.end] if self.framed else data

    def lines(self) -> bytes:
        """Every row as compact JSON, one per line (each line ends with ``\\n``)."""
        if not self.has_rows:
            return b""
        if not self.framed:
            return read_blob(self.blob)
        return b"{" + b"\n{".join(self._split_rows(keep_commas=False)) + b"\n"

    def _split_rows(self, *, keep_commas: bool) -> list[bytes]:
        """The framed rows as pieces, each without its leading ``  {``; with
        ``keep_commas`` every piece but the last still ends with the ``,`` that
        osqueryi put between rows (the separator of a JSON array, too).

        Cut from the whole output, not from a copy of its region (outputs are
        large): only the first and the last piece need trimming.
        """
        data, start, end = read_blob(self.blob), self.start, self.end
        needle = b"\n  {" if keep_commas else b",\n  {"
        if data.find(needle, 0, start + 3) != (start - 1 if keep_commas else -1):
            # a banner that contains the needle: cut a copy of the region instead
            data, start, end = b"[\n" + data[start:end], 2, end - start + 2
        parts = data.split(needle)
        if keep_commas:
            del parts[0]  # everything up to the "[" line
        else:
            parts[0] = parts[0][start + 3 :]
        parts[-1] = parts[-1][: len(parts[-1]) - (len(data) - end)]
        if not self._counted:
            self._counted.append(len(parts))
        return parts

    def rows(self) -> Iterator[dict[str, str]]:
        if not self.has_rows:
            return
        if self.framed:
            parsed: list[dict[str, str]] = json.loads(b"[" + self.region() + b"]")
            yield from parsed
            return
        for line in self.region().split(b"\n"):
            if line:
                row: dict[str, str] = json.loads(line)
                yield row

    def tagged_pieces(self, tags: Tags, *, array: bool) -> list[bytes]:
        """The rows tagged by ``tags`` as compact JSON, each preceded by a newline and
        separated by ``,`` when ``array`` (JSON) else by nothing (NDJSON): pieces to
        write in order. Joined, they are what :func:`dump_row` of :meth:`Tags.apply`
        gives row by row (tests hold the byte paths to it); validation guarantees
        their preconditions (no ``nodeID``/``unknownNode`` column, no empty row).
        """
        if not self.has_rows:
            return []
        comma = b"," if array else b""
        if not (self.framed or self.plain):
            rows = (dump_row(tags.apply(row)) for row in self.rows())
            return [b"\n" + (comma + b"\n").join(rows)]
        names = set(self.columns)
        tag = b"".join(
            json_string(k) + b":" + json_string(v) + b"," for k, v in tags.pairs() if k not in names
        )
        glue = b"\n{" + tag
        if self.framed:
            return _interleave(glue, glue, self._split_rows(keep_commas=array))
        region = read_blob(self.blob)
        return _interleave(glue, comma + glue, region[1:-1].split(b"\n{"))


def _interleave(first: bytes, glue: bytes, parts: list[bytes]) -> list[bytes]:
    """``[first, parts[0], glue, parts[1], glue, ...]`` (list operations only, no copies)."""
    pieces = [glue] * (2 * len(parts))
    pieces[1::2] = parts
    pieces[0] = first
    return pieces


@dataclass(frozen=True)
class Tags:
    """The columns fleetkit adds to a node's rows (see :func:`tag_row`)."""

    node_id: str
    hostname: str
    unknown: bool = False
    #: Tag columns listed in ``query.redact_columns`` are redacted like row columns.
    redacted: frozenset[str] = frozenset()

    def pairs(self) -> list[tuple[str, str]]:
        items = [(NODE_ID, self.node_id), (HOSTNAME, self.hostname)]
        if self.unknown:
            items.append((UNKNOWN_NODE, "true"))
        return [(k, REDACTED if k in self.redacted else v) for k, v in items]

    def apply(self, row: dict[str, str]) -> dict[str, str]:
        return tag_row(
            row, self.node_id, self.hostname, unknown=self.unknown, redacted=self.redacted
        )


NO_ROWS = RowData()


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
        return Tags(node.node_id, node.hostname, node.unknown, self.redacted & set(TAG_COLUMNS))

    def close(self) -> None:
        for spool in self.spools:
            with contextlib.suppress(OSError):
                spool.close()

    def __enter__(self) -> FleetAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- row helpers


def tag_row(
    row: dict[str, str],
    node_id: str,
    hostname: str,
    *,
    unknown: bool = False,
    redacted: AbstractSet[str] = frozenset(),
) -> dict[str, str]:
    """The row with fleetkit's columns first: ``nodeID``, ``hostname``, ``unknownNode``.

    The rule: ``nodeID`` is always fleetkit's (a query column of that name is
    replaced, so every row can be traced to its node); ``hostname`` is the
    query's own when it returned one (osquery's ``system_info.hostname`` is the
    host's view of itself) and then stays where the query put it, else the
    node's name; ``unknownNode`` ("true") marks rows of a node that is not in
    the inventory. ``redacted`` columns (tags included) become ``<redacted>``.
    """
    tagged = {NODE_ID: node_id}
    if HOSTNAME not in row:
        tagged[HOSTNAME] = hostname
    if unknown:
        tagged[UNKNOWN_NODE] = "true"
    for key, value in row.items():
        if key not in tagged and key not in (NODE_ID, UNKNOWN_NODE):
            tagged[key] = value
    return redact_row(tagged, redacted)


def redact_row(row: dict[str, str], columns: AbstractSet[str]) -> dict[str, str]:
    """Replace the values of ``columns`` (settings ``query.redact_columns``) in place."""
    for column in columns & row.keys():
        row[column] = REDACTED
    return row


def dump_row(row: dict[str, str]) -> bytes:
    """A row as compact JSON, UTF-8 as is (ASCII-escaped only for a lone surrogate)."""
    return encode_row(row)[0]


def encode_row(row: dict[str, str]) -> tuple[bytes, bool]:
    """(:func:`dump_row`'s bytes, whether they had to fall back to ASCII escapes)."""
    text = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8"), False
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: keep it escaped
        return json.dumps(row, separators=(",", ":")).encode("ascii"), True


def json_string(value: str) -> bytes:
    """A JSON string as :func:`dump_row` writes it."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode("ascii")
