"""``invoke quarantine --hosts X`` / ``--release``: isolate hosts, keep forensic access.

The ruleset (``templates/quarantine.nft.j2``) lives in its own nftables table
``inet fleetkit_quarantine``: it keeps loopback, SSH from
``settings.admin_networks`` (required: an empty list is refused rather than
guessed, since a guess that misses the administrators' NAT would cut them
off), and the node's own connections to its
orchestrator (NATS and API ports; plus the S3 endpoint when results are
published there), and drops everything else in and out.

Applying it can lock the administrator out (a wrong admin network, NAT). So
every quarantine follows a rollback protocol, per host:

1. over connection A: check ``nft``; save the current ruleset
   (``nft list ruleset``; the first quarantine also keeps it as the
   pre-quarantine state for ``--release``); build a restore file
   (``flush ruleset`` + the saved ruleset) and check it with ``nft -c``; upload
   the new ruleset and check it with ``nft -c``. Any failure here: nothing applied.
2. start a detached timer on the host (``setsid sh -c 'sleep N; nft -f restore'``)
   and record its pid;
3. apply the ruleset (connection A may die here if the rules are wrong: tolerated);
4. open a NEW SSH connection B (the proof that the administrator can still
   get in) and over it cancel the timer and confirm the table is there. If no
   new connection succeeds within the window, the timer restores the previous
   ruleset by itself and the host is reported as failed.

Then the host is labelled ``quarantined=true``: in the inventory through the
state file ``inventory/hosts.d/_quarantine.yaml`` (group ``quarantined``; the leading ``_``
keeps it apart from onboarded hosts' files, as no host name starts with one; no file a
person edits is rewritten), and at Bacalhau by re-rendering the compute config
through :func:`fleetkit.commands.provision.apply` for that host (its agent restarts with
the label), so ``--select quarantined!=true`` excludes it from queries.

``--release`` deletes fleetkit's own table ``inet fleetkit_quarantine`` and
nothing else, atomically (rules other tools or people added meanwhile, e.g. a
container engine's or a responder's block, survive: dropping them silently could
reopen a hole). It then compares, per host:

- the ruleset now with the one saved before the quarantine (fleetkit keeps its
  own copy on the admin machine, under ``inventory/hosts.d/_quarantine.d/``, so
  an intruder who rewrites the host's saved copy cannot hide a change);
- fleetkit's table just before deleting it with the table as confirmed after
  applying it (a rule slipped into the quarantine table, or the table deleted
  by someone else, is a change too).

Any difference is reported, named per host, as a bounded, terminal-safe diff
(``warning: node-3: ...``); the rules are kept as they are (exit 0: the release
itself succeeded). Then the label is removed from the state file and the
compute config re-rendered. Hosts that cannot be reached are named; exit 1.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetkit.clients.ssh import fan_out
from fleetkit.commands.quarantine.protocol import HostOutcome, HostPaths, Isolator
from fleetkit.commands.quarantine.release import LocalCopies, release_report, sections
from fleetkit.commands.quarantine.ruleset import (
    DEFAULT_ROLLBACK_SECONDS,
    GROUP,
    LABEL_KEY,
    LABEL_VALUE,
    STATE_FILE_NAME,
    TABLE,
    TEMPLATE,
    Isolation,
    Peer,
    local_copies,
    orchestrator_peers,
    parse_admin_networks,
    quarantined_in_inventory,
    render_ruleset,
    resolve_addresses,
    state_file,
    write_quarantine_state,
)
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host, parse_hosts_option
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.status import ConfigError, ExitStatus, HostError, UsageError
from fleetkit.runtime import Runtime

__all__ = [
    "DEFAULT_ROLLBACK_SECONDS",
    "GROUP",
    "LABEL_KEY",
    "LABEL_VALUE",
    "STATE_FILE_NAME",
    "TABLE",
    "TEMPLATE",
    "HostOutcome",
    "HostPaths",
    "Isolation",
    "Isolator",
    "LocalCopies",
    "Peer",
    "local_copies",
    "orchestrator_peers",
    "parse_admin_networks",
    "quarantined_in_inventory",
    "release_report",
    "render_ruleset",
    "resolve_addresses",
    "run",
    "sections",
    "state_file",
    "write_quarantine_state",
]


# --------------------------------------------------------------------------- command


def _targets(rt: Runtime, hosts: str) -> list[Host]:
    names = parse_hosts_option(hosts)
    if not names:
        raise UsageError("name the hosts to isolate or release (--hosts a,b)", key="--hosts")
    chosen = rt.inventory.select(names)
    for host in chosen:
        if host.is_control_plane:
            raise UsageError(
                f"{host.name} is the control plane: quarantining it would cut the whole fleet",
                key="--hosts",
            )
    return chosen


def _relabel(rt: Runtime, names: list[str]) -> dict[str, str]:
    """Re-render these hosts' compute config (Bacalhau labels); returns failures with reasons.

    The inventory is read again, now with the state file's label.
    """
    from fleetkit.hostfacts import provisioning  # pulls in much; only needed here

    hosts = [h for h in rt.reload_inventory().hosts if h.name in names]
    report = provisioning.apply(rt, hosts)
    return {name: report.results[name].reason() for name in report.failed_hosts}


def run(
    rt: Runtime,
    *,
    hosts: str,
    release: bool,
    rollback_seconds: float | None = None,
    relabel: Callable[[Runtime, list[str]], dict[str, str]] | None = None,
) -> ExitStatus:
    settings = rt.settings
    targets = _targets(rt, hosts)
    env = rt.env
    isolator = Isolator(
        connect=rt.connector.connect,
        rollback_seconds=max(
            rollback_seconds or settings.quarantine_rollback_seconds,
            2 * settings.ssh.connect_timeout,
        ),
        clock=env.clock,
        sleep=env.sleep,
        copies=LocalCopies(local_copies(settings.inventory_dir)),
    )
    if release:
        outcomes = fan_out(targets, isolator.release, parallelism=settings.ssh.parallelism)
    else:
        rulesets = _rulesets(rt, targets, env)
        outcomes = fan_out(
            targets,
            lambda host: isolator.quarantine(host, rulesets[host.name]),
            parallelism=settings.ssh.parallelism,
        )
    done = [o.host.name for o in outcomes if o.ok]
    failed = {o.host.name: _reason(o.error) for o in outcomes if not o.ok}
    for outcome in outcomes:
        if outcome.ok and outcome.value is not None:
            env.say(f"{outcome.host.name}: {outcome.value.message}")
            for warning in outcome.value.warnings:
                env.say(f"warning: {warning}")
        else:
            env.say(f"{outcome.host.name}: FAILED: {failed[outcome.host.name]}")
    if done:
        current = quarantined_in_inventory(settings.inventory_dir)
        wanted = (
            [n for n in current if n not in done]
            if release
            else list(dict.fromkeys([*current, *done]))
        )
        write_quarantine_state(settings.inventory_dir, wanted)
        verb = "removed from" if release else "added to"
        env.say(f"label {LABEL_KEY}={LABEL_VALUE} {verb} the inventory for: {', '.join(done)}")
        for name, reason in (relabel or _relabel)(rt, done).items():
            env.say(f"{name}: FAILED to update its Bacalhau labels: {reason}")
            failed.setdefault(name, reason)
    if failed:
        env.say(f"failed: {', '.join(sorted(failed))}")
        return ExitStatus.FAILURE
    return ExitStatus.SUCCESS


def _reason(error: BaseException | None) -> str:
    """The message without the host name (the report line already starts with it)."""
    if isinstance(error, HostError):
        return error.detail
    return str(error) or type(error).__name__


def _rulesets(rt: Runtime, targets: list[Host], env: Environment) -> dict[str, str]:
    """Render every host's ruleset before any host is touched."""
    settings = rt.settings
    networks = parse_admin_networks(settings.admin_networks, file=settings.path)
    if not networks:
        raise ConfigError(
            "admin_networks is empty: list the networks administrators SSH from, "
            "so quarantined hosts stay reachable for forensics",
            file=settings.path,
            key="admin_networks",
        )
    peers = orchestrator_peers(settings, rt.inventory.control_plane)
    renderer = Renderer.for_settings(settings)
    out: dict[str, str] = {}
    for host in targets:
        isolation = Isolation(
            ssh_port=host.port,
            admin_networks=networks,
            peers=peers,
        )
        out[host.name] = render_ruleset(isolation, host.name, renderer)
    env.say(f"quarantine ruleset rendered for {len(out)} host(s); applying with rollback")
    return out
