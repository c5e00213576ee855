"""Benchmark: provision 1, 10 and 50 lab compute hosts from scratch, then again.

Each size gets a fresh lab (control plane + N compute hosts, stand-in
packages), a first ``fleetkit provision`` (everything installed and started)
and an idempotent second run (every step only looks). Prints the times
(median of ``--repeats`` fresh labs per size) and the ratios measured in this
same run: 50 hosts / 1 host (target <= 3) and idempotent 50 / first 50
(target <= 0.5).

    python bench/bench_provision.py [--sizes 1,10,50] [--repeats 3]

Needs root, like the lab. Labs live under a temp dir and are torn down.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fleetkit.cli import run_command  # noqa: E402
from fleetkit.clients.ssh import fan_out  # noqa: E402
from fleetkit.commands.provision import run as provision  # noqa: E402
from fleetkit.foundation.environment import Environment  # noqa: E402
from fleetkit.foundation.inventory import Host  # noqa: E402
from fleetkit.foundation.status import ExitStatus  # noqa: E402
from fleetkit.runtime import Runtime  # noqa: E402
from lab.fleet import Lab  # noqa: E402


@dataclass
class Sample:
    first: float
    again: float
    #: Baseline in the same lab: SSH connect + one `true` on every host, nothing else.
    transport: float


def provision_once(lab: Lab) -> float:
    err = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=err, environ=lab.environ(), cwd=str(lab.workdir))
    started = time.perf_counter()
    status = run_command(lambda rt: provision(rt, hosts="", check=False), Runtime(env=env))
    elapsed = time.perf_counter() - started
    if status != ExitStatus.SUCCESS:
        raise SystemExit(f"provision failed on {lab.workdir}:\n{err.getvalue()}")
    return elapsed


def transport_once(lab: Lab) -> float:
    """SSH alone: what any fleet command pays before doing work (same pool, same keys)."""
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ=lab.environ())
    rt = Runtime(env=env, settings_path=str(lab.settings_path))

    def touch(host: Host) -> None:
        with rt.connector.connect(host) as remote:
            remote.run("true").check("true")

    started = time.perf_counter()
    outcomes = fan_out(rt.inventory.hosts, touch, parallelism=rt.settings.ssh.parallelism)
    elapsed = time.perf_counter() - started
    failed = [o.host.name for o in outcomes if not o.ok]
    if failed:
        raise SystemExit(f"SSH baseline failed on {', '.join(failed)}")
    return elapsed


def measure(size: int, root: Path) -> Sample:
    with Lab(Path(tempfile.mkdtemp(prefix=f"bench-{size}-", dir=root)), compute=size) as lab:
        transport = transport_once(lab)
        first = provision_once(lab)
        again = provision_once(lab)
    return Sample(first, again, transport)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,50", help="compute hosts per lab")
    parser.add_argument("--repeats", type=int, default=3, help="fresh labs per size (median)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, Sample] = {}
    with tempfile.TemporaryDirectory(prefix="fleetkit-bench-") as tmp:
        for size in sizes:
            samples = [measure(size, Path(tmp)) for _ in range(args.repeats)]
            results[size] = Sample(
                statistics.median(s.first for s in samples),
                statistics.median(s.again for s in samples),
                statistics.median(s.transport for s in samples),
            )
            r = results[size]
            print(
                f"{size:>3} compute hosts (+1 control plane): first {r.first:6.2f} s"
                f"   idempotent {r.again:6.2f} s   SSH baseline {r.transport:5.2f} s"
                f"   (median of {args.repeats})",
                flush=True,
            )
    small, large = min(sizes), max(sizes)
    if small != large:
        scale = results[large].first / results[small].first
        print(f"first run {large} / {small} hosts: {scale:.2f}x (target <= 3)")
        base = results[large].transport / results[small].transport
        print(f"baseline, SSH connect + one command, {large} / {small} hosts: {base:.2f}x")
    idem = results[large].again / results[large].first
    print(f"idempotent / first run at {large} hosts: {idem:.2f} (target <= 0.5)")


if __name__ == "__main__":
    main()
