"""Onboarding: the one moment trust in a new host is created, made explicit.

``invoke onboard --host NAME --address ADDR`` fetches the host's SSH key and
shows its SHA256 fingerprint; it continues only when the user types ``yes``
or ``--host-key-fingerprint`` matches. Everything that can be refused is
checked *before* anything is written, so a refusal (bad input, a name that
already means another machine, a key that differs from the pinned one, a
fingerprint mismatch) leaves the known_hosts file and the inventory exactly as
they were. Then, in this order: pin the key, write
``inventory/hosts.d/<name>.yaml`` (a new file; files people edit are never
rewritten), provision the host as a compute node, wait for it to join, verify
it, and say where it stands.

The key checked, shown and pinned is the one of the address the host is
really reached at: ssh_config may rewrite the inventory address (HostName,
Port, ProxyJump), and onboarding says so when it does. A key another line
revokes (``@revoked``) is never pinned. A host for which another key is
already pinned (a different key of the same type, or only keys of other
types) is refused unless ``--replace-key`` asks to replace them; the new key
must still be confirmed, and only the lines pinning that one host are
rewritten.

Re-running after a failure resumes: a key already pinned and an inventory
entry with the same address are simply kept. Exit 2 for every refusal
(nothing was touched), 1 when the host cannot be reached or provisioning or
verification failed (re-run to resume), 0 when the host is ready.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paramiko
import yaml

from fleetkit.clients.bacalhau import OrchestratorError
from fleetkit.clients.ssh import (
    HostKeyError,
    KeyProblem,
    OfferedKey,
    describe,
    fingerprint,
    known_hosts_name,
)
from fleetkit.foundation.atomic import atomic_write
from fleetkit.foundation.inventory import COMPUTE, ONBOARDED_DIR, Host, load_inventory
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from fleetkit.foundation.table import cell
from fleetkit.hostfacts.identity import RESERVED_LABELS, map_fleet
from fleetkit.hostfacts.provisioning import apply
from fleetkit.hostfacts.recap import format_recap
from fleetkit.readiness.engine import verify
from fleetkit.readiness.render import render_table
from fleetkit.runtime import Runtime

#: Seconds to wait for a freshly provisioned node to appear CONNECTED.
JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class OnboardRequest:
    name: str
    address: str
    port: int
    user: str
    labels: dict[str, str]
    #: ``SHA256:...`` the user expects; None = ask interactively.
    fingerprint: str | None
    #: Agent API port, only for several nodes in one network namespace (the lab).
    api_port: int | None = None
    #: Replace keys already pinned for the host (after a reinstall), once confirmed.
    replace_key: bool = False

    def as_host(self) -> Host:
        """The host as connections will see it (ssh_config applies to it too)."""
        return Host(self.name, self.address, self.port, self.user, dict(self.labels), (COMPUTE,))

    def host_entry(self) -> dict[str, object]:
        entry: dict[str, object] = {"address": self.address, "port": self.port, "user": self.user}
        if self.labels:
            entry["labels"] = dict(self.labels)
        if self.api_port is not None:
            entry["bacalhau_api_port"] = self.api_port
        return entry

    def file_text(self, now: datetime) -> str:
        body = yaml.safe_dump(
            {COMPUTE: {"hosts": {self.name: self.host_entry()}}},
            default_flow_style=False,
            sort_keys=False,
        )
        return (
            f"# Onboarded by fleetkit on {now:%Y-%m-%dT%H:%M:%SZ} (invoke onboard).\n"
            "# One file per onboarded host: edit it freely, fleetkit never rewrites it.\n"
            f"{body}"
        )


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict (syntax only; values are validated by the inventory loader)."""
    labels: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"expected key=value, got {part!r}", key="--labels")
        if key.strip() in labels:
            raise UsageError(f"label {key.strip()!r} given twice", key="--labels")
        if key.strip() in RESERVED_LABELS:
            raise UsageError(
                f"label {key.strip()!r} is set by fleetkit (node identity)", key="--labels"
            )
        labels[key.strip()] = value.strip()
    return labels


def normalize_fingerprint(text: str) -> str:
    """``SHA256:abc`` / ``abc`` / ``abc=`` -> ``SHA256:abc`` (OpenSSH's form)."""
    value = text.strip()
    if value.upper().startswith("SHA256:"):
        value = value[len("SHA256:") :]
    return "SHA256:" + value.rstrip("=")


# --------------------------------------------------------------------------- refusals


def onboarded_file(rt: Runtime, name: str) -> Path:
    return Path(rt.settings.inventory_dir) / ONBOARDED_DIR / f"{name}.yaml"


