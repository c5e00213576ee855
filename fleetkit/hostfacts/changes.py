"""Changes: what a step wants done on a host, as data.

A step reads facts and answers with a :class:`StepPlan`: the changes that
would bring the host to the desired state (each a shell command, its stdin,
the diff a person reviews, the services it notifies) and, for readiness
steps, a bounded :class:`RemoteWait` or :class:`HttpWait`. Nothing here runs
anything: :mod:`fleetkit.hostfacts.executor` runs the changes (batched into
few SSH round trips) or, in check mode, only reports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetkit.foundation.status import HostError

#: (service, "restart" | "reload"): a service a change asks to restart, like Ansible's notify.
Notification = tuple[str, str]


class StepFailed(HostError):
    """A step could not bring the host to the desired state."""


@dataclass(frozen=True)
class Change:
    """One command that changes the host."""

    #: What it does, as a failure message names it ("write /etc/osquery/osquery.flags").
    description: str
    command: str
    #: Bytes the command reads on stdin (file content, a package); never on a command line.
    stdin: bytes | None = None
    #: Unified diff (or metadata line) for a person; secrets masked.
    diff: str | None = None
    notify: tuple[Notification, ...] = ()


@dataclass(frozen=True)
class RemoteWait:
    """Wait (bounded) until ``command`` exits 0 on the host: a condition, not a change.

    ``command`` may itself wait a little on the host (a short loop), so one
    round trip usually sees the condition hold; the executor asks again until
    ``timeout`` with :func:`fleetkit.foundation.polling.wait_until`.
    """

    description: str
    command: str
    timeout: float
    interval: float
    #: The error when the condition never held.
    failure: str


@dataclass(frozen=True)
class HttpWait:
    """Wait (bounded) until ``url`` answers 2xx, asked from the admin machine."""

    url: str
    timeout: float
    interval: float
    #: The error when it never answered; ``{last}`` is replaced by the last answer.
    failure: str


Wait = RemoteWait | HttpWait


@dataclass(frozen=True)
class StepPlan:
    """What one step decided from the facts: the changes to make, or that none are needed."""

    #: The result as reported: "up to date", or what the changes did ("created").
    message: str
    changes: tuple[Change, ...] = ()
    #: The result reported in check mode when there are changes ("would create").
    would: str | None = None
    #: A condition to wait for after the changes (and everything before them) ran.
    wait: Wait | None = None
    #: Something the administrator should know although nothing failed.
    warning: str | None = None

    @property
    def notify(self) -> tuple[Notification, ...]:
        return tuple(n for change in self.changes for n in change.notify)

    @property
    def diff(self) -> str | None:
        parts = [c.diff for c in self.changes if c.diff]
        return "".join(parts) if parts else None


def unchanged(message: str, *, warning: str | None = None) -> StepPlan:
    return StepPlan(message, warning=warning)


def changing(done: str, would: str, *changes: Change) -> StepPlan:
    return StepPlan(done, tuple(changes), would=would)


@dataclass(frozen=True)
class StepResult:
    changed: bool
    message: str
    diff: str | None = None
    #: Something the administrator should know although the step succeeded.
    warning: str | None = None


@dataclass(frozen=True)
class StepRecord:
    step: str
    result: StepResult
