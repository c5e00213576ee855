"""Services: systemd where it runs, start-stop-daemon where it does not.

Detected per host: systemd when ``/run/systemd/system`` exists (what
``sd_booted()`` checks), otherwise a fallback that runs the SAME command line
as the unit's ``ExecStart`` under ``start-stop-daemon`` with a pidfile in
``/run/fleetkit`` and its output in ``/var/log/<service>.log``.
``settings.service_manager`` may force either. Each manager only builds shell
commands: :class:`fleetkit.hostfacts.facts.ServiceLook` looks through them and
:class:`fleetkit.hostfacts.steps.ServiceStep` plans with them, so both are
testable without a host.

Open question: the fallback has no boot integration (there is no init system
to enable a service with); a reboot of such a host needs another provision run.
"""

from __future__ import annotations

import math
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from fleetkit.foundation.status import ConfigError

#: Where fleetkit keeps pidfiles and pending-restart markers (tmpfs: gone at boot,
#: which is right: every service starts fresh after a reboot).
RUN_DIR = "/run/fleetkit"
DETECT_COMMAND = "if [ -d /run/systemd/system ]; then echo systemd; else echo none; fi"


def marker_path(service: str, kind: str) -> str:
    """Pending-work marker (``restart``, ``reload``) that survives a failed run."""
    return f"{RUN_DIR}/{service}.{kind}-pending"


@dataclass(frozen=True)
class ServiceSpec:
    """One long-running daemon: its name, command line, environment file, unit."""

    name: str
    argv: tuple[str, ...]
    #: systemd unit name (``bacalhau.service``); the fallback ignores it.
    unit: str
    #: ``KEY=value`` lines loaded into the daemon's environment when the file exists.
    env_file: str | None = None
    #: How the daemon shows it is serving, so a start need not sit out the whole
    #: settle time (start-stop-daemon fallback): its unix socket appears, or its TCP
    #: port listens. None: it has no such sign; a start waits the settle time.
    #: Not part of the service's identity: a look at it is the same with or without.
    ready_socket: str | None = field(default=None, compare=False)
    ready_port: int | None = field(default=None, compare=False)

    @property
    def exec_start(self) -> str:
        return shlex.join(self.argv)

    @property
    def pidfile(self) -> str:
        return f"{RUN_DIR}/{self.name}.pid"

    @property
    def log_file(self) -> str:
        return f"/var/log/{self.name}.log"

    def marker(self, kind: str) -> str:
        return marker_path(self.name, kind)


@dataclass(frozen=True)
class ServiceState:
    running: bool
    enabled: bool
    restart_pending: bool
    reload_pending: bool
    #: The manager that looked (``systemd``, ``start-stop-daemon``).
    manager: str = ""

    @classmethod
    def from_words(cls, words: list[str], *, manager: str = "") -> ServiceState:
        """The words a look printed: ``running|stopped``, ``enabled|disabled``, markers."""
        return cls(
            running="running" in words,
            enabled="enabled" in words,
            restart_pending="restart" in words,
            reload_pending="reload" in words,
            manager=manager,
        )


class ServiceManager(ABC):
    """Builds the commands that look at, start and restart one service."""

    name: str = ""
    #: Whether ``enable`` means anything (persisting across reboots).
    can_enable: bool = False

    def look_command(self, spec: ServiceSpec) -> str:
        """One command printing ``running|stopped``, ``enabled|disabled`` and the markers."""
        markers = " ".join(
            f"if [ -e {shlex.quote(spec.marker(kind))} ]; then echo {kind}; fi;"
            for kind in ("restart", "reload")
        )
        return f"{self._status_lines(spec)} {markers}"

    @classmethod
    def parse_look(cls, output: str) -> ServiceState:
        return ServiceState.from_words(output.split(), manager=cls.name)

    @abstractmethod
    def _status_lines(self, spec: ServiceSpec) -> str: ...

    @abstractmethod
    def start_command(self, spec: ServiceSpec, *, reload: bool) -> str:
        """Enable (where that exists) and start."""

    @abstractmethod
    def restart_command(self, spec: ServiceSpec, *, reload: bool) -> str: ...

    def enable_command(self, spec: ServiceSpec) -> str:
        return "true"

    @staticmethod
    def clear_markers(spec: ServiceSpec) -> str:
        return f"rm -f {shlex.quote(spec.marker('restart'))} {shlex.quote(spec.marker('reload'))}"


class Systemd(ServiceManager):
    name = "systemd"
    can_enable = True

    def _status_lines(self, spec: ServiceSpec) -> str:
        unit = shlex.quote(spec.unit)
        return (
            f"if systemctl is-active --quiet {unit}; then echo running; else echo stopped; fi; "
            f"if systemctl is-enabled --quiet {unit} 2>/dev/null; then echo enabled; "
            "else echo disabled; fi;"
        )

    def _prefix(self, reload: bool) -> str:
        return "systemctl daemon-reload && " if reload else ""

    def enable_command(self, spec: ServiceSpec) -> str:
        return f"systemctl enable --quiet {shlex.quote(spec.unit)}"

    def start_command(self, spec: ServiceSpec, *, reload: bool) -> str:
        unit = shlex.quote(spec.unit)
        return (
            f"{self._prefix(reload)}systemctl enable --quiet {unit} && systemctl start {unit} "
            f"&& {self.clear_markers(spec)}"
        )

    def restart_command(self, spec: ServiceSpec, *, reload: bool) -> str:
        unit = shlex.quote(spec.unit)
        return (
            f"{self._prefix(reload)}systemctl enable --quiet {unit} && systemctl restart {unit} "
            f"&& {self.clear_markers(spec)}"
        )


