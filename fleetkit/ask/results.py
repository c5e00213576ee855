"""One node's answer to a fleet query, and how osqueryi's output is read.

osqueryi's ``--json`` contract (reference/osquery.md §3) is narrow, and this
module holds it in one place:

- with ``--connect`` a banner line (``Connected to extension socket ...``) comes
  first on stdout, so parsing starts at the first line that opens with ``[``;
- rows are printed as ``[\\n  {...},\\n  {...}\\n]\\n``; an empty result is
  ``[\\n\\n]\\n``;
- every value is a JSON string (SQL NULL is ``""``), keys are sorted;
- a failed query exits non-zero with ``Error: ...`` on stderr and leaves an
  empty array (or only the banner) on stdout, so ``[]`` is trusted only after
  the exit code was checked (:func:`node_result`).

A :class:`NodeResult` keeps the raw bytes and parses them only when asked,
so a merge can handle one node at a time and memory stays flat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any

from fleetkit.foundation.secrets import REDACTED
from fleetkit.foundation.status import FleetkitError

#: Longest piece of a node's stderr or bad output quoted in a message.
_QUOTE_LIMIT = 300


class OutputError(FleetkitError):
    """osqueryi printed something that is not its JSON output contract."""


class NodeStatus(StrEnum):
    OK = "ok"
    #: The node ran the query and it failed (non-zero exit, bad output) or the
    #: node could not be reached.
    FAILED = "failed"
    #: The node had not answered when the deadline passed.
    TIMED_OUT = "timed out"
    #: The node was expected (it matches the selection) but never ran the query.
    MISSING = "missing"


@dataclass
class NodeResult:
    """What one node answered, raw; ``rows()`` parses on demand."""

    node_id: str
    hostname: str
    status: NodeStatus
    #: osqueryi's stdout as received (banner included); None when there is none.
    stdout: bytes | None = None
    #: Why the node is not OK (osquery's stderr, the SSH error, the reason it is missing).
    error: str | None = None
    exit_code: int | None = None
    #: A large output fetched from S3 waits here (an anonymous temporary file)
    #: instead of in ``stdout``, so memory does not grow with the fleet.
    spool: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status is NodeStatus.OK

    def output(self) -> bytes | None:
        """osqueryi's stdout, read from the spool when it was spooled (one node at a time)."""
        if self.spool is not None:
            self.spool.seek(0)
            return self.spool.read()
        return self.stdout

    def discard_output(self) -> None:
        self.stdout = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def rows(self) -> list[dict[str, str]]:
        """The node's rows (untagged); [] for a node that is not OK.

        Raises :class:`OutputError` when an OK node's output is not osqueryi
        JSON; :meth:`checked_rows` turns that into a FAILED status instead.
        """
        data = self.output() if self.ok else None
        return [] if data is None else parse_osqueryi_json(data)

    def checked_rows(self) -> list[dict[str, str]]:
        """Like :meth:`rows`, but unparseable output marks the node FAILED and gives []."""
        try:
            return self.rows()
        except OutputError as exc:
            self.mark_unparseable(str(exc))
            return []

    def mark_unparseable(self, reason: str) -> None:
        self.status = NodeStatus.FAILED
        self.error = f"unparseable output: {reason}"

    def describe(self) -> str:
        """One human line for the closing summary."""
        name = (
            self.node_id
            if self.hostname in ("", self.node_id)
            else (f"{self.node_id} ({self.hostname})")
        )
        detail = f": {self.error}" if self.error else ""
        return f"{name} {self.status.value}{detail}"


def node_result(
    node_id: str,
    hostname: str,
    *,
    exit_code: int | None,
    stdout: bytes | None,
    stderr: bytes | str | None,
) -> NodeResult:
    """Classify one finished osqueryi run: the exit code first, then the output.

    A non-zero exit is FAILED with osquery's own message (``Error: ...`` on
    stderr) even when stdout holds a valid-looking ``[]``. Output validity is
    checked lazily by the merge (see :meth:`NodeResult.checked_rows`).
    """
    if exit_code is None:
        return NodeResult(node_id, hostname, NodeStatus.FAILED, stdout, "no exit code", None)
    if exit_code != 0:
        return NodeResult(
            node_id,
            hostname,
            NodeStatus.FAILED,
            stdout,
            osquery_error(stderr, stdout, exit_code),
            exit_code,
        )
    return NodeResult(node_id, hostname, NodeStatus.OK, stdout or b"", None, 0)


