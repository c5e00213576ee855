"""A small client for the Bacalhau v1.9 REST API.

Why not ``bacalhau-sdk``: the PyPI packages are stuck on the v1.4 API (no
``ConnectionState``, enums without values, errors printed instead of raised).
fleetkit needs about ten endpoints, so it speaks to them directly and keeps
the JSON it does not understand in ``raw``.

The orchestrator is untrusted (it may be compromised, or not be what the URL
says): every request goes through :class:`~fleetkit.clients.http.BoundedHttp`
(a deadline per request, a size cap, redirects refused, reads retried and
writes sent once, failures classified by type), JSON is parsed with a depth
limit, and every string of the orchestrator's that reaches a message is
escaped and cut. Errors come as ``{"Status","Message","Code","Hint",...}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from fleetkit.clients.bacalhau.errors import OrchestratorError, OrchestratorUnavailable
from fleetkit.clients.bacalhau.models import (
    AgentVersion,
    Execution,
    JobStatus,
    NodeState,
    Submitted,
    mapping,
)
from fleetkit.clients.http import (
    BoundedHttp,
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
from fleetkit.clients.urls import without_userinfo

API = "/api/v1"
ORCHESTRATOR = f"{API}/orchestrator"

#: Bound on NextToken pages, so a server that keeps answering the same token
#: cannot keep the client looping forever.
_MAX_PAGES = 1000
#: Per request: 10 s to connect and for each read; 60 s in all (connect,
#: retries, headers, body); at most 64 MiB read (a listing of thousands of
#: nodes or executions fits with room to spare).
ORCHESTRATOR_LIMITS = Limits(timeout=10.0, deadline=60.0, max_bytes=64 * 1024 * 1024)
#: Deepest JSON accepted; Bacalhau's own shapes stay under a dozen levels.
MAX_JSON_DEPTH = 64


class BacalhauClient:
    """Typed calls to one orchestrator; every failure is an :class:`OrchestratorError`."""

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = ORCHESTRATOR_LIMITS.timeout,
        retries: int = 3,
        backoff: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        deadline: float = ORCHESTRATOR_LIMITS.deadline,
        max_bytes: int = ORCHESTRATOR_LIMITS.max_bytes,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: What messages show: never credentials embedded in the URL.
        self.display_url = without_userinfo(self.base_url)
        self.timeout = timeout
        self.http = BoundedHttp(
            session,
            limits=Limits(timeout=timeout, deadline=deadline, max_bytes=max_bytes),
            retries=retries,
            backoff=backoff,
            sleep=sleep,
        )
        self._auth: tuple[str, str] | None = None
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        elif username is not None and password is not None:
            self._auth = (username, password)

    # ---- agent

    def alive(self) -> bool:
        """True when the agent answers ``{"Status": "OK"}``; False when it cannot be reached."""
        try:
            data = self._get(f"{API}/agent/alive", retry=False)
        except OrchestratorUnavailable:
            return False
        return str(data.get("Status", "")).upper() == "OK"

    def version(self) -> AgentVersion:
        return AgentVersion.from_json(self._get(f"{API}/agent/version"))

    # ---- nodes

    def nodes(
        self,
        *,
        labels: str | None = None,
        approval: str | None = None,
        status: str | None = None,
    ) -> list[NodeState]:
        """Nodes known to the orchestrator; ``labels`` is a k8s-style selector string."""
        params: dict[str, str] = {}
        if labels:
            params["labels"] = labels
        if approval:
            params["filter-approval"] = approval.upper()
        if status:
            params["filter-status"] = status.upper()
        return [
            NodeState.from_json(item)
            for item in self._pages(f"{ORCHESTRATOR}/nodes", params, items_key="Nodes")
        ]

    def node(self, node_id: str) -> NodeState:
        data = self._get(f"{ORCHESTRATOR}/nodes/{_segment(node_id)}")
        return NodeState.from_json(mapping(data.get("Node")))

    def approve_node(self, node_id: str, message: str = "") -> None:
        self._node_action(node_id, "approve", message)

    def reject_node(self, node_id: str, message: str = "") -> None:
        self._node_action(node_id, "reject", message)

    def _node_action(self, node_id: str, action: str, message: str) -> None:
        body = {"NodeID": node_id, "Action": action, "Message": message}
        data = self._write("PUT", f"{ORCHESTRATOR}/nodes/{_segment(node_id)}", body)
        if data.get("Success") is False:
            raise OrchestratorError(
                f"orchestrator at {self.display_url} did not {action} node {quoted(node_id)}: "
                f"{quoted(data.get('Error') or 'no reason given')}"
            )

    # ---- jobs

    def submit_job(self, job: dict[str, Any]) -> Submitted:
        """``PUT /orchestrator/jobs``; sent exactly once (a job submitted twice runs twice)."""
        name = mapping(job.get("Job")).get("Name")
        note = (
            f"the job may have been accepted anyway: look for a job named {quoted(name)} "
            "before submitting again"
            if name
            else "the job may have been accepted anyway"
        )
        data = self._write("PUT", f"{ORCHESTRATOR}/jobs", job, timeout_note=note)
        job_id = data.get("JobID")
        if not isinstance(job_id, str) or not job_id:
            raise OrchestratorError(
                f"invalid response from PUT {ORCHESTRATOR}/jobs at {self.display_url}: no JobID"
            )
        warnings = data.get("Warnings") or []
        return Submitted(
            job_id=job_id,
            evaluation_id=str(data.get("EvaluationID") or ""),
            warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [],
        )

    def job(self, job_id: str) -> JobStatus:
        data = self._get(f"{ORCHESTRATOR}/jobs/{_segment(job_id)}")
        return JobStatus.from_json(mapping(data.get("Job")))

    def executions(self, job_id: str) -> list[Execution]:
        path = f"{ORCHESTRATOR}/jobs/{_segment(job_id)}/executions"
        return [Execution.from_json(item) for item in self._pages(path, {}, items_key="Items")]

    def stop_job(self, job_id: str, reason: str) -> None:
        """``DELETE /orchestrator/jobs/{id}``; v1.9 reads the reason from a JSON body.

        A job that already finished counts as stopped: the caller wants it not
        running any more (timeout, Ctrl-C), and the job may end between the
        last poll and this call. v1.9 answers 400 "already in a terminal state".
        """
        try:
            self._write("DELETE", f"{ORCHESTRATOR}/jobs/{_segment(job_id)}", {"reason": reason})
        except OrchestratorError as exc:
            if exc.status == 400 and "terminal state" in str(exc):
                return
            raise

    # ---- transport

    def _get(
        self, path: str, params: Mapping[str, str] | None = None, *, retry: bool = True
    ) -> dict[str, Any]:
        return self._call("GET", path, params=params, retry=retry)

    def _write(
        self, method: str, path: str, body: Any, *, timeout_note: str = ""
    ) -> dict[str, Any]:
        return self._call(method, path, body=body, note=timeout_note)

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        retry: bool = True,
        note: str = "",
    ) -> dict[str, Any]:
        """One request; ``note`` is added when the server may have acted on it anyway."""
        try:
            reply = self.http.request(
                method,
                self.base_url + path,
                params=params,
                json_body=body,
                headers=self._headers,
                auth=self._auth,
                retry=retry,
            )
        except HttpFailure as failed:
            raise self._failure(method, path, failed, note) from None
        return self._decode(method, path, reply)

    def _failure(self, method: str, path: str, failed: HttpFailure, note: str) -> OrchestratorError:
        where = f"orchestrator at {self.display_url}"
        tries = f" after {failed.attempts} attempts" if failed.attempts > 1 else ""
        maybe = f"; {note}" if note else ""
        if isinstance(failed, Unreachable):  # never sent: nothing to warn about
            text = f"cannot reach {where} ({method} {path}): {failed.reason}{tries}"
            return OrchestratorUnavailable(text)
        if isinstance(failed, ConnectionLost):
            text = f"cannot reach {where} ({method} {path}): {failed.reason}{tries}{maybe}"
            return OrchestratorUnavailable(text)
        if isinstance(failed, ReadTimedOut):
            text = f"{where} did not answer {method} {path} within {self.timeout:g}s{maybe}"
            return OrchestratorUnavailable(text)
        if isinstance(failed, DeadlinePassed):
            limit = self.http.limits.deadline
            text = (
                f"{where} did not finish answering {method} {path} within the {limit:g}s "
                f"deadline{maybe}"
            )
            return OrchestratorUnavailable(text)
        if isinstance(failed, TooLarge):
            return OrchestratorError(
                f"{where}: the answer to {method} {path} is too large ({failed.reason}); "
                "stopped reading"
            )
        if isinstance(failed, Redirected):
            return OrchestratorError(
                f"{where} answered {method} {path} with a {failed.reason}; fleetkit does not "
                "follow redirects: set bacalhau.orchestrator_url to the API's real address",
                status=failed.status,
            )
        return OrchestratorError(f"{where}: {method} {path} failed: {failed.reason}{maybe}")

    def _decode(self, method: str, path: str, reply: Reply) -> dict[str, Any]:
        if not reply.ok:
            raise self._http_error(method, path, reply)
        try:
            data = parse_json(reply.body, max_depth=MAX_JSON_DEPTH)
        except JsonTooDeep as exc:
            what = str(exc)
        except ValueError:
            what = "not JSON"
        else:
            if isinstance(data, dict):
                return data
            what = "not a JSON object"
        raise OrchestratorError(
            f"invalid response ({what}) from {method} {path} at {self.display_url}: "
            f"{_snippet(reply.body)}",
            status=reply.status,
        )

    def _http_error(self, method: str, path: str, reply: Reply) -> OrchestratorError:
        status = reply.status
        body = _error_body(reply.body)
        message = quoted(str(body.get("Message") or reply.reason or "").strip())
        code = quoted(body.get("Code") or "") or None
        hint = quoted(body.get("Hint") or "") or None
        where = f"orchestrator at {self.display_url}"
        if status in (401, 403):
            advice = (
                "set bacalhau.api_key (or bacalhau.api_username and bacalhau.api_password) "
                "in the settings, or BACALHAU_API_KEY"
                if status == 401
                else f"the API user lacks the capability for {method} {path}"
            )
            text = f"{where} refused the request ({status} {message}): {advice}"
        elif body:
            text = f"{where}: {method} {path} failed ({status}"
            text += f" {code})" if code else ")"
            text += f": {message}" if message else ""
        else:
            text = (
                f"{where}: {method} {path} failed ({status} {quoted(reply.reason)}): "
                f"{_snippet(reply.body)}"
            )
        if hint:
            text += f" (hint: {hint})"
        return OrchestratorError(text, status=status, code=code, hint=hint)

    def _pages(
        self, path: str, params: Mapping[str, str], *, items_key: str
    ) -> list[dict[str, Any]]:
        """Every item of a listing, following ``NextToken`` until it is empty."""
        items: list[dict[str, Any]] = []
        query = dict(params)
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            data = self._get(path, query)
            page = data.get(items_key) or []
            if not isinstance(page, list):
                raise OrchestratorError(
                    f"invalid response from GET {path} at {self.display_url}: "
                    f"{items_key} is not a list"
                )
            items.extend(item for item in page if isinstance(item, dict))
            token = data.get("NextToken")
            if not isinstance(token, str) or not token or token in seen:
                break
            seen.add(token)
            query["next_token"] = token
        return items


# --------------------------------------------------------------------------- helpers


def _segment(value: str) -> str:
    """One URL path segment; IDs never carry '/', but a job name typed by a person might."""
    return quote(value, safe="")


def _error_body(data: bytes) -> Mapping[str, Any]:
    try:
        value = parse_json(data, max_depth=MAX_JSON_DEPTH)
    except ValueError:
        return {}
    return mapping(value)


def _snippet(data: bytes) -> str:
    """The start of a body a person may need to recognise (a proxy's page, say)."""
    text = data[:80].decode("utf-8", "replace")
    return quoted(" ".join(text.split())) or "(empty body)"
