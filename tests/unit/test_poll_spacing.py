"""The job poller's promise to the orchestrator: never more than 5 requests in any second.

A scripted orchestrator on a fake clock: each request reaches the server
after a delay that varies from one request to the next (a loaded machine or
network), and answers a little later. Whatever those delays, the times at
which the server handles the poller's requests never hold six in a second.
"""

from __future__ import annotations

import io
from typing import Any

from fleetkit.ask.poll import JobWaiter, PollPolicy
from fleetkit.clients.bacalhau import Execution
from fleetkit.foundation.environment import Environment
from tests.unit.test_foundation_seams import FakeClock

JOB = "j-spacing"


class JitteryOrchestrator:
    """Requests arrive after ``delays[i % len(delays)]``; nodes finish at ``finish_at``."""

    def __init__(self, clock: FakeClock, finish_at: dict[str, float], delays: list[float]) -> None:
        self.clock = clock
        self.finish_at = finish_at
        self.delays = delays
        self.handled: list[float] = []

    def _handle(self) -> float:
        delay = self.delays[len(self.handled) % len(self.delays)]
        self.clock.now += delay
        handled = self.clock.now
        self.handled.append(handled)
        self.clock.now += 0.005  # the answer on its way back
        return handled

    def executions(self, job_id: str) -> list[Execution]:
        now = self._handle()
        return [
            Execution.from_json(
                {
                    "ID": f"e-{node}",
                    "NodeID": node,
                    "JobID": job_id,
                    "ComputeState": {"StateType": 9 if now >= at else 6},
                    "DesiredState": {"StateType": 2 if now >= at else 1},
                }
            )
            for node, at in self.finish_at.items()
        ]

    def job(self, job_id: str) -> Any:
        raise AssertionError("not asked while executions are still arriving")

    def stop_job(self, job_id: str, reason: str) -> None:
        raise AssertionError(f"the job was stopped: {reason}")


def busiest_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_uneven_request_delays_never_put_six_requests_in_one_second() -> None:
    clock = FakeClock()
    # A node finishes every 0.3 s: the poller keeps returning to its fast pace,
    # where only the spacing between requests holds the rate down.
    finish_at = {f"node-{i}": 0.3 * i for i in range(1, 16)}
    # Every other request is held up on its way to the server.
    orchestrator = JitteryOrchestrator(clock, finish_at, delays=[0.09, 0.0])
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), clock=clock, sleep=clock.sleep)
    client: Any = orchestrator
    waiter = JobWaiter(client, JOB, list(finish_at), env=env, policy=PollPolicy())
    waited = waiter.wait(timeout=60)
    assert not waited.timed_out
    assert {e.node_id for e in waited.executions if e.is_terminal} == set(finish_at)
    assert len(orchestrator.handled) >= 15
    assert busiest_second(orchestrator.handled) <= 5
