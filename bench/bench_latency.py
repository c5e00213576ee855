"""Benchmark: 1 vs 50 hosts at zero latency and at 40 ms, with what latency multiplies.

For every latency and every size, ``--repeats`` fresh labs (control plane +
N compute hosts): on each, timed in this order through fleetkit's CLI
(in-process, see ``bench/fleetlab.py``): ``provision`` on bare hosts,
``provision`` again (nothing to change), ``verify``, ``query --via ssh``,
``query`` through Bacalhau, then ``policy`` and ``hunt`` (counted, not
targeted). Before them, the SSH floor: plain Paramiko connecting and running
``true`` on every host (no fleetkit), which scales only with the lab and the
machine; a command's ratio above the floor's is fleetkit's. Prints medians,
the N / 1 ratios measured in this same run against the targets, and per host
what each command cost on the wire: SSH logins, exec channels and round trips
(the latency proxy's count) and the orchestrator requests.

    python bench/bench_latency.py [--sizes 1,50] [--latencies 0,40ms] [--repeats 3]

``0`` connects directly (no proxy, as the older benches); ``0ms`` goes through
the proxy without delay (counts round trips, costs the proxy's CPU). Round
trips are counted best at 40 ms: at zero delay the client's reactions
interleave with the server's bursts and split them, which counts extra.
Needs root, like the lab. Labs live under a temp dir and are torn down.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleetlab import Lab, Measured, load_average, measure, median, ssh_floor, wait_joined
from lab.counters import per_host
from lab.latency import parse_delay

SQL = "SELECT hostname, cpu_brand, physical_memory FROM system_info"
#: The lab's 1 s heartbeat / 3 s disconnect timeout makes tests quick, but a busy 2-core
#: machine running 50 agents can miss 3 s and lose nodes mid-benchmark. Real fleets use
#: longer timeouts; so do the benches.
RELAXED_HEARTBEATS = {"heartbeat_interval": "2s", "disconnect_timeout": "30s"}


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    argv: tuple[str, ...]
    target: float | None  # N / 1 host ratio at 40 ms
    ok: tuple[int, ...] = (0,)


CASES = (
    # Not fleetkit: plain Paramiko connect + `true` on every host (see fleetlab.ssh_floor).
    Case("floor", "SSH floor (paramiko)", (), None),
    Case("first", "provision (first run)", ("provision",), 1.5),
    Case("rerun", "provision (rerun)", ("provision",), 1.3),
    Case("verify", "verify", ("verify",), 1.3),
    Case("ssh", "query --via ssh", ("query", SQL, "--via", "ssh"), 1.5),
    Case("bacalhau", "query (Bacalhau)", ("query", SQL), 1.5),
    # Counted for their orchestrator requests; exit 3 = findings, fine here.
    Case("policy", "policy", ("policy",), None, (0, 3)),
    Case("hunt", "hunt --path", ("hunt", "--path", "/srv/fk-bench-none/*/functions.php"), None),
)


@dataclass(frozen=True)
class Setting:
    label: str
    latency: float | None  # None = direct, no proxy


def parse_latencies(text: str) -> list[Setting]:
    settings = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "0":
            settings.append(Setting("0 ms (direct)", None))
        else:
            seconds = parse_delay(item)
            settings.append(Setting(f"{seconds * 1000:g} ms", seconds))
    return settings


def one_lab(root: Path, size: int, setting: Setting) -> dict[str, Measured]:
    """A fresh lab of ``size`` compute hosts; every case once, in order.

    No retry: a lab that fails ends the benchmark with its output.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"lat-{size}-", dir=root))
    results: dict[str, Measured] = {}
    with Lab(workdir, compute=size, latency=setting.latency, detach=False) as lab:
        lab.write_settings(bacalhau=RELAXED_HEARTBEATS)
        for case in CASES:
            if case.key == "ssh":  # from here on, the agents must have joined
                wait_joined(lab)
            if case.key == "floor":
                results[case.key] = ssh_floor(lab)
            else:
                results[case.key] = measure(lab, *case.argv, ok=case.ok)
    return results


