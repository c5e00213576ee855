"""The evidence bundle: the report, the raw outputs of chosen runs, and a manifest of hashes.

An auditor receives one ``.tar.gz``: ``report.html``, ``runs/RUN.EXT`` (each
run's merged output exactly as ``invoke show RUN`` prints it) and
``manifest.json`` (SHA-256 and size of every file, each run's SQL, times and
per-node osquery and Bacalhau versions, the fleetkit version).
:func:`fleetkit.report.bundlecheck.check_bundle` proves that no file changed,
went missing or was added since the bundle was written.

What the hashes do not prove: who wrote the bundle. Someone who rewrites a
file *and* the manifest is not caught; :func:`write_bundle` returns the
manifest's own SHA-256 so it can be recorded elsewhere (a ticket, a signed
message) and compared with what ``check_bundle`` reports.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from fleetkit.foundation.atomic import atomic_output
from fleetkit.foundation.status import UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.report.html import render_html, unwritable
from fleetkit.report.model import FleetReport

FORMAT = "fleetkit-evidence/1"
MANIFEST = "manifest.json"
REPORT = "report.html"
RUNS_DIR = "runs"


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: File extension of a run's output, by the format it was printed in.
EXTENSIONS = {"json": "json", "ndjson": "ndjson", "csv": "csv", "table": "txt"}
CHUNK = 1024 * 1024
#: What the manifest says about the versions it lists per node.
VERSIONS_SOURCE = (
    "osquery and Bacalhau versions per node as the newest recorded verify run confirmed them "
    "(verified_by, verified_at): the pinned version when its check passed, null when the "
    "check failed, was skipped or the node was never verified"
)


#: (sha256, size) of one file.
Digest = tuple[str, int]


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class NodeVersions:
    """The osquery and Bacalhau versions of one node of a run, and where they were learnt.

    ``verified_by``/``verified_at``: the verify run that confirmed them (None
    for a version learnt elsewhere, or unknown).
    """

    node_id: str
    hostname: str
    osquery_version: str | None = None
    bacalhau_version: str | None = None
    verified_by: str | None = None
    verified_at: datetime | None = None


#: A file's content: bytes, or a readable, seekable binary file (a spooled large output).
Payload = bytes | IO[bytes]


@dataclass(frozen=True)
class BundleRun:
    """One run to include: its facts and its merged output, byte for byte as printed."""

    run_id: str
    kind: str
    sql: str
    started_at: datetime
    output: Payload
    output_format: str = "json"
    finished_at: datetime | None = None
    nodes: tuple[NodeVersions, ...] = ()
    #: ``complete``, or why not (a run whose recording was cut short is evidence too).
    status: str = "complete"

    @property
    def file_name(self) -> str:
        return f"{RUNS_DIR}/{self.run_id}.{EXTENSIONS[self.output_format]}"


@dataclass(frozen=True)
class BundleWritten:
    path: Path
    files: tuple[str, ...]
    #: Record this elsewhere: it is what proves the manifest itself unchanged.
    manifest_sha256: str


def write_bundle(path: str | Path, model: FleetReport, runs: Sequence[BundleRun]) -> BundleWritten:
    """Write the bundle atomically: it appears whole at ``path`` or not at all (mode 0600).

    Bad runs and an unwritable path are bad input (exit 2), checked or failing
    before anything appears at ``path``.

    The archive is reproducible: members in a fixed order, owned by 0:0,
    mode 0644, dated ``model.generated_at``.
    """
    _check_runs(runs)
    files: dict[str, Payload] = {REPORT: render_html(model).encode("utf-8")}
    for run in runs:
        files[run.file_name] = run.output
    digests = {name: _digest(data) for name, data in files.items()}
    manifest = _manifest_bytes(model, runs, digests)
    mtime = int(model.generated_at.timestamp())
    target = Path(path)
    try:
        with (
            atomic_output(target) as handle,
            gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=mtime) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(_member(MANIFEST, len(manifest), mtime), io.BytesIO(manifest))
            for name, data in files.items():
                tar.addfile(_member(name, digests[name][1], mtime), _readable(data))
    except OSError as exc:
        raise unwritable(target, exc) from None
    return BundleWritten(target, (MANIFEST, *files), hashlib.sha256(manifest).hexdigest())


def _readable(data: Payload) -> IO[bytes]:
    if isinstance(data, bytes):
        return io.BytesIO(data)
    data.seek(0)
    return data


def _digest(data: Payload) -> Digest:
    """(sha256, size) of a file's content, read once in chunks."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest(), len(data)
    hasher = hashlib.sha256()
    size = 0
    data.seek(0)
    while chunk := data.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def _check_runs(runs: Sequence[BundleRun]) -> None:
    seen: set[str] = set()
    for run in runs:
        if not _RUN_ID.fullmatch(run.run_id):
            raise UsageError(
                f"run id {terminal_safe(run.run_id)!r} cannot name a file in the bundle",
                key="runs",
            )
        if run.output_format not in EXTENSIONS:
            raise UsageError(
                f"run {run.run_id}: unknown output format {terminal_safe(run.output_format)!r}",
                key="runs",
            )
        if run.run_id in seen:
            raise UsageError(f"run {run.run_id} is given twice", key="runs")
        seen.add(run.run_id)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _manifest_bytes(
    model: FleetReport, runs: Sequence[BundleRun], digests: Mapping[str, Digest]
) -> bytes:
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "fleetkit_version": model.fleetkit_version,
        "generated_at": _iso(model.generated_at),
        "since": _iso(model.since),
        "versions_source": VERSIONS_SOURCE,
        "files": {
            name: {"sha256": digest, "bytes": size} for name, (digest, size) in digests.items()
        },
        "runs": [
            {
                "run_id": run.run_id,
                "kind": run.kind,
                "sql": run.sql,
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
                "file": run.file_name,
                "output_format": run.output_format,
                "status": run.status,
                "nodes": [
                    {
                        "node_id": node.node_id,
                        "hostname": node.hostname,
                        "osquery_version": node.osquery_version,
                        "bacalhau_version": node.bacalhau_version,
                        "verified_by": node.verified_by,
                        "verified_at": _iso(node.verified_at),
                    }
                    for node in run.nodes
                ],
            }
            for run in runs
        ],
    }
    # ASCII only: a host's odd characters (even lone surrogates) stay exact and readable.
    return (json.dumps(manifest, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
