"""Strict YAML reading shared by the inventory, settings, packs and IOC files.

PyYAML silently keeps the last of two equal keys; for an inventory that hides
a duplicated host, so this loader refuses duplicates. Every error becomes a
:class:`ConfigError` naming the file (and line), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from fleetkit.foundation.status import ConfigError


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(
    loader: _StrictLoader, node: MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (line {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = True
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse YAML text; errors name ``file`` and the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"invalid YAML at {where}: {exc.problem}", file=file) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None
    return parse_yaml(text, file=str(path))


def expect_mapping(value: Any, *, file: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {type(value).__name__}", file=file, key=key)
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"keys must be strings, got {k!r}", file=file, key=key)
    return value


def reject_unknown_keys(mapping: dict[str, Any], allowed: set[str], *, file: str, key: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        sep = "." if key else ""
        raise ConfigError(
            f"unknown key (allowed: {', '.join(sorted(allowed))})",
            file=file,
            key=f"{key}{sep}{unknown[0]}",
        )