class StartStopDaemon(ServiceManager):
    """The fallback for hosts without systemd (containers, the lab, minimal VMs)."""

    name = "start-stop-daemon"
    #: Seconds the daemon must survive after start before it counts as started
    #: (unless it shows it is serving sooner: :attr:`ServiceSpec.ready_socket`, ``ready_port``).
    settle = 0.3
    #: How often a start looks for the sign that the daemon serves (each look runs a few
    #: processes on the host: on a busy host, looking more often costs more than it saves).
    settle_step = 0.05

    def _status_lines(self, spec: ServiceSpec) -> str:
        pidfile = shlex.quote(spec.pidfile)
        return (
            f"if start-stop-daemon --status --pidfile {pidfile}; then echo running; "
            "else echo stopped; fi;"
        )

    def daemon_script(self, spec: ServiceSpec) -> str:
        """What ``sh -c`` runs: load the env file like EnvironmentFile=, then exec ExecStart."""
        log = shlex.quote(spec.log_file)
        env = ""
        if spec.env_file:
            env_file = shlex.quote(spec.env_file)
            env = f"set -a; if [ -r {env_file} ]; then . {env_file}; fi; set +a; "
        return f"{env}exec {spec.exec_start} >>{log} 2>&1"

    def _start(self, spec: ServiceSpec) -> str:
        pidfile = shlex.quote(spec.pidfile)
        script = shlex.quote(self.daemon_script(spec))
        log = shlex.quote(spec.log_file)
        return (
            f"mkdir -p {RUN_DIR} && "
            f"start-stop-daemon --start --background --make-pidfile --pidfile {pidfile} "
            f"--startas /bin/sh -- -c {script} && {self._settle(spec)} && "
            f"if ! start-stop-daemon --status --pidfile {pidfile}; then "
            f"echo '{spec.name} exited right after start; last lines of {spec.log_file}:' >&2; "
            f"tail -n 5 {log} >&2; exit 1; fi && {self.clear_markers(spec)}"
        )

    def _settle(self, spec: ServiceSpec) -> str:
        """Sit out the settle time; or less, once the daemon shows it serves (or died)."""
        ready = ready_test(spec)
        if ready is None:
            return f"sleep {self.settle}"
        pidfile = shlex.quote(spec.pidfile)
        tries = max(1, math.ceil(self.settle / self.settle_step))
        return (
            f"{{ fk_i=0; while [ $fk_i -lt {tries} ] && ! {{ {ready}; }}; do "
            f"start-stop-daemon --status --pidfile {pidfile} || break; "
            f"sleep {self.settle_step:g}; fk_i=$((fk_i+1)); done; true; }}"
        )

    def stop_command(self, spec: ServiceSpec) -> str:
        return (
            "start-stop-daemon --stop --oknodo --retry TERM/10/KILL/5 --remove-pidfile "
            f"--pidfile {shlex.quote(spec.pidfile)}"
        )

    def start_command(self, spec: ServiceSpec, *, reload: bool) -> str:
        return self._start(spec)

    def restart_command(self, spec: ServiceSpec, *, reload: bool) -> str:
        return f"{self.stop_command(spec)} && {self._start(spec)}"


def ready_test(spec: ServiceSpec) -> str | None:
    """A shell test that holds once the started daemon serves; None when it has no sign.

    The socket must be newer than the pidfile the start just wrote: a socket
    left by an earlier run of the daemon is no sign (file times are coarse, so
    one made within the same clock tick is missed too: that start just waits
    the settle time, as without a sign). A port listens when the kernel lists
    it in LISTEN state (``0A``) with any local address.
    """
    tests = []
    if spec.ready_socket:
        socket = shlex.quote(spec.ready_socket)
        tests.append(f"[ -S {socket} ] && [ {socket} -nt {shlex.quote(spec.pidfile)} ]")
    if spec.ready_port:
        tests.append(
            f"grep -q ':{spec.ready_port:04X} [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 "
            "2>/dev/null"
        )
    return " && ".join(tests) if tests else None


MANAGERS: dict[str, type[ServiceManager]] = {
    Systemd.name: Systemd,
    StartStopDaemon.name: StartStopDaemon,
}


def manager_named(name: str) -> ServiceManager:
    try:
        return MANAGERS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown service manager {name!r} (auto, {', '.join(MANAGERS)})",
            key="service_manager",
        ) from None


def manager_from_detection(output: str) -> ServiceManager:
    """The manager for a host, from the output of :data:`DETECT_COMMAND`."""
    return Systemd() if output.strip() == "systemd" else StartStopDaemon()
