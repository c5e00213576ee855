"""The command line: Invoke tasks, kept thin.

Each task parses its options, hands them to one core function that returns
an :class:`ExitStatus`, and exits with it. :func:`run_command` is the one
place where errors become messages and exit codes (httpie's ``core``).
The same collection serves ``invoke <task>`` (through ``tasks.py``) and the
``fleetkit`` console script.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.program import Program
from invoke.tasks import task

from fleetkit import __version__
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.output import CLOSED_EARLY, silence_stdout
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ExitStatus, FleetkitError, exit_status_for
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.runtime import Runtime


def run_command(work: Callable[[Runtime], ExitStatus], runtime: Runtime) -> ExitStatus:
    """Run a core function; map every error to a message and an exit status."""
    env = runtime.env
    try:
        return ExitStatus(work(runtime))
    except KeyboardInterrupt:
        env.end_progress()
        env.say("fleetkit: interrupted")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # A write to stdout that no command wrapped in output.deliver (which
        # reports a closed pipe and carries on): same message, and the run
        # could not finish its output, so exit 1 (see foundation/output.py).
        silence_stdout(env)
        env.end_progress()
        env.say(f"fleetkit: {CLOSED_EARLY}")
        return ExitStatus.FAILURE
    except FleetkitError as exc:
        # Messages quote hosts, the orchestrator and files: escaped, one line each.
        env.end_progress()
        env.say(f"fleetkit: error: {terminal_safe(redact(str(exc)))}")
        return exc.exit_status
    except Exception as exc:  # a bug: say so plainly, trace only on request
        env.end_progress()
        message = terminal_safe(redact(f"{type(exc).__name__}: {exc}"))
        env.say(f"fleetkit: internal error: {message}")
        if env.environ.get("FLEETKIT_DEBUG"):
            env.say(terminal_safe(redact(traceback.format_exc()), keep_newlines=True))
        else:
            env.say("fleetkit: set FLEETKIT_DEBUG=1 for the traceback")
        return exit_status_for(exc)


#: Key of an Invoke config value holding a ready :class:`Runtime`; tests put one
#: there to run a task in-process with their own streams and environment.
RUNTIME_CONFIG_KEY = "fleetkit_runtime"


def _finish(c: Context, work: Callable[[Runtime], ExitStatus], settings: str) -> None:
    injected = c.config.get(RUNTIME_CONFIG_KEY)
    if isinstance(injected, Runtime):
        runtime = injected
        runtime.settings_path = settings or runtime.settings_path
    else:
        runtime = Runtime(env=Environment(), settings_path=settings or None)
    status = run_command(work, runtime)
    if status != ExitStatus.SUCCESS:
        raise Exit(code=int(status))


_HELP_FLAGS = ("-h", "--help")


def _wants_help(name: str, *positional: str) -> bool:
    """True (after printing the task's help) when ``--help`` landed in a positional.

    Invoke hands the token after ``query`` to its positional SQL argument even
    when it is ``--help``; a person asking for help must get help, not a query
    named "--help".
    """
    if not any(value in _HELP_FLAGS for value in positional):
        return False
    task_obj = namespace[name]
    lines = [f"Usage: fleetkit {name} [--options]", "", f"  {(task_obj.__doc__ or '').strip()}", ""]
    for argument in task_obj.get_arguments():
        flag = "--" + argument.name.replace("_", "-")
        lines.append(f"  {flag:<26} {_OPTION_HELP[name].get(argument.name, '')}")
    print("\n".join(lines))
    return True


_SETTINGS_HELP = "settings file (default: $FLEETKIT_SETTINGS or ./fleetkit.yaml)"
_NO_HISTORY_HELP = "do not record this run in the history (settings history.path)"
_MIN_COVERAGE_HELP = "exit 1 when fewer than PCT percent of the asked nodes answered"


def _command(
    *,
    iterable: list[str] | None = None,
    positional: list[str] | None = None,
    **option_help: str,
) -> Callable[[Callable[..., None]], Any]:
    """``@task`` as every fleetkit command wants it: stable flags (no automatic
    short flags), help for each option, and the common ``--settings``."""
    return task(
        auto_shortflags=False,
        iterable=iterable or [],
        positional=positional,
        help={**option_help, "settings": _SETTINGS_HELP},
    )


@_command(
    hosts="comma-separated host names or groups (default: whole inventory)",
    check="contact hosts, change nothing, print the plan with diffs",
)
def provision(c: Context, hosts: str = "", check: bool = False, settings: str = "") -> None:
    """Bring hosts to the desired state: control plane first, then compute nodes."""
    import fleetkit.commands.provision as core

    _finish(c, lambda rt: core.run(rt, hosts=hosts, check=check), settings)


@_command(
    sql="the osquery SQL to run on every matching node",
    select="label selectors k=v,k!=v (repeated keys: any of the values)",
    hosts="inventory host names or groups",
    via="bacalhau (default) or ssh",
    format="json (default), ndjson, csv or table",
    output="write the result to this file (atomically) instead of stdout",
    timeout="seconds to wait for the nodes (default: settings query.timeout)",
    include_unknown_nodes="also merge answers of cluster nodes that are not in the inventory "
    "(their rows are marked unknownNode=true); default: excluded and named",
    diff="print what changed since the previous run of the same question and scope "
    "(rows added/removed per node) instead of the rows",
    no_history=_NO_HISTORY_HELP,
    min_coverage=_MIN_COVERAGE_HELP,
    retry_missing="the argument is a RUN id: ask that run's question again of the nodes that "
    "failed, timed out or were missing in it, recording their answers into it (late)",
)
def query(
    c: Context,
    sql: str,
    select: str = "",
    hosts: str = "",
    via: str = "bacalhau",
    format: str = "json",
    output: str = "",
    timeout: float = 0.0,
    include_unknown_nodes: bool = False,
    diff: bool = False,
    no_history: bool = False,
    min_coverage: str = "",
    retry_missing: bool = False,
    settings: str = "",
) -> None:
    """Run one osquery SQL question on the fleet and print one merged result."""
    if _wants_help("query", sql):
        return
    import fleetkit.commands.query as core

    _finish(
        c,
        lambda rt: core.run(
            rt,
            sql=sql,
            select=select,
            hosts=hosts,
            via=via,
            output_format=format,
            output=output or None,
            timeout=timeout or None,
            include_unknown_nodes=include_unknown_nodes,
            diff=diff,
            no_history=no_history,
            min_coverage=min_coverage,
            retry_missing=retry_missing,
        ),
        settings,
    )


@_command(
    hosts="host names or groups (default: whole inventory)",
    json="print the report as JSON on stdout",
    no_history="do not record this run in the history",
)
def verify(
    c: Context, hosts: str = "", json: bool = False, no_history: bool = False, settings: str = ""
) -> None:
    """Check that every node is really ready, naming the fix for each failure."""
    import fleetkit.commands.verify as core

    _finish(c, lambda rt: core.run(rt, hosts=hosts, as_json=json, no_history=no_history), settings)


@_command(
    host="inventory name of the new host",
    address="its address",
    port="SSH port (default 22)",
    user="login user (default root)",
    labels="node labels k=v,...",
    host_key_fingerprint="expected SHA256:... fingerprint (skips the prompt)",
    bacalhau_api_port="the node's agent API port, when nodes share one network namespace",
    replace_key="replace the key(s) pinned for this host (after a reinstall); still confirmed",
)
def onboard(
    c: Context,
    host: str,
    address: str,
    port: int = 22,
    user: str = "root",
    labels: str = "",
    host_key_fingerprint: str = "",
    bacalhau_api_port: int = 0,
    replace_key: bool = False,
    settings: str = "",
) -> None:
    """Add a device: pin its host key, add it to the inventory, provision, verify."""
    if _wants_help("onboard", host, address):
        return
    import fleetkit.commands.onboard as core

    _finish(
        c,
        lambda rt: core.run(
            rt,
            name=host,
            address=address,
            port=port,
            user=user,
            labels=labels,
            fingerprint=host_key_fingerprint or None,
            api_port=bacalhau_api_port or None,
            replace_key=replace_key,
        ),
        settings,
    )


@_command(
    json="print the report as JSON on stdout",
    approve="approve pending nodes that are in the inventory (never unknown ones)",
)
def nodes(c: Context, json: bool = False, approve: bool = False, settings: str = "") -> None:
    """The cluster as the orchestrator sees it, joined with the inventory."""
    import fleetkit.commands.nodes as core

    _finish(c, lambda rt: core.run(rt, as_json=json, approve=approve), settings)


@_command(
    iterable=["pack"],
    pack="policy pack YAML (repeatable; default: packs/ by fleetkit.yaml, else shipped)",
    hosts="inventory host names or groups",
    select="label selectors k=v,...",
    via="bacalhau (default) or ssh",
    format="table (default), json, ndjson or csv",
    grace="mark failures older than DAYS days as overdue",
    no_history=_NO_HISTORY_HELP,
    min_coverage=_MIN_COVERAGE_HELP,
)
def policy(
    c: Context,
    pack: list[str] | None = None,
    hosts: str = "",
    select: str = "",
    via: str = "bacalhau",
    format: str = "table",
    grace: str = "",
    no_history: bool = False,
    min_coverage: str = "",
    settings: str = "",
) -> None:
    """Run compliance packs: PASS / FAIL / UNKNOWN / ERROR per host per policy."""
    import fleetkit.commands.policy as core

    _finish(
        c,
        lambda rt: core.run(
            rt,
            packs=pack or [],
            hosts=hosts,
            select=select,
            via=via,
            output_format=format,
            grace=grace,
            no_history=no_history,
            min_coverage=min_coverage,
        ),
        settings,
    )


@_command(
    path="exact file path, or a directory glob with * (e.g. /var/www/*/functions.php)",
    sha256="SHA-256 of the indicator file (64 hex characters)",
    ioc_file="CSV or YAML file with many indicators (path, sha256)",
    hosts="inventory host names or groups",
    select="label selectors k=v,...",
    via="bacalhau (default) or ssh",
    format="table (default), json, ndjson or csv",
    no_history=_NO_HISTORY_HELP,
    min_coverage=_MIN_COVERAGE_HELP,
)
def hunt(
    c: Context,
    path: str = "",
    sha256: str = "",
    ioc_file: str = "",
    hosts: str = "",
    select: str = "",
    via: str = "bacalhau",
    format: str = "table",
    no_history: bool = False,
    min_coverage: str = "",
    settings: str = "",
) -> None:
    """Hunt indicators (path + SHA-256) across the fleet: which hosts are infected."""
    import fleetkit.commands.hunt as core

    _finish(
        c,
        lambda rt: core.run(
            rt,
            path=path or None,
            sha256=sha256 or None,
            ioc_file=ioc_file or None,
            hosts=hosts,
            select=select,
            via=via,
            output_format=format,
            no_history=no_history,
            min_coverage=min_coverage,
        ),
        settings,
    )


@_command(
    kind="only runs of this kind (query, policy, hunt, verify, watch)",
    limit="at most N runs (default 50)",
    format="table (default), json, ndjson or csv",
)
def history(
    c: Context, kind: str = "", limit: int = 50, format: str = "table", settings: str = ""
) -> None:
    """The recorded runs, newest first, with their coverage."""
    import fleetkit.commands.history as core

    _finish(
        c, lambda rt: core.list_runs(rt, kind=kind, limit=limit, output_format=format), settings
    )


@_command(
    run="the run id (or a unique prefix; invoke history lists them)",
    format="json, ndjson, csv or table (default: the format the run's command defaults to)",
    output="write the result to this file (atomically) instead of stdout",
)
def show(c: Context, run: str, format: str = "", output: str = "", settings: str = "") -> None:
    """What a recorded run printed, byte for byte; late answers marked answeredLate."""
    if _wants_help("show", run):
        return
    import fleetkit.commands.history as core

    _finish(
        c,
        lambda rt: core.show(rt, run_id=run, output_format=format, output=output or None),
        settings,
    )


@_command(
    iterable=["run"],
    run="a run id (repeat for two); none: the newest run against the one before it of the "
    "same question and scope; one: that run against the newest later one",
    format="json (default), ndjson, csv or table",
    output="write the result to this file (atomically) instead of stdout",
)
def diff(
    c: Context,
    run: list[str] | None = None,
    format: str = "json",
    output: str = "",
    settings: str = "",
) -> None:
    """What changed between two runs of the same question: rows added/removed per node."""
    import fleetkit.commands.history as core

    _finish(
        c,
        lambda rt: core.diff(rt, runs=run or [], output_format=format, output=output or None),
        settings,
    )


@_command(
    hosts="host names or groups to isolate (or release)",
    release="restore the hosts' previous state",
)
def quarantine(c: Context, hosts: str = "", release: bool = False, settings: str = "") -> None:
    """Isolate infected hosts (forensic SSH kept), or release them."""
    import fleetkit.commands.quarantine as core

    _finish(c, lambda rt: core.run(rt, hosts=hosts, release=release), settings)


@_command(
    iterable=["pack"],
    pack="pack name, file or directory (repeatable; default: watch.packs, else every pack)",
    once="run each pack once and exit (1 if a run failed); for cron and tests",
    interval="seconds between runs of every pack, instead of each pack's interval (>= 1)",
)
def watch(
    c: Context,
    pack: list[str] | None = None,
    once: bool = False,
    interval: float = 0.0,
    settings: str = "",
) -> None:
    """Run packs on their intervals as one job per node; record; notify on change."""
    import fleetkit.commands.watch as core

    _finish(
        c,
        lambda rt: core.run(rt, packs=pack or [], once=once, interval=interval or None),
        settings,
    )


@_command(
    output="the HTML file to write (default: report.html)",
    since="the period to show: 7d (default), 12h, 2w, 1d12h or all",
    bundle="write an evidence bundle (.tar.gz: report, runs' outputs, manifest) instead",
    runs="run ids (or unique prefixes) for --bundle (default: the runs the report shows)",
    check_bundle="verify every file of a bundle against its manifest (exit 1 names changes)",
)
def report(
    c: Context,
    output: str = "",
    since: str = "7d",
    bundle: str = "",
    runs: str = "",
    check_bundle: str = "",
    settings: str = "",
) -> None:
    """The fleet at a glance from the history: one static HTML file, or an evidence bundle."""
    import fleetkit.commands.report as core

    _finish(
        c,
        lambda rt: core.run(
            rt, output=output, since=since, bundle=bundle, runs=runs, check=check_bundle
        ),
        settings,
    )


_PACK_OPTION = "pack file or directory (repeatable; default: packs/ by fleetkit.yaml, else shipped)"


@_command(iterable=["pack"], pack=_PACK_OPTION)
def packs_list(c: Context, pack: list[str] | None = None, settings: str = "") -> None:
    """List every pack: name, kind, interval, platform, number of queries, file."""
    import fleetkit.commands.packs as core

    _finish(c, lambda rt: core.run_list(rt, packs=pack or []), settings)


@_command(iterable=["pack"], pack=_PACK_OPTION)
def packs_check(c: Context, pack: list[str] | None = None, settings: str = "") -> None:
    """Validate every pack and its SQL (denied tables) without running anything."""
    import fleetkit.commands.packs as core

    _finish(c, lambda rt: core.run_check(rt, packs=pack or []), settings)


@_command(
    file="the osquery pack to convert (JSON; // and # comment lines allowed)",
    kind="hunt (any row is a finding) or inventory (rows recorded; default)",
    output="write the pack to this file (atomically) instead of stdout",
)
def packs_import(
    c: Context, file: str, kind: str = "inventory", output: str = "", settings: str = ""
) -> None:
    """Convert an osquery pack into a fleetkit pack, reporting every oddity."""
    if _wants_help("packs.import", file):
        return
    import fleetkit.commands.packs as core

    _finish(c, lambda rt: core.run_import(rt, file, kind, output), settings)


namespace = Collection(
    provision,
    query,
    verify,
    onboard,
    nodes,
    policy,
    hunt,
    quarantine,
    history,
    show,
    diff,
    watch,
    report,
)
#: ``invoke packs.list`` / ``packs.check`` / ``packs.import FILE``; the console script
#: also takes the spaced form (``fleetkit packs import FILE``, see :func:`main`).
_packs = Collection("packs")
_packs.add_task(packs_list, "list")
_packs.add_task(packs_check, "check")
_packs.add_task(packs_import, "import")
namespace.add_collection(_packs)
#: Option help kept aside: Invoke consumes ``Task.help`` while it builds its parser.
_OPTION_HELP = {name: dict(namespace[name].help) for name in namespace.task_names}


def main() -> None:
    """The ``fleetkit`` console script (works outside the repository checkout).

    SIGPIPE keeps Python's default (ignored, so a closed stdout is an EPIPE
    error that fleetkit reports and survives): ``fleetkit query ... | head``
    behaves like ``invoke query ... | head``, summary and exit status included.
    """
    program = Program(namespace=namespace, name="fleetkit", binary="fleetkit", version=__version__)
    program.run(spaced_subcommands(sys.argv))


def spaced_subcommands(argv: list[str]) -> list[str]:
    """``fleetkit packs import FILE`` as Invoke spells it (``packs.import``).

    Invoke names a collection's tasks with a dot; people type a space, as the
    issue and most CLIs do. Only the console script can offer both; ``invoke``
    users type the dot.
    """
    if len(argv) >= 3 and argv[1] in namespace.collections:
        name = f"{argv[1]}.{argv[2]}"
        if name in namespace.task_names:
            return [argv[0], name, *argv[3:]]
    return argv