def ratio_line(case: Case, times: dict[int, float], small: int, large: int, at_40: bool) -> str:
    ratio = times[large] / times[small]
    target = ""
    if case.target is not None and at_40:
        verdict = "meets" if ratio <= case.target else "MISSES"
        target = f"   {verdict} <= {case.target:g}x"
    return f"{ratio:5.2f}x{target}"


def report(
    setting: Setting, sizes: list[int], runs: dict[int, list[dict[str, Measured]]], repeats: int
) -> None:
    small, large = min(sizes), max(sizes)
    print(f"\n== latency {setting.label} (one way); median of {repeats} fresh labs per size")
    header = "".join(f"{f'{n} host' + ('s' if n != 1 else ''):>12}" for n in sizes)
    print(f"{'command':<24}{header}   {large}/{small} hosts")
    for case in CASES:
        times = {n: median([r[case.key].seconds for r in runs[n]]) for n in sizes}
        cells = "".join(f"{times[n]:>10.2f} s" for n in sizes)
        ratio = ratio_line(case, times, small, large, setting.latency == 0.040)
        print(f"{case.title:<24}{cells}   {ratio if small != large else ''}")
    if small != large:
        floor = {n: median([r["floor"].seconds for r in runs[n]]) for n in sizes}
        print(
            f"(the SSH floor, no fleetkit, grows {floor[large] / floor[small]:.2f}x here: "
            f"{os.cpu_count()} cores serve fleetkit and all {large + 1} lab hosts, so a command "
            "whose hosts' work saturates them grows with the machine, not with fleetkit)"
        )
    print("CPU seconds (medians): fleetkit's process (the client) | the whole machine (lab too)")
    for case in CASES:
        cells = "".join(
            f"{median([r[case.key].cpu for r in runs[n]]):>6.2f} |"
            f"{median([r[case.key].machine_cpu for r in runs[n]]):>5.1f}"
            for n in sizes
        )
        print(f"{case.title:<24}{cells}")
    last = runs[large][-1]
    names = sorted(last["first"].usage.hosts)
    compute = [n for n in names if n.startswith("node-")]
    print(f"per compute host ({large}-host lab; median across hosts, last repeat):")
    print(
        f"{'command':<24}{'logins':>8}{'exec':>8}{'sftp':>6}{'TCP conn':>10}"
        f"{'round trips':>13}{'API requests (all)':>20}"
    )
    for case in CASES:
        snap = last[case.key].usage
        api = snap.http.get("api")
        figures = [
            per_host(snap, compute, field).median
            for field in ("logins", "exec_channels", "sftp_sessions", "tcp_connections")
        ]
        trips = per_host(snap, compute, "round_trips")
        trips_text = f"{trips.median:g}" if setting.latency is not None else "-"
        print(
            f"{case.title:<24}{figures[0]:>8g}{figures[1]:>8g}{figures[2]:>6g}"
            f"{(f'{figures[3]:g}' if setting.latency is not None else '-'):>10}"
            f"{trips_text:>13}{(api.requests if api else '-'):>20}"
        )
    orch = {case.key: last[case.key].usage.hosts.get("orch-1") for case in CASES}
    first = orch["first"]
    if first is not None:
        print(
            f"control plane orch-1, provision first run: {first.exec_channels} exec channels, "
            f"{first.round_trips if setting.latency is not None else '-'} round trips; "
            f"rerun: {orch['rerun'].exec_channels if orch['rerun'] else '-'} exec channels"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,50", help="compute hosts per lab (default 1,50)")
    parser.add_argument(
        "--latencies",
        default="0,40ms",
        help="one-way delays (default 0,40ms; 0 = direct, 0ms = proxy without delay)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh labs per size (median)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = parse_latencies(args.latencies)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleetkit-bench-latency-") as tmp:
        for setting in settings:
            runs: dict[int, list[dict[str, Measured]]] = defaultdict(list)
            for _ in range(args.repeats):  # sizes interleaved: drift hits both alike
                for size in sizes:
                    runs[size].append(one_lab(Path(tmp), size, setting))
                    print(
                        f"  [{time.perf_counter() - started:6.0f} s] {setting.label}, "
                        f"{size} hosts: first provision "
                        f"{runs[size][-1]['first'].seconds:.2f} s; machine load "
                        f"average {load_average()}",
                        flush=True,
                    )
            report(setting, sizes, runs, args.repeats)


if __name__ == "__main__":
    main()
