"""``invoke packs.list | packs.check | packs.import``: see, validate, import packs; nothing runs.

``list`` and ``check`` read the packs ``invoke policy`` and the watch would
read (``packs/`` beside fleetkit.yaml, else the shipped ones; or the files
and directories given). ``import`` converts an osquery pack into a fleetkit
hunt or inventory pack and reports every oddity it met.

These commands work without a settings file (packs are often written and
imported before a fleet exists): then packs are looked for beside the current
directory and checked against the default denied tables, and a note says so.
An explicit ``--settings`` (or ``$FLEETKIT_SETTINGS``) that is missing is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetkit.ask.packfields import format_interval
from fleetkit.ask.packimport import check_import_kind, import_osquery_pack
from fleetkit.ask.packs import (
    SHIPPED_PACKS_DIR,
    Pack,
    check_unique_across_packs,
    find_pack_files,
    load_pack,
    pack_files_in,
)
from fleetkit.ask.scope import SqlRules
from fleetkit.foundation.atomic import atomic_write
from fleetkit.foundation.output import check_output_path
from fleetkit.foundation.settings import DEFAULT_DISABLED_TABLES
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from fleetkit.foundation.table import render_table
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.runtime import Runtime


@dataclass(frozen=True)
class PackContext:
    """Where packs are looked for and what their SQL may not do (tables, redacted columns)."""

    base_dir: str
    rules: SqlRules
    note: str | None = None


def pack_context(rt: Runtime) -> PackContext:
    """From the settings; without a settings file (none named explicitly): defaults, noted."""
    try:
        settings = rt.settings
    except ConfigError as exc:
        explicit = rt.settings_path or rt.env.environ.get("FLEETKIT_SETTINGS")
        if explicit or exc.detail != "file not found" or exc.key is not None:
            raise
        return PackContext(
            base_dir=rt.env.cwd,
            rules=SqlRules(denied_tables=DEFAULT_DISABLED_TABLES),
            note=(
                f"note: no settings file ({terminal_safe(exc.file or '')}): packs checked "
                f"against the default denied tables ({', '.join(DEFAULT_DISABLED_TABLES)})"
            ),
        )
    return PackContext(settings.base_dir, SqlRules.of(settings))


@dataclass(frozen=True)
class LoadedPack:
    path: Path
    pack: Pack | None
    error: ConfigError | None = None


def pack_files(rt: Runtime, context: PackContext, paths: Sequence[str]) -> list[Path]:
    """The files named (a directory stands for its ``*.yaml``), else the default packs."""
    if not paths:
        return find_pack_files(context.base_dir)
    files: dict[Path, Path] = {}  # by resolved path: a file named twice is read once
    for given in paths:
        path = Path(rt.env.cwd, given)
        for file in pack_files_in(path) if path.is_dir() else [path]:
            files.setdefault(file.resolve(), file)
    return list(files.values())


def load_each(files: Sequence[Path], rules: SqlRules) -> list[LoadedPack]:
    """Every pack loaded on its own, so one broken pack does not hide the others."""
    seen: dict[str, str] = {}
    loaded: list[LoadedPack] = []
    for path in files:
        try:
            pack = load_pack(path, rules)
            check_unique_across_packs(pack, seen)
        except ConfigError as exc:
            loaded.append(LoadedPack(path, None, exc))
        else:
            loaded.append(LoadedPack(path, pack))
    return loaded


def shown_path(path: Path, cwd: str) -> str:
    """A pack file as a person wants to read it: relative to cwd, or marked as shipped."""
    resolved = path.resolve()
    if resolved.parent == SHIPPED_PACKS_DIR:
        return f"(shipped) {resolved.name}"
    try:
        return str(resolved.relative_to(Path(cwd).resolve()))
    except ValueError:
        return str(path)


def _say_problems(rt: Runtime, context: PackContext, loaded: Sequence[LoadedPack]) -> None:
    if context.note:
        rt.env.say(context.note)
    for item in loaded:
        if item.error is not None:
            rt.env.say(f"broken pack: {terminal_safe(str(item.error))}")


def _start(rt: Runtime, paths: Sequence[str]) -> tuple[PackContext, list[LoadedPack]]:
    context = pack_context(rt)
    return context, load_each(pack_files(rt, context, paths), context.rules)


def run_list(rt: Runtime, *, packs: Sequence[str] = ()) -> ExitStatus:
    """Every pack found: name, kind, interval, platform, how many queries, file.

    A broken pack is listed too (its name unknown) and named on stderr: exit 2.
    """
    context, loaded = _start(rt, packs)
    rows = []
    for item in loaded:
        where = shown_path(item.path, rt.env.cwd)
        if item.pack is None:
            rows.append((item.path.stem, "(broken)", "-", "-", "-", where))
            continue
        pack = item.pack
        rows.append(
            (
                pack.name,
                pack.kind,
                format_interval(pack.interval),
                ",".join(pack.platform),
                str(pack.size),
                where,
            )
        )
    header = ("PACK", "KIND", "INTERVAL", "PLATFORM", "QUERIES", "FILE")
    rt.env.stdout.write(render_table(header, rows, max_width=None))
    rt.env.stdout.flush()
    _say_problems(rt, context, loaded)
    if not loaded:
        rt.env.say("packs: no packs found")
    broken = sum(1 for item in loaded if item.error is not None)
    return ExitStatus.BAD_INPUT if broken else ExitStatus.SUCCESS


def run_check(rt: Runtime, *, packs: Sequence[str] = ()) -> ExitStatus:
    """Validate every pack and its SQL (denied tables, redacted columns) without running anything.

    stdout: one line per pack, ok or broken; stderr: each broken pack's file,
    key and reason. Exit 2 when any pack is broken, else 0.
    """
    context, loaded = _start(rt, packs)
    rows = []
    for item in loaded:
        where = shown_path(item.path, rt.env.cwd)
        if item.pack is None:
            assert item.error is not None
            rows.append((item.path.stem, "broken", item.error.key or "(file)", where))
        else:
            rows.append((item.pack.name, "ok", str(len(item.pack.statements)), where))
    header = ("PACK", "STATUS", "STATEMENTS / KEY", "FILE")
    rt.env.stdout.write(render_table(header, rows, max_width=None))
    rt.env.stdout.flush()
    _say_problems(rt, context, loaded)
    broken = [shown_path(i.path, rt.env.cwd) for i in loaded if i.error is not None]
    if broken:
        names = terminal_safe(", ".join(broken))
        rt.env.say(f"packs check: {len(broken)} of {len(loaded)} pack(s) broken: {names} (exit 2)")
        return ExitStatus.BAD_INPUT
    rt.env.say(f"packs check: {len(loaded)} pack(s), all valid (exit 0)")
    return ExitStatus.SUCCESS


def run_import(rt: Runtime, file: str, kind: str = "inventory", output: str = "") -> ExitStatus:
    """Convert an osquery pack (``file``) into a fleetkit pack of ``kind`` (hunt | inventory).

    The report (every oddity met, every change made) goes to stderr; the pack
    to stdout, or atomically to ``output``. Nothing convertible: exit 2.
    """
    check_import_kind(kind)
    source = Path(rt.env.cwd, file)
    target = Path(rt.env.cwd, output) if output else None
    if target is not None and target.resolve() == source.resolve():
        raise UsageError("--output is the file being imported: write the pack elsewhere")
    check_output_path(str(target) if target is not None else None)
    context = pack_context(rt)
    if context.note:
        rt.env.say(context.note)
    conversion = import_osquery_pack(source, kind=kind, rules=context.rules)
    shown_file = terminal_safe(file)
    if conversion.notes:
        rt.env.say(f"packs import: {shown_file}: {len(conversion.notes)} note(s):")
    else:
        rt.env.say(f"packs import: {shown_file}: nothing odd met")
    for note in conversion.notes:
        rt.env.say(f"  - {terminal_safe(note)}")
    if conversion.text is None:
        raise ConfigError(
            "nothing to import: every query was skipped (the report above says why)",
            file=file,
            key="queries",
        )
    if target is not None:
        atomic_write(target, conversion.text.encode("utf-8"))
    else:
        rt.env.stdout.write(conversion.text)
        rt.env.stdout.flush()
    rt.env.say(
        f"packs import: pack {conversion.name} ({conversion.kind}, every "
        f"{format_interval(conversion.interval)}): {conversion.kept} queries kept, "
        f"{conversion.skipped} skipped; written to {terminal_safe(output) if output else 'stdout'}"
    )
    return ExitStatus.SUCCESS
