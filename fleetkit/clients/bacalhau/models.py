"""What the Bacalhau v1.9 REST API answers, as typed, frozen values.

Wire facts these shapes rely on (reference/bacalhau.md): execution states are
integers, job states / node membership / connection are strings, ``Warnings``
may be ``null``, ``RunOutput`` has ``Stdout`` but lowercase ``stderr``. Values
are kept exactly as the orchestrator sent them (JSON output shows them as
they are); whatever prints them for a person escapes them first, because the
orchestrator and the nodes that report to it are untrusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


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
        info = mapping(data.get("Info"))
        compute = mapping(info.get("ComputeNodeInfo"))
        conn = mapping(data.get("ConnectionState"))
        version = mapping(info.get("BacalhauVersion")).get("GitVersion")
        return cls(
            node_id=str(info.get("NodeID") or data.get("NodeID") or ""),
            node_type=str(info.get("NodeType") or ""),
            labels={str(k): str(v) for k, v in mapping(info.get("Labels")).items()},
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
        compute = mapping(data.get("ComputeState"))
        desired = mapping(data.get("DesiredState"))
        run = data.get("RunOutput")
        output = mapping(run)
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
        state = mapping(job.get("State"))
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


# --------------------------------------------------------------------------- helpers


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a missing or odd field)."""
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
