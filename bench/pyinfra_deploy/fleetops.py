"""pyinfra facts and operations for what pyinfra has no stock operation for.

Imported by ``deploy.py`` inside pyinfra's own venv (never by fleetkit).
Each operation reads facts first and yields commands only for what differs,
like pyinfra's own: the lab's hosts have no systemd, so services run under
``start-stop-daemon`` with a pidfile (the command lines come from fleetkit,
see ``render.py``), and osquery's .deb is installed only when dpkg does not
report the pinned version (pyinfra's ``DebPackages`` fact).

Why not the stock ``apt.deb``: it runs ``dpkg -i`` twice plus
``apt-get install -f`` on every install, which is more host work than
fleetkit's one ``dpkg -i`` and would tilt the comparison towards fleetkit.
"""

from __future__ import annotations

import shlex
import time
import urllib.error
import urllib.request

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Socket


class DaemonState(FactBase):
    """Whether start-stop-daemon sees the service's pidfile process; and its socket, if any."""

    default = dict

    def command(self, pidfile, socket=None):
        look = (
            f"if start-stop-daemon --status --pidfile {shlex.quote(pidfile)}; "
            "then echo running; else echo stopped; fi"
        )
        if socket:
            look += f"; if [ -S {shlex.quote(socket)} ]; then echo socket; fi"
        return look

    def process(self, output):
        words = set(" ".join(output).split())
        return {"running": "running" in words, "socket": "socket" in words}


@operation()
def deb_pinned(src, package, version, sha256):
    """Upload and ``dpkg -i`` a .deb unless dpkg reports ``package`` at ``version``.

    The upload is checked against its pinned SHA-256 on the host and removed
    after the install, like fleetkit's push mode.
    """
    if version in host.get_fact(DebPackages).get(package, []):
        host.noop(f"{package} {version} is installed")
        return
    remote = f"/var/tmp/pyinfra-{sha256[:16]}.deb"
    q = shlex.quote(remote)
    yield FileUploadCommand(src, remote)
    yield (
        f"echo {sha256}'  '{q} | sha256sum -c --quiet && dpkg -i {q} >/dev/null; rc=$?; "
        f"rm -f {q}; [ $rc -eq 0 ] && [ \"$(dpkg-query -W -f='${{Version}}' "
        f'{shlex.quote(package)})" = {shlex.quote(version)} ]'
    )


@operation()
def daemon(service, pidfile, start, restart, socket=None, restart_if=()):
    """A start-stop-daemon service running; restarted when an operation it watches changed.

    ``restart_if``: operations (their metadata) whose change needs a restart,
    read when this operation runs (after them), not when the deploy is read.
    A daemon that runs without its ``socket`` is broken and is restarted too.
    """
    state = host.get_fact(DaemonState, pidfile=pidfile, socket=socket)
    if not state["running"]:
        yield start
    elif any(op.did_change() for op in restart_if) or (socket and not state["socket"]):
        yield restart
    else:
        host.noop(f"{service} is running")


@operation()
def socket_ready(path, wait):
    """Wait (bounded, on the host) until the daemon's unix socket exists."""
    if host.get_fact(Socket, path=path):
        host.noop(f"{path} is there")
        return
    yield wait


def wait_alive(url, timeout, interval=0.25):
    """From the admin machine: ``url`` answers 2xx within ``timeout`` seconds (for python.call)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if 200 <= response.status < 300:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = type(exc).__name__
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:g}s ({last})")
        time.sleep(interval)
