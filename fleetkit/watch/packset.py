"""Which packs a watch runs, loaded strictly before it starts, and each pack's scope.

``watch.packs`` (or ``--pack``) lists pack names and pack files or
directories; nothing listed means every pack found (``packs/`` beside
fleetkit.yaml, else the shipped ones). A name is looked up among the packs
found. Every pack is read and validated before the first run (bad YAML, an
unknown kind, an interval below the floor, SQL reading a denied table or
moving a redacted column under another name: a
:class:`~fleetkit.foundation.status.ConfigError` naming the file and the
key, exit 2), so a watch never starts with a broken pack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetkit.ask.packfields import POSIX_PLATFORMS
from fleetkit.ask.packs import Pack, load_packs
from fleetkit.ask.scope import Scope, SqlRules, Via
from fleetkit.foundation.packfiles import resolve_pack_files
from fleetkit.foundation.selectors import Selector, parse_selector
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import UsageError

#: The node label Bacalhau (v1.8+) sets to the node's operating system.
OS_LABEL = "os_type"
#: ``--interval`` may go below the packs' floor (tests, a quick look), not below this.
OVERRIDE_FLOOR = 1.0


@dataclass(frozen=True)
class WatchedPack:
    """A pack as the watch schedules it (``interval`` may be overridden on the command line)."""

    pack: Pack
    interval: float

    @property
    def name(self) -> str:
        return self.pack.name


def load_watched(
    settings: Settings,
    *,
    cli_packs: Sequence[str] = (),
    cwd: str,
    interval: float | None = None,
) -> list[WatchedPack]:
    """The packs to run: ``--pack`` when given, else ``watch.packs``; all validated now."""
    if interval is not None and not interval >= OVERRIDE_FLOOR:
        raise UsageError(f"must be at least {OVERRIDE_FLOOR:g} second(s)", key="--interval")
    wanted, key = (cli_packs, "--pack") if cli_packs else (settings.watch.packs, "watch.packs")
    files = resolve_pack_files(settings.base_dir, wanted, cwd=cwd, key=key)
    packs = load_packs(files, SqlRules.of(settings))
    return [WatchedPack(p, float(interval if interval is not None else p.interval)) for p in packs]


def platform_selector(pack: Pack) -> Selector:
    """Only nodes of the pack's platforms (``posix`` = linux, darwin, freebsd); any = all."""
    if "any" in pack.platform:
        return parse_selector("")
    systems: set[str] = set()
    for name in pack.platform:
        systems |= POSIX_PLATFORMS if name == "posix" else {name}
    return parse_selector(",".join(f"{OS_LABEL}={name}" for name in sorted(systems)))


def pack_scope(pack: Pack, settings: Settings) -> Scope:
    """Every inventory compute node of the pack's platforms, over Bacalhau, within run_timeout."""
    return Scope(
        selector=platform_selector(pack),
        hosts=None,
        via=Via.BACALHAU,
        timeout=float(settings.watch.run_timeout),
    )