def osquery_error(stderr: bytes | str | None, stdout: bytes | None, exit_code: int) -> str:
    """The most telling line osqueryi printed, for the summary."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else (stderr or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    chosen = errors[-1] if errors else (lines[-1] if lines else "")
    if not chosen and stdout:
        rest = [ln for ln in _after_banner(stdout).splitlines() if ln.strip()]
        chosen = rest[0] if rest else ""
    chosen = chosen[:_QUOTE_LIMIT]
    return f"exit {exit_code}: {chosen}" if chosen else f"exit {exit_code} with no message"


# --------------------------------------------------------------------------- parsing


def json_start(stdout: bytes) -> int:
    """Offset of the JSON array: the first line that starts with ``[``.

    Only a line start counts, so a banner naming a socket path with ``[`` in
    it is still skipped. -1 when there is no such line.
    """
    if stdout.startswith(b"["):
        return 0
    at = stdout.find(b"\n[")
    return at + 1 if at >= 0 else -1


def _after_banner(stdout: bytes) -> str:
    start = json_start(stdout)
    return stdout[start if start >= 0 else 0 :].decode("utf-8", "replace")


def parse_osqueryi_json(stdout: bytes) -> list[dict[str, str]]:
    """osqueryi ``--json`` output (banner allowed) as a list of string-valued rows.

    Raises :class:`OutputError` on anything else: no array, truncated JSON,
    invalid UTF-8, rows that are not objects.
    """
    start = json_start(stdout)
    if start < 0:
        raise OutputError(f"no JSON array in the output ({_quote(stdout)})")
    try:
        data = json.loads(stdout[start:])
    except UnicodeDecodeError as exc:
        raise OutputError(f"output is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise OutputError(f"invalid JSON ({exc}): {_quote(stdout[start:])}") from None
    if not isinstance(data, list):
        raise OutputError(f"expected a JSON array, got {type(data).__name__}")
    return [_string_row(row, index) for index, row in enumerate(data)]


def iter_osqueryi_rows(stream: IO[bytes] | bytes) -> Iterator[dict[str, str]]:
    """Rows of osqueryi output one at a time, read line by line from a stream.

    For outputs too big to hold (a file spooled from S3): osqueryi prints one
    row per line, so each line is decoded on its own. Output that does not
    follow that framing falls back to reading the rest whole. The complete
    array is checked (closing ``]``), so truncated output raises
    :class:`OutputError` -- after the rows before the damage were yielded;
    callers that must not emit a partial node validate first or buffer.
    """
    if isinstance(stream, bytes | bytearray):
        yield from parse_osqueryi_json(bytes(stream))
        return
    head = b""
    for line in stream:
        if line.startswith(b"["):
            head = line
            break
    else:
        raise OutputError("no JSON array in the output")
    if head.strip() != b"[":
        # Not one-row-per-line framing (e.g. everything on one line): read it whole.
        yield from parse_osqueryi_json(head + stream.read())
        return
    index = 0
    closed = False
    for raw in stream:
        line = raw.strip()
        if not line:
            continue
        if line == b"]":
            closed = True
            break
        if line.endswith(b","):
            line = line[:-1]
        try:
            row = json.loads(line)
        except UnicodeDecodeError as exc:
            raise OutputError(f"row {index} is not UTF-8 ({exc.reason})") from None
        except ValueError as exc:
            raise OutputError(f"row {index}: invalid JSON ({exc}): {_quote(line)}") from None
        yield _string_row(row, index)
        index += 1
    if not closed:
        raise OutputError(f"output ends after {index} rows without the closing ']' (truncated)")
    if any(rest.strip() for rest in stream):
        raise OutputError("unexpected text after the closing ']'")


def _string_row(row: Any, index: int) -> dict[str, str]:
    """A row with string values (osquery's contract); other scalars are stringified.

    A future osquery with typed JSON output would otherwise break every
    consumer; numbers become their JSON text, null becomes "" (osquery's
    ``--nullvalue`` default). Nested values are not osquery output.
    """
    if not isinstance(row, dict):
        raise OutputError(f"row {index} is {type(row).__name__}, not an object")
    out: dict[str, str] = {}
    for key, value in row.items():
        if isinstance(value, str):
            out[key] = value
        elif value is None:
            out[key] = ""
        elif isinstance(value, bool | int | float):
            out[key] = json.dumps(value)
        else:
            raise OutputError(f"row {index}, column {key!r}: nested value, not osquery output")
    return out


def _quote(data: bytes) -> str:
    text = data[:_QUOTE_LIMIT].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text + ("..." if len(data) > _QUOTE_LIMIT else ""))


# --------------------------------------------------------------------------- tagging

NODE_ID = "nodeID"
HOSTNAME = "hostname"


def tag_row(row: dict[str, str], node_id: str, hostname: str) -> dict[str, str]:
    """The row with ``nodeID`` and ``hostname`` first.

    The rule: ``nodeID`` is always fleetkit's (a query column of that name is
    overwritten, so every row can be traced to its node); ``hostname`` is the
    query's own when it returned one (osquery's ``system_info.hostname`` is the
    host's view of itself), else the node's name.
    """
    tagged = {NODE_ID: node_id, HOSTNAME: hostname}
    tagged.update(row)
    tagged[NODE_ID] = node_id
    return tagged


def redact_row(row: dict[str, str], columns: AbstractSet[str]) -> dict[str, str]:
    """Replace the values of ``columns`` (settings ``query.redact_columns``) in place."""
    for column in columns & row.keys():
        row[column] = REDACTED
    return row
