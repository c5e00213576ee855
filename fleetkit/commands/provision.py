"""``invoke provision``: bring hosts to their role's desired state.

Order of work, and why:

1. Plan every targeted host: render every file from the templates and reveal
   the secrets they hold. A template or settings mistake is bad input (exit
   2) found here, before any host is contacted.
2. Push mode: fetch/read the packages and check their pinned SHA-256 on the
   admin machine, before anything is uploaded anywhere.
3. The control plane first: Bacalhau orchestrator running and answering
   ``/api/v1/agent/alive``. If it fails, compute hosts are not touched (their
   agents would have nothing to join) and the recap says why.
4. Compute hosts in parallel (bounded pool), each step looking before it
   changes. A host that fails does not stop the others; exit 1 names it.

``apply`` is the API other commands use (onboarding); ``run`` is the CLI.
"""

from __future__ import annotations

from fleetkit.clients.ssh import Outcome, fan_out
from fleetkit.foundation.inventory import Host, parse_hosts_option
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ConfigError, ExitStatus, FleetkitError
from fleetkit.hostfacts.packages import PackageRef, PackageStore
from fleetkit.hostfacts.recap import (
    HostReport,
    ProvisionReport,
    StepRecord,
    format_plan,
    format_recap,
)
from fleetkit.hostfacts.recap import host_line as _host_line
from fleetkit.hostfacts.roles import HostPlan, RoleContext, plan_for
from fleetkit.hostfacts.steps import HostSession
from fleetkit.runtime import Runtime

__all__ = ["ProvisionReport", "apply", "build_plans", "run"]


def run(rt: Runtime, *, hosts: str, check: bool) -> ExitStatus:
    """The CLI: provision the selected hosts, print the recap (and the plan in check mode)."""
    rt.load()
    targets = rt.inventory.select(parse_hosts_option(hosts))
    report = apply(rt, targets, check=check)
    if check:
        rt.env.stdout.write(format_plan(report))
        rt.env.stdout.flush()
    rt.env.say(format_recap(report))
    return report.exit_status


def build_plans(rt: Runtime, hosts: list[Host]) -> list[HostPlan]:
    """Render the desired state of every host; raises ConfigError before any contact."""
    context = RoleContext(
        settings=rt.settings,
        inventory=rt.inventory,
        renderer=Renderer(rt.settings.templates_dir),
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
    reports: dict[str, HostReport] = {}
    total = len(plans)

    def finished(report: HostReport) -> None:
        reports[report.host.name] = report
        rt.env.progress(f"[{len(reports)}/{total}] {_host_line(report, check=check)}")

    control = [p for p in plans if p.host.is_control_plane]
    others = [p for p in plans if not p.host.is_control_plane]
    for plan in control:
        finished(_run_plan(rt, plan, store, check))
    blocked = [reports[p.host.name] for p in control if reports[p.host.name].failed]
    if blocked:
        cp = blocked[0]
        for plan in others:
            finished(
                HostReport(
                    plan.host,
                    error=f"not touched: the control plane {cp.host.name} failed ({cp.reason()})",
                )
            )
    else:
        by_name = {p.host.name: p for p in others}

        def work(host: Host) -> HostReport:
            return _run_plan(rt, by_name[host.name], store, check)

        def done(outcome: Outcome[HostReport]) -> None:
            if outcome.value is not None:
                finished(outcome.value)
            else:
                finished(HostReport(outcome.host, error=f"internal error: {outcome.error!r}"))

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


def _run_plan(rt: Runtime, plan: HostPlan, store: PackageStore, check: bool) -> HostReport:
    report = HostReport(plan.host)
    if not plan.steps:
        report.note = "in neither control_plane nor compute: nothing to provision"
        return report
    try:
        remote = rt.connector.connect(plan.host)
    except FleetkitError as exc:
        report.error = _detail(exc)
        return report
    with remote:
        session = HostSession(
            host=plan.host,
            remote=remote,
            env=rt.env,
            packages=store,
            settings_file=rt.settings.path,
            check=check,
            service_manager=rt.settings.service_manager,
            http_session_factory=rt.http_session_factory,
        )
        for step in plan.steps:
            try:
                result = step.apply(session)
            except FleetkitError as exc:
                report.failed_step, report.error = step.describe(), _detail(exc)
                break
            except Exception as exc:  # a bug must not hide the other hosts' results
                report.failed_step = step.describe()
                report.error = f"internal error: {type(exc).__name__}: {exc}"
                break
            report.records.append(StepRecord(step.describe(), result))
    return report


def _detail(exc: BaseException) -> str:
    return redact(str(getattr(exc, "detail", None) or exc))
