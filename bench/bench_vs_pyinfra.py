"""Benchmark: fleetkit provision vs a pyinfra v3 deploy doing the same steps, on the same lab.

For every size (default 1 and 50 compute hosts, plus the control plane) and
every repeat, two FRESH labs with the same settings: on one, ``fleetkit
provision`` twice (first run, rerun); on the other, the pyinfra deploy of
``bench/pyinfra_deploy/`` twice (it uploads the files fleetkit's own roles
rendered for that lab, so content is equal and the comparison is of transport
and orchestration). Both are run as a user runs them: their CLI in a fresh
process, same SSH key, pinned known_hosts with strict checking, same
parallelism (fleetkit's ``ssh.parallelism``). Which tool goes first alternates
between repeats. Each lab's agents must join before the rerun (a steady state
for both). Afterwards each lab is verified so the times are of equal results:
``fleetkit verify`` passes on both, and on the pyinfra lab ``fleetkit provision
--check`` finds nothing to change on any host (same bytes, modes, owners,
package version, running services).

Prints medians of ``--repeats``, the ratios fleetkit / pyinfra (target for the
first run: <= 0.5), SSH exec channels and SFTP sessions per host (lab
counters, from each host's sshd log), the CPU seconds of each tool's process
and of the whole machine during the run (lab hosts included), and the machine's
load: the machine is shared (2 cores, other work shows in the load average).

    python bench/bench_vs_pyinfra.py [--sizes 1,50] [--repeats 3] [--latencies 0[,40ms]]

pyinfra (latest 3.x) is installed on first use into ``bench/out/pyinfra-venv``
(gitignored; never a dependency of fleetkit). Needs root, like the lab. Labs
live under a temp dir and are torn down.
"""

from __future__ import annotations

import argparse
import compileall
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_latency import RELAXED_HEARTBEATS, Setting, parse_latencies
from bench.fleetlab import Lab, load_average, machine_busy_seconds, median, wait_joined
from bench.pyinfra_deploy.render import render_run
from fleetkit.foundation.environment import Environment
from fleetkit.hostfacts.provisioning import apply
from fleetkit.runtime import Runtime
from lab.counters import Snapshot, per_host, snapshot, usage
from tests.e2e.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
PYINFRA_VENV = REPO / "bench" / "out" / "pyinfra-venv"
PYINFRA_REQUIREMENT = "pyinfra>=3,<4"
DEPLOY = REPO / "bench" / "pyinfra_deploy" / "deploy.py"
#: Longest one provisioning run may take before the benchmark gives up on it.
RUN_TIMEOUT = 900
TOOLS = ("fleetkit", "pyinfra")
RUNS = ("first", "rerun")
LABELS = {"first": "first run", "rerun": "rerun"}


@dataclass(frozen=True)
class Run:
    """One provisioning run: wall time, CPU of the tool's process and of the machine, wire."""

    seconds: float
    tool_cpu: float
    machine_cpu: float
    load: str
    usage: Snapshot


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(lab: Lab, argv: list[str], cwd: Path, env: dict[str, str], what: str) -> Run:
    """Run one CLI in a fresh process; any exit but 0 ends the benchmark with its output."""
    load = load_average()
    before, cpu, busy = snapshot(lab), children_cpu(), machine_busy_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    elapsed = time.perf_counter() - started
    machine = machine_busy_seconds() - busy
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-5000:]
        raise SystemExit(f"{what} exited {done.returncode} on {lab.workdir}:\n{output}")
    return Run(elapsed, children_cpu() - cpu, machine, load, usage(before, snapshot(lab)))


def fleetkit_argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("fleetkit")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from fleetkit.cli import main; main()", *args]


def pyinfra_bin() -> Path:
    return PYINFRA_VENV / "bin" / "pyinfra"


