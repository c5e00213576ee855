"""Packs: running them on their intervals (watch), listing, checking, importing."""

from __future__ import annotations

from invoke.context import Context

from fleetkit.cli.base import command, finish, wants_help


@command(
    iterable=["pack"],
    pack="pack name, file or directory (repeatable; default: watch.packs, else every pack)",
    once="run each pack once and exit (1 if a run failed); for cron and tests",
    interval="seconds between runs of every pack, instead of each pack's interval (>= 1)",
)
def watch(
    c: Context,
    pack: list[str] | None = None,
    once: bool = False,
    interval: float = 0.0,
    settings: str = "",
) -> None:
    """Run packs on their intervals as one job per node; record; notify on change."""
    import fleetkit.commands.watch as core

    finish(
        c,
        lambda rt: core.run(rt, packs=pack or [], once=once, interval=interval or None),
        settings,
    )


_PACK_OPTION = "pack file or directory (repeatable; default: packs/ by fleetkit.yaml, else shipped)"


@command(iterable=["pack"], pack=_PACK_OPTION)
def packs_list(c: Context, pack: list[str] | None = None, settings: str = "") -> None:
    """List every pack: name, kind, interval, platform, number of queries, file."""
    import fleetkit.commands.packs as core

    finish(c, lambda rt: core.run_list(rt, packs=pack or []), settings)


@command(iterable=["pack"], pack=_PACK_OPTION)
def packs_check(c: Context, pack: list[str] | None = None, settings: str = "") -> None:
    """Validate every pack and its SQL (denied tables, redacted columns); nothing runs."""
    import fleetkit.commands.packs as core

    finish(c, lambda rt: core.run_check(rt, packs=pack or []), settings)


@command(
    file="the osquery pack to convert (JSON; // and # comment lines allowed)",
    kind="hunt (any row is a finding) or inventory (rows recorded; default)",
    output="write the pack to this file (atomically) instead of stdout",
)
def packs_import(
    c: Context, file: str, kind: str = "inventory", output: str = "", settings: str = ""
) -> None:
    """Convert an osquery pack into a fleetkit pack, reporting every oddity."""
    if wants_help("packs.import", file):
        return
    import fleetkit.commands.packs as core

    finish(c, lambda rt: core.run_import(rt, file, kind, output), settings)
