"""The merged result: JSON, NDJSON, CSV or a table, streamed node by node.

Why streaming: a fleet of thousands answering thousands of rows each must
not need one list of a million dicts. Rows are written as each node's output
is parsed, one node at a time, and a node's rows are only written once the
whole node parsed (so garbage halfway through a node's output never leaves
half its rows in the result, and JSON output stays a valid array).

The JSON and NDJSON fast path: osqueryi prints one row per line in a fixed
framing, so when a node's output matches that framing exactly (checked by a
strict regular expression for string-to-string objects, plus a UTF-8 check),
the rows are tagged by inserting the ``nodeID``/``hostname`` members as bytes,
without decoding a dict per row. Anything unusual (escaped ``\\u`` sequences, a
``nodeID`` column, a redacted column, a ``hostname`` column on some rows only,
other whitespace) takes the per-row path, which gives the same rows.

CSV needs the union of all columns before the first line, and a table needs
column widths: both spool the tagged rows to a temporary file in a first pass
(memory stays flat) and write them in a second.

``--output FILE`` is written atomically: a temporary file in the same
directory, fsync, rename; on any error or Ctrl-C the temporary is removed and
an existing FILE is left untouched.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, TextIO

from fleetkit.ask.results import (
    HOSTNAME,
    NODE_ID,
    NodeResult,
    json_start,
    redact_row,
    tag_row,
)
from fleetkit.foundation.atomic import atomic_output
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import UsageError

FORMATS = ("json", "ndjson", "csv", "table")

#: Widest column of a table (longer values are cut with "...").
TABLE_MAX_WIDTH = 60

# A JSON string value: any byte but '"', '\\' and control characters, or a
# simple escape. \u escapes never take the fast path (they could spell a key
# differently), so they are not accepted here. Possessive: no backtracking.
_VALUE_PLAIN = rb'"[^"\\\x00-\x1f]*+"'
_VALUE_ESCAPED = rb'"[^"\\\x00-\x1f]*+(?:\\["\\/bfnrt][^"\\\x00-\x1f]*+)*+"'


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass
class MergeStats:
    rows: int = 0
    #: Nodes that contributed at least one row.
    nodes_with_rows: int = 0
    #: The reader of stdout went away before the end (``| head``).
    closed_early: bool = False


def check_format(name: str) -> str:
    fmt = (name or "").strip().lower()
    if fmt not in FORMATS:
        raise UsageError(f"must be one of {', '.join(FORMATS)}, got {name!r}", key="--format")
    return fmt


def write_records(
    records: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    output_format: str,
    out: TextIO,
) -> None:
    """Small results already in memory (policy verdicts, hunt hits) in any format.

    The fleet merge streams bytes (``write_merged``); these are a few rows per
    host, so plain ``json``/``csv`` calls are clearer. ``table`` aligns
    ``columns`` under an upper-case header.
    """
    if output_format == "json":
        json.dump(list(records), out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif output_format == "ndjson":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif output_format == "csv":
        writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        rows = [[str(record.get(c, "")) for c in columns] for record in records]
        header = [c.upper() for c in columns]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(columns))]
        for row in [header, *rows]:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            out.write("\n")


def emit_report(env: Environment, *, as_json: bool, data: object, summary: str, table: str) -> None:
    """A report for people and scripts (verify, nodes): ``--json`` puts the data
    on stdout and a one-line summary on stderr; otherwise the table goes to
    stderr. Secrets are redacted either way."""
    if as_json:
        env.stdout.write(redact(json.dumps(data, indent=2)) + "\n")
        env.stdout.flush()
        env.say(summary)
    else:
        env.stderr.write(redact(table))
        env.stderr.flush()


def check_output_path(path: str | None) -> None:
    """Refuse an ``--output`` that cannot be written, before anything is asked."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path} is a directory", key="--output")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"directory {parent} does not exist", key="--output")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"directory {parent} is not writable", key="--output")


# --------------------------------------------------------------------------- entry points


def write_result(
    nodes: Iterable[NodeResult],
    fmt: str,
    *,
    env: Environment,
    output: str | None,
    redact_columns: Iterable[str] = (),
) -> MergeStats:
    """Merge to ``output`` (atomically) or to stdout; stdout gets nothing but the result."""
    if output:
        with atomic_output(output) as handle:
            return write_merged(nodes, fmt, handle, redact_columns=redact_columns)
    sink, finish = _stdout_sink(env)
    try:
        return write_merged(nodes, fmt, sink, redact_columns=redact_columns)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error worth a traceback.
        _silence_stdout(env)
        return MergeStats(closed_early=True)
    finally:
        with contextlib.suppress(BrokenPipeError):
            finish()


