"""Reading an osquery pack file as osquery writes them, hostile input assumed.

osquery's packs (``/opt/osquery/share/osquery/packs/*.conf``) are JSON with
whole-line ``//`` or ``#`` comments. JSON itself says nothing about repeated
keys and most readers silently keep the last one; the importer must *report*
them, so objects are read as :class:`JsonObject` (every pair, in file order).
The file is bounded in size and nesting; every failure is a :class:`ConfigError`
naming the file (exit 2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.terminal import terminal_safe

#: osquery's bundled packs are about 15 KB each; 256 KiB is generous and keeps the import
#: (every statement tokenized by the SQL guard, YAML written and read back) near a second.
MAX_PACK_BYTES = 256 * 1024
_COMMENT_LINE = re.compile(r"^[ \t]*(//|#)")
#: The keys osquery reads at a pack's top level and in each query (docs: configuration.md).
OSQUERY_PACK_KEYS = {"queries", "platform", "version", "discovery", "shard"}
OSQUERY_QUERY_KEYS = {
    "query",
    "interval",
    "platform",
    "version",
    "description",
    "value",
    "removed",
    "snapshot",
    "shard",
    "denylist",
    "blacklist",
    "startup_priority",
}
#: How much of a hostile name or value a report line shows.
SHOWN_CHARS = 80


class JsonObject(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in file order, repeated keys kept."""

    def last(self) -> dict[str, Any]:
        """The object as most JSON readers see it: the last of repeated keys wins."""
        return dict(self)

    def repeated(self) -> list[str]:
        """Keys given more than once, in order of first appearance."""
        counts: dict[str, int] = {}
        for key, _value in self:
            counts[key] = counts.get(key, 0) + 1
        return [key for key, count in counts.items() if count > 1]

    def values_of(self, key: str) -> Iterator[Any]:
        return (value for k, value in self if k == key)


def shown(value: object) -> str:
    """A name or value from the file, quoted, escaped for a terminal and cut."""
    text = terminal_safe(repr(value) if isinstance(value, str) else json_text(value))
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def json_text(value: object) -> str:
    """A parsed JSON value written back as compact JSON, for a report (last repeated key shown)."""
    return json.dumps(_plain(value), ensure_ascii=True, separators=(",", ":"))


def _plain(value: object) -> object:
    if isinstance(value, JsonObject):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read_osquery_pack(path: Path) -> Any:
    """Parse the file; whole-line comments are blanked so JSON error lines stay right."""
    file = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PACK_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from None
    if len(raw) > MAX_PACK_BYTES:
        raise ConfigError(
            f"larger than {MAX_PACK_BYTES // 1024} KiB: not an osquery pack", file=file
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    lines = ["" if _COMMENT_LINE.match(line) else line for line in text.split("\n")]
    try:
        return json.loads(
            "\n".join(lines), object_pairs_hook=JsonObject, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=file
        ) from None
    except RecursionError:
        raise ConfigError("invalid JSON: nested too deeply", file=file) from None
    except ValueError as exc:  # NaN/Infinity, integers beyond Python's digit limit
        raise ConfigError(f"invalid JSON: {terminal_safe(str(exc))}", file=file) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
