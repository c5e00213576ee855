"""Policy verdicts over many runs at once: the report's matrix of a large fleet.

A 1,000-host fleet with 20 policies and 30 runs has 600,000 verdicts.
Reading them as Python objects costs seconds; here SQLite groups them per
(host, policy) into one short text each, and every distinct text is decoded
once (a healthy fleet has few distinct trends).

``first_failed_at`` follows :mod:`fleetkit.history.policy`: the first FAIL
after the host last passed that policy (UNKNOWN and ERROR neither fix nor
break a streak). When the chosen runs hold that PASS, the streak's start is
among them (:meth:`Trend.streak_start`); otherwise the streak began before
them and one indexed lookup per such cell finds its start
(:func:`streak_starts`), so a host failing for months shows since when.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from fleetkit.history.policy import Verdict
from fleetkit.history.store import History

#: One character per verdict in the grouped text.
_LETTER = {v.value[0]: v for v in Verdict}


@dataclass(frozen=True)
class Trend:
    """One (host, policy) over the chosen runs: run index -> verdict, oldest run first."""

    node_id: str
    policy: str
    verdicts: tuple[tuple[int, Verdict], ...]

    @property
    def latest(self) -> tuple[int, Verdict]:
        return self.verdicts[-1]

    def streak_start(self) -> int | None:
        """The run index where the current failing streak began, when the chosen runs
        show it (a PASS before it); None when the latest verdict is not FAIL, or the
        streak reaches back beyond the chosen runs."""
        if self.latest[1] is not Verdict.FAIL:
            return None
        start = None
        for index, verdict in reversed(self.verdicts):
            if verdict is Verdict.PASS:
                return start
            if verdict is Verdict.FAIL:
                start = index
        return None


def verdict_trends(connection: sqlite3.Connection, run_ids: Sequence[str]) -> Iterator[Trend]:
    """Every (host, policy) evaluated in ``run_ids`` (indexes: positions in ``run_ids``)."""
    if not run_ids:
        return
    chosen = ", ".join("(?, ?)" for _ in run_ids)
    params: list[object] = [x for index, run_id in enumerate(run_ids) for x in (run_id, index)]
    sql = (
        f"WITH chosen (run_id, idx) AS (VALUES {chosen})"
        " SELECT v.node_id, v.policy, group_concat(c.idx || substr(v.verdict, 1, 1), ',')"
        " FROM verdicts v JOIN chosen c ON c.run_id = v.run_id"
        " GROUP BY v.node_id, v.policy"
    )
    for node_id, policy, text in connection.execute(sql, params):
        yield Trend(node_id, policy, _decode(text))


@lru_cache(maxsize=4096)
def _decode(text: str) -> tuple[tuple[int, Verdict], ...]:
    """``"0P,1P,2F"`` -> ((0, PASS), (1, PASS), (2, FAIL)), sorted by run (SQLite does not
    promise the order of group_concat)."""
    try:
        pairs = sorted((int(item[:-1]), _LETTER[item[-1]]) for item in text.split(","))
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"unreadable verdicts {text[:80]!r}") from None
    return tuple(pairs)


_STREAK_SQL = """
SELECT MIN(f.at) FROM verdicts f
WHERE f.node_id = :node AND f.policy = :policy AND f.at <= :as_of AND f.verdict = 'FAIL'
  AND f.at > COALESCE((SELECT MAX(p.at) FROM verdicts p
                        WHERE p.node_id = :node AND p.policy = :policy
                          AND p.at <= :as_of AND p.verdict = 'PASS'), '')
"""


def streak_starts(
    connection: sqlite3.Connection, cells: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str], str]:
    """``first_failed_at`` (ISO) of each failing ``(node_id, policy, as_of)``: the first FAIL
    after the host last passed the policy, up to ``as_of`` (its latest run's start)."""
    found: dict[tuple[str, str], str] = {}
    for node_id, policy, as_of in cells:
        row = connection.execute(
            _STREAK_SQL, {"node": node_id, "policy": policy, "as_of": as_of}
        ).fetchone()
        if row is not None and row[0]:
            found[(node_id, policy)] = row[0]
    return found


def read_trends(history: History, run_ids: Sequence[str]) -> list[Trend]:
    """:func:`verdict_trends` of an open history; HistoryError (exit 2) names the file."""
    try:
        return list(verdict_trends(history.database.connection, run_ids))
    except sqlite3.Error as exc:
        raise history.database.error(exc, "read policy verdicts") from None
    except ValueError as exc:
        raise history.database.error(ValueError(f"corrupt verdict ({exc})"), "read") from None


def read_streak_starts(
    history: History, cells: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str], str]:
    """:func:`streak_starts` of an open history; HistoryError (exit 2) names the file."""
    try:
        return streak_starts(history.database.connection, cells)
    except sqlite3.Error as exc:
        raise history.database.error(exc, "read policy state") from None
