"""Shared by the lab benchmarks: fleetkit's CLI run in-process on a lab, timed and counted.

Commands go through the real Invoke tasks exactly as the end-to-end tests
run them (``tests/e2e/conftest.py`` ``run_cli``: the user's argv, parsed by
Invoke, one Runtime, the one exit-code mapping), so a figure here is what a
user's command costs. Each measurement also takes the lab's counters
(:mod:`lab.counters`) before and after: SSH logins, exec channels and round
trips per host, requests to the orchestrator's API.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab.counters import Snapshot, snapshot, usage  # noqa: E402
from lab.fleet import Lab  # noqa: E402
from tests.e2e.conftest import run_cli, wait_connected  # noqa: E402

__all__ = ["Lab", "Measured", "measure", "median", "wait_joined"]


@dataclass(frozen=True)
class Measured:
    """One command on one lab: wall time, exit code, and what it cost on the wire."""

    argv: tuple[str, ...]
    seconds: float
    exit_code: int
    usage: Snapshot


def measure(lab: Lab, *argv: str, ok: Iterable[int] = (0,)) -> Measured:
    """Run one fleetkit command; an unexpected exit code ends the benchmark with its output."""
    before = snapshot(lab)
    started = time.perf_counter()
    result = run_cli(lab, *argv)
    elapsed = time.perf_counter() - started
    after = snapshot(lab)
    if result.exit_code not in set(ok):
        command = " ".join(argv)
        raise SystemExit(
            f"`{command}` exited {result.exit_code} on {lab.workdir}:\n{result.output[-4000:]}"
        )
    return Measured(tuple(argv), elapsed, result.exit_code, usage(before, after))


def wait_joined(lab: Lab, timeout: float = 300.0) -> None:
    """Every compute node CONNECTED at the orchestrator (not timed: agents join on their own)."""
    wait_connected(lab, [h.name for h in lab.compute_hosts], timeout=timeout)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
