"""Benchmark: ``fleetkit verify`` of 50 lab compute hosts vs 1 host, same lab, same run.

One lab (control plane + N compute hosts) is provisioned once, then verify
runs ``--repeats`` times on one compute host and on all of them (each run a
fresh Runtime: settings, inventory, orchestrator node list, SSH probes in the
bounded pool). Prints the median times and the ratio N hosts / 1 host
(target <= 3). Every run must report the fleet ready, or the figures would
time a failure path.

    python bench/bench_verify.py [--hosts 50] [--repeats 5]

Needs root, like the lab. The lab lives under a temp dir and is torn down.
Candid note: all lab hosts share this machine's cores, so the ratio measures
fleetkit's fan-out *and* the stand-ins' CPU (the probe starts osqueryi and
bacalhau, both Python stand-ins, on every host); on a real fleet each host
pays for its own probe.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fleetkit.cli import run_command  # noqa: E402
from fleetkit.commands.provision import run as provision  # noqa: E402
from fleetkit.commands.verify import Expected, probe_script  # noqa: E402
from fleetkit.commands.verify import run as verify  # noqa: E402
from fleetkit.foundation.environment import Environment  # noqa: E402
from fleetkit.foundation.status import ExitStatus  # noqa: E402
from fleetkit.runtime import Runtime  # noqa: E402
from lab.fleet import Lab  # noqa: E402


def runtime(lab: Lab) -> tuple[Runtime, io.StringIO]:
    err = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=err, environ=lab.environ(), cwd=str(lab.workdir))
    return Runtime(env=env), err


#: CPU seconds this (admin) process spent in each timed verify, by case.
ADMIN_CPU: dict[str, list[float]] = {}


def timed_verify(lab: Lab, hosts: str) -> float:
    rt, err = runtime(lab)
    cpu = time.process_time()
    started = time.perf_counter()
    status = run_command(lambda r: verify(r, hosts=hosts, as_json=True), rt)
    elapsed = time.perf_counter() - started
    ADMIN_CPU.setdefault(hosts, []).append(time.process_time() - cpu)
    if status != ExitStatus.SUCCESS:
        raise SystemExit(f"verify --hosts {hosts or 'all'} failed:\n{err.getvalue()}")
    return elapsed


def probe_cpu(lab: Lab, repeats: int = 5) -> float:
    """CPU seconds (user + sys, children included) of one host's probe script, run in place."""
    rt, _ = runtime(lab)
    name = lab.compute_hosts[0].name
    host = rt.inventory.get(name)
    assert host is not None
    script = probe_script(
        Expected.from_settings(rt.settings),
        role="compute",
        api_port=host.bacalhau_api_port or rt.settings.bacalhau.api_port,
    )
    lab_host = lab.host(name)
    lab_host.write_file("/root/.fleetkit-probe.sh", script, 0o600)
    samples = []
    for _ in range(repeats):
        timing = lab_host.sh("time -p sh /root/.fleetkit-probe.sh >/dev/null", check=False).stderr
        fields = dict(line.split() for line in timing.splitlines() if len(line.split()) == 2)
        samples.append(float(fields["user"]) + float(fields["sys"]))
    lab_host.sh("rm -f /root/.fleetkit-probe.sh")
    return statistics.median(samples)


def wait_joined(lab: Lab, count: int, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    url = f"{lab.orchestrator_url}/api/v1/orchestrator/nodes"
    while True:
        nodes = requests.get(url, timeout=10).json().get("Nodes") or []
        joined = [n for n in nodes if (n.get("ConnectionState") or {}).get("Status") == "CONNECTED"]
        if len(joined) >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(joined)}/{count} nodes joined after {timeout}s")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=50, help="compute hosts in the lab")
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (median)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="fleetkit-bench-verify-") as tmp,
        Lab(Path(tmp) / "lab", compute=args.hosts) as lab,
    ):
        started = time.perf_counter()
        rt, err = runtime(lab)
        if run_command(lambda r: provision(r, hosts="", check=False), rt) != 0:
            raise SystemExit(f"provision failed:\n{err.getvalue()}")
        wait_joined(lab, args.hosts)
        print(
            f"lab of {args.hosts} compute hosts provisioned in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        timed_verify(lab, "node-1")  # warm-up: page cache, first imports on the hosts
        cpu = probe_cpu(lab)
        one, many = [], []
        for _ in range(args.repeats):  # interleaved so drift hits both cases alike
            one.append(timed_verify(lab, "node-1"))
            many.append(timed_verify(lab, "compute"))
    t1, tn = statistics.median(one), statistics.median(many)
    print(
        f"verify   1 host : {t1:6.3f} s (median of {args.repeats}: "
        f"{', '.join(f'{t:.3f}' for t in one)})"
    )
    print(
        f"verify {args.hosts:>3} hosts: {tn:6.3f} s (median of {args.repeats}: "
        f"{', '.join(f'{t:.3f}' for t in many)})"
    )
    for case, label in (("node-1", "1 host"), ("compute", f"{args.hosts} hosts")):
        spent = statistics.median(ADMIN_CPU[case][1:] or ADMIN_CPU[case])
        print(f"admin-side CPU ({label}): {spent:.3f} s (fleetkit itself: SSH, parsing)")
    cores = os.cpu_count() or 1
    floor = args.hosts * cpu / cores
    print(
        f"probe script on one host: {cpu:.3f} CPU-s (mostly the osqueryi and bacalhau "
        "stand-ins; sshd not counted); "
        f"{args.hosts} hosts on {cores} cores cannot take less than {floor:.2f} s "
        f"= {floor / t1:.1f}x the 1-host time"
    )
    ratio = tn / t1
    verdict = "meets" if ratio <= 3 else "MISSES"
    print(f"ratio {args.hosts}/1 = {ratio:.2f} ({verdict} the target <= 3)")


if __name__ == "__main__":
    main()
