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
    }
)
def up(
    c: Context, compute: int = 3, dir: str = DEFAULT_DIR, s3: bool = False, netns: bool = False
) -> None:
    """Start a local lab fleet (not provisioned) and write its fleetkit setup."""
    workdir = _workdir(dir)
    try:
        lab = Lab(workdir, compute=compute, s3=s3, netns=netns).up()
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=1) from None
    print(f"lab: {len(lab.hosts)} hosts up in {workdir} (not provisioned)")
    _print_hosts(lab)
    if lab.s3 is not None:
        print(f"lab: S3 at {lab.s3.endpoint}, bucket {lab.s3.bucket}")
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
        print(f"S3 {lab.s3.endpoint} bucket {lab.s3.bucket}")
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


def _print_hosts(lab: Lab) -> None:
    for host in lab.hosts:
        entry = lab.entries[host.name]
        running = "running" if host.is_running() else "stopped"
        ssh = "ssh ok" if running == "running" and _accepts(host) else "ssh down"
        labels = ",".join(f"{k}={v}" for k, v in entry.labels.items()) or "-"
        print(
            f"  {host.name:<10} {entry.role:<13} {host.address}:{host.ssh_port:<6} "
            f"{running:<8} {ssh:<8} labels {labels}"
        )


def _accepts(host: LabHost) -> bool:
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
