"""Facts about installed software: a package's version, a binary's hash, a tool's answer."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from fleetkit.hostfacts.facts.base import Fact, Raw, is_present, present_if

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PackageState:
    #: The installed version (dpkg status "ii"), None when not installed.
    version: str | None
    #: What dpkg-query said when it found nothing (for evidence).
    detail: str = ""


@dataclass(frozen=True)
class PackageVersion(Fact[PackageState]):
    """A Debian package's installed version (removed-but-configured counts as absent)."""

    package: str

    def command(self) -> str:
        return f"dpkg-query -W -f='${{db:Status-Abbrev}}${{Version}}' {shlex.quote(self.package)}"

    def parse(self, raw: Raw) -> PackageState:
        if not raw.ok:
            return PackageState(None, raw.said())
        status, _, version = raw.text.strip().partition(" ")
        version = version.strip()
        if status.strip() != "ii" or not version:
            return PackageState(None, f"dpkg status {status.strip() or 'unknown'}")
        return PackageState(version)


@dataclass(frozen=True)
class BinaryState:
    #: SHA-256 of the installed file, None when there is none.
    sha256: str | None
    mode: int | None
    #: fleetkit's record of the tarball that produced it: (tarball sha256, binary sha256).
    record: tuple[str, ...] = ()


@dataclass(frozen=True)
class BinaryLook(Fact[BinaryState]):
    """An installed executable: its hash and mode, and fleetkit's record of its source."""

    path: str
    record_path: str

    def command(self) -> str:
        p = shlex.quote(self.path)
        return (
            f"if [ -f {p} ]; then sha256sum {p} | cut -d' ' -f1; stat -c %a {p}; "
            f"else echo -; echo -; fi; cat {shlex.quote(self.record_path)} 2>/dev/null || true"
        )

    def parse(self, raw: Raw) -> BinaryState:
        lines = [*raw.text.split("\n"), "", "", ""][:3]
        sha = lines[0].strip()
        try:
            mode: int | None = int(lines[1].strip(), 8)
        except ValueError:
            mode = None
        return BinaryState(
            sha if _SHA256.fullmatch(sha) else None, mode, tuple(lines[2].split()[:2])
        )


@dataclass(frozen=True)
class CommandExists(Fact[bool]):
    """A command on the host's PATH (``docker``)."""

    name: str

    def command(self) -> str:
        return present_if(f"command -v {shlex.quote(self.name)} >/dev/null 2>&1")

    def parse(self, raw: Raw) -> bool:
        return is_present(raw)


@dataclass(frozen=True)
class VersionAnswer:
    """What ``bacalhau version --client`` answered."""

    exit_code: int
    version: str | None
    said: str


def parse_client_version(text: str) -> str | None:
    """``bacalhau version --client`` output (JSON or the table) -> ``v1.9.3``."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        client = data.get("clientVersion") or data.get("ClientVersion") or data
        if isinstance(client, dict) and client.get("GitVersion"):
            return str(client["GitVersion"])
    for line in text.splitlines():
        for word in line.split():
            if word.startswith("v") and word[1:2].isdigit():
                return word
    return None


@dataclass(frozen=True)
class ClientVersion(Fact[VersionAnswer]):
    """The version an installed Bacalhau binary reports (127: not installed)."""

    binary: str
    timeout: int = 20

    def command(self) -> str:
        return f"timeout {self.timeout} {shlex.quote(self.binary)} version --client --output json"

    def parse(self, raw: Raw) -> VersionAnswer:
        version = parse_client_version(raw.text) if raw.ok else None
        return VersionAnswer(raw.exit_code, version, raw.said())


@dataclass(frozen=True)
class OsqueryAnswer(Fact[Raw]):
    """osqueryi's answer to ``sql`` through the daemon's socket (judged by the caller)."""

    socket: str
    sql: str
    timeout: int = 20

    def command(self) -> str:
        return (
            f"timeout {self.timeout} osqueryi --connect={shlex.quote(self.socket)} "
            f"--json {shlex.quote(self.sql)}"
        )

    def parse(self, raw: Raw) -> Raw:
        return raw


@dataclass(frozen=True)
class DockerVersion(Fact[Raw]):
    """The Docker server's version, or why there is none."""

    timeout: int = 20

    def command(self) -> str:
        return (
            "command -v docker >/dev/null 2>&1 || "
            "{ echo 'docker: command not found' >&2; exit 127; }; "
            f"timeout {self.timeout} docker version --format 'server {{{{.Server.Version}}}}'"
        )

    def parse(self, raw: Raw) -> Raw:
        return raw
