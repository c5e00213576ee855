"""Writing a pack as YAML that reads like a hand-written one, and loads.

Used by the osquery import; anything that writes packs goes through here so
every written pack is checked by loading it back with the same loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from fleetkit.ask.packs import pack_from_data
from fleetkit.ask.scope import SqlRules
from fleetkit.foundation.yamlfile import parse_yaml


class Sql(str):
    """SQL text: written as a literal block, never re-wrapped (a folded line is a changed query
    to a reader, even when YAML folds it back)."""


class _PackDumper(yaml.SafeDumper):
    """Lists indented under their key (as packs are written by hand); SQL and multi-line
    text as literal blocks; everything else as PyYAML decides (quoted, escaped when needed)."""

    def ignore_aliases(self, data: object) -> bool:
        """Never write anchors/aliases: fleetkit's YAML loader refuses them (no alias bombs)."""
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value or isinstance(value, Sql) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style=style)


_PackDumper.add_representer(str, _represent_str)
_PackDumper.add_representer(Sql, _represent_str)


def pack_yaml(document: dict[str, Any], *, header: Sequence[str], rules: SqlRules) -> str:
    """``document`` (keys in the order given) as YAML under ``#`` header lines.

    Non-ASCII and control characters are written as escapes, so the file is
    safe to ``cat``. The text is loaded back before it is returned: a pack
    fleetkit would refuse is a bug in the writer, never a file on disk.
    """
    comments = "".join(f"# {line}\n" for line in header)
    text = comments + yaml.dump(
        document, Dumper=_PackDumper, sort_keys=False, allow_unicode=False, width=100
    )
    pack_from_data(parse_yaml(text, file="<written pack>"), file="<written pack>", rules=rules)
    return text
