"""``invoke lab.*``: start, inspect and stop a local lab fleet for the quick start.

``invoke lab.up`` starts hosts that outlive the invoke process (their pids go
to ``<dir>/lab.json``) and prints the ``export FLEETKIT_SETTINGS=...`` line
to use fleetkit against them; ``invoke lab.down`` stops them from any later
process. ``invoke lab.show node-1`` shows what an administrator wants to see
on a host, with secrets in configuration files redacted. ``python -m lab``
offers the same tasks.
"""

from __future__ import annotations

import re
import shlex
import socket
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from fleetkit.foundation.secrets import redact, remember_secret
from lab.fleet import Lab
from lab.hosts import LabError, LabHost
from lab.latency import ProxyError, parse_delay

DEFAULT_DIR = ".lab"
#: Values after these keys are secrets in any config file shown (YAML, env, flags).
_SECRET_KEY_RE = re.compile(
    r"(?im)^(\s*[\w.-]*(token|secret|password|passwd|api_?key|access_?key)[\w.-]*\s*[:=]\s*)(\S.*)$"
)
#: What `lab.show` lists on a host (paths the official packages and fleetkit use).
_SHOWN_PATHS = (
    "/opt/osquery/bin/osqueryd",
    "/usr/bin/osqueryi",
    "/usr/bin/osqueryd",
    "/etc/osquery",
    "/var/osquery",
    "/usr/lib/systemd/system/osqueryd.service",
    "/etc/default/osqueryd",
    "/usr/local/bin/bacalhau",
    "/etc/bacalhau",
    "/var/lib/bacalhau",
)
_SHOWN_CONFIGS = (
    "/etc/osquery/osquery.flags",
    "/etc/osquery/osquery.conf",
    "/etc/bacalhau/config.yaml",
    "/etc/default/bacalhau",
)


def _workdir(directory: str) -> Path:
    return Path(directory).expanduser().resolve()


def _load(directory: str) -> Lab:
    try:
        return Lab.load(_workdir(directory))
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=2) from None


@task(
    help={
        "compute": "number of compute hosts (node-1..N) besides the control plane orch-1",
        "dir": f"work directory of the lab (default {DEFAULT_DIR})",
        "s3": "also start a local S3 server (moto) and publish query results there",
        "netns": "put every host in its own network namespace (10.R.S.N addresses)",
        "latency": "one-way delay of a proxy in front of every sshd, the orchestrator API "
        "and S3, e.g. 40ms (0ms: proxy without delay, for its counters)",
        "machine_names": "machine hostnames that differ from inventory names: "
        "node-2=ip-10-0-1-29,node-3=web-3",
        "cloud_hostnames": "give every second compute host a cloud-style hostname (ip-10-...), "
        "as real fleets have (default on; --no-cloud-hostnames names every machine like its host)",
    }
)
def up(
    c: Context,
    compute: int = 3,
    dir: str = DEFAULT_DIR,
    s3: bool = False,
    netns: bool = False,
    latency: str = "",
    machine_names: str = "",
    cloud_hostnames: bool = True,
) -> None:
    """Start a local lab fleet (not provisioned) and write its fleetkit setup."""
    workdir = _workdir(dir)
    try:
        lab = Lab(
            workdir,
            compute=compute,
            s3=s3,
            netns=netns,
            latency=parse_delay(latency) if latency else None,
            machine_names=_name_pairs(machine_names),
            cloud_hostnames=cloud_hostnames,
        ).up()
    except (LabError, ProxyError) as exc:
        raise Exit(f"lab: {exc}", code=1) from None
    print(f"lab: {len(lab.hosts)} hosts up in {workdir} (not provisioned)")
    _print_hosts(lab)
    if lab.s3 is not None:
        print(f"lab: S3 at {lab.s3_endpoint}, bucket {lab.s3.bucket}")
    _print_latency(lab)
    print("lab: to use fleetkit against it:")
    print(f"export FLEETKIT_SETTINGS={shlex.quote(str(lab.settings_path))}")


@task(help={"dir": f"work directory of the lab (default {DEFAULT_DIR})"})
def down(c: Context, dir: str = DEFAULT_DIR) -> None:
    """Stop every host and server of the lab; its work directory stays."""
    lab = _load(dir)
    try:
        lab.down()
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=1) from None
    print(f"lab: {_workdir(dir)} is down")


@task(help={"dir": f"work directory of the lab (default {DEFAULT_DIR})"})
def status(c: Context, dir: str = DEFAULT_DIR) -> None:
    """Which hosts of the lab run and answer SSH."""
    lab = _load(dir)
    print(f"lab: {_workdir(dir)} ({lab.state}); settings {lab.settings_path}")
    _print_hosts(lab)
    if lab.s3 is not None:
        print(f"S3 {lab.s3_endpoint} bucket {lab.s3.bucket}")
    _print_latency(lab)
    if lab.state == "up" and not lab.is_running():
        raise Exit("lab: state file says up but no host is running", code=1)


