"""Setting the fleet up: provision, verify, onboard, nodes."""

from __future__ import annotations

from invoke.context import Context

from fleetkit.cli.base import command, finish, wants_help


@command(
    hosts="comma-separated host names or groups (default: whole inventory)",
    check="contact hosts, change nothing, print the plan with diffs",
)
def provision(c: Context, hosts: str = "", check: bool = False, settings: str = "") -> None:
    """Bring hosts to the desired state: control plane first, then compute nodes."""
    import fleetkit.commands.provision as core

    finish(c, lambda rt: core.run(rt, hosts=hosts, check=check), settings)


@command(
    hosts="host names or groups (default: whole inventory)",
    json="print the report as JSON on stdout",
    no_history="do not record this run in the history",
)
def verify(
    c: Context, hosts: str = "", json: bool = False, no_history: bool = False, settings: str = ""
) -> None:
    """Check that every node is really ready, naming the fix for each failure."""
    import fleetkit.commands.verify as core

    finish(c, lambda rt: core.run(rt, hosts=hosts, as_json=json, no_history=no_history), settings)


@command(
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
    if wants_help("onboard", host, address):
        return
    import fleetkit.commands.onboard as core

    finish(
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


@command(
    json="print the report as JSON on stdout",
    approve="approve pending nodes that are in the inventory (never unknown ones)",
)
def nodes(c: Context, json: bool = False, approve: bool = False, settings: str = "") -> None:
    """The cluster as the orchestrator sees it, joined with the inventory."""
    import fleetkit.commands.nodes as core

    finish(c, lambda rt: core.run(rt, as_json=json, approve=approve), settings)