def ensure_pyinfra() -> str:
    """pyinfra 3.x in its own venv under bench/out/ (installed once); its version line."""
    if not pyinfra_bin().exists():
        print(f"installing {PYINFRA_REQUIREMENT} into {PYINFRA_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PYINFRA_VENV)], check=True)
        pip = PYINFRA_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "-q", PYINFRA_REQUIREMENT], check=True)
    return subprocess.run(
        [str(pyinfra_bin()), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def fresh_lab(root: Path, tool: str, size: int, setting: Setting) -> Lab:
    workdir = Path(tempfile.mkdtemp(prefix=f"{tool}-{size}-", dir=root))
    lab = Lab(workdir, compute=size, latency=setting.latency, detach=False).up()
    try:
        lab.write_settings(bacalhau=RELAXED_HEARTBEATS)
    except BaseException:
        lab.down()
        raise
    return lab


def verify_ok(lab: Lab) -> None:
    """Agents joined and ``fleetkit verify`` passes every check on every host."""
    wait_joined(lab)
    result = run_cli(lab, "verify")
    if result.exit_code != 0:
        raise SystemExit(f"fleetkit verify failed on {lab.workdir}:\n{result.output[-4000:]}")


def nothing_to_change(lab: Lab) -> None:
    """fleetkit's check mode on the pyinfra-provisioned lab: every host as fleetkit wants it."""
    env = Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), environ=lab.environ(), cwd=str(lab.workdir)
    )
    rt = Runtime(env=env)
    rt.load()
    report = apply(rt, list(rt.inventory.hosts), check=True)
    wrong = [f"{h.host.name} ({h.counts()})" for h in report.hosts if h.changed or h.failed]
    if wrong:
        raise SystemExit(
            f"after pyinfra, fleetkit provision --check would still change: {', '.join(wrong)} "
            f"(lab {lab.workdir})"
        )


def fleetkit_lab(lab: Lab) -> dict[str, Run]:
    env, cwd = lab.environ(), lab.workdir
    runs = {"first": timed(lab, fleetkit_argv("provision"), cwd, env, "fleetkit provision")}
    wait_joined(lab)
    runs["rerun"] = timed(lab, fleetkit_argv("provision"), cwd, env, "fleetkit provision (rerun)")
    verify_ok(lab)
    return runs


