"""A small JSON-over-HTTP server: routing, v1.9 error bodies, minified JSON.

Used for the REST API on ``API.Port`` and for the stand-in's private
compute<->orchestrator transport on ``Orchestrator.Port``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .logs import Log

_CODE_STATUS = {
    "BadRequest": 400,
    "ValidationError": 400,
    "InternalError": 500,
    "NotFound": 404,
    "Unauthorized": 401,
    "Forbidden": 403,
    "ServiceUnavailable": 503,
    "ResourceExhausted": 429,
    "ResourceInUse": 409,
}


class ApiError(Exception):
    """An error answered as ``{"Status","Message","RequestID","Code","Component","Hint"}``."""

    def __init__(
        self,
        message: str,
        code: str = "BadRequest",
        *,
        status: int | None = None,
        component: str = "APIServer",
        hint: str = "",
        details: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status or _CODE_STATUS.get(code, 500)
        self.component = component
        self.hint = hint
        self.details = details

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Status": self.status,
            "Message": self.message,
            "RequestID": request_id,
            "Code": self.code,
            "Component": self.component,
        }
        if self.hint:
            body["Hint"] = self.hint
        if self.details:
            body["Details"] = self.details
        return body


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    client: str
    params: dict[str, str] = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def json(self, required: bool = True) -> Any:
        if not self.body.strip():
            if required:
                raise ApiError("request body is empty", "BadRequest")
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ApiError(f"invalid JSON body: {exc}", "BadRequest") from exc


Handler = Callable[[Request], Any]


@dataclass
class Router:
    """Method + path-regex routes; ``{name}`` segments become ``request.params``."""

    routes: list[tuple[set[str], re.Pattern[str], Handler]] = field(default_factory=list)

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern.rstrip("/"))
        self.routes.append((set(methods.split("|")), re.compile(regex + "/?"), handler))

    def find(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for methods, regex, handler in self.routes:
            match = regex.fullmatch(path)
            if not match:
                continue
            if method in methods:
                return handler, match.groupdict()
            allowed = True
        if allowed:
            raise ApiError(f"method {method} not allowed on {path}", status=405, code="BadRequest")
        raise ApiError(
            "Not Found",
            "NotFound",
            hint="the server may be an older version that lacks this endpoint",
        )


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _SharedPortServer(ThreadingHTTPServer):
    """Binds with SO_REUSEPORT: the lab holds a node's port (bound, never listening) from the
    moment it chose it, so no other lab takes it before this node starts (lab.hosts.reserve_ports).
    The real agent needs none of this: on a real host the port is its own."""

    allow_reuse_port = True


class JsonServer:
    """A threaded HTTP server answering JSON from a ``Router``, in a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        router: Router,
        log: Log,
        name: str,
        guard: Callable[[Request], None] | None = None,
    ):
        self.router = router
        self.log = log
        self.guard = guard
        self.name = name
        handler = self._handler_class()
        self.httpd = _SharedPortServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        # A long poll interval keeps idle nodes cheap (a lab runs dozens of them);
        # the process exits without waiting for this loop.
        self.httpd.serve_forever(poll_interval=2.0)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def handle(self, request: Request) -> tuple[int, Any]:
        try:
            handler, params = self.router.find(request.method, request.path)
            request.params = params
            if self.guard is not None:
                self.guard(request)
            return 200, handler(request)
        except ApiError as err:
            return err.status, err.body(request.request_id)
        except Exception as exc:  # a bug in the stand-in: answer 500, keep serving
            self.log.error("request failed", server=self.name, path=request.path, error=repr(exc))
            return 500, ApiError(str(exc), "InternalError").body(request.request_id)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "bacalhau-standin"

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query, keep_blank_values=True),
                    headers=self.headers,
                    body=body,
                    client=self.client_address[0],
                )
                if request.method == "HEAD":
                    request.method = "GET"
                status, payload = server.handle(request)
                data = _dumps(payload)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("X-Bacalhau-Request-Id", request.request_id)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                server.log.debug("http", server=server.name, line=format % args)

        return _Handler
