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
  not a gap); ``first_failed_at`` is the history's own policy state of that
  latest run (:meth:`History.policy_states`), so a streak that began before
  the period still shows its real start.
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

from fleetkit.history import Coverage as RunCounts
from fleetkit.history import History, RunKind, RunSummary
from fleetkit.history.decode import record_name, row_objects
from fleetkit.history.model import iso, parse_iso
from fleetkit.history.verifyrun import latest_verified
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
) -> FleetReport:
    """The whole report from the history (HistoryError, exit 2, when it is unreadable)."""
    return FleetReport(
        generated_at=period.now,
        fleetkit_version=fleetkit_version,
        since=period.since,
        readiness=readiness(history),
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


def readiness(history: History) -> tuple[HostReadiness, ...]:
    return tuple(
        HostReadiness(
            host=seen.record.host,
            role=seen.record.role,
            ready=seen.record.ready,
            verified_at=parse_iso(seen.at),
            failing=tuple(FailingCheck(c.name, c.evidence) for c in seen.record.failing),
        )
        for seen in latest_verified(history)
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
    if not runs:
        return PolicyMatrix()
    runs.reverse()  # oldest first
    order = {run.run_id: index for index, run in enumerate(runs)}
    oldest = parse_iso(runs[0].started_at)
    # (node, policy) -> {run index: status}; policy -> run indexes that evaluated it.
    seen: dict[tuple[str, str], dict[int, PolicyStatus]] = {}
    evaluated: dict[str, set[int]] = {}
    for verdict in history.verdict_history(since=oldest):
        index = order.get(verdict.run_id)
        if index is None:
            continue  # a run of the period beyond the newest TREND_RUNS, or still recording
        key = (verdict.node_id, verdict.policy)
        seen.setdefault(key, {})[index] = PolicyStatus(verdict.verdict.value)
        evaluated.setdefault(verdict.policy, set()).add(index)
    if not seen:
        return PolicyMatrix(runs=tuple(run.run_id for run in runs))
    columns = {policy: sorted(indexes) for policy, indexes in evaluated.items()}
    latest = {key: max(statuses) for key, statuses in seen.items()}
    since = failing_since(history, runs, latest, seen)
    cells = {
        key: PolicyCell(
            status=statuses[latest[key]],
            first_failed_at=since.get(key),
            trend=tuple(statuses.get(index) for index in columns[key[1]]),
        )
        for key, statuses in seen.items()
    }
    return PolicyMatrix.from_cells(cells, runs=tuple(run.run_id for run in runs))


def failing_since(
    history: History,
    runs: Sequence[RunSummary],
    latest: Mapping[tuple[str, str], int],
    seen: Mapping[tuple[str, str], Mapping[int, PolicyStatus]],
) -> dict[tuple[str, str], datetime]:
    """``first_failed_at`` of every failing cell, from the policy state of its latest run."""
    wanted: dict[int, set[tuple[str, str]]] = {}
    for key, index in latest.items():
        if seen[key][index] is PolicyStatus.FAIL:
            wanted.setdefault(index, set()).add(key)
    found: dict[tuple[str, str], datetime] = {}
    for index, keys in wanted.items():
        for state in history.policy_states(runs[index].run_id):
            key = (state.node_id, state.policy)
            if key in keys and state.first_failed_at:
                found[key] = parse_iso(state.first_failed_at)
    return found


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