def existing_entry(rt: Runtime, request: OnboardRequest) -> Host | None:
    """The inventory's host of that name when it is this same machine; refuse otherwise."""
    host = rt.inventory.get(request.name)
    target = onboarded_file(rt, request.name)
    if host is None:
        if target.exists():
            raise UsageError(
                f"{target} exists but does not define host {request.name!r}; refusing to "
                "overwrite a file someone edited",
                key="--host",
            )
        return None
    if (host.address, host.port) != (request.address, request.port):
        raise UsageError(
            f"host {request.name!r} is already in the inventory at {host.endpoint} "
            f"({host.source}); refusing to onboard it at "
            f"{known_hosts_name(request.address, request.port)}. Choose another name, or edit "
            f"{host.source} if the machine really moved.",
            key="--host",
        )
    if not host.is_compute:
        raise UsageError(
            f"host {request.name!r} is the {host.role} in {host.source}; onboard adds compute "
            "nodes only",
            key="--host",
        )
    differing = {k: v for k, v in request.labels.items() if host.labels.get(k) != v}
    if differing:
        raise UsageError(
            f"host {request.name!r} is already onboarded ({host.source}) with labels "
            f"{host.labels}; edit that file to change them",
            key="--labels",
        )
    return host


def validate_new_entry(rt: Runtime, request: OnboardRequest) -> None:
    """Run the inventory loader itself on the inventory plus the new file, in a scratch copy.

    That is the exact validation every other command applies (names, labels,
    address, duplicate endpoints), with no second copy of its rules. Errors are
    reported against the real file the entry would go to.
    """
    real_dir = Path(rt.settings.inventory_dir)
    target = onboarded_file(rt, request.name)
    with tempfile.TemporaryDirectory(prefix="fleetkit-onboard-") as scratch:
        copy = Path(scratch) / "inventory"
        shutil.copytree(real_dir, copy, ignore=shutil.ignore_patterns("known_hosts*", ".*"))
        new = copy / ONBOARDED_DIR / target.name
        new.parent.mkdir(parents=True, exist_ok=True)
        new.write_text(request.file_text(datetime.now(UTC)), encoding="utf-8")
        try:
            load_inventory(copy)
        except ConfigError as exc:
            file = (exc.file or "").replace(str(copy), str(real_dir))
            raise UsageError(exc.detail, file=file or str(target), key=exc.key) from None


def confirm_key(rt: Runtime, request: OnboardRequest, offered: OfferedKey | paramiko.PKey) -> str:
    """Check the offered key against known_hosts, the flag or the user; its fingerprint.

    Refusals are UsageError (exit 2, nothing written). A bare key stands for
    one fetched at the request's own address (no ssh_config rewrite).
    """
    if not isinstance(offered, OfferedKey):
        offered = OfferedKey(offered, request.address, request.port, rewritten=False)
    key, where, path = offered.key, offered.name, rt.known_hosts.path
    shown = fingerprint(key)
    rt.env.say(f"onboard: {request.name} ({where}) offers host key {key.get_name()} {shown}")
    check = rt.known_hosts.check(where, key)
    pinned = ", ".join(describe(k) for k in check.pinned.values())
    if check.problem is KeyProblem.REVOKED and check.revoked_by is not None:
        raise UsageError(
            f"{where} offers {shown}, which line {check.revoked_by.number} of {path} marks "
            "@revoked: a stolen key may be impersonating the host. fleetkit never pins a "
            "revoked key (--replace-key or not). Nothing was written.",
            key="--host-key-fingerprint",
        )
    if check.problem is KeyProblem.CHANGED and not request.replace_key:
        raise UsageError(
            f"{where} offers {shown} but {pinned} is pinned for it in {path}. The host was "
            "reinstalled or someone is intercepting the connection. Check the key on the "
            "host's console; only if it is genuine, re-run with --replace-key. "
            "Nothing was written.",
            key="--host-key-fingerprint",
        )
    if check.problem is KeyProblem.OTHER_TYPE and not request.replace_key:
        raise UsageError(
            f"{where} offers a key of another type ({key.get_name()} {shown}) than the one "
            f"pinned for it in {path} ({pinned}). A host does not change its key type by "
            "itself: it was reinstalled or is being impersonated. Check the key on the host's "
            "console; only if it is genuine, re-run with --replace-key. Nothing was written.",
            key="--replace-key",
        )
    if request.fingerprint is not None:
        expected = normalize_fingerprint(request.fingerprint)
        if expected != shown:
            raise UsageError(
                f"host key mismatch for {request.name} ({where}): it offers {shown}, "
                f"you expected {cell(expected)}. Someone may be intercepting the connection, "
                "or the fingerprint was copied from another host. Nothing was written.",
                key="--host-key-fingerprint",
            )
        return shown
    if check.problem is None:
        rt.env.say(f"onboard: this key is already pinned in {path}")
        return shown
    answer = rt.env.ask(
        f"Compare it with the host's own key (on its console: ssh-keygen -lf "
        f"/etc/ssh/ssh_host_{key.get_name().removeprefix('ssh-')}_key.pub).\n"
        f"Trust {shown} for {request.name}? Type 'yes' to pin it: "
    )
    if answer.strip().lower() != "yes":
        raise UsageError(
            f"host key of {request.name} not confirmed; nothing was written. Confirm it "
            "interactively, or pass --host-key-fingerprint with the value you checked on the "
            "host itself",
            key="--host-key-fingerprint",
        )
    return shown


