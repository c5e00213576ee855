"""What a bounded HTTP request ends with: a complete :class:`Reply` or one typed failure.

Failures are classified by exception type, never by message text, into the
few cases callers word differently. Every reason is short and escaped, so a
client can put it in a message as is.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from fleetkit.foundation.table import cell

#: An error body is read for its message only; this much is plenty.
ERROR_BODY_BYTES = 64 * 1024
#: Longest text quoted from a server in a message (escaped, then cut).
QUOTE_CHARS = 200
#: Exceptions followed when looking for the cause of a failure.
_MAX_CAUSES = 16


def quoted(text: object, limit: int = QUOTE_CHARS) -> str:
    """Server text as a message may show it: control characters escaped, cut to ``limit``."""
    return cell(text, max_width=limit)


@dataclass(frozen=True)
class Limits:
    #: Seconds to connect, and to wait for each read (requests' own timeout).
    timeout: float = 10.0
    #: Seconds for the whole request: connect, retries, backoff, headers, body.
    deadline: float = 60.0
    #: Largest body read; past it the request fails with :class:`TooLarge`.
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """A complete answer; ``body`` is empty when a 2xx body went to a sink."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    #: Requests sent (1 + retries).
    attempts: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpFailure(Exception):
    """No usable answer; ``reason`` is short, escaped and bounded."""

    def __init__(self, reason: str, *, attempts: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class Unreachable(HttpFailure):
    """No connection: the server never saw the request (refused, unknown name, connect timeout)."""


class ConnectionLost(HttpFailure):
    """The connection broke after the request was sent: the server may have acted on it."""


class ReadTimedOut(HttpFailure):
    """The server sent nothing for ``Limits.timeout`` seconds."""


class DeadlinePassed(HttpFailure):
    """The whole request took longer than ``Limits.deadline`` (e.g. a trickling server)."""


class TooLarge(HttpFailure):
    """The body is larger than ``Limits.max_bytes``; reading stopped there."""


class Redirected(HttpFailure):
    """A 3xx answer: not followed, not an answer."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(f"redirect ({status}) to {location}")
        self.status = status
        self.location = location


class JsonTooDeep(ValueError):
    """JSON nested deeper than allowed (instead of a RecursionError crash)."""


def parse_json(data: bytes, *, max_depth: int = 64) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` with :class:`JsonTooDeep`.

    Deep nesting would crash the parser (RecursionError) or, later, any code
    that walks or prints the value; a few dozen levels cover every real API.
    Other malformed input raises ``ValueError`` as ``json.loads`` does.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep(f"nested deeper than {max_depth} levels") from None
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > max_depth:
                    raise JsonTooDeep(f"nested deeper than {max_depth} levels")
                stack.append((child, depth + 1))
    return value


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (``reason``, ``args``, ``__cause__``, ``__context__``)."""
    found: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(found) < _MAX_CAUSES:
        item = todo.pop(0)
        if any(item is seen for seen in found):
            continue
        found.append(item)
        for nested in (getattr(item, "reason", None), item.__cause__, item.__context__, *item.args):
            if isinstance(nested, BaseException):
                todo.append(nested)
    return found


def classify(exc: BaseException, *, expired: bool, attempts: int, limits: Limits) -> HttpFailure:
    """The failure a caller words, decided by exception types only."""
    if expired:
        return DeadlinePassed(f"no complete answer within {limits.deadline:g}s", attempts=attempts)
    chain = _causes(exc)

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(item, types) for item in chain)

    if has(urllib3.exceptions.ReadTimeoutError, requests.ReadTimeout):
        return ReadTimedOut(f"no answer within {limits.timeout:g}s", attempts=attempts)
    if has(urllib3.exceptions.NameResolutionError, socket.gaierror):
        return Unreachable("host name not found", attempts=attempts)
    if has(ConnectionRefusedError):
        return Unreachable("connection refused", attempts=attempts)
    if has(urllib3.exceptions.NewConnectionError):
        return Unreachable(f"cannot connect ({_os_reason(chain)})", attempts=attempts)
    if has(urllib3.exceptions.ConnectTimeoutError, requests.ConnectTimeout):
        return Unreachable("connection timed out", attempts=attempts)
    if has(ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
        return Unreachable("TLS handshake failed", attempts=attempts)
    if has(http.client.RemoteDisconnected):
        return ConnectionLost("connection closed without an answer", attempts=attempts)
    if has(ConnectionResetError):
        return ConnectionLost("connection reset", attempts=attempts)
    if has(http.client.IncompleteRead, urllib3.exceptions.IncompleteRead):
        return ConnectionLost("connection closed in the middle of the answer", attempts=attempts)
    if has(urllib3.exceptions.ProtocolError, http.client.HTTPException):
        return ConnectionLost("malformed HTTP answer", attempts=attempts)
    return ConnectionLost(quoted(f"{type(exc).__name__}: {exc}"), attempts=attempts)


def _os_reason(chain: list[BaseException]) -> str:
    for item in chain:
        if isinstance(item, OSError) and item.errno:
            return os.strerror(item.errno).lower()
    return "connection failed"
