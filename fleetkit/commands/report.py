"""``invoke report``: the fleet at a glance as one static HTML file, and the evidence bundle.

- ``report [--output report.html] [--since 7d]``: the report of the history
  (:mod:`fleetkit.report.fromhistory`); never contacts a host.
- ``report --bundle evidence.tar.gz [--runs ID,...]``: the report, the raw
  merged output of each chosen run and ``manifest.json`` (see
  :mod:`fleetkit.report.bundle`); default runs: the ones the report shows.
- ``report --check-bundle FILE``: every file against the manifest; exit 1
  naming each file that changed, is missing or was added.

Exit status: 0 written (also when nothing was recorded yet: the report says
so); 2 bad input -- a bad option, a history file that is missing its
directory, unreadable or corrupt (named), an output that cannot be written
(nothing is left behind), a bundle that cannot be checked; 1 from
``--check-bundle`` when a file changed.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetkit import __version__
from fleetkit.foundation.output import check_output_path
from fleetkit.foundation.status import ExitStatus, UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import History, HistorySettings, NoHistoryError, open_history
from fleetkit.history.verifyrun import latest_verified
from fleetkit.report.bundle import write_bundle
from fleetkit.report.bundlecheck import check_bundle
from fleetkit.report.evidence import bundle_runs, parse_run_ids, shown_run_ids
from fleetkit.report.fromhistory import Period, build_report
from fleetkit.report.html import write_report
from fleetkit.report.model import FleetReport, QuarantinedHost
from fleetkit.runtime import Runtime

DEFAULT_OUTPUT = "report.html"
DEFAULT_SINCE = "7d"
#: The label that marks a quarantined host (``invoke quarantine`` sets it in the inventory).
QUARANTINE_LABEL = ("quarantined", "true")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE = re.compile(r"(?:\d{1,6}[mhdw])+")
#: Longest --since (100 years): anything longer is the whole history anyway.
_MAX_SINCE = timedelta(days=36500)


def parse_since(text: str) -> timedelta | None:
    """``7d``, ``12h``, ``2w``, ``1d12h`` -> a period; ``all`` -> None (the whole history)."""
    value = (text or "").strip().lower()
    if value == "all":
        return None
    if not _SINCE.fullmatch(value):
        raise UsageError(
            f"expected a period like 7d, 12h, 2w or 1d12h, or 'all', got {terminal_safe(text)!r}",
            key="--since",
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([mhdw])", value))
    if seconds <= 0:
        raise UsageError(f"the period must be longer than zero, got {text!r}", key="--since")
    return min(timedelta(seconds=seconds), _MAX_SINCE)


def quarantined_hosts(rt: Runtime) -> tuple[QuarantinedHost, ...]:
    """Inventory hosts labelled ``quarantined=true`` (by ``invoke quarantine``).

    When each was isolated is not recorded anywhere fleetkit can trust yet,
    so ``since`` stays unknown rather than guessed from a file's time.
    """
    key, value = QUARANTINE_LABEL
    return tuple(
        QuarantinedHost(host.name)
        for host in sorted(rt.inventory.hosts, key=lambda h: h.name)
        if host.labels.get(key) == value
    )


def run(
    rt: Runtime,
    *,
    output: str = "",
    since: str = DEFAULT_SINCE,
    bundle: str = "",
    runs: str = "",
    check: str = "",
    now: datetime | None = None,
) -> ExitStatus:
    if check:
        if output or bundle or runs:
            raise UsageError("give --check-bundle alone", key="--check-bundle")
        return check_file(rt, check)
    if runs and not bundle:
        raise UsageError("--runs chooses the runs of a --bundle; give --bundle too", key="--runs")
    chosen = parse_run_ids(runs) if runs else None
    period_length = parse_since(since)
    moment = now or datetime.now(UTC)
    period = Period(moment, moment - period_length if period_length else None)
    page = Path(rt.env.cwd, output or DEFAULT_OUTPUT) if output or not bundle else None
    archive = Path(rt.env.cwd, bundle) if bundle else None
    for target in (page, archive):
        if target is not None:
            check_output_path(str(target))
    quarantined = quarantined_hosts(rt)
    with contextlib.ExitStack() as stack:
        history = open_reader(rt)
        if history is not None:
            stack.callback(history.close)
            verified = latest_verified(history)
            model = build_report(
                history,
                period,
                fleetkit_version=__version__,
                quarantined=quarantined,
                verified=verified,
            )
        else:
            if chosen:
                raise UsageError("nothing is recorded yet: no run to bundle", key="--runs")
            verified = []
            model = FleetReport(moment, __version__, since=period.since, quarantined=quarantined)
        if archive is not None:
            ids = chosen if chosen is not None else shown_run_ids(model, verified)
            picked = bundle_runs(history, ids, verified, stack) if history is not None else []
            written = write_bundle(archive, model, picked)
            rt.env.say(
                terminal_safe(
                    f"report: wrote the bundle {archive}: {len(written.files)} file(s), "
                    f"{len(picked)} run(s); manifest sha256 {written.manifest_sha256} "
                    "(keep it elsewhere: it proves the manifest unchanged)"
                )
            )
        if page is not None:
            size = write_report(page, model)
            rt.env.say(terminal_safe(f"report: wrote {page} ({size:,} bytes)"))
    summarize(rt, model)
    return ExitStatus.SUCCESS


def open_reader(rt: Runtime) -> History | None:
    """The history, read-only; None (said on stderr) when nothing was recorded yet.

    "Nothing yet" is the default history file not existing. A history file the
    settings name that does not exist, or any unreadable or corrupt one, is
    HistoryError (exit 2) naming the file.
    """
    settings = rt.settings
    try:
        return open_history(settings.history, for_writing=False)
    except NoHistoryError:
        if settings.history.path != HistorySettings.default(settings.base_dir).path:
            raise NoHistoryError(
                f"history file {settings.history.path} does not exist (history.path in the "
                "settings names it: nothing recorded there yet, or a wrong path)"
            ) from None
    rt.env.say(
        terminal_safe(
            f"report: no history yet at {settings.history.path}: the report says so "
            "(run verify, policy, hunt or query to record runs)"
        )
    )
    return None


def summarize(rt: Runtime, model: FleetReport) -> None:
    """What the report holds, in one line per section (stderr)."""
    ready = sum(1 for host in model.readiness if host.ready)
    hits = sorted({host for hunt in model.hunts for host in hunt.hosts_hit})
    rt.env.say(
        f"report: readiness {ready}/{len(model.readiness)} ready; "
        f"{model.policies.failing_hosts} of {len(model.policies.hosts)} host(s) failing a "
        f"policy; {len(hits)} host(s) with hunt hits in {len(model.hunts)} hunt(s); "
        f"{len(model.quarantined)} quarantined; {len(model.queries)} query run(s); "
        f"{len(model.coverage)} run(s) in the period"
    )


def check_file(rt: Runtime, path: str) -> ExitStatus:
    """``--check-bundle FILE``: 0 when every file is as recorded, 1 naming the others."""
    result = check_bundle(Path(rt.env.cwd, path))
    shown = terminal_safe(str(result.path))
    if result.ok:
        rt.env.say(
            f"check-bundle: {shown}: all {len(result.checked)} file(s) match the manifest "
            f"(manifest sha256 {result.manifest_sha256})"
        )
        return ExitStatus.SUCCESS
    for line in result.problems():
        rt.env.say(f"check-bundle: {shown}: {line}")
    rt.env.say(
        f"check-bundle: {shown}: {len(result.problems())} file(s) differ from the manifest "
        f"(manifest sha256 {result.manifest_sha256}) (exit 1)"
    )
    return ExitStatus.FAILURE
