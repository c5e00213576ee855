"""Shared by the lab benchmarks: fleetkit's CLI run in-process on a lab, timed and counted.

Commands go through the real Invoke tasks exactly as the end-to-end tests
run them (``tests/e2e/conftest.py`` ``run_cli``: the user's argv, parsed by
Invoke, one Runtime, the one exit-code mapping), so a figure here is what a
user's command costs. Each measurement also takes the lab's counters
(:mod:`lab.counters`) before and after: SSH logins, exec channels and round
trips per host, requests to the orchestrator's API.
"""

from __future__ import annotations

import os
import resource
import socket
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fleetkit.foundation.settings import SSHSettings  # noqa: E402
from lab.counters import Snapshot, snapshot, usage  # noqa: E402
from lab.fleet import Lab  # noqa: E402
from lab.hosts import LabHost  # noqa: E402
from tests.e2e.conftest import orchestrator_nodes, run_cli, wait_connected  # noqa: E402

__all__ = [
    "Lab",
    "Measured",
    "load_average",
    "machine_busy_seconds",
    "measure",
    "median",
    "process_cpu",
    "ssh_floor",
    "wait_joined",
]


@dataclass(frozen=True)
class Measured:
    """One command on one lab: wall time, exit code, and what it cost on the wire."""

    argv: tuple[str, ...]
    seconds: float
    exit_code: int
    usage: Snapshot
    #: CPU seconds of this process (fleetkit's client: the command runs in-process).
    cpu: float = 0.0
    #: CPU seconds of the whole machine meanwhile (lab hosts, proxy and other work included).
    machine_cpu: float = 0.0


def machine_busy_seconds() -> float:
    """CPU seconds every core has spent busy since boot (all processes: lab, tools, others)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu() -> float:
    """CPU seconds of this process, all threads (user + system)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def measure(lab: Lab, *argv: str, ok: Iterable[int] = (0,)) -> Measured:
    """Run one fleetkit command; an unexpected exit code ends the benchmark with its output."""
    before = snapshot(lab)
    cpu, busy = process_cpu(), machine_busy_seconds()
    started = time.perf_counter()
    result = run_cli(lab, *argv)
    elapsed = time.perf_counter() - started
    cpu, busy = process_cpu() - cpu, machine_busy_seconds() - busy
    after = snapshot(lab)
    if result.exit_code not in set(ok):
        command = " ".join(argv)
        raise SystemExit(
            f"`{command}` exited {result.exit_code} on {lab.workdir}:\n{result.output[-4000:]}"
        )
    return Measured(tuple(argv), elapsed, result.exit_code, usage(before, after), cpu, busy)


def ssh_floor(lab: Lab, parallelism: int | None = None) -> Measured:
    """The floor of any SSH fan-out here: plain Paramiko, connect + ``true`` on every compute host.

    Same pool size as fleetkit's default ``ssh.parallelism`` (the lab keeps it), same
    keys and pinned host keys, TCP_NODELAY; nothing of fleetkit. What a command costs
    above this is fleetkit's.
    """
    key = paramiko.Ed25519Key.from_private_key_file(str(lab.identity_file))

    def touch(host: LabHost) -> None:
        with paramiko.SSHClient() as client:
            client.load_host_keys(str(lab.known_hosts_path))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                host.address,
                port=host.client_port,
                username="root",
                pkey=key,
                look_for_keys=False,
                allow_agent=False,
                timeout=60,
                banner_timeout=60,
            )
            transport = client.get_transport()
            assert transport is not None
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _, out, _ = client.exec_command("true")
            if out.channel.recv_exit_status() != 0:
                raise SystemExit(f"`true` failed on {host.name}")

    before = snapshot(lab)
    cpu, busy = process_cpu(), machine_busy_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallelism or SSHSettings("").parallelism) as pool:
        list(pool.map(touch, lab.compute_hosts))
    elapsed = time.perf_counter() - started
    cpu, busy = process_cpu() - cpu, machine_busy_seconds() - busy
    return Measured(("ssh-floor",), elapsed, 0, usage(before, snapshot(lab)), cpu, busy)


def load_average() -> str:
    """The machine's 1-minute load average (other work on a shared machine shows here)."""
    return Path("/proc/loadavg").read_text().split()[0]


def wait_joined(lab: Lab, timeout: float = 300.0, *, strict: bool = True) -> list[str]:
    """Every compute node CONNECTED at the orchestrator (agents join on their own).

    Returns the nodes still missing after ``timeout`` (with ``strict``, ends the
    benchmark instead); the end of each one's agent log is printed, since the lab
    and its logs are gone once the benchmark ends.
    """
    names = [h.name for h in lab.compute_hosts]
    try:
        wait_connected(lab, names, timeout=timeout)
        return []
    except AssertionError:
        pass
    connected = {
        n["Info"]["NodeID"]
        for n in orchestrator_nodes(lab)
        if (n.get("ConnectionState") or {}).get("Status") == "CONNECTED"
    }
    missing = [name for name in names if name not in connected]
    for name in missing[:5]:
        host = lab.host(name)
        tail = "(host not running)"
        if host.is_running():
            tail = host.sh("tail -c 1500 /var/log/bacalhau.log 2>&1", check=False).stdout
        print(f"{name} did not join within {timeout:g} s; its agent log ends:\n{tail}")
    if strict:
        raise SystemExit(f"{len(missing)} of {len(names)} nodes did not join: {missing[:20]}")
    return missing


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
