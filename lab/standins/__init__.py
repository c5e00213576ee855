"""Stand-ins for the official osquery and Bacalhau artifacts, built by the lab.

They are real packages (a ``.deb`` and a release-shaped tarball) installed by
fleetkit exactly like the official ones, but their programs are small Python
stand-ins that run on the lab hosts. They never leak into the ``fleetkit``
package. :func:`build_cached` keeps built packages keyed by a digest of the
stand-in sources so that every lab does not rebuild them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "fleetkit-lab-cache"


def source_digest(directory: Path) -> str:
    """SHA-256 over every source file below ``directory`` (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).parts
        if not path.is_file() or path.suffix == ".pyc":
            continue
        if any(part == "__pycache__" or part.startswith(".") for part in relative):
            continue  # caches (__pycache__, .mypy_cache, ...) are not sources
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("FLEETKIT_LAB_CACHE", str(DEFAULT_CACHE)))


def build_cached(name: str, filename: str, build: Callable[[Path], Path]) -> Path:
    """Build the stand-in ``name`` (a directory here) once per source digest.

    Builds go to a private temporary directory and are renamed into place, so
    labs started concurrently by other test sessions never see half a package.
    """
    key = source_digest(HERE / name)[:16]
    target = cache_dir() / f"{name}-{key}"
    if (target / filename).is_file():
        return target / filename
    cache_dir().mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir()))
    try:
        out = scratch / "out"
        out.mkdir()
        package = build(out)
        if package.name != filename:
            package.rename(out / filename)
        # Another session may have won the race; its package is identical.
        with contextlib.suppress(OSError):
            out.rename(target)
        _prune(name, keep=target)
        return target / filename
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


#: Older builds are kept this long, so a lab starting right now still finds its package.
_PRUNE_AFTER = 600.0


def _prune(name: str, keep: Path) -> None:
    """Drop packages built from older sources (labs hold hard links or copies of theirs)."""
    now = time.time()
    for stale in cache_dir().glob(f"{name}-*"):
        if stale == keep or not stale.is_dir() or stale.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > _PRUNE_AFTER:
                shutil.rmtree(stale, ignore_errors=True)
