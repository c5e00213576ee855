"""A bounded, terminal-safe diff of two texts that came from a host (e.g. nftables rulesets).

A compromised host controls both texts: it can make them huge (a million rules,
so ``difflib`` would run for minutes and the report would flood the screen) and
put escape sequences in them. So the texts are capped before comparing, the
diff is cut to :data:`MAX_DIFF_LINES` lines of at most :data:`MAX_LINE_WIDTH`
characters, and every line is escaped with :func:`terminal_safe`.
"""

from __future__ import annotations

import difflib

from fleetkit.foundation.terminal import terminal_safe

#: Texts larger than this are not diffed line by line, only reported as different.
MAX_RULESET_BYTES = 256 * 1024
MAX_DIFF_LINES = 40
MAX_LINE_WIDTH = 160


def bounded_diff(before: str, after: str, *, labels: tuple[str, str]) -> list[str]:
    """The unified diff of ``before`` -> ``after`` as escaped, bounded lines; [] when equal.

    Trailing whitespace at the ends of the texts is not a difference.
    """
    if before.strip() == after.strip():
        return []
    if len(before) > MAX_RULESET_BYTES or len(after) > MAX_RULESET_BYTES:
        return [
            f"(too large to compare line by line: {len(before)} and {len(after)} characters; "
            f"the limit is {MAX_RULESET_BYTES})"
        ]
    lines = list(
        difflib.unified_diff(
            before.strip().splitlines(),
            after.strip().splitlines(),
            labels[0],
            labels[1],
            lineterm="",
        )
    )
    added = sum(1 for line in lines[2:] if line.startswith("+"))
    removed = sum(1 for line in lines[2:] if line.startswith("-"))
    shown = [_cut(line) for line in lines[:MAX_DIFF_LINES]]
    if len(lines) > MAX_DIFF_LINES:
        shown.append(f"... ({len(lines) - MAX_DIFF_LINES} more diff lines)")
    return [f"{added} line(s) added, {removed} removed:", *shown]


def _cut(line: str) -> str:
    text = terminal_safe(line.expandtabs(4))
    if len(text) > MAX_LINE_WIDTH:
        return text[: MAX_LINE_WIDTH - 3] + "..."
    return text
