"""The one executor: read a host's facts in one probe, then run its plan's changes.

Round trips are what latency multiplies, so a host's run is shaped by them:

1. one probe reads every fact every step needs (a rerun that changes
   nothing stops here: one round trip);
2. each step plans from those facts (pure); the changes of consecutive steps
   go into one batch, sent as one SSH command with their inputs on stdin;
3. a step that waits on the host for something its changes cause (osqueryd's
   socket) waits inside the batch: its look, which itself waits a little on
   the host, runs after the changes before it and before the changes after
   it, so a first run is usually the probe and one batch. Only when the
   condition does not hold within that look does the batch stop there: the
   executor keeps asking (:func:`fleetkit.foundation.polling.wait_until`) and
   sends the rest as a new batch. A wait asked from the admin machine (the
   orchestrator answering) closes the batch: the batch runs, then the wait.

Every step keeps its own result and diff; the first change that fails stops
the batch and names its step. In check mode only the probe runs (and a single
look for waits asked from the admin machine): the plan is reported, the host
is not touched. :attr:`HostRun.round_trips` counts the SSH commands sent.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from fleetkit.clients.ssh import CommandResult
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.polling import wait_until
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import FleetkitError
from fleetkit.hostfacts.changes import (
    Change,
    HttpWait,
    RemoteWait,
    StepFailed,
    StepPlan,
    StepRecord,
    StepResult,
)
from fleetkit.hostfacts.facts import Fact, FactView, Raw, unique
from fleetkit.hostfacts.packages import SELF_EXPLAINED_EXITS
from fleetkit.hostfacts.probe import build_batch, build_probe, shell_command
from fleetkit.hostfacts.services import RUN_DIR, marker_path
from fleetkit.hostfacts.steps.base import PlanContext, Step

#: Seconds the probe may take on one host.
PROBE_TIMEOUT = 120.0
#: Longest batch script: a command line must stay well under Linux's 128 KiB per argument.
SCRIPT_LIMIT = 64 * 1024
#: What a failed look at the host is reported as (the step column of the recap).
LOOK_STEP = "look at the host"


class Commands(Protocol):
    """What the executor needs of an SSH session (:class:`fleetkit.clients.ssh.Remote`)."""

    def run(
        self, command: str, *, stdin: bytes | str | None = None, timeout: float | None = None
    ) -> CommandResult: ...


@dataclass
class RunOutcome:
    """One host's run: a result per step that finished, and what stopped it."""

    records: list[StepRecord] = field(default_factory=list)
    failed_step: str | None = None
    error: str | None = None
    round_trips: int = 0


def failure_text(raw: Raw, what: str) -> str:
    """``what failed (exit N): <last lines>``; or the host's own sentence for known exits."""
    detail = (raw.error_text or raw.text).strip().splitlines()
    if raw.exit_code in SELF_EXPLAINED_EXITS and detail:
        return redact(detail[-1])
    last = " | ".join(detail[-3:]) if detail else "no output"
    return redact(f"{what} failed (exit {raw.exit_code}): {last}")


def with_markers(change: Change) -> str:
    """The change's command, then its pending-restart markers (only if it succeeded)."""
    if not change.notify:
        return change.command
    paths = " ".join(shlex.quote(marker_path(name, kind)) for name, kind in change.notify)
    return f"( {change.command} ) && mkdir -p {RUN_DIR} && touch {paths}"


@dataclass
class _Pending:
    step: Step
    plan: StepPlan


@dataclass(frozen=True)
class _Entry:
    """One command of a batch: a change of the step at ``at``, or its on-host wait."""

    at: int
    command: Change
    wait: RemoteWait | None = None


def _entries(at: int, item: _Pending) -> list[_Entry]:
    commands = [_Entry(at, change) for change in item.plan.changes]
    wait = item.plan.wait
    if isinstance(wait, RemoteWait):
        commands.append(_Entry(at, Change(wait.description, wait.command), wait))
    return commands


