"""Hosts for unit tests of steps and the executor: a real shell, or a scripted one.

``LocalRemote`` runs each command with ``sh -c`` on this machine (tests point
it only at their temp dirs; ``extra_path`` puts shims such as a fake
``dpkg-query`` first on PATH). ``ScriptedRemote`` never runs anything: it
answers a probe from canned fact outputs, a batch with exit 0 for every
change (or the canned failure of the first change whose command contains a
needle), and records every command and stdin it was sent.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetkit.clients.ssh import CommandResult
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.hostfacts.changes import StepFailed, StepResult
from fleetkit.hostfacts.executor import HostRun, RunOutcome
from fleetkit.hostfacts.facts import Fact, FactView, Raw
from fleetkit.hostfacts.packages import PackageStore
from fleetkit.hostfacts.steps import PlanContext, Step, StepPlan

HOST = Host("test-host", "127.0.0.1")


def tar_of(results: dict[str, Raw]) -> bytes:
    """The tar stream a probe or batch prints: ``<key>.rc|out|err`` per result."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for key, raw in results.items():
            for suffix, data in (
                ("rc", f"{raw.exit_code}\n".encode()),
                ("out", raw.stdout),
                ("err", raw.stderr),
            ):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class LocalRemote:
    """Runs commands with ``sh -c`` on this machine (only on temp paths)."""

    def __init__(self, extra_path: Path | None = None) -> None:
        self.host = HOST
        self.commands: list[str] = []
        self.env = dict(os.environ)
        if extra_path is not None:
            self.env["PATH"] = f"{extra_path}:{self.env['PATH']}"

    def run(self, command: str, *, stdin: bytes | str | None = None, **_: Any) -> CommandResult:
        self.commands.append(command)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run(
            ["sh", "-c", command], input=data or b"", capture_output=True, env=self.env
        )
        return CommandResult(HOST.name, command, done.returncode, done.stdout, done.stderr)


@dataclass
class ScriptedRemote:
    """Answers probes from ``facts``, batches with success or the failure of ``fail``."""

    facts: dict[Fact[Any], Raw] = field(default_factory=dict)
    #: (needle in a change's command, its result): the first such change fails with it.
    fail: list[tuple[str, Raw]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    stdins: list[bytes | None] = field(default_factory=list)
    #: The change commands of every batch sent, in order.
    batches: list[list[str]] = field(default_factory=list)

    def run(self, command: str, *, stdin: bytes | str | None = None, **_: Any) -> CommandResult:
        self.commands.append(command)
        self.stdins.append(stdin.encode() if isinstance(stdin, str) else stdin)
        words = shlex.split(command)
        script = words[2] if words[:2] == ["sh", "-c"] else command
        lines = [shlex.split(line) for line in script.splitlines() if line.startswith("fk ")]
        if script.startswith("# fleetkit probe"):
            by_command = {fact.command(): raw for fact, raw in self.facts.items()}
            answers = {w[1]: by_command[w[2]] for w in lines if w[2] in by_command}
            return CommandResult(HOST.name, command, 0, tar_of(answers), b"")
        if script.startswith("# fleetkit batch"):
            self.batches.append([w[2] for w in lines])
            answers = {}
            for w in lines:
                failure = next((raw for needle, raw in self.fail if needle in w[2]), None)
                answers[w[1]] = failure or Raw(0)
                if failure is not None and not failure.ok:
                    break
            return CommandResult(HOST.name, command, 0, tar_of(answers), b"")
        return CommandResult(HOST.name, command, 0, b"", b"")  # a readiness look: it holds


def context(
    *,
    check: bool = False,
    store: PackageStore | None = None,
    manager: str = "start-stop-daemon",
) -> PlanContext:
    return PlanContext(
        host=HOST,
        packages=store,
        settings_file="fleetkit.yaml",
        check=check,
        service_manager=manager,
    )


def quiet_env() -> Environment:
    return Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd="/")


def run_steps(
    steps: Sequence[Step],
    remote: Any,
    *,
    check: bool = False,
    store: PackageStore | None = None,
    manager: str = "start-stop-daemon",
) -> tuple[RunOutcome, PlanContext]:
    """The executor on ``steps`` (as provisioning runs a host's plan)."""
    plan_context = context(check=check, store=store, manager=manager)
    run = HostRun(remote, plan_context, quiet_env())
    return run.execute(steps), plan_context


def apply_step(step: Step, remote: Any, **kwargs: Any) -> StepResult:
    """One step through the executor: its result, or StepFailed with the recap's reason."""
    outcome, _ = run_steps([step], remote, **kwargs)
    if outcome.error is not None:
        raise StepFailed(HOST.name, outcome.error)
    [record] = outcome.records
    return record.result


def plan_of(
    step: Step,
    facts: dict[Fact[Any], Any],
    *,
    check: bool = False,
    manager: str = "start-stop-daemon",
    store: PackageStore | None = None,
    notified: set[tuple[str, str]] | None = None,
) -> StepPlan:
    """The step's plan from typed facts (pyinfra-style: no host at all)."""
    plan_context = context(check=check, store=store, manager=manager)
    plan_context.notified |= notified or set()
    return step.plan(FactView(facts), plan_context)
