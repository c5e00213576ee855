"""Text from hosts, the orchestrator or files, made safe to print on a terminal.

A compromised node can put escape sequences in anything it returns (a node
ID, an osquery error, a file path, a row value). Printed raw, they can
rewrite the screen, hide lines, set the window title or, on some terminals,
answer back. Every human-facing output (tables, summaries, error messages,
verify evidence, ``--check`` diffs) passes such text through
:func:`terminal_safe`; machine formats (JSON, NDJSON, CSV) keep exact values.
"""

from __future__ import annotations

import re

#: C0 controls, DEL and the C1 range (0x80-0x9f: CSI 0x9b and friends act on
#: many terminals), plus the Unicode line/paragraph separators and bidi
#: overrides that reorder or break what the reader sees.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\n``...).

    ``keep_newlines`` keeps ``\\n`` as a real line break, for multi-line text
    fleetkit itself composed (a diff, a table) whose lines came from a host:
    each line is still escaped.
    """
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_escape, line) for line in text.split("\n"))
    return _UNSAFE.sub(_escape, text)
