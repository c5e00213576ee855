"""HTTP with limits, shared by the orchestrator client and the S3 result reader.

Every byte an HTTP server sends is hostile input (DESIGN.md, trust
boundaries): the orchestrator may be compromised, and so may anything
between fleetkit and it. Each request made here is bounded:

- **deadline**: the whole request (connecting, every retry and backoff,
  headers and body) ends within ``Limits.deadline`` seconds. requests'
  ``timeout`` bounds one socket read only, so a server trickling one byte a
  second never trips it; a watchdog (one thread for the whole process) shuts
  the request's socket down when the deadline passes, which ends any read in
  progress at once.
- **size**: the body is streamed and reading stops past ``Limits.max_bytes``
  (a ``Content-Length`` announcing more is refused before reading).
- **redirects** are neither followed nor taken as an answer: a 3xx is a
  :class:`Redirected` failure naming where it pointed.
- **encoding**: ``identity`` is asked for and nothing is ever decompressed (no
  decompression bomb); a compressed body simply fails to parse.
- **retries**: urllib3's :class:`~urllib3.util.retry.Retry` on the session's
  adapter. Reads (GET) are retried on connection errors, 429 and 5xx with
  exponential backoff; every other method is sent exactly once (a job
  submitted twice runs twice). A read that timed out is not asked again: the
  user would wait retries x timeout.

Failures are classified by exception type (never by message text) into the
few cases callers word differently: :class:`Unreachable` (the server never
saw the request), :class:`ConnectionLost` (it may have), :class:`ReadTimedOut`,
:class:`DeadlinePassed`, :class:`TooLarge`, :class:`Redirected`.
"""

from __future__ import annotations

from fleetkit.clients.http.answers import (
    ERROR_BODY_BYTES,
    ConnectionLost,
    DeadlinePassed,
    HttpFailure,
    JsonTooDeep,
    Limits,
    ReadTimedOut,
    Redirected,
    Reply,
    TooLarge,
    Unreachable,
    parse_json,
    quoted,
)
from fleetkit.clients.http.session import BoundedHttp

__all__ = [
    "ERROR_BODY_BYTES",
    "BoundedHttp",
    "ConnectionLost",
    "DeadlinePassed",
    "HttpFailure",
    "JsonTooDeep",
    "Limits",
    "ReadTimedOut",
    "Redirected",
    "Reply",
    "TooLarge",
    "Unreachable",
    "parse_json",
    "quoted",
]