def pyinfra_lab(lab: Lab) -> dict[str, Run]:
    machines = {h.name: h.hostname for h in lab.hosts}
    rendered = render_run(lab.environ(), str(lab.workdir), lab.workdir / "pyinfra", machines)
    parallel = str(rendered.parallelism)
    argv = [str(pyinfra_bin()), "-y", "--parallel", parallel, str(rendered.inventory), str(DEPLOY)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETKIT_", "PYINFRA_"))}
    env.pop("VIRTUAL_ENV", None)
    runs = {"first": timed(lab, argv, rendered.directory, env, "pyinfra")}
    wait_joined(lab)
    runs["rerun"] = timed(lab, argv, rendered.directory, env, "pyinfra (rerun)")
    nothing_to_change(lab)
    verify_ok(lab)
    return runs


LAB_RUNNERS: dict[str, Callable[[Lab], dict[str, Run]]] = {
    "fleetkit": fleetkit_lab,
    "pyinfra": pyinfra_lab,
}


def one_lab(root: Path, tool: str, size: int, setting: Setting) -> dict[str, Run]:
    """A fresh lab for ``tool``, provisioned twice and checked; always torn down.

    No retry: a lab that fails ends the benchmark with its output (a flaky lab
    is a bug to fix, not noise to average away).
    """
    lab = fresh_lab(root, tool, size, setting)
    try:
        return LAB_RUNNERS[tool](lab)
    finally:
        lab.down()


Results = dict[str, dict[str, list[Run]]]  # tool -> run -> one Run per repeat


def compile_fleetkit() -> None:
    """Bytecode for fleetkit's modules, as an installed package has it (pip compiles them).

    An editable install compiles a module on first import, unless
    PYTHONDONTWRITEBYTECODE is set (it is on some machines): then every CLI start
    would compile dozens of modules (~0.25 s) that pyinfra's installed ones need not.
    """
    compileall.compile_dir(str(REPO / "fleetkit"), quiet=1)


def startup_floor(repeats: int) -> dict[str, float]:
    """Seconds to start each CLI and exit (interpreter + imports): in every figure below."""
    argv = {"fleetkit": fleetkit_argv("--help"), "pyinfra": [str(pyinfra_bin()), "--version"]}
    floor = {}
    for tool, command in argv.items():
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        floor[tool] = median(times)
    return floor


def med(results: Results, tool: str, run: str, field: str) -> float:
    return median([float(getattr(r, field)) for r in results[tool][run]])


def report(setting: Setting, size: int, results: Results, repeats: int) -> None:
    hosts = f"{size} compute host{'s' if size != 1 else ''} + control plane"
    print(f"\n== {hosts}, latency {setting.label}; median of {repeats} fresh labs per tool")
    print(
        f"{'':<20}{'fleetkit':>10}{'pyinfra':>10}{'fk/pyinfra':>12}"
        f"{'CPU-s fleetkit':>16}{'CPU-s pyinfra':>15}{'machine CPU-s fk / py':>24}"
    )
    for run in RUNS:
        fk, py = med(results, "fleetkit", run, "seconds"), med(results, "pyinfra", run, "seconds")
        ratio = fk / py
        target = ("  meets <= 0.5" if ratio <= 0.5 else "  MISSES <= 0.5") if run == "first" else ""
        machine = (
            f"{med(results, 'fleetkit', run, 'machine_cpu'):.1f} / "
            f"{med(results, 'pyinfra', run, 'machine_cpu'):.1f}"
        )
        print(
            f"{LABELS[run]:<20}{fk:>9.2f}s{py:>9.2f}s{ratio:>11.2f}x"
            f"{med(results, 'fleetkit', run, 'tool_cpu'):>16.2f}"
            f"{med(results, 'pyinfra', run, 'tool_cpu'):>15.2f}{machine:>24}{target}"
        )
    print("per host (last repeat; median across compute hosts | control plane):")
    print(f"{'':<20}{'exec channels':>16}{'sftp':>8}{'SSH logins':>12}")
    for tool in TOOLS:
        for run in RUNS:
            snap = results[tool][run][-1].usage
            compute = [n for n in snap.hosts if n.startswith("node-")]
            control = snap.hosts["orch-1"]
            cells = [
                f"{per_host(snap, compute, field).median:g} | {getattr(control, field)}"
                for field in ("exec_channels", "sftp_sessions", "logins")
            ]
            print(f"{tool + ' ' + run:<20}{cells[0]:>16}{cells[1]:>8}{cells[2]:>12}")
    loads = [r.load for tool in TOOLS for run in RUNS for r in results[tool][run]]
    print(f"load average (1 min) before the runs: {min(loads)} .. {max(loads)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,50", help="compute hosts per lab (default 1,50)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh labs per tool (median)")
    parser.add_argument(
        "--latencies", default="0", help="one-way delays, e.g. 0,40ms (0 = direct, no proxy)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = parse_latencies(args.latencies)
    print(f"{ensure_pyinfra()} vs fleetkit; deploy {DEPLOY.relative_to(REPO)}", flush=True)
    compile_fleetkit()
    floor = startup_floor(3)
    print(
        f"CLI start-up alone (in every figure): fleetkit {floor['fleetkit']:.2f} s, "
        f"pyinfra {floor['pyinfra']:.2f} s; machine load average {load_average()} "
        f"(shared machine, {os.cpu_count()} cores)",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleetkit-bench-vs-pyinfra-") as tmp:
        for setting in settings:
            for size in sizes:
                results: Results = {tool: {run: [] for run in RUNS} for tool in TOOLS}
                for repeat in range(args.repeats):
                    order = TOOLS if repeat % 2 == 0 else TOOLS[::-1]
                    for tool in order:
                        runs = one_lab(Path(tmp), tool, size, setting)
                        for run in RUNS:
                            results[tool][run].append(runs[run])
                        print(
                            f"  [{time.perf_counter() - started:6.0f} s] {setting.label}, "
                            f"{size} hosts, {tool}: first {runs['first'].seconds:.2f} s, "
                            f"rerun {runs['rerun'].seconds:.2f} s; load {load_average()}",
                            flush=True,
                        )
                report(setting, size, results, args.repeats)


if __name__ == "__main__":
    main()
