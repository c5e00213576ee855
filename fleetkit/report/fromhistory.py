"""The fleet report filled from the history: what ``invoke report`` shows.

Only the history and the inventory are read; no host is contacted. What each
section takes, and why:

- readiness: each host as the newest ``verify`` run that judged it saw it,
  whatever its age (its time is on every row), so a report of the last week
  still says how ready the fleet was when last looked at, and a verify of
  one host does not hide the others.
- coverage: the newest runs of the period (every kind but verify), at most
  :data:`COVERAGE_RUNS`.
- policies: the verdicts of the newest :data:`TREND_RUNS` policy runs of the
  period. A cell's status is the host's latest verdict on that policy; its
  trend spans the runs that evaluated that policy (a run of another pack is
  not a gap); ``first_failed_at`` follows the history's policy state as of
  that latest run (:mod:`fleetkit.history.trends`), so a streak that began
  before the period still shows its real start.
- hunts: the newest :data:`HUNT_RUNS` hunt runs; a hunt run's rows *are* its
  hits (``{path, sha256}`` per node), the first :data:`HITS_KEPT` kept and
  all of them counted.
- queries: the newest :data:`QUERY_RUNS` query runs with their first
  :data:`~fleetkit.report.model.ROW_LIMIT` rows, tagged like the merged
  output; the rest are counted (``invoke show RUN`` prints them).

Everything is bounded by those caps: one node's rows are in memory at a time,
and a 1,000 x 20 x 30 policy history is a single pass over its verdicts.
Rows were redacted before they were recorded; the renderer escapes every
value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from fleetkit.history import Coverage as RunCounts
from fleetkit.history import History, RunKind, RunSummary, Verdict
from fleetkit.history.decode import record_name, row_objects
from fleetkit.history.model import iso, parse_iso
from fleetkit.history.trends import Trend, read_streak_starts, read_trends
from fleetkit.history.verifyrun import Verified, latest_verified
from fleetkit.report.model import (
    ROW_LIMIT,
    Coverage,
    FailingCheck,
    FleetReport,
    HostReadiness,
    Hunt,
    HuntHit,
    Indicator,
    PolicyCell,
    PolicyMatrix,
    PolicyStatus,
    QuarantinedHost,
    QueryRun,
    RunCoverage,
)

COVERAGE_RUNS = 50
TREND_RUNS = 30
HUNT_RUNS = 20
QUERY_RUNS = 10
#: Hits kept per hunt (the report shows fewer; the rest are counted).
HITS_KEPT = 1000
#: The kinds whose coverage the report shows (verify has its own section).
COVERAGE_KINDS = tuple(kind.value for kind in RunKind if kind is not RunKind.VERIFY)
_NODE_ID = "nodeID"
_HOSTNAME = "hostname"


@dataclass(frozen=True)
class Period:
    """What the report covers: runs started at or after ``since`` (None: all), as of ``now``."""

    now: datetime
    since: datetime | None = None

    def holds(self, run: RunSummary) -> bool:
        return self.since is None or run.started_at >= iso(self.since)


def build_report(
    history: History,
    period: Period,
    *,
    fleetkit_version: str,
    quarantined: Sequence[QuarantinedHost] = (),
    verified: Sequence[Verified] | None = None,
) -> FleetReport:
    """The whole report from the history (HistoryError, exit 2, when it is unreadable).

    ``verified``: :func:`~fleetkit.history.verifyrun.latest_verified` when the
    caller has it already (the bundle needs it too).
    """
    return FleetReport(
        generated_at=period.now,
        fleetkit_version=fleetkit_version,
        since=period.since,
        readiness=readiness(latest_verified(history) if verified is None else verified),
        coverage=coverage(history, period),
        policies=policy_matrix(history, period),
        hunts=hunts(history, period),
        quarantined=tuple(quarantined),
        queries=queries(history, period),
    )


def recent_runs(history: History, period: Period, kind: str, limit: int) -> list[RunSummary]:
    """The newest ``limit`` runs of ``kind`` in the period, newest first."""
    return [run for run in history.list_runs(kind=kind, limit=limit) if period.holds(run)]


# --------------------------------------------------------------------------- readiness


def readiness(verified: Sequence[Verified]) -> tuple[HostReadiness, ...]:
    return tuple(
        HostReadiness(
            host=seen.record.host,
            role=seen.record.role,
            ready=seen.record.ready,
            verified_at=parse_iso(seen.at),
            failing=tuple(FailingCheck(c.name, c.evidence) for c in seen.record.failing),
        )
        for seen in verified
    )


# --------------------------------------------------------------------------- coverage


def counts(run: RunSummary) -> Coverage:
    """A run's recorded coverage as the report draws it."""
    c: RunCounts = run.coverage
    return Coverage(c.rows, c.empty, c.failed, c.timed_out, c.missing, c.excluded)


def coverage(history: History, period: Period) -> tuple[RunCoverage, ...]:
    runs = [
        run for kind in COVERAGE_KINDS for run in recent_runs(history, period, kind, COVERAGE_RUNS)
    ]
    runs.sort(key=lambda run: (run.started_at, run.run_id), reverse=True)
    return tuple(
        RunCoverage(run.run_id, run.kind, parse_iso(run.started_at), counts(run))
        for run in runs[:COVERAGE_RUNS]
    )


# --------------------------------------------------------------------------- policies


