"""One job per pack: K osquery questions answered inside ONE task on each node.

A pack used to cost K jobs per run (K submissions, K polls, K result reads).
Here the task is a fixed POSIX shell script that loops over its positional
parameters and runs ``osqueryi --connect=SOCKET --json SQL`` for each one;
the SQL travels as separate argv elements (never interpolated into the
script, so no shell ever parses it), exactly like the single-query job.

Each answer is *framed* on stdout, length-prefixed, so one query's failure,
hang or huge output loses none of the others, and bytes inside an answer
(rows carry file names, command lines and other text that users of the node
control) can never be mistaken for framing::

    FLEETKIT-PACK/1 <K>\\n
    FK> <i> <exit code> <stdout bytes> <stderr bytes kept> <stderr bytes total>\\n
    <stdout bytes><stderr bytes kept>
    <SHA-256 of the header line and both payloads>  f<i>\\n
    ... one frame per query, i = 1..K in order ...
    FLEETKIT-PACK/1 END <K>\\n

:func:`parse_pack_output` reads that strictly and within bounds. A hostile
node controls every byte, so anything that does not match is an error for
that query or for the node, never a crash and never an answer attributed to
the wrong query: frames must come in order with the expected index, the
declared lengths must be followed by the trailer, whose checksum must match
the frame, and once the structure is broken nothing after that point is
trusted. ``RunOutput`` keeps only 2048
bytes; a stream cut short says ``truncated`` so the caller can read the
published copy (S3) instead.

Cost on the node per statement: osqueryi, ``wc``, two ``cat`` and
``sha256sum`` (plus ``head`` when stderr is over the limit). Frames stream
out as each statement is answered, so a task killed by its timeout still
delivers the statements it finished.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from fleetkit.ask.packs import Statement
from fleetkit.foundation.status import UsageError

MAGIC = b"FLEETKIT-PACK/1"
#: The task's program: the image (osquery's, Ubuntu based) and every lab host have /bin/sh.
SHELL = "/bin/sh"
#: ``$0`` of the script: what ``ps`` shows on the node.
SCRIPT_NAME = "fleetkit-pack"
#: stderr kept per query; osquery's errors are one line, anything longer is noise or hostile.
DEFAULT_STDERR_LIMIT = 4096
#: Seconds one query may run before ``timeout`` (when the node has it) stops it: exit 124.
DEFAULT_QUERY_TIMEOUT = 60
#: Largest stdout one query's answer may have; bigger ones are an error for that query only.
DEFAULT_MAX_QUERY_BYTES = 64 * 1024 * 1024
MAX_QUERIES = 1024
_MAX_HEADER = 120
_CHUNK = 64 * 1024

#: The whole task. Fixed text: the SQL only ever arrives as "$@". Positional
#: parameters: socket, stderr limit, per-query timeout (0 = none), SQL...
#: Sizes are measured from files after osqueryi has exited, so a frame's
#: declared length is exactly what follows it; ``sha256sum`` (coreutils,
#: busybox) of the frame's file ends the frame, so a cut, a flipped byte or a
#: spliced frame is caught. Files are named relative to the temporary
#: directory so ``sha256sum`` prints ``<hex>  f<i>``.
SCRIPT = r"""sock=$1; limit=$2; qt=$3; shift 3
d=$(mktemp -d 2>/dev/null) && cd "$d" || { echo 'fleetkit: no temporary directory' >&2; exit 70; }
trap 'rm -rf "$d"' EXIT
trap 'exit 143' HUP INT TERM
t=0
if [ "$qt" -gt 0 ] && command -v timeout >/dev/null 2>&1; then t=$qt; fi
ask() {
  if [ "$t" -gt 0 ]; then timeout -k 5 "$t" osqueryi "--connect=$sock" --json "$1"
  else osqueryi "--connect=$sock" --json "$1"; fi
}
printf 'FLEETKIT-PACK/1 %d\n' "$#"
i=0
for sql do
  i=$((i + 1))
  ask "$sql" </dev/null >o 2>e
  rc=$?
  { read -r n _; read -r e _; } <<EOF
$(wc -c o e)
EOF
  kept=e
  m=$e
  if [ "$e" -gt "$limit" ]; then head -c "$limit" e >k; kept=k; m=$limit; fi
  printf 'FK> %d %d %d %d %d\n' "$i" "$rc" "$n" "$m" "$e" >h
  cat h o "$kept" >"f$i"
  cat "f$i"
  sha256sum "f$i"
done
printf 'FLEETKIT-PACK/1 END %d\n' "$i"
"""

_NUMBER = rb"(0|[1-9][0-9]{0,17})"
_PREAMBLE_RE = re.compile(MAGIC + rb" " + _NUMBER + rb"\n")
_END_RE = re.compile(MAGIC + rb" END " + _NUMBER + rb"\n")
_HEADER_RE = re.compile(rb"FK> " + rb" ".join([_NUMBER] * 5) + rb"\n")
#: ``sha256sum f<i>``'s own output line ends each frame: checksum and trailer in one.
_TRAILER_RE = re.compile(rb"([0-9a-f]{64})  f" + _NUMBER + rb"\n")


# --------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class PackCommand:
    """What the pack's task execs (argv = entrypoint + parameters; no shell parses the SQL)."""

    entrypoint: tuple[str, ...]
    parameters: tuple[str, ...]
    #: Statement names in argv order: answer i belongs to names[i].
    names: tuple[str, ...]
    stderr_limit: int

    def engine_params(self, image: str) -> dict[str, Any]:
        """``Tasks[0].Engine.Params`` in the shape ``build_osquery_job`` writes."""
        return {
            "Image": image,
            "Entrypoint": list(self.entrypoint),
            "Parameters": list(self.parameters),
        }


def pack_command(
    statements: Sequence[Statement],
    *,
    socket_path: str,
    query_timeout: int = DEFAULT_QUERY_TIMEOUT,
    stderr_limit: int = DEFAULT_STDERR_LIMIT,
) -> PackCommand:
    """The task that answers every statement of a pack, in order, in one execution."""
    if not statements:
        raise UsageError("a pack run needs at least one statement", key="statements")
    if len(statements) > MAX_QUERIES:
        raise UsageError(
            f"{len(statements)} statements: at most {MAX_QUERIES} in one job", key="statements"
        )
    names = [s.name for s in statements]
    if len(set(names)) != len(names):
        raise UsageError("statement names must be unique within a pack run", key="statements")
    for statement in statements:
        if not statement.sql.strip():
            raise UsageError(f"statement {statement.name!r} has empty SQL", key="statements")
        if "\0" in statement.sql:
            raise UsageError(
                f"statement {statement.name!r} contains a NUL character", key="statements"
            )
    if not socket_path.startswith("/") or "\0" in socket_path:
        raise UsageError(f"expected an absolute socket path, got {socket_path!r}", key="socket")
    if query_timeout < 0 or stderr_limit < 0:
        raise UsageError("timeouts and limits cannot be negative", key="statements")
    return PackCommand(
        entrypoint=(SHELL, "-c", SCRIPT, SCRIPT_NAME),
        parameters=(
            socket_path,
            str(stderr_limit),
            str(query_timeout),
            *(s.sql for s in statements),
        ),
        names=tuple(names),
        stderr_limit=stderr_limit,
    )


# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True)
class QueryAnswer:
    """One statement's part of a node's answer.

    ``error`` is None when the frame was read intact: then ``exit_code`` and
    ``stdout`` are what osqueryi returned (parse ``stdout`` as any osqueryi
    output, banner included, trusting ``[]`` only after the exit code).
    Otherwise ``error`` says why this statement has no answer from this node.
    """

    index: int
    name: str
    exit_code: int | None = None
    stdout: bytes | None = None
    #: osqueryi's stderr as sent (at most the limit), bytes: decode with :attr:`stderr_text`.
    stderr: bytes = b""
    stderr_truncated: bool = False
    error: str | None = None

    @property
    def framed(self) -> bool:
        return self.error is None

    @property
    def stderr_text(self) -> str:
        """stderr for a message (still hostile: escape it before a terminal)."""
        text = self.stderr.decode("utf-8", "replace").strip()
        return text + (" [cut]" if self.stderr_truncated else "")


@dataclass(frozen=True)
class PackAnswer:
    """A node's answer to a pack: one :class:`QueryAnswer` per statement, in order."""

    answers: tuple[QueryAnswer, ...]
    #: Why some answers are missing, or what was wrong around the frames; None = nothing.
    problem: str | None = None
    #: The output ended early: the full copy (S3) may hold the missing frames.
    truncated: bool = False

    @property
    def complete(self) -> bool:
        return self.problem is None and all(a.framed for a in self.answers)


class _FrameError(Exception):
    """The structure broke at this point: nothing after it is attributable."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


class _Stream:
    """Bounded reads from the node's stdout (bytes in memory or a spooled file)."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.offset = 0

    def line(self, what: str) -> bytes:
        data = self.source.readline(_MAX_HEADER)
        self.offset += len(data)
        if not data:
            raise _FrameError(f"the output ends before the {what}", truncated=True)
        if not data.endswith(b"\n"):
            if len(data) < _MAX_HEADER:
                raise _FrameError(f"the output ends inside the {what}", truncated=True)
            raise _FrameError(
                f"expected the {what} at byte {self.offset - len(data)}: {_quote(data)}"
            )
        return data

    def exact(self, size: int, keep: bool, digest: Any) -> bytes:
        """``size`` bytes fed to ``digest`` (kept, or skipped in chunks when ``keep`` is False)."""
        parts: list[bytes] = []
        left = size
        while left:
            chunk = self.source.read(min(left, _CHUNK))
            if not chunk:
                raise _FrameError(
                    f"the output ends {left} bytes before the frame's declared end",
                    truncated=True,
                )
            self.offset += len(chunk)
            left -= len(chunk)
            digest.update(chunk)
            if keep:
                parts.append(chunk)
        return b"".join(parts)

    def at_end(self) -> bool:
        return not self.source.read(1)


