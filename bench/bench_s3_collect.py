"""Collect 1,000 node results from a local S3 server: spool_many vs one-by-one download_file.

Run from the repository root: ``python -m bench.bench_s3_collect [--objects 1000]
[--parallelism 16] [--runs 3]`` (``python bench/bench_s3_collect.py`` works too).

Puts ``--objects`` small result objects (2-20 KB, laid out like the s3
publisher's plain encoding: ``fleetkit/<job>/<node>/<execution>/stdout``) in
a local moto server, then times (median of ``--runs``) the baseline, boto3's
``download_file`` called for each object one after another, against
:meth:`fleetkit.clients.s3.ResultStore.spool_many` (what ``query`` uses: each
object into its own temporary file, bounded in size and time), both in this same run. Prints
both times, the ratio (target >= 3x) and the requests per second the server
sustained, since on 2 cores the local server itself is the ceiling.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root (for ``lab``) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def median_time(runs: int, work: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

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

            t_seq = median_time(args.runs, sequential)
            t_get = median_time(args.runs, sequential_get)
            t_par = median_time(args.runs, parallel)
        finally:
            server.stop()

    wrong = sum(1 for (item_id, _, key) in items if collected.get(item_id) != objects[key])
    total_kb = sum(len(b) for b in objects.values()) / 1024
    ratio = t_seq / t_par
    # download_file sends HEAD then GET per object; spool_many sends one GET.
    print(f"objects: {args.objects} ({total_kb:.0f} KB total), runs: {args.runs} (median)")
    print(
        f"baseline  download_file one by one: {t_seq:7.3f} s  "
        f"{args.objects / t_seq:7.1f} objects/s  {2 * args.objects / t_seq:7.1f} requests/s"
    )
    print(
        f"(for reference) get_object one by one: {t_get:7.3f} s  "
        f"{args.objects / t_get:7.1f} objects/s  {args.objects / t_get:7.1f} requests/s"
    )
    print(
        f"spool_many (parallelism {args.parallelism:>3}):   {t_par:7.3f} s  "
        f"{args.objects / t_par:7.1f} objects/s  {args.objects / t_par:7.1f} requests/s"
    )
    print(f"ratio: {ratio:.2f}x (target >= {TARGET_RATIO:g}x)")
    print(f"ratio vs one-by-one get_object: {t_get / t_par:.2f}x (how much is the pool alone)")
    print(f"server sustained {args.objects / t_par:.0f} GET requests/s under spool_many")
    if wrong:
        print(f"ERROR: {wrong} objects fetched wrong or missing", file=sys.stderr)
        return 1
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
