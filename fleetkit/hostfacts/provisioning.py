"""Provisioning a fleet: plans for every host, then each host's plan run by the executor.

Order of work, and why:

1. Plan every targeted host: render every file from the templates and reveal
   the secrets they hold. A template or settings mistake is bad input (exit
   2) found here, before any host is contacted.
2. Push mode: fetch/read the packages and check their pinned SHA-256 on the
   admin machine, before anything is uploaded anywhere.
3. The control plane first: Bacalhau orchestrator running and answering
   ``/api/v1/agent/alive``. If it fails, compute hosts are not touched (their
   agents would have nothing to join) and the recap says why.
4. Compute hosts in parallel (bounded pool), each in a few round trips
   (:mod:`fleetkit.hostfacts.executor`). A host that fails does not stop the
   others; exit 1 names it.
"""

from __future__ import annotations

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
    for plan in control:
        finished(run_plan(rt, plan, store, check))
    blocked = [reports[p.host.name] for p in control if reports[p.host.name].failed]
    if blocked:
        cp = blocked[0]
        for plan in others:
            finished(
                HostRecap(
                    plan.host,
                    error=f"not touched: the control plane {cp.host.name} failed ({cp.reason()})",
                )
            )
    else:
        by_name = {p.host.name: p for p in others}

        def work(host: Host) -> HostRecap:
            return run_plan(rt, by_name[host.name], store, check)

        def done(outcome: Outcome[HostRecap]) -> None:
            if outcome.value is not None:
                finished(outcome.value)
            else:
                finished(HostRecap(outcome.host, error=f"internal error: {outcome.error!r}"))

        fan_out(
            [p.host for p in others],
            work,
            parallelism=rt.settings.ssh.parallelism,
            on_done=done,
        )
    rt.env.end_progress()
    return ProvisionReport(check=check, hosts=[reports[p.host.name] for p in plans])


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


def run_plan(rt: Runtime, plan: HostPlan, store: PackageStore, check: bool) -> HostRecap:
    """One host: connect, run its plan through the executor, recap what happened."""
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
        outcome = run.execute(plan.steps)
    recap.records = outcome.records
    recap.failed_step, recap.error = outcome.failed_step, outcome.error
    recap.round_trips = outcome.round_trips
    return recap
