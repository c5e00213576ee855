"""The history as the watch's notifications read it (:class:`~.session.HistoryView`).

Everything an event is computed from is read back from the recorded runs
(:mod:`.packrecord` says how a pack run is laid out), never from the live
answer, so a restarted watch computes exactly the events it computed before:

- which runs to notify: the pack's runs recorded by the watch that
  completed. A run that failed as a whole (orchestrator down) or was
  stopped is incomplete: it is in the history with its reason, but tells
  nothing about the nodes, so it neither notifies nor counts;
- policy transitions: the history's own (``History.policy_states``);
- hunt hits: a node's rows of a hunt statement against that node's last
  real answer to the same statement (the newest earlier complete run of the
  same pack text in which it answered that statement);
- missing nodes: in how many consecutive complete runs of the same pack
  text, ending with this one, a node did not answer (runs that asked no
  node at all are skipped: they say nothing about it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fleetkit.ask.packs import Pack
from fleetkit.history import History, NodeEntry, RunStatus, RunSummary
from fleetkit.watch.packrecord import failed_statements, is_watch_run, rows_by_statement
from fleetkit.watch.session import RunMark
from fleetkit.watch.transitions import (
    HuntObservation,
    NodeAbsence,
    PolicyObservation,
    RunInfo,
    RunObservations,
)

#: Runs of one pack looked at, at most, when reading back (newest first).
DEFAULT_WINDOW = 200

Rows = list[dict[str, str]]


class PackHistory:
    """Reads a pack's recorded watch runs for :class:`~.session.Notifications`."""

    def __init__(
        self,
        history: History,
        packs: Mapping[str, Pack],
        *,
        missing_after: int,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.history = history
        self.packs = dict(packs)
        self.missing_after = missing_after
        self.window = window

    # ---- the HistoryView protocol ----------------------------------------------------------
    def finished_runs(self, pack: str) -> Sequence[RunMark]:
        return [RunMark(r.started_at, r.run_id) for r in self._complete_runs(pack)]

    def observations(self, pack: str, run: RunMark) -> RunObservations:
        summary = self.history.get_run(run.run_id)
        entries = self.history.entries(summary.run_id)
        earlier = [
            r
            for r in self._complete_runs(pack)
            if (r.started_at, r.run_id) < (summary.started_at, summary.run_id)
            and r.question.text == summary.question.text
        ]
        reader = _RowReader(self.history)
        return RunObservations(
            RunInfo(summary.run_id, pack, summary.started_at),
            policies=self._policies(summary),
            hunts=self._hunts(summary, entries, earlier, reader) if summary.kind == "hunt" else (),
            absences=self._absences(entries, earlier),
        )

    # ---- reading -----------------------------------------------------------------------------
    def _complete_runs(self, pack: str) -> list[RunSummary]:
        """The pack's complete watch runs, newest first."""
        return [
            r
            for r in self.history.list_runs(pack=pack, limit=self.window)
            if is_watch_run(r.scope) and r.status is RunStatus.COMPLETE
        ]

    def _policies(self, summary: RunSummary) -> tuple[PolicyObservation, ...]:
        pack = self.packs.get(summary.question.pack or "")
        severity = {p.key: p.severity for p in pack.policies} if pack else {}
        return tuple(
            PolicyObservation(
                node_id=state.node_id,
                hostname=state.hostname,
                policy=state.policy,
                transition=state.transition.value,
                first_failed_at=state.first_failed_at,
                last_passed_at=state.last_passed_at,
                severity=severity.get(state.policy),
            )
            for state in self.history.policy_states(summary.run_id)
        )

    def _hunts(
        self,
        summary: RunSummary,
        entries: Sequence[NodeEntry],
        earlier: Sequence[RunSummary],
        reader: _RowReader,
    ) -> tuple[HuntObservation, ...]:
        name = summary.question.pack or ""
        pack = self.packs.get(name)
        severity = {q.name: q.severity for q in pack.queries} if pack else {}
        observed = []
        for entry in entries:
            if not entry.state.answered:
                continue
            rows = reader.rows(summary.run_id, entry.node_id)
            missed = failed_statements(entry.error)
            for statement in sorted(set(rows) | set(severity)):
                if statement in missed:
                    continue
                observed.append(
                    HuntObservation(
                        node_id=entry.node_id,
                        hostname=entry.hostname,
                        query=f"{name}/{statement}",
                        rows=tuple(rows.get(statement, [])),
                        previous_rows=_previous(reader, earlier, entry.node_id, statement),
                        severity=severity.get(statement),
                    )
                )
        return tuple(observed)

    def _absences(
        self, entries: Sequence[NodeEntry], earlier: Sequence[RunSummary]
    ) -> tuple[NodeAbsence, ...]:
        absent = [e for e in entries if e.state.retryable]
        if not absent:
            return ()
        streaks = {e.node_id: 1 for e in absent}
        open_nodes = set(streaks)
        for run in earlier:
            if not open_nodes or all(streaks[n] > self.missing_after for n in open_nodes):
                break
            states = {e.node_id: e.state for e in self.history.entries(run.run_id)}
            if not states:
                continue
            open_nodes = {n for n in open_nodes if n in states and states[n].retryable}
            for node in open_nodes:
                streaks[node] += 1
        return tuple(
            NodeAbsence(e.node_id, e.hostname, streaks[e.node_id], e.error or e.state.value)
            for e in absent
        )


def _previous(
    reader: _RowReader, earlier: Sequence[RunSummary], node_id: str, statement: str
) -> tuple[dict[str, str], ...] | None:
    """The node's rows of ``statement`` in its last real answer to it; None = never answered."""
    for run in earlier:
        entry = reader.entry(run.run_id, node_id)
        if entry is None or not entry.state.answered or statement in failed_statements(entry.error):
            continue
        return tuple(reader.rows(run.run_id, node_id).get(statement, []))
    return None


class _RowReader:
    """Recorded rows and entries of one observation pass, each read once."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._rows: dict[tuple[str, str], dict[str, Rows]] = {}
        self._entries: dict[str, dict[str, NodeEntry]] = {}

    def entry(self, run_id: str, node_id: str) -> NodeEntry | None:
        if run_id not in self._entries:
            self._entries[run_id] = {e.node_id: e for e in self.history.entries(run_id)}
        return self._entries[run_id].get(node_id)

    def rows(self, run_id: str, node_id: str) -> dict[str, Rows]:
        key = (run_id, node_id)
        if key not in self._rows:
            block = self.history.node_rows(run_id, node_id)
            self._rows[key] = rows_by_statement(_decoded(block.lines()))
        return self._rows[key]


def _decoded(lines: Sequence[bytes]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        value = json.loads(line)
        if isinstance(value, dict):
            out.append(value)
    return out
