"""Steps: the idempotent primitives a host's plan is made of.

A plan is data (pyinfra's idea): an ordered list of frozen dataclasses that
can be printed and compared without a host. Applying a step first LOOKS at
the host with one command that returns every fact the step needs, then
changes only what differs, and returns a :class:`StepResult` saying whether
it changed something, with a unified diff for files. In check mode a step
looks and reports what it would do, and changes nothing.

Services are restarted like Ansible handlers: a step that changes a
service's file, binary or package *notifies* it; the service's
:class:`ServiceStep`, placed after everything that can notify it, restarts it
once. The notification is also left on the host as a marker in
``/run/fleetkit`` so a run that fails between the change and the restart
still restarts next time (the trap described in ansible/ansible#4766).
"""

from __future__ import annotations

import difflib
import posixpath
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from fleetkit.clients.ssh import CommandResult, Remote
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.secrets import REDACTED, redact
from fleetkit.foundation.status import HostError
from fleetkit.hostfacts.packages import (
    MISMATCH_EXIT,
    NO_DOWNLOADER_EXIT,
    PackageRef,
    PackageStore,
    download_script,
    verify_script,
)
from fleetkit.hostfacts.services import (
    DETECT_COMMAND,
    RUN_DIR,
    ServiceManager,
    ServiceSpec,
    manager_from_detection,
    manager_named,
    marker_path,
)

#: Where fleetkit records what it installed from a tarball (pull mode's memory).
STATE_DIR = "/var/lib/fleetkit"

#: Lines of secret-holding files whose values never appear in a diff, even when
#: the host holds an old value fleetkit never revealed (so ``redact`` cannot know it).
_SECRET_LINE_RE = re.compile(
    r"^(\s*(?:[\w.-]*(?:token|apikey|password|secret|access_key)[\w.-]*)\s*[:=]\s*).+$",
    re.IGNORECASE | re.MULTILINE,
)


class StepFailed(HostError):
    """A step could not bring the host to the desired state."""


@dataclass(frozen=True)
class StepResult:
    changed: bool
    message: str
    diff: str | None = None
    #: Something the administrator should know although the step succeeded.
    warning: str | None = None


@dataclass
class HostSession:
    """What a step works with on one host during one run."""

    host: Host
    remote: Remote
    env: Environment
    packages: PackageStore
    settings_file: str
    check: bool = False
    #: auto | systemd | start-stop-daemon (settings.service_manager)
    service_manager: str = "auto"
    http_session_factory: Callable[[], requests.Session] = requests.Session
    #: Services notified during this run (service name, "restart" | "reload").
    notified: set[tuple[str, str]] = field(default_factory=set)
    _manager: ServiceManager | None = None

    def run(self, command: str, *, stdin: bytes | str | None = None) -> CommandResult:
        return self.remote.run(command, stdin=stdin)

    def must(self, command: str, what: str, *, stdin: bytes | str | None = None) -> CommandResult:
        result = self.run(command, stdin=stdin)
        if not result.ok:
            raise StepFailed(self.host.name, failure_text(result, what))
        return result

    def manager(self) -> ServiceManager:
        """The host's service manager, detected once (systemd iff /run/systemd/system)."""
        if self._manager is None:
            if self.service_manager == "auto":
                detected = self.must(DETECT_COMMAND, "detect the service manager")
                self._manager = manager_from_detection(detected.out)
            else:
                self._manager = manager_named(self.service_manager)
        return self._manager

    def notify(self, notifications: tuple[tuple[str, str], ...]) -> None:
        """Ask for services to be restarted (or their units reloaded) later in the plan."""
        if not notifications:
            return
        self.notified.update(notifications)
        if self.check:
            return
        paths = " ".join(shlex.quote(marker_path(name, kind)) for name, kind in notifications)
        self.must(f"mkdir -p {RUN_DIR} && touch {paths}", "record a pending restart")


def failure_text(result: CommandResult, what: str) -> str:
    detail = (result.err or result.out).strip().splitlines()
    last = " | ".join(detail[-3:]) if detail else "no output"
    return redact(f"{what} failed (exit {result.exit_code}): {last}")


class Step(ABC):
    """One idempotent piece of a host's desired state."""

    @abstractmethod
    def describe(self) -> str:
        """A short line for plans and recaps (``file /etc/osquery/osquery.flags``)."""

    @abstractmethod
    def apply(self, session: HostSession) -> StepResult: ...


