"""Benchmark: a 20-query pack as ONE job per run vs the 20 queries as 20 jobs, same lab, same run.

One lab (control plane + N compute hosts, S3 results) is provisioned once.
Each repeat then answers the same 20 statements twice, interleaved:

- **pack**: one ops job whose task runs :data:`fleetkit.ask.batch.SCRIPT`
  (every statement answered inside one task, framed per query), parsed with
  :func:`fleetkit.ask.batch.parse_pack_output`;
- **one by one**: 20 ops jobs, each ``osqueryi --json SQL`` (the job
  ``build_osquery_job`` builds), submitted and waited for one after another.

Both paths use the same small driver (submit, poll executions every 0.1 s
until every node is terminal, read each node's stdout from RunOutput or, when
truncated, from S3) so the difference is the number of jobs, not the code
around them. Prints jobs submitted, orchestrator requests and wall time per
run (medians of the repeats) and the ratio (target: pack at least 5x faster).
Every answer is checked (every statement answered on every node) so the
figures never time a failure path.

The run is done twice: with the lab's osqueryi stand-in (a Python program,
which both cases pay per statement: it dominates on a shared machine), then
with a shell stub in its place that answers at once, like a native binary
roughly does, so what remains is the orchestration the job count changes.
Candid note: the lab's Bacalhau stand-in runs a task as a host process (no
container start, no image), so its per-job cost is far below a real
orchestrator's, and the ratio here understates what a real fleet gains.

    python bench/bench_pack_job.py [--compute 3] [--queries 20] [--repeats 3]

Needs root, like the lab. The lab lives under a temp dir and is torn down.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402

from fleetkit.ask.batch import pack_command, parse_pack_output  # noqa: E402
from fleetkit.ask.packs import Statement  # noqa: E402
from fleetkit.cli import run_command  # noqa: E402
from fleetkit.clients.bacalhau import BacalhauClient, build_osquery_job, stdout_key  # noqa: E402
from fleetkit.commands.provision import run as provision  # noqa: E402
from fleetkit.foundation.environment import Environment  # noqa: E402
from fleetkit.runtime import Runtime  # noqa: E402
from lab.fleet import Lab  # noqa: E402

POLL = 0.1
TIMEOUT = 120


@dataclass
class Driver:
    """Submit one job, wait for every node, return each node's stdout (and count requests)."""

    client: BacalhauClient
    s3: Any
    nodes: list[str]
    requests: int = 0
    jobs: int = 0

    def run(self, job: dict[str, Any]) -> dict[str, tuple[int | None, bytes]]:
        self.requests += 1
        self.jobs += 1
        job_id = self.client.submit_job(job).job_id
        deadline = time.monotonic() + TIMEOUT
        while True:
            time.sleep(POLL)
            self.requests += 1
            executions = {e.node_id: e for e in self.client.executions(job_id)}
            if all(n in executions and executions[n].is_terminal for n in self.nodes):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not finish in {TIMEOUT}s")
        out = {}
        for node in self.nodes:
            execution = executions[node]
            if not execution.completed:
                raise SystemExit(f"{node}: execution failed: {execution.message}")
            stdout = (execution.stdout or "").encode()
            if execution.stdout_truncated:
                where = stdout_key(execution.published_result or {})
                if where is None:
                    raise SystemExit(f"{node}: output truncated and not published")
                stdout = self.s3.get_object(Bucket=where[0], Key=where[1])["Body"].read()
            out[node] = (execution.exit_code, stdout)
        return out


def statements(count: int) -> list[Statement]:
    tables = ["osquery_info", "system_info", "os_version", "users", "processes"]
    return [
        Statement(f"q{i:02d}", f"SELECT {i} AS n, count(*) AS c FROM {tables[i % len(tables)]}")
        for i in range(count)
    ]


def job_for(rt: Runtime, sql: str) -> dict[str, Any]:
    s = rt.settings
    return build_osquery_job(
        sql,
        image=s.query.image,
        socket_dir=s.osquery.socket_dir,
        socket_path=s.osquery.extensions_socket,
        constraints=[],
        execution_timeout=TIMEOUT,
        total_timeout=TIMEOUT + 30,
        s3=s.query.s3,
    )


def run_pack(rt: Runtime, driver: Driver, items: list[Statement]) -> None:
    command = pack_command(items, socket_path=rt.settings.osquery.extensions_socket)
    job = job_for(rt, items[0].sql)
    task = job["Job"]["Tasks"][0]
    task["Name"] = "osquery-pack"
    task["Engine"]["Params"] = command.engine_params(rt.settings.query.image)
    for node, (code, stdout) in driver.run(job).items():
        answer = parse_pack_output(stdout, command.names, stderr_limit=command.stderr_limit)
        if code != 0 or not answer.complete:
            raise SystemExit(f"{node}: pack answer incomplete: {answer.problem}")
        for part in answer.answers:
            if part.exit_code != 0 or part.stdout is None or b"[" not in part.stdout:
                raise SystemExit(f"{node}: {part.name} failed: {part.stderr_text}")


