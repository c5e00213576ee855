"""The Bacalhau v1.9 REST client: models (what the API answers), client (the
bounded calls and their wiring from settings) and jobs (the ops jobs fleetkit
submits)."""

from __future__ import annotations

from fleetkit.clients.bacalhau.client import (
    API,
    ORCHESTRATOR,
    ORCHESTRATOR_LIMITS,
    BacalhauClient,
    OrchestratorError,
    OrchestratorUnavailable,
    orchestrator_client,
)
from fleetkit.clients.bacalhau.jobs import (
    TaskCommand,
    build_ops_job,
    build_osquery_job,
    osquery_command,
    stdout_key,
)
from fleetkit.clients.bacalhau.models import (
    TERMINAL,
    TERMINAL_JOB_STATES,
    AgentVersion,
    ComputeState,
    Execution,
    JobStatus,
    NodeState,
    Submitted,
    find_node,
)

__all__ = [
    "API",
    "ORCHESTRATOR",
    "ORCHESTRATOR_LIMITS",
    "TERMINAL",
    "TERMINAL_JOB_STATES",
    "AgentVersion",
    "BacalhauClient",
    "ComputeState",
    "Execution",
    "JobStatus",
    "NodeState",
    "OrchestratorError",
    "OrchestratorUnavailable",
    "Submitted",
    "TaskCommand",
    "build_ops_job",
    "build_osquery_job",
    "find_node",
    "orchestrator_client",
    "osquery_command",
    "stdout_key",
]
