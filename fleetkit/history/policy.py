"""Policy state over runs: since when a host fails a policy, and what changed now.

``invoke policy`` records each host's verdict per policy with its run
(:meth:`RunRecorder.add_verdicts`). The state of a run is then derived from
the verdicts of that host and policy in earlier runs (ordered by run start),
so it never drifts from the recorded history and a restarted watch computes
exactly what it computed before (nothing re-sent).

Only PASS and FAIL decide. UNKNOWN (osquery cannot tell) and ERROR (no
answer) neither fix nor break a failing streak:

- ``first_failed_at``: start of the first run of the current failing streak
  (the FAIL runs since the last PASS), while the host is failing, or
  undecided after failing; else None.
- ``last_passed_at``: start of the latest run in which the host passed.
- transition: ``newly_failing`` (FAIL after PASS or no decided verdict),
  ``still_failing`` (FAIL after FAIL), ``fixed`` (PASS after FAIL),
  ``still_passing`` (PASS after PASS or nothing), ``undecided`` (UNKNOWN or ERROR).
- ``overdue`` (``--grace DAYS``): failing, and ``first_failed_at`` is more
  than DAYS before now.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from fleetkit.history.model import iso


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"
    ERROR = "ERROR"


class Transition(StrEnum):
    NEWLY_FAILING = "newly_failing"
    STILL_FAILING = "still_failing"
    FIXED = "fixed"
    STILL_PASSING = "still_passing"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class PolicyVerdict:
    """One host's verdict on one policy (``policy`` = ``pack/name``)."""

    node_id: str
    hostname: str
    policy: str
    verdict: str


@dataclass(frozen=True)
class PolicyState:
    node_id: str
    hostname: str
    policy: str
    verdict: Verdict
    transition: Transition
    first_failed_at: str | None
    last_passed_at: str | None
    overdue: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodeID": self.node_id,
            "hostname": self.hostname,
            "policy": self.policy,
            "verdict": self.verdict.value,
            "transition": self.transition.value,
            "first_failed_at": self.first_failed_at,
            "last_passed_at": self.last_passed_at,
            "overdue": self.overdue,
        }


def insert_verdicts(
    connection: sqlite3.Connection, run_id: str, at: str, verdicts: Iterable[PolicyVerdict]
) -> int:
    """Store a run's verdicts (a late answer replaces the node's earlier verdict)."""
    rows = [(run_id, v.node_id, v.hostname, v.policy, _verdict(v.verdict), at) for v in verdicts]
    connection.executemany(
        "INSERT OR REPLACE INTO verdicts (run_id, node_id, hostname, policy, verdict, at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)


_VERDICTS = {v.value: v.value for v in Verdict}


def checked_verdicts(verdicts: Iterable[PolicyVerdict]) -> list[PolicyVerdict]:
    """The verdicts with their verdict spelled as stored; ValueError for an unknown one."""
    return [PolicyVerdict(v.node_id, v.hostname, v.policy, _verdict(v.verdict)) for v in verdicts]


def _verdict(value: object) -> str:
    text = str(value).upper()
    if text not in _VERDICTS:
        raise ValueError(f"unknown verdict {value!r} (one of {', '.join(_VERDICTS)})")
    return text


class RecordedVerdict(NamedTuple):
    """One verdict as recorded, with its run's start (for trends over runs; a tuple
    because a report reads hundreds of thousands)."""

    run_id: str
    at: str
    node_id: str
    hostname: str
    policy: str
    verdict: Verdict


def verdict_history(
    connection: sqlite3.Connection, *, since: str | None = None, pack: str | None = None
) -> Iterator[RecordedVerdict]:
    """Every recorded verdict, oldest run first (run ids sort by start time), then by node
    and policy; optionally from ``since`` on and of one pack."""
    sql = "SELECT run_id, at, node_id, hostname, policy, verdict FROM verdicts"
    where: list[str] = []
    params: list[object] = []
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    if pack is not None:
        where.append("substr(policy, 1, ?) = ?")
        params += [len(pack) + 1, f"{pack}/"]  # policies are "pack/name"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY run_id, node_id, policy"  # the primary key's order: no sort
    members = {v.value: v for v in Verdict}
    for run_id, at, node_id, hostname, policy, verdict in connection.execute(sql, params):
        yield RecordedVerdict(run_id, at, node_id, hostname, policy, members[verdict])


_STATE_SQL = """
SELECT v.node_id, v.hostname, v.policy, v.verdict,
  (SELECT p.verdict FROM verdicts p
    WHERE p.node_id = v.node_id AND p.policy = v.policy AND p.at < v.at
      AND p.verdict IN ('PASS', 'FAIL')
    ORDER BY p.at DESC LIMIT 1) AS previous,
  (SELECT MAX(p.at) FROM verdicts p
    WHERE p.node_id = v.node_id AND p.policy = v.policy AND p.at <= v.at
      AND p.verdict = 'PASS') AS last_passed,
  (SELECT MIN(p.at) FROM verdicts p
    WHERE p.node_id = v.node_id AND p.policy = v.policy AND p.at <= v.at
      AND p.verdict = 'FAIL'
      AND p.at > COALESCE((SELECT MAX(q.at) FROM verdicts q
                            WHERE q.node_id = v.node_id AND q.policy = v.policy
                              AND q.at <= v.at AND q.verdict = 'PASS'), '')) AS first_failed
FROM verdicts v
WHERE v.run_id = ?
ORDER BY v.policy, v.hostname, v.node_id
"""


def policy_states(
    connection: sqlite3.Connection,
    run_id: str,
    *,
    now: datetime,
    grace_days: float | None = None,
) -> list[PolicyState]:
    """Every (host, policy) verdict of ``run_id`` with its state (see the module doc)."""
    cutoff = iso(now - timedelta(days=grace_days)) if grace_days is not None else None
    states = []
    for (
        node_id,
        hostname,
        policy,
        verdict,
        previous,
        last_passed,
        first_failed,
    ) in connection.execute(_STATE_SQL, (run_id,)):
        current = Verdict(verdict)
        transition = _transition(current, previous)
        failing = current is Verdict.FAIL or (
            transition is Transition.UNDECIDED and previous == Verdict.FAIL.value
        )
        since = first_failed if failing else None
        states.append(
            PolicyState(
                node_id=node_id,
                hostname=hostname,
                policy=policy,
                verdict=current,
                transition=transition,
                first_failed_at=since,
                last_passed_at=last_passed,
                overdue=bool(cutoff and since and since < cutoff),
            )
        )
    return states


def _transition(current: Verdict, previous: str | None) -> Transition:
    if current is Verdict.FAIL:
        return Transition.STILL_FAILING if previous == "FAIL" else Transition.NEWLY_FAILING
    if current is Verdict.PASS:
        return Transition.FIXED if previous == "FAIL" else Transition.STILL_PASSING
    return Transition.UNDECIDED
