"""The v1.9 wire shapes: states, NodeInfo/NodeState, executions, history events."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from .buildinfo import version_info

# Execution ComputeState (integers on the wire).
EXEC_NEW = 1
EXEC_BID_ACCEPTED = 5
EXEC_RUNNING = 6
EXEC_PUBLISHING = 7
EXEC_COMPLETED = 9
EXEC_FAILED = 10
EXEC_CANCELLED = 11
EXEC_TERMINAL = {4, 8, EXEC_COMPLETED, EXEC_FAILED, EXEC_CANCELLED}

# Execution DesiredState.
DESIRED_PENDING = 0
DESIRED_RUNNING = 1
DESIRED_STOPPED = 2

# Job State (strings on the wire).
JOB_PENDING = "Pending"
JOB_RUNNING = "Running"
JOB_COMPLETED = "Completed"
JOB_FAILED = "Failed"
JOB_STOPPED = "Stopped"
JOB_TERMINAL = {JOB_COMPLETED, JOB_FAILED, JOB_STOPPED}

ZERO_TIME = "0001-01-01T00:00:00Z"
ENGINES = ["docker"]


def now_ns() -> int:
    return time.time_ns()


def rfc3339(epoch: float | None) -> str:
    """Go's ``time.Time`` JSON form; the zero time for ``None``."""
    if epoch is None:
        return ZERO_TIME
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def empty_resources() -> dict[str, Any]:
    return {"CPU": 0, "Memory": 0, "Disk": 0, "GPU": 0}


def node_info(
    node_id: str,
    node_type: str,
    labels: dict[str, str],
    *,
    publishers: list[str] | None = None,
    storage_sources: list[str] | None = None,
    capacity: dict[str, Any] | None = None,
    running: int = 0,
) -> dict[str, Any]:
    """``models.NodeInfo`` of this node (compute fields zero for an orchestrator)."""
    compute = node_type == "Compute"
    cap = capacity or empty_resources()
    return {
        "NodeID": node_id,
        "NodeType": node_type,
        "Labels": labels,
        "SupportedProtocols": ["ncl/v1"],
        "ComputeNodeInfo": {
            "ExecutionEngines": list(ENGINES) if compute else None,
            "Publishers": publishers if compute else None,
            "StorageSources": storage_sources if compute else None,
            "MaxCapacity": cap,
            "QueueCapacity": empty_resources(),
            "AvailableCapacity": cap,
            "MaxJobRequirements": cap,
            "RunningExecutions": running,
            "EnqueuedExecutions": 0,
            "address": "",
        },
        "BacalhauVersion": version_info(),
    }


def state(
    state_type: Any, message: str = "", details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"StateType": state_type, "Message": message, "Details": details}


def history_event(
    seq: int,
    job: dict[str, Any],
    message: str,
    topic: str,
    execution_id: str = "",
    details: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One ``models.JobHistory`` item."""
    stamp = rfc3339(time.time())
    return {
        "SeqNum": seq,
        "Type": "ExecutionLevel" if execution_id else "JobLevel",
        "JobID": job["ID"],
        "JobVersion": job.get("Version", 1),
        "ExecutionID": execution_id,
        "Event": {"Message": message, "Topic": topic, "Timestamp": stamp, "Details": details},
        "Time": stamp,
    }


def new_execution(job: dict[str, Any], node_id: str, eval_id: str) -> dict[str, Any]:
    """A fresh ``models.Execution`` for ``job`` on ``node_id``."""
    stamp = now_ns()
    task = job["Tasks"][0]
    return {
        "ID": new_id("e"),
        "Namespace": job["Namespace"],
        "EvalID": eval_id,
        "Name": "",
        "NodeID": node_id,
        "JobID": job["ID"],
        "JobVersion": job["Version"],
        "AllocatedResources": {"Tasks": {task["Name"]: empty_resources()}},
        "DesiredState": state(DESIRED_RUNNING, "execution is running"),
        "ComputeState": state(EXEC_NEW, "", {}),
        "PublishedResult": {"Type": "", "Params": None},
        "RunOutput": None,
        "PreviousExecution": "",
        "NextExecution": "",
        "FollowupEvalID": "",
        "PartitionIndex": 0,
        "Revision": 1,
        "CreateTime": stamp,
        "ModifyTime": stamp,
    }
