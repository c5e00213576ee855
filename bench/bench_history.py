"""Benchmark: recording a 1,000,000-row run and diffing it against the previous one.

Issue 10's targets: recording AND diffing a run of 500 nodes x 2,000 rows
against the previous 1,000,000-row run of the same question adds at most
1.0x the merge time itself, with peak memory <= 96 MB; listing 1,000
recorded runs answers in under 0.3 s.

Measured in the same run, each in a fresh interpreter (peak RSS via wait4),
medians of --repeat:

- ``merge``: fleetkit's streaming merge (``write_merged``, JSON) of the later
  run's node outputs to a file: the baseline;
- ``merge+history``: the same merge, each node also handed to the recorder
  as the engine will (``RowBlock.from_osqueryi_output`` on the output the
  merge just tagged; without the row count the merge's fast path knows, so
  the block's line structure is checked here: the conservative path), the
  run finished, then ``diff`` against the previous run written as NDJSON
  events. A copy of a history holding the previous run is used each time,
  so every repetition starts from the same state.

Added time = merge+history - merge, in wall time and in CPU time of all
threads (the recorder compresses and writes on a second thread, so on an
idle 2-core machine wall time hides part of its CPU; on a busy one the CPU
ratio is the steadier figure). Two shapes of "the previous run":

- ``some``: 5% of nodes changed (10 rows gone, 10 new each), another 5%
  answered the same rows in another order (no change), the rest identical;
- ``every``: every node changed (1% of its rows replaced, order shuffled),
  the worst case for a differential log.

    python bench/bench_history.py [--nodes 500] [--rows 2000] [--repeat 3] [--runs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_merge import BANNER, node_output

SCENARIOS = ("some", "every")


# --------------------------------------------------------------------------- data


def node_rows(node: int, rows: int, rng: random.Random) -> list[str]:
    """bench_merge's ``processes``-like answer, one compact JSON row per item."""
    lines = node_output(node, rows, rng).splitlines()[2:-1]  # after the banner and "["
    return [line.strip().removesuffix(",") for line in lines]


def osqueryi_output(rows: list[str]) -> str:
    return BANNER + "[\n" + ",\n".join("  " + r for r in rows) + "\n]\n"


def generate(work: Path, nodes: int, rows: int) -> None:
    """``before/`` and one ``after-SCENARIO/`` directory of node outputs."""
    rng = random.Random(42)
    dirs = {name: work / name for name in ("before", *(f"after-{s}" for s in SCENARIOS))}
    for path in dirs.values():
        path.mkdir()
    for node in range(nodes):
        before = node_rows(node, rows, rng)
        name = f"node-{node:04d}.out"
        (dirs["before"] / name).write_text(osqueryi_output(before))
        some = list(before)
        if node % 20 == 0:  # 5%: 10 rows gone, 10 new
            fresh = node_rows(node + 100_000, 10, rng)
            some = some[10:] + fresh
        elif node % 20 == 1:  # 5%: same rows, another order
            rng.shuffle(some)
        (dirs["after-some"] / name).write_text(osqueryi_output(some))
        every = list(before)
        replaced = max(1, rows // 100)
        every[:replaced] = node_rows(node + 200_000, replaced, rng)
        rng.shuffle(every)
        (dirs["after-every"] / name).write_text(osqueryi_output(every))


def node_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("node-*.out"))


# --------------------------------------------------------------------------- children