def write_merged(
    nodes: Iterable[NodeResult],
    fmt: str,
    out: ByteSink,
    *,
    redact_columns: Iterable[str] = (),
) -> MergeStats:
    """Write every OK node's tagged rows in ``fmt``; unparseable nodes are marked FAILED."""
    redact = frozenset(redact_columns)
    fmt = check_format(fmt)
    if fmt == "json":
        return _write_json(nodes, out, redact)
    if fmt == "ndjson":
        return _write_ndjson(nodes, out, redact)
    if fmt == "csv":
        return _write_csv(nodes, out, redact)
    return _write_table(nodes, out, redact)


# --------------------------------------------------------------------------- JSON / NDJSON


def _write_json(nodes: Iterable[NodeResult], out: ByteSink, redact: frozenset[str]) -> MergeStats:
    stats = MergeStats()
    out.write(b"[")
    try:
        for node in nodes:
            chunk, count = node_rows_json(node, separator=b",\n", redact=redact)
            if count:
                out.write(b"\n" if stats.rows == 0 else b",\n")
                out.write(chunk)
                stats.rows += count
                stats.nodes_with_rows += 1
    finally:
        # Also on an error or Ctrl-C halfway: what was written stays a valid array.
        out.write(b"\n]\n" if stats.rows else b"]\n")
    return stats


def _write_ndjson(nodes: Iterable[NodeResult], out: ByteSink, redact: frozenset[str]) -> MergeStats:
    stats = MergeStats()
    for node in nodes:
        chunk, count = node_rows_json(node, separator=b"\n", redact=redact)
        if count:
            out.write(chunk + b"\n")
            stats.rows += count
            stats.nodes_with_rows += 1
    return stats


def node_rows_json(
    node: NodeResult, *, separator: bytes, redact: frozenset[str] = frozenset()
) -> tuple[bytes, int]:
    """One node's tagged rows as compact JSON objects joined by ``separator``; (bytes, count).

    A node that is not OK gives (b"", 0); unparseable output marks it FAILED.
    """
    data = node.output() if node.ok else None
    if data is None:
        return b"", 0
    fast = _fast_rows(node, data, separator, redact)
    if fast is not None:
        return fast
    rows = node.checked_rows()
    parts = [
        _dump_row(redact_row(tag_row(row, node.node_id, node.hostname), redact)) for row in rows
    ]
    return separator.join(parts), len(parts)


def _fast_rows(
    node: NodeResult, data: bytes, separator: bytes, redact: frozenset[str]
) -> tuple[bytes, int] | None:
    """Tag rows as bytes when the output is exactly osqueryi's framing; None = use the slow path.

    The framing: ``[\\n``, rows ``  {...}`` joined by ``,\\n``, ``\\n]\\n``. The
    first row names the columns; a pattern built from them (cached) then
    checks that *every* row has exactly those keys, in that order, with
    string values -- which proves the region is valid JSON and tells, without
    scanning again, whether a ``hostname`` or ``nodeID`` column exists.
    """
    start = json_start(data)
    if start < 0 or not data.startswith(b"[\n", start):
        return None
    end = len(data.rstrip(b"\n"))
    if end - start < 3 or data[end - 1 : end] != b"]" or data[end - 2 : end - 1] != b"\n":
        return None
    region = data[start + 2 : end - 2]
    if not region:  # "[\n\n]": no rows
        return b"", 0
    escaped = b"\\" in region
    if escaped and b"\\u" in region:
        return None
    keys = _first_row_keys(region)
    if keys is None or NODE_ID in keys or redact.intersection(keys):
        return None
    if _rows_pattern(keys, escaped).fullmatch(region) is None:
        return None
    if not region.isascii():
        try:
            region.decode("utf-8")
        except UnicodeDecodeError:
            return None
    tag = b'"nodeID":' + _json_bytes(node.node_id) + b","
    if HOSTNAME not in keys:
        tag += b'"hostname":' + _json_bytes(node.hostname) + b","
    # Inside a valid JSON string a raw newline cannot occur, so ",\n  {" only
    # ever separates two rows.
    old, new = b",\n  {", separator + b"{" + tag
    body = b"{" + tag + region[3:].replace(old, new)
    # Rows = separators + 1, from the lengths (saves another pass over the bytes).
    grown = len(body) - (len(region) - 3) - (1 + len(tag))
    return body, grown // (len(new) - len(old)) + 1


def _first_row_keys(region: bytes) -> tuple[str, ...] | None:
    newline = region.find(b"\n")
    first = region[: newline if newline >= 0 else len(region)]
    if first.endswith(b","):
        first = first[:-1]
    try:
        row = json.loads(first)
    except ValueError:
        return None
    if not isinstance(row, dict) or not row:
        return None
    return tuple(row)


