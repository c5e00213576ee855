"""Packages: getting the pinned osquery .deb and Bacalhau tarball, verified.

Push mode (air-gapped fleets, the lab): the admin machine reads the local
file or downloads the URL once into ``settings.cache_dir``, checks the SHA-256
pinned in the settings, and only then uploads to hosts. Pull mode: each host
downloads with curl or wget and checks with ``sha256sum`` (the shell snippets
live here too, so both modes share one wording of the mismatch error).
Either way a mismatch refuses the package before anything is installed and
names the file and both hashes.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from fleetkit.foundation.settings import PackageSource, Settings
from fleetkit.foundation.status import FleetkitError

#: Exit code of the host-side verification snippet on a hash mismatch.
MISMATCH_EXIT = 86
#: Exit code of the host-side download snippet when neither curl nor wget exists.
NO_DOWNLOADER_EXIT = 87
#: Exit code of an install after which dpkg reports another version than the pinned one.
VERSION_EXIT = 88
#: Exits whose last stderr line is the whole story (shown as is, without "failed (exit N)").
SELF_EXPLAINED_EXITS = frozenset({MISMATCH_EXIT, NO_DOWNLOADER_EXIT, VERSION_EXIT})


class PackageError(FleetkitError):
    """A package cannot be obtained or does not have its pinned hash."""


@dataclass(frozen=True)
class PackageRef:
    """A package a plan needs: which setting pins it, and what to take from it."""

    what: str
    #: settings key of the package (``osquery.package``), for messages.
    setting: str
    source: PackageSource
    #: For a tarball: the one member to install (``bacalhau``); None = the file itself.
    member: str | None = None


@dataclass(frozen=True)
class Artifact:
    """A verified package on the admin machine, and what gets uploaded from it."""

    ref: PackageRef
    path: Path
    payload: bytes

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mismatch_message(file: str, ref: PackageRef, actual: str, settings_file: str) -> str:
    return (
        f"{file}: SHA-256 mismatch: expected {ref.source.sha256} "
        f"(pinned in {settings_file} {ref.setting}.sha256), got {actual}; "
        "refusing to install it"
    )


class PackageStore:
    """Verified packages for push mode, fetched at most once per run."""

    def __init__(
        self,
        settings: Settings,
        session_factory: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self._artifacts: dict[PackageRef, Artifact] = {}
        self._lock = threading.Lock()

    def prepare(self, refs: list[PackageRef]) -> None:
        """Fetch and verify every package now, before any host is contacted."""
        for ref in dict.fromkeys(refs):
            self.artifact(ref)

    def artifact(self, ref: PackageRef) -> Artifact:
        with self._lock:
            if ref not in self._artifacts:
                path = self._verified_file(ref)
                self._artifacts[ref] = Artifact(ref, path, self._payload(ref, path))
            return self._artifacts[ref]

    def _verified_file(self, ref: PackageRef) -> Path:
        if ref.source.is_url:
            return self._download(ref)
        path = Path(ref.source.source)
        if not path.is_file():
            raise PackageError(f"{path}: package file not found ({ref.setting}.source)")
        actual = sha256_of(path)
        if actual != ref.source.sha256:
            raise PackageError(mismatch_message(str(path), ref, actual, self.settings.path))
        return path

    def _download(self, ref: PackageRef) -> Path:
        cache = Path(self.settings.cache_dir)
        target = cache / ref.source.filename
        if target.is_file() and sha256_of(target) == ref.source.sha256:
            return target
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{target.name}.")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle, self.session_factory() as session:
                response = session.get(ref.source.source, stream=True, timeout=60)
                response.raise_for_status()
                for chunk in response.iter_content(1 << 20):
                    handle.write(chunk)
            actual = sha256_of(tmp)
            if actual != ref.source.sha256:
                raise PackageError(
                    mismatch_message(ref.source.source, ref, actual, self.settings.path)
                )
            os.replace(tmp, target)
        except requests.RequestException as exc:
            raise PackageError(f"{ref.source.source}: download failed: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return target

    @staticmethod
    def _payload(ref: PackageRef, path: Path) -> bytes:
        data = path.read_bytes()
        if ref.member is None:
            return data
        return extract_member(data, ref.member, file=str(path))


def extract_member(tarball: bytes, member: str, *, file: str) -> bytes:
    """The one regular file ``member`` of a .tar.gz (release tarballs hold just the binary)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*") as archive:
            for info in archive.getmembers():
                if info.isfile() and Path(info.name).name == member:
                    extracted = archive.extractfile(info)
                    if extracted is not None:
                        return extracted.read()
    except (tarfile.TarError, OSError) as exc:
        raise PackageError(f"{file}: not a readable tarball: {exc}") from None
    raise PackageError(f"{file}: the tarball holds no file named {member!r}")


def download_script(url: str, dest: str) -> str:
    """Host-side download with curl or wget, whichever exists; a clear error if neither.

    ``dest`` is a shell word as written (e.g. ``"$d/pkg"``), not quoted again.
    """
    u, d = shlex.quote(url), dest
    return (
        "if command -v curl >/dev/null 2>&1; then "
        f"curl -fsSL --retry 2 -o {d} {u}; "
        "elif command -v wget >/dev/null 2>&1; then "
        f"wget -q -O {d} {u}; "
        "else echo 'neither curl nor wget is installed on this host: install one, or use "
        f"transfer_mode: push' >&2; exit {NO_DOWNLOADER_EXIT}; fi"
    )


def verify_script(path: str, ref: PackageRef, settings_file: str) -> str:
    """Host-side SHA-256 check; deletes the file and names both hashes on a mismatch.

    ``path`` is a shell word as written (e.g. ``"$f"``).
    """
    p = path
    expected = ref.source.sha256
    shown = ref.source.filename
    message = shlex.quote(
        f"{shown}: SHA-256 mismatch: expected {expected} (pinned in {settings_file} "
        f"{ref.setting}.sha256), got "
    )
    return (
        f'actual=$(sha256sum {p} | cut -d" " -f1); '
        f'if [ "$actual" != {expected} ]; then rm -f {p}; '
        f'echo {message}"$actual; refusing to install it" >&2; exit {MISMATCH_EXIT}; fi'
    )
