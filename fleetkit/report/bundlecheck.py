"""Checking an evidence bundle (``invoke report --check-bundle FILE``) without extracting it.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.report.bundle import CHUNK, FORMAT, MANIFEST, Digest

#: Caps when checking a bundle (a tar bomb stops at the first one crossed).
MAX_BUNDLE_BYTES = 2 * 1024**3
MAX_TOTAL_BYTES = 8 * 1024**3
MAX_MEMBER_BYTES = 4 * 1024**3
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 16 * 1024**2

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(ConfigError):
    """The bundle cannot be checked: unreadable, not a bundle, or refused as hostile."""


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


def _read_members(
    stream: _Capped, limits: Limits, where: str
) -> tuple[dict[str, Digest], bytes | None]:
    """Hash every member in one pass; keep only the manifest's bytes."""
    digests: dict[str, Digest] = {}
    manifest: bytes | None = None
    reader = io.BufferedReader(stream, buffer_size=CHUNK)
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
            while chunk := handle.read(CHUNK):
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
