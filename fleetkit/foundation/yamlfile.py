"""Strict YAML reading shared by the inventory, settings, packs, IOC files and host files.

Every YAML document fleetkit reads may be hostile (a pack from elsewhere, a
config file read back from a compromised host). So this loader:

- refuses duplicate keys (PyYAML silently keeps the last one; for an inventory
  that hides a duplicated host);
- refuses aliases (``*name``, and so ``<<: *name`` merges): an alias-expansion
  "billion laughs" document is a few hundred bytes that expand to gigabytes,
  and no fleetkit file needs them;
- caps nesting depth (:data:`MAX_DEPTH`; PyYAML recurses and would crash) and
  node count (:data:`MAX_NODES`) while composing, and the document's size
  (``max_bytes``: a byte cap per kind of file, see the ``*_BYTES`` constants);
- reads only regular files, without blocking (a FIFO is refused, not waited on).

Every error becomes a :class:`ConfigError` naming the file (and line), never a
traceback. Error messages quote bounded excerpts of the offending value.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.validate import excerpt

#: Byte caps, per kind of file.
SETTINGS_BYTES = 1024 * 1024
INVENTORY_BYTES = 1024 * 1024
PACK_BYTES = 4 * 1024 * 1024
#: A file read back from a host (verify): small configuration files.
HOST_FILE_BYTES = 256 * 1024
#: Default for :func:`load_yaml` / :func:`parse_yaml` when the caller names none.
DEFAULT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 50_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and counts nodes and depth while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            raise ComposerError(
                None, None, "aliases (*name) are not accepted in fleetkit files", mark
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise ComposerError(None, None, f"more than {MAX_NODES} values", mark)
        if self._depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(
    loader: _StrictLoader, node: MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key (a list, a mapping)
            raise ConstructorError(
                None, None, "a key must be a plain value", key_node.start_mark
            ) from None
        if duplicate:
            raise ConstructorError(
                None,
                None,
                f"duplicate key {excerpt(key)} (line {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = True
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, *, file: str, max_bytes: int | None = None) -> Any:
    """Parse YAML text; errors name ``file`` and the line.

    ``max_bytes`` caps the document (UTF-8 bytes; default :data:`DEFAULT_BYTES`);
    pass :data:`HOST_FILE_BYTES` for text read back from a host.
    """
    limit = DEFAULT_BYTES if max_bytes is None else max_bytes
    if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
        raise ConfigError(f"YAML document larger than {limit} bytes", file=file)
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = excerpt(exc.problem or "", limit=160, quoted=False)
        raise ConfigError(f"invalid YAML at {where}: {problem}", file=file) from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        raise ConfigError(
            f"invalid YAML: {excerpt(str(exc), limit=160, quoted=False)}", file=file
        ) from None


def read_regular_file(path: Path, *, limit: int, what: str = "file", hint: str = "") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else is bad input.

    Opened with ``O_NONBLOCK`` (a FIFO does not hang the open) and checked with
    ``fstat`` on the open descriptor (no swap between check and read), so a
    FIFO, device, socket or directory, or a symlink to one, is refused. At most
    ``limit + 1`` bytes are read, so a file growing meanwhile is still caught.
    """
    file = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot open: {exc.strerror}", file=file) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"{what} is not a regular file (a FIFO, device, socket or directory)", file=file
            )
        chunks: list[bytes] = []
        size = 0
        while size <= limit and info.st_size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if max(size, info.st_size) > limit:
            raise ConfigError(
                f"{what} is {max(size, info.st_size)} bytes or more; the limit is {limit} "
                f"bytes{hint}",
                file=file,
            )
        return b"".join(chunks)
    except BlockingIOError:
        raise ConfigError(f"{what} cannot be read without blocking", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    finally:
        os.close(fd)


def load_yaml(path: Path, *, max_bytes: int | None = None) -> Any:
    """Read and parse a YAML file (a regular file of at most ``max_bytes``)."""
    limit = DEFAULT_BYTES if max_bytes is None else max_bytes
    data = read_regular_file(path, limit=limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (line {line})", file=str(path)) from None
    return parse_yaml(text, file=str(path), max_bytes=limit)


def expect_mapping(value: Any, *, file: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {type(value).__name__}", file=file, key=key)
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"keys must be strings, got {excerpt(k)}", file=file, key=key)
    return value


def reject_unknown_keys(mapping: dict[str, Any], allowed: set[str], *, file: str, key: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        sep = "." if key else ""
        raise ConfigError(
            f"unknown key (allowed: {', '.join(sorted(allowed))})",
            file=file,
            key=f"{key}{sep}{excerpt(unknown[0], quoted=False)}",
        )
