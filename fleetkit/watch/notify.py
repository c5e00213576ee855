"""Where events go: a log line, and a signed webhook delivered in the background.

The webhook must never delay the schedule, so :meth:`WebhookSink.publish`
only puts the event on a bounded queue (a full queue drops the event, counts
it and logs it) and one worker thread POSTs, retrying connection errors,
timeouts, 408/429 and 5xx with exponential backoff. Other answers (4xx, a
redirect) are final: sending the same body again would get the same answer.

Each POST carries::

    X-Fleetkit-Timestamp: <unix seconds of this attempt>
    X-Fleetkit-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
    X-Fleetkit-Event-Id: <the event's stable id>

Signing the timestamp with the body lets a receiver refuse replays (a
timestamp older than a few minutes, see :func:`verify_signature`); the id
lets it drop a delivery it has already seen (a retry whose first attempt did
arrive). The secret and the webhook's path (often a token itself) never
appear in a log line: messages show only scheme, host and port, and the
text of HTTP exceptions (which quotes the URL) is never printed.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import requests

from fleetkit import __version__
from fleetkit.foundation.watch_settings import RetryPolicy
from fleetkit.watch.events import Event

SIGNATURE_HEADER = "X-Fleetkit-Signature"
TIMESTAMP_HEADER = "X-Fleetkit-Timestamp"
EVENT_ID_HEADER = "X-Fleetkit-Event-Id"
#: A receiver should refuse a timestamp further than this from its clock (replays).
DEFAULT_TOLERANCE = 300.0
_RETRY_STATUSES = frozenset({408, 429})

Say = Callable[[str], None]


class Sink(Protocol):
    def publish(self, event: Event) -> bool:
        """Hand over one event without blocking; False when it was dropped."""


# --------------------------------------------------------------------------- signing


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """What a receiver checks: the signature over these exact bytes, and a fresh timestamp."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# --------------------------------------------------------------------------- log sink


class LogSink:
    """One terminal-safe line per event on the watch's log (stderr / the journal)."""

    def __init__(self, say: Say) -> None:
        self.say = say

    def publish(self, event: Event) -> bool:
        self.say(event.log_line())
        return True


# --------------------------------------------------------------------------- webhook


