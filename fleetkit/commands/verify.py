"""``invoke verify``: readiness per node, check by check, with evidence and the fix.

The checks, the probe and the report live in :mod:`fleetkit.readiness`;
this module is the command: select the hosts, verify them, print the table
(or ``--json``), record the run in the history (the fleet report shows
"readiness from the last verify"), exit 0 only when every check passes.
``verify`` and ``render_table`` are re-exported for onboarding, which
verifies the host it just provisioned.

The history is opened before any host is probed, so a corrupt, locked or
unwritable history file is exit 2 with nothing contacted (``--no-history``
verifies without recording). A recording that fails halfway leaves the run
incomplete and makes the exit 1, after the whole report was printed.
"""

from __future__ import annotations

import contextlib

from fleetkit.foundation.inventory import parse_hosts_option
from fleetkit.foundation.output import emit_report
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import History, open_history
from fleetkit.history.verifyrun import CheckRecord, HostRecord, record_verify
from fleetkit.readiness.catalog import probe_script
from fleetkit.readiness.engine import verify
from fleetkit.readiness.expected import Expected
from fleetkit.readiness.model import VerifyReport
from fleetkit.readiness.render import render_table, summary_line
from fleetkit.runtime import Runtime

__all__ = ["Expected", "probe_script", "render_table", "run", "verify"]


def run(rt: Runtime, *, hosts: str, as_json: bool, no_history: bool = False) -> ExitStatus:
    """``invoke verify``: table on stderr (or JSON on stdout); 0 only when every check passes."""
    rt.load()
    selected = rt.inventory.select(parse_hosts_option(hosts))
    with contextlib.ExitStack() as stack:
        history = None if no_history else stack.enter_context(open_history(rt.settings.history))
        report = verify(rt, selected)
        emit_report(
            rt.env,
            as_json=as_json,
            data=report.to_json(),
            summary=summary_line(report),
            table=render_table(report),
        )
        recorded = record(rt, history, report, hosts) if history is not None else True
    if not recorded:
        return ExitStatus.FAILURE
    return report.exit_status


def record(rt: Runtime, history: History, report: VerifyReport, hosts: str) -> bool:
    """Record the run; False (said on stderr) when the recording is incomplete."""
    outcome = record_verify(
        history,
        host_records(report, Expected.from_settings(rt.settings)),
        scope={"hosts": parse_hosts_option(hosts) or None},
    )
    for warning in outcome.warnings:
        rt.env.say(terminal_safe(f"history: warning: {warning}"))
    if not outcome.complete:
        rt.env.say(
            terminal_safe(f"history: verify run {outcome.run_id} is INCOMPLETE: {outcome.note}")
        )
        return False
    rt.env.say(f"history: recorded as run {outcome.run_id}")
    return True


def host_records(report: VerifyReport, expected: Expected) -> list[HostRecord]:
    """The report as the history keeps it; versions only as verify confirmed them."""
    records = []
    for host in report.hosts:
        osq, bac = host.check("osquery.package"), host.check("bacalhau.binary")
        records.append(
            HostRecord(
                host=host.name,
                role=host.role,
                ready=host.ready,
                checks=tuple(
                    CheckRecord(c.name, c.verdict.value, c.evidence, c.fix or "")
                    for c in host.checks
                ),
                cluster_node=host.node_id,
                osquery_version=expected.osquery_version if osq and osq.passed else None,
                bacalhau_version=expected.bacalhau_version if bac and bac.passed else None,
            )
        )
    return records
