"""osqueryi's command-line contract, in one place: how it is called and what it prints.

What fleetkit relies on (reference/osquery.md §3):

- the SQL is osqueryi's one positional argument (never a flag: see
  :func:`argv_safe_sql`); over SSH it travels on stdin and reaches that
  argument without meeting a parser (:func:`osqueryi_command`);
- with ``--connect`` a banner line (``Connected to extension socket ...``)
  comes first on stdout, so the output starts at the first line that opens
  with ``[`` (:func:`json_start`);
- rows are printed as ``[\\n  {...},\\n  {...}\\n]\\n``; an empty result is
  ``[\\n\\n]\\n``; every value is a JSON string (SQL NULL is ``""``), keys are
  sorted;
- a failed query exits non-zero with ``Error: ...`` on stderr and still prints
  an empty array (or only the banner) on stdout, so the exit code is read
  *before* ``[]`` is trusted (:func:`classify_exit`).
"""

from __future__ import annotations

import json
import mmap
import shlex
from typing import Any

from fleetkit.foundation.status import FleetkitError

#: Longest piece of a node's stderr or bad output quoted in a message.
QUOTE_LIMIT = 300


class OutputError(FleetkitError):
    """osqueryi printed something that is not its JSON output contract."""


# --------------------------------------------------------------------------- calling it


def argv_safe_sql(sql: str) -> str:
    """The SQL as osqueryi's positional argument: never mistaken for a flag.

    osqueryi (gflags) reads any argument starting with ``-`` as a flag, so a
    query opening with a ``-- comment`` would fail as an unknown flag. A
    leading space changes nothing for SQLite and everything for gflags.
    """
    return " " + sql if sql.startswith("-") else sql


def osqueryi_command(socket: str) -> str:
    """The remote command: fixed text; the SQL arrives on stdin and never meets a parser.

    ``sh`` reads stdin into a variable and hands it to osqueryi as its one
    positional argument: ``"${sql%.}"`` is expanded once, as data (no word
    splitting, no globbing, no command substitution of its content), and the
    trailing ``.`` keeps the SQL's own trailing newlines that ``$(...)`` would
    strip. osqueryi thus gets the SQL exactly as the Bacalhau job passes it (a
    positional argument), so both transports behave the same -- including
    multi-statement SQL, which osqueryi's stdin mode would print as several
    arrays. ``sh -c`` keeps this independent of the login shell.
    """
    script = (
        f'sql=$(cat; echo .); exec osqueryi --connect={shlex.quote(socket)} --json "${{sql%.}}"'
    )
    return f"sh -c {shlex.quote(script)}"


# --------------------------------------------------------------------------- exit code


def classify_exit(
    exit_code: int | None, stdout: bytes | None, stderr: bytes | str | None
) -> str | None:
    """Why a finished osqueryi run failed, or None when its output may be read.

    The exit code decides first: a non-zero exit is a failure with osquery's
    own message (``Error: ...`` on stderr) even when stdout holds a
    valid-looking ``[]``.
    """
    if exit_code is None:
        return "no exit code"
    if exit_code != 0:
        return osquery_error(stderr, stdout, exit_code)
    return None


def osquery_error(stderr: bytes | str | None, stdout: bytes | None, exit_code: int) -> str:
    """The most telling line osqueryi printed, for the summary."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else (stderr or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    chosen = errors[-1] if errors else (lines[-1] if lines else "")
    if not chosen and stdout:
        start = json_start(stdout)
        rest = stdout[max(start, 0) :].decode("utf-8", "replace")
        shown = [ln for ln in rest.splitlines() if ln.strip()]
        chosen = shown[0] if shown else ""
    chosen = chosen[:QUOTE_LIMIT]
    return f"exit {exit_code}: {chosen}" if chosen else f"exit {exit_code} with no message"


# --------------------------------------------------------------------------- output


def json_start(stdout: bytes | mmap.mmap) -> int:
    """Offset of the JSON array: the first line that starts with ``[``.

    Only a line start counts, so a banner naming a socket path with ``[`` in
    it is still skipped. -1 when there is no such line.
    """
    if stdout[:1] == b"[":
        return 0
    at = stdout.find(b"\n[")
    return at + 1 if at >= 0 else -1


def parse_osqueryi_json(stdout: bytes) -> list[dict[str, str]]:
    """osqueryi ``--json`` output (banner allowed) as a list of string-valued rows.

    Raises :class:`OutputError` on anything else: no array, truncated JSON,
    invalid UTF-8, rows that are not objects, nested values.
    """
    start = json_start(stdout)
    if start < 0:
        raise OutputError(f"no JSON array in the output ({quote_bytes(stdout)})")
    try:
        data = json.loads(stdout[start:])
    except UnicodeDecodeError as exc:
        raise OutputError(f"output is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise OutputError("JSON nested too deeply") from None
    except ValueError as exc:
        raise OutputError(f"invalid JSON ({exc}): {quote_bytes(stdout[start:])}") from None
    if not isinstance(data, list):
        raise OutputError(f"expected a JSON array, got {type(data).__name__}")
    return [string_row(row, index) for index, row in enumerate(data)]


def string_row(row: Any, index: int) -> dict[str, str]:
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


def quote_bytes(data: bytes) -> str:
    """A bounded, one-line excerpt of a node's bytes for a message."""
    text = data[:QUOTE_LIMIT].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text + ("..." if len(data) > QUOTE_LIMIT else ""))
