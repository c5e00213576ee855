"""Files and directories: exact content, mode and owner; files that must not exist."""

from __future__ import annotations

import difflib
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any

from fleetkit.foundation.secrets import REDACTED, redact
from fleetkit.hostfacts.changes import Change, Notification, StepPlan, changing, unchanged
from fleetkit.hostfacts.facts import (
    DirectoryLook,
    Fact,
    FactView,
    FileLook,
    FileState,
    Metadata,
    PathExists,
)
from fleetkit.hostfacts.steps.base import PlanContext, Step

#: Lines of secret-holding files whose values never appear in a diff, even when
#: the host holds an old value fleetkit never revealed (so ``redact`` cannot know it).
_SECRET_LINE_RE = re.compile(
    r"^(\s*(?:[\w.-]*(?:token|apikey|password|secret|access_key)[\w.-]*)\s*[:=]\s*).+$",
    re.IGNORECASE | re.MULTILINE,
)


def atomic_write_command(path: str, mode: int, owner: str, group: str) -> str:
    """Write stdin to ``path``: temp file in the same directory, chmod, chown, rename."""
    directory = shlex.quote(posixpath.dirname(path) or "/")
    temp = shlex.quote(f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.") + "XXXXXX"
    return (
        f"umask 077; (umask 022; mkdir -p {directory}) && tmp=$(mktemp {temp}) && "
        f'{{ cat > "$tmp" && chmod {mode:04o} "$tmp" && chown {owner}:{group} "$tmp" && '
        f'mv -f "$tmp" {shlex.quote(path)}; }} || {{ rm -f "$tmp"; exit 1; }}'
    )


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


def _content_diff(step: FileStep, state: FileState, host: str) -> str:
    if state.truncated:
        return (
            f"(on host: {step.path} is larger than {len(state.content)} bytes; not shown)\n"
            + unified_diff(step.path, None, step.content, secret=step.secret, host=host)
        )
    old = state.text if state.exists else None
    return unified_diff(step.path, old, step.content, secret=step.secret, host=host)


@dataclass(frozen=True)
class FileStep(Step):
    """A whole file with exact content, mode and owner (rendered from a template)."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    #: (service, kind) notified when the content changes.
    notify: tuple[Notification, ...] = ()
    #: The file holds a secret: diffs mask secret-looking lines.
    secret: bool = False
    #: Only on systemd hosts (unit files); skipped elsewhere.
    systemd_only: bool = False
    template: str = ""

    def describe(self) -> str:
        return f"file {self.path}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        if self.systemd_only and context.service_manager == "start-stop-daemon":
            return ()
        manager = context.manager_looks() if self.systemd_only else ()
        return (*manager, FileLook(self.path))

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        if self.systemd_only and context.manager(facts).name != "systemd":
            return unchanged("skipped: no systemd on this host")
        state = facts[FileLook(self.path)]
        wanted = Metadata(self.mode, self.owner, self.group)
        content_ok = state.exists and not state.truncated and state.content == self.content.encode()
        meta_ok = state.exists and state.meta == wanted
        if content_ok and meta_ok:
            return unchanged("up to date")
        diff = "" if content_ok else _content_diff(self, state, context.host.name)
        if state.exists and not meta_ok:
            diff += f"metadata {self.path}: {state.meta} -> {wanted}\n"
        target = shlex.quote(self.path)
        if content_ok:
            fix = Change(
                f"set mode of {self.path}",
                f"chmod {self.mode:04o} {target} && chown {self.owner}:{self.group} {target}",
                diff=diff,
            )
            return changing("fixed mode", "would fix mode", fix)
        write = Change(
            f"write {self.path}",
            atomic_write_command(self.path, self.mode, self.owner, self.group),
            stdin=self.content.encode(),
            diff=diff,
            notify=self.notify,
        )
        if state.exists:
            return changing("updated", "would update", write)
        return changing("created", "would create", write)


@dataclass(frozen=True)
class AbsentFileStep(Step):
    """A file that must not exist (e.g. S3 credentials once the publisher is off)."""

    path: str
    notify: tuple[Notification, ...] = ()

    def describe(self) -> str:
        return f"no file {self.path}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (PathExists(self.path),)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        if not facts[PathExists(self.path)]:
            return unchanged("absent")
        remove = Change(
            f"remove {self.path}", f"rm -f {shlex.quote(self.path)}", notify=self.notify
        )
        return changing("removed", "would remove", remove)


@dataclass(frozen=True)
class DirectoryStep(Step):
    path: str
    mode: int = 0o755
    owner: str = "root"
    group: str = "root"

    def describe(self) -> str:
        return f"directory {self.path}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (DirectoryLook(self.path),)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        state = facts[DirectoryLook(self.path)]
        if state.meta == Metadata(self.mode, self.owner, self.group):
            return unchanged("up to date")
        p = shlex.quote(self.path)
        create = Change(
            f"create {self.path}",
            f"mkdir -p {p} && chmod {self.mode:04o} {p} && chown {self.owner}:{self.group} {p}",
        )
        wanted = f"{self.mode:o} {self.owner} {self.group}"
        if state.exists:
            return changing(f"fixed mode ({wanted})", "would fix mode", create)
        return changing(f"created ({wanted})", "would create", create)
