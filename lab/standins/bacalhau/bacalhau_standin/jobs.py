"""Submitted job specs: validation (with the real status codes) and defaults.

Validation errors are HTTP 400 with ``Code: InternalError`` from the API
server, except the timeout rule, which is ``BadRequest`` from the job store:
that is what v1.9.3 answers.
"""

from __future__ import annotations

import copy
from typing import Any

from .httpapi import ApiError
from .models import JOB_PENDING, new_id, now_ns, state

JOB_TYPES = ("batch", "ops", "service", "daemon")
_NETWORKS = {
    "default": "Default",
    "none": "None",
    "host": "Host",
    "bridge": "Bridge",
    "http": "HTTP",
    "full": "Full",
}
_IGNORED_ON_SUBMIT = ("State", "Version", "Revision", "CreateTime", "ModifyTime")


def _invalid(message: str) -> ApiError:
    return ApiError(message, "InternalError", status=400, component="APIServer")


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be an object")
    return value


def _timeout(timeouts: dict[str, Any], name: str) -> int:
    value = timeouts.get(name) or 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(f"task timeouts: {name} must be an integer number of seconds")
    if value < 0:
        raise _invalid(f"task timeouts: {name} must not be negative")
    return value


def _normalize_engine(task: dict[str, Any], name: str) -> None:
    engine = _mapping(task.get("Engine"), f"task {name} engine")
    engine_type = str(engine.get("Type") or "")
    if not engine_type:
        raise _invalid(f"task {name}: missing engine type")
    params = _mapping(engine.get("Params"), f"task {name} engine params")
    if engine_type.lower() == "docker":
        if not str(params.get("Image") or ""):
            raise _invalid("invalid docker engine params: image cannot be empty")
        for item in params.get("EnvironmentVariables") or []:
            if str(item).upper().startswith("BACALHAU_"):
                raise _invalid(
                    f"invalid docker engine params: environment variable {item!r} "
                    "must not start with BACALHAU_"
                )
        if params.get("WorkingDirectory") and not str(params["WorkingDirectory"]).startswith("/"):
            raise _invalid("invalid docker engine params: working directory must be absolute")
    task["Engine"] = {"Type": engine_type, "Params": params}


def _normalize_task(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _invalid("task must be an object")
    task: dict[str, Any] = copy.deepcopy(raw)
    name = str(task.get("Name") or "")
    if not name:
        raise _invalid("missing task name")
    _normalize_engine(task, name)
    publisher = _mapping(task.get("Publisher"), f"task {name} publisher")
    task["Publisher"] = {
        "Type": str(publisher.get("Type") or ""),
        "Params": publisher.get("Params"),
    }
    task["Env"] = _mapping(task.get("Env"), f"task {name} env")
    task["Meta"] = _mapping(task.get("Meta"), f"task {name} meta")
    task["InputSources"] = list(task.get("InputSources") or [])
    for source in task["InputSources"]:
        spec = _mapping(_mapping(source, "input source").get("Source"), "input source spec")
        if not spec.get("Type"):
            raise _invalid(f"task {name}: input source without a type")
    task["ResultPaths"] = list(task.get("ResultPaths") or [])
    resources = _mapping(task.get("Resources"), f"task {name} resources")
    task["Resources"] = {k: str(resources.get(k) or "") for k in ("CPU", "Memory", "Disk", "GPU")}
    network = _mapping(task.get("Network"), f"task {name} network")
    net_type = str(network.get("Type") or "Default")
    if net_type.lower() not in _NETWORKS:
        raise _invalid(f"invalid network type {net_type!r}")
    task["Network"] = {**network, "Type": _NETWORKS[net_type.lower()]}
    timeouts = _mapping(task.get("Timeouts"), f"task {name} timeouts")
    names = ("ExecutionTimeout", "QueueTimeout", "TotalTimeout")
    values = {k: _timeout(timeouts, k) for k in names}
    total = values["TotalTimeout"]
    if total and values["ExecutionTimeout"] + values["QueueTimeout"] > total:
        raise ApiError(
            f"task {name}: execution timeout ({values['ExecutionTimeout']}s) plus queue timeout "
            f"({values['QueueTimeout']}s) must not exceed the total timeout ({total}s)",
            "BadRequest",
            component="JobStore",
        )
    task["Timeouts"] = values
    return task


def normalize_job(raw: Any, requester_id: str) -> tuple[dict[str, Any], list[str]]:
    """Validate a submitted job and fill the fields the orchestrator owns."""
    if not isinstance(raw, dict) or not raw:
        raise _invalid("missing job in request")
    job = copy.deepcopy(raw)
    warnings: list[str] = []
    job_type = str(job.get("Type") or "").lower()
    if job_type not in JOB_TYPES:
        raise _invalid(f"invalid job type: {job.get('Type')!r}; expected one of {JOB_TYPES}")
    for ignored in ("ID", *_IGNORED_ON_SUBMIT):
        if job.get(ignored):
            warnings.append(f"{ignored} is set by the orchestrator and was ignored")
    count = job.get("Count") or 0
    if not isinstance(count, int) or count < 0:
        raise _invalid("job count must be a non-negative integer")
    if job_type in ("ops", "daemon"):
        if count > 1:
            raise _invalid(f"job count must be 0 or 1 for {job_type} jobs")
        count = 0
    else:
        count = count or 1
    tasks = job.get("Tasks") or []
    if not isinstance(tasks, list) or not tasks:
        raise _invalid("missing job tasks")
    if len(tasks) > 1:
        warnings.append("only one task per job is supported; extra tasks were dropped")
    meta = {
        k: v
        for k, v in _mapping(job.get("Meta"), "job meta").items()
        if not str(k).startswith("bacalhau.org/")
    }
    meta["bacalhau.org/requester.id"] = requester_id
    job_id = new_id("j")
    stamp = now_ns()
    normalized = {
        "ID": job_id,
        "Name": str(job.get("Name") or job_id),
        "Namespace": str(job.get("Namespace") or "default"),
        "Type": job_type,
        "Priority": int(job.get("Priority") or 0),
        "Count": count,
        "Constraints": list(job.get("Constraints") or []),
        "Meta": meta,
        "Labels": _mapping(job.get("Labels"), "job labels"),
        "Tasks": [_normalize_task(tasks[0])],
        "State": state(JOB_PENDING),
        "Version": 1,
        "Revision": 1,
        "CreateTime": stamp,
        "ModifyTime": stamp,
    }
    return normalized, warnings


def spec_fingerprint(job: dict[str, Any]) -> dict[str, Any]:
    """The parts of a job that make it 'the same spec' when a Name is reused."""
    keep = ("Name", "Namespace", "Type", "Priority", "Count", "Constraints", "Labels", "Tasks")
    meta = {k: v for k, v in job.get("Meta", {}).items() if not k.startswith("bacalhau.org/")}
    return {**{k: job.get(k) for k in keep}, "Meta": meta}
