"""Machine output, generically: formats, the ``--output`` path, delivery, small records.

What is specific to fleet answers (merging every node's rows, tagging them)
lives in :mod:`fleetkit.ask.merge`; this module knows nothing about nodes.

Delivery (:func:`deliver`): ``--output FILE`` is written atomically
(:mod:`fleetkit.foundation.atomic`); otherwise the bytes go to stdout and
nothing else does (human output goes to stderr).

A reader that closes stdout early (``fleetkit query ... | head``) is not an
error and does not kill fleetkit: the write stops, stdout is pointed at
/dev/null so nothing more is attempted, and the command goes on to its
closing summary on stderr and its usual exit status. Why this rather than
dying by SIGPIPE (exit 141, the classic filter behaviour): the summary names
the nodes that failed, timed out or were excluded -- the part of the answer
a person must not lose because the rows were cut short -- and the exit status
still says whether the fleet answered, for scripts using ``pipefail``. It is
also the only behaviour an in-process run (``invoke query``) can have, so
both entry points now behave the same.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

from fleetkit.foundation.atomic import atomic_output
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import UsageError
from fleetkit.foundation.table import render_table

FORMATS = ("json", "ndjson", "csv", "table")
#: What ``deliver`` tells the user when the reader went away.
CLOSED_EARLY = "the reader closed the output early; the rest was not written"


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def check_format(name: str) -> str:
    fmt = (name or "").strip().lower()
    if fmt not in FORMATS:
        raise UsageError(f"must be one of {', '.join(FORMATS)}, got {name!r}", key="--format")
    return fmt


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


# --------------------------------------------------------------------------- delivery


def deliver(env: Environment, write: Callable[[ByteSink], object], output: str | None) -> bool:
    """Run ``write`` on ``output`` (atomically) or on stdout; True when stdout closed early."""
    if output:
        with atomic_output(output) as handle:
            write(handle)
        return False
    sink, finish = _stdout_sink(env)
    try:
        write(sink)
        finish()
    except BrokenPipeError:
        silence_stdout(env)
        return True
    return False


def _stdout_sink(env: Environment) -> tuple[ByteSink, Callable[[], object]]:
    stream = env.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return _TextSink(stream), stream.flush
    stream.flush()
    return buffer, buffer.flush


class _TextSink:
    """Bytes onto a text stream (tests pass io.StringIO as stdout)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes, /) -> int:
        self.stream.write(data.decode("utf-8", "surrogateescape"))
        return len(data)


def silence_stdout(env: Environment) -> None:
    """After EPIPE, point stdout at /dev/null so later writes and the final flush are quiet."""
    with contextlib.suppress(OSError, AttributeError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, env.stdout.fileno())
        os.close(devnull)


def write_pieces(out: ByteSink, pieces: list[bytes]) -> None:
    """Write ``pieces`` in order: gathered by the kernel (``writev``) when ``out`` is a
    real file, so a large output is not first joined into one more copy of itself."""
    fileno = getattr(out, "fileno", None)
    flush = getattr(out, "flush", None)
    try:
        fd = fileno() if fileno is not None and flush is not None else -1
    except (OSError, ValueError):  # io.UnsupportedOperation: BytesIO and friends
        fd = -1
    if fd < 0 or len(pieces) < 2:
        out.write(b"".join(pieces))
        return
    assert flush is not None
    flush()  # what the buffered file holds goes first
    writev_all(fd, pieces)


def writev_all(
    fd: int,
    pieces: list[bytes],
    writev: Callable[[int, list[bytes | memoryview]], int] = os.writev,
) -> None:
    """``writev`` until every byte is written (a pipe may take part of a batch)."""
    batch = max(1, min(os.sysconf("SC_IOV_MAX"), 1024))
    index = 0
    rest: memoryview | None = None  # what is left of pieces[index] after a short write
    while index < len(pieces):
        chunk: list[bytes | memoryview] = list(pieces[index : index + batch])
        if rest is not None:
            chunk[0] = rest
        written = writev(fd, chunk)
        if written == sum(map(len, chunk)):  # the usual case: no Python loop over pieces
            index += len(chunk)
            rest = None
            continue
        for piece in chunk:
            if written < len(piece):
                rest = memoryview(piece)[written:]
                break
            written -= len(piece)
            index += 1
            rest = None


# --------------------------------------------------------------------------- small records


def render_records(
    records: Sequence[Mapping[str, object]], columns: Sequence[str], output_format: str
) -> bytes:
    """Small results already in memory (policy verdicts, hunt hits) in any format.

    The fleet merge streams (:mod:`fleetkit.ask.merge`); these are a few rows
    per host, so plain ``json``/``csv`` calls are clearer. ``table`` is the
    one renderer's, columns under an upper-case header, cells terminal-safe.
    """
    if output_format == "table":
        rows = [[record.get(c, "") for c in columns] for record in records]
        return render_table([c.upper() for c in columns], rows, max_width=None).encode()
    out = io.StringIO()
    if output_format == "json":
        json.dump(list(records), out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif output_format == "ndjson":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return out.getvalue().encode("utf-8", "backslashreplace")


def emit_report(env: Environment, *, as_json: bool, data: object, summary: str, table: str) -> None:
    """A report for people and scripts (verify, nodes): ``--json`` puts the data
    on stdout and a one-line summary on stderr; otherwise the table goes to
    stderr. Secrets are redacted either way."""
    if as_json:
        text = redact(json.dumps(data, indent=2)) + "\n"
        if deliver(env, lambda sink: sink.write(text.encode()), None):
            env.say(CLOSED_EARLY)
        env.say(summary)
    else:
        env.stderr.write(redact(table))
        env.stderr.flush()
