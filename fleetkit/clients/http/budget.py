"""The watchdog behind every bounded request, and urllib3's Retry held to it.

requests' ``timeout`` bounds one socket read; nothing in requests or urllib3
bounds a whole request. A :class:`Budget` does: it is bound to the calling
thread for the duration of one request, every connection the request uses
reports to it (a connection subclass installed through the adapter's pool
classes), and the watchdog shuts those sockets down when the deadline passes.

One watchdog thread serves every budget in the process (a heap of deadlines),
not a timer thread per request: measured on the S3 reader (bench_s3_collect),
starting and cancelling a ``threading.Timer`` per object cost a thread
hand-off each way, and on a loaded two-core machine those hand-offs (each
waiting for the scheduler and the GIL) made 16 download threads slower than
one boto3 client fetching one object after another.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests.adapters
import urllib3.exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

#: Statuses worth a second try on a read.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Methods that may be sent again: repeating them changes nothing.
RETRYABLE_METHODS = frozenset({"GET", "HEAD"})


class Budget:
    """One request's deadline: counts attempts and shuts its sockets when time is up."""

    def __init__(self, seconds: float, *, retry: bool, sleep: Callable[[float], None]) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.retry = retry
        self.sleep = sleep
        self.attempts = 0
        self.expired = False
        self.done = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []

    def __enter__(self) -> Budget:
        _local.budget = self
        self.ends = time.monotonic() + self.seconds
        _watchdog.watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.done = True
        _local.budget = None

    def remaining(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def watch(self, connection: HTTPConnection) -> None:
        """Called as each attempt starts."""
        with self._lock:
            self.attempts += 1
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _shut(connection)

    def connected(self, connection: HTTPConnection) -> None:
        """A socket now exists: the watchdog may have fired while it was being opened."""
        if self.expired:
            _shut(connection)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


class _Watchdog:
    """One daemon thread that expires every budget of the process when its time is up.

    Budgets wait in a heap by deadline; the thread sleeps until the earliest
    one and is woken only when a new budget ends before that (requests of one
    client all have the same deadline, so a steady stream of them never wakes
    it). A finished budget stays in the heap until it reaches the top (then it
    is dropped unseen), so the heap holds at most the budgets started within
    one deadline.
    """

    def __init__(self) -> None:
        self._wakeup = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Budget]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        #: The deadline the thread is waiting for (-inf while it is not waiting).
        self._sleeping_until = -math.inf

    def watch(self, budget: Budget) -> None:
        with self._wakeup:
            heap = self._heap
            while heap and heap[0][2].done:
                heapq.heappop(heap)
            heapq.heappush(heap, (budget.ends, next(self._order), budget))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="fleetkit-http-deadlines", daemon=True
                )
                self._thread.start()
            elif budget.ends < self._sleeping_until:
                self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                due = self._next_due()
            due.expire()  # outside the heap's lock: it takes the budget's own

    def _next_due(self) -> Budget:
        """Wait (lock held) until the earliest unfinished budget's deadline; pop it."""
        heap = self._heap
        while True:
            while heap and heap[0][2].done:
                heapq.heappop(heap)
            until = heap[0][0] if heap else math.inf
            if until <= time.monotonic():
                return heapq.heappop(heap)[2]
            self._sleeping_until = until
            self._wakeup.wait(None if until == math.inf else until - time.monotonic())
            self._sleeping_until = -math.inf


_watchdog = _Watchdog()


def _fresh_watchdog_after_fork() -> None:
    """A forked child has no watchdog thread, and the heap's lock may be held."""
    global _watchdog
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_watchdog_after_fork)


_local = threading.local()


def _current() -> Budget | None:
    budget = getattr(_local, "budget", None)
    return budget if isinstance(budget, Budget) else None


def _shut(connection: HTTPConnection) -> None:
    """End every read and write on the connection's socket, from any thread.

    The plain ``socket.shutdown`` (not ``SSLSocket.shutdown``, which tears
    down TLS state another thread may be using) makes a blocked ``recv``
    return at once.
    """
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    """Connection mixin: each request registers with the calling thread's budget."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        budget = _current()
        if budget is not None:
            budget.watch(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        budget = _current()
        if budget is not None:
            budget.connected(self)  # type: ignore[arg-type]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class RetryWithin(Retry):
    """urllib3's Retry, bounded by the calling request's budget.

    Differences: only idempotent methods are ever sent again (urllib3 would
    retry a refused connection for any method); a read timeout is final; no
    retry starts when its backoff would pass the deadline; backoff is
    ``backoff_factor * 2**(n-1)`` from the first retry on and slept through
    the budget's injected ``sleep``; a response that is retried is closed
    instead of drained (draining reads a hostile body of any size).
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> RetryWithin:
        budget = _current()
        final = (
            budget is None
            or not budget.retry
            or budget.expired
            or isinstance(error, urllib3.exceptions.ReadTimeoutError)
            or (method or "").upper() not in RETRYABLE_METHODS
        )
        if not final:
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            assert budget is not None
            if budget.remaining() > retry.get_backoff_time():
                if response is not None:
                    response.close()
                return retry
        reason = error or urllib3.exceptions.ResponseError("not retried")
        raise urllib3.exceptions.MaxRetryError(_pool, url, reason)

    def get_backoff_time(self) -> float:
        tries = len(self.history)
        if tries < 1:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2 ** (tries - 1)))

    def sleep(self, response: Any = None) -> None:
        budget = _current()
        wait = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            # A malformed Retry-After header: the usual backoff.
            with contextlib.suppress(urllib3.exceptions.InvalidHeader):
                wait = max(wait, self.get_retry_after(response) or 0.0)
        if budget is None:
            return
        wait = min(wait, budget.remaining())
        if wait > 0:
            budget.sleep(wait)


class Adapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections report to the request's budget."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager
