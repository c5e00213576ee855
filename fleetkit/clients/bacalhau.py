"""A small client for the Bacalhau v1.9 REST API, and the osquery ops job.

Why not ``bacalhau-sdk``: the PyPI packages are stuck on the v1.4 API (no
``ConnectionState``, enums without values, errors printed instead of raised).
fleetkit needs about ten endpoints, so it speaks to them directly with
``requests`` and keeps the JSON it does not understand in ``raw``.

Wire facts this module relies on (reference/bacalhau.md): execution states are
integers, job states / node membership / connection are strings, ``Warnings``
may be ``null``, ``RunOutput`` has ``Stdout`` but lowercase ``stderr``, errors
come as ``{"Status","Message","Code","Hint",...}``.

Retry policy: reads (GET) are retried with exponential backoff on connection
errors and 5xx answers, because repeating them is harmless. Writes (PUT,
DELETE) are sent once: a job submission that timed out may have been accepted,
and submitting it again would run the query twice on every node.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from fleetkit.clients.urls import http_url, without_userinfo
from fleetkit.foundation.secrets import redact, remember_secret
from fleetkit.foundation.settings import S3Settings
from fleetkit.foundation.status import ConfigError, FleetkitError, UsageError

if TYPE_CHECKING:
    from fleetkit.runtime import Runtime

API = "/api/v1"
ORCHESTRATOR = f"{API}/orchestrator"

#: HTTP statuses worth a second try on an idempotent read.
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Bound on NextToken pages, so a server that keeps answering the same token
#: cannot keep the client looping forever.
_MAX_PAGES = 1000
#: Connection failures after which the server certainly never saw the request.
_NOTHING_SENT = frozenset({"connection refused", "host name not found", "connection timed out"})


class ComputeState(IntEnum):
    """``Execution.ComputeState.StateType`` (an integer on the wire)."""

    UNDEFINED = 0
    NEW = 1
    ASK_FOR_BID = 2
    ASK_FOR_BID_ACCEPTED = 3
    ASK_FOR_BID_REJECTED = 4
    BID_ACCEPTED = 5
    RUNNING = 6
    PUBLISHING = 7
    BID_REJECTED = 8
    COMPLETED = 9
    FAILED = 10
    CANCELLED = 11


#: Execution states that will not change any more.
TERMINAL = frozenset(
    {
        ComputeState.ASK_FOR_BID_REJECTED,
        ComputeState.BID_REJECTED,
        ComputeState.COMPLETED,
        ComputeState.FAILED,
        ComputeState.CANCELLED,
    }
)

#: Job ``State.StateType`` strings that will not change any more.
TERMINAL_JOB_STATES = frozenset({"Completed", "Failed", "Stopped"})

# Swagger declares models.JobStateType as an integer enum although v1.9 sends
# strings; accept both so an older or newer server does not break parsing.
_JOB_STATE_BY_NUMBER = {
    0: "Undefined",
    1: "Pending",
    2: "Queued",
    3: "Running",
    4: "Completed",
    5: "Failed",
    6: "Stopped",
}
_COMPUTE_STATE_BY_NAME = {s.name.replace("_", "").lower(): int(s) for s in ComputeState}


class OrchestratorError(FleetkitError):
    """The orchestrator refused or failed a request; ``str()`` says what, where and why."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.hint = hint
        super().__init__(redact(message))


class OrchestratorUnavailable(OrchestratorError):
    """No answer at all: connection refused, unknown host name, or a timeout."""


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class AgentVersion:
    major: int
    minor: int
    git_version: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentVersion:
        return cls(
            major=_as_int(data.get("Major")),
            minor=_as_int(data.get("Minor")),
            git_version=str(data.get("GitVersion") or ""),
        )


@dataclass(frozen=True)
class NodeState:
    """One entry of ``GET /orchestrator/nodes`` (``Info`` flattened)."""

    node_id: str
    node_type: str
    labels: dict[str, str]
    membership: str
    #: ``ConnectionState.Status``, falling back to the deprecated ``Connection``.
    connection: str
    last_heartbeat: str | None
    connected_since: str | None
    disconnected_since: str | None
    engines: tuple[str, ...]
    publishers: tuple[str, ...]
    storage_sources: tuple[str, ...]
    #: ``BacalhauVersion.GitVersion`` (``v1.9.3``) when the node reported it.
    version: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeState:
        info = _mapping(data.get("Info"))
        compute = _mapping(info.get("ComputeNodeInfo"))
        conn = _mapping(data.get("ConnectionState"))
        version = _mapping(info.get("BacalhauVersion")).get("GitVersion")
        return cls(
            node_id=str(info.get("NodeID") or data.get("NodeID") or ""),
            node_type=str(info.get("NodeType") or ""),
            labels={str(k): str(v) for k, v in _mapping(info.get("Labels")).items()},
            membership=str(data.get("Membership") or ""),
            connection=str(conn.get("Status") or data.get("Connection") or ""),
            last_heartbeat=_opt_str(conn.get("LastHeartbeat")),
            connected_since=_opt_str(conn.get("ConnectedSince")),
            disconnected_since=_opt_str(conn.get("DisconnectedSince")),
            engines=_str_tuple(compute.get("ExecutionEngines")),
            publishers=_str_tuple(compute.get("Publishers")),
            storage_sources=_str_tuple(compute.get("StorageSources")),
            version=_opt_str(version),
            raw=dict(data),
        )

    @property
    def is_compute(self) -> bool:
        return self.node_type.lower() == "compute"

    @property
    def is_connected(self) -> bool:
        return self.connection.upper() == "CONNECTED"

    @property
    def is_approved(self) -> bool:
        return self.membership.upper() == "APPROVED"

    @property
    def schedulable(self) -> bool:
        """What the orchestrator's node selector requires before looking at features."""
        return self.is_compute and self.is_connected and self.is_approved

    def advertises(
        self, *, engine: str = "docker", storage: str = "local", publisher: str | None = None
    ) -> list[str]:
        """What the node lacks for a job needing these features (empty = nothing).

        The orchestrator silently skips such nodes for ops jobs, so the caller
        uses this to name them instead of waiting for an execution that never comes.
        """
        missing = []
        if not _contains(self.engines, engine):
            missing.append(f"engine {engine}")
        if not _contains(self.storage_sources, storage):
            missing.append(f"storage {storage}")
        if publisher is not None and not _contains(self.publishers, publisher):
            missing.append(f"publisher {publisher}")
        return missing


@dataclass(frozen=True)
class Execution:
    """One item of ``GET /orchestrator/jobs/{id}/executions``."""

    id: str
    node_id: str
    job_id: str
    compute_state: int
    desired_state: int
    #: ``ComputeState.Message`` (why a bid was rejected or an execution failed).
    message: str
    #: ``RunOutput.Stdout``; None when the node has not reported output yet.
    stdout: str | None
    stdout_truncated: bool
    stderr: str
    exit_code: int | None
    error_msg: str
    published_result: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Execution:
        compute = _mapping(data.get("ComputeState"))
        desired = _mapping(data.get("DesiredState"))
        run = data.get("RunOutput")
        output = _mapping(run)
        published = data.get("PublishedResult")
        stdout = output.get("Stdout")
        exit_code = output.get("ExitCode")
        return cls(
            id=str(data.get("ID") or ""),
            node_id=str(data.get("NodeID") or ""),
            job_id=str(data.get("JobID") or ""),
            compute_state=_compute_state(compute.get("StateType")),
            desired_state=_as_int(desired.get("StateType")),
            message=str(compute.get("Message") or ""),
            stdout=stdout if isinstance(stdout, str) and isinstance(run, Mapping) else None,
            stdout_truncated=bool(output.get("StdoutTruncated")),
            # v1.9 spells it lowercase; accept the capitalised form too.
            stderr=str(output.get("stderr") or output.get("Stderr") or ""),
            exit_code=exit_code if isinstance(exit_code, int) and run is not None else None,
            error_msg=str(output.get("ErrorMsg") or ""),
            published_result=(
                dict(published)
                if isinstance(published, Mapping) and published.get("Type")
                else None
            ),
            raw=dict(data),
        )

    @property
    def is_terminal(self) -> bool:
        return self.compute_state in TERMINAL

    @property
    def completed(self) -> bool:
        """The task ran to the end (its exit code may still be non-zero)."""
        return self.compute_state == ComputeState.COMPLETED

    @property
    def failed(self) -> bool:
        """Terminal without completing: failed, cancelled or rejected."""
        return self.is_terminal and not self.completed


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    #: ``State.StateType``: Pending, Queued, Running, Completed, Failed, Stopped.
    state: str
    message: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, job: Mapping[str, Any]) -> JobStatus:
        state = _mapping(job.get("State"))
        kind = state.get("StateType")
        if isinstance(kind, int) and not isinstance(kind, bool):
            kind = _JOB_STATE_BY_NUMBER.get(kind, str(kind))
        return cls(
            job_id=str(job.get("ID") or ""),
            state=str(kind or "Undefined"),
            message=str(state.get("Message") or ""),
            raw=dict(job),
        )

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_JOB_STATES


@dataclass(frozen=True)
class Submitted:
    job_id: str
    evaluation_id: str
    warnings: list[str]


# --------------------------------------------------------------------------- client


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
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: What messages show: never credentials embedded in the URL.
        self.display_url = without_userinfo(self.base_url)
        self.session = session if session is not None else requests.Session()
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._sleep = sleep
        self._auth: tuple[str, str] | None = None
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        elif username is not None and password is not None:
            self._auth = (username, password)

    @classmethod
    def from_runtime(cls, rt: Runtime) -> BacalhauClient:
        """Client for the configured orchestrator, credentials resolved from settings.

        URL: ``bacalhau.orchestrator_url`` (or ``FLEETKIT_ORCHESTRATOR_URL``), else
        ``http://<control plane address>:<its API port>``. Credentials: the settings'
        secrets, else ``BACALHAU_API_KEY`` / ``BACALHAU_API_USERNAME`` +
        ``BACALHAU_API_PASSWORD`` (the variables the bacalhau CLI reads).
        """
        settings = rt.settings.bacalhau
        url = settings.orchestrator_url or _control_plane_url(rt)
        environ = rt.env.environ
        api_key = settings.api_key.reveal() if settings.api_key else None
        username = settings.api_username
        password = settings.api_password.reveal() if settings.api_password else None
        if not api_key and not (username and password):
            api_key = environ.get("BACALHAU_API_KEY") or None
            username = username or environ.get("BACALHAU_API_USERNAME") or None
            password = password or environ.get("BACALHAU_API_PASSWORD") or None
        if username and not password and not api_key:
            raise ConfigError(
                "bacalhau.api_username is set but no password (bacalhau.api_password or "
                "BACALHAU_API_PASSWORD)",
                file=rt.settings.path,
                key="bacalhau.api_password",
            )
        for secret in (api_key, password):
            if secret:
                # Values taken from the environment are secrets too: keep them
                # out of every later message.
                remember_secret(secret)
        return cls(
            url,
            session=rt.http_session_factory(),
            api_key=api_key,
            username=username,
            password=password,
            sleep=rt.env.sleep,
        )

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
        return NodeState.from_json(_mapping(data.get("Node")))

    def approve_node(self, node_id: str, message: str = "") -> None:
        self._node_action(node_id, "approve", message)

    def reject_node(self, node_id: str, message: str = "") -> None:
        self._node_action(node_id, "reject", message)

    def _node_action(self, node_id: str, action: str, message: str) -> None:
        path = f"{ORCHESTRATOR}/nodes/{_segment(node_id)}"
        data = self._write("PUT", path, {"NodeID": node_id, "Action": action, "Message": message})
        if data.get("Success") is False:
            raise OrchestratorError(
                f"orchestrator at {self.display_url} did not {action} node {node_id}: "
                f"{data.get('Error') or 'no reason given'}"
            )

    # ---- jobs

    def submit_job(self, job: dict[str, Any]) -> Submitted:
        """``PUT /orchestrator/jobs``; sent exactly once (see the module docstring)."""
        name = _mapping(job.get("Job")).get("Name")
        note = (
            f"the job may have been accepted anyway: look for a job named {name} "
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
        return JobStatus.from_json(_mapping(data.get("Job")))

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
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._send("GET", path, params=params)
            except _ConnectionFailed as failed:
                if last:
                    raise failed.error(attempts) from None
                self._sleep(self.backoff * 2**attempt)
                continue
            if response.status_code in _RETRYABLE_STATUSES and not last:
                self._sleep(self.backoff * 2**attempt)
                continue
            return self._decode("GET", path, response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _write(
        self, method: str, path: str, body: Any, *, timeout_note: str = ""
    ) -> dict[str, Any]:
        try:
            response = self._send(method, path, body=body, timeout_note=timeout_note)
        except _ConnectionFailed as failed:
            error = failed.error(1)
            if timeout_note and failed.reason not in _NOTHING_SENT:
                # The request may have reached the server before the connection broke.
                error = OrchestratorUnavailable(f"{error}; {timeout_note}")
            raise error from None
        return self._decode(method, path, response)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout_note: str = "",
    ) -> requests.Response:
        url = self.base_url + path
        try:
            return self.session.request(
                method,
                url,
                params=dict(params or {}),
                json=body,
                headers=self._headers,
                auth=self._auth,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.ConnectionError as exc:
            # ConnectTimeout is a ConnectionError too: nothing was sent, safe to retry.
            raise _ConnectionFailed(self.display_url, method, path, _reason(exc)) from None
        except requests.Timeout:
            what = f"orchestrator at {self.display_url} did not answer {method} {path} "
            what += f"within {self.timeout:g}s"
            raise OrchestratorUnavailable(
                f"{what}; {timeout_note}" if timeout_note else what
            ) from None
        except requests.RequestException as exc:
            raise OrchestratorError(
                f"request {method} {path} to orchestrator at {self.display_url} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    def _decode(self, method: str, path: str, response: requests.Response) -> dict[str, Any]:
        status = response.status_code
        if status >= 400 or status < 200:
            raise self._http_error(method, path, response)
        try:
            data = response.json()
        except ValueError:
            what = "not JSON"
        else:
            if isinstance(data, dict):
                return data
            what = "not a JSON object"
        raise OrchestratorError(
            f"invalid response ({what}) from {method} {path} at {self.display_url}: "
            f"{_snippet(response)}",
            status=status,
        )

    def _http_error(self, method: str, path: str, response: requests.Response) -> OrchestratorError:
        status = response.status_code
        body = _error_body(response)
        message = str(body.get("Message") or response.reason or "").strip()
        code = str(body.get("Code") or "") or None
        hint = str(body.get("Hint") or "") or None
        if status in (401, 403):
            advice = (
                "set bacalhau.api_key (or bacalhau.api_username and bacalhau.api_password) "
                "in the settings, or BACALHAU_API_KEY"
                if status == 401
                else f"the API user lacks the capability for {method} {path}"
            )
            text = f"orchestrator at {self.display_url} refused the request ({status} {message})"
            text += f": {advice}"
        elif body:
            text = f"orchestrator at {self.display_url}: {method} {path} failed ({status}"
            text += f" {code})" if code else ")"
            text += f": {message}" if message else ""
        else:
            text = (
                f"orchestrator at {self.display_url}: {method} {path} failed ({status} "
                f"{response.reason or ''}): {_snippet(response)}"
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


class _ConnectionFailed(Exception):
    """Internal: no answer came back (refused, reset, closed); safe to retry a read."""

    def __init__(self, base_url: str, method: str, path: str, reason: str) -> None:
        super().__init__(reason)
        self.base_url = base_url
        self.method = method
        self.path = path
        self.reason = reason

    def error(self, attempts: int) -> OrchestratorUnavailable:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return OrchestratorUnavailable(
            f"cannot reach orchestrator at {self.base_url} ({self.method} {self.path}): "
            f"{self.reason}{tries}"
        )


# --------------------------------------------------------------------------- job


def build_osquery_job(
    sql: str,
    *,
    image: str,
    socket_dir: str,
    socket_path: str,
    constraints: list[dict[str, Any]],
    execution_timeout: int,
    total_timeout: int,
    s3: S3Settings | None,
    name: str | None = None,
) -> dict[str, Any]:
    """The ``PUT /orchestrator/jobs`` body that asks every matching node one SQL question.

    The SQL is one element of ``Parameters``: Docker execs the entrypoint with
    that argv, so no shell ever parses it. The socket *directory* is mounted
    (not the socket file) because a restarted osqueryd recreates the socket
    inode and a file bind-mount would go stale. Both timeouts are always set:
    without them a hung node keeps the job Running forever.
    """
    if not sql.strip():
        raise UsageError("the SQL query is empty", key="sql")
    if execution_timeout < 1:
        raise UsageError(f"must be at least 1 second, got {execution_timeout}", key="--timeout")
    if total_timeout < execution_timeout:
        raise UsageError(
            f"total timeout {total_timeout}s is shorter than the execution timeout "
            f"{execution_timeout}s",
            key="--timeout",
        )
    task: dict[str, Any] = {
        "Name": "osquery",
        "Engine": {
            "Type": "docker",
            "Params": {
                "Image": image,
                "Entrypoint": ["osqueryi"],
                "Parameters": [f"--connect={socket_path}", "--json", sql],
            },
        },
        "InputSources": [
            {
                "Source": {
                    "Type": "local",
                    "Params": {"SourcePath": socket_dir, "ReadWrite": False},
                },
                "Target": socket_dir,
            }
        ],
        "Network": {"Type": "None"},
        "Timeouts": {"ExecutionTimeout": execution_timeout, "TotalTimeout": total_timeout},
    }
    if s3 is not None:
        params: dict[str, Any] = {
            "Bucket": s3.bucket,
            "Key": s3.key_template,
            "Region": s3.region,
            # plain = every result file is its own object under <Key>/, so
            # <Key>/stdout is osqueryi's output as is (no tarball to unpack).
            "Encoding": "plain",
        }
        if s3.endpoint:
            params["Endpoint"] = s3.endpoint
        task["Publisher"] = {"Type": "s3", "Params": params}
    return {
        "Job": {
            "Name": name or f"fleetkit-{uuid.uuid4()}",
            "Namespace": "default",
            "Type": "ops",
            "Labels": {"fleetkit": "query"},
            "Constraints": [dict(c) for c in constraints],
            "Tasks": [task],
        },
        "Force": False,
    }


def stdout_key(published_result: Mapping[str, Any]) -> tuple[str, str] | None:
    """(bucket, key) of the ``stdout`` object of an S3 result published with plain encoding.

    None when the result is not S3 or was published as a tarball (gzip
    encoding, key ending ``.tar.gz``): the caller then has only RunOutput.
    """
    if str(published_result.get("Type", "")).lower() != "s3":
        return None
    params = _mapping(published_result.get("Params"))
    bucket, key = params.get("Bucket"), params.get("Key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        return None
    if key.endswith((".tar.gz", ".tgz")):
        return None
    return bucket, key.rstrip("/") + "/stdout"


# --------------------------------------------------------------------------- helpers


def _control_plane_url(rt: Runtime) -> str:
    host = rt.inventory.control_plane
    if host is None:
        raise ConfigError(
            "no orchestrator: set bacalhau.orchestrator_url or put one host in the "
            "control_plane group",
            file=rt.settings.path,
            key="bacalhau.orchestrator_url",
        )
    return http_url(host.address, host.bacalhau_api_port or rt.settings.bacalhau.api_port)


def _segment(value: str) -> str:
    """One URL path segment; IDs never carry '/', but a job name typed by a person might."""
    return quote(value, safe="")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _opt_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _str_tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _contains(values: tuple[str, ...], wanted: str) -> bool:
    return wanted.lower() in (v.lower() for v in values)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


def _compute_state(value: Any) -> int:
    """Integer on the wire; a name (``"Completed"``) is accepted for robustness."""
    if isinstance(value, str) and not value.isdigit():
        return _COMPUTE_STATE_BY_NAME.get(value.replace("_", "").lower(), 0)
    return _as_int(value)


def _error_body(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _snippet(response: requests.Response) -> str:
    text = response.content[:80].decode("utf-8", "replace")
    return " ".join(text.split()) or "(empty body)"


def _reason(exc: requests.ConnectionError) -> str:
    """A short cause for a failed connection, instead of urllib3's nested repr."""
    text = str(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "NameResolution" in text or "getaddrinfo" in text:
        return "host name not found"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection closed without an answer"
    if "Connection reset" in text:
        return "connection reset"
    return text[:160]
