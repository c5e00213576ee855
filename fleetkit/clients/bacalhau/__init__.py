"""The Bacalhau v1.9 REST client: models (what the API answers), client (the
bounded calls), errors, wiring (the client from settings) and jobs (the ops
jobs fleetkit submits)."""

from __future__ import annotations

from fleetkit.clients.bacalhau.client import API, ORCHESTRATOR, ORCHESTRATOR_LIMITS, BacalhauClient
from fleetkit.clients.bacalhau.errors import OrchestratorError, OrchestratorUnavailable
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
)
from fleetkit.clients.bacalhau.wiring import orchestrator_client

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
    "orchestrator_client",
    "osquery_command",
    "stdout_key",
]
