"""The lab's latency proxy (``lab/latency.py``), against local echo and HTTP servers.

No lab hosts: one proxy process per module, routes added per test. Delays
are checked as lower bounds (the proxy must never deliver early), plus one
generous upper bound that tells "a burst is delayed once" from "every
segment is delayed".
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
import requests

from lab.hosts import free_ports
from lab.latency import LatencyProxy, ProxyError, parse_delay

DELAY = 0.1
_names = count()


class Echo:
    """A TCP echo server on a thread per connection."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(ConnectionResetError):  # a cut connection ends here
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    def close(self) -> None:
        self.server.close()


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: many requests on one connection

    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LatencyProxy]:
    started = LatencyProxy(tmp_path_factory.mktemp("proxy"), delay=DELAY, detach=False).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    server = Echo()
    try:
        yield server
    finally:
        server.close()


def route(proxy: LatencyProxy, port: int) -> tuple[str, int]:
    """A new route to 127.0.0.1:port; returns (route name, proxy port)."""
    name = f"r{next(_names)}"
    listen = free_ports(1, "127.0.0.1")[0]
    proxy.add(name, ("127.0.0.1", listen), ("127.0.0.1", port), kind="tcp")
    return name, listen


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_an_exchange_costs_two_delays_and_a_new_connection_two_more(
    proxy: LatencyProxy, echo: Echo
) -> None:
    _, port = route(proxy, echo.port)
    started = time.perf_counter()
    with connect(port) as sock:
        sock.sendall(b"a")
        assert receive(sock, 1) == b"a"
        first = time.perf_counter() - started  # handshake (2 delays) + the exchange
        started = time.perf_counter()
        sock.sendall(b"b")
        assert receive(sock, 1) == b"b"
        second = time.perf_counter() - started
    assert first >= 4 * DELAY
    assert second >= 2 * DELAY


def test_a_burst_is_delayed_once_and_arrives_in_order(proxy: LatencyProxy, echo: Echo) -> None:
    _, port = route(proxy, echo.port)
    with connect(port) as sock:
        sock.sendall(b"warm")
        assert receive(sock, 4) == b"warm"
        started = time.perf_counter()
        pieces = [b"%03d" % i for i in range(50)]
        for piece in pieces:  # 50 separate segments
            sock.sendall(piece)
            time.sleep(0.001)
        assert receive(sock, 150) == b"".join(pieces)
        elapsed = time.perf_counter() - started
    assert elapsed >= 2 * DELAY
    assert elapsed < 25 * DELAY  # once per segment would be >= 100 delays


def test_bulk_data_passes_intact_in_both_directions(proxy: LatencyProxy, echo: Echo) -> None:
    _, port = route(proxy, echo.port)
    blob = bytes(range(256)) * (48 << 10)  # 12 MiB: beyond every buffer, so flow control works
    with connect(port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(blob,))
        sender.start()
        echoed = receive(sock, len(blob))
        sender.join()
    assert echoed == blob


def test_http_requests_are_counted_as_round_trips_on_one_connection(
    proxy: LatencyProxy,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        name, port = route(proxy, server.server_address[1])
        with requests.Session() as session:
            for _ in range(5):
                assert session.get(f"http://127.0.0.1:{port}/", timeout=10).text == "hello"
        counters = proxy.stats()[name]
        assert (counters["connections"], counters["round_trips"]) == (1, 5)
        assert counters["bytes_up"] > 0 and counters["bytes_down"] > 0
    finally:
        server.shutdown()
        server.server_close()


def test_freeze_holds_both_directions_without_closing(proxy: LatencyProxy, echo: Echo) -> None:
    name, port = route(proxy, echo.port)
    with connect(port) as held:
        held.sendall(b"1")
        assert receive(held, 1) == b"1"
        proxy.freeze(name)
        assert proxy.stats()[name]["frozen"] is True
        held.sendall(b"2")
        late = connect(port)  # accepted, but nothing reaches the upstream
        late.sendall(b"3")
        for sock in (held, late):
            sock.settimeout(4 * DELAY)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        proxy.thaw(name)
        for sock, expected in ((held, b"2"), (late, b"3")):
            sock.settimeout(10)
            assert receive(sock, 1) == expected  # held, not lost, not closed
        late.close()
    assert proxy.stats()[name]["connections"] == 2


def test_cut_resets_every_open_connection(proxy: LatencyProxy, echo: Echo) -> None:
    name, port = route(proxy, echo.port)
    with connect(port) as sock:
        sock.sendall(b"1")
        assert receive(sock, 1) == b"1"
        assert proxy.cut(name) == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    with connect(port) as again:  # the route itself stays: a rebooted host answers again
        again.sendall(b"2")
        assert receive(again, 1) == b"2"


def test_a_dead_upstream_ends_the_client_connection(proxy: LatencyProxy) -> None:
    dead = free_ports(1, "127.0.0.1")[0]  # nothing listens there
    _, port = route(proxy, dead)
    with connect(port) as sock:
        assert sock.recv(1) == b""  # closed, not hanging


def test_delay_can_change_while_running(proxy: LatencyProxy, echo: Echo) -> None:
    _, port = route(proxy, echo.port)
    proxy.set_delay(0)
    try:
        with connect(port) as sock:
            sock.sendall(b"x")
            assert receive(sock, 1) == b"x"
        assert proxy.call("stats")["delay"] == 0
    finally:
        proxy.set_delay(DELAY)


def test_control_errors_name_the_problem(proxy: LatencyProxy) -> None:
    with pytest.raises(ProxyError, match="no route 'missing'"):
        proxy.freeze("missing")
    name, port = route(proxy, 9)
    with pytest.raises(ProxyError, match="exists already"):
        proxy.add(name, ("127.0.0.1", port), ("127.0.0.1", 9), kind="tcp")


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    started = LatencyProxy(tmp_path / "p", delay=0, detach=False).start()
    pid = started.pid
    assert started.is_running()
    started.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert not started.control_path.exists()


@pytest.mark.parametrize(
    ("text", "seconds"), [("40ms", 0.04), ("0.04s", 0.04), ("0.04", 0.04), ("0", 0.0)]
)
def test_parse_delay(text: str, seconds: float) -> None:
    assert parse_delay(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fast", "-1ms", "20s"])
def test_parse_delay_refuses_nonsense(text: str) -> None:
    with pytest.raises(ProxyError, match="latency"):
        parse_delay(text)
