"""Benchmark: the fleet report of a large fleet, rendered and opened in headless Chromium.

Builds the report model of 1,000 hosts x 20 policies x 30 policy runs (plus
1,000 readiness rows, 30 runs of coverage, a hunt, quarantined hosts and ten
query runs), then measures, medians of 3:

- ``render_html`` + writing the file (what ``invoke report`` adds to reading
  the history), and the file's size;
- opening the file in headless Chromium until the first frame after ``load``
  is painted (a new page each time, one browser);
- in the same run, two baselines: the small lab report (Chromium's fixed cost
  per page) and the same large report with every matrix row laid out up front
  (no ``content-visibility``), to show what the lazy rows buy;
- what the lazy rows defer: scrolling to the policy matrix and sorting it.

Targets (issue 12): the file under 5 MB, loaded in under 2 s.

    python bench/bench_report.py [--hosts 1000] [--policies 20] [--runs 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetkit.foundation.atomic import atomic_write
from fleetkit.report.browser import launch, unavailable_reason
from fleetkit.report.html import render_html
from fleetkit.report.samples import lab_sample, large_fleet

SIZE_TARGET = 5_000_000
LOAD_TARGET = 2.0
#: Resolves after the first frame painted after load.
PAINTED = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def median_of(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


def load_time(browser: Any, path: Path, then: str | None = None) -> tuple[float, float]:
    """Seconds to load and paint ``path``; and seconds for ``then`` (a script) and a paint."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        start = time.perf_counter()
        page.goto(path.as_uri(), wait_until="load")
        page.evaluate(PAINTED)
        loaded = time.perf_counter() - start
        after = 0.0
        if then:
            start = time.perf_counter()
            page.evaluate(then)
            page.evaluate(PAINTED)
            after = time.perf_counter() - start
        return loaded, after
    finally:
        page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    model = large_fleet(args.hosts, args.policies, args.runs)
    print(
        f"model: {args.hosts} hosts x {args.policies} policies x {args.runs} runs "
        f"built in {time.perf_counter() - start:.2f} s"
    )

    with tempfile.TemporaryDirectory(prefix="fleetkit-bench-report-") as tmp:
        out = Path(tmp)
        report = out / "report.html"

        cpu: list[float] = []

        def render() -> float:
            start, start_cpu = time.perf_counter(), time.process_time()
            atomic_write(report, render_html(model).encode("utf-8"))
            cpu.append(time.process_time() - start_cpu)
            return time.perf_counter() - start

        rendered = median_of(args.repeat, render)
        size = report.stat().st_size
        print(
            f"render_html + write: median {rendered:.3f} s (CPU {statistics.median(cpu):.3f} s); "
            f"file {size / 1e6:.2f} MB ({size:,} bytes)"
        )

        eager = out / "eager.html"
        eager.write_text(
            report.read_text().replace(' class="sortable m lazy"', ' class="sortable m"')
        )
        small = out / "lab.html"
        small.write_text(render_html(lab_sample()))

        reason = unavailable_reason()
        if reason is not None:
            print(f"chromium: skipped ({reason})")
            return 1
        scroll = "document.getElementById('policies').scrollIntoView()"
        sort = "document.querySelectorAll('#t-policy thead th')[4].click()"
        with launch() as browser:
            load_time(browser, small)  # warm the browser (first page pays process start-up)
            base = median_of(args.repeat, lambda: load_time(browser, small)[0])
            loads = [load_time(browser, report, scroll) for _ in range(args.repeat)]
            loaded = statistics.median(t for t, _ in loads)
            scrolled = statistics.median(t for _, t in loads)
            sorted_ = median_of(args.repeat, lambda: load_time(browser, report, sort)[1])
            eager_load = median_of(args.repeat, lambda: load_time(browser, eager)[0])
    print(f"chromium loads of the large report: {', '.join(f'{t:.2f}' for t, _ in loads)} s")
    print(
        f"chromium load + first paint: median {loaded:.2f} s "
        f"(lab report baseline {base:.2f} s: {loaded / base:.1f}x; every matrix row laid out "
        f"up front {eager_load:.2f} s: lazy rows {eager_load / loaded:.1f}x faster)"
    )
    print(
        f"deferred work: scroll to the matrix + paint {scrolled:.2f} s; "
        f"sort the matrix by a policy + paint {sorted_:.2f} s"
    )
    size_ok = size < SIZE_TARGET
    load_ok = loaded < LOAD_TARGET
    print(
        f"targets: file < 5 MB: {'yes' if size_ok else 'NO'}; "
        f"load < 2 s: {'yes' if load_ok else 'NO'}"
    )
    return 0 if size_ok and load_ok else 1


if __name__ == "__main__":
    sys.exit(main())