def child_merge(directory: Path, work: Path) -> dict[str, float]:
    from fleetkit.ask.results import NodeResult, node_result

    from fleetkit.foundation.output import write_merged

    def nodes() -> Iterator[NodeResult]:
        for path in node_files(directory):
            yield node_result(
                path.stem, path.stem, exit_code=0, stdout=path.read_bytes(), stderr=b""
            )

    start, cpu = time.perf_counter(), cpu_seconds()
    with (work / "merged.json").open("wb") as out:
        write_merged(nodes(), "json", out)
    return {"merge": time.perf_counter() - start, "cpu": cpu_seconds() - cpu}


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads (the recorder writes on its own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _history(db: Path, clock: list[datetime]) -> object:
    from fleetkit.history import HistorySettings, open_history

    settings = HistorySettings(path=str(db), keep_days=None)
    return open_history(settings, now=lambda: clock[0])


def record_dir(
    history: object, directory: Path, started: datetime, late_hook: object = None
) -> str:
    """Record a directory of node outputs as one run (used to build the previous run)."""
    from fleetkit.history import Question, RowBlock

    recorder = history.begin_run(  # type: ignore[attr-defined]
        kind="query",
        question=Question(QUESTION),
        scope=SCOPE,
        transport="bacalhau",
        started_at=started,
    )
    for path in node_files(directory):
        data = path.read_bytes()
        block = RowBlock.from_osqueryi_output(data, data.index(b"\n[") + 1)
        recorder.add_node(node_id=path.stem, hostname=path.stem, status="ok", rows=block)
    outcome = recorder.finish(ended_at=started + timedelta(seconds=2))
    assert outcome.complete, outcome
    return str(outcome.run_id)


QUESTION = "SELECT * FROM processes"
SCOPE = {"selector": "", "hosts": [], "transport": "bacalhau", "timeout": 120}


def child_merge_history(directory: Path, work: Path) -> dict[str, float]:
    """The merge, with every node also recorded, then the diff against the previous run."""
    from fleetkit.ask.results import NodeResult, json_start, node_result

    from fleetkit.foundation.output import write_merged
    from fleetkit.history import Question, RowBlock

    clock = [datetime(2026, 11, 28, 12, 0, tzinfo=UTC)]
    history = _history(work / "history.db", clock)
    recorder = history.begin_run(  # type: ignore[attr-defined]
        kind="query",
        question=Question(QUESTION),
        scope=SCOPE,
        transport="bacalhau",
        started_at=clock[0],
    )
    spent = {"record": 0.0}

    def nodes() -> Iterator[NodeResult]:
        for path in node_files(directory):
            node = node_result(
                path.stem, path.stem, exit_code=0, stdout=path.read_bytes(), stderr=b""
            )
            yield node  # the merge writes it ...
            began = time.perf_counter()  # ... then the engine hands it to the recorder
            data = node.stdout or b""
            recorder.add_node(
                node_id=node.node_id,
                hostname=node.hostname,
                status="ok",
                rows=RowBlock.from_osqueryi_output(data, json_start(data)),
            )
            spent["record"] += time.perf_counter() - began

    start, cpu = time.perf_counter(), cpu_seconds()
    with (work / "merged.json").open("wb") as out:
        write_merged(nodes(), "json", out)
    began = time.perf_counter()
    outcome = recorder.finish()
    spent["record"] += time.perf_counter() - began
    assert outcome.complete, outcome
    began = time.perf_counter()
    diff = history.diff()  # type: ignore[attr-defined]
    events = 0
    with (work / "diff.ndjson").open("wb") as out:
        for change in diff.changes():
            out.write(change.json_bytes() + b"\n")
            events += 1
    spent["diff"] = time.perf_counter() - began
    spent["total"] = time.perf_counter() - start
    spent["cpu"] = cpu_seconds() - cpu
    spent["events"] = events
    history.close()  # type: ignore[attr-defined]
    return spent


def child_list(db: Path, _: Path) -> dict[str, float]:
    from fleetkit.history import HistorySettings, open_history

    start = time.perf_counter()
    with open_history(HistorySettings(path=str(db), keep_days=None), for_writing=False) as history:
        runs = history.list_runs()
        lines = [
            f"{r.run_id} {r.kind} {r.coverage.percent:.0f}% {r.question.label()}" for r in runs
        ]
    return {"list": time.perf_counter() - start, "runs": len(lines)}


CHILDREN = {"merge": child_merge, "merge+history": child_merge_history, "list": child_list}


def run_child(kind: str, target: Path, work: Path) -> tuple[dict[str, float], float, float]:
    """(figures the child printed, wall seconds, peak RSS MB) of one fresh interpreter."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(target), str(work)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} failed")
    return json.loads(output), elapsed, usage.ru_maxrss / 1024


# --------------------------------------------------------------------------- main


def build_many_runs(db: Path, count: int) -> None:
    from fleetkit.history import Question

    clock = [datetime(2026, 10, 1, tzinfo=UTC)]
    history = _history(db, clock)
    for i in range(count):
        started = clock[0] + timedelta(minutes=i)
        recorder = history.begin_run(  # type: ignore[attr-defined]
            kind=("query", "policy", "hunt")[i % 3],
            question=Question(f"SELECT {i % 7}"),
            scope=SCOPE,
            transport="bacalhau",
            started_at=started,
        )
        for node in range(50):
            recorder.add_node(
                node_id=f"n{node}",
                hostname=f"h{node}",
                status="ok" if node % 10 else "missing",
                rows=[b'{"a":"%d"}' % i] * 5,
            )
        recorder.finish(ended_at=started + timedelta(seconds=1))
    history.close()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "TARGET", "WORK"))
    args = parser.parse_args()
    if args.child:
        kind, target, work = args.child
        print(json.dumps(CHILDREN[kind](Path(target), Path(work))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        generate(work, args.nodes, args.rows)
        total = args.nodes * args.rows
        size = sum(p.stat().st_size for p in node_files(work / "before"))
        print(
            f"input: {args.nodes} nodes x {args.rows} rows = {total:,} rows per run, "
            f"{size / 1e6:.0f} MB of osqueryi output (generated in {time.perf_counter() - t0:.1f}s)"
        )
        seed = work / "seed.db"
        history = _history(seed, [datetime(2026, 11, 28, 11, 0, tzinfo=UTC)])
        record_dir(history, work / "before", datetime(2026, 11, 28, 11, 0, tzinfo=UTC))
        history.close()  # type: ignore[attr-defined]
        print(f"previous run recorded: history file {seed.stat().st_size / 1e6:.1f} MB")
        verdict = True
        for scenario in SCENARIOS:
            after = work / f"after-{scenario}"
            merges, merge_cpu, ours, rss, parts = [], [], [], [], []
            for _ in range(args.repeat):
                figures, _, _ = run_child("merge", after, work)
                merges.append(figures["merge"])
                merge_cpu.append(figures["cpu"])
                run_dir = work / "run"
                shutil.rmtree(run_dir, ignore_errors=True)
                run_dir.mkdir()
                shutil.copy(seed, run_dir / "history.db")
                figures, _, peak_ours = run_child("merge+history", after, run_dir)
                ours.append(figures["total"])
                rss.append(peak_ours)
                parts.append(figures)
            merge, both = statistics.median(merges), statistics.median(ours)
            added = both - merge
            record = statistics.median(p["record"] for p in parts)
            diff = statistics.median(p["diff"] for p in parts)
            print(f"\nscenario {scenario!r}: {int(parts[0]['events']):,} diff events")
            print(f"  merge alone           : {merge:6.2f} s")
            print(f"  merge + record + diff : {both:6.2f} s", end="")
            print(f"  (record {record:.2f} s, diff {diff:.2f} s)")
            print(f"  added: {added:.2f} s = {added / merge:.2f}x the merge (target <= 1.0x)")
            cpu_merge = statistics.median(merge_cpu)
            cpu_added = statistics.median(p["cpu"] for p in parts) - cpu_merge
            print(
                f"  CPU (all threads): merge {cpu_merge:.2f} s, added {cpu_added:.2f} s = "
                f"{cpu_added / cpu_merge:.2f}x (the recorder compresses and writes on a second "
                "thread, so wall time hides part of it when a core is free)"
            )
            print(f"  peak RSS {max(rss):.1f} MB (target <= 96 MB); medians of {args.repeat}")
            verdict &= added <= merge and max(rss) <= 96
        many = work / "many.db"
        t0 = time.perf_counter()
        build_many_runs(many, args.runs)
        print(f"\n{args.runs} runs recorded in {time.perf_counter() - t0:.1f}s")
        lists, walls = [], []
        for _ in range(args.repeat):
            figures, wall, _ = run_child("list", many, work)
            lists.append(figures["list"])
            walls.append(wall)
        listed = statistics.median(lists)
        print(
            f"list {args.runs} runs: {listed:.3f} s open + read (target < 0.3 s); "
            f"whole process with imports {statistics.median(walls):.2f} s"
        )
        verdict &= listed < 0.3
        print("targets met" if verdict else "TARGETS NOT MET")


if __name__ == "__main__":
    main()