def parse_pack_output(
    output: bytes | IO[bytes],
    names: Sequence[str],
    *,
    stderr_limit: int = DEFAULT_STDERR_LIMIT,
    max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
) -> PackAnswer:
    """Split one node's framed stdout into one answer per statement (``names`` in argv order).

    Never raises on bad input: every problem is an ``error`` of the
    statements it concerns (a frame that breaks takes the later ones with it,
    since offsets after it mean nothing) or the answer's ``problem``.
    """
    source: IO[bytes] = io.BytesIO(output) if isinstance(output, bytes) else output
    stream = _Stream(source)
    expected = len(names)
    answers: list[QueryAnswer] = []
    try:
        count = _number(_PREAMBLE_RE, stream.line("pack header"), "pack header")
        if count != expected:
            raise _FrameError(
                f"the node answered for {count} statements, the pack has {expected}: "
                "answers cannot be matched to statements"
            )
        for index, name in enumerate(names):
            answers.append(_read_frame(stream, index, name, stderr_limit, max_query_bytes))
        end = _number(_END_RE, stream.line("end of the pack"), "end of the pack")
        if end != expected:
            return PackAnswer(tuple(answers), f"the end marker counts {end} statements")
        if not stream.at_end():
            return PackAnswer(tuple(answers), "unexpected output after the end of the pack")
        return PackAnswer(tuple(answers))
    except _FrameError as exc:
        return _broken(answers, names, exc)


def _read_frame(
    stream: _Stream, index: int, name: str, stderr_limit: int, max_query_bytes: int
) -> QueryAnswer:
    where = f"statement {index + 1} ({name})"
    header = stream.line(f"header of {where}")
    match = _HEADER_RE.fullmatch(header)
    if match is None:
        raise _FrameError(f"bad frame header for {where}: {_quote(header)}")
    number, code, out_len, err_len, err_total = (int(g) for g in match.groups())
    if number != index + 1:
        raise _FrameError(f"expected the frame of {where}, got frame {number}")
    if code > 255:
        raise _FrameError(f"exit code {code} of {where} is not an exit code")
    if err_len != min(err_total, stderr_limit):
        raise _FrameError(
            f"{where} keeps {err_len} of {err_total} stderr bytes (the limit is {stderr_limit})"
        )
    digest = hashlib.sha256(header)
    keep = out_len <= max_query_bytes
    stdout = stream.exact(out_len, keep, digest)
    stderr = stream.exact(err_len, True, digest)
    trailer = _TRAILER_RE.fullmatch(stream.line(f"end of {where}"))
    if trailer is None:
        raise _FrameError(f"{where}: no frame end after the declared lengths")
    if int(trailer.group(2)) != index + 1:
        raise _FrameError(f"the frame of {where} ends with another statement's number")
    if trailer.group(1) != digest.hexdigest().encode():
        raise _FrameError(f"{where}: the frame's checksum does not match its bytes")
    if not keep:
        return QueryAnswer(
            index,
            name,
            exit_code=code,
            stderr=stderr,
            stderr_truncated=err_len < err_total,
            error=f"output of {out_len} bytes is over the limit of {max_query_bytes}",
        )
    return QueryAnswer(
        index,
        name,
        exit_code=code,
        stdout=stdout,
        stderr=stderr,
        stderr_truncated=err_len < err_total,
    )


def _number(pattern: re.Pattern[bytes], line: bytes, what: str) -> int:
    match = pattern.fullmatch(line)
    if match is None:
        raise _FrameError(f"expected the {what}, got {_quote(line)}")
    return int(match.group(1))


def _broken(answers: list[QueryAnswer], names: Sequence[str], exc: _FrameError) -> PackAnswer:
    """Answers read so far stand; the statement where it broke and all later ones are errors."""
    reason = str(exc)
    done = len(answers)
    rest = [
        QueryAnswer(
            index,
            names[index],
            error=reason if index == done else f"not answered: {reason}",
        )
        for index in range(done, len(names))
    ]
    return PackAnswer(tuple(answers + rest), reason, truncated=exc.truncated)


def _quote(data: bytes) -> str:
    """A short, printable excerpt of hostile bytes for a message."""
    text = repr(data[:40])
    return text + ("..." if len(data) > 40 else "")


# --------------------------------------------------------------------------- test double


def encode_pack_output(
    answers: Sequence[tuple[int, bytes, bytes]], *, stderr_limit: int = DEFAULT_STDERR_LIMIT
) -> bytes:
    """What :data:`SCRIPT` prints for these (exit code, stdout, stderr) answers.

    The script is the producer on real nodes; this twin lets tests and fake
    transports produce the same bytes without a shell (a test checks the two agree).
    """
    parts = [MAGIC + b" %d\n" % len(answers)]
    for number, (code, out, err) in enumerate(answers, start=1):
        kept = err[:stderr_limit]
        frame = b"FK> %d %d %d %d %d\n" % (number, code, len(out), len(kept), len(err))
        frame += out + kept
        parts += [frame, b"%s  f%d\n" % (hashlib.sha256(frame).hexdigest().encode(), number)]
    parts.append(MAGIC + b" END %d\n" % len(answers))
    return b"".join(parts)
