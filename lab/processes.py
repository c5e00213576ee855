"""The lab's helper processes (S3 server, latency proxy): start, recognise, stop.

A helper started by ``invoke lab.up`` must outlive that process (new session,
pid in ``lab.json``); one started by a test fixture must die with it, even on
SIGKILL (``die_with_parent``). A pid read back from ``lab.json`` may have been
reused, so a process is only ever signalled when its command line carries a
marker (the lab's directory or the helper's module name).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: get SIGKILL when the parent (thread) dies.

    For a host, ``unshare --kill-child`` then takes the whole host down, so a
    test session killed outright leaves no lab behind (network namespaces excepted).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    detach: bool,
    cwd: Path | str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a helper with stdout and stderr appended to ``log``, in a session of its own."""
    sink = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
            preexec_fn=None if detach else die_with_parent,
            cwd=cwd,
            env=env,
        )
    finally:
        sink.close()


def alive(pid: int | None, marker: bytes) -> bool:
    """True while ``pid`` runs (not a zombie) and its command line contains ``marker``."""
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return marker in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop(
    pid: int | None, process: subprocess.Popen[bytes] | None, marker: bytes, grace: float = 5
) -> None:
    """SIGTERM, up to ``grace`` seconds, then SIGKILL; reaps it when it is our child."""
    if alive(pid, marker):
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid, marker) and time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                break
            time.sleep(0.02)
        if alive(pid, marker):
            os.kill(pid, signal.SIGKILL)
    if process is not None:
        process.wait(timeout=grace)
