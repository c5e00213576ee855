"""Where pack files are: ``packs/`` beside fleetkit.yaml, else the packs shipped with fleetkit.

Only *finding* files lives here, in the foundation, because two layers need
it: the pack loader (:mod:`fleetkit.ask.packs`, which validates what it
reads) and provisioning, which copies the watch's packs to the control
plane (:mod:`fleetkit.hostfacts.roles.watch`) and must pick exactly the
files the watch would run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fleetkit.foundation.inventory import NAME_RE
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.yamlfile import PACK_BYTES, expect_mapping, load_yaml

#: The packs shipped with fleetkit (package data); ``packs/`` beside fleetkit.yaml wins.
SHIPPED_PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"
PACK_SUFFIXES = (".yaml", ".yml")


def find_pack_files(settings_base_dir: str) -> list[Path]:
    """``packs/*.yaml`` beside fleetkit.yaml when that directory has any, else the shipped packs."""
    for directory in (Path(settings_base_dir) / "packs", SHIPPED_PACKS_DIR):
        files = pack_files_in(directory)
        if files:
            return files
    return []


def pack_files_in(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in PACK_SUFFIXES and p.is_file())


def pack_name_of(path: Path) -> str:
    """The ``pack:`` name a file declares (the file is read strictly; nothing else is checked)."""
    data = expect_mapping(load_yaml(path, max_bytes=PACK_BYTES), file=str(path), key="(top level)")
    name = data.get("pack")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(
            "expected a pack name (letters, digits, . _ -)", file=str(path), key="pack"
        )
    return name


def resolve_pack_files(
    settings_base_dir: str, wanted: Sequence[str], *, cwd: str, key: str
) -> list[Path]:
    """The files of the packs ``wanted`` (names, files, directories); [] = every pack found.

    A name is looked up among the packs found (:func:`find_pack_files`);
    anything else is a file or a directory (its ``*.yaml``), relative to ``cwd``.
    Every problem is a ConfigError naming ``key`` (``watch.packs``, ``--pack``).
    """
    found = find_pack_files(settings_base_dir)
    if not wanted:
        if not found:
            raise ConfigError("no packs found (packs/*.yaml beside the settings)", key=key)
        return found
    by_name: dict[str, Path] | None = None
    files: dict[Path, None] = {}
    for item in wanted:
        if NAME_RE.fullmatch(item) and not item.endswith(PACK_SUFFIXES):
            if by_name is None:
                by_name = {pack_name_of(p): p for p in found}
            if item not in by_name:
                known = ", ".join(sorted(by_name)) or "none"
                raise ConfigError(f"no pack named {item!r} (found: {known})", key=key)
            files[by_name[item]] = None
            continue
        path = Path(cwd, item)
        if path.is_dir():
            files.update(dict.fromkeys(pack_files_in(path)))
        elif path.is_file():
            files[path] = None
        else:
            raise ConfigError(f"no pack file or directory {item!r}", key=key)
    return list(files)
