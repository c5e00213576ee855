"""The deadline watchdog behind every bounded request: one thread, every budget on time.

A budget's connections are stood in for by socket pairs: when the watchdog
shuts a budget's socket, a read on it returns at once (what ends a trickled
answer in a real request). Deadlines are short and waits generous, so a
loaded machine makes these tests slower, never wrong.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fleetkit.clients.http.budget import Budget

GENEROUS = 20.0


class FakeConnection:
    """What the watchdog touches of a urllib3 connection: its socket."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()

    def shut_down(self) -> bool:
        """True once the watchdog has shut the socket (a read returns EOF at once)."""
        self.sock.settimeout(0.0)
        try:
            return self.sock.recv(1) == b""
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


@pytest.fixture
def connections() -> Iterator[list[FakeConnection]]:
    made: list[FakeConnection] = []
    yield made
    for connection in made:
        connection.close()


def watched(budget: Budget, connections: list[FakeConnection]) -> FakeConnection:
    connection = FakeConnection()
    connections.append(connection)
    conn: Any = connection
    budget.watch(conn)
    return connection


def blocked_read_ends(connection: FakeConnection) -> float:
    """Seconds a blocking read on the connection waited before the watchdog ended it."""
    started = time.monotonic()
    connection.sock.settimeout(GENEROUS)
    assert connection.sock.recv(1) == b""
    return time.monotonic() - started


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fleetkit-http-deadlines"]


def test_a_budget_past_its_deadline_shuts_its_connection(
    connections: list[FakeConnection],
) -> None:
    with Budget(0.2, retry=True, sleep=time.sleep) as budget:
        connection = watched(budget, connections)
        blocked_read_ends(connection)
        assert budget.expired
    assert budget.attempts == 1


def test_a_shorter_deadline_started_later_still_fires_first(
    connections: list[FakeConnection],
) -> None:
    slow = Budget(GENEROUS * 3, retry=True, sleep=time.sleep)
    with slow:
        slow_connection = watched(slow, connections)
        done = threading.Event()

        def quick_request() -> None:
            with Budget(0.2, retry=True, sleep=time.sleep) as quick:
                blocked_read_ends(watched(quick, connections))
                assert quick.expired
            done.set()

        worker = threading.Thread(target=quick_request)
        worker.start()
        worker.join(GENEROUS * 2)
        assert done.is_set()  # not held back until the slow budget's deadline
        assert not slow.expired
        assert not slow_connection.shut_down()


def test_a_finished_request_is_never_cut_later(connections: list[FakeConnection]) -> None:
    with Budget(0.2, retry=True, sleep=time.sleep) as finished:
        connection = watched(finished, connections)
    # A later budget with a later deadline: once it has fired, the finished one's time passed too.
    with Budget(0.4, retry=True, sleep=time.sleep) as later:
        blocked_read_ends(watched(later, connections))
    assert not finished.expired
    assert not connection.shut_down()


def test_many_requests_share_one_watchdog_thread(connections: list[FakeConnection]) -> None:
    def request() -> None:
        for _ in range(20):
            with Budget(60.0, retry=True, sleep=time.sleep) as budget:
                watched(budget, connections)

    workers = [threading.Thread(target=request) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(GENEROUS)
    assert len(watchdog_threads()) == 1
    assert not any(c.shut_down() for c in connections)
