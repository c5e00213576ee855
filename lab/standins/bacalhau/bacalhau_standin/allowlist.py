"""``Compute.AllowListedLocalPaths``: doublestar globs with exact-path semantics.

``/var/osquery`` allows only that path; children need ``/var/osquery/*`` or
``/var/osquery/**`` (which also matches the directory itself). A trailing
``:rw`` or ``:ro`` sets write access; no suffix means read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class AllowedPath:
    pattern: str
    writable: bool

    @classmethod
    def parse(cls, entry: str) -> AllowedPath:
        for suffix, writable in ((":rw", True), (":ro", False)):
            if entry.endswith(suffix):
                return cls(entry[: -len(suffix)], writable)
        return cls(entry, False)

    def matches(self, path: str) -> bool:
        return _compiled(self.pattern).fullmatch(path) is not None


def _class(pattern: str, i: int) -> tuple[str, int]:
    end = pattern.find("]", i + 1)
    if end < 0:
        return re.escape("["), i + 1
    body = pattern[i + 1 : end]
    if body.startswith(("!", "^")):
        body = "^" + body[1:]
    return "[" + body.replace("\\", "\\\\") + "]", end + 1


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i) and (i + 3 == len(pattern) or pattern[i + 3] == "/"):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            piece, i = _class(pattern, i)
            out.append(piece)
        elif pattern[i] == "{":
            end = pattern.find("}", i)
            if end < 0:
                out.append(re.escape("{"))
                i += 1
                continue
            options = pattern[i + 1 : end].split(",")
            out.append("(?:" + "|".join(_compiled(o).pattern for o in options) + ")")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


class NotAllowed(Exception):
    """The node refuses a local input; the message is the real one."""


def check_local_path(entries: list[str], source_path: str, read_write: bool) -> None:
    """Raise ``NotAllowed`` unless some entry grants ``source_path`` (with write if asked)."""
    matching = [a for a in (AllowedPath.parse(e) for e in entries) if a.matches(source_path)]
    if not matching:
        raise NotAllowed(f"volume {source_path} is not allowlisted")
    if read_write and not any(a.writable for a in matching):
        raise NotAllowed(f"volume {source_path} is not granted write access")
