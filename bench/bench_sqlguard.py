"""Benchmark: what checking SQL by SQLite's grammar costs before a query is submitted.

Measures ``refuse_denied_tables`` and ``refuse_redaction_bypass`` on a typical
operator query, a policy-pack-like join and a full hunt batch (48 KB of SQL,
~700 hash literals), against a baseline measured in the same run: tokenizing
the same SQL only (what the previous, token-based guard cost). Prints the
median of 3 runs of N calls each, and the ratio to the baseline.

    python bench/bench_sqlguard.py [--calls 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from fleetkit.commands import hunt
from fleetkit.foundation.settings import DEFAULT_DISABLED_TABLES
from fleetkit.foundation.sqlguard import refuse_denied_tables, refuse_redaction_bypass, tokenize


def hunt_batch() -> str:
    indicators = [hunt.Indicator(f"/srv/f{i:05d}", f"{i:064x}") for i in range(3000)]
    return hunt.build_batches(hunt.plan_targets(indicators, hunt.DEFAULT_HASH_SCOPE))[0]


CASES = {
    "typical query": "SELECT pid, name, cmdline FROM processes WHERE name LIKE '%ssh%'",
    "pack-like join": (
        "SELECT u.username, k.path, k.encrypted FROM users u "
        "JOIN user_ssh_keys k ON k.uid = u.uid WHERE k.encrypted = '0' OR k.key_type = 'rsa'"
    ),
    "hunt batch (48 KB)": hunt_batch(),
}


def median_ms(action: Callable[[], object], calls: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            action()
        runs.append((time.perf_counter() - start) / calls * 1000)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'case':<20} {'tokens ms':>10} {'denied ms':>10} {'redact ms':>10} {'ratio':>7}")
    for name, sql in CASES.items():
        base = median_ms(lambda sql=sql: list(tokenize(sql)), args.calls, args.repeat)
        denied = median_ms(
            lambda sql=sql: refuse_denied_tables(sql, DEFAULT_DISABLED_TABLES),
            args.calls,
            args.repeat,
        )
        redact = median_ms(
            lambda sql=sql: refuse_redaction_bypass(sql, ["username"]), args.calls, args.repeat
        )
        print(f"{name:<20} {base:>10.2f} {denied:>10.2f} {redact:>10.2f} {denied / base:>6.1f}x")


if __name__ == "__main__":
    main()
