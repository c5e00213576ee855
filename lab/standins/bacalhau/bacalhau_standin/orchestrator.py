"""The orchestrator: job store, ops scheduling, node manager and their REST API.

All state lives in memory under one condition variable (jobs are not
persisted: a restarted orchestrator forgets them, unlike the real BoltDB
store). Compute nodes talk to it through ``transport.py``.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .httpapi import ApiError, Request, Router
from .jobs import normalize_job, spec_fingerprint
from .logs import Log
from .models import (
    DESIRED_STOPPED,
    EXEC_CANCELLED,
    EXEC_COMPLETED,
    EXEC_FAILED,
    EXEC_TERMINAL,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_RUNNING,
    JOB_STOPPED,
    JOB_TERMINAL,
    history_event,
    new_execution,
    now_ns,
    state,
)
from .nodestore import NodeRecord, NodeStore
from .selectors import InvalidRequirement, all_match, constraints_of, parse_selector


@dataclass
class JobRecord:
    job: dict[str, Any]
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def current(self) -> list[dict[str, Any]]:
        version = self.job["Version"]
        return [e for e in self.executions.values() if e["JobVersion"] == version]


def _missing_feature(record: NodeRecord, task: dict[str, Any]) -> str:
    """Why a node cannot run the task ("" when it can)."""
    compute = record.info.get("ComputeNodeInfo") or {}
    engines = compute.get("ExecutionEngines") or []
    engine = task["Engine"]["Type"].lower()
    if engine not in engines:
        return f"does not support {engine}, only {engines}"
    publisher = (task.get("Publisher") or {}).get("Type") or ""
    if publisher and publisher.lower() not in (compute.get("Publishers") or []):
        return f"does not support publisher {publisher}"
    for source in task.get("InputSources") or []:
        kind = str(source["Source"]["Type"])
        if kind not in (compute.get("StorageSources") or []):
            return f"does not support storage {kind}"
    return ""


class Orchestrator:
    """Nodes, jobs and executions behind one lock; the REST handlers and the
    compute transport both call into it."""

    def __init__(
        self,
        node_id: str,
        data_dir: Path,
        log: Log,
        *,
        manual_approval: bool,
        disconnect_timeout: float,
    ):
        self.node_id = node_id
        self.log = log
        self.cond = threading.Condition()
        self.nodes = NodeStore(data_dir, manual_approval)
        self.disconnect_timeout = disconnect_timeout
        self.jobs: dict[str, JobRecord] = {}
        self.execution_jobs: dict[str, str] = {}
        self.seq = 0
        self.stopping = threading.Event()
        self.housekeeper = threading.Thread(
            target=self._housekeep, name="housekeeping", daemon=True
        )

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.housekeeper.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()

    def _housekeep(self) -> None:
        tick = max(0.05, min(0.5, self.disconnect_timeout / 10))
        while not self.stopping.wait(tick):
            with self.cond:
                self._disconnect_silent_nodes()
                self._expire_jobs()

    # ---- helpers ---------------------------------------------------------------------------
    def _event(self, record: JobRecord, message: str, topic: str, execution_id: str = "") -> None:
        self.seq += 1
        record.history.append(history_event(self.seq, record.job, message, topic, execution_id))

    def _touch(self, item: dict[str, Any]) -> None:
        item["Revision"] = item.get("Revision", 0) + 1
        item["ModifyTime"] = now_ns()

    def _set_job_state(self, record: JobRecord, new: str, message: str = "") -> None:
        if record.job["State"]["StateType"] == new:
            return
        record.job["State"] = state(new, message)
        self._touch(record.job)
        self._event(
            record,
            f"Job state changed to {new}" + (f": {message}" if message else ""),
            "JobStateUpdate",
        )
        self.log.info("job state", job=record.job["ID"], state=new, message=message)
        self.cond.notify_all()

    def _set_execution_state(
        self, record: JobRecord, execution: dict[str, Any], new: int, message: str
    ) -> None:
        execution["ComputeState"] = state(new, message, execution["ComputeState"].get("Details"))
        if new in EXEC_TERMINAL:
            desired = {EXEC_COMPLETED: "execution completed", EXEC_FAILED: "execution failed"}
            execution["DesiredState"] = state(
                DESIRED_STOPPED, desired.get(new, message or "execution stopped")
            )
        self._touch(execution)
        names = {
            5: "BidAccepted",
            6: "Running",
            7: "Publishing",
            9: "Completed",
            10: "Failed",
            11: "Cancelled",
        }
        text = f"Execution {names.get(new, new)}" + (f": {message}" if message else "")
        self._event(record, text, "Execution", execution["ID"])
        self.cond.notify_all()

    def _cancel(self, record: JobRecord, execution: dict[str, Any], message: str) -> None:
        if execution["ComputeState"]["StateType"] in EXEC_TERMINAL:
            return
        self._set_execution_state(record, execution, EXEC_CANCELLED, message)
        node = self.nodes.nodes.get(execution["NodeID"])
        if node is not None:
            node.outbox = [
                c
                for c in node.outbox
                if c["Type"] != "Run" or c["Execution"]["ID"] != execution["ID"]
            ]
            node.send({"Type": "Cancel", "ExecutionID": execution["ID"]})

    def _settle(self, record: JobRecord) -> None:
        """Ops completion rule: terminal when every execution is; Failed if any failed."""
        if record.job["State"]["StateType"] in JOB_TERMINAL:
            return
        executions = record.current()
        if not executions or any(
            e["ComputeState"]["StateType"] not in EXEC_TERMINAL for e in executions
        ):
            return
        failed = [e for e in executions if e["ComputeState"]["StateType"] == EXEC_FAILED]
        if failed:
            first = failed[0]
            self._set_job_state(
                record,
                JOB_FAILED,
                f"execution {first['ID']} on node {first['NodeID']} failed: "
                f"{first['ComputeState']['Message']}",
            )
        else:
            self._set_job_state(record, JOB_COMPLETED)

    def _disconnect_silent_nodes(self) -> None:
        for node in self.nodes.disconnect_silent(time.time(), self.disconnect_timeout):
            self.log.warn("node disconnected", node=node.node_id, reason=node.last_error)
            for record in self.jobs.values():
                for execution in record.current():
                    if execution["NodeID"] != node.node_id:
                        continue
                    if execution["ComputeState"]["StateType"] in EXEC_TERMINAL:
                        continue
                    self._set_execution_state(
                        record,
                        execution,
                        EXEC_FAILED,
                        f"node {node.node_id} disconnected: execution lost",
                    )
                self._settle(record)
            self.cond.notify_all()

    def _expire_jobs(self) -> None:
        now = time.monotonic()
        for record in self.jobs.values():
            total = record.job["Tasks"][0]["Timeouts"]["TotalTimeout"]
            if not total or record.job["State"]["StateType"] in JOB_TERMINAL:
                continue
            if now - record.started > total:
                for execution in record.current():
                    self._cancel(record, execution, f"job timed out after {total}s")
                self._set_job_state(record, JOB_FAILED, f"job timed out after {total}s")

    # ---- scheduling ------------------------------------------------------------------------
    def _schedule(self, record: JobRecord, eval_id: str) -> None:
        job = record.job
        task = job["Tasks"][0]
        try:
            constraints = constraints_of(job)
        except InvalidRequirement as exc:
            # v1.9 accepts the job and never schedules it.
            self._event(record, f"failed to evaluate constraints: {exc}", "Scheduling")
            self.log.warn("job not schedulable", job=job["ID"], error=str(exc))
            return
        chosen: list[NodeRecord] = []
        reasons: list[str] = []
        available = 0
        for node in sorted(self.nodes.nodes.values(), key=lambda n: n.node_id):
            if not node.schedulable:
                why = (
                    f"membership is {node.membership}"
                    if node.membership != "APPROVED"
                    else f"node is {node.status}"
                )
                reasons.append(f"• Node {node.node_id}: {why}")
                continue
            available += 1
            if not all_match(constraints, node.labels):
                reasons.append(f"• Node {node.node_id}: labels do not match job constraints")
                continue
            missing = _missing_feature(node, task)
            if missing:
                reasons.append(f"• Node {node.node_id}: {missing}")
                continue
            chosen.append(node)
        wanted = job["Count"] if job["Type"] in ("batch", "service") else 0
        if not chosen or (wanted and len(chosen) < wanted):
            message = (
                f"not enough nodes to run job. requested: {max(wanted, 1)}, "
                f"available: {available}, suitable: {len(chosen)}."
            )
            if reasons:
                message += "\n" + "\n".join(reasons)
            self._event(record, message, "Scheduling")
            self._set_job_state(record, JOB_FAILED, message)
            return
        if wanted:
            chosen = chosen[:wanted]
        for node in chosen:
            execution = new_execution(job, node.node_id, eval_id)
            record.executions[execution["ID"]] = execution
            self.execution_jobs[execution["ID"]] = job["ID"]
            self._event(
                record, f"Requested execution on {node.node_id}", "Scheduling", execution["ID"]
            )
            node.send(
                {"Type": "Run", "Execution": copy.deepcopy(execution), "Job": copy.deepcopy(job)}
            )
        self._set_job_state(record, JOB_RUNNING)
        self.cond.notify_all()

    # ---- jobs ------------------------------------------------------------------------------
    def submit(self, raw: Any, force: bool) -> dict[str, Any]:
        job, warnings = normalize_job(raw, self.node_id)
        eval_id = str(uuid.uuid4())
        with self.cond:
            existing = self._by_name(job["Name"], job["Namespace"])
            if existing is not None:
                if spec_fingerprint(existing.job) == spec_fingerprint(job) and not force:
                    raise ApiError(
                        f"no changes detected for new job spec. Job Name: '{job['Name']}'",
                        "",
                        status=500,
                        component="JobStore",
                    )
                record = self._update(existing, job)
            else:
                record = JobRecord(job=job)
                self.jobs[job["ID"]] = record
                self._event(record, "Job submitted", "Submission")
            self.log.info("job submitted", job=record.job["ID"], name=record.job["Name"])
            self._schedule(record, eval_id)
            return {
                "JobID": record.job["ID"],
                "EvaluationID": eval_id,
                "Warnings": warnings or None,
            }

    def _update(self, record: JobRecord, job: dict[str, Any]) -> JobRecord:
        """Name reuse: a new version of the same job; old executions are cancelled."""
        for execution in record.current():
            self._cancel(record, execution, "job updated to a new version")
        old = record.job
        job.update(
            ID=old["ID"],
            Version=old["Version"] + 1,
            Revision=old["Revision"] + 1,
            CreateTime=old["CreateTime"],
        )
        record.job = job
        record.started = time.monotonic()
        self._event(record, f"Job updated to version {job['Version']}", "Submission")
        return record

    def _by_name(self, name: str, namespace: str) -> JobRecord | None:
        for record in self.jobs.values():
            if record.job["Name"] == name and record.job["Namespace"] == namespace:
                return record
        return None

    def find_job(self, ident: str) -> JobRecord:
        """By full ID, unique ID prefix or Name."""
        if ident in self.jobs:
            return self.jobs[ident]
        by_prefix = [r for r in self.jobs.values() if r.job["ID"].startswith(ident)]
        if len(by_prefix) == 1:
            return by_prefix[0]
        by_name = [r for r in self.jobs.values() if r.job["Name"] == ident]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_prefix) > 1:
            raise ApiError(
                f"multiple jobs match prefix {ident!r}", "BadRequest", component="JobStore"
            )
        raise ApiError(f"job not found: {ident}", "NotFound", component="JobStore")

    def stop_job(self, ident: str, reason: str) -> dict[str, Any]:
        with self.cond:
            record = self.find_job(ident)
            current = record.job["State"]["StateType"]
            if current in JOB_TERMINAL:
                raise ApiError(
                    f"job {record.job['ID']} is already in a terminal state: {current}",
                    "BadRequest",
                    component="JobStore",
                )
            message = reason or "job stopped by user"
            for execution in record.current():
                self._cancel(record, execution, message)
            self._set_job_state(record, JOB_STOPPED, message)
            return {"EvaluationID": str(uuid.uuid4())}

    # ---- compute-side events ---------------------------------------------------------------
    def execution_update(self, node_id: str, update: dict[str, Any]) -> None:
        execution_id = str(update.get("ExecutionID", ""))
        with self.cond:
            job_id = self.execution_jobs.get(execution_id)
            if job_id is None:
                raise ApiError(f"execution not found: {execution_id}", "NotFound")
            record = self.jobs[job_id]
            execution = record.executions[execution_id]
            if execution["NodeID"] != node_id:
                raise ApiError("execution belongs to another node", "Forbidden")
            if execution["ComputeState"]["StateType"] in EXEC_TERMINAL:
                return  # late report after a cancel or a lost node: the orchestrator's word wins
            if "RunOutput" in update:
                execution["RunOutput"] = update["RunOutput"]
            if update.get("PublishedResult"):
                execution["PublishedResult"] = update["PublishedResult"]
            new_state = int(update["ComputeState"])
            self._set_execution_state(record, execution, new_state, str(update.get("Message", "")))
            self._settle(record)

    def node_joined(self, info: dict[str, Any], running: list[str]) -> NodeRecord:
        """A (re)joining node; executions it no longer runs are lost (it restarted)."""
        with self.cond:
            record = self.nodes.join(info, time.time())
            self.log.info("node joined", node=record.node_id, membership=record.membership)
            queued = {c["Execution"]["ID"] for c in record.outbox if c["Type"] == "Run"}
            for job in self.jobs.values():
                for execution in job.current():
                    if (
                        execution["NodeID"] == record.node_id
                        and execution["ComputeState"]["StateType"] not in EXEC_TERMINAL
                        and execution["ID"] not in running
                        and execution["ID"] not in queued
                    ):
                        message = f"node {record.node_id} restarted: execution lost"
                        self._set_execution_state(job, execution, EXEC_FAILED, message)
                self._settle(job)
            self.cond.notify_all()
            return record

    def heartbeat(self, node_id: str, info: dict[str, Any] | None) -> NodeRecord:
        with self.cond:
            record = self._known(node_id)
            if info:
                info["ComputeNodeInfo"]["address"] = record.info["ComputeNodeInfo"]["address"]
                record.info = info
            if record.mark_connected(time.time()):
                self.log.info("node reconnected", node=node_id)
            return record

    def _known(self, node_id: str) -> NodeRecord:
        record = self.nodes.nodes.get(node_id)
        if record is None:
            raise ApiError(f"node {node_id} is not registered", "NotFound", component="NodeManager")
        return record

    def poll(self, node_id: str, ack: int, wait: float) -> list[dict[str, Any]]:
        """Commands not yet acknowledged (a poll whose answer was lost is answered again)."""
        deadline = time.monotonic() + wait
        with self.cond:
            while True:
                record = self._known(node_id)
                record.acknowledge(ack)
                if record.outbox or self.stopping.is_set():
                    return copy.deepcopy(record.outbox)
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self.cond.wait(left)

    # ---- REST ------------------------------------------------------------------------------
    def routes(self, router: Router) -> None:
        base = "/api/v1/orchestrator"
        router.add("PUT|POST", f"{base}/jobs", self._api_put_job)
        router.add("GET", f"{base}/jobs", self._api_list_jobs)
        router.add("GET", f"{base}/jobs/{{id}}", self._api_get_job)
        router.add("DELETE", f"{base}/jobs/{{id}}", self._api_stop_job)
        router.add("GET", f"{base}/jobs/{{id}}/executions", self._api_executions)
        router.add("GET", f"{base}/jobs/{{id}}/history", self._api_history)
        router.add("GET", f"{base}/jobs/{{id}}/results", self._api_results)
        router.add("GET", f"{base}/nodes", self._api_list_nodes)
        router.add("GET", f"{base}/nodes/{{id}}", self._api_get_node)
        router.add("PUT|POST", f"{base}/nodes/{{id}}", self._api_put_node)

    def _api_put_job(self, request: Request) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError("request body must be an object", "BadRequest")
        return self.submit(body.get("Job"), bool(body.get("Force")))

    def _api_list_jobs(self, request: Request) -> Any:
        namespace = request.arg("namespace", "default")
        selectors = [r for text in request.args("labels") for r in self._selector(text)]
        with self.cond:
            items = [
                copy.deepcopy(r.job)
                for r in self.jobs.values()
                if (namespace == "*" or r.job["Namespace"] == namespace)
                and all_match(selectors, r.job.get("Labels") or {})
            ]
        items.sort(key=lambda j: j["CreateTime"], reverse=request.arg("reverse") == "true")
        return {"Items": items, "NextToken": ""}

    def _executions(self, record: JobRecord, request: Request) -> list[dict[str, Any]]:
        if request.arg("all_job_versions") == "true":
            items = list(record.executions.values())
        else:
            version = int(request.arg("job_version", "0") or 0) or record.job["Version"]
            items = [e for e in record.executions.values() if e["JobVersion"] == version]
        by_modify = request.arg("order_by") in ("modify_time", "modified_at")
        key = "ModifyTime" if by_modify else "CreateTime"
        items = sorted(items, key=lambda e: e[key], reverse=request.arg("reverse") == "true")
        limit = int(request.arg("limit", "0") or 0)
        return copy.deepcopy(items[:limit] if limit else items)

    def _history(self, record: JobRecord, request: Request) -> list[dict[str, Any]]:
        event_type = request.arg("event_type", "all")
        wanted_exec = request.arg("execution_id")
        items = [
            h
            for h in record.history
            if (event_type != "job" or h["Type"] == "JobLevel")
            and (event_type != "execution" or h["Type"] == "ExecutionLevel")
            and (not wanted_exec or h["ExecutionID"] == wanted_exec)
        ]
        return copy.deepcopy(items)

    def _api_get_job(self, request: Request) -> Any:
        include = {p.strip() for v in request.args("include") for p in v.split(",")}
        with self.cond:
            record = self.find_job(request.params["id"])
            reply: dict[str, Any] = {"Job": copy.deepcopy(record.job)}
            if "executions" in include:
                reply["Executions"] = {"Items": self._executions(record, request), "NextToken": ""}
            if "history" in include:
                reply["History"] = {"Items": self._history(record, request), "NextToken": ""}
            return reply

    def _api_stop_job(self, request: Request) -> Any:
        body = request.json(required=False)
        reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
        return self.stop_job(request.params["id"], reason or request.arg("reason"))

    def _api_executions(self, request: Request) -> Any:
        with self.cond:
            record = self.find_job(request.params["id"])
            return {"Items": self._executions(record, request), "NextToken": ""}

    def _api_history(self, request: Request) -> Any:
        with self.cond:
            record = self.find_job(request.params["id"])
            return {"Items": self._history(record, request), "NextToken": ""}

    def _api_results(self, request: Request) -> Any:
        with self.cond:
            record = self.find_job(request.params["id"])
            items = [
                copy.deepcopy(e["PublishedResult"])
                for e in record.current()
                if e["ComputeState"]["StateType"] == EXEC_COMPLETED
                and e["PublishedResult"].get("Type")
            ]
            return {"Items": items, "NextToken": ""}

    @staticmethod
    def _selector(text: str) -> list[Any]:
        try:
            return parse_selector(text)
        except InvalidRequirement as exc:
            raise ApiError(f"invalid label selector: {exc}", "BadRequest") from exc

    def _api_list_nodes(self, request: Request) -> Any:
        selectors = [r for text in request.args("labels") for r in self._selector(text)]
        approval = (request.arg("filter-approval") or request.arg("filter_approval")).upper()
        status = request.arg("filter-status").upper()
        with self.cond:
            nodes = [
                n.shape()
                for n in sorted(self.nodes.nodes.values(), key=lambda n: n.node_id)
                if all_match(selectors, n.labels)
                and (not approval or n.membership == approval)
                and (not status or n.status == status)
            ]
            if request.arg("reverse") == "true":
                nodes.reverse()
            return {"Nodes": copy.deepcopy(nodes), "NextToken": ""}

    def _api_get_node(self, request: Request) -> Any:
        with self.cond:
            return {"Node": copy.deepcopy(self.nodes.find(request.params["id"]).shape())}

    def _api_put_node(self, request: Request) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError("request body must be an object", "BadRequest")
        action = str(body.get("Action", "")).lower()
        with self.cond:
            record = self.nodes.find(request.params["id"])
            success, error = self.nodes.decide(record, action)
            self.log.info("node membership", node=record.node_id, action=action, ok=success)
            self.cond.notify_all()
            return {"Success": success, "Error": error}
