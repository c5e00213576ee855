"""``invoke query "SQL"``: ask every matching node one osquery question, print one merged result.

Thin over the engine (:mod:`fleetkit.ask`): the options become a
:class:`~fleetkit.ask.scope.Question` and a :class:`~fleetkit.ask.scope.Scope`
(bad input: exit 2 before anything is contacted), the engine returns a
validated :class:`~fleetkit.ask.answer.FleetAnswer`, the merge writes it to
stdout or ``--output``, and the closing summary on stderr names every node
that did not answer OK, every stranger left out, and the run's coverage.

Every run is recorded in the history (:mod:`fleetkit.ask.record`), opened
before anything is submitted; ``--no-history`` records nothing. ``--diff``
prints, instead of the rows, what changed since the previous run of the same
question and scope (osquery's differential shape). ``--retry-missing`` takes
a RUN id instead of SQL: the nodes that failed, timed out or were missing in
that run are asked its question again and their answers recorded into it,
marked late (:mod:`fleetkit.ask.replay`).

Node identity (one rule, :mod:`fleetkit.hostfacts.identity`): ``nodeID`` is
the inventory name on both transports, whatever the node's ID at the
orchestrator (fleetkit's ``fleetkit-host`` label maps one to the other), so
``--hosts NAME`` and the MISSING list speak inventory names. The ``hostname``
tag is the machine's own hostname (its ``fleetkit-hostname`` label over
Bacalhau, ``uname -n`` over SSH), which may differ from the inventory name --
unless the query returns its own ``hostname`` column (e.g. from
``system_info``): that is the host's own view and is kept.
"""

from __future__ import annotations

from fleetkit.ask.answer import FleetAnswer
from fleetkit.ask.changes import summarize_diff, write_diff
from fleetkit.ask.coverage import answer_states, check_min_coverage, coverage_of
from fleetkit.ask.engine import Engine
from fleetkit.ask.hunts import HuntResult, exit_status_for_hunt, hunt_fleet
from fleetkit.ask.merge import write_answer
from fleetkit.ask.record import Recording
from fleetkit.ask.replay import Retry, late_nodes, plan_retry
from fleetkit.ask.scope import SqlRules, parse_scope
from fleetkit.ask.via_bacalhau import ClientFactory
from fleetkit.ask.views import NodeRows, hunt_rows, render_hunt
from fleetkit.foundation.output import CLOSED_EARLY, check_format, check_output_path, deliver
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ExitStatus, UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import NodeState
from fleetkit.history import Question as HistoryQuestion
from fleetkit.runtime import Runtime


def run(
    rt: Runtime,
    *,
    sql: str,
    select: str,
    hosts: str,
    via: str,
    output_format: str,
    output: str | None,
    timeout: float | None,
    include_unknown_nodes: bool = False,
    client_factory: ClientFactory | None = None,
    diff: bool = False,
    no_history: bool = False,
    min_coverage: str | float | None = None,
    retry_missing: bool = False,
) -> ExitStatus:
    """The ``query`` command: ask, merge to stdout or ``--output``, summarise on stderr."""
    fmt = check_format(output_format)
    check_output_path(output)
    minimum = check_min_coverage(min_coverage)
    if no_history and (diff or retry_missing):
        flag = "--diff" if diff else "--retry-missing"
        raise UsageError(f"{flag} reads the history; it cannot be used with it off", key=flag)
    if retry_missing:
        if diff or select or hosts or timeout or include_unknown_nodes:
            raise UsageError(
                "asks the run's own question of its unanswered nodes over the run's transport; "
                "give only the RUN id (and --format, --output, --min-coverage)",
                key="--retry-missing",
            )
        return retry(rt, sql, fmt=fmt, output=output, minimum=minimum, factory=client_factory)
    engine = Engine(rt, client_factory)
    question = engine.question(sql)
    scope = parse_scope(
        rt,
        select=select,
        hosts=hosts,
        via=via,
        timeout=timeout,
        include_unknown_nodes=include_unknown_nodes,
    )
    with Recording.open(rt, enabled=not no_history) as recording:
        recording.begin(
            kind="query", question=HistoryQuestion(sql), scope=scope, asked={"sql": sql}
        )
        with engine.ask(question, scope) as answer:
            if diff:
                recording.add_answer(answer)
            else:
                stats = write_answer(
                    answer, fmt, env=rt.env, output=output, after_node=recording.add_answer_node
                )
                if stats.closed_early:
                    rt.env.say(f"query: {CLOSED_EARLY}")
                recording.add_answer(answer)
            recording.finish(job_id=answer.job_id)
        if diff:
            print_diff(rt, recording, fmt, output)
        report_summary(rt, answer, output=None if diff else output)
        return recording.conclude(coverage_of(answer_states(answer)), minimum, exit_status(answer))