@dataclass
class HostRun:
    """Runs one host's steps; counts the SSH round trips it takes."""

    remote: Commands
    context: PlanContext
    env: Environment
    http_session_factory: Callable[[], requests.Session] = requests.Session
    round_trips: int = 0

    def send(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        self.round_trips += 1
        return self.remote.run(command, stdin=stdin, timeout=timeout)

    def read_facts(self, facts: Sequence[Fact[Any]]) -> FactView:
        """Every fact in one probe (no round trip when there is none to read)."""
        wanted = unique(facts)
        if not wanted:
            return FactView()
        probe = build_probe(wanted)
        result = self.send(shell_command(probe.script), timeout=PROBE_TIMEOUT)
        found = probe.results(result.stdout)
        if len(found) < len(wanted):
            said = Raw(result.exit_code, b"", result.stderr).said()
            raise StepFailed(
                self.context.host.name,
                redact(f"the probe read {len(found)} of {len(wanted)} facts ({said})"),
            )
        return FactView.parsed(found)

    def execute(
        self, steps: Sequence[Step], *, gate: Callable[[], str | None] | None = None
    ) -> RunOutcome:
        """Probe, plan, change. ``gate``: asked once the facts are read and before any
        change (it may block): a reason not to touch the host, or None to go on."""
        outcome = RunOutcome()
        try:
            facts = self.read_facts([f for step in steps for f in step.looks(self.context)])
        except FleetkitError as exc:
            return self._stopped(outcome, LOOK_STEP, exc)
        if gate is not None and (reason := gate()) is not None:
            outcome.error = reason
            return self._done(outcome)
        pending: list[_Pending] = []
        for step in steps:
            try:
                plan = step.plan(facts, self.context)
            except FleetkitError as exc:
                if self._flush(pending, outcome):
                    self._stopped(outcome, step.describe(), exc)
                return self._done(outcome)
            except Exception as exc:  # a bug must not hide the other hosts' results
                if self._flush(pending, outcome):
                    self._stopped(outcome, step.describe(), exc, internal=True)
                return self._done(outcome)
            self.context.note(plan)
            if self.context.check:
                outcome.records.append(StepRecord(step.describe(), self._check_result(plan)))
                continue
            pending.append(_Pending(step, plan))
            if isinstance(plan.wait, HttpWait) and not self._flush(pending, outcome):
                return self._done(outcome)
        self._flush(pending, outcome)
        return self._done(outcome)

    # -- running ---------------------------------------------------------------------------

    def _flush(self, pending: list[_Pending], outcome: RunOutcome) -> bool:
        """Run the pending steps' changes and on-host waits (one batch); record the steps.

        False when a step failed (recorded in ``outcome``): the run stops there.
        """
        items, pending[:] = list(pending), []
        while items:
            entries = [entry for at, item in enumerate(items) for entry in _entries(at, item)]
            ran, batch_error = self._run_changes([entry.command for entry in entries])
            resume = len(items)  # where the next batch starts (none: everything ran)
            for index, entry in enumerate(entries):
                if index >= len(ran):
                    why = batch_error or f"{entry.command.description}: not run"
                    return self._failed(outcome, items[: entry.at], items[entry.at], why)
                if ran[index].ok:
                    continue
                if entry.wait is None:
                    why = failure_text(ran[index], entry.command.description)
                    return self._failed(outcome, items[: entry.at], items[entry.at], why)
                # Not there within the look: keep asking, then the rest in a new batch.
                problem = self._wait(entry.wait)
                if problem is not None:
                    return self._failed(outcome, items[: entry.at], items[entry.at], problem)
                resume = entry.at + 1
                break
            if not self._record(outcome, items[:resume]):
                return False
            items = items[resume:]
        return True

    def _record(self, outcome: RunOutcome, items: list[_Pending]) -> bool:
        """Record finished steps; a wait from the admin machine (only ever last) runs first."""
        for item in items:
            if isinstance(item.plan.wait, HttpWait):
                problem = self._wait(item.plan.wait)
                if problem is not None:
                    outcome.failed_step, outcome.error = item.step.describe(), problem
                    return False
            outcome.records.append(StepRecord(item.step.describe(), self._result(item.plan)))
        return True

    def _failed(
        self, outcome: RunOutcome, before: list[_Pending], failing: _Pending, error: str
    ) -> bool:
        """The steps ``before`` are recorded as done; ``failing`` stops the run."""
        self._record(outcome, before)
        outcome.failed_step, outcome.error = failing.step.describe(), error
        return False

    def _run_changes(self, changes: list[Change]) -> tuple[list[Raw], str | None]:
        """Results of the changes that ran, in order; and why the rest did not, if not a change."""
        done: list[Raw] = []
        for chunk in _chunks(changes):
            batch = build_batch([Change(c.description, with_markers(c), c.stdin) for c in chunk])
            try:
                result = self.send(shell_command(batch.script), stdin=batch.stdin)
            except FleetkitError as exc:
                return done, _detail(exc)
            ran = batch.results(result.stdout)
            done += ran
            if len(ran) < len(chunk) and not (ran and not ran[-1].ok):
                raw = Raw(result.exit_code, result.stdout[:0], result.stderr)
                return done, failure_text(raw, "the batch of changes")
            if ran and not ran[-1].ok:
                break
        return done, None

    def _wait(self, wait: HttpWait | RemoteWait) -> str | None:
        """None once the condition holds; the failure message when it never did."""
        if isinstance(wait, RemoteWait):
            waited = wait_until(
                lambda: self.send(wait.command).ok,
                bool,
                timeout=wait.timeout,
                interval=wait.interval,
                clock=self.env.clock,
                sleep=self.env.sleep,
            )
            return None if waited.done else wait.failure
        answered, last = self._ask_http(wait, timeout=wait.timeout)
        return None if answered else wait.failure.replace("{last}", last)

    def _ask_http(self, wait: HttpWait, *, timeout: float) -> tuple[bool, str]:
        def ask() -> tuple[bool, str]:
            try:
                response = http.get(wait.url, timeout=5)
            except requests.RequestException as exc:
                return False, type(exc).__name__
            return response.ok, "OK" if response.ok else f"HTTP {response.status_code}"

        with self.http_session_factory() as http:
            waited = wait_until(
                ask,
                lambda answer: answer[0],
                timeout=timeout,
                interval=wait.interval,
                clock=self.env.clock,
                sleep=self.env.sleep,
            )
        return waited.value

    # -- results ---------------------------------------------------------------------------

    @staticmethod
    def _result(plan: StepPlan) -> StepResult:
        return StepResult(bool(plan.changes), plan.message, plan.diff, plan.warning)

    def _check_result(self, plan: StepPlan) -> StepResult:
        if plan.changes:
            return StepResult(True, plan.would or plan.message, plan.diff, plan.warning)
        if isinstance(plan.wait, HttpWait):
            answered, last = self._ask_http(plan.wait, timeout=0)
            message = plan.message if answered else f"not answering now ({last})"
            return StepResult(False, message, warning=plan.warning)
        return StepResult(False, plan.message, warning=plan.warning)

    def _stopped(
        self, outcome: RunOutcome, step: str, exc: BaseException, *, internal: bool = False
    ) -> RunOutcome:
        outcome.failed_step = step
        outcome.error = f"internal error: {type(exc).__name__}: {exc}" if internal else _detail(exc)
        return self._done(outcome)

    def _done(self, outcome: RunOutcome) -> RunOutcome:
        outcome.round_trips = self.round_trips
        return outcome


def _detail(exc: BaseException) -> str:
    return redact(str(getattr(exc, "detail", None) or exc))


def _chunks(changes: list[Change]) -> list[list[Change]]:
    """Consecutive changes whose batch script stays under SCRIPT_LIMIT (usually one chunk)."""
    chunks: list[list[Change]] = []
    size = SCRIPT_LIMIT
    for change in changes:
        length = len(with_markers(change)) + 64
        if size + length > SCRIPT_LIMIT and (not chunks or chunks[-1]):
            chunks.append([])
            size = 0
        chunks[-1].append(change)
        size += length
    return chunks
