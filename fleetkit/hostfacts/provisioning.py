"""Provisioning a fleet: plans for every host, then each host's plan run by the executor.

Order of work, and why:

1. Plan every targeted host: render every file from the templates and reveal
   the secrets they hold. A template or settings mistake is bad input (exit
   2) found here, before any host is contacted.
2. Push mode: fetch/read the packages and check their pinned SHA-256 on the
   admin machine, before anything is uploaded anywhere.
3. The control plane first: Bacalhau orchestrator running and answering
   ``/api/v1/agent/alive``. Meanwhile compute hosts connect and read their
   facts (one probe each, which changes nothing), so that part of their run
   is not added to the control plane's; none of them changes anything until
   the control plane is done. If it fails, compute hosts are not touched
   (their agents would have nothing to join) and the recap says why.
4. Compute hosts in parallel (bounded pool), each in a few round trips
   (:mod:`fleetkit.hostfacts.executor`). A host that fails does not stop the
   others; exit 1 names it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetkit.clients.ssh import Outcome, fan_out
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ConfigError, FleetkitError
from fleetkit.hostfacts.executor import HostRun
from fleetkit.hostfacts.packages import PackageRef, PackageStore
from fleetkit.hostfacts.recap import HostRecap, ProvisionReport, host_line
from fleetkit.hostfacts.roles import HostPlan, RoleContext, plan_for
from fleetkit.hostfacts.steps import PlanContext

if TYPE_CHECKING:
    from fleetkit.runtime import Runtime

#: Why a compute host was left alone after Ctrl-C.
INTERRUPTED = "not touched: interrupted"


def build_plans(rt: Runtime, hosts: list[Host]) -> list[HostPlan]:
    """Render the desired state of every host; raises ConfigError before any contact."""
    context = RoleContext(
        settings=rt.settings,
        inventory=rt.inventory,
        renderer=Renderer.for_settings(rt.settings),
    )
    return [plan_for(host, context) for host in hosts]


def apply(rt: Runtime, hosts: list[Host], *, check: bool = False) -> ProvisionReport:
    """Provision ``hosts`` (inventory order kept in the report); prints progress, no recap."""
    plans = build_plans(rt, hosts)
    refs = [ref for plan in plans for ref in plan.packages]
    store = PackageStore(rt.settings, rt.http_session_factory)
    if rt.settings.transfer_mode == "push":
        store.prepare(refs)
    else:
        _require_urls(rt, refs)
    reports: dict[str, HostRecap] = {}
    total = len(plans)

    def finished(report: HostRecap) -> None:
        reports[report.host.name] = report
        rt.env.progress(f"[{len(reports)}/{total}] {host_line(report, check=check)}")

    control = [p for p in plans if p.host.is_control_plane]
    others = [p for p in plans if not p.host.is_control_plane]
    gate = _Gate()
    by_name = {p.host.name: p for p in others}

    def work(host: Host) -> HostRecap:
        early = gate.before_start()
        if early is not None:
            return HostRecap(host, error=early)
        recap = run_plan(rt, by_name[host.name], store, check, gate=gate.reason)
        blocked = gate.reason()  # reported after the control plane, whatever happened here
        return recap if blocked is None else HostRecap(host, error=blocked)

    def done(outcome: Outcome[HostRecap]) -> None:
        gate.reason()
        if outcome.value is not None:
            finished(outcome.value)
        else:
            finished(HostRecap(outcome.host, error=f"internal error: {outcome.error!r}"))

    compute = _Background(
        lambda: fan_out(
            [p.host for p in others],
            work,
            parallelism=rt.settings.ssh.parallelism,
            on_done=done,
        )
    )
    try:
        for plan in control:
            finished(run_plan(rt, plan, store, check))
        failed = [reports[p.host.name] for p in control if reports[p.host.name].failed]
        cp = failed[0] if failed else None
        gate.open(
            f"not touched: the control plane {cp.host.name} failed ({cp.reason()})" if cp else None
        )
        compute.join()
    except BaseException:
        # Ctrl-C: hosts still looking or not started change nothing; running ones finish.
        gate.interrupt()
        raise
    rt.env.end_progress()
    return ProvisionReport(check=check, hosts=[reports[p.host.name] for p in plans])


class _Gate:
    """Compute hosts wait here, facts read, until the control plane is done.

    Opened once: with None (go on) or with why the hosts must not be touched
    (the control plane failed). :meth:`interrupt` (Ctrl-C) also keeps hosts
    that have not started yet from starting.
    """

    def __init__(self) -> None:
        self._opened = threading.Event()
        self._reason: str | None = None
        self._interrupted = False
        self._lock = threading.Lock()

    def open(self, reason: str | None) -> None:
        with self._lock:
            if not self._opened.is_set():
                self._reason = reason
                self._opened.set()

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
        self.open(INTERRUPTED)

    def reason(self) -> str | None:
        """Blocks until the gate is open; None = go on."""
        self._opened.wait()
        with self._lock:
            return self._reason

    def before_start(self) -> str | None:
        """Why a host that has not started yet must not start, if the gate already knows."""
        with self._lock:
            if self._interrupted:
                return INTERRUPTED
            return self._reason if self._opened.is_set() else None


class _Background:
    """A function run in a thread; :meth:`join` re-raises what it raised."""

    def __init__(self, function: Callable[[], object]) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                function()
            except BaseException as exc:  # handed to the joining thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="provision-compute", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _require_urls(rt: Runtime, refs: list[PackageRef]) -> None:
    """Pull mode: hosts download, so a package given as a local path cannot work."""
    for ref in refs:
        if not ref.source.is_url:
            raise ConfigError(
                f"transfer_mode is pull, so hosts download the package themselves: "
                f"expected an http(s) URL, got the local path {ref.source.source} "
                "(use transfer_mode: push for local files)",
                file=rt.settings.path,
                key=f"{ref.setting}.source",
            )


def run_plan(
    rt: Runtime,
    plan: HostPlan,
    store: PackageStore,
    check: bool,
    *,
    gate: Callable[[], str | None] | None = None,
) -> HostRecap:
    """One host: connect, run its plan through the executor, recap what happened.

    ``gate``: asked after the host's facts are read, before any change (see
    :meth:`fleetkit.hostfacts.executor.HostRun.execute`).
    """
    recap = HostRecap(plan.host)
    if not plan.steps:
        recap.note = "in neither control_plane nor compute: nothing to provision"
        return recap
    try:
        remote = rt.connector.connect(plan.host)
    except FleetkitError as exc:
        recap.error = redact(str(getattr(exc, "detail", None) or exc))
        return recap
    context = PlanContext(
        host=plan.host,
        packages=store,
        settings_file=rt.settings.path,
        check=check,
        service_manager=rt.settings.service_manager,
    )
    with remote:
        run = HostRun(remote, context, rt.env, rt.http_session_factory)
        outcome = run.execute(plan.steps, gate=gate)
    recap.records = outcome.records
    recap.failed_step, recap.error = outcome.failed_step, outcome.error
    recap.round_trips = outcome.round_trips
    return recap
