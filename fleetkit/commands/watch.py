"""``invoke watch [--once] [--pack ...] [--interval S]``: run packs on their intervals.

Every pack (``watch.packs``, ``--pack``, or all found) runs as ONE job per
node, is recorded in the history and notifies on change only (a host newly
failing a policy, a policy fixed, a new hunt hit, a node missing for
``watch.missing_after`` runs) through the log and the signed webhook. The
work is in :mod:`fleetkit.watch.service`; this module validates everything
first and starts it.

Exit status: 2 before anything starts when a pack, the settings, the
inventory, the history or the webhook secret is bad (file and key named);
with ``--once`` 0, or 1 when a run failed (orchestrator down...); a
running watch stopped by SIGTERM (a service stop) exits 0, by Ctrl-C 130.
``--interval`` overrides every pack's interval (at least 1 s, below the
packs' 10 s floor on purpose: for trying a pack out and for tests).
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetkit.ask.packfields import format_interval
from fleetkit.ask.via_bacalhau import ClientFactory
from fleetkit.foundation.status import ExitStatus
from fleetkit.history import History, open_history
from fleetkit.history.recorder import Mirror
from fleetkit.runtime import Runtime
from fleetkit.watch.notify import display_url
from fleetkit.watch.packset import WatchedPack, load_watched
from fleetkit.watch.service import Watch, build_watch


def run(
    rt: Runtime,
    *,
    packs: list[str],
    once: bool,
    interval: float | None = None,
    client_factory: ClientFactory | None = None,
) -> ExitStatus:
    watch = prepare(rt, packs=packs, interval=interval, client_factory=client_factory)
    rt.env.say(startup_line(rt, watch.packs, once=once))
    return watch.run(once=once)


def prepare(
    rt: Runtime,
    *,
    packs: list[str],
    interval: float | None = None,
    client_factory: ClientFactory | None = None,
) -> Watch:
    """Everything validated and wired, nothing run yet (exit 2 here for any bad input)."""
    rt.load()
    settings = rt.settings
    watched = load_watched(settings, cli_packs=packs, cwd=rt.env.cwd, interval=interval)
    client = client_factory(rt) if client_factory is not None else rt.orchestrator
    history = _open_history(rt)
    try:
        return build_watch(settings, rt.env, watched, history, client, rt.inventory.compute)
    except BaseException:
        history.close()
        raise


def _open_history(rt: Runtime) -> History:
    settings = rt.settings
    mirror: Mirror | None = None
    if settings.history.store == "s3":  # boto3 is slow to import: only when it is used
        from fleetkit.history.s3layout import open_mirror

        mirror = open_mirror(settings.history, settings.query.s3, rt.env.environ)
    return open_history(settings.history, mirror=mirror)


def startup_line(rt: Runtime, watched: Sequence[WatchedPack], *, once: bool) -> str:
    w = rt.settings.watch
    packs = ", ".join(
        f"{p.name} ({p.pack.kind}, {_count(p)}, "
        + ("once" if once else f"every {format_interval(int(p.interval))}")
        + ")"
        for p in watched
    )
    sinks = ["log"] if w.log_events else []
    if w.webhook is not None:
        sinks.append(f"webhook {display_url(w.webhook.url)}")
    return (
        f"watch: {len(watched)} pack(s): {packs}; history {rt.settings.history.path}; "
        f"status {w.status_file}; notifications: {', '.join(sinks) or 'none'}"
    )


def _count(watched: WatchedPack) -> str:
    size = watched.pack.size
    if watched.pack.kind == "policy":
        return f"{size} {'policy' if size == 1 else 'policies'}"
    return f"{size} {'query' if size == 1 else 'queries'}"
