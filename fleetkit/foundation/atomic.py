"""One way to write a file that appears whole or not at all.

Every file fleetkit writes on the admin machine (``--output``, pinned keys,
onboarded hosts, the quarantine record, downloaded packages, reports) goes
through :func:`atomic_output`: a temporary file in the same directory,
fsync, chmod, rename, then fsync of the directory. On any error or Ctrl-C
the temporary file is removed and an existing file is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_output(path: str | Path, *, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file handle whose content appears at ``path`` only when the block ends well.

    ``mode``: the new file's permissions. When None, an existing file keeps its
    mode and a new one is 0600 (query results and keys can be sensitive).
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def atomic_write(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, mode=mode) as handle:
        handle.write(data)


def fsync_directory(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
