"""A node's validated rows: where they are, how they are read, how they are tagged.

:class:`RowData` is built by :mod:`fleetkit.ask.validate` only (so its
preconditions hold) and read through :class:`~fleetkit.ask.answer.NodeResult`.
The tag rule (``nodeID``, ``hostname``, ``unknownNode``) lives here once, for
the byte paths of the merge and the per-row path alike (:func:`tag_row`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import IO

from fleetkit.foundation.secrets import REDACTED

NODE_ID = "nodeID"
HOSTNAME = "hostname"
#: Set to "true" on rows of a node that is not in the inventory (``--include-unknown-nodes``).
UNKNOWN_NODE = "unknownNode"
#: Set to "true" on rows a node gave after its run ended (``--retry-missing``; ``show``).
LATE_ANSWER = "answeredLate"
TAG_COLUMNS = (NODE_ID, HOSTNAME, UNKNOWN_NODE, LATE_ANSWER)


#: Bytes in memory, or ``(file, offset, length)`` in a temporary file.
Blob = bytes | tuple[IO[bytes], int, int]


def read_blob(blob: Blob) -> bytes:
    if isinstance(blob, bytes):
        return blob
    handle, offset, length = blob
    handle.seek(offset)
    return handle.read(length)


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
    late: bool = False

    def pairs(self) -> list[tuple[str, str]]:
        items = [(NODE_ID, self.node_id), (HOSTNAME, self.hostname)]
        if self.unknown:
            items.append((UNKNOWN_NODE, "true"))
        if self.late:
            items.append((LATE_ANSWER, "true"))
        return [(k, REDACTED if k in self.redacted else v) for k, v in items]

    def apply(self, row: dict[str, str]) -> dict[str, str]:
        return tag_row(
            row,
            self.node_id,
            self.hostname,
            unknown=self.unknown,
            redacted=self.redacted,
            late=self.late,
        )


NO_ROWS = RowData()


# --------------------------------------------------------------------------- row helpers


def tag_row(
    row: dict[str, str],
    node_id: str,
    hostname: str,
    *,
    unknown: bool = False,
    redacted: AbstractSet[str] = frozenset(),
    late: bool = False,
) -> dict[str, str]:
    """The row with fleetkit's columns first: ``nodeID``, ``hostname``, ``unknownNode``,
    ``answeredLate``.

    The rule: ``nodeID`` is always fleetkit's (a query column of that name is
    replaced, so every row can be traced to its node); ``hostname`` is the
    query's own when it returned one (osquery's ``system_info.hostname`` is the
    host's view of itself) and then stays where the query put it, else the
    node's name; ``unknownNode`` ("true") marks rows of a node that is not in
    the inventory; ``answeredLate`` ("true") marks rows recorded into a run after
    it ended (``--retry-missing``). ``redacted`` columns (tags included) become
    ``<redacted>``.
    """
    tagged = {NODE_ID: node_id}
    if HOSTNAME not in row:
        tagged[HOSTNAME] = hostname
    if unknown:
        tagged[UNKNOWN_NODE] = "true"
    if late:
        tagged[LATE_ANSWER] = "true"
    for key, value in row.items():
        if key not in tagged and key not in (NODE_ID, UNKNOWN_NODE, LATE_ANSWER):
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