@task(
    help={
        "host": "host name (orch-1, node-1, ...)",
        "dir": f"work directory of the lab (default {DEFAULT_DIR})",
    }
)
def show(c: Context, host: str, dir: str = DEFAULT_DIR) -> None:
    """What is on one host: hostname, osquery/bacalhau files, package, daemons, socket."""
    lab = _load(dir)
    try:
        chosen = lab.host(host)
    except KeyError as exc:
        raise Exit(f"lab: {exc.args[0]}", code=2) from None
    if not chosen.is_running():
        raise Exit(f"lab: {host} is not running (lab state: {lab.state})", code=1)
    print(describe_host(lab, chosen))


def _name_pairs(text: str) -> dict[str, str]:
    """``node-2=ip-10-0-1-29,node-3=web-3`` -> a dict (bad pairs: exit 2)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, machine = item.partition("=")
        if not sep or not name.strip() or not machine.strip():
            raise Exit(f"lab: --machine-names: expected NAME=HOSTNAME, got {item!r}", code=2)
        pairs[name.strip()] = machine.strip()
    return pairs


def _print_hosts(lab: Lab) -> None:
    for host in lab.hosts:
        entry = lab.entries[host.name]
        running = "running" if host.is_running() else "stopped"
        ssh = "ssh ok" if running == "running" and _accepts(host) else "ssh down"
        labels = ",".join(f"{k}={v}" for k, v in entry.labels.items()) or "-"
        machine = f"  hostname {host.hostname}" if host.hostname != host.name else ""
        print(
            f"  {host.name:<10} {entry.role:<13} {host.address}:{host.client_port:<6} "
            f"{running:<8} {ssh:<8} labels {labels}{machine}"
        )


def _print_latency(lab: Lab) -> None:
    """The proxy's delay and whether it runs (status must show latency mode)."""
    if lab.proxy is None:
        return
    delay = f"{(lab.latency or 0) * 1000:g} ms one way"
    if not lab.proxy.is_running():
        print(f"latency: {delay}, but the proxy (pid {lab.proxy.pid}) is not running")
        return
    try:
        routes = lab.proxy.stats()
    except ProxyError as exc:
        print(f"latency: {delay}; proxy not answering: {exc}")
        return
    frozen = sorted(name for name, r in routes.items() if r["frozen"])
    line = f"latency: {delay} (proxy pid {lab.proxy.pid}, {len(routes)} routes"
    line += f", frozen: {', '.join(frozen)})" if frozen else ")"
    print(line)


def _accepts(host: LabHost) -> bool:
    """sshd itself answers (not the latency proxy, which accepts for any host)."""
    try:
        with socket.create_connection((host.address, host.ssh_port), timeout=0.5):
            return True
    except OSError:
        return False


def describe_host(lab: Lab, host: LabHost) -> str:
    """The text of ``lab.show``; secrets in the shown config files are redacted."""
    paths = " ".join(shlex.quote(p) for p in _SHOWN_PATHS)
    script = "\n".join(
        [
            'echo "== hostname: $(hostname)"',
            f"echo {shlex.quote('== inventory name: ' + host.name)}",
            "echo '== files'",
            f"for p in {paths}; do",
            '  if [ -e "$p" ] || [ -L "$p" ]; then ls -ld "$p"; else echo "(missing) $p"; fi',
            "done",
            "echo '== dpkg -l osquery'",
            "if dpkg -l osquery >/dev/null 2>&1; then dpkg -l osquery | tail -n +6;"
            " else echo '(osquery is not installed)'; fi",
            "echo '== daemons'",
            "ps -eo pid,user,args | grep -E 'osqueryd|bacalhau|sshd' | grep -v grep || true",
            "echo '== osquery socket'",
            "if [ -S /var/osquery/osquery.em ]; then ls -l /var/osquery/osquery.em;"
            " else echo '(no socket at /var/osquery/osquery.em)'; fi",
        ]
    )
    text = host.sh(script, check=False).stdout
    for path in _SHOWN_CONFIGS:
        if host.exists(path):
            text += f"== {path}\n" + redact_config(lab, host.read_file(path))
    return text.rstrip("\n")


def redact_config(lab: Lab, text: str) -> str:
    """Hide the lab's secret values and anything under a secret-looking key."""
    for secret in _lab_secrets(lab):
        remember_secret(secret)
    text = _SECRET_KEY_RE.sub(lambda m: m.group(1) + "<redacted>", text)
    text = redact(text)
    return text if text.endswith("\n") or not text else text + "\n"


def _lab_secrets(lab: Lab) -> list[str]:
    values = []
    for path in sorted((lab.workdir / "secrets").glob("*")):
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if len(value) >= 4:
            values.append(value)
    return values


namespace = Collection(up, down, status, show)
