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

``--release`` deletes the table (only fleetkit's own table: rules other tools
added meanwhile, e.g. a container engine's, survive), checks that the ruleset
is again exactly the saved pre-quarantine one (a warning names the
difference otherwise), removes the label from the state file and re-renders the
compute config. Hosts that cannot be reached are named; exit 1.
"""

from __future__ import annotations

import difflib
import ipaddress
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from fleetkit.clients.ssh import Remote, fan_out
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import ONBOARDED_DIR, Host, parse_hosts_option
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import ConfigError, ExitStatus, FleetkitError, HostError, UsageError
from fleetkit.runtime import Runtime

TABLE = "fleetkit_quarantine"
TEMPLATE = "quarantine.nft.j2"
STATE_DIR = "/var/lib/fleetkit/quarantine"
GROUP = "quarantined"
LABEL_KEY = "quarantined"
LABEL_VALUE = "true"
STATE_FILE_NAME = "_quarantine.yaml"
#: How long the host waits for fleetkit to come back over a new connection.
DEFAULT_ROLLBACK_SECONDS = 30.0
#: Applying can cut connection A; this bounds the wait for its answer.
APPLY_TIMEOUT = 10.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    """An address the node may open TCP connections to (and get replies from)."""

    address: str
    ports: tuple[int, ...]

    @property
    def family(self) -> str:
        return "ip6" if ipaddress.ip_address(self.address).version == 6 else "ip"


@dataclass(frozen=True)
class Isolation:
    """Everything a quarantine ruleset lets through."""

    ssh_port: int
    admin_networks: tuple[IPNetwork, ...]
    peers: tuple[Peer, ...]

    def context(self, host_name: str) -> dict[str, Any]:
        return {
            "host_name": host_name,
            "table": TABLE,
            "ssh_port": self.ssh_port,
            "admin_networks": [
                {"family": "ip6" if n.version == 6 else "ip", "cidr": str(n)}
                for n in self.admin_networks
            ],
            "peers": [
                {"family": p.family, "address": p.address, "ports": p.ports} for p in self.peers
            ],
        }


# --------------------------------------------------------------------------- inputs


def parse_admin_networks(values: tuple[str, ...], *, file: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(
                f"invalid network {value!r} (expected an address or CIDR)",
                file=file,
                key="admin_networks",
            ) from None
    return tuple(out)


def resolve_addresses(name: str, *, what: str) -> tuple[str, ...]:
    """IP literals stay; names are resolved here (nft needs addresses, the node may lack DNS)."""
    try:
        return (str(ipaddress.ip_address(name)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot resolve {what} {name!r}: {exc}") from None
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def orchestrator_peers(settings: Settings, control_plane: Host | None) -> tuple[Peer, ...]:
    """The node's link to its orchestrator (NATS + API) and, for S3 results, the endpoint."""
    if control_plane is None:
        raise ConfigError("the inventory has no control_plane host", key="control_plane")
    ports = (settings.bacalhau.nats_port, settings.bacalhau.api_port)
    peers = [
        Peer(address, tuple(dict.fromkeys(ports)))
        for address in resolve_addresses(control_plane.address, what="control plane address")
    ]
    s3 = settings.query.s3
    if settings.query.publisher == "s3" and s3 is not None and s3.endpoint:
        url = urlparse(s3.endpoint)
        if url.hostname:
            port = url.port or (443 if url.scheme == "https" else 80)
            peers += [
                Peer(address, (port,))
                for address in resolve_addresses(url.hostname, what="S3 endpoint")
            ]
    return tuple(peers)


def render_ruleset(isolation: Isolation, host_name: str, renderer: Renderer | None = None) -> str:
    if not isolation.admin_networks:
        raise ConfigError("no admin network: the ruleset would cut SSH", key="admin_networks")
    return (renderer or Renderer()).render(TEMPLATE, isolation.context(host_name))


# --------------------------------------------------------------------------- inventory label


def state_file(inventory_dir: str) -> Path:
    return Path(inventory_dir) / ONBOARDED_DIR / STATE_FILE_NAME


def quarantined_in_inventory(inventory_dir: str) -> list[str]:
    path = state_file(inventory_dir)
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    hosts = (data.get(GROUP) or {}).get("hosts") or {}
    return list(hosts)


def write_quarantine_state(inventory_dir: str, names: list[str]) -> None:
    """Rewrite the state file atomically; no names = the file is removed."""
    path = state_file(inventory_dir)
    if not names:
        path.unlink(missing_ok=True)
        return
    body = {
        GROUP: {"hosts": {name: {"labels": {LABEL_KEY: LABEL_VALUE}} for name in sorted(names)}}
    }
    text = (
        "# Written by `fleetkit quarantine`: hosts isolated for forensics. Do not edit by hand;\n"
        "# `fleetkit quarantine --release --hosts NAME` removes a host (the file goes when\n"
        "# empty).\n" + yaml.safe_dump(body, sort_keys=True)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------- on the host
#
# Shell run on the host as root. Values reach the scripts only as the shell
# variables set by _script() (quoted), never spliced into the script text.

_NEED_NFT = (
    "command -v nft >/dev/null 2>&1 || { echo 'nft (nftables) is not installed' >&2; exit 3; }"
)

_PREPARE = f"""set -e
{_NEED_NFT}
mkdir -p "$D" && chmod 700 "$D"
rm -f "$D/rolled-back"
nft list ruleset > "$D/rollback.nft.tmp"
mv -f "$D/rollback.nft.tmp" "$D/rollback.nft"
# First quarantine (or the saved state was lost): remember what to --release to.
if ! nft list table inet "$T" >/dev/null 2>&1 || [ ! -f "$D/pre-quarantine.nft" ]; then
  cp "$D/rollback.nft" "$D/pre-quarantine.nft"
fi
{{ echo 'flush ruleset'; cat "$D/rollback.nft"; }} > "$D/restore.nft"
if ! nft -c -f "$D/restore.nft"; then
  echo 'the current ruleset cannot be reloaded from its own listing;' \
       'refusing to quarantine without a working rollback' >&2
  exit 4
fi
"""

_UPLOAD = """umask 077
cat > "$D/quarantine.nft.tmp"
mv -f "$D/quarantine.nft.tmp" "$D/quarantine.nft"
nft -c -f "$D/quarantine.nft"
"""

# The timer is its own session and process group (setsid), so closing this SSH
# session does not stop it and cancelling kills both the shell and its sleep.
_TIMER = """rm -f "$D/rollback.pid"
setsid sh -c 'echo $$ > "$1/rollback.pid"; sleep "$2"; nft -f "$1/restore.nft" \
  && date > "$1/rolled-back"; rm -f "$1/rollback.pid"' timer "$D" "$N" </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s "$D/rollback.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
cat "$D/rollback.pid"
"""

_CANCEL = """rolled_back() {
  if [ -f "$D/rolled-back" ]; then echo 'rollback already happened' >&2; exit 5; fi
}
rolled_back
kill -TERM -- "-$P" 2>/dev/null || kill -TERM "$P" 2>/dev/null || true
rm -f "$D/rollback.pid"
rolled_back
nft list table inet "$T" >/dev/null || { echo 'quarantine table missing' >&2; exit 6; }
"""

_RELEASE = f"""{_NEED_NFT}
if [ -s "$D/rollback.pid" ]; then kill -TERM -- "-$(cat "$D/rollback.pid")" 2>/dev/null || true; fi
if nft list table inet "$T" >/dev/null 2>&1; then nft delete table inet "$T"; fi
echo '--- now'
nft list ruleset
echo '--- before'
cat "$D/pre-quarantine.nft" 2>/dev/null || echo '(no saved pre-quarantine ruleset)'
rm -f "$D/pre-quarantine.nft" "$D/rolled-back"
"""


def _script(body: str, **values: str | int) -> str:
    """Prefix a script with its variables, each shell-quoted."""
    header = "".join(f"{name}={shlex.quote(str(value))}\n" for name, value in values.items())
    return header + body


@dataclass(frozen=True)
class HostPaths:
    directory: str = STATE_DIR

    def prepare(self) -> str:
        """Save the current ruleset and a checked restore file; the firewall is unchanged."""
        return _script(_PREPARE, D=self.directory, T=TABLE)

    def upload(self) -> str:
        """Store the ruleset from stdin and check it with ``nft -c``."""
        return _script(_UPLOAD, D=self.directory)

    def apply(self) -> str:
        return _script('nft -f "$D/quarantine.nft"\n', D=self.directory)

    def timer(self, seconds: float) -> str:
        """Start the detached rollback timer; prints its pid (= its process group)."""
        return _script(_TIMER, D=self.directory, N=max(1, round(seconds)))

    def kill_timer(self, pid: int) -> str:
        return _script('kill -TERM -- "-$P" 2>/dev/null || true\n', P=pid)

    def cancel(self, pid: int) -> str:
        """Over the NEW connection: stop the timer; fail if it fired or the table is gone."""
        return _script(_CANCEL, D=self.directory, T=TABLE, P=pid)

    def release(self) -> str:
        """Delete fleetkit's table; print the ruleset now and the saved pre-quarantine one."""
        return _script(_RELEASE, D=self.directory, T=TABLE)


@dataclass
class HostOutcome:
    host: str
    ok: bool
    message: str
    warnings: list[str] = field(default_factory=list)


Connect = Callable[[Host], Remote]


@dataclass
class Isolator:
    """Runs the rollback protocol on one host (connections injected for tests)."""

    connect: Connect
    rollback_seconds: float = DEFAULT_ROLLBACK_SECONDS
    paths: HostPaths = field(default_factory=HostPaths)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def quarantine(self, host: Host, ruleset: str) -> HostOutcome:
        first = self.connect(host)
        try:
            first.run(self.paths.prepare()).check("saving the current ruleset")
            first.run(self.paths.upload(), stdin=ruleset).check(
                "checking the quarantine ruleset (nft -c)"
            )
            started = self.clock()
            pid_text = (
                first.run(self.paths.timer(self.rollback_seconds))
                .check("starting the rollback timer")
                .out.strip()
            )
            if not pid_text.isdigit():
                raise HostError(host.name, f"rollback timer did not start (pid {pid_text!r})")
            pid = int(pid_text)
            applied = self._apply(first)
            if applied is not None:
                # nft refused: nothing applied; stop the timer over the same connection.
                first.run(self.paths.kill_timer(pid))
                raise HostError(host.name, f"applying the ruleset failed: {applied}")
        finally:
            first.close()
        return self._confirm(host, pid, started)

    def _apply(self, remote: Remote) -> str | None:
        """None when applied or when the answer was lost (the new connection decides)."""
        try:
            result = remote.run(self.paths.apply(), timeout=APPLY_TIMEOUT)
        except FleetkitError:
            return None
        if result.ok:
            return None
        return (result.err or result.out).strip() or f"exit {result.exit_code}"

    def _confirm(self, host: Host, pid: int, started: float) -> HostOutcome:
        deadline = started + self.rollback_seconds
        last_error = "no attempt"
        while self.clock() < deadline:
            try:
                second = self.connect(host)
            except FleetkitError as exc:
                last_error = str(exc)
                self.sleep(0.5)
                continue
            try:
                second.run(self.paths.cancel(pid)).check("confirming over a new SSH connection")
            finally:
                second.close()
            return HostOutcome(
                host.name,
                True,
                "quarantined: ruleset applied, confirmed over a new SSH connection, "
                "rollback timer cancelled",
            )
        raise HostError(
            host.name,
            f"no new SSH connection within {self.rollback_seconds:g}s after applying the "
            f"quarantine ({last_error}); the host restores its previous ruleset by itself",
        )

    def release(self, host: Host) -> HostOutcome:
        remote = self.connect(host)
        try:
            out = remote.run(self.paths.release()).check("removing the quarantine").out
        finally:
            remote.close()
        now, _, before = out.partition("--- before\n")
        now = now.removeprefix("--- now\n")
        warnings: list[str] = []
        if before.startswith("(no saved pre-quarantine ruleset)"):
            warnings.append(f"{host.name}: no saved pre-quarantine ruleset to compare with")
        elif now.strip() != before.strip():
            diff = "".join(
                difflib.unified_diff(
                    before.splitlines(True), now.splitlines(True), "before", "after release"
                )
            )
            warnings.append(
                f"{host.name}: the ruleset differs from before the quarantine "
                f"(changed meanwhile by something else; kept):\n{diff}"
            )
        return HostOutcome(host.name, True, "released: quarantine table removed", warnings)


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

    A fresh Runtime reads the inventory again, now with the state file's label.
    """
    from fleetkit.commands import provision  # provisioning pulls in much; only needed here

    fresh = Runtime(
        env=rt.env, settings_path=rt.settings_path, http_session_factory=rt.http_session_factory
    )
    hosts = [h for h in fresh.inventory.hosts if h.name in names]
    report = provision.apply(fresh, hosts)
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
    renderer = Renderer(settings.templates_dir)
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
