"""Benchmark: a 200-host lab from bare hosts to the first merged answer, and what it costs.

One lab (control plane + ``--hosts`` compute hosts) at ``--latency``, then
one chain through fleetkit's CLI, each step timed: ``provision`` (bare
hosts), the agents joining the orchestrator, ``verify``, ``query`` through
Bacalhau (the first merged answer). Also measured: the lab's memory per host
(RSS and PSS of each host's processes: its pid namespace plus its
``unshare``), bare and provisioned; the latency proxy's and the S3 server's;
the machine's available memory; and the CPU the idle provisioned lab burns
(heartbeats, long polls, osqueryd), which together say how large a lab this
machine holds.

    python bench/bench_lab200.py [--hosts 200] [--latency 40ms] [--idle 10]

A single chain, not a median: a 200-host lab takes minutes to provision on
2 cores. Needs root, like the lab. The lab lives under a temp dir and is torn down.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleetlab import Lab, measure, wait_joined
from lab.counters import (
    HostMemory,
    cpu_seconds,
    describe,
    host_pids,
    lab_memory,
    process_memory,
)
from lab.latency import parse_delay

#: Heartbeats every 5 s, disconnect after 60 s: 200 agents every second would spend a
#: core of this 2-core machine on heartbeats alone (real fleets use 15 s / 1 min).
RELAXED_HEARTBEATS = {"heartbeat_interval": "5s", "disconnect_timeout": "60s"}

MB = 1 << 20
SQL = "SELECT hostname, cpu_brand, physical_memory FROM system_info"


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) * 1024
    return values


def guard_memory(floor: int = 1536 * MB) -> None:
    """End this process (and with it the lab: its processes die with us) below ``floor``.

    The machine is shared and has no swap: a lab too large must not take the
    other work on it down with an OOM kill.
    """

    def watch() -> None:
        while True:
            available = meminfo()["MemAvailable"]
            if available < floor:
                print(
                    f"MemAvailable {available / MB:.0f} MB < {floor / MB:.0f} MB: "
                    "this lab does not fit; ending now (the lab dies with this process)",
                    flush=True,
                )
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def lab_cores_busy(lab: Lab, seconds: float) -> float:
    """Cores the lab's own processes keep busy, on average over ``seconds``.

    Counted from the CPU time of the lab's processes (hosts, latency proxy, S3),
    not from the machine's load, so other work on a shared machine does not count.
    """
    pids = [pid for found in host_pids(lab).values() for pid in found]
    pids += [p for p in (lab.proxy.pid if lab.proxy else None,) if p]
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / seconds


def memory_line(label: str, memory: dict[str, HostMemory], names: list[str]) -> float:
    """Print the per-host spread; returns the median PSS in MB."""
    pss = [memory[n].pss / MB for n in names]
    rss = [memory[n].rss / MB for n in names]
    procs = [memory[n].processes for n in names]
    print(
        f"{label}: PSS median {statistics.median(pss):.1f} MB (max {max(pss):.1f}), "
        f"RSS median {statistics.median(rss):.1f} MB, "
        f"{statistics.median(procs):g} processes; all hosts PSS {sum(pss):.0f} MB"
    )
    return statistics.median(pss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200, help="compute hosts (default 200)")
    parser.add_argument("--latency", default="40ms", help="one-way delay (0 = direct)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    latency = None if args.latency == "0" else parse_delay(args.latency)
    before = meminfo()
    needed = (args.hosts + 1) * 30 * MB  # ~28 MB PSS per provisioned host (measured)
    if needed > 0.9 * before["MemAvailable"]:
        raise SystemExit(
            f"{args.hosts} hosts need ~{needed / MB / 1024:.1f} GB; only "
            f"{before['MemAvailable'] / MB / 1024:.1f} GB available"
        )
    guard_memory()
    with tempfile.TemporaryDirectory(prefix="fleetkit-bench-200-") as tmp:
        started = time.perf_counter()
        lab = Lab(Path(tmp) / "lab", compute=args.hosts, latency=latency, detach=False)
        with lab:
            up = time.perf_counter() - started
            compute = [h.name for h in lab.compute_hosts]
            print(
                f"lab of {args.hosts} compute hosts + orch-1 up in {up:.1f} s "
                f"(latency {args.latency} one way)",
                flush=True,
            )
            bare = memory_line("bare host", lab_memory(lab), compute)
            lab.write_settings(bacalhau=RELAXED_HEARTBEATS)

            chain = time.perf_counter()
            provision = measure(lab, "provision")
            print(f"provision: {provision.seconds:.1f} s", flush=True)
            joined_at = time.perf_counter()
            missing = wait_joined(lab, timeout=300, strict=False)
            joined = time.perf_counter() - joined_at
            print(
                f"agents joined: {joined:.1f} s more"
                + (f"; {len(missing)} never did: {', '.join(missing[:10])}" if missing else ""),
                flush=True,
            )
            ok = (0, 1) if missing else (0,)  # a missing node is named, the rest measured
            verify = measure(lab, "verify", ok=ok)
            print(f"verify: {verify.seconds:.1f} s (exit {verify.exit_code})", flush=True)
            query = measure(lab, "query", SQL, ok=ok)
            total = time.perf_counter() - chain
            print(f"query (Bacalhau): {query.seconds:.1f} s (exit {query.exit_code})", flush=True)
            print(
                f"bare hosts -> first merged answer: {total:.1f} s "
                f"(provision {provision.seconds:.1f} + join {joined:.1f} + verify "
                f"{verify.seconds:.1f} + query {query.seconds:.1f})"
            )
            for name, step in (("provision", provision), ("verify", verify), ("query", query)):
                print(f"  {name}: {describe(step.usage, compute)}")

            memory = lab_memory(lab)
            provisioned = memory_line("provisioned compute host", memory, compute)
            orch = memory["orch-1"]
            print(f"control plane orch-1: PSS {orch.pss / MB:.1f} MB, {orch.processes} processes")
            extra = 0.0
            if lab.proxy is not None and lab.proxy.pid:
                proxy = process_memory(lab.proxy.pid)
                extra += proxy.pss / MB
                print(f"latency proxy: PSS {proxy.pss / MB:.1f} MB")
            busy = lab_cores_busy(lab, args.idle)
            print(
                f"idle provisioned lab: its processes keep {busy:.2f} cores busy "
                f"(of {os.cpu_count()}), averaged over {args.idle:g} s"
            )
            now = meminfo()
            used = (before["MemAvailable"] - now["MemAvailable"]) / MB
            print(
                f"machine: MemTotal {now['MemTotal'] / MB / 1024:.1f} GB, the lab takes "
                f"{used:.0f} MB of MemAvailable (page cache and the admin process included)"
            )
            cores = os.cpu_count() or 1
            per_host = max(provisioned, used / (args.hosts + 1))
            budget = before["MemAvailable"] / MB * 0.8  # leave a fifth for fleetkit and the OS
            by_memory = int((budget - orch.pss / MB - extra) / per_host)
            print(
                f"largest lab by memory (80% of {before['MemAvailable'] / MB / 1024:.1f} GB "
                f"available at {per_host:.1f} MB/host): ~{by_memory} hosts; "
                f"by CPU (idle lab at half the "
                f"cores): ~{int(args.hosts * cores / 2 / busy) if busy else 0} hosts"
            )
            print(f"(bare host PSS was {bare:.1f} MB)")


if __name__ == "__main__":
    main()
