"""Asking the fleet: query, policy, hunt, and quarantine for what a hunt found."""

from __future__ import annotations

from typing import TypedDict

from invoke.context import Context

from fleetkit.cli.base import MIN_COVERAGE_HELP, NO_HISTORY_HELP, command, finish, wants_help


class _FindingsHelp(TypedDict):
    """Typed, so that ``**`` of it can only fill option help in :func:`command`."""

    hosts: str
    select: str
    via: str
    format: str
    no_history: str
    min_coverage: str


#: The options policy and hunt share: whom to ask, how, and how to print the findings.
_FINDINGS_HELP: _FindingsHelp = {
    "hosts": "inventory host names or groups",
    "select": "label selectors k=v,...",
    "via": "bacalhau (default) or ssh",
    "format": "table (default), json, ndjson or csv",
    "no_history": NO_HISTORY_HELP,
    "min_coverage": MIN_COVERAGE_HELP,
}


@command(
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
    no_history=NO_HISTORY_HELP,
    min_coverage=MIN_COVERAGE_HELP,
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
    if wants_help("query", sql):
        return
    import fleetkit.commands.query as core

    finish(
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


@command(
    iterable=["pack"],
    pack="policy pack YAML (repeatable; default: packs/ by fleetkit.yaml, else shipped)",
    grace="mark failures older than DAYS days as overdue",
    **_FINDINGS_HELP,
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

    finish(
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


@command(
    path="exact file path, or a directory glob with * (e.g. /var/www/*/functions.php)",
    sha256="SHA-256 of the indicator file (64 hex characters)",
    ioc_file="CSV or YAML file with many indicators (path, sha256)",
    **_FINDINGS_HELP,
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

    finish(
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


@command(
    hosts="host names or groups to isolate (or release)",
    release="restore the hosts' previous state",
)
def quarantine(c: Context, hosts: str = "", release: bool = False, settings: str = "") -> None:
    """Isolate infected hosts (forensic SSH kept), or release them."""
    import fleetkit.commands.quarantine as core

    finish(c, lambda rt: core.run(rt, hosts=hosts, release=release), settings)