def run_one_by_one(rt: Runtime, driver: Driver, items: list[Statement]) -> None:
    for item in items:
        for node, (code, stdout) in driver.run(job_for(rt, item.sql)).items():
            start = stdout.find(b"\n[")
            if code != 0 or start < 0:
                raise SystemExit(f"{node}: {item.name} failed (exit {code})")
            json.loads(stdout[start:])


#: osqueryi at native speed for the second half of the run: the lab's osqueryi is a Python
#: stand-in (~0.1 CPU-s per call, far more on a loaded machine), which both cases pay per
#: statement and which hides the cost of a job; this stub answers at once, like the real
#: binary roughly does, so what remains is the orchestration that the job count changes.
STUB = """#!/bin/sh
echo "Connected to extension socket ${1#--connect=} for debugging"
printf '[\\n  {"n":"1"}\\n]\\n'
"""
STUB_PATH = "/usr/local/bin/osqueryi"  # ahead of /usr/bin in the task's PATH


def measure(
    rt: Runtime,
    client: BacalhauClient,
    s3: Any,
    nodes: list[str],
    items: list[Statement],
    repeats: int,
) -> dict[str, list[tuple[float, int, int]]]:
    figures: dict[str, list[tuple[float, int, int]]] = {"pack": [], "one by one": []}
    run_pack(rt, Driver(client, s3, nodes), items)  # warm-up
    for _ in range(repeats):  # interleaved so drift hits both cases alike
        for name, work in (("pack", run_pack), ("one by one", run_one_by_one)):
            driver = Driver(client, s3, nodes)
            started = time.perf_counter()
            work(rt, driver, items)
            figures[name].append((time.perf_counter() - started, driver.jobs, driver.requests))
    return figures


def report(title: str, figures: dict[str, list[tuple[float, int, int]]]) -> None:
    print(title)
    print("  case       | jobs | orchestrator requests | wall time (median; runs)")
    medians = {}
    for name, runs in figures.items():
        wall = statistics.median(r[0] for r in runs)
        medians[name] = wall
        print(
            f"  {name:10s} | {runs[0][1]:4d} | {statistics.median(r[2] for r in runs):21.0f} | "
            f"{wall:7.2f} s  ({', '.join(f'{r[0]:.2f}' for r in runs)})"
        )
    ratio = medians["one by one"] / medians["pack"]
    verdict = "meets" if ratio >= 5 else "MISSES"
    print(f"  one by one / pack = {ratio:.1f}x ({verdict} the target >= 5x)")


def wait_joined(client: BacalhauClient, count: int) -> list[str]:
    deadline = time.monotonic() + 120
    while True:
        nodes = [n.node_id for n in client.nodes() if n.is_compute and n.is_connected]
        if len(nodes) >= count:
            return sorted(nodes)
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(nodes)}/{count} nodes joined")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compute", type=int, default=3, help="compute hosts in the lab")
    parser.add_argument("--queries", type=int, default=20, help="statements in the pack")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median)")
    args = parser.parse_args()
    items = statements(args.queries)
    with (
        tempfile.TemporaryDirectory(prefix="fleetkit-bench-pack-") as tmp,
        Lab(Path(tmp) / "lab", compute=args.compute, s3=True) as lab,
    ):
        err = io.StringIO()
        env = Environment(
            stdout=io.StringIO(), stderr=err, environ=lab.environ(), cwd=str(lab.workdir)
        )
        rt = Runtime(env=env)
        if run_command(lambda r: provision(r, hosts="", check=False), rt) != 0:
            raise SystemExit(f"provision failed:\n{err.getvalue()}")
        client = BacalhauClient(lab.orchestrator_url)
        nodes = wait_joined(client, args.compute)
        assert lab.s3 is not None
        s3 = boto3.client(
            "s3",
            endpoint_url=lab.s3.endpoint,
            aws_access_key_id=lab.s3.access_key_id,
            aws_secret_access_key=lab.s3.secret_access_key,
            region_name="us-east-1",
        )
        standin = measure(rt, client, s3, nodes, items, args.repeats)
        for host in lab.compute_hosts:
            host.write_file(STUB_PATH, STUB, 0o755)
        stub = measure(rt, client, s3, nodes, items, args.repeats)
        for host in lab.compute_hosts:
            host.sh(f"rm -f {STUB_PATH}")
    print(f"{args.queries} statements on {args.compute} compute hosts, {args.repeats} runs each")
    report("with the lab's osqueryi stand-in (Python, per statement):", standin)
    report("with an osqueryi stub answering at once (the orchestration alone):", stub)


if __name__ == "__main__":
    main()
