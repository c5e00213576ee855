"""Ops jobs fleetkit submits: what each node runs, and where its output goes.

An ops job runs one task once on every matching node. The task's command is
data (:class:`TaskCommand`: an entrypoint and its argv, never a shell line),
so the osquery question of ``query`` is one command and a later job that
carries a small script answering several questions in one task is another;
both share :func:`build_ops_job` (socket mount, no network, both timeouts,
the S3 publisher).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetkit.clients.bacalhau.models import mapping
from fleetkit.foundation.settings import S3Settings
from fleetkit.foundation.status import UsageError


@dataclass(frozen=True)
class TaskCommand:
    """What the task's container runs: Docker execs ``entrypoint + parameters`` as argv."""

    entrypoint: tuple[str, ...]
    parameters: tuple[str, ...]
    #: ``Tasks[0].Name``; also how a person tells jobs apart at the orchestrator.
    name: str = "osquery"


def osquery_command(sql: str, socket_path: str) -> TaskCommand:
    """``osqueryi --connect=<socket> --json <sql>``; the SQL is one argv element, no shell."""
    if not sql.strip():
        raise UsageError("the SQL query is empty", key="sql")
    return TaskCommand(("osqueryi",), (f"--connect={socket_path}", "--json", sql))


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
    """The ``PUT /orchestrator/jobs`` body that asks every matching node one SQL question."""
    return build_ops_job(
        osquery_command(sql, socket_path),
        image=image,
        socket_dir=socket_dir,
        constraints=constraints,
        execution_timeout=execution_timeout,
        total_timeout=total_timeout,
        s3=s3,
        name=name,
    )


def build_ops_job(
    command: TaskCommand,
    *,
    image: str,
    socket_dir: str,
    constraints: list[dict[str, Any]],
    execution_timeout: int,
    total_timeout: int,
    s3: S3Settings | None,
    name: str | None = None,
    purpose: str = "query",
) -> dict[str, Any]:
    """An ops job running ``command`` once on every node matching ``constraints``.

    The socket *directory* is mounted read-only (not the socket file) because
    a restarted osqueryd recreates the socket inode and a file bind-mount
    would go stale. Both timeouts are always set: without them a hung node
    keeps the job Running forever. ``purpose`` becomes the ``fleetkit`` label.
    """
    if execution_timeout < 1:
        raise UsageError(f"must be at least 1 second, got {execution_timeout}", key="--timeout")
    if total_timeout < execution_timeout:
        raise UsageError(
            f"total timeout {total_timeout}s is shorter than the execution timeout "
            f"{execution_timeout}s",
            key="--timeout",
        )
    task: dict[str, Any] = {
        "Name": command.name,
        "Engine": {
            "Type": "docker",
            "Params": {
                "Image": image,
                "Entrypoint": list(command.entrypoint),
                "Parameters": list(command.parameters),
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
        task["Publisher"] = s3_publisher(s3)
    return {
        "Job": {
            "Name": name or f"fleetkit-{uuid.uuid4()}",
            "Namespace": "default",
            "Type": "ops",
            "Labels": {"fleetkit": purpose},
            "Constraints": [dict(c) for c in constraints],
            "Tasks": [task],
        },
        "Force": False,
    }


def s3_publisher(s3: S3Settings) -> dict[str, Any]:
    """The task's S3 publisher; credentials stay on the nodes, never in the job."""
    params: dict[str, Any] = {
        "Bucket": s3.bucket,
        "Key": s3.key_template,
        "Region": s3.region,
        # plain = every result file is its own object under <Key>/, so
        # <Key>/stdout is the task's stdout as is (no tarball to unpack).
        "Encoding": "plain",
    }
    if s3.endpoint:
        params["Endpoint"] = s3.endpoint
    return {"Type": "s3", "Params": params}


def stdout_key(published_result: Mapping[str, Any]) -> tuple[str, str] | None:
    """(bucket, key) of the ``stdout`` object of an S3 result published with plain encoding.

    None when the result is not S3 or was published as a tarball (gzip
    encoding, key ending ``.tar.gz``): the caller then has only RunOutput.
    """
    if str(published_result.get("Type", "")).lower() != "s3":
        return None
    params = mapping(published_result.get("Params"))
    bucket, key = params.get("Bucket"), params.get("Key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        return None
    if key.endswith((".tar.gz", ".tgz")):
        return None
    return bucket, key.rstrip("/") + "/stdout"
