"""Waiting for one Bacalhau job: adaptive polling, bounded request rate, stop on the way out.

Unlike :func:`fleetkit.foundation.polling.wait_until` (a fixed interval
until one condition holds), this waiter changes its pace with what it sees:
fast while executions finish, slow when nothing moves, and it asks for the
job's state now and then because a job can fail as a whole while an
execution never reports back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleetkit.ask.transport import Progress
from fleetkit.clients.bacalhau import BacalhauClient, Execution, OrchestratorError
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.terminal import terminal_safe


@dataclass(frozen=True)
class PollPolicy:
    """How often to ask the orchestrator while waiting.

    Fast at first (small queries finish in well under a second), slower when
    nothing changes, fast again when an execution finishes (others usually
    follow). The interval stays at ``settle`` for ``patience`` seconds after
    the last change, so the last answer is noticed within about ``settle``
    (merged output <= 0.3 s after the last node finished), and only then backs
    off to ``slowest``: a query still running after half a minute can afford a
    second of delay. Whatever the interval says, two requests are never closer
    than ``1 / max_rate`` (plus a margin for network jitter), so the
    orchestrator never sees more than ``max_rate`` requests in any second.
    """

    first: float = 0.05
    factor: float = 1.6
    settle: float = 0.2
    slowest: float = 1.0
    patience: float = 30.0
    max_rate: float = 5.0
    #: Once backed off, also ask for the job state this often: it reveals a job
    #: failed or stopped as a whole while some execution never reported back.
    job_check_every: float = 5.0


class RequestSpacer:
    """Keeps consecutive requests at least ``1 / rate`` seconds apart (5 % margin).

    The gap counts from the previous request's *answer* (:meth:`answered`),
    not from when it was sent: the server handled that request before
    answering, so the next one reaches it at least a gap later however long
    either request spent on the way (on a loaded machine, counting from the
    send let a delayed request and a prompt one arrive closer than the gap:
    six requests in one second).
    """

    def __init__(
        self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.gap = 1.05 / max(rate, 0.1)
        self.clock = clock
        self.sleep = sleep
        self.last: float | None = None

    def acquire(self) -> None:
        if self.last is not None:
            wait = self.last + self.gap - self.clock()
            if wait > 0:
                self.sleep(wait)
        self.last = self.clock()

    def answered(self) -> None:
        """The request sent after :meth:`acquire` has its answer (or failed): the gap starts now."""
        self.last = self.clock()


@dataclass(frozen=True)
class Waited:
    """The executions last seen, and whether the deadline passed first."""

    executions: list[Execution]
    timed_out: bool
    #: The job's state message when it was asked (why a job failed as a whole).
    job_message: str = ""


class JobWaiter:
    """Polls one job until every expected node is done, the job ends, or the deadline.

    On the deadline or Ctrl-C the job is stopped at the orchestrator before
    returning (or re-raising), so no query keeps running unseen.
    """

    def __init__(
        self,
        client: BacalhauClient,
        job_id: str,
        expected: Sequence[str],
        *,
        env: Environment,
        policy: PollPolicy | None = None,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.expected = set(expected)
        self.env = env
        self.policy = policy or PollPolicy()
        self.limiter = RequestSpacer(self.policy.max_rate, env.clock, env.sleep)
        self.progress = Progress(env, len(self.expected))
        self.requests = 0
        self.job_message = ""

    def wait(self, timeout: float) -> Waited:
        try:
            executions, timed_out = self._wait(timeout)
        except KeyboardInterrupt:
            self._stop("interrupted by the user (Ctrl-C) in fleetkit query")
            raise
        except OrchestratorError as exc:
            self._stop("fleetkit lost track of the job")
            raise OrchestratorError(
                f"{exc} (while waiting for job {self.job_id}; it was asked to stop)"
            ) from None
        return Waited(executions, timed_out, self.job_message)

    def _wait(self, timeout: float) -> tuple[list[Execution], bool]:
        clock, policy = self.env.clock, self.policy
        start = clock()
        deadline = start + timeout
        interval = policy.first
        last_change = start
        last_job_check = start
        done_before = -1
        self.env.sleep(interval)
        while True:
            executions = self._executions()
            done = {e.node_id for e in executions if e.is_terminal}
            now = clock()
            if len(done) != done_before:
                if done_before >= 0 or done:
                    interval = policy.first
                done_before = len(done)
                last_change = now
                self.progress.show(len(done & self.expected))
            if self.expected <= done:
                return executions, False
            idle = all(e.is_terminal for e in executions)
            backed_off = now - last_change >= policy.patience
            if idle or (backed_off and now - last_job_check >= policy.job_check_every):
                last_job_check = now
                if self._job_finished():
                    return self._executions(), False
                now = clock()
            if now >= deadline:
                self._stop(f"fleetkit query timed out after {timeout:g}s")
                return self._executions(), True
            cap = policy.slowest if backed_off else policy.settle
            interval = min(interval * policy.factor, cap)
            self.env.sleep(max(0.0, min(interval, deadline - now)))

    def _executions(self) -> list[Execution]:
        self.limiter.acquire()
        self.requests += 1
        try:
            return self.client.executions(self.job_id)
        finally:
            self.limiter.answered()

    def _job_finished(self) -> bool:
        self.limiter.acquire()
        self.requests += 1
        try:
            status = self.client.job(self.job_id)
        finally:
            self.limiter.answered()
        self.job_message = status.message
        return status.is_terminal

    def _stop(self, reason: str) -> None:
        try:
            self.client.stop_job(self.job_id, reason)
        except OrchestratorError as exc:
            self.env.say(terminal_safe(f"warning: could not stop job {self.job_id}: {exc}"))
