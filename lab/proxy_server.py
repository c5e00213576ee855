"""The latency proxy process: every route of one lab on one asyncio event loop.

What it does and counts is described in :mod:`lab.latency` (whose
:class:`~lab.latency.LatencyProxy` starts this process and talks to it over
its control socket). Run as ``python -m lab.proxy_server serve --control SOCK
--delay 40ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
import signal
import socket
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.latency import ProxyError, parse_delay

#: Bytes held in one direction's delay queue before its source stops being read.
_QUEUE_HIGH = 4 << 20
_QUEUE_LOW = 1 << 20


@dataclass
class Counters:
    connections: int = 0
    round_trips: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client
    open: int = 0


@dataclass
class Route:
    name: str
    listen: tuple[str, int]
    upstream: tuple[str, int]
    kind: str = "tcp"
    frozen: bool = False
    counters: Counters = field(default_factory=Counters)
    pipes: set[Pipe] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None


class Relay:
    """One direction of one connection: ordered delivery ``delay`` after each read."""

    def __init__(self, pipe: Pipe, towards_server: bool) -> None:
        self.pipe = pipe
        self.towards_server = towards_server
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.source_paused = False  # paused by us for backpressure
        self.done = False  # EOF delivered

    @property
    def source(self) -> asyncio.Transport | None:
        return self.pipe.client if self.towards_server else self.pipe.upstream

    @property
    def sink(self) -> asyncio.Transport | None:
        return self.pipe.upstream if self.towards_server else self.pipe.client

    def push(self, data: bytes | None) -> None:
        """Queue ``data`` (None = EOF) for delivery ``delay`` from now."""
        loop = self.pipe.proxy.loop
        self.queue.append((loop.time() + self.pipe.proxy.delay, data))
        if data:
            self.queued += len(data)
            if self.queued > _QUEUE_HIGH:
                self._pause_source()
        self.flush()

    def flush(self) -> None:
        """Deliver every chunk whose time has come; re-arm the timer for the next one."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        sink = self.sink
        if sink is None or self.pipe.route.frozen:
            return  # not connected yet, or frozen: keep holding
        loop = self.pipe.proxy.loop
        now = loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                self.done = True
                if sink.can_write_eof():
                    sink.write_eof()
                self.pipe.maybe_close()
                continue
            self.queued -= len(data)
            if not sink.is_closing():
                sink.write(data)
        if self.queue:
            self.timer = loop.call_at(self.queue[0][0], self.flush)
        if self.queued < _QUEUE_LOW and not self.pipe.sink_full(self):
            self._resume_source()

    def _pause_source(self) -> None:
        source = self.source
        if source is not None and not self.source_paused:
            self.source_paused = True
            source.pause_reading()

    def _resume_source(self) -> None:
        source = self.source
        if source is not None and self.source_paused and not self.pipe.route.frozen:
            self.source_paused = False
            source.resume_reading()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0


