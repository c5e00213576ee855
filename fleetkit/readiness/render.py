"""The human report: one line per check, the fix under each failure, a summary.

Through the one table renderer, so evidence quoting a host (an error line,
a config value, a node ID) is shown with its control characters escaped.
"""

from __future__ import annotations

from fleetkit.foundation.table import render_table as table_text
from fleetkit.readiness.model import CheckVerdict, VerifyReport

_MARK = {
    CheckVerdict.PASS: "ok",
    CheckVerdict.FAIL: "FAIL",
    CheckVerdict.SKIP: "skip",
    CheckVerdict.WARN: "WARN",
}


def render_table(report: VerifyReport) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for host in report.hosts:
        for index, check in enumerate(host.checks):
            shown = host.name if index == 0 else ""
            rows.append((shown, check.name, _MARK[check.verdict], check.evidence))
            if check.fix:
                rows.append(("", "", "", f"fix: {check.fix}"))
    text = table_text(("HOST", "CHECK", "RESULT", "EVIDENCE"), rows, max_width=None)
    return text + summary_line(report) + "\n"


def summary_line(report: VerifyReport) -> str:
    bad = [h for h in report.hosts if not h.ready]
    warned = [h for h in report.hosts if h.warnings]
    notes = "; ".join(f"{h.name} ({', '.join(c.name for c in h.warnings)})" for h in warned)
    warnings = f" (warnings: {notes})" if warned else ""
    if not bad:
        return f"verify: all {len(report.hosts)} hosts ready{warnings}"
    named = "; ".join(f"{h.name} ({', '.join(c.name for c in h.failures)})" for h in bad)
    return f"verify: {len(bad)} of {len(report.hosts)} hosts NOT ready: {named}{warnings}"
