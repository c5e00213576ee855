"""Software: the pinned osquery .deb, a binary from the Bacalhau tarball, a container engine.

Push mode sends the verified package on the change's stdin; pull mode has
the host download it and check its SHA-256 before anything is installed.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

from fleetkit.hostfacts.changes import Change, Notification, StepPlan, changing, unchanged
from fleetkit.hostfacts.facts import BinaryLook, CommandExists, Fact, FactView, PackageVersion
from fleetkit.hostfacts.packages import (
    VERSION_EXIT,
    PackageRef,
    download_script,
    verify_script,
)
from fleetkit.hostfacts.steps.base import PlanContext, Step
from fleetkit.hostfacts.steps.files import atomic_write_command

#: Where fleetkit records what it installed from a tarball (pull mode's memory).
STATE_DIR = "/var/lib/fleetkit"


@dataclass(frozen=True)
class DebPackageStep(Step):
    """A .deb at a pinned version: nothing to do when dpkg already reports that version."""

    package: str
    version: str
    ref: PackageRef
    transfer_mode: str = "push"
    notify: tuple[Notification, ...] = ()

    def describe(self) -> str:
        return f"package {self.package} {self.version}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (PackageVersion(self.package),)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        installed = facts[PackageVersion(self.package)].version
        if installed == self.version:
            return unchanged(f"{self.package} {self.version} installed")
        was = installed or "not installed"
        stdin: bytes | None = None
        if self.transfer_mode == "push":
            stdin = context.packages_store().artifact(self.ref).payload
        install = Change(
            f"install {self.describe()}",
            self._install_command(context.settings_file),
            stdin=stdin,
            notify=self.notify,
        )
        return changing(
            f"installed {self.package} {self.version} (was: {was})",
            f"would install {self.package} {self.version} (now: {was})",
            install,
        )

    def _install_command(self, settings_file: str) -> str:
        name = shlex.quote(self.package)
        if self.transfer_mode == "push":
            fetch = 'cat > "$f"'
        else:
            fetch = download_script(self.ref.source.source, '"$f"')
        verify = verify_script('"$f"', self.ref, settings_file)
        file = self.ref.source.filename
        wrong = shlex.quote(f"installed {file} but dpkg reports {self.package} ")
        pinned = shlex.quote(f", not the pinned {self.version}")
        return (
            f"d=$(mktemp -d /var/tmp/fleetkit.XXXXXX) || exit 1; "
            f'f="$d"/{shlex.quote(self.ref.source.filename)}; '
            f'( {fetch} && {verify} && dpkg -i "$f" >/dev/null ); rc=$?; rm -rf "$d"; '
            f"[ $rc -eq 0 ] || exit $rc; v=$(dpkg-query -W -f='${{Version}}' {name}); "
            f'[ "$v" = {shlex.quote(self.version)} ] || '
            f'{{ echo {wrong}"${{v:-(none)}}"{pinned} >&2; exit {VERSION_EXIT}; }}'
        )


@dataclass(frozen=True)
class TarballBinaryStep(Step):
    """One executable from a release tarball, left alone when the installed file has its hash.

    Push mode knows the binary's hash (the tarball was opened here). Pull mode
    cannot without downloading, so the host keeps a small record of which
    tarball produced the installed binary (``/var/lib/fleetkit/<name>.source``).
    """

    path: str
    ref: PackageRef
    transfer_mode: str = "push"
    mode: int = 0o755
    notify: tuple[Notification, ...] = ()
    state_dir: str = STATE_DIR

    def describe(self) -> str:
        return f"binary {self.path} ({self.ref.source.filename})"

    @property
    def record(self) -> str:
        return f"{self.state_dir}/{posixpath.basename(self.path)}.source"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (BinaryLook(self.path, self.record),)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        state = facts[BinaryLook(self.path, self.record)]
        if self.transfer_mode == "push":
            wanted = context.packages_store().artifact(self.ref).payload_sha256
            up_to_date = state.sha256 == wanted
        else:
            up_to_date = state.record == (self.ref.source.sha256, state.sha256)
        if up_to_date and state.mode == self.mode:
            return unchanged("up to date")
        p = shlex.quote(self.path)
        if up_to_date:
            chmod = Change(f"chmod {self.path}", f"chmod {self.mode:04o} {p}")
            return changing("fixed mode", "would fix mode", chmod)
        verb, done = ("install", "installed") if state.sha256 is None else ("replace", "replaced")
        if self.transfer_mode == "push":
            payload = context.packages_store().artifact(self.ref).payload
            write = atomic_write_command(self.path, self.mode, "root", "root")
            command, stdin = f"{write} && {self._record_command()}", payload
        else:
            command, stdin = self._pull_command(context.settings_file), None
        change = Change(f"install {self.path}", command, stdin=stdin, notify=self.notify)
        return changing(done, f"would {verb}", change)

    def _record_command(self) -> str:
        p = shlex.quote(self.path)
        return (
            f"mkdir -p {shlex.quote(self.state_dir)} && printf '%s %s\\n' {self.ref.source.sha256} "
            f"\"$(sha256sum {p} | cut -d' ' -f1)\" > {shlex.quote(self.record)}"
        )

    def _pull_command(self, settings_file: str) -> str:
        member = shlex.quote(self.ref.member or posixpath.basename(self.path))
        download = download_script(self.ref.source.source, '"$d/pkg"')
        verify = verify_script('"$d/pkg"', self.ref, settings_file)
        install = atomic_write_command(self.path, self.mode, "root", "root")
        return (
            "d=$(mktemp -d /var/tmp/fleetkit.XXXXXX) || exit 1; "
            f'( {download} && {verify} && mkdir "$d/x" && tar -xzf "$d/pkg" -C "$d/x" && '
            f'[ -f "$d/x/"{member} ] && {{ {install}; }} < "$d/x/"{member} && '
            f'{self._record_command()} ); rc=$?; rm -rf "$d"; exit $rc'
        )


@dataclass(frozen=True)
class ContainerEngineStep(Step):
    """Bacalhau compute runs the osquery image with Docker: install it, or warn when missing."""

    mode: str
    package: str = "docker.io"

    def describe(self) -> str:
        return f"container engine ({self.mode})"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (CommandExists("docker"),)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        if facts[CommandExists("docker")]:
            return unchanged("docker present")
        if self.mode == "verify":
            return unchanged(
                "docker missing",
                warning="docker is missing: Bacalhau compute needs it to run the osquery "
                "image (install it, or set bacalhau.container_engine: install)",
            )
        install = (
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            f"{shlex.quote(self.package)} >/dev/null"
        )
        # A fresh host may have no package lists yet: update once, only when needed.
        change = Change(
            f"apt-get install {self.package}",
            f"{install} || {{ apt-get update -q >/dev/null && {install}; }}",
        )
        return changing(
            f"installed {self.package}", f"would apt-get install {self.package}", change
        )
