"""``invoke provision``: bring hosts to their role's desired state.

The work is in :mod:`fleetkit.hostfacts.provisioning` (plans, then each
host's plan run in a few round trips); this module is the command: select
the hosts, provision them, print the recap (and in check mode the plan with
its diffs on stdout). ``apply`` is re-exported for the commands that
provision a host as part of their own work (onboard, quarantine).
"""

from __future__ import annotations

from fleetkit.foundation.inventory import parse_hosts_option
from fleetkit.foundation.status import ExitStatus
from fleetkit.hostfacts.provisioning import apply, build_plans
from fleetkit.hostfacts.recap import ProvisionReport, format_plan, format_recap
from fleetkit.runtime import Runtime

__all__ = ["ProvisionReport", "apply", "build_plans", "run"]


def run(rt: Runtime, *, hosts: str, check: bool) -> ExitStatus:
    """The CLI: provision the selected hosts, print the recap (and the plan in check mode)."""
    rt.load()
    targets = rt.inventory.select(parse_hosts_option(hosts))
    if rt.settings.watch.enabled and any(h.is_control_plane for h in targets):
        from fleetkit.watch.packset import load_watched

        # the watch's packs, read as the watch will: a broken one is exit 2 before any host
        load_watched(rt.settings, cwd=rt.settings.base_dir)
    report = apply(rt, targets, check=check)
    if check:
        rt.env.stdout.write(format_plan(report))
        rt.env.stdout.flush()
    rt.env.say(format_recap(report))
    return report.exit_status
