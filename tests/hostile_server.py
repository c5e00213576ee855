"""A hostile HTTP server for tests: answers built to hang, flood, redirect, crash or
repaint the terminal of whoever reads them.

It stands for a compromised orchestrator (or S3 endpoint, or anything in
between). Each route gets an :class:`Act`: a status, headers and body sent
normally, or dripped one byte at a time (headers included), or followed by
megabytes of filler. Every request is recorded. ``release`` ends every drip
at teardown, so a test that fails never leaves a thread trickling.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

#: A drip never lasts longer than this, whatever the test does.
MAX_DRIP_SECONDS = 120.0


@dataclass
class Act:
    status: int = 200
    #: dict/list -> JSON; str -> UTF-8; bytes as is.
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Send a Content-Length (the true one, or ``claim`` when set).
    length: bool = True
    claim: int | None = None
    #: Seconds between bytes of the body (a slow drip).
    drip: float | None = None
    #: Drip the status line and headers too.
    drip_headers: bool = False
    #: Bytes of filler sent after the body (no Content-Length).
    flood: int = 0

    def payload(self) -> bytes:
        if isinstance(self.body, dict | list):
            return json.dumps(self.body).encode()
        if isinstance(self.body, str):
            return self.body.encode()
        return bytes(self.body)


@dataclass
class Seen:
    method: str
    path: str


@dataclass
class HostileServer:
    url: str = ""
    routes: dict[str, Act] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def on(self, path: str, act: Act) -> None:
        self.routes[path] = act


def _handler(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _drip(self, data: bytes, pause: float) -> None:
            stop = threading.Timer(MAX_DRIP_SECONDS, server.release.set)
            stop.daemon = True
            stop.start()
            try:
                for byte in data:
                    if server.release.is_set():
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    server.release.wait(pause)
                while not server.release.wait(pause):  # keep the client waiting
                    self.wfile.write(b" ")
                    self.wfile.flush()
            finally:
                stop.cancel()

        def _serve(self) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            server.seen.append(Seen(self.command, path))
            act = server.routes.get(path, Act(404, {"Message": "no route"}))
            body = act.payload()
            head = [f"HTTP/1.1 {act.status} Whatever\r\n", "Content-Type: application/json\r\n"]
            head += [f"{k}: {v}\r\n" for k, v in act.headers.items()]
            if act.length and not act.flood:
                head.append(f"Content-Length: {act.claim or len(body)}\r\n")
            else:
                head.append("Connection: close\r\n")
                self.close_connection = True
            head.append("\r\n")
            raw_head = "".join(head).encode("latin-1")
            try:
                if act.drip_headers:
                    self._drip(raw_head + body, act.drip or 0.2)
                    return
                self.wfile.write(raw_head)
                self.wfile.flush()
                if act.drip is not None:
                    self._drip(body, act.drip)
                    return
                self.wfile.write(body)
                sent = 0
                chunk = b" " * 65536
                while sent < act.flood and not server.release.is_set():
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the client gave up, as it should

        do_GET = do_PUT = do_DELETE = do_POST = _serve

    return Handler


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler], release: threading.Event) -> Iterator[str]:
    """Serve ``handler`` on a free local port in a thread; its base URL. ``release`` is set
    at the end so hanging handlers return, then the server is shut down."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    scripted = HostileServer()
    with serving(_handler(scripted), scripted.release) as url:
        scripted.url = url
        yield scripted
