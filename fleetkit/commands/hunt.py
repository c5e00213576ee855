"""``invoke hunt``: find indicator files (path and/or SHA-256) across the fleet.

Indicators come from ``--path``/``--sha256`` or ``--ioc-file`` (CSV with a
``path,sha256`` header, or a YAML list of ``{path, sha256}``); both may be given.

- ``--path /exact/file --sha256 H``: that file with that content.
- ``--path '/var/www/*/functions.php'``: ``*`` is the only wildcard and stays
  inside one directory level; ``**`` crosses levels (osquery's ``%%``). ``?``
  and ``[...]`` are refused in a glob (osquery would read them as glob syntax
  and silently miss the literal name). A path without ``*`` is exact, whatever
  characters it holds.
- ``--sha256 H`` alone: osquery's ``hash`` table needs a path or directory
  constraint, so a hash-only hunt looks in a scope of directory globs:
  :data:`DEFAULT_HASH_SCOPE`, or ``$FLEETKIT_HUNT_SCOPE`` (comma-separated
  globs). Files outside the scope are not hashed; say so to the user.
- A path without a hash reports every file found there (presence hunt).

The SQL and the hits are built in :mod:`fleetkit.ask.hunts`; this module reads
the indicators, asks through the engine and prints.

Size: at most :data:`MAX_INDICATORS` indicators (an IOC file of at most
:data:`MAX_IOC_FILE_BYTES`); more is refused with the limit named.

History (:mod:`fleetkit.ask.record`): every hunt is recorded -- its SQL
batches, and per node its hits as rows -- so ``invoke show RUN`` prints it
again byte for byte (hits node by node), ``invoke diff`` tells new
infections from old ones, and ``invoke query --retry-missing RUN`` asks the
nodes that could not answer the same batches later, marking their hits
``answeredLate``. ``--no-history`` records nothing.

Exit status: 3 FINDINGS when anything was found (even if some nodes did not
answer); 1 FAILURE when some node could not answer and nothing was found
(the fleet is not proven clean), when fewer nodes answered than
``--min-coverage``, or when the run could not be recorded whole; 0 clean.
Cluster nodes that are not in the inventory are left out and named.
"""

from __future__ import annotations

from fleetkit.ask.coverage import Tally, check_min_coverage, coverage_of
from fleetkit.ask.engine import Asker, Engine
from fleetkit.ask.hunts import build_batches, exit_status_for_hunt, hunt_fleet, plan_targets
from fleetkit.ask.record import Recording
from fleetkit.ask.rows import dump_row
from fleetkit.ask.scope import parse_scope
from fleetkit.ask.views import NodeRows, hunt_rows, render_hunt
from fleetkit.foundation.iocfile import Indicator, gather_indicators, validate_path
from fleetkit.foundation.output import CLOSED_EARLY, check_format, deliver
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import Question as HistoryQuestion
from fleetkit.runtime import Runtime

#: ``Indicator``, ``build_batches`` and ``plan_targets`` stay importable from here (bench_sqlguard).
__all__ = [
    "DEFAULT_HASH_SCOPE",
    "SCOPE_ENV",
    "Indicator",
    "build_batches",
    "hash_scope",
    "plan_targets",
    "run",
]


SCOPE_ENV = "FLEETKIT_HUNT_SCOPE"
#: Where a hash-only hunt looks (osquery cannot hash "everything"): web roots,
#: temporary directories, local binaries, home directories one level deep.
#: Every file in scope is read and hashed on every node, so vendor trees such as
#: /opt or /usr are left out on purpose; widen it with $FLEETKIT_HUNT_SCOPE.
DEFAULT_HASH_SCOPE = (
    "/var/www/**",
    "/srv/**",
    "/tmp/**",
    "/var/tmp/**",
    "/dev/shm/**",
    "/usr/local/bin/*",
    "/usr/local/sbin/*",
    "/root/*",
    "/home/*/*",
)


def hash_scope(
    environ: dict[str, str] | None, configured: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """The directory globs a hash-only indicator is looked for in.

    ``$FLEETKIT_HUNT_SCOPE`` wins over the settings' ``hunt.scope``, which wins
    over :data:`DEFAULT_HASH_SCOPE`.
    """
    raw = (environ or {}).get(SCOPE_ENV, "")
    if not raw.strip():
        return configured or DEFAULT_HASH_SCOPE
    scope = tuple(part.strip() for part in raw.split(",") if part.strip())
    for glob in scope:
        validate_path(glob, where=SCOPE_ENV)
    return scope


def run(
    rt: Runtime,
    *,
    path: str | None,
    sha256: str | None,
    ioc_file: str | None,
    hosts: str,
    select: str,
    via: str,
    output_format: str,
    ask: Asker | None = None,
    no_history: bool = False,
    min_coverage: str | float | None = None,
) -> ExitStatus:
    output_format = check_format(output_format)
    minimum = check_min_coverage(min_coverage)
    indicators = gather_indicators(path, sha256, ioc_file, rt.env.cwd)
    hash_globs = hash_scope(dict(rt.env.environ), rt.settings.hunt_scope)
    batches = build_batches(plan_targets(indicators, hash_globs))
    engine = Engine(rt)
    questions = [engine.question(sql) for sql in batches]  # every batch checked before any runs
    scope = parse_scope(rt, select=select, hosts=hosts, via=via)  # bad input: exit 2, nothing sent
    if any(i.path is None for i in indicators):
        rt.env.say(
            terminal_safe(
                f"hash-only indicators are looked for in: {', '.join(hash_globs)} (${SCOPE_ENV})"
            )
        )
    rt.env.say(f"hunting {len(indicators)} indicator(s) in {len(batches)} fleet query(ies)")
    with Recording.open(rt, enabled=not no_history) as recording:
        recording.begin(
            kind="hunt",
            question=HistoryQuestion("\nUNION\n".join(batches)),
            scope=scope,
            asked={"batches": batches},
        )
        tally = Tally()
        result = hunt_fleet(questions, tally.wrap(ask or engine.ask), scope)
        hits = hunt_rows(result.hits)
        states = tally.record(recording, {n: [dump_row(r) for r in rs] for n, rs in hits.items()})
        nodes = [
            NodeRows(node_id, seen.hostname, hits.get(node_id, []), seen.unknown)
            for node_id, seen in sorted(tally.nodes.items())
        ]
        data = render_hunt(nodes, recording.redacted, output_format)
        if deliver(rt.env, lambda sink: sink.write(data), None):
            rt.env.say(f"hunt: {CLOSED_EARLY}")
        recording.finish(job_id=tally.job_id)
        for node_id, problem in result.problems.items():
            rt.env.say(terminal_safe(f"{node_id}: could not answer: {problem}"))
        for node_id, reason in result.excluded.items():
            rt.env.say(terminal_safe(f"{node_id}: excluded: {reason}"))
        if result.hits:
            infected = result.infected_hosts
            rt.env.say(terminal_safe(f"FOUND on {len(infected)} host(s): {', '.join(infected)}"))
        elif result.problems or not result.answered:
            rt.env.say("nothing found on the nodes that answered; the fleet is NOT proven clean")
        else:
            rt.env.say(f"clean: nothing found on {len(result.answered)} node(s)")
        return recording.conclude(coverage_of(states), minimum, exit_status_for_hunt(result))
