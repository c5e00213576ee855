"""From one run's state to the events worth telling someone about: changes only.

Pure functions over small dataclasses that the watch's glue fills from the
history (``fleetkit.history``): per host and policy the transition the history
computed for this run (``newly_failing``, ``still_failing``, ``fixed``,
``still_passing``, ``undecided``) with ``first_failed_at``/``last_passed_at``;
per host and hunt query this run's rows and the rows of that host's previous
answer; per node that did not answer, in how many consecutive runs it has not.

What is an event:

- ``policy_failing``: a host's transition is ``newly_failing``;
- ``policy_fixed``: a host's transition is ``fixed``;
- ``hunt_hit``: a row a hunt query returned on a host that the host's previous
  answer to that query did not hold (a host that never answered before: every
  row). Rows are compared as exact values, in any order, counted as multisets
  (a second identical process is a new hit);
- ``node_missing``: a node's unanswered streak reaches exactly ``missing_after``
  runs (once per absence, not every run after);
- ``events_truncated``: one run produced more than ``limit`` events; the first
  ``limit - 1`` are kept and this one counts the rest.

Because every input is derived from the recorded history, computing the
events of a run twice gives the same events with the same ids.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetkit.watch.events import Event, EventKind, bounded_row, make_event

#: Transitions the history reports (fleetkit.history.policy.Transition values).
NEWLY_FAILING = "newly_failing"
FIXED = "fixed"
TRANSITIONS = frozenset({NEWLY_FAILING, "still_failing", FIXED, "still_passing", "undecided"})
DEFAULT_EVENT_LIMIT = 1000

Row = Mapping[str, str]


@dataclass(frozen=True)
class RunInfo:
    """The run the events belong to."""

    run_id: str
    pack: str
    #: When the run started (ISO 8601 UTC, as the history records it).
    started_at: str


@dataclass(frozen=True)
class PolicyObservation:
    """One host's state on one policy in this run (history: ``PolicyState``)."""

    node_id: str
    hostname: str
    #: ``pack/name``
    policy: str
    transition: str
    first_failed_at: str | None = None
    last_passed_at: str | None = None
    severity: str | None = None

    def __post_init__(self) -> None:
        if self.transition not in TRANSITIONS:
            raise ValueError(f"unknown policy transition {self.transition!r}")


@dataclass(frozen=True)
class HuntObservation:
    """One host's answer to one hunt query in this run, and its previous answer."""

    node_id: str
    hostname: str
    query: str
    rows: tuple[Row, ...]
    #: The rows of the host's previous answer to this query; None = it never answered before.
    previous_rows: tuple[Row, ...] | None = None
    severity: str | None = None


@dataclass(frozen=True)
class NodeAbsence:
    """A node that did not answer this run (failed, timed out or missing)."""

    node_id: str
    hostname: str
    #: Consecutive runs of this pack, ending with this one, without an answer (>= 1).
    streak: int
    reason: str = ""


@dataclass(frozen=True)
class RunObservations:
    """Everything :func:`compute_events` needs about one run."""

    run: RunInfo
    policies: tuple[PolicyObservation, ...] = ()
    hunts: tuple[HuntObservation, ...] = ()
    absences: tuple[NodeAbsence, ...] = field(default_factory=tuple)


def compute_events(
    observed: RunObservations, *, missing_after: int, limit: int = DEFAULT_EVENT_LIMIT
) -> list[Event]:
    """The run's events in a stable order (policies, hunt hits, missing nodes)."""
    if missing_after < 1 or limit < 2:
        raise ValueError("missing_after must be at least 1 and limit at least 2")
    run = observed.run
    events = [
        *policy_events(run, observed.policies),
        *hunt_events(run, observed.hunts),
        *absence_events(run, observed.absences, missing_after=missing_after),
    ]
    if len(events) <= limit:
        return events
    kept = events[: limit - 1]
    left_out = Counter(e.kind.value for e in events[limit - 1 :])
    kept.append(
        _event(
            run,
            EventKind.EVENTS_TRUNCATED,
            details={"left_out": sum(left_out.values()), "by_kind": dict(sorted(left_out.items()))},
        )
    )
    return kept


def policy_events(run: RunInfo, observations: Iterable[PolicyObservation]) -> list[Event]:
    events = []
    for item in sorted(observations, key=lambda o: (o.policy, o.hostname, o.node_id)):
        if item.transition == NEWLY_FAILING:
            kind = EventKind.POLICY_FAILING
        elif item.transition == FIXED:
            kind = EventKind.POLICY_FIXED
        else:
            continue
        details: dict[str, str | None] = {
            "policy": item.policy,
            "first_failed_at": item.first_failed_at,
            "last_passed_at": item.last_passed_at,
        }
        if item.severity:
            details["severity"] = item.severity
        events.append(
            _event(
                run,
                kind,
                node_id=item.node_id,
                hostname=item.hostname,
                subject=item.policy,
                details=details,
            )
        )
    return events


def hunt_events(run: RunInfo, observations: Iterable[HuntObservation]) -> list[Event]:
    events = []
    for item in sorted(observations, key=lambda o: (o.query, o.hostname, o.node_id)):
        for digest, row in new_rows(item.rows, item.previous_rows):
            details: dict[str, object] = {"query": item.query, "row": bounded_row(row)}
            if item.severity:
                details["severity"] = item.severity
            events.append(
                _event(
                    run,
                    EventKind.HUNT_HIT,
                    node_id=item.node_id,
                    hostname=item.hostname,
                    subject=f"{item.query}#{digest}",
                    details=details,
                )
            )
    return events


def new_rows(rows: Sequence[Row], previous: Sequence[Row] | None) -> list[tuple[str, Row]]:
    """(digest#n, row) for each row beyond what ``previous`` held, sorted by digest.

    The n-th copy of an identical row gets ``.n`` so two equal new rows are
    two hits with two ids, and the ids stay the same however rows are ordered.
    """
    before = Counter(row_digest(r) for r in previous or ())
    seen: Counter[str] = Counter()
    out = []
    for digest, row in sorted(((row_digest(r), r) for r in rows), key=lambda pair: pair[0]):
        seen[digest] += 1
        if seen[digest] > before[digest]:
            out.append((f"{digest}.{seen[digest]}", row))
    return out


def row_digest(row: Row) -> str:
    """Identity of a row's exact values (column order does not matter)."""
    text = json.dumps({str(k): str(v) for k, v in row.items()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def absence_events(
    run: RunInfo, absences: Iterable[NodeAbsence], *, missing_after: int
) -> list[Event]:
    return [
        _event(
            run,
            EventKind.NODE_MISSING,
            node_id=item.node_id,
            hostname=item.hostname,
            details={"consecutive_runs": item.streak, "reason": item.reason[:500]},
        )
        for item in sorted(absences, key=lambda a: (a.hostname, a.node_id))
        if item.streak == missing_after
    ]


def _event(run: RunInfo, kind: EventKind, **fields: Any) -> Event:
    return make_event(kind, run_id=run.run_id, pack=run.pack, at=run.started_at, **fields)
