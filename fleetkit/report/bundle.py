"""The evidence bundle: the report, the raw outputs of chosen runs, and a manifest of hashes.

An auditor receives one ``.tar.gz``: ``report.html``, ``runs/RUN.EXT`` (each
run's merged output exactly as the run printed it) and ``manifest.json``
(SHA-256 and size of every file, each run's SQL, times and per-node osquery
and Bacalhau versions, the fleetkit version). :func:`check_bundle` proves
that no file changed, went missing or was added since the bundle was written.

What the hashes do not prove: who wrote the bundle. Someone who rewrites a
file *and* the manifest is not caught; :func:`write_bundle` returns the
manifest's own SHA-256 so it can be recorded elsewhere (a ticket, a signed
message) and compared with what :func:`check_bundle` reports.

A bundle to check is hostile input: it is never extracted. Members are
streamed from the archive in memory, one at a time, with caps on the
compressed size, the decompressed size, each member, the member count and
the manifest; anything but plain files with plain relative names (absolute
paths, ``..``, links, devices, duplicates, sparse files) is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fleetkit.foundation.atomic import atomic_output
from fleetkit.foundation.status import ConfigError, UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.report.html import render_html, unwritable
from fleetkit.report.model import FleetReport

FORMAT = "fleetkit-evidence/1"
MANIFEST = "manifest.json"
REPORT = "report.html"
RUNS_DIR = "runs"

#: Caps when checking a bundle (a tar bomb stops at the first one crossed).
MAX_BUNDLE_BYTES = 2 * 1024**3
MAX_TOTAL_BYTES = 8 * 1024**3
MAX_MEMBER_BYTES = 4 * 1024**3
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 16 * 1024**2

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: File extension of a run's output, by the format it was printed in.
EXTENSIONS = {"json": "json", "ndjson": "ndjson", "csv": "csv", "table": "txt"}
_CHUNK = 1024 * 1024


class BundleError(ConfigError):
    """The bundle cannot be checked: unreadable, not a bundle, or refused as hostile."""


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class NodeVersions:
    """What one node ran when it answered: the osquery and Bacalhau versions it reported."""

    node_id: str
    hostname: str
    osquery_version: str | None = None
    bacalhau_version: str | None = None


@dataclass(frozen=True)
class BundleRun:
    """One run to include: its facts and its merged output, byte for byte as printed."""

    run_id: str
    kind: str
    sql: str
    started_at: datetime
    output: bytes
    output_format: str = "json"
    finished_at: datetime | None = None
    nodes: tuple[NodeVersions, ...] = ()

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
    files: dict[str, bytes] = {REPORT: render_html(model).encode("utf-8")}
    for run in runs:
        files[run.file_name] = run.output
    manifest = _manifest_bytes(model, runs, files)
    mtime = int(model.generated_at.timestamp())
    target = Path(path)
    try:
        with (
            atomic_output(target) as handle,
            gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=mtime) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name, data in [(MANIFEST, manifest), *files.items()]:
                tar.addfile(_member(name, len(data), mtime), io.BytesIO(data))
    except OSError as exc:
        raise unwritable(target, exc) from None
    return BundleWritten(target, (MANIFEST, *files), hashlib.sha256(manifest).hexdigest())


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
    model: FleetReport, runs: Sequence[BundleRun], files: Mapping[str, bytes]
) -> bytes:
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "fleetkit_version": model.fleetkit_version,
        "generated_at": _iso(model.generated_at),
        "since": _iso(model.since),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in files.items()
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
                "nodes": [
                    {
                        "node_id": node.node_id,
                        "hostname": node.hostname,
                        "osquery_version": node.osquery_version,
                        "bacalhau_version": node.bacalhau_version,
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


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Limits:
    """How much of a bundle :func:`check_bundle` is willing to read."""

    bundle_bytes: int = MAX_BUNDLE_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    member_bytes: int = MAX_MEMBER_BYTES
    members: int = MAX_MEMBERS
    manifest_bytes: int = MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class BundleCheck:
    """What :func:`check_bundle` found; ``ok`` when every file is exactly as recorded."""

    path: Path
    checked: tuple[str, ...]
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]
    manifest_sha256: str

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.added)

    def problems(self) -> list[str]:
        """One line per file that is not as recorded (names made safe for a terminal)."""
        lines = [f"changed: {terminal_safe(name)}" for name in self.changed]
        lines += [f"missing: {terminal_safe(name)}" for name in self.missing]
        lines += [f"added: {terminal_safe(name)}" for name in self.added]
        return lines


def check_bundle(path: str | Path, *, limits: Limits = Limits()) -> BundleCheck:
    """Verify every file of the bundle at ``path`` against its manifest, without extracting.

    Raises :class:`BundleError` (bad input, exit 2) when the file is unreadable,
    is not a bundle, or is refused as hostile; returns a :class:`BundleCheck`
    naming the files that changed, are missing or were added otherwise.
    """
    source = Path(path)
    where = str(source)
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise BundleError(f"cannot read the bundle: {exc.strerror or exc}", file=where) from None
    if size > limits.bundle_bytes:
        raise BundleError(f"refused: {size:,} bytes, more than {limits.bundle_bytes:,}", file=where)
    try:
        with source.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            digests, manifest = _read_members(_Capped(gz, limits.total_bytes, where), limits, where)
    except BundleError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BundleError(f"not a readable .tar.gz: {exc}", file=where) from None
    if manifest is None:
        raise BundleError(f"no {MANIFEST}: not a fleetkit evidence bundle", file=where)
    recorded = _parse_manifest(manifest, where)
    present = {name: digest for name, digest in digests.items() if name != MANIFEST}
    return BundleCheck(
        path=source,
        checked=tuple(sorted(set(recorded) & set(present))),
        changed=tuple(sorted(n for n in recorded if n in present and present[n] != recorded[n])),
        missing=tuple(sorted(n for n in recorded if n not in present)),
        added=tuple(sorted(n for n in present if n not in recorded)),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
    )


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Capped(io.RawIOBase):
    """A readable stream that refuses to give more than ``cap`` bytes (a tar bomb's end)."""

    def __init__(self, inner: _Readable, cap: int, where: str) -> None:
        self._inner = inner
        self._left = cap
        self._cap = cap
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(min(len(view), self._left + 1))
        if len(data) > self._left:
            raise BundleError(
                f"refused: decompresses to more than {self._cap:,} bytes", file=self._where
            )
        self._left -= len(data)
        view[: len(data)] = data
        return len(data)


#: (sha256, size) of one file.
Digest = tuple[str, int]


def _read_members(
    stream: _Capped, limits: Limits, where: str
) -> tuple[dict[str, Digest], bytes | None]:
    """Hash every member in one pass; keep only the manifest's bytes."""
    digests: dict[str, Digest] = {}
    manifest: bytes | None = None
    reader = io.BufferedReader(stream, buffer_size=_CHUNK)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for count, member in enumerate(tar, start=1):
            if count > limits.members:
                raise BundleError(f"refused: more than {limits.members:,} members", file=where)
            name = _refuse_unsafe(member, limits, where)
            if name in digests:
                raise BundleError(f"refused: member {_shown(name)} appears twice", file=where)
            handle = tar.extractfile(member)
            if handle is None:  # pragma: no cover - regular files always have data
                raise BundleError(f"refused: member {_shown(name)} has no data", file=where)
            hasher = hashlib.sha256()
            kept = bytearray()
            keep = name == MANIFEST
            if keep and member.size > limits.manifest_bytes:
                raise BundleError(f"refused: {MANIFEST} is larger than expected", file=where)
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
                if keep:
                    kept += chunk
            digests[name] = (hasher.hexdigest(), member.size)
            if keep:
                manifest = bytes(kept)
    return digests, manifest


def _shown(name: str) -> str:
    return repr(terminal_safe(name[:200]))


def safe_member_name(name: str) -> bool:
    """A plain relative POSIX path: no absolute path, ``..``, backslash or control character."""
    return (
        0 < len(name) <= 255
        and not name.startswith("/")
        and "\\" not in name
        and terminal_safe(name) == name
        and posixpath.normpath(name) == name
        and ".." not in name.split("/")
    )


def _refuse_unsafe(member: tarfile.TarInfo, limits: Limits, where: str) -> str:
    name = member.name
    if not safe_member_name(name):
        raise BundleError(f"refused: unsafe member name {_shown(name)}", file=where)
    if not member.isreg() or member.issparse():
        raise BundleError(f"refused: member {_shown(name)} is not a plain file", file=where)
    if member.size > limits.member_bytes:
        raise BundleError(
            f"refused: member {_shown(name)} is {member.size:,} bytes, more than "
            f"{limits.member_bytes:,}",
            file=where,
        )
    return name


def _parse_manifest(data: bytes, where: str) -> dict[str, Digest]:
    """The files the manifest records, strictly validated: name -> (sha256, size)."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{MANIFEST} is not valid JSON ({exc})", file=where) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST} is not a {FORMAT} manifest", file=where, key="format")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{MANIFEST} has no files object", file=where, key="files")
    recorded: dict[str, Digest] = {}
    for name, entry in files.items():
        key = f"files.{terminal_safe(name[:200])}"
        if not safe_member_name(name) or name == MANIFEST:
            raise BundleError(f"{MANIFEST} names an unsafe file", file=where, key=key)
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError("sha256 is not 64 lowercase hex digits", file=where, key=key)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError("bytes is not a size", file=where, key=key)
        recorded[name] = (digest, size)
    return recorded
