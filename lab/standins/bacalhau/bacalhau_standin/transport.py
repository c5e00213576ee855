"""The stand-in's compute<->orchestrator transport (real Bacalhau uses NATS).

Private HTTP/JSON on ``Orchestrator.Host:Orchestrator.Port`` (default 4222).
Every request carries ``Authorization: Bearer <Compute.Auth.Token>``; when the
orchestrator has ``Orchestrator.Auth.Token`` set, any other token is refused
with 401 and logged, and the node never appears in the node list.

  POST /ncl/v1/join       {"NodeInfo": {...}, "Running": [execution IDs still running here]}
                                                        -> {"Membership": "APPROVED"}
  POST /ncl/v1/heartbeat  {"NodeID", "NodeInfo"}        -> {"Membership": ...} (404: join again)
  POST /ncl/v1/poll       {"NodeID", "Ack": seq, "Wait": s} -> {"Commands": [Run|Cancel ...]}
  POST /ncl/v1/update     {"NodeID", "ExecutionID", "ComputeState", "Message",
                           "RunOutput"?, "PublishedResult"?} -> {}

Commands: ``{"Type": "Run", "Execution": {...}, "Job": {...}, "Seq": n}`` and
``{"Type": "Cancel", "ExecutionID": "e-...", "Seq": n}``. They stay queued until a
later poll acknowledges their ``Seq``, so a long poll lost with a dying process
does not lose them; the compute ignores a command it has already handled.
"""

from __future__ import annotations

import hmac
import http.client
import ipaddress
import json
from typing import Any

from .httpapi import ApiError, Request, Router
from .logs import Log
from .orchestrator import Orchestrator

POLL_WAIT = 5.0


class TransportRefused(Exception):
    """The orchestrator refused us (bad token); retrying will not help until config changes."""


class TransportError(Exception):
    """The orchestrator could not be reached or answered an error."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def orchestrator_routes(orch: Orchestrator, router: Router) -> None:
    def join(request: Request) -> Any:
        info = _body(request).get("NodeInfo")
        if not isinstance(info, dict) or not info.get("NodeID"):
            raise ApiError("join without NodeInfo.NodeID", "BadRequest")
        info.setdefault("ComputeNodeInfo", {})["address"] = request.client
        running = [str(i) for i in _body(request).get("Running") or []]
        return {"Membership": orch.node_joined(info, running).membership}

    def heartbeat(request: Request) -> Any:
        body = _body(request)
        record = orch.heartbeat(str(body.get("NodeID", "")), body.get("NodeInfo"))
        return {"Membership": record.membership}

    def poll(request: Request) -> Any:
        body = _body(request)
        wait = min(float(body.get("Wait") or POLL_WAIT), 30.0)
        ack = int(body.get("Ack") or 0)
        return {"Commands": orch.poll(str(body.get("NodeID", "")), ack, wait)}

    def update(request: Request) -> Any:
        body = _body(request)
        orch.execution_update(str(body.get("NodeID", "")), body)
        return {}

    router.add("POST", "/ncl/v1/join", join)
    router.add("POST", "/ncl/v1/heartbeat", heartbeat)
    router.add("POST", "/ncl/v1/poll", poll)
    router.add("POST", "/ncl/v1/update", update)


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError("body must be an object", "BadRequest")
    return body


class TokenGuard:
    """Refuse compute requests without the shared ``Orchestrator.Auth.Token``."""

    def __init__(self, token: str, log: Log):
        self.token = token
        self.log = log

    def __call__(self, request: Request) -> None:
        if not self.token:
            return
        header = request.headers.get("Authorization", "")
        presented = header[7:] if header.startswith("Bearer ") else ""
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            self.log.error(
                "refused compute node connection: authorization violation",
                client=request.client,
                reason="missing token" if not presented else "invalid token",
            )
            raise ApiError("authorization violation", "Unauthorized", component="NATS")


def orchestrator_address(address: str) -> tuple[str, int]:
    """``nats://host:4222``, ``host:4222`` or ``host`` -> ``(host, port)``."""
    text = address.strip()
    for scheme in ("nats://", "tls://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("/")[0]
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        return text.strip("[]"), 4222
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return text, 4222


def source_address(api_host: str) -> str | None:
    """Dial from the node's own API address when it is a specific IP (the lab's loopbacks)."""
    try:
        ip = ipaddress.ip_address(api_host)
    except ValueError:
        return None
    return None if ip.is_unspecified else str(ip)


class TransportClient:
    """The compute node's side: one orchestrator address and the shared token."""

    def __init__(self, address: str, token: str, source: str | None = None):
        self.host, self.port = orchestrator_address(address)
        self.url = f"{self.host}:{self.port}"
        self.token = token
        self.source = source

    def call(self, path: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        conn = http.client.HTTPConnection(
            self.host,
            self.port,
            timeout=timeout,
            source_address=(self.source, 0) if self.source else None,
        )
        try:
            conn.request("POST", path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            # HTTPException: the orchestrator died mid-answer (IncompleteRead,
            # BadStatusLine). Like a refused connection, that is "lost orchestrator":
            # retry, never let it end the caller's thread.
            raise TransportError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        try:
            answer = json.loads(raw or b"{}")
        except ValueError as exc:
            raise TransportError(f"{self.url}: invalid answer: {exc}") from exc
        if response.status == 401:
            raise TransportRefused(str(answer.get("Message", "authorization violation")))
        if response.status >= 300:
            message = answer.get("Message", response.reason) if isinstance(answer, dict) else ""
            raise TransportError(f"{self.url}: {message}", response.status)
        return answer if isinstance(answer, dict) else {}