class Pipe:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: Proxy, route: Route, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.route = route
        self.client: asyncio.Transport | None = client
        self.upstream: asyncio.Transport | None = None
        self.up = Relay(self, towards_server=True)
        self.down = Relay(self, towards_server=False)
        self.client_waiting = False  # the client sent; the next server burst answers it
        self.full: set[bool] = set()  # sinks whose write buffer is full (True = upstream)
        self.closed = False
        self.connector: asyncio.Task[None] | None = None

    # -- data ------------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self.route.counters.bytes_up += len(data)
        self.client_waiting = True
        self.up.push(data)

    def from_server(self, data: bytes) -> None:
        self.route.counters.bytes_down += len(data)
        if self.client_waiting:
            self.client_waiting = False
            self.route.counters.round_trips += 1
        self.down.push(data)

    def sink_full(self, relay: Relay) -> bool:
        return relay.towards_server in self.full

    def set_full(self, upstream_side: bool, full: bool) -> None:
        relay = self.up if upstream_side else self.down
        if full:
            self.full.add(upstream_side)
            relay._pause_source()
        else:
            self.full.discard(upstream_side)
            relay.flush()

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the upstream connection after the simulated handshake (and any freeze)."""
        loop = self.proxy.loop
        await asyncio.sleep(3 * self.proxy.delay)
        while self.route.frozen:
            await self.proxy.thawed(self.route)
        if self.closed:
            return
        try:
            await loop.create_connection(
                lambda: UpstreamSide(self), self.route.upstream[0], self.route.upstream[1]
            )
        except OSError:
            self.close()  # upstream down: the client sees the connection end

    def attached(self, transport: asyncio.Transport) -> None:
        if self.closed:
            transport.close()
            return
        self.upstream = transport
        _nodelay(transport)
        if self.route.frozen:
            transport.pause_reading()
        self.up.flush()
        if self.client is not None and not self.route.frozen and not self.up.source_paused:
            self.client.resume_reading()

    def freeze(self) -> None:
        for transport in (self.client, self.upstream):
            if transport is not None and not transport.is_closing():
                transport.pause_reading()

    def cut(self) -> None:
        """Reset both sides at once (RST), dropping whatever was held or queued."""
        for transport in (self.client, self.upstream):
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:  # linger 0: close() sends RST, not FIN
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()
        self.close()

    def thaw(self) -> None:
        for relay in (self.up, self.down):
            relay.source_paused = False
        for transport in (self.client, self.upstream):
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        self.up.flush()
        self.down.flush()

    def maybe_close(self) -> None:
        if self.up.done and self.down.done:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.cancel()
        self.down.cancel()
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.close()
        self.route.pipes.discard(self)
        self.route.counters.open = len(self.route.pipes)
        if self.connector is not None:
            self.connector.cancel()


class ClientSide(asyncio.Protocol):
    def __init__(self, proxy: Proxy, route: Route) -> None:
        self.proxy = proxy
        self.route = route
        self.pipe: Pipe | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        _nodelay(transport)
        if self.route.frozen:
            transport.pause_reading()
        # Otherwise read at once: what the client sends before the upstream is connected
        # is due `delay` after it was sent, and goes out as soon as the upstream is there.
        self.pipe = Pipe(self.proxy, self.route, transport)
        self.route.pipes.add(self.pipe)
        self.route.counters.connections += 1
        self.route.counters.open = len(self.route.pipes)
        self.pipe.connector = self.proxy.loop.create_task(self.pipe.connect())

    def data_received(self, data: bytes) -> None:
        if self.pipe is not None:
            self.pipe.from_client(data)

    def eof_received(self) -> bool:
        if self.pipe is not None:
            self.pipe.up.push(None)
        return True  # half-close: keep delivering the server's answer

    def connection_lost(self, exc: Exception | None) -> None:
        pipe = self.pipe
        if pipe is None:
            return
        if not pipe.up.done and not any(d is None for _, d in pipe.up.queue):
            pipe.up.push(None)
        pipe.client = None
        pipe.down.done = True
        pipe.maybe_close()

    def pause_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.set_full(upstream_side=False, full=True)

    def resume_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.set_full(upstream_side=False, full=False)


class UpstreamSide(asyncio.Protocol):
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pipe.attached(transport)

    def data_received(self, data: bytes) -> None:
        self.pipe.from_server(data)

    def eof_received(self) -> bool:
        self.pipe.down.push(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.pipe.down.done and not any(d is None for _, d in self.pipe.down.queue):
            self.pipe.down.push(None)
        self.pipe.upstream = None
        self.pipe.up.done = True
        self.pipe.maybe_close()

    def pause_writing(self) -> None:
        self.pipe.set_full(upstream_side=True, full=True)

    def resume_writing(self) -> None:
        self.pipe.set_full(upstream_side=True, full=False)


def _nodelay(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Proxy:
    """Every route of one lab, served by one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.routes: dict[str, Route] = {}
        self.thaw_events: dict[str, asyncio.Event] = {}
        self.started = time.time()

    async def thawed(self, route: Route) -> None:
        await self.thaw_events.setdefault(route.name, asyncio.Event()).wait()

    async def add(self, name: str, listen: list[Any], upstream: list[Any], kind: str) -> Route:
        if name in self.routes:
            raise ProxyError(f"route {name!r} exists already")
        route = Route(name, (str(listen[0]), int(listen[1])), (str(upstream[0]), int(upstream[1])))
        route.kind = kind
        route.server = await self.loop.create_server(
            lambda: ClientSide(self, route), route.listen[0], route.listen[1], backlog=512
        )
        self.routes[name] = route
        return route

    def route(self, name: str) -> Route:
        try:
            return self.routes[name]
        except KeyError:
            raise ProxyError(f"no route {name!r}") from None

    def remove(self, name: str) -> None:
        route = self.route(name)
        if route.server is not None:
            route.server.close()
        for pipe in list(route.pipes):
            pipe.close()
        del self.routes[name]

    def freeze(self, name: str) -> None:
        route = self.route(name)
        route.frozen = True
        self.thaw_events[name] = asyncio.Event()
        for pipe in route.pipes:
            pipe.freeze()

    def cut(self, name: str) -> int:
        """Reset every open connection of a route; returns how many there were."""
        route = self.route(name)
        pipes = list(route.pipes)
        for pipe in pipes:
            pipe.cut()
        return len(pipes)

    def thaw(self, name: str) -> None:
        route = self.route(name)
        route.frozen = False
        self.thaw_events.pop(name, asyncio.Event()).set()
        for pipe in list(route.pipes):
            pipe.thaw()

    def stats(self) -> dict[str, Any]:
        return {
            name: {
                **asdict(route.counters),
                "kind": route.kind,
                "frozen": route.frozen,
                "listen": list(route.listen),
                "upstream": list(route.upstream),
            }
            for name, route in self.routes.items()
        }

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"delay": self.delay, "pid": os.getpid()}
        if op == "add":
            route = await self.add(
                str(request["name"]), request["listen"], request["upstream"], request["kind"]
            )
            return {"listen": list(route.listen)}
        if op == "remove":
            self.remove(str(request["name"]))
            return {}
        if op == "freeze":
            self.freeze(str(request["name"]))
            return {}
        if op == "cut":
            return {"cut": self.cut(str(request["name"]))}
        if op == "thaw":
            self.thaw(str(request["name"]))
            return {}
        if op == "delay":
            self.delay = float(request["seconds"])
            return {"delay": self.delay}
        if op == "stats":
            return {"delay": self.delay, "routes": self.stats()}
        raise ProxyError(f"unknown op {op!r}")

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = {"ok": True, **(await self.handle(json.loads(line)))}
                except (ProxyError, OSError, KeyError, ValueError, TypeError) as exc:
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()


async def _serve(control: Path, delay: float) -> None:
    loop = asyncio.get_running_loop()
    proxy = Proxy(loop, delay)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    control.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(proxy.control, path=str(control))
    os.chmod(control, 0o600)
    async with server:
        await stop.wait()
    for name in list(proxy.routes):
        proxy.remove(name)
    control.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.proxy_server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy (routes are added over --control)")
    serve.add_argument("--control", required=True, help="Unix socket for JSON-line commands")
    serve.add_argument("--delay", default="0", help="one-way delay, e.g. 40ms")
    args = parser.parse_args(argv)
    # Two descriptors per proxied connection plus one per route: a 250-host lab under
    # fan-out needs more than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The host's argv carries the lab directory (the control socket lives there), so
    # teardown can tell this process from a reused pid.
    asyncio.run(_serve(Path(args.control), parse_delay(args.delay)))


if __name__ == "__main__":
    main()
