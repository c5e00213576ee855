"""The provisioning report: per host ok / changed / failed, like Ansible's PLAY RECAP.

``ok`` counts the steps that succeeded (changed ones included, as Ansible
counts them), ``changed`` those that changed something (or would, in check
mode), ``failed`` is 1 when the host did not reach its desired state: it was
unreachable, a step failed, or it was not touched because the control plane
failed. ``round_trips`` is the number of SSH commands the host's run sent
(what latency multiplies; the benchmarks print it).

Error messages, versions and diffs come from hosts: everything printed for a
terminal passes through :func:`fleetkit.foundation.secrets.redact` and
:func:`fleetkit.foundation.terminal.terminal_safe` (a diff keeps fleetkit's
own line breaks, each line escaped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetkit.foundation.inventory import Host
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.table import render_table
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.hostfacts.changes import StepRecord


def shown(text: str) -> str:
    """Text for a terminal: secrets redacted, control characters escaped, lines kept."""
    return terminal_safe(redact(text), keep_newlines=True)


@dataclass
class HostRecap:
    host: Host
    records: list[StepRecord] = field(default_factory=list)
    #: Why the host did not reach its desired state (None = it did).
    error: str | None = None
    #: The step that failed, when one did.
    failed_step: str | None = None
    #: A note on hosts with nothing to do (no role).
    note: str | None = None
    #: SSH commands this host's run sent (probe, batches, waits).
    round_trips: int = 0

    @property
    def ok(self) -> int:
        return len(self.records)

    @property
    def changed(self) -> int:
        return sum(1 for r in self.records if r.result.changed)

    @property
    def failed(self) -> int:
        return 1 if self.error is not None else 0

    @property
    def warnings(self) -> list[str]:
        return [r.result.warning for r in self.records if r.result.warning]

    def counts(self) -> str:
        return f"ok={self.ok} changed={self.changed} failed={self.failed}"

    def reason(self) -> str:
        if self.error is None:
            return ""
        where = f"{self.failed_step}: " if self.failed_step else ""
        return redact(where + self.error)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host.name,
            "role": self.host.role,
            "ok": self.ok,
            "changed": self.changed,
            "failed": self.failed,
            "failed_step": self.failed_step,
            "error": redact(self.error) if self.error else None,
            "round_trips": self.round_trips,
            "steps": [
                {"step": r.step, "changed": r.result.changed, "message": redact(r.result.message)}
                for r in self.records
            ],
        }


@dataclass
class ProvisionReport:
    check: bool = False
    hosts: list[HostRecap] = field(default_factory=list)

    @property
    def results(self) -> dict[str, HostRecap]:
        return {r.host.name: r for r in self.hosts}

    @property
    def failed_hosts(self) -> list[str]:
        return [r.host.name for r in self.hosts if r.failed]

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.hosts)

    @property
    def round_trips(self) -> dict[str, int]:
        """Host -> SSH commands its run sent (the counter the benchmarks print)."""
        return {r.host.name: r.round_trips for r in self.hosts}

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.FAILURE if self.failed_hosts else ExitStatus.SUCCESS

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "changed": self.changed,
            "failed": self.failed_hosts,
            "hosts": [r.to_json() for r in self.hosts],
        }


def host_line(report: HostRecap, *, check: bool = False) -> str:
    """The progress line printed as a host finishes."""
    changed = "would change" if check else "changed"
    status = "FAILED" if report.failed else changed if report.changed else "ok"
    line = f"{report.host.name}: {status} ({report.counts()})"
    if report.failed:
        line += f": {report.reason()}"
    return terminal_safe(redact(line))


def format_recap(report: ProvisionReport) -> str:
    """The end-of-run summary (human output, for stderr)."""
    title = (
        "PROVISION RECAP (check mode: nothing was changed)" if report.check else "PROVISION RECAP"
    )
    if not report.hosts:
        return f"{title}\nno hosts selected"
    table = render_table(
        ("HOST", "ROLE", "OK", "CHANGED", "FAILED"),
        [(r.host.name, r.host.role, r.ok, r.changed, r.failed) for r in report.hosts],
    )
    lines = [title, table.rstrip("\n")]
    for r in report.hosts:
        if r.failed:
            lines.append(f"failed: {r.host.name}: {r.reason()}")
        for warning in r.warnings:
            lines.append(f"warning: {r.host.name}: {warning}")
        if r.note:
            lines.append(f"note: {r.host.name}: {r.note}")
    lines.append(summary(report))
    return "\n".join(terminal_safe(redact(line), keep_newlines=True) for line in lines)


def summary(report: ProvisionReport) -> str:
    total = len(report.hosts)
    failed = len(report.failed_hosts)
    hosts = f"{total} host{'s' if total != 1 else ''}"
    outcome = f"{failed} failed ({', '.join(report.failed_hosts)})" if failed else "all ok"
    if report.check:
        changes = (
            f"{report.changed} change(s) would be made" if report.changed else "no changes needed"
        )
    else:
        changes = f"{report.changed} change(s) made" if report.changed else "no changes"
    return f"summary: {hosts}, {outcome}; {changes}"


def format_plan(report: ProvisionReport) -> str:
    """Check mode's plan: every step per host, what it would do, and file diffs."""
    out: list[str] = []
    for r in report.hosts:
        out.append(f"== {r.host.name} ({r.host.role}) {r.counts()}")
        for record in r.records:
            mark = "~" if record.result.changed else "="
            out.append(f"  {mark} {record.step}: {shown(record.result.message)}")
            if record.result.diff:
                diff = shown(record.result.diff.rstrip("\n"))
                out.extend("    " + line for line in diff.split("\n"))
        if r.failed:
            out.append(f"  ! {shown(r.reason())}")
        if r.note:
            out.append(f"  - {r.note}")
    return "\n".join(out) + "\n"
