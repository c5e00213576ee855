"""``invoke policy``: compliance packs, one verdict per host per policy.

A pack is YAML (``packs/*.yaml``, user-writable; the model and loader are
:mod:`fleetkit.ask.packs`): each policy has a ``query`` whose ``meaning`` says
how to read it (``pass_if_rows``: the host complies when rows come back;
``fail_if_rows``: rows are violations), a ``details`` query listing the
offending rows, an optional ``unknown_if_rows`` query, a ``resolution`` and a
``severity``. ``--pack FILE`` names policy packs only (a hunt or inventory pack
there is refused, exit 2, naming it); without ``--pack`` the packs found are
run and those of other kinds (the watch's) are skipped, named on stderr.
Verdicts (PASS / FAIL / UNKNOWN / ERROR) are decided in
:mod:`fleetkit.ask.verdicts`; this module loads the packs, asks through the
engine, records and prints (:mod:`fleetkit.ask.views`).

History (:mod:`fleetkit.ask.record`): every run is recorded -- each host's
verdicts as its rows, and the verdicts themselves -- so each verdict is
printed with its state over runs (:mod:`fleetkit.history.policy`): the
``transition`` (``newly_failing``, ``still_failing``, ``fixed``,
``still_passing``, ``undecided``), ``first_failed_at`` (start of the run that
began the current failing streak), ``last_passed_at``, and with ``--grace
DAYS`` whether the failure is ``overdue`` (older than DAYS at the run's
start). ``invoke show RUN`` prints the run again, byte for byte.
``--no-history`` records nothing (the state fields are then null).

Exit status (documented precedence, highest first): 3 FINDINGS when any policy
FAILED on any host (even when other hosts errored: the violation is proven);
1 FAILURE when some host ERRORed and nothing failed (compliance is unproven),
when fewer hosts answered than ``--min-coverage``, or when the run could not
be recorded whole; 0 otherwise. UNKNOWN alone exits 0 with a warning naming
each undecided host: exit 3 means a proven violation, and a fleet of
compliant Ed25519 keys would otherwise never exit 0; scripts that must treat
UNKNOWN as non-compliant read the ``status`` field of ``--format json``.
Cluster nodes that are not in the inventory get no verdict: they are named on
stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetkit.ask.answer import FleetAnswer
from fleetkit.ask.coverage import Tally, check_min_coverage, coverage_of, optional_number
from fleetkit.ask.engine import Asker, Engine
from fleetkit.ask.packs import Pack, Policy, default_pack_files, load_packs
from fleetkit.ask.record import Recording
from fleetkit.ask.rows import dump_row
from fleetkit.ask.scope import Question, Scope, SqlRules, parse_scope
from fleetkit.ask.verdicts import HostVerdict, Verdict, evaluate_policy, exit_status_for_verdicts
from fleetkit.ask.views import NodeRows, policy_records, render_policy, verdict_rows
from fleetkit.foundation.output import CLOSED_EARLY, check_format, deliver
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import PolicyVerdict
from fleetkit.history import Question as HistoryQuestion
from fleetkit.runtime import Runtime

# --------------------------------------------------------------------------- output


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


def check_grace(value: str | float | None) -> float | None:
    """``--grace DAYS``: a positive number of days (bad input: exit 2, nothing asked)."""
    days = optional_number(
        value, key="--grace", low=0, high=36500, expected="a number of days from 0 to 36500"
    )
    if days == 0:
        raise UsageError("must be a positive number of days, got 0", key="--grace")
    return days


def policy_packs(rt: Runtime, named: Sequence[str], rules: SqlRules) -> list[Pack]:
    """The policy packs to run, every one validated before anything is asked.

    A pack named with ``--pack`` must be a policy pack: a hunt or inventory
    pack there is a mistake (its rows are findings or records, never
    verdicts), refused with exit 2 naming it. Packs found by discovery
    (``packs/`` beside fleetkit.yaml, else the shipped ones) share a directory
    with the watch's other kinds: those are skipped, and named on stderr.
    """
    if named:
        loaded = load_packs([Path(rt.env.cwd, p) for p in named], rules)
        for pack in loaded:
            if pack.kind != "policy":
                raise UsageError(
                    f"{pack.source}: pack {pack.name!r} is a {pack.kind} pack; invoke policy "
                    f"runs policy packs only (run it with: invoke watch --pack {pack.name} --once)",
                    key="--pack",
                )
        return loaded
    found = load_packs(default_pack_files(rt.settings.base_dir), rules)
    skipped = [f"{pack.name} ({pack.kind})" for pack in found if pack.kind != "policy"]
    if skipped:
        rt.env.say(
            terminal_safe(f"policy: skipped packs that are not policy packs: {', '.join(skipped)}")
        )
    loaded = [pack for pack in found if pack.kind == "policy"]
    if not loaded:
        raise ConfigError("no policy packs found (only hunt or inventory packs); pass --pack FILE")
    return loaded


def run(
    rt: Runtime,
    *,
    packs: list[str],
    hosts: str,
    select: str,
    via: str,
    output_format: str,
    ask: Asker | None = None,
    grace: str | float | None = None,
    no_history: bool = False,
    min_coverage: str | float | None = None,
) -> ExitStatus:
    output_format = check_format(output_format)
    minimum = check_min_coverage(min_coverage)
    grace_days = check_grace(grace)
    settings = rt.settings
    scope = parse_scope(rt, select=select, hosts=hosts, via=via)  # bad input: exit 2 first
    loaded = policy_packs(rt, packs, SqlRules.of(settings))
    policies = [policy for pack in loaded for policy in pack.policies]
    with Recording.open(rt, enabled=not no_history) as recording:
        recording.begin(
            kind="policy",
            question=HistoryQuestion(
                "\n".join(f"-- {p.key}\n{p.query}" for p in policies),
                pack=",".join(pack.name for pack in loaded),
            ),
            scope=scope,
            asked={
                "packs": [{"file": p.source, "fingerprint": p.fingerprint} for p in loaded],
                "policies": [policy.key for policy in policies],
                "grace": grace_days,
            },
        )
        tally = Tally()
        verdicts = evaluate(rt, policies, Strangers(tally.wrap(ask or Engine(rt).ask), {}), scope)
        rows = verdict_rows(verdicts)
        states = tally.record(recording, {n: [dump_row(r) for r in rs] for n, rs in rows.items()})
        recording.add_verdicts(
            PolicyVerdict(v.node_id, v.hostname, v.policy.key, v.verdict.value) for v in verdicts
        )
        nodes = [
            NodeRows(node_id, seen.hostname, rows.get(node_id, []), seen.unknown)
            for node_id, seen in sorted(tally.nodes.items())
        ]
        history_states = recording.policy_states(grace_days)
        data = render_policy(
            policy_records(nodes, [p.key for p in policies], history_states), output_format
        )
        if deliver(rt.env, lambda sink: sink.write(data), None):
            rt.env.say(f"policy: {CLOSED_EARLY}")
        recording.finish(job_id=tally.job_id)
        summarize(verdicts, rt.env.say)
        status = exit_status_for_verdicts(verdicts)
        rt.env.say(terminal_safe(closing_line(verdicts, status)))
        return recording.conclude(coverage_of(states), minimum, status)


def evaluate(
    rt: Runtime, policies: Sequence[Policy], strangers: Strangers, scope: Scope
) -> list[HostVerdict]:
    """Every policy on the scope, in order; excluded strangers are named once at the end."""
    inventory = {h.name: h for h in rt.inventory.compute}
    rules = SqlRules.of(rt.settings)
    verdicts: list[HostVerdict] = []
    for index, policy in enumerate(policies, 1):
        rt.env.progress(f"policy {index}/{len(policies)}: {policy.key}")
        verdicts.extend(evaluate_policy(policy, strangers, scope, inventory, rules=rules))
    rt.env.end_progress()
    for node_id, reason in strangers.seen.items():
        rt.env.say(terminal_safe(f"{node_id}: excluded, no verdict: {reason}"))
    return verdicts
