"""``invoke verify``: readiness per node, check by check, with evidence and the fix.

The checks, the probe and the report live in :mod:`fleetkit.readiness`;
this module is the command: select the hosts, verify them, print the table
(or ``--json``), exit 0 only when every check passes. ``verify`` and
``render_table`` are re-exported for onboarding, which verifies the host it
just provisioned.
"""

from __future__ import annotations

from fleetkit.foundation.inventory import parse_hosts_option
from fleetkit.foundation.output import emit_report
from fleetkit.foundation.status import ExitStatus
from fleetkit.readiness.catalog import probe_script
from fleetkit.readiness.engine import verify
from fleetkit.readiness.expected import Expected
from fleetkit.readiness.render import render_table, summary_line
from fleetkit.runtime import Runtime

__all__ = ["Expected", "probe_script", "render_table", "run", "verify"]


def run(rt: Runtime, *, hosts: str, as_json: bool) -> ExitStatus:
    """``invoke verify``: table on stderr (or JSON on stdout); 0 only when every check passes."""
    rt.load()
    selected = rt.inventory.select(parse_hosts_option(hosts))
    report = verify(rt, selected)
    emit_report(
        rt.env,
        as_json=as_json,
        data=report.to_json(),
        summary=summary_line(report),
        table=render_table(report),
    )
    return report.exit_status
