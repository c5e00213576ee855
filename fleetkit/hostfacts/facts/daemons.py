"""Facts about what runs on a host: its service manager, a service, its name, a local API."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from fleetkit.hostfacts.facts.base import Fact, Raw
from fleetkit.hostfacts.services import (
    DETECT_COMMAND,
    MANAGERS,
    ServiceSpec,
    ServiceState,
    manager_from_detection,
    manager_named,
)

#: Bytes of an HTTP answer kept (the agent's alive answer is a few bytes).
ANSWER_LIMIT = 1024


@dataclass(frozen=True)
class ManagerLook(Fact[str]):
    """Which service manager the host has: ``systemd`` or ``start-stop-daemon``."""

    def command(self) -> str:
        return DETECT_COMMAND

    def parse(self, raw: Raw) -> str:
        return manager_from_detection(raw.text).name


@dataclass(frozen=True)
class ServiceLook(Fact[ServiceState]):
    """One service as its manager sees it, with fleetkit's pending-restart markers.

    ``manager`` is the setting (``auto`` detects, like ``sd_booted()``), so
    provisioning and verify always look through the same manager.
    """

    spec: ServiceSpec
    manager: str = "auto"

    def command(self) -> str:
        if self.manager != "auto":
            chosen = manager_named(self.manager)
            return f"echo {chosen.name}; {chosen.look_command(self.spec)}"
        systemd, fallback = manager_named("systemd"), manager_named("start-stop-daemon")
        return (
            f"if [ -d /run/systemd/system ]; then echo {systemd.name}; "
            f"{systemd.look_command(self.spec)} "
            f"else echo {fallback.name}; {fallback.look_command(self.spec)} fi"
        )

    def parse(self, raw: Raw) -> ServiceState:
        words = raw.text.split()
        manager = words[0] if words and words[0] in MANAGERS else "unknown"
        return ServiceState.from_words(words[1:], manager=manager)


@dataclass(frozen=True)
class Hostname(Fact[str | None]):
    """The machine's own hostname (``uname -n``), which may differ from its inventory name.

    Not the node's identity (that is the inventory name, given with ``--name``):
    provisioning writes it into the ``fleetkit-hostname`` label, and verify uses
    it to recognise a node that first joined under the machine's name.
    """

    def command(self) -> str:
        return "uname -n"

    def parse(self, raw: Raw) -> str | None:
        name = raw.text.strip()
        return name or None if raw.ok else None


@dataclass(frozen=True)
class HttpAnswer:
    ok: bool
    #: The body, cut at ANSWER_LIMIT bytes.
    body: str
    said: str


@dataclass(frozen=True)
class HttpOnHost(Fact[HttpAnswer]):
    """A GET asked *on the host* (curl, wget or python3, whichever it has).

    For APIs bound to the host itself, or firewalled from the admin machine
    (a compute node's agent API): SSH is the one channel fleetkit always has.
    """

    url: str
    timeout: int = 5

    def command(self) -> str:
        u, t = shlex.quote(self.url), self.timeout
        python = shlex.quote(
            "import sys, urllib.request as u\n"
            f"sys.stdout.write(u.urlopen(sys.argv[1], timeout={t}).read({ANSWER_LIMIT}).decode())"
        )
        return (
            f"if command -v curl >/dev/null 2>&1; then curl -fsS --max-time {t} {u}; "
            f"elif command -v wget >/dev/null 2>&1; then wget -q -T {t} -O - {u}; "
            f"elif command -v python3 >/dev/null 2>&1; then python3 -c {python} {u}; "
            "else echo 'no curl, wget or python3 on this host to ask the agent' >&2; exit 127; fi"
        )

    def parse(self, raw: Raw) -> HttpAnswer:
        body = raw.stdout[:ANSWER_LIMIT].decode("utf-8", "replace").strip()
        return HttpAnswer(raw.ok, body, raw.said())
