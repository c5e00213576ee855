"""The runs an evidence bundle carries, read back from the history.

Each run's file is what ``invoke show RUN --format json`` prints, written by
the same function (:func:`fleetkit.ask.replay.write_run`: a query run through
the merge writer over its rebuilt answer, a policy or hunt run through its
view), so the bundle holds the bytes the run printed -- not a second
rendering that could drift. Outputs are spooled to temporary files past a
few megabytes; a bundle of large runs is never held in memory whole.

The osquery and Bacalhau versions listed per node are what the newest
recorded verify run confirmed on that host (see
:mod:`fleetkit.history.verifyrun`): a version is only ever the pinned one a
passing check compared, never text a node printed. A node never verified, or
whose check failed, has none (null), and the manifest says where each came from.

Which runs: ``--runs ID,...`` (ids or unique prefixes, at most
:data:`MAX_RUNS`), else the runs the report shows -- the verify runs behind
its readiness, its queries, hunts and the runs of its coverage table -- at
most :data:`DEFAULT_RUNS`, in that order.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence

from fleetkit.ask.replay import write_run
from fleetkit.foundation.status import UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import History, RunSummary
from fleetkit.history.model import parse_iso
from fleetkit.history.verifyrun import Verified
from fleetkit.report.bundle import BundleRun, NodeVersions
from fleetkit.report.model import FleetReport

DEFAULT_RUNS = 64
MAX_RUNS = 1000
#: The format every run's output is bundled in (machine-readable, what show prints).
OUTPUT_FORMAT = "json"
#: Bytes of one run's output kept in memory before it goes to a temporary file.
SPOOL_BYTES = 8 << 20


def parse_run_ids(text: str) -> list[str]:
    """``--runs a,b,c``: ids or unique prefixes, each once, in the order given."""
    ids = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not ids:
        raise UsageError(
            "expected run ids (invoke history lists them), e.g. --runs ID,ID", key="--runs"
        )
    if len(ids) > MAX_RUNS:
        raise UsageError(f"at most {MAX_RUNS} runs in one bundle, got {len(ids)}", key="--runs")
    return ids


def shown_run_ids(model: FleetReport, verified: Sequence[Verified]) -> list[str]:
    """The runs the report shows, most telling first, at most :data:`DEFAULT_RUNS`."""
    ids = [seen.run_id for seen in verified]
    ids += [run.run_id for run in model.queries]
    ids += [hunt.run_id for hunt in model.hunts]
    ids += [run.run_id for run in model.coverage]
    return list(dict.fromkeys(ids))[:DEFAULT_RUNS]


def bundle_runs(
    history: History,
    run_ids: Iterable[str],
    verified: Sequence[Verified],
    stack: contextlib.ExitStack,
    *,
    spool_bytes: int = SPOOL_BYTES,
) -> list[BundleRun]:
    """Each run with its output (spooled files closed by ``stack``) and its nodes' versions.

    An unknown or ambiguous id is UnknownRunError (exit 2) before anything is written.
    """
    runs = [history.get_run(run_id) for run_id in run_ids]
    seen: set[str] = set()
    for run in runs:
        if run.run_id in seen:
            raise UsageError(f"run {terminal_safe(run.run_id)} is given twice", key="--runs")
        seen.add(run.run_id)
    by_host = {v.record.host: v for v in verified}
    return [bundle_run(history, run, by_host, stack, spool_bytes) for run in runs]


def bundle_run(
    history: History,
    run: RunSummary,
    verified: Mapping[str, Verified],
    stack: contextlib.ExitStack,
    spool_bytes: int = SPOOL_BYTES,
) -> BundleRun:
    spool = tempfile.SpooledTemporaryFile(max_size=spool_bytes)  # noqa: SIM115 - the stack closes it
    output = stack.enter_context(spool)
    write_run(history, run, OUTPUT_FORMAT, output)
    nodes = tuple(
        node_versions(entry.node_id, entry.hostname, verified.get(entry.node_id))
        for entry in history.entries(run.run_id)
    )
    status = run.status.value + (f": {run.note}" if run.note else "")
    return BundleRun(
        run_id=run.run_id,
        kind=run.kind,
        sql=run.question.text,
        started_at=parse_iso(run.started_at),
        output=output,
        output_format=OUTPUT_FORMAT,
        finished_at=parse_iso(run.ended_at) if run.ended_at else None,
        nodes=nodes,
        status=status,
    )


def node_versions(node_id: str, hostname: str, seen: Verified | None) -> NodeVersions:
    if seen is None:
        return NodeVersions(node_id, hostname)
    return NodeVersions(
        node_id,
        hostname,
        seen.record.osquery_version,
        seen.record.bacalhau_version,
        verified_by=seen.run_id,
        verified_at=parse_iso(seen.at),
    )