@functools.lru_cache(maxsize=256)
def _rows_pattern(keys: tuple[str, ...], escaped: bool) -> re.Pattern[bytes]:
    """Rows with exactly these keys in this order (osqueryi sorts them), string values."""
    value = _VALUE_ESCAPED if escaped else _VALUE_PLAIN
    members = b",".join(re.escape(_json_bytes(key)) + b":" + value for key in keys)
    row = rb"  \{" + members + rb"\}"
    return re.compile(row + rb"(?:,\n" + row + rb")*+")


def _json_bytes(value: str) -> bytes:
    """A JSON string as osqueryi writes it (UTF-8 as is); escaped when it cannot be UTF-8."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return json.dumps(value).encode("ascii")


def _dump_row(row: dict[str, str]) -> bytes:
    text = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: keep it escaped
        return json.dumps(row, separators=(",", ":")).encode("ascii")


# --------------------------------------------------------------------------- CSV / table


@dataclass
class _Spool:
    """Tagged rows spooled as JSON lines, with what the second pass needs to know."""

    file: IO[bytes]
    columns: list[str]
    widths: dict[str, int]
    stats: MergeStats


def _spool(nodes: Iterable[NodeResult], redact: frozenset[str]) -> _Spool:
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the second pass, closed there
    seen: dict[str, None] = {}
    widths: dict[str, int] = {}
    stats = MergeStats()
    try:
        for node in nodes:
            rows = node.checked_rows()
            if rows:
                stats.nodes_with_rows += 1
            lines = []
            for row in rows:
                tagged = redact_row(tag_row(row, node.node_id, node.hostname), redact)
                for key, value in tagged.items():
                    if key not in seen:
                        seen[key] = None
                    width = min(len(_cell(value)), TABLE_MAX_WIDTH)
                    if width > widths.get(key, 0):
                        widths[key] = width
                lines.append(_dump_row(tagged))
            if lines:
                spool.write(b"\n".join(lines) + b"\n")
            stats.rows += len(lines)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    others = sorted(k for k in seen if k not in (NODE_ID, HOSTNAME))
    columns = [NODE_ID, HOSTNAME, *others] if seen else []
    return _Spool(spool, columns, widths, stats)


def _spooled_rows(spool: _Spool) -> Iterator[dict[str, str]]:
    for line in spool.file:
        row: dict[str, str] = json.loads(line)
        yield row


def _write_csv(nodes: Iterable[NodeResult], out: ByteSink, redact: frozenset[str]) -> MergeStats:
    spool = _spool(nodes, redact)
    with spool.file:
        if not spool.columns:
            return spool.stats
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=spool.columns, restval="", lineterminator="\n")
        writer.writeheader()
        for count, row in enumerate(_spooled_rows(spool), 1):
            writer.writerow(row)
            if count % 1000 == 0:
                out.write(buffer.getvalue().encode("utf-8", "backslashreplace"))
                buffer.seek(0)
                buffer.truncate()
        out.write(buffer.getvalue().encode("utf-8", "backslashreplace"))
    return spool.stats


def _write_table(nodes: Iterable[NodeResult], out: ByteSink, redact: frozenset[str]) -> MergeStats:
    spool = _spool(nodes, redact)
    with spool.file:
        if not spool.columns:
            out.write(b"(no rows)\n")
            return spool.stats
        widths = {c: max(len(c), spool.widths.get(c, 0)) for c in spool.columns}
        out.write(_table_line(spool.columns, {c: c for c in spool.columns}, widths))
        out.write(_table_line(spool.columns, {c: "-" * widths[c] for c in spool.columns}, widths))
        for row in _spooled_rows(spool):
            out.write(_table_line(spool.columns, row, widths))
    return spool.stats


def _table_line(columns: list[str], row: dict[str, str], widths: dict[str, int]) -> bytes:
    cells = []
    for column in columns:
        value = _cell(row.get(column, ""))
        if len(value) > widths[column]:
            value = value[: widths[column] - 3] + "..."
        cells.append(value.ljust(widths[column]))
    return ("  ".join(cells).rstrip() + "\n").encode("utf-8", "backslashreplace")


_CONTROL = re.compile(r"[\x00-\x1f\x7f\x9b]")


def _cell(value: str) -> str:
    """A value safe to show in a terminal: control characters (escape sequences) made visible."""
    if _CONTROL.search(value) is None:
        return value
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], value)


# --------------------------------------------------------------------------- stdout


class _TextSink:
    """Bytes onto a text stream (tests pass io.StringIO as stdout)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes, /) -> int:
        self.stream.write(data.decode("utf-8", "surrogateescape"))
        return len(data)


def _stdout_sink(env: Environment) -> tuple[ByteSink, Callable[[], object]]:
    stream = env.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return _TextSink(stream), stream.flush
    stream.flush()
    return buffer, buffer.flush


def _silence_stdout(env: Environment) -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, env.stdout.fileno())
        os.close(devnull)
