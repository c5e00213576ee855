"""Shared helpers of the history tests: a store with a hand-driven clock, quick runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetkit.history import History, HistorySettings, Question, RecordOutcome, open_history

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Node:
    """One node's answer as the engine hands it over."""

    node_id: str
    rows: Sequence[Mapping[str, str] | bytes] = ()
    status: str = "ok"
    hostname: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def settings(directory: Path, **overrides: Any) -> HistorySettings:
    values: dict[str, Any] = {"path": str(directory / ".fleetkit" / "history.db")}
    values.update(overrides)
    return HistorySettings(**values)


def open_store(directory: Path, clock: Clock | None = None, **overrides: Any) -> History:
    return open_history(settings(directory, **overrides), now=clock or Clock())


def record(
    history: History,
    nodes: Iterable[Node],
    *,
    sql: str = "SELECT name FROM processes",
    kind: str = "query",
    scope: Mapping[str, Any] | None = None,
    started_at: datetime | None = None,
    redact: Iterable[str] = (),
) -> RecordOutcome:
    recorder = history.begin_run(
        kind=kind,
        question=Question(sql),
        scope=scope if scope is not None else {"hosts": [], "selector": "", "timeout": 60},
        transport="ssh",
        started_at=started_at,
        redact_columns=redact,
    )
    for node in nodes:
        recorder.add_node(
            node_id=node.node_id,
            hostname=node.hostname or node.node_id,
            status=node.status,
            rows=node.rows,
            error=node.error,
            **node.extra,
        )
    return recorder.finish()
