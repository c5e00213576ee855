"""Benchmark: merging 500 nodes x 2,000 rows of osqueryi output into one JSON file.

Compares fleetkit's answer path -- every node's output validated into a
:class:`~fleetkit.ask.answer.FleetAnswer` first (``fleetkit.ask.validate.settle``),
then written (``fleetkit.ask.merge.write_merged``) -- with a naive merge
measured in the same run: ``json.load`` each node's file, add the tags,
``json.dumps`` each row. Each node's output is an open file, as when it was
spooled from S3 (the large-output route), so nothing but one node is ever in
memory. Each merge runs in its own subprocess so its peak RSS can be read
with ``wait4``; the RSS of an interpreter that only imported the same modules
is printed as the baseline.

Targets (issue 13): >= 8x the naive throughput, output valid JSON with the
same rows, peak memory <= 64 MB.

    python bench/bench_merge.py [--nodes 500] [--rows 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BANNER = "Connected to extension socket /var/osquery/osquery.em for debugging\n"


def node_output(node: int, rows: int, rng: random.Random) -> str:
    """osqueryi --json output for a ``processes``-like query (keys sorted, strings)."""
    lines = []
    for i in range(rows):
        pid = rng.randint(1, 4_000_000)
        row = {
            "cmdline": f"/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config.{i % 97}",
            "cwd": "/",
            "egid": "0",
            "euid": "0",
            "gid": "0",
            "name": "sshd" if i % 3 else "python3",
            "on_disk": "1",
            "parent": str(rng.randint(1, 9999)),
            "path": "/usr/sbin/sshd",
            "pid": str(pid),
            "resident_size": str(rng.randint(1, 10**9)),
            "start_time": str(1_700_000_000 + node * 7 + i),
            "state": "S",
            "threads": str(1 + i % 8),
            "uid": "0",
        }
        lines.append("  " + json.dumps(row, sort_keys=True, separators=(",", ":")))
    return BANNER + "[\n" + ",\n".join(lines) + "\n]\n"


def generate(directory: Path, nodes: int, rows: int) -> None:
    rng = random.Random(42)
    for node in range(nodes):
        (directory / f"node-{node:04d}.out").write_text(node_output(node, rows, rng))


def node_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("node-*.out"))


# --------------------------------------------------------------------------- the two merges


def merge_fleetkit(directory: Path, target: Path) -> None:
    from fleetkit.ask.merge import write_merged
    from fleetkit.ask.transport import Collected, NodeReply, osqueryi_reply
    from fleetkit.ask.validate import settle

    def replies() -> Iterator[NodeReply]:
        for path in node_files(directory):
            name = path.stem
            spool = path.open("rb")
            yield osqueryi_reply(name, name, exit_code=0, stdout=spool, stderr=b"")

    with settle(Collected(tuple(replies()))) as answer, target.open("wb") as out:
        write_merged(answer, "json", out)


def merge_naive(directory: Path, target: Path) -> None:
    with target.open("w", encoding="utf-8") as out:
        out.write("[")
        first = True
        for path in node_files(directory):
            name = path.stem
            text = path.read_text(encoding="utf-8")
            rows = json.loads(text[text.index("[") :])
            for row in rows:
                row["nodeID"] = name
                row["hostname"] = name
                out.write("\n" if first else ",\n")
                out.write(json.dumps(row))
                first = False
        out.write("\n]\n")


def baseline(directory: Path, target: Path) -> None:
    """Imports only: the interpreter's own share of the RSS figure."""


MERGES = {"fleetkit": merge_fleetkit, "naive": merge_naive, "baseline": baseline}


# --------------------------------------------------------------------------- measuring


def run_child(kind: str, directory: Path, target: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one merge in a fresh interpreter.

    CPU time (user + system of the child) is printed beside wall time: on a
    machine shared with other work, wall time measures the neighbours too.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(directory), str(target)]
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} merge failed with exit {proc.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def check_outputs(ours: Path, naive: Path, expected_rows: int) -> int:
    """Both outputs valid JSON arrays with the same rows; returns the row count.

    Checked line by line (one row per line in both) so the check itself stays small.
    """
    count = 0
    with ours.open("rb") as a, naive.open("rb") as b:
        if a.readline() != b"[\n" or b.readline() != b"[\n":
            raise SystemExit("output does not start a JSON array")
        for line_a, line_b in zip(a, b, strict=True):
            if line_a == b"]\n":
                if line_b != b"]\n":
                    raise SystemExit("outputs end differently")
                break
            row_a = json.loads(line_a.rstrip(b",\n"))
            row_b = json.loads(line_b.rstrip(b",\n"))
            if row_a != row_b:
                raise SystemExit(f"row {count} differs: {row_a} != {row_b}")
            count += 1
    if count != expected_rows:
        raise SystemExit(f"expected {expected_rows} rows, got {count}")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DIR", "OUT"))
    args = parser.parse_args()
    if args.child:
        kind, directory, target = args.child
        MERGES[kind](Path(directory), Path(target))
        return
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        work = Path(tmp)
        data = work / "nodes"
        data.mkdir()
        t0 = time.perf_counter()
        generate(data, args.nodes, args.rows)
        size = sum(p.stat().st_size for p in node_files(data))
        total = args.nodes * args.rows
        print(
            f"input: {args.nodes} nodes x {args.rows} rows = {total:,} rows, "
            f"{size / 1e6:.0f} MB of osqueryi output (generated in {time.perf_counter() - t0:.1f}s)"
        )
        _, _, base_rss = run_child("baseline", data, work / "none")
        runs: dict[str, list[tuple[float, float, float]]] = {"fleetkit": [], "naive": []}
        for _ in range(args.repeat):
            runs["fleetkit"].append(run_child("fleetkit", data, work / "ours.json"))
            runs["naive"].append(run_child("naive", data, work / "naive.json"))
        rows = check_outputs(work / "ours.json", work / "naive.json", total)
        wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
        cpu = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
        rss = {k: max(r[2] for r in v) for k, v in runs.items()}
        for kind, label in (("naive", "naive merge   "), ("fleetkit", "fleetkit merge")):
            print(
                f"{label} : {wall[kind]:6.2f} s wall  {cpu[kind]:6.2f} s CPU  "
                f"{total / wall[kind]:>12,.0f} rows/s  peak RSS {rss[kind]:6.1f} MB"
            )
        print(f"interpreter + imports alone: peak RSS {base_rss:.1f} MB")
        ratio, cpu_ratio = wall["naive"] / wall["fleetkit"], cpu["naive"] / cpu["fleetkit"]
        print(
            f"speed-up: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target >= 8x); "
            f"medians of {args.repeat}"
        )
        print(f"output: valid JSON array, {rows:,} rows, same rows as the naive merge")
        verdict = ratio >= 8 and rss["fleetkit"] <= 64
        print("targets met" if verdict else "TARGETS NOT MET")


if __name__ == "__main__":
    main()
