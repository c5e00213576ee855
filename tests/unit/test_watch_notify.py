"""Notification sinks against a local HTTP receiver (http.server in a thread).

The receiver verifies every signature itself, as a real one would; the
webhook's retries use tiny backoffs so no test waits long, and every wait is
a bounded poll (a loaded machine only makes it slower, never wrong).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleetkit.foundation.polling import wait_until
from fleetkit.watch.events import Event, EventKind, make_event
from fleetkit.watch.notify import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryFailed,
    LogSink,
    Notifier,
    RetryPolicy,
    WebhookSink,
    display_url,
    sign,
    verify_signature,
)

SECRET = b"s3cr3t-webhook-key-0123456789"
#: The path is a token too (Slack-style webhooks): it must never be logged either.
PATH_TOKEN = "T0K3N-in-the-path"
FAST = RetryPolicy(attempts=4, first_delay=0.05, max_delay=0.2)


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    verified: bool
    at: float


@dataclass
class Receiver:
    """Answers with ``script`` statuses in turn (then 200), recording verified deliveries."""

    url: str
    script: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.verified]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k: v for k, v in self.headers.items()}
            with state.lock:
                state.attempts += 1
                status = state.script.pop(0) if state.script else 200
                if status == 200:
                    verified = verify_signature(
                        SECRET,
                        body,
                        headers.get(TIMESTAMP_HEADER, ""),
                        headers.get(SIGNATURE_HEADER, ""),
                        now=time.time(),
                    )
                    state.deliveries.append(Delivery(body, headers, verified, time.monotonic()))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/{PATH_TOKEN}?key={PATH_TOKEN}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL nobody listens on (the port was just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/{PATH_TOKEN}"


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)


def event(n: int = 1, kind: EventKind = EventKind.POLICY_FAILING) -> Event:
    return make_event(
        kind,
        run_id=f"run-{n}",
        pack="ssh-keys",
        at="2025-01-01T10:00:00.000000Z",
        node_id=f"n{n}",
        hostname=f"web-{n}",
        subject="ssh-keys/encrypted",
    )


def webhook(url: str, log: Log, **options: object) -> WebhookSink:
    settings: dict[str, object] = {"retry": FAST, "timeout": 2.0, **options}
    sink = WebhookSink(url, SECRET, say=log, **settings)
    sink.start()
    return sink


def wait(condition: Callable[[], bool]) -> None:
    """A bounded poll in real time (the webhook's worker is a real thread)."""
    waited = wait_until(
        condition, bool, timeout=30, interval=0.02, clock=time.monotonic, sleep=time.sleep
    )
    assert waited.done, "condition not met in 30 s"


# --------------------------------------------------------------------------- signing


def test_the_signature_covers_timestamp_and_exact_body_and_refuses_replays() -> None:
    body = b'{"id":"x"}'
    signature = sign(SECRET, "1700000000", body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, body, "1700000000", signature, now=1700000100)
    assert not verify_signature(SECRET, body + b" ", "1700000000", signature, now=1700000100)
    assert not verify_signature(SECRET, body, "1700000001", signature, now=1700000100)
    assert not verify_signature(b"other", body, "1700000000", signature, now=1700000100)
    # a captured delivery replayed later than the tolerance
    assert not verify_signature(SECRET, body, "1700000000", signature, now=1700000000 + 301)
    assert not verify_signature(SECRET, body, "-1", signature, now=0)


def test_display_url_shows_neither_path_query_nor_credentials() -> None:
    assert display_url("https://u:p@hooks.example:8443/T/B/XYZ?k=v") == "https://hooks.example:8443"
    assert display_url("http://[fd00::1]/x") == "http://[fd00::1]"


# --------------------------------------------------------------------------- delivery


def test_a_delivery_is_signed_verified_and_carries_the_event(receiver: Receiver) -> None:
    log = Log()
    sink = webhook(receiver.url, log)
    item = event()
    assert sink.publish(item)
    wait(lambda: len(receiver.accepted()) == 1)
    delivery = receiver.accepted()[0]
    assert delivery.body == item.body()
    assert delivery.headers[EVENT_ID_HEADER] == item.id
    assert delivery.headers["Content-Type"] == "application/json"
    counters = sink.close(grace=5)
    assert (counters.delivered, counters.failed, counters.dropped) == (1, 0, 0)


def test_500_then_200_is_delivered_once_late(receiver: Receiver) -> None:
    receiver.script = [500, 503]
    log = Log()
    sink = webhook(receiver.url, log)
    started = time.monotonic()
    sink.publish(event())
    wait(lambda: len(receiver.accepted()) == 1)
    counters = sink.close(grace=5)
    assert receiver.attempts == 3 and len(receiver.accepted()) == 1
    # late: after the two backoffs (0.05 s then 0.1 s)
    assert receiver.accepted()[0].at - started >= 0.15
    assert (counters.delivered, counters.retries, counters.failed) == (1, 2, 0)
    assert "delivered on attempt 3" in log.text()


def test_a_refusal_is_final_and_logged_without_the_secret_or_the_path(receiver: Receiver) -> None:
    receiver.script = [403]
    log = Log()
    sink = webhook(receiver.url, log)
    sink.publish(event())
    wait(lambda: sink.counters().failed == 1)
    sink.close(grace=1)
    assert receiver.attempts == 1
    assert "HTTP 403" in log.text()
    assert SECRET.decode() not in log.text() and PATH_TOKEN not in log.text()


def test_receiver_down_retries_then_counts_the_failure_and_never_leaks() -> None:
    log = Log()
    sink = webhook(closed_port_url(), log)
    for n in range(3):
        sink.publish(event(n))
    wait(lambda: sink.counters().failed == 3)
    counters = sink.close(grace=1)
    assert (counters.delivered, counters.failed, counters.retries) == (0, 3, 9)
    text = log.text()
    assert "connection failed" in text and "http://127.0.0.1:" in text
    assert SECRET.decode() not in text and PATH_TOKEN not in text
    assert PATH_TOKEN not in repr(sink) and SECRET.decode() not in repr(sink)


def test_a_full_queue_drops_counts_and_logs_without_ever_blocking() -> None:
    log = Log()
    release = threading.Event()

    def stuck_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        release.wait(30)
        return 200

    sink = webhook("http://127.0.0.1:9/x", log, queue_size=3, post=stuck_post)
    started = time.monotonic()
    results = [sink.publish(event(n)) for n in range(20)]
    elapsed = time.monotonic() - started
    release.set()
    # one is being posted, three wait in the queue, the rest are dropped
    assert results.count(False) >= 16 and sink.counters().dropped == results.count(False)
    assert elapsed < 5  # never blocked on the stuck receiver (20 publishes, no waiting)
    assert "queue full (3)" in log.text()
    # logged at each doubling, not once per drop
    assert len([line for line in log.lines if "queue full" in line]) <= 5
    wait(lambda: sink.counters().delivered == 20 - sink.counters().dropped)
    sink.close(grace=5)


def test_stopping_abandons_what_cannot_be_delivered_in_the_grace_period() -> None:
    log = Log()

    def failing_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        raise DeliveryFailed("connection failed", retry=True)

    sink = webhook(
        "http://127.0.0.1:9/x",
        log,
        post=failing_post,
        retry=RetryPolicy(attempts=50, first_delay=10, max_delay=10),
    )
    for n in range(4):
        sink.publish(event(n))
    started = time.monotonic()
    counters = sink.close(grace=0.2)
    assert time.monotonic() - started < 10  # the 10 s backoff was cut short
    assert counters.abandoned == 4 and counters.delivered == 0
    assert "4 abandoned at stop" in log.text()
    assert not sink.publish(event(9))


def test_retries_resign_with_a_fresh_timestamp() -> None:
    seen: list[dict[str, str]] = []
    clock = iter([1000.0, 1400.0])

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        seen.append(headers)
        return 502 if len(seen) == 1 else 204

    sink = webhook("http://h/x", Log(), post=post, wall_clock=lambda: next(clock))
    sink.publish(event())
    wait(lambda: sink.counters().delivered == 1)
    sink.close()
    assert [h[TIMESTAMP_HEADER] for h in seen] == ["1000", "1400"]
    body = event().body()
    assert all(verify_signature(SECRET, body, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER],
                                now=float(h[TIMESTAMP_HEADER])) for h in seen)  # fmt: skip


def test_the_log_sink_and_the_fan_out() -> None:
    stream = io.StringIO()
    log_sink = LogSink(lambda line: stream.write(line + "\n"))
    notifier = Notifier([log_sink])
    assert notifier.publish([event(1), event(2)]) == 2
    lines = stream.getvalue().splitlines()
    # Named by inventory name (what --hosts takes), then the machine's own hostname.
    assert lines[0].startswith("watch: policy_failing pack=ssh-keys host=n1 hostname=web-1 ")
    assert notifier.counters().delivered == 0 and notifier.close().abandoned == 0