def policy_matrix(history: History, period: Period) -> PolicyMatrix:
    """Hosts x policies over the newest policy runs of the period (see the module doc)."""
    runs = recent_runs(history, period, RunKind.POLICY.value, TREND_RUNS)
    runs.reverse()  # oldest first
    run_ids = tuple(run.run_id for run in runs)
    trends = read_trends(history, run_ids)
    if not trends:
        return PolicyMatrix(runs=run_ids)
    # The runs that evaluated each policy: a trend spans those (another pack's run is no gap).
    distinct: dict[str, set[tuple[tuple[int, Verdict], ...]]] = {}
    for trend in trends:
        distinct.setdefault(trend.policy, set()).add(trend.verdicts)
    columns = {
        policy: tuple(sorted({i for verdicts in seen for i, _ in verdicts}))
        for policy, seen in distinct.items()
    }
    since = failing_since(history, runs, trends)
    cells: dict[tuple[str, str], PolicyCell] = {}
    shared: dict[tuple[object, ...], PolicyCell] = {}  # most cells of a fleet are alike
    for t in trends:
        key = (t.node_id, t.policy)
        fields = (t.latest[1], since.get(key), shown_trend(t.verdicts, columns[t.policy]))
        cell = shared.get(fields)
        if cell is None:
            cell = shared[fields] = PolicyCell(PolicyStatus(fields[0].value), fields[1], fields[2])
        cells[key] = cell
    return PolicyMatrix.from_cells(cells, runs=run_ids)


def failing_since(
    history: History, runs: Sequence[RunSummary], trends: Sequence[Trend]
) -> dict[tuple[str, str], datetime]:
    """``first_failed_at`` of every failing cell: from its trend when the runs shown hold
    its start, else looked up in the whole history."""
    found: dict[tuple[str, str], datetime] = {}
    older: list[tuple[str, str, str]] = []
    for trend in trends:
        if trend.latest[1] is not Verdict.FAIL:
            continue
        start = trend.streak_start()
        if start is None:
            older.append((trend.node_id, trend.policy, runs[trend.latest[0]].started_at))
        else:
            found[(trend.node_id, trend.policy)] = parse_iso(runs[start].started_at)
    for key, at in read_streak_starts(history, older).items():
        found[key] = parse_iso(at)
    return found


@lru_cache(maxsize=4096)
def shown_trend(
    verdicts: tuple[tuple[int, Verdict], ...], columns: tuple[int, ...]
) -> tuple[PolicyStatus | None, ...]:
    """The statuses at ``columns`` (run indexes), None where the host was not evaluated."""
    by_run = dict(verdicts)
    return tuple(PolicyStatus(by_run[i].value) if i in by_run else None for i in columns)


# --------------------------------------------------------------------------- hunts


def hunts(history: History, period: Period) -> tuple[Hunt, ...]:
    return tuple(hunt_of(history, run) for run in recent_runs(history, period, "hunt", HUNT_RUNS))


def hunt_of(history: History, run: RunSummary) -> Hunt:
    hits: list[HuntHit] = []
    hosts: list[str] = []
    for entry, block in history.node_blocks(run.run_id):
        if not block.count:
            continue
        hosts.append(entry.node_id)
        lines = block.lines()[: HITS_KEPT - len(hits)]
        for row in row_objects(lines, where=record_name(history.path, run.run_id, entry.node_id)):
            hits.append(HuntHit(entry.node_id, row.get("path", ""), row.get("sha256", "")))
    return Hunt(
        run_id=run.run_id,
        started_at=parse_iso(run.started_at),
        indicators=recorded_indicators(run),
        hits=tuple(hits),
        coverage=counts(run),
        total_hits=run.row_count,
        hit_hosts=tuple(hosts),
        question=run.question.text,
    )


def recorded_indicators(run: RunSummary) -> tuple[Indicator, ...]:
    """The indicators the hunt recorded it looked for (``asked["indicators"]``), if any."""
    asked = getattr(run, "asked", None) or {}
    found = asked.get("indicators") if isinstance(asked, Mapping) else None
    if not isinstance(found, list):
        return ()
    return tuple(
        Indicator(str(item.get("path") or ""), str(item.get("sha256") or ""))
        for item in found
        if isinstance(item, Mapping)
    )


# --------------------------------------------------------------------------- queries


def queries(history: History, period: Period) -> tuple[QueryRun, ...]:
    return tuple(
        query_of(history, run) for run in recent_runs(history, period, "query", QUERY_RUNS)
    )


def query_of(history: History, run: RunSummary, limit: int = ROW_LIMIT) -> QueryRun:
    kept = QueryRun.from_records(
        run.run_id,
        parse_iso(run.started_at),
        run.question.text,
        counts(run),
        _first_rows(history, run, limit),
        limit=limit,
    )
    return replace(kept, total_rows=max(run.row_count, len(kept.rows)))


def _first_rows(history: History, run: RunSummary, limit: int) -> Iterator[dict[str, str]]:
    """The first ``limit`` rows of the run, tagged as the merged output tags them."""
    left = limit
    for entry, block in history.node_blocks(run.run_id):
        if left <= 0:
            return
        if not block.count:
            continue
        where = record_name(history.path, run.run_id, entry.node_id)
        for row in row_objects(block.lines()[:left], where=where):
            tags = {_NODE_ID: entry.node_id}
            if _HOSTNAME not in row:
                tags[_HOSTNAME] = entry.hostname
            yield {**tags, **{k: v for k, v in row.items() if k != _NODE_ID}}
            left -= 1
