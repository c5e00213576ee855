"""Facts about paths: a file's content and metadata, a directory, a socket, any path."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from fleetkit.hostfacts.facts.base import Fact, Raw, is_present, present_if

#: Bytes of a file fleetkit reads back from a host (its own files are a few KB;
#: a bigger one is reported as such, never read whole).
FILE_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Metadata:
    mode: int
    owner: str
    group: str

    def __str__(self) -> str:
        return f"{self.mode:04o} {self.owner}:{self.group}"


def _metadata(line: bytes) -> Metadata | None:
    fields = line.decode("utf-8", "replace").split()
    if len(fields) < 3:
        return None
    try:
        mode = int(fields[0], 8)
    except ValueError:
        return None
    return Metadata(mode, fields[1], fields[2])


@dataclass(frozen=True)
class FileState:
    exists: bool
    meta: Metadata | None = None
    content: bytes = b""
    #: The file is larger than the limit: ``content`` is only its beginning.
    truncated: bool = False

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


@dataclass(frozen=True)
class FileLook(Fact[FileState]):
    """A regular file: mode, owner, group and (up to ``limit`` bytes of) content."""

    path: str
    limit: int = FILE_LIMIT

    def command(self) -> str:
        p = shlex.quote(self.path)
        return (
            f"if [ -f {p} ]; then stat -c '%a %U %G' {p} && head -c {self.limit + 1} {p}; "
            "else echo -; fi"
        )

    def parse(self, raw: Raw) -> FileState:
        head, _, body = raw.stdout.partition(b"\n")
        meta = _metadata(head) if raw.ok else None
        if meta is None:
            return FileState(exists=False)
        truncated = len(body) > self.limit
        return FileState(True, meta, body[: self.limit], truncated)


@dataclass(frozen=True)
class DirectoryState:
    exists: bool
    meta: Metadata | None = None


@dataclass(frozen=True)
class DirectoryLook(Fact[DirectoryState]):
    path: str

    def command(self) -> str:
        p = shlex.quote(self.path)
        return f"if [ -d {p} ]; then stat -c '%a %U %G' {p}; else echo -; fi"

    def parse(self, raw: Raw) -> DirectoryState:
        meta = _metadata(raw.stdout) if raw.ok else None
        return DirectoryState(meta is not None, meta)


@dataclass(frozen=True)
class PathExists(Fact[bool]):
    """Anything at ``path`` (file, directory, socket, dangling symlink excluded)."""

    path: str

    def command(self) -> str:
        return present_if(f"[ -e {shlex.quote(self.path)} ]")

    def parse(self, raw: Raw) -> bool:
        return is_present(raw)


@dataclass(frozen=True)
class SocketState:
    present: bool
    #: ``ls -l`` of the socket, or why it is not one ("no such file", "exists but is
    #: not a socket").
    detail: str


@dataclass(frozen=True)
class SocketLook(Fact[SocketState]):
    """A unix socket (osqueryd's extensions socket)."""

    path: str

    def command(self) -> str:
        p = shlex.quote(self.path)
        return (
            f"if [ -S {p} ]; then ls -l {p}; "
            f"elif [ -e {p} ]; then ls -l {p}; echo 'exists but is not a socket' >&2; exit 2; "
            "else echo 'no such file' >&2; exit 1; fi"
        )

    def parse(self, raw: Raw) -> SocketState:
        return SocketState(raw.ok, raw.text.strip() if raw.ok else raw.said())
