"""One bounded wait: ask until an answer is final or the deadline passes.

Used wherever fleetkit waits for something outside its control (an
orchestrator answering after a restart, a node joining, a socket appearing,
a second SSH connection during quarantine). The clock and sleep come from
the injected :class:`~fleetkit.foundation.environment.Environment`, so tests
wait no real time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Waited(Generic[T]):
    """The last answer, whether it was final, and how many times it was asked."""

    value: T
    done: bool
    attempts: int


def wait_until(
    ask: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Waited[T]:
    """Call ``ask`` until ``done(answer)`` or ``timeout`` seconds have passed.

    Always asks at least once (``timeout=0`` is a single look, as check mode
    wants); never sleeps past the deadline. Exceptions from ``ask`` propagate:
    a caller that wants to retry through errors returns them as values.
    """
    deadline = clock() + max(0.0, timeout)
    attempts = 0
    while True:
        value = ask()
        attempts += 1
        if done(value):
            return Waited(value, True, attempts)
        left = deadline - clock()
        if left <= 0:
            return Waited(value, False, attempts)
        sleep(min(interval, left))
