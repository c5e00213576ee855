"""``invoke query "SQL"``: ask every matching node one osquery question, print one merged result.

Thin over the engine (:mod:`fleetkit.ask`): the options become a
:class:`~fleetkit.ask.scope.Question` and a :class:`~fleetkit.ask.scope.Scope`
(bad input: exit 2 before anything is contacted), the engine returns a
validated :class:`~fleetkit.ask.answer.FleetAnswer`, the merge writes it to
stdout or ``--output``, and the closing summary on stderr names every node
that did not answer OK and every stranger left out.

Node identity: the node ID is the Bacalhau node ID, which is the inventory
name when nodes run with ``NameProvider: hostname`` (as fleetkit provisions
them); on the SSH path it is the inventory name. The ``hostname`` tag is that
same name -- unless the query returns its own ``hostname`` column (e.g. from
``system_info``), whose value is the host's own view and is kept.
"""

from __future__ import annotations

from fleetkit.ask.answer import FleetAnswer
from fleetkit.ask.engine import Engine
from fleetkit.ask.merge import write_answer
from fleetkit.ask.scope import parse_scope
from fleetkit.ask.via_bacalhau import ClientFactory
from fleetkit.foundation.output import CLOSED_EARLY, check_format, check_output_path
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.terminal import terminal_safe
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
) -> ExitStatus:
    """The ``query`` command: ask, merge to stdout or ``--output``, summarise on stderr."""
    fmt = check_format(output_format)
    check_output_path(output)
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
    with engine.ask(question, scope) as answer:
        stats = write_answer(answer, fmt, env=rt.env, output=output)
    if stats.closed_early:
        rt.env.say(f"query: {CLOSED_EARLY}")
    report_summary(rt, answer, output=output)
    return exit_status(answer)


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
