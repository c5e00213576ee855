"""The fleet's memory: recorded runs, what they printed, what changed, the report."""

from __future__ import annotations

from invoke.context import Context

from fleetkit.cli.base import command, finish, wants_help


@command(
    kind="only runs of this kind (query, policy, hunt, inventory, verify)",
    limit="at most N runs (default 50)",
    format="table (default), json, ndjson or csv",
)
def history(
    c: Context, kind: str = "", limit: int = 50, format: str = "table", settings: str = ""
) -> None:
    """The recorded runs, newest first, with their coverage."""
    import fleetkit.commands.history as core

    finish(c, lambda rt: core.list_runs(rt, kind=kind, limit=limit, output_format=format), settings)


@command(
    run="the run id (or a unique prefix; invoke history lists them)",
    format="json, ndjson, csv or table (default: the format the run's command defaults to)",
    output="write the result to this file (atomically) instead of stdout",
)
def show(c: Context, run: str, format: str = "", output: str = "", settings: str = "") -> None:
    """What a recorded run printed, byte for byte; late answers marked answeredLate."""
    if wants_help("show", run):
        return
    import fleetkit.commands.history as core

    finish(
        c,
        lambda rt: core.show(rt, run_id=run, output_format=format, output=output or None),
        settings,
    )


@command(
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

    finish(
        c,
        lambda rt: core.diff(rt, runs=run or [], output_format=format, output=output or None),
        settings,
    )


@command(
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

    finish(
        c,
        lambda rt: core.run(
            rt, output=output, since=since, bundle=bundle, runs=runs, check=check_bundle
        ),
        settings,
    )
