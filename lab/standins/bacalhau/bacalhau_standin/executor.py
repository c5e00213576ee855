"""Running one ops execution on the host: the stand-in has no container engine.

The docker task's ``Entrypoint + Parameters`` run directly as argv (no shell)
in their own process group, with ``EnvironmentVariables``, ``Env`` and
``WorkingDirectory``. Local input sources must be allow-listed and their
``Target`` must equal ``SourcePath`` (no container means no remapping).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .allowlist import NotAllowed, check_local_path
from .models import (
    EXEC_BID_ACCEPTED,
    EXEC_COMPLETED,
    EXEC_FAILED,
    EXEC_PUBLISHING,
    EXEC_RUNNING,
)
from .s3 import Credentials, PublishError, publish

MAX_OUTPUT = 2048
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOCAL_TYPES = ("local", "localDirectory")

Report = Callable[[dict[str, Any]], None]


class ExecutionFailed(Exception):
    """Stops the execution as Failed with this message."""


@dataclass
class NodeContext:
    """What every execution on this node needs to know."""

    node_id: str
    allow_list: list[str]
    env_allow_list: list[str]
    environ: Mapping[str, str]

    @property
    def credentials(self) -> Credentials | None:
        return Credentials.from_environ(self.environ)


def run_output(stdout: bytes, stderr: bytes, exit_code: int, error: str = "") -> dict[str, Any]:
    """``models.RunCommandResult`` with the real 2048-byte caps."""
    return {
        "Stdout": stdout[:MAX_OUTPUT].decode("utf-8", "replace"),
        "StdoutTruncated": len(stdout) > MAX_OUTPUT,
        "stderr": stderr[:MAX_OUTPUT].decode("utf-8", "replace"),
        "StderrTruncated": len(stderr) > MAX_OUTPUT,
        "ExitCode": exit_code,
        "ErrorMsg": error,
    }


@dataclass
class Execution:
    """One execution: prepare, run, publish, report each state to the orchestrator."""

    execution: dict[str, Any]
    job: dict[str, Any]
    node: NodeContext
    report: Report
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def execution_id(self) -> str:
        return str(self.execution["ID"])

    @property
    def task(self) -> dict[str, Any]:
        return dict(self.job["Tasks"][0])

    def _send(self, compute_state: int, message: str = "", **extra: Any) -> None:
        self.report(
            {
                "ExecutionID": self.execution_id,
                "ComputeState": compute_state,
                "Message": message,
                **extra,
            }
        )

    def cancel(self, reason: str) -> None:
        """Kill the process group. An orchestrator's cancel is already final there; a
        node shutting down reports the execution Failed (it did not finish)."""
        self.cancel_reason = reason
        self.cancelled.set()
        self._kill()

    def _kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def run(self) -> None:
        self._send(EXEC_BID_ACCEPTED)
        try:
            argv, env, cwd = self._prepare()
            stdout, stderr, code, timed_out = self._execute(argv, env, cwd)
        except ExecutionFailed as exc:
            self._send(EXEC_FAILED, str(exc))
            return
        if self.cancelled.is_set():
            self._send(EXEC_FAILED, self.cancel_reason)
            return
        if timed_out:
            message = f"execution timed out after {timed_out}s"
            self._send(EXEC_FAILED, message, RunOutput=run_output(stdout, stderr, code, message))
            return
        output = run_output(stdout, stderr, code)
        try:
            published = self._publish(stdout, stderr, code)
        except PublishError as exc:
            self._send(EXEC_FAILED, f"failed to publish result: {exc}", RunOutput=output)
            return
        extra: dict[str, Any] = {"RunOutput": output}
        if published:
            extra["PublishedResult"] = published
        self._send(EXEC_COMPLETED, "", **extra)

    # ---- preparation -----------------------------------------------------------------------
    def _prepare(self) -> tuple[list[str], dict[str, str], str]:
        task = self.task
        params = task["Engine"].get("Params") or {}
        for source in task.get("InputSources") or []:
            self._check_input(source)
        argv = [str(a) for a in (params.get("Entrypoint") or [])]
        argv += [str(a) for a in (params.get("Parameters") or [])]
        if not argv:
            raise ExecutionFailed("no Entrypoint or Parameters: the stand-in has no image to run")
        env = self._environment(task, params)
        program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env["PATH"])
        if not program:
            raise ExecutionFailed(
                f'failed to start container: exec: "{argv[0]}": executable file not found in $PATH'
            )
        cwd = str(params.get("WorkingDirectory") or "/")
        if not os.path.isdir(cwd):
            raise ExecutionFailed(f"failed to start container: working directory {cwd} not found")
        return [program, *argv[1:]], env, cwd

    def _check_input(self, source: dict[str, Any]) -> None:
        spec = source.get("Source") or {}
        kind = str(spec.get("Type") or "")
        if kind not in _LOCAL_TYPES:
            raise ExecutionFailed(f"input source type {kind} is not supported by the stand-in")
        params = spec.get("Params") or {}
        path = str(params.get("SourcePath") or "")
        target = str(source.get("Target") or "")
        try:
            check_local_path(self.node.allow_list, path, bool(params.get("ReadWrite")))
        except NotAllowed as exc:
            raise ExecutionFailed(str(exc)) from exc
        if target != path:
            raise ExecutionFailed(
                f"input source target {target} must equal its SourcePath {path}: "
                "the stand-in runs on the host and cannot remap paths"
            )
        if not os.path.exists(path):
            raise ExecutionFailed(f"volume {path} does not exist")

    def _environment(self, task: dict[str, Any], params: dict[str, Any]) -> dict[str, str]:
        env = {
            "PATH": _PATH,
            "HOME": "/root" if os.geteuid() == 0 else self.node.environ.get("HOME", "/"),
            "LANG": "C.UTF-8",
            "BACALHAU_JOB_ID": self.job["ID"],
            "BACALHAU_JOB_NAME": self.job["Name"],
            "BACALHAU_JOB_NAMESPACE": self.job["Namespace"],
            "BACALHAU_JOB_TYPE": self.job["Type"],
            "BACALHAU_EXECUTION_ID": self.execution_id,
            "BACALHAU_NODE_ID": self.node.node_id,
            "BACALHAU_PARTITION_INDEX": "0",
            "BACALHAU_PARTITION_COUNT": "1",
        }
        for name, value in (task.get("Env") or {}).items():
            text = str(value)
            if text.startswith("env:"):
                source = text[4:]
                if source not in self.node.env_allow_list:
                    raise ExecutionFailed(
                        f"env var {name}: host variable {source} is not in Compute.Env.AllowList"
                    )
                text = self.node.environ.get(source, "")
            env[str(name)] = text
        for item in params.get("EnvironmentVariables") or []:
            name, _, value = str(item).partition("=")
            env[name] = value
        return env

    # ---- running ---------------------------------------------------------------------------
    def _timeout(self) -> int:
        timeouts = self.task.get("Timeouts") or {}
        return int(timeouts.get("ExecutionTimeout") or timeouts.get("TotalTimeout") or 0)

    def _execute(
        self, argv: list[str], env: dict[str, str], cwd: str
    ) -> tuple[bytes, bytes, int, int]:
        try:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutionFailed(f"failed to start container: {exc}") from exc
        if self.cancelled.is_set():
            self._kill()
        self._send(EXEC_RUNNING)
        limit = self._timeout()
        timed_out = 0
        try:
            stdout, stderr = self.process.communicate(timeout=limit or None)
        except subprocess.TimeoutExpired:
            timed_out = limit
            self._kill()
            stdout, stderr = self.process.communicate()
        code = self.process.returncode
        return stdout, stderr, (128 - code if code < 0 else code), timed_out

    def _publish(self, stdout: bytes, stderr: bytes, code: int) -> dict[str, Any] | None:
        publisher = self.task.get("Publisher") or {}
        kind = str(publisher.get("Type") or "").lower()
        if kind in ("", "noop"):
            return None
        if kind != "s3":
            raise PublishError(f"publisher {kind} is not supported by the stand-in")
        creds = self.node.credentials
        if creds is None:
            raise PublishError("no AWS credentials in the compute node's environment")
        self._send(EXEC_PUBLISHING)
        files = {"stdout": stdout, "stderr": stderr, "exitCode": str(code).encode()}
        ids = (self.job["ID"], self.execution_id, self.node.node_id)
        return publish(publisher.get("Params") or {}, files, ids, creds, self.node.environ)