def pin_key(rt: Runtime, request: OnboardRequest, offered: OfferedKey) -> None:
    """Pin the confirmed key, replacing the host's other keys when asked to."""
    known = rt.known_hosts
    check = known.check(offered.name, offered.key)
    try:
        if request.replace_key and check.problem in (KeyProblem.CHANGED, KeyProblem.OTHER_TYPE):
            removed = known.replace(offered.address, offered.port, offered.key)
            old = ", ".join(describe(line.key) for line in removed)
            rt.env.say(f"onboard: replaced {old} with {describe(offered.key)} in {known.path}")
        elif known.pin(offered.address, offered.port, offered.key):
            rt.env.say(f"onboard: pinned {fingerprint(offered.key)} in {known.path}")
    except HostKeyError as exc:  # refused before anything was written
        raise UsageError(f"{exc.detail}. Nothing was written.", key="--replace-key") from None


# --------------------------------------------------------------------------- writes


def write_host_file(rt: Runtime, request: OnboardRequest) -> Path:
    target = onboarded_file(rt, request.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # World-readable like the rest of the inventory; the mode is set before the rename.
    atomic_write(target, request.file_text(datetime.now(UTC)).encode(), mode=0o644)
    return target


def wait_for_node(rt: Runtime, host: Host) -> str:
    """Wait (bounded) until the orchestrator lists the node CONNECTED; a line for the user."""
    client = rt.orchestrator
    deadline = rt.env.clock() + JOIN_TIMEOUT
    state = "not listed yet"
    while True:
        try:
            member = map_fleet(rt.inventory.hosts, client.nodes()).member(host.name)
        except OrchestratorError as exc:
            return f"orchestrator not answering: {exc}"
        if member is not None:
            node = member.node
            state = f"{cell(node.connection or '?')}, {cell(node.membership or '?')}"
            if member.joined_as_other:
                state += f" (node ID {cell(node.node_id)})"
            if node.is_connected:
                return state
        if rt.env.clock() >= deadline:
            return state
        rt.env.sleep(0.5)


# --------------------------------------------------------------------------- command


def onboard(rt: Runtime, request: OnboardRequest) -> ExitStatus:
    rt.load()
    existing = existing_entry(rt, request)
    if existing is None:
        validate_new_entry(rt, request)
    offered = rt.connector.offered_key(request.as_host())
    if offered.rewritten:
        rt.env.say(
            f"onboard: ssh_config sends {request.name} ({request.address}, port {request.port}) "
            f"to {offered.name}: the key checked and pinned is the one {offered.name} offers"
        )
    confirm_key(rt, request, offered)
    # Past this line the user trusts the key: write, then act.
    pin_key(rt, request, offered)
    if existing is None:
        path = write_host_file(rt, request)
        rt.env.say(f"onboard: added {request.name} to the inventory: {path}")
        rt.reload_inventory()
    else:
        rt.env.say(f"onboard: {request.name} already in the inventory ({existing.source})")
    host = rt.inventory.get(request.name)
    if host is None:  # the loader would have refused the file before
        raise ConfigError("onboarded host missing after reload", key=request.name)
    rt.env.say(f"onboard: provisioning {host.name} as a compute node")
    result = apply(rt, [host])
    rt.env.say(format_recap(result))
    if result.exit_status != ExitStatus.SUCCESS:
        rt.env.say(
            f"onboard: {host.name} is pinned and in the inventory, but provisioning failed; "
            "fix the cause and re-run the same command (it resumes)"
        )
        return ExitStatus.FAILURE
    joined = wait_for_node(rt, host)
    rt.env.say(f"onboard: at the orchestrator {host.name} is {joined}")
    report = verify(rt, [host])
    rt.env.stderr.write(render_table(report))
    rt.env.stderr.flush()
    if report.ready:
        rt.env.say(
            f"onboard: {host.name} is ready: pinned, in the inventory, provisioned, verified"
        )
    else:
        rt.env.say(
            f"onboard: {host.name} is provisioned but NOT ready (see the fixes above); "
            "re-run the same command after fixing"
        )
    return report.exit_status


def run(
    rt: Runtime,
    *,
    name: str,
    address: str,
    port: int,
    user: str,
    labels: str,
    fingerprint: str | None,
    api_port: int | None = None,
    replace_key: bool = False,
) -> ExitStatus:
    """``invoke onboard``; ``api_port`` is for labs where nodes share one network namespace."""
    request = OnboardRequest(
        name=name.strip(),
        address=address.strip(),
        port=port,
        user=user.strip() or "root",
        labels=parse_labels(labels),
        fingerprint=fingerprint,
        api_port=api_port,
        replace_key=replace_key,
    )
    if not request.name or not request.address:
        raise UsageError("--host and --address are required", key="--host")
    return onboard(rt, request)
