"""``invoke history``, ``invoke show RUN``, ``invoke diff``: the fleet's memory, read back.

- ``history [--kind K] [--limit N] [--format F]``: recorded runs, newest
  first, each with its coverage (answered with rows / empty / failed / timed
  out / missing), status (complete, incomplete and why, still recording) and
  how many nodes answered late.
- ``show RUN [--format F] [--output FILE]``: what the run printed, byte for
  byte, in any format (default: the format its command defaults to), with
  the nodes that answered later (``--retry-missing``) marked ``answeredLate``;
  the run's details and coverage on stderr.
- ``diff [--run A [--run B]] [--format F]``: rows added and removed per
  node between two runs of the same question, osquery's differential shape
  (:mod:`fleetkit.ask.changes`). No run: the newest run against the one before
  it of the same question and scope; one: that run against the newest later
  one; two: those two (different questions: exit 2, naming both).

These only read: the history file is never created here; without one,
``history`` lists no runs and ``show``/``diff`` say nothing was recorded yet
(exit 2). RUN is a run id or a unique prefix of one; an unknown or
ambiguous id is exit 2 naming the candidates.
"""

from __future__ import annotations

from typing import Any

from fleetkit.ask.changes import summarize_diff, write_diff
from fleetkit.ask.coverage import coverage_line
from fleetkit.ask.replay import write_run
from fleetkit.foundation.output import (
    CLOSED_EARLY,
    ByteSink,
    check_format,
    check_output_path,
    deliver,
    render_records,
)
from fleetkit.foundation.status import ExitStatus, UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import History, NoHistoryError, RunKind, RunSummary, open_history
from fleetkit.runtime import Runtime

#: What ``show`` prints when no --format is given: the format the run's command defaults to.
DEFAULT_FORMATS = {"policy": "table", "hunt": "table"}
LIST_COLUMNS = (
    "run_id",
    "kind",
    "started_at",
    "status",
    "answered",
    "coverage",
    "rows",
    "late_nodes",
    "question",
)
#: Longest ``--limit``: a listing stays a listing.
MAX_LIMIT = 100_000


def open_reader(rt: Runtime) -> History:
    return open_history(rt.settings.history, for_writing=False)


# --------------------------------------------------------------------------- history


def list_runs(rt: Runtime, *, kind: str, limit: int, output_format: str) -> ExitStatus:
    fmt = check_format(output_format)
    if kind and kind not in {k.value for k in RunKind}:
        choices = ", ".join(k.value for k in RunKind)
        raise UsageError(f"must be one of {choices}, got {kind!r}", key="--kind")
    if not 0 < limit <= MAX_LIMIT:
        raise UsageError(f"must be from 1 to {MAX_LIMIT}, got {limit}", key="--limit")
    try:
        with open_reader(rt) as history:
            runs = history.list_runs(kind=kind or None, limit=limit)
    except NoHistoryError as exc:  # a fresh project: an empty list, said so
        rt.env.say(f"history: {exc}")
        runs = []
    records = [listed(run) for run in runs]
    if fmt in ("json", "ndjson"):
        data = render_records([run.as_dict() for run in runs], LIST_COLUMNS, fmt)
    else:
        data = render_records(records, LIST_COLUMNS, fmt) if records else b"(no runs)\n"
    if deliver(rt.env, lambda sink: sink.write(data), None):
        rt.env.say(f"history: {CLOSED_EARLY}")
    rt.env.say(f"history: {len(runs)} run(s), newest first")
    return ExitStatus.SUCCESS


def listed(run: RunSummary) -> dict[str, Any]:
    """One line of the listing (csv, table)."""
    coverage = run.coverage
    status = run.status.value + (f": {run.note}" if run.note else "")
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "started_at": run.started_at[:19].replace("T", " ") + "Z",
        "status": status,
        "answered": f"{coverage.answered}/{coverage.asked}",
        "coverage": (
            f"{coverage.rows} rows, {coverage.empty} empty, {coverage.failed} failed, "
            f"{coverage.timed_out} timed out, {coverage.missing} missing"
        ),
        "rows": run.row_count,
        "late_nodes": run.late_nodes,
        "question": run.question.label(),
    }


# --------------------------------------------------------------------------- show


def show(rt: Runtime, *, run_id: str, output_format: str, output: str | None) -> ExitStatus:
    check_output_path(output)
    with open_reader(rt) as history:
        run = history.get_run(run_id)
        fmt = check_format(output_format or DEFAULT_FORMATS.get(run.kind, "json"))

        def write(sink: ByteSink) -> None:
            write_run(history, run, fmt, sink)

        if deliver(rt.env, write, output):
            rt.env.say(f"show: {CLOSED_EARLY}")
        late = [entry for entry in history.entries(run.run_id) if entry.late]
    describe(rt, run)
    for entry in late:
        rt.env.say(terminal_safe(f"  {entry.node_id}: answered late (--retry-missing)"))
    return ExitStatus.SUCCESS


def describe(rt: Runtime, run: RunSummary) -> None:
    """The run on stderr: what, when, where, how complete."""
    say = rt.env.say
    job = f", job {run.job_id}" if run.job_id else ""
    say(
        terminal_safe(
            f"run {run.run_id}: {run.kind} {run.question.label()!r} via {run.transport}{job}, "
            f"started {run.started_at}, ended {run.ended_at or '-'}"
        )
    )
    say(terminal_safe(f"status: {run.status.value}" + (f" ({run.note})" if run.note else "")))
    say(coverage_line(run.coverage))


# --------------------------------------------------------------------------- diff


def diff(rt: Runtime, *, runs: list[str], output_format: str, output: str | None) -> ExitStatus:
    fmt = check_format(output_format)
    check_output_path(output)
    if len(runs) > 2:
        raise UsageError(f"give at most two runs, got {len(runs)}", key="--run")
    with open_reader(rt) as history:
        changes = history.diff(*runs)
        events = [0]

        def write(sink: ByteSink) -> None:
            events[0] = write_diff(changes, fmt, sink)

        if deliver(rt.env, write, output):
            rt.env.say(f"diff: {CLOSED_EARLY}")
    summarize_diff(changes, events[0], rt.env.say)
    return ExitStatus.SUCCESS
