"""``invoke policy``: compliance packs, one verdict per host per policy.

A pack is YAML (``packs/*.yaml``, user-writable): each policy has a ``query``
whose ``meaning`` says how to read it (``pass_if_rows``: the host complies when
rows come back; ``fail_if_rows``: rows are violations), a ``details`` query
listing the offending rows, an optional ``unknown_if_rows`` query, a
``resolution`` and a ``severity``. Verdicts (PASS / FAIL / UNKNOWN / ERROR)
are decided in :mod:`fleetkit.ask.verdicts`; this module loads the packs,
asks through the engine and prints.

Exit status (documented precedence, highest first): 3 FINDINGS when any policy
FAILED on any host (even when other hosts errored: the violation is proven);
1 FAILURE when some host ERRORed and nothing failed (compliance is unproven);
0 otherwise. UNKNOWN alone exits 0 with a warning naming each undecided host:
exit 3 means a proven violation, and a fleet of compliant Ed25519 keys would
otherwise never exit 0; scripts that must treat UNKNOWN as non-compliant read
the ``status`` field of ``--format json``. Cluster nodes that are not in the
inventory get no verdict: they are named on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetkit.ask.answer import FleetAnswer
from fleetkit.ask.engine import Asker, Engine
from fleetkit.ask.packs import default_pack_files, load_packs
from fleetkit.ask.scope import Question, Scope, parse_scope
from fleetkit.ask.verdicts import (
    HostVerdict,
    Verdict,
    evaluate_policy,
    exit_status_for_verdicts,
)
from fleetkit.foundation.output import CLOSED_EARLY, check_format, deliver, render_records
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.table import make_table
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.runtime import Runtime

# --------------------------------------------------------------------------- output

#: Columns of the csv and ndjson records (one per host per policy).
RECORD_COLUMNS = (
    "pack",
    "policy",
    "severity",
    "nodeID",
    "hostname",
    "status",
    "details",
    "error",
    "resolution",
)


def render_verdicts(verdicts: Sequence[HostVerdict], output_format: str) -> bytes:
    """Machine formats for scripts; ``table`` is for people (one line per host per policy)."""
    if output_format == "table":
        return render_table(verdicts).encode("utf-8", "backslashreplace")
    records = [v.record() for v in verdicts]
    if output_format == "csv":  # one cell per field: nested details as JSON text
        for record in records:
            record["details"] = json.dumps(record["details"], ensure_ascii=False)
            record["error"] = record["error"] or ""
    return render_records(records, RECORD_COLUMNS, output_format)


def render_table(verdicts: Sequence[HostVerdict]) -> str:
    """The one renderer's table; FAIL/UNKNOWN rows are followed by their detail rows, indented."""
    header = ("POLICY", "SEVERITY", "HOST", "STATUS", "DETAILS")
    rows = []
    for verdict in verdicts:
        host = verdict.host
        if verdict.node_id and verdict.hostname and verdict.node_id != verdict.hostname:
            host = f"{verdict.hostname} ({verdict.node_id})"
        summary = verdict.error or (f"{len(verdict.details)} row(s)" if verdict.details else "")
        rows.append(
            (verdict.policy.key, verdict.policy.severity, host, verdict.verdict.value, summary)
        )
    lines = make_table(header, rows, max_width=None).lines()
    text = [lines[0]]
    for verdict, line in zip(verdicts, lines[1:], strict=True):
        text.append(line)
        text.extend(
            "    " + ", ".join(f"{terminal_safe(k)}={terminal_safe(v)}" for k, v in row.items())
            for row in verdict.details
        )
    return "\n".join(text) + "\n"


def summarize(verdicts: Sequence[HostVerdict], say: Callable[[str], None]) -> None:
    """Human closing lines on stderr: counts per policy, then every non-PASS host named."""
    by_policy: dict[str, list[HostVerdict]] = {}
    for verdict in verdicts:
        by_policy.setdefault(verdict.policy.key, []).append(verdict)
    for key, items in by_policy.items():
        counts = {v: sum(1 for i in items if i.verdict is v) for v in Verdict}
        text = ", ".join(f"{n} {v.value}" for v, n in counts.items() if n)
        say(f"{key}: {text}")
    for verdict in verdicts:
        if verdict.verdict is Verdict.UNKNOWN:
            say(
                terminal_safe(
                    f"warning: {verdict.policy.key}: {verdict.host} UNKNOWN: "
                    "osquery cannot decide; see the details rows"
                )
            )
        elif verdict.verdict is Verdict.ERROR:
            say(terminal_safe(f"{verdict.policy.key}: {verdict.host} ERROR: {verdict.error}"))


def closing_line(verdicts: Sequence[HostVerdict], status: ExitStatus) -> str:
    """The last stderr line: what the exit status means for this run."""

    def hosts(verdict: Verdict) -> list[str]:
        return list(dict.fromkeys(v.host for v in verdicts if v.verdict is verdict))

    if not verdicts:
        return "policy: no node answered: nothing was checked (exit 1)"
    if status is ExitStatus.FINDINGS:
        failed = hosts(Verdict.FAIL)
        return f"policy: violations on {len(failed)} host(s): {', '.join(failed)} (exit 3)"
    if status is ExitStatus.FAILURE:
        errored = hosts(Verdict.ERROR)
        return (
            f"policy: no violation found, but {', '.join(errored)} did not answer: "
            "compliance is unproven (exit 1)"
        )
    unknown = hosts(Verdict.UNKNOWN)
    if unknown:
        return f"policy: no violation found; undecided on {', '.join(unknown)} (exit 0)"
    return "policy: every host passed every policy (exit 0)"


# --------------------------------------------------------------------------- command


@dataclass
class Strangers:
    """Wraps an asker to remember the excluded strangers of every answer (named once)."""

    ask: Asker
    seen: dict[str, str]

    def __call__(self, question: Question, scope: Scope) -> FleetAnswer:
        answer = self.ask(question, scope)
        for node in answer.excluded:
            self.seen.setdefault(node.node_id, node.error or "")
        return answer


def run(
    rt: Runtime,
    *,
    packs: list[str],
    hosts: str,
    select: str,
    via: str,
    output_format: str,
    ask: Asker | None = None,
) -> ExitStatus:
    output_format = check_format(output_format)
    settings = rt.settings
    scope = parse_scope(rt, select=select, hosts=hosts, via=via)  # bad input: exit 2 first
    files = [Path(rt.env.cwd, p) for p in packs] if packs else default_pack_files(settings.base_dir)
    loaded = load_packs(files, settings.osquery.disabled_tables)
    strangers = Strangers(ask or Engine(rt).ask, {})
    inventory = {h.name: h for h in rt.inventory.compute}
    verdicts: list[HostVerdict] = []
    policies = [policy for pack in loaded for policy in pack.policies]
    for index, policy in enumerate(policies, 1):
        rt.env.progress(f"policy {index}/{len(policies)}: {policy.key}")
        verdicts.extend(
            evaluate_policy(
                policy, strangers, scope, inventory, denied_tables=settings.osquery.disabled_tables
            )
        )
    rt.env.end_progress()
    data = render_verdicts(verdicts, output_format)
    if deliver(rt.env, lambda sink: sink.write(data), None):
        rt.env.say(f"policy: {CLOSED_EARLY}")
    summarize(verdicts, rt.env.say)
    for node_id, reason in strangers.seen.items():
        rt.env.say(terminal_safe(f"{node_id}: excluded, no verdict: {reason}"))
    status = exit_status_for_verdicts(verdicts)
    rt.env.say(terminal_safe(closing_line(verdicts, status)))
    return status