class DeliveryFailed(Exception):
    """One attempt failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


#: (url, body, headers, timeout) -> HTTP status; raises DeliveryFailed when no status came.
Post = Callable[[str, bytes, dict[str, str], float], int]


def post_with_requests(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """One POST; the response body is never read (nothing in it is needed)."""
    try:
        with requests.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            return response.status_code
    except requests.Timeout:
        raise DeliveryFailed("timed out", retry=True) from None
    except requests.ConnectionError:
        raise DeliveryFailed("connection failed", retry=True) from None
    except requests.RequestException as exc:  # the message quotes the URL: only the type
        raise DeliveryFailed(f"request failed ({type(exc).__name__})", retry=False) from None


@dataclass(frozen=True)
class Counters:
    """What happened to the events handed to the webhook (the status file shows them)."""

    delivered: int = 0
    #: The queue was full: never sent.
    dropped: int = 0
    #: Refused by the receiver, or still failing after every retry.
    failed: int = 0
    #: Still queued or being retried when the watch stopped.
    abandoned: int = 0
    retries: int = 0
    queued: int = 0


def display_url(url: str) -> str:
    """scheme://host:port only: webhook paths and queries often are secrets themselves."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class WebhookSink:
    """Signed JSON POSTs from a background worker behind a bounded queue."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        say: Say,
        queue_size: int = 1000,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        post: Post = post_with_requests,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("the webhook secret is empty")
        self.url = url
        self.shown = display_url(url)
        self._secret = secret
        self.say = say
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.post = post
        self.wall_clock = wall_clock
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = {name: 0 for name in Counters.__dataclass_fields__ if name != "queued"}
        self._thread: threading.Thread | None = None
        self._delivering: Event | None = None

    def __repr__(self) -> str:  # never the secret, never the path
        return f"WebhookSink({self.shown})"

    # ---- the schedule's side ---------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="fleetkit-webhook", daemon=True)
            self._thread.start()

    def publish(self, event: Event) -> bool:
        """Queue ``event``; never blocks. A full queue drops it (counted, logged)."""
        if self._stop.is_set():
            self._count("abandoned")
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            dropped = self._count("dropped")
            if _worth_logging(dropped):
                self.say(
                    f"watch: webhook {self.shown}: queue full ({self._queue.maxsize}), "
                    f"dropped event {event.id} ({event.kind.value}); {dropped} dropped so far"
                )
            return False
        return True

    def counters(self) -> Counters:
        with self._lock:
            counts = dict(self._counts)
        return Counters(queued=self._queue.qsize(), **counts)

    def close(self, grace: float = 5.0) -> Counters:
        """Stop the worker: what it cannot deliver within ``grace`` seconds is abandoned."""
        deadline = time.monotonic() + grace
        thread = self._thread
        while thread is not None and time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                break
            time.sleep(0.02)
        self._stop.set()
        if thread is not None:
            thread.join(timeout=max(self.timeout, 1.0) + 1.0)
        left = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
        if left:
            self._count("abandoned", left)
        counters = self.counters()
        if counters.abandoned or counters.dropped or counters.failed:
            self.say(
                f"watch: webhook {self.shown}: {counters.delivered} delivered, "
                f"{counters.dropped} dropped (queue full), {counters.failed} failed, "
                f"{counters.abandoned} abandoned at stop"
            )
        return counters

    # ---- the worker ------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._deliver(event)
            finally:
                self._queue.task_done()

    def _deliver(self, event: Event) -> None:
        body = event.body()
        for attempt in range(1, self.retry.attempts + 1):
            try:
                status = self.post(self.url, body, self._headers(event, body), self.timeout)
            except DeliveryFailed as exc:
                reason, retry = str(exc), exc.retry
            else:
                if 200 <= status < 300:
                    self._count("delivered")
                    if attempt > 1:
                        self.say(
                            f"watch: webhook {self.shown}: event {event.id} delivered "
                            f"on attempt {attempt}"
                        )
                    return
                reason = f"HTTP {status}"
                retry = status >= 500 or status in _RETRY_STATUSES
            if not retry or attempt == self.retry.attempts:
                self._count("failed")
                self.say(
                    f"watch: webhook {self.shown}: event {event.id} ({event.kind.value}) "
                    f"not delivered after {attempt} attempt(s): {reason}"
                )
                return
            self._count("retries")
            if self._stop.wait(self.retry.delay(attempt)):
                self._count("abandoned")
                return

    def _headers(self, event: Event, body: bytes) -> dict[str, str]:
        timestamp = str(int(self.wall_clock()))
        return {
            "Content-Type": "application/json",
            "User-Agent": f"fleetkit/{__version__}",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            EVENT_ID_HEADER: event.id,
        }

    def _count(self, name: str, amount: int = 1) -> int:
        with self._lock:
            self._counts[name] += amount
            return self._counts[name]


def _worth_logging(count: int) -> bool:
    """1, 2, 4, 8...: every drop is counted, the log shows a line per doubling."""
    return count & (count - 1) == 0


# --------------------------------------------------------------------------- fan-out


class Notifier:
    """Every event to every sink; what the watch's glue calls after a run."""

    def __init__(self, sinks: Sequence[Sink], webhook: WebhookSink | None = None) -> None:
        self.sinks = list(sinks)
        self.webhook = webhook
        if webhook is not None and webhook not in self.sinks:
            self.sinks.append(webhook)

    def publish(self, events: Iterable[Event]) -> int:
        """Hand each event to each sink without blocking; how many events were handed over."""
        count = 0
        for event in events:
            count += 1
            for sink in self.sinks:
                sink.publish(event)
        return count

    def counters(self) -> Counters:
        return self.webhook.counters() if self.webhook is not None else Counters()

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()

    def close(self, grace: float = 5.0) -> Counters:
        return self.webhook.close(grace) if self.webhook is not None else Counters()