def print_diff(rt: Runtime, recording: Recording, fmt: str, output: str | None) -> None:
    """What changed since the previous run of the same question and scope, on stdout."""
    history, run_id = recording.history, recording.run_id
    assert history is not None and run_id is not None
    previous = history.previous_run(run_id)
    if previous is None:
        deliver(rt.env, lambda sink: sink.write(b"[]\n" if fmt == "json" else b""), output)
        rt.env.say(
            "diff: no earlier run of this question and scope: this run is the baseline "
            "(invoke show RUN prints its rows)"
        )
        return
    changes = history.diff(previous.run_id, run_id)
    events = [0]

    def write(sink: object) -> None:
        events[0] = write_diff(changes, fmt, sink)  # type: ignore[arg-type]

    if deliver(rt.env, write, output):
        rt.env.say(f"query: {CLOSED_EARLY}")
    summarize_diff(changes, events[0], rt.env.say)


def retry(
    rt: Runtime,
    run_id: str,
    *,
    fmt: str,
    output: str | None,
    minimum: float | None,
    factory: ClientFactory | None,
) -> ExitStatus:
    """``--retry-missing RUN``: the run's question, asked of its unanswered nodes only."""
    if not run_id.strip():
        raise UsageError("give the RUN id whose unanswered nodes to ask again", key="RUN")
    engine = Engine(rt, factory)
    with Recording.open(rt) as recording:
        assert recording.history is not None
        plan = plan_retry(recording.history, run_id, rt.inventory, SqlRules.of(rt.settings))
        if plan is None:
            rt.env.say(f"run {run_id}: every node answered; nothing to retry")
            return ExitStatus.SUCCESS
        for node_id in plan.skipped:
            rt.env.say(terminal_safe(f"  {node_id}: not an inventory compute host; not asked"))
        if not plan.scope.hosts:
            rt.env.say("retry: no unanswered node can be asked (exit 1)")
            return ExitStatus.FAILURE
        names = ", ".join(h.name for h in plan.scope.hosts)
        rt.env.say(terminal_safe(f"retry: asking {names} again for run {plan.run.run_id}"))
        recording.resume(plan.run.run_id)
        status = (
            _retry_hunt(rt, recording, plan, fmt, output, engine)
            if plan.run.kind == "hunt"
            else _retry_query(rt, recording, plan, fmt, output, engine)
        )
        recording.finish()
        completed = recording.history.get_run(plan.run.run_id)
        rt.env.say(f"run {completed.run_id} now:")
        return recording.conclude(completed.coverage, minimum, status)


def _retry_query(
    rt: Runtime, recording: Recording, plan: Retry, fmt: str, output: str | None, engine: Engine
) -> ExitStatus:
    with engine.ask(plan.questions[0], plan.scope) as answer:
        late = late_nodes(answer)
        stats = write_answer(late, fmt, env=rt.env, output=output)
        if stats.closed_early:
            rt.env.say(f"query: {CLOSED_EARLY}")
        for node in answer.answered:  # only answers replace what the run recorded
            recording.add_answer_node(node)
    report_summary(rt, answer, output=output)
    return exit_status(answer)


def _retry_hunt(
    rt: Runtime, recording: Recording, plan: Retry, fmt: str, output: str | None, engine: Engine
) -> ExitStatus:
    found: HuntResult = hunt_fleet(plan.questions, engine.ask, plan.scope)
    hits = hunt_rows(found.hits)
    nodes = [
        NodeRows(node_id, node_id, hits.get(node_id, []), late=True)
        for node_id in sorted(found.answered)
    ]
    for node in nodes:
        recording.add_node(
            node_id=node.node_id,
            hostname=node.hostname,
            state=NodeState.ROWS if node.rows else NodeState.EMPTY,
            rows=node.encoded(),
        )
    data = render_hunt(nodes, recording.redacted, fmt)
    if deliver(rt.env, lambda sink: sink.write(data), output):
        rt.env.say(f"hunt: {CLOSED_EARLY}")
    for node_id, problem in found.problems.items():
        rt.env.say(terminal_safe(f"{node_id}: could not answer: {problem}"))
    return exit_status_for_hunt(found)


def exit_status(answer: FleetAnswer) -> ExitStatus:
    """0 only when every expected node answered; 1 otherwise (the rest is still delivered)."""
    return ExitStatus.SUCCESS if answer.complete else ExitStatus.FAILURE


def report_summary(rt: Runtime, answer: FleetAnswer, *, output: str | None) -> None:
    """The closing lines on stderr: counts, every node that did not answer OK, the strangers."""
    env = rt.env
    env.end_progress()
    counted = answer.counted
    ok = sum(1 for node in counted if node.ok)
    where = f" to {output}" if output else ""
    job = f" (job {answer.job_id})" if answer.job_id else ""
    env.say(
        terminal_safe(f"query: {answer.row_count} rows from {ok}/{len(counted)} nodes{where}{job}")
    )
    if not counted:
        env.say("query: no compute node matches the selection; nothing was asked")
    for node in [*answer.problems, *answer.excluded]:
        env.say(terminal_safe(redact(f"  {node.describe()}")))
    for node in answer.counted:
        if node.unknown and node.ok:
            env.say(
                terminal_safe(
                    f"  {node.node_id}: not in the inventory; its rows are included as asked "
                    "and marked unknownNode=true"
                )
            )
