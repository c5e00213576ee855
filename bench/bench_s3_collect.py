"""Collect 1,000 node results from a local S3 server: spool_many vs one-by-one download_file.

Run from the repository root: ``python -m bench.bench_s3_collect [--objects 1000]
[--parallelism 16] [--runs 3]`` (``python bench/bench_s3_collect.py`` works too).

Puts ``--objects`` small result objects (2-20 KB, laid out like the s3
publisher's plain encoding: ``fleetkit/<job>/<node>/<execution>/stdout``) in
a local moto server, then times (median of ``--runs``) the baseline, boto3's
``download_file`` called for each object one after another, against
:meth:`fleetkit.clients.s3.ResultStore.spool_many` (what ``query`` uses: each
object into its own temporary file, bounded in size and time), both in this same run. Prints
both times, the ratio (target >= 3x, and not slower than ``get_object`` one by
one) and the requests per second the server sustained, since on 2 cores the
local server itself is the ceiling.

The methods take turns within each run (download_file, get_object, boto3's
get_object in the same thread pool, spool_many), so a burst of load from
elsewhere on a shared machine falls on all of them rather than on whichever
was being timed. "boto3 get_object, same pool" is the reader as it was
before the bounded HTTP client (issue 9), timed in the same pool size for
comparison. The CPU time per object of this process and of the server
shows where the ceiling is: moto answers in one Python process, so it
handles at most about 1 / (its CPU per GET) requests a second.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root (for ``lab``) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import botocore.config

from fleetkit.clients.s3 import ResultStore
from fleetkit.foundation.settings import S3Settings
from lab.s3 import REGION, S3Server

BUCKET = "fleetkit-bench"
TARGET_RATIO = 3.0


def make_objects(count: int, seed: int = 7) -> dict[str, bytes]:
    """osqueryi-like JSON bodies of 2-20 KB, deterministic per seed."""
    rng = random.Random(seed)
    objects = {}
    for i in range(count):
        size = rng.randint(2 * 1024, 20 * 1024)
        row = f'  {{"hostname":"node-{i:04d}","path":"/usr/bin/x","sha256":"{i:064x}"}},\n'
        body = ("[\n" + row * (size // len(row) + 1))[:size].encode()
        objects[f"fleetkit/j-bench/node-{i:04d}/e-{i:04d}/stdout"] = body
    return objects


def upload(server: S3Server, objects: dict[str, bytes]) -> None:
    client = server.client()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda kv: client.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]),
                objects.items(),
            )
        )


def process_cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, or of ``pid`` (0.0 where /proc is absent)."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The 1-minute load average: on a shared machine, the context of every figure."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


@dataclass
class Timing:
    """One method's wall times and CPU seconds (this process, the server) over the runs."""

    walls: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def take_turns(
    runs: int, methods: dict[str, Callable[[], None]], server_pid: int | None
) -> dict[str, Timing]:
    """Each run times every method once, one after another (see the module docstring)."""
    timings = {name: Timing() for name in methods}
    for _ in range(runs):
        for name, work in methods.items():
            cpu, server_cpu = process_cpu(), process_cpu(server_pid)
            start = time.perf_counter()
            work()
            timings[name].walls.append(time.perf_counter() - start)
            timings[name].cpu.append(process_cpu() - cpu)
            timings[name].server_cpu.append(process_cpu(server_pid) - server_cpu)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    load_at_start = load_average()
    objects = make_objects(args.objects)
    keys = list(objects)
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        server = S3Server(directory=Path(tmp) / "moto", bucket=BUCKET).start()
        try:
            upload(server, objects)
            sequential_client = server.client()
            downloads = Path(tmp) / "downloads"
            downloads.mkdir()

            def sequential() -> None:
                for i, key in enumerate(keys):
                    sequential_client.download_file(BUCKET, key, str(downloads / f"{i}"))

            settings = S3Settings(
                bucket=BUCKET,
                region=REGION,
                endpoint=server.endpoint,
                parallelism=args.parallelism,
            )
            environ = {
                "AWS_ACCESS_KEY_ID": server.access_key_id,
                "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
            }
            store = ResultStore.from_settings(settings, environ)
            items = [(f"e-{i}", BUCKET, key) for i, key in enumerate(keys)]
            collected: dict[str, object] = {}

            def parallel() -> None:
                for item_id, handle in store.spool_many(items).items():
                    if isinstance(handle, Exception):
                        collected[item_id] = handle
                        continue
                    with handle:
                        collected[item_id] = handle.read()

            # Warm both clients (connection setup, endpoint resolution) outside the timing.
            sequential_client.download_file(BUCKET, keys[0], str(downloads / "warm"))
            parallel()

            def sequential_get() -> None:
                for key in keys:
                    sequential_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

            def boto3_pool() -> None:
                def one(key: str) -> bytes:
                    body: bytes = pool_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                    return body

                with ThreadPoolExecutor(max_workers=args.parallelism) as pool:
                    list(pool.map(one, keys))

            pool_client = boto3.client(
                "s3",
                endpoint_url=server.endpoint,
                region_name=REGION,
                aws_access_key_id=server.access_key_id,
                aws_secret_access_key=server.secret_access_key,
                config=botocore.config.Config(max_pool_connections=args.parallelism),
            )
            pool_client.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
            timings = take_turns(
                args.runs,
                {
                    "download_file": sequential,
                    "get_object": sequential_get,
                    "boto3_pool": boto3_pool,
                    "spool_many": parallel,
                },
                server.pid,
            )
        finally:
            server.stop()

    wrong = sum(1 for (item_id, _, key) in items if collected.get(item_id) != objects[key])
    total_kb = sum(len(b) for b in objects.values()) / 1024
    n = args.objects
    t_seq, t_get = timings["download_file"].wall, timings["get_object"].wall
    t_pool, t_par = timings["boto3_pool"].wall, timings["spool_many"].wall
    ratio = t_seq / t_par

    def cpu_per_object(name: str) -> str:
        timing = timings[name]
        ours = statistics.median(timing.cpu) * 1000 / n
        server_ms = statistics.median(timing.server_cpu) * 1000 / n
        return f"  CPU/object: client {ours:5.2f} ms, server {server_ms:5.2f} ms"

    # download_file sends HEAD then GET per object; spool_many sends one GET.
    print(f"objects: {n} ({total_kb:.0f} KB total), runs: {args.runs} (median, taking turns)")
    print(f"load average at the start: {load_at_start}, at the end: {load_average()}")
    print(
        f"baseline  download_file one by one: {t_seq:7.3f} s  {n / t_seq:7.1f} objects/s  "
        f"{2 * n / t_seq:7.1f} requests/s" + cpu_per_object("download_file")
    )
    print(
        f"(for reference) get_object one by one: {t_get:7.3f} s  {n / t_get:7.1f} objects/s  "
        f"{n / t_get:7.1f} requests/s" + cpu_per_object("get_object")
    )
    print(
        f"(for reference) boto3 get_object, same pool: {t_pool:7.3f} s  "
        f"{n / t_pool:7.1f} objects/s" + cpu_per_object("boto3_pool")
    )
    print(
        f"spool_many (parallelism {args.parallelism:>3}):   {t_par:7.3f} s  "
        f"{n / t_par:7.1f} objects/s  {n / t_par:7.1f} requests/s" + cpu_per_object("spool_many")
    )
    print(f"ratio: {ratio:.2f}x (target >= {TARGET_RATIO:g}x)")
    print(
        f"ratio vs one-by-one get_object: {t_get / t_par:.2f}x (target >= 1: how much is the "
        "pool alone)"
    )
    print(
        f"ratio vs boto3 get_object in the same pool: {t_pool / t_par:.2f}x "
        "(above 1: the bounded reader is the faster)"
    )
    print(f"server sustained {n / t_par:.0f} GET requests/s under spool_many")
    if wrong:
        print(f"ERROR: {wrong} objects fetched wrong or missing", file=sys.stderr)
        return 1
    return 0 if ratio >= TARGET_RATIO and t_par <= t_get else 1


if __name__ == "__main__":
    sys.exit(main())