# --- files -------------------------------------------------------------------------------


def atomic_write_command(path: str, mode: int, owner: str, group: str) -> str:
    """Write stdin to ``path``: temp file in the same directory, chmod, chown, rename."""
    directory = shlex.quote(posixpath.dirname(path) or "/")
    temp = shlex.quote(f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.") + "XXXXXX"
    return (
        f"umask 077; (umask 022; mkdir -p {directory}) && tmp=$(mktemp {temp}) && "
        f'{{ cat > "$tmp" && chmod {mode:04o} "$tmp" && chown {owner}:{group} "$tmp" && '
        f'mv -f "$tmp" {shlex.quote(path)}; }} || {{ rm -f "$tmp"; exit 1; }}'
    )


def file_look_command(path: str) -> str:
    p = shlex.quote(path)
    return f"if [ -f {p} ]; then stat -c '%a %U %G' {p} && cat {p}; else echo -; fi"


@dataclass(frozen=True)
class FileFacts:
    exists: bool
    mode: int = 0
    owner: str = ""
    group: str = ""
    content: bytes = b""


def parse_file_look(output: bytes) -> FileFacts:
    head, _, body = output.partition(b"\n")
    fields = head.decode("utf-8", "replace").split()
    if fields == ["-"] or len(fields) != 3:
        return FileFacts(exists=False)
    mode, owner, group = fields
    return FileFacts(True, int(mode, 8), owner, group, body)


def mask_secret_lines(text: str) -> str:
    return _SECRET_LINE_RE.sub(lambda m: m.group(1) + REDACTED, text)


def unified_diff(path: str, old: str | None, new: str, *, secret: bool, host: str = "") -> str:
    """A unified diff of a file; secrets masked, whatever their value on the host."""
    before = "" if old is None else old
    if secret:
        before, new = mask_secret_lines(before), mask_secret_lines(new)
    where = f"{host}:{path}" if host else path
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile="/dev/null" if old is None else f"{where} (on host)",
        tofile=f"{where} (desired)",
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if not text and old is not None:
        text = f"(only a secret value differs in {path}; not shown)\n"
    return redact(text)


@dataclass(frozen=True)
class FileStep(Step):
    """A whole file with exact content, mode and owner (rendered from a template)."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    #: (service, kind) notified when the content changes.
    notify: tuple[tuple[str, str], ...] = ()
    #: The file holds a secret: diffs mask secret-looking lines.
    secret: bool = False
    #: Only on systemd hosts (unit files); skipped elsewhere.
    systemd_only: bool = False
    template: str = ""

    def describe(self) -> str:
        return f"file {self.path}"

    def apply(self, session: HostSession) -> StepResult:
        if self.systemd_only and session.manager().name != "systemd":
            return StepResult(False, "skipped: no systemd on this host")
        look = session.must(file_look_command(self.path), f"read {self.path}")
        facts = parse_file_look(look.stdout)
        desired = self.content.encode()
        content_ok = facts.exists and facts.content == desired
        meta_ok = facts.exists and (facts.mode, facts.owner, facts.group) == (
            self.mode,
            self.owner,
            self.group,
        )
        if content_ok and meta_ok:
            return StepResult(False, "up to date")
        diff = ""
        if not content_ok:
            old = facts.content.decode("utf-8", "replace") if facts.exists else None
            diff = unified_diff(
                self.path, old, self.content, secret=self.secret, host=session.host.name
            )
        if facts.exists and not meta_ok:
            diff += (
                f"metadata {self.path}: {facts.mode:04o} {facts.owner}:{facts.group} -> "
                f"{self.mode:04o} {self.owner}:{self.group}\n"
            )
        verb, done = (
            ("create", "created")
            if not facts.exists
            else ("update", "updated")
            if not content_ok
            else ("fix mode", "fixed mode")
        )
        if session.check:
            if not content_ok:
                session.notify(self.notify)
            return StepResult(True, f"would {verb}", diff)
        if content_ok:
            target = shlex.quote(self.path)
            session.must(
                f"chmod {self.mode:04o} {target} && chown {self.owner}:{self.group} {target}",
                f"set mode of {self.path}",
            )
        else:
            session.must(
                atomic_write_command(self.path, self.mode, self.owner, self.group),
                f"write {self.path}",
                stdin=desired,
            )
            session.notify(self.notify)
        return StepResult(True, done, diff)


@dataclass(frozen=True)
class AbsentFileStep(Step):
    """A file that must not exist (e.g. S3 credentials once the publisher is off)."""

    path: str
    notify: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"no file {self.path}"

    def apply(self, session: HostSession) -> StepResult:
        p = shlex.quote(self.path)
        look = session.must(f"if [ -e {p} ]; then echo present; fi", f"look at {self.path}")
        if look.out.strip() != "present":
            return StepResult(False, "absent")
        if session.check:
            session.notify(self.notify)
            return StepResult(True, "would remove")
        session.must(f"rm -f {p}", f"remove {self.path}")
        session.notify(self.notify)
        return StepResult(True, "removed")


@dataclass(frozen=True)
class DirectoryStep(Step):
    path: str
    mode: int = 0o755
    owner: str = "root"
    group: str = "root"

    def describe(self) -> str:
        return f"directory {self.path}"

    def apply(self, session: HostSession) -> StepResult:
        p = shlex.quote(self.path)
        look = session.must(
            f"if [ -d {p} ]; then stat -c '%a %U %G' {p}; else echo -; fi", f"look at {self.path}"
        )
        wanted = f"{self.mode:o} {self.owner} {self.group}"
        current = look.out.strip()
        if current == wanted:
            return StepResult(False, "up to date")
        verb, done = ("create", "created") if current == "-" else ("fix mode", "fixed mode")
        if session.check:
            return StepResult(True, f"would {verb}")
        session.must(
            f"mkdir -p {p} && chmod {self.mode:04o} {p} && chown {self.owner}:{self.group} {p}",
            f"create {self.path}",
        )
        return StepResult(True, f"{done} ({wanted})")


# --- packages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DebPackageStep(Step):
    """A .deb at a pinned version: skipped when dpkg already reports that version."""

    package: str
    version: str
    ref: PackageRef
    transfer_mode: str = "push"
    notify: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"package {self.package} {self.version}"

    def apply(self, session: HostSession) -> StepResult:
        name = shlex.quote(self.package)
        look = session.must(
            f"dpkg-query -W -f='${{Version}}' {name} 2>/dev/null || true",
            f"look up package {self.package}",
        )
        installed = look.out.strip()
        if installed == self.version:
            return StepResult(False, f"{self.package} {self.version} installed")
        was = installed or "not installed"
        if session.check:
            session.notify(self.notify)
            return StepResult(True, f"would install {self.package} {self.version} (now: {was})")
        stdin: bytes | None = None
        if self.transfer_mode == "push":
            stdin = session.packages.artifact(self.ref).payload
            fetch = 'cat > "$f"'
        else:
            fetch = download_script(self.ref.source.source, '"$f"')
        verify = verify_script('"$f"', self.ref, session.settings_file)
        command = (
            f"d=$(mktemp -d /var/tmp/fleetkit.XXXXXX) || exit 1; "
            f'f="$d"/{shlex.quote(self.ref.source.filename)}; '
            f'( {fetch} && {verify} && dpkg -i "$f" >/dev/null ); rc=$?; rm -rf "$d"; '
            f"[ $rc -eq 0 ] || exit $rc; dpkg-query -W -f='${{Version}}' {name}"
        )
        result = session.run(command, stdin=stdin)
        if not result.ok:
            raise StepFailed(session.host.name, package_failure(result, self.describe()))
        now = result.out.strip()
        if now != self.version:
            raise StepFailed(
                session.host.name,
                f"installed {self.ref.source.filename} but dpkg reports {self.package} "
                f"{now or '(none)'}, not the pinned {self.version}",
            )
        session.notify(self.notify)
        return StepResult(True, f"installed {self.package} {self.version} (was: {was})")


def package_failure(result: CommandResult, what: str) -> str:
    if result.exit_code in (MISMATCH_EXIT, NO_DOWNLOADER_EXIT):
        return redact(result.err.strip().splitlines()[-1] if result.err.strip() else what)
    return failure_text(result, what)


@dataclass(frozen=True)
class TarballBinaryStep(Step):
    """One executable from a release tarball, skipped when the installed file has its hash.

    Push mode knows the binary's hash (the tarball was opened here). Pull mode
    cannot without downloading, so the host keeps a small record of which
    tarball produced the installed binary (``/var/lib/fleetkit/<name>.source``).
    """

    path: str
    ref: PackageRef
    transfer_mode: str = "push"
    mode: int = 0o755
    notify: tuple[tuple[str, str], ...] = ()
    state_dir: str = STATE_DIR

    def describe(self) -> str:
        return f"binary {self.path} ({self.ref.source.filename})"

    @property
    def record(self) -> str:
        return f"{self.state_dir}/{posixpath.basename(self.path)}.source"

    def apply(self, session: HostSession) -> StepResult:
        p = shlex.quote(self.path)
        look = session.must(
            f"if [ -f {p} ]; then sha256sum {p} | cut -d' ' -f1; stat -c %a {p}; "
            f"else echo -; echo -; fi; cat {shlex.quote(self.record)} 2>/dev/null || true",
            f"look at {self.path}",
        )
        lines = look.out.split("\n")
        installed, mode, record = [*lines, "", "", ""][:3]
        if self.transfer_mode == "push":
            wanted = session.packages.artifact(self.ref).payload_sha256
            up_to_date = installed == wanted
        else:
            up_to_date = record.split() == [self.ref.source.sha256, installed]
        if up_to_date and mode == f"{self.mode:o}":
            return StepResult(False, "up to date")
        if up_to_date:
            if session.check:
                return StepResult(True, "would fix mode")
            session.must(f"chmod {self.mode:04o} {p}", f"chmod {self.path}")
            return StepResult(True, "fixed mode")
        what = "install" if installed == "-" else "replace"
        if session.check:
            session.notify(self.notify)
            return StepResult(True, f"would {what}")
        if self.transfer_mode == "push":
            self._push(session)
        else:
            self._pull(session)
        session.notify(self.notify)
        return StepResult(True, f"{what}d")

    def _record_command(self) -> str:
        p = shlex.quote(self.path)
        return (
            f"mkdir -p {shlex.quote(self.state_dir)} && printf '%s %s\\n' {self.ref.source.sha256} "
            f"\"$(sha256sum {p} | cut -d' ' -f1)\" > {shlex.quote(self.record)}"
        )

    def _push(self, session: HostSession) -> None:
        payload = session.packages.artifact(self.ref).payload
        write = atomic_write_command(self.path, self.mode, "root", "root")
        session.must(f"{write} && {self._record_command()}", f"install {self.path}", stdin=payload)

    def _pull(self, session: HostSession) -> None:
        member = shlex.quote(self.ref.member or posixpath.basename(self.path))
        download = download_script(self.ref.source.source, '"$d/pkg"')
        verify = verify_script('"$d/pkg"', self.ref, session.settings_file)
        install = atomic_write_command(self.path, self.mode, "root", "root")
        command = (
            "d=$(mktemp -d /var/tmp/fleetkit.XXXXXX) || exit 1; "
            f'( {download} && {verify} && mkdir "$d/x" && tar -xzf "$d/pkg" -C "$d/x" && '
            f'[ -f "$d/x/"{member} ] && {{ {install}; }} < "$d/x/"{member} && '
            f'{self._record_command()} ); rc=$?; rm -rf "$d"; exit $rc'
        )
        result = session.run(command)
        if not result.ok:
            raise StepFailed(session.host.name, package_failure(result, f"install {self.path}"))


# --- services and readiness ----------------------------------------------------------


@dataclass(frozen=True)
class ServiceStep(Step):
    """The service enabled and running; restarted once when something notified it.

    ``socket``: a path the running daemon must provide (osqueryd's extensions
    socket). A daemon that runs without it is broken (someone removed the
    socket, or it lost it), so it is restarted rather than waited on.
    """

    spec: ServiceSpec
    socket: str | None = None

    def describe(self) -> str:
        return f"service {self.spec.name}"

    def apply(self, session: HostSession) -> StepResult:
        manager = session.manager()
        look = session.must(manager.look_command(self.spec), f"look at {self.spec.name}")
        state = manager.parse_look(look.out)
        restart = state.restart_pending or (self.spec.name, "restart") in session.notified
        if state.running and not restart and self.socket and self._socket_missing(session):
            restart = True
        reload = manager.can_enable and (
            state.reload_pending or (self.spec.name, "reload") in session.notified
        )
        via = f"({manager.name})"
        if not state.running:
            if session.check:
                return StepResult(True, f"would start {self.spec.name} {via}")
            session.must(manager.start_command(self.spec, reload=reload), f"start {self.spec.name}")
            return StepResult(True, f"started {self.spec.name} {via}")
        if restart:
            if session.check:
                return StepResult(True, f"would restart {self.spec.name} {via}")
            session.must(
                manager.restart_command(self.spec, reload=reload), f"restart {self.spec.name}"
            )
            return StepResult(True, f"restarted {self.spec.name} {via}")
        if manager.can_enable and not state.enabled:
            if session.check:
                return StepResult(True, f"would enable {self.spec.name} {via}")
            session.must(manager.enable_command(self.spec), f"enable {self.spec.name}")
            return StepResult(True, f"enabled {self.spec.name} {via}")
        return StepResult(False, f"{self.spec.name} running {via}")

    def _socket_missing(self, session: HostSession) -> bool:
        return not session.run(f"[ -S {shlex.quote(self.socket or '')} ]").ok


@dataclass(frozen=True)
class SocketStep(Step):
    """Wait (bounded) until a unix socket exists: osqueryd's extensions socket."""

    path: str
    timeout: float = 30.0
    poll: float = 0.2

    def describe(self) -> str:
        return f"socket {self.path}"

    def apply(self, session: HostSession) -> StepResult:
        tries = 1 if session.check else max(1, int(self.timeout / self.poll))
        p = shlex.quote(self.path)
        result = session.run(
            f"i=0; while [ $i -lt {tries} ]; do if [ -S {p} ]; then exit 0; fi; "
            f"i=$((i+1)); [ $i -lt {tries} ] && sleep {self.poll}; done; exit 1"
        )
        if result.ok:
            return StepResult(False, "present")
        if session.check:
            return StepResult(False, "absent now (expected once the daemon runs)")
        raise StepFailed(
            session.host.name,
            f"socket {self.path} did not appear within {self.timeout:g}s "
            "(is osqueryd running? see /var/log/osqueryd.log or /var/log/osquery/)",
        )


@dataclass(frozen=True)
class ContainerEngineStep(Step):
    """Bacalhau compute runs the osquery image with Docker: install it, or warn when missing."""

    mode: str
    package: str = "docker.io"

    def describe(self) -> str:
        return f"container engine ({self.mode})"

    def apply(self, session: HostSession) -> StepResult:
        look = session.must(
            "if command -v docker >/dev/null 2>&1; then echo present; else echo absent; fi",
            "look for docker",
        )
        if look.out.strip() == "present":
            return StepResult(False, "docker present")
        if self.mode == "verify":
            return StepResult(
                False,
                "docker missing",
                warning="docker is missing: Bacalhau compute needs it to run the osquery "
                "image (install it, or set bacalhau.container_engine: install)",
            )
        if session.check:
            return StepResult(True, f"would apt-get install {self.package}")
        install = (
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            f"{shlex.quote(self.package)} >/dev/null"
        )
        # A fresh host may have no package lists yet: update once, only when needed.
        session.must(
            f"{install} || {{ apt-get update -q >/dev/null && {install}; }}",
            f"apt-get install {self.package}",
        )
        return StepResult(True, f"installed {self.package}")


@dataclass(frozen=True)
class OrchestratorAliveStep(Step):
    """From the admin machine: the orchestrator answers ``/api/v1/agent/alive`` (bounded wait)."""

    url: str
    timeout: float = 60.0
    poll: float = 0.25

    def describe(self) -> str:
        return f"orchestrator alive at {self.url}"

    def apply(self, session: HostSession) -> StepResult:
        endpoint = f"{self.url}/api/v1/agent/alive"
        env = session.env
        deadline = env.clock() + (0 if session.check else self.timeout)
        last = "no answer"
        with session.http_session_factory() as http:
            while True:
                try:
                    response = http.get(endpoint, timeout=5)
                    if response.ok:
                        return StepResult(False, "answered")
                    last = f"HTTP {response.status_code}"
                except requests.RequestException as exc:
                    last = type(exc).__name__
                if env.clock() >= deadline:
                    break
                env.sleep(self.poll)
        if session.check:
            return StepResult(False, f"not answering now ({last})")
        raise StepFailed(
            session.host.name,
            f"the orchestrator did not answer {endpoint} within {self.timeout:g}s ({last}); "
            "see /var/log/bacalhau.log on the control plane",
        )
