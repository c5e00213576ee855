"""The bounded session: one request in, a complete answer or a typed failure out."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import IO, Any

import requests

from fleetkit.clients.http.answers import (
    ERROR_BODY_BYTES,
    DeadlinePassed,
    HttpFailure,
    Limits,
    Redirected,
    Reply,
    TooLarge,
    classify,
    quoted,
)
from fleetkit.clients.http.budget import (
    RETRYABLE_METHODS,
    RETRYABLE_STATUSES,
    Adapter,
    Budget,
    RetryWithin,
)

_CHUNK = 64 * 1024


class BoundedHttp:
    """A :class:`requests.Session` whose every request is bounded (see the module docstring).

    Thread-safe in the way requests is: one instance may serve a pool of
    worker threads (each request's budget is per thread).
    """

    def __init__(
        self,
        session: requests.Session | None = None,
        *,
        limits: Limits | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 10,
    ) -> None:
        self.session = session if session is not None else requests.Session()
        self.limits = limits or Limits()
        #: Proxies and TLS settings from the environment, per scheme://host:port.
        self._environment: dict[str, Any] = {}
        self._sleep = sleep
        retry = RetryWithin(
            total=max(0, retries),
            connect=max(0, retries),
            read=max(0, retries),
            status=max(0, retries),
            other=0,
            redirect=0,
            allowed_methods=RETRYABLE_METHODS,
            status_forcelist=RETRYABLE_STATUSES,
            backoff_factor=backoff,
            backoff_max=max(backoff, 10.0),
            retry_after_max=int(self.limits.deadline),
            raise_on_status=False,
            raise_on_redirect=False,
        )
        adapter = Adapter(max_retries=retry, pool_connections=4, pool_maxsize=max(1, pool_size))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        retry: bool = True,
        sink: IO[bytes] | None = None,
    ) -> Reply:
        """Send one request (retried when allowed) and read its whole answer, bounded.

        A 2xx body goes to ``sink`` when given (e.g. a temporary file), else
        into :attr:`Reply.body`; an error body is read up to
        :data:`ERROR_BODY_BYTES` for its message. Raises :class:`HttpFailure`.
        """
        limits = self.limits
        with Budget(limits.deadline, retry=retry, sleep=self._sleep) as budget:
            try:
                response = self._send(method, url, params, json_body, headers, auth)
                try:
                    return self._answer(response, budget, sink)
                finally:
                    response.close()
            except HttpFailure:
                raise
            except Exception as exc:
                tries = max(1, budget.attempts)
                raise classify(exc, expired=budget.expired, attempts=tries, limits=limits) from None

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> requests.Response:
        """The request through the adapter itself, never ``Session.send``.

        ``Session.send`` looks at every 3xx even with redirects off: it reads
        the whole body into memory ("consume socket so it can be released")
        and decodes the Location header, so a hostile redirect could cost
        unbounded memory or a UnicodeDecodeError.
        """
        session = self.session
        prepared = session.prepare_request(
            requests.Request(
                method,
                url,
                params=dict(params or {}),
                json=json_body,
                headers={"Accept-Encoding": "identity", **dict(headers or {})},
                auth=auth,
            )
        )
        settings = self._environment_for(prepared.url or url)
        timeout = self.limits.timeout
        return session.get_adapter(prepared.url or url).send(
            prepared,
            stream=True,
            timeout=(timeout, timeout),
            verify=settings["verify"] if settings["verify"] is not None else True,
            cert=settings["cert"],
            proxies=settings["proxies"],
        )

    def _environment_for(self, url: str) -> Any:
        """The proxy and TLS settings requests takes from the environment, once per origin.

        They depend on the URL's scheme and host only (``NO_PROXY`` matches
        hosts) and reading them walks the whole environment twice: done for
        every object of a large S3 collection, that was measurable.
        """
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        settings: Any = self._environment.get(origin)
        if settings is None:
            settings = self.session.merge_environment_settings(origin, {}, True, None, None)
            self._environment[origin] = settings
        return settings

    def _answer(self, response: requests.Response, budget: Budget, sink: IO[bytes] | None) -> Reply:
        status = response.status_code
        if 300 <= status < 400:
            raise Redirected(status, quoted(response.headers.get("Location") or "(no Location)"))
        ok = 200 <= status < 300
        limit = self.limits.max_bytes if ok else ERROR_BODY_BYTES
        body = _read(response, limit, sink if ok else None, strict=ok)
        if budget.expired:  # the watchdog's shutdown looks like the end of a body
            raise DeadlinePassed(
                f"no complete answer within {self.limits.deadline:g}s", attempts=budget.attempts
            )
        return Reply(
            status=status,
            reason=str(response.reason or ""),
            headers=response.headers,
            body=body,
            attempts=max(1, budget.attempts),
        )


def _read(
    response: requests.Response,
    limit: int,
    sink: IO[bytes] | None,
    *,
    strict: bool,
) -> bytes:
    """The body, at most ``limit`` bytes; past it :class:`TooLarge` (``strict``) or cut."""
    declared = (response.headers.get("Content-Length") or "").strip()
    if strict and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the answer announces {int(declared)} bytes, over the {limit}-byte cap")
    parts: list[bytes] = []
    total = 0
    raw = response.raw
    while True:
        chunk = raw.read(_CHUNK, decode_content=False)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            if strict:
                raise TooLarge(f"the answer is larger than the {limit}-byte cap")
            parts.append(chunk[: len(chunk) - (total - limit)])
            break
        if sink is not None:
            sink.write(chunk)
        else:
            parts.append(chunk)
    return b"".join(parts)
