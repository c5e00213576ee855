"""The nouns of the history: runs, node entries, coverage, run ids, timestamps.

Everything here is plain data, so the commands (history, show, diff, policy,
watch, report) can render it without knowing how it is stored.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fleetkit.history.errors import HistoryError


class RunKind(StrEnum):
    QUERY = "query"
    POLICY = "policy"
    HUNT = "hunt"
    #: A scheduled inventory pack's run (rows recorded, never judged).
    INVENTORY = "inventory"
    VERIFY = "verify"
    WATCH = "watch"


class NodeState(StrEnum):
    """One node's part in a run (the coverage categories)."""

    ROWS = "rows"
    EMPTY = "empty"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    MISSING = "missing"
    EXCLUDED = "excluded"

    @property
    def answered(self) -> bool:
        return self in (NodeState.ROWS, NodeState.EMPTY)

    @property
    def retryable(self) -> bool:
        """What ``--retry-missing`` asks again."""
        return self in (NodeState.FAILED, NodeState.TIMED_OUT, NodeState.MISSING)


#: What callers may pass as a status: the states, plus the ask engine's spellings
#: (``ok`` = answered, rows or empty decided by the row count; ``timed out``).
_STATE_ALIASES = {
    "ok": NodeState.ROWS,
    "answered": NodeState.ROWS,
    "timed out": NodeState.TIMED_OUT,
}


def parse_state(value: str) -> NodeState:
    text = str(value).strip().lower()
    if text in _STATE_ALIASES:
        return _STATE_ALIASES[text]
    try:
        return NodeState(text)
    except ValueError:
        allowed = ", ".join([s.value for s in NodeState] + list(_STATE_ALIASES))
        raise ValueError(f"unknown node status {value!r} (one of {allowed})") from None


class RunStatus(StrEnum):
    #: A recorder has it open (or its process died: see ``RunSummary.status``).
    RECORDING = "recording"
    COMPLETE = "complete"
    #: Recording stopped early (disk full, interrupted, S3 unwritable): what is
    #: there is valid, something is missing; ``RunSummary.note`` says why.
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Question:
    """What a run asked: SQL text, or a pack's name and its SQL."""

    text: str
    pack: str | None = None

    def label(self, width: int = 60) -> str:
        one_line = " ".join(self.text.split())
        if len(one_line) > width:
            one_line = one_line[: width - 3] + "..."
        return f"pack {self.pack}" if self.pack else one_line


@dataclass(frozen=True)
class Coverage:
    """How many nodes ended in each state (the closing summary of a run)."""

    rows: int = 0
    empty: int = 0
    failed: int = 0
    timed_out: int = 0
    missing: int = 0
    excluded: int = 0

    @property
    def asked(self) -> int:
        """Nodes that should have answered (excluded ones were not asked)."""
        return self.rows + self.empty + self.failed + self.timed_out + self.missing

    @property
    def answered(self) -> int:
        return self.rows + self.empty

    @property
    def percent(self) -> float:
        """Share of asked nodes that answered; 100 when nothing was asked."""
        return 100.0 if self.asked == 0 else 100.0 * self.answered / self.asked

    def as_dict(self) -> dict[str, int]:
        return {state.value: getattr(self, state.value) for state in NodeState}


@dataclass(frozen=True)
class RunSummary:
    """One recorded run, without its rows (what ``invoke history`` lists)."""

    run_id: str
    kind: str
    question: Question
    scope: Mapping[str, Any]
    transport: str
    job_id: str | None
    started_at: str
    ended_at: str | None
    status: RunStatus
    coverage: Coverage
    row_count: int
    late_nodes: int = 0
    #: Why a run is incomplete.
    note: str | None = None
    #: What the asker asked, in its own words (``begin_run(asked=...)``): what
    #: ``--retry-missing`` asks again. Empty for runs recorded without it.
    asked: Mapping[str, Any] = field(default_factory=dict)
    #: ``query.redact_columns`` in force during the run (``show`` re-tags with them).
    redacted: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "question": self.question.text,
            "pack": self.question.pack,
            "scope": dict(self.scope),
            "transport": self.transport,
            "job_id": self.job_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "status": self.status.value,
            "note": self.note,
            "coverage": self.coverage.as_dict(),
            "rows": self.row_count,
            "late_nodes": self.late_nodes,
        }


@dataclass(frozen=True)
class NodeEntry:
    """One node of a recorded run; ``rows`` come from the store (see ``History.node_rows``)."""

    node_id: str
    hostname: str
    state: NodeState
    row_count: int
    error: str | None = None
    exit_code: int | None = None
    #: Answered on a retry (``--retry-missing``), after the run first ended.
    late: bool = False
    #: Not an inventory host; its answer was merged on request (``unknownNode``).
    unknown: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodeID": self.node_id,
            "hostname": self.hostname,
            "status": self.state.value,
            "rows": self.row_count,
            "error": self.error,
            "exit_code": self.exit_code,
            "late": self.late,
            "unknown": self.unknown,
        }


@dataclass(frozen=True)
class RecordOutcome:
    """How a recording ended. Never raised: the caller's output comes first."""

    run_id: str
    complete: bool
    note: str | None = None
    nodes: int = 0
    rows: int = 0
    redacted_by_guard: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- ids and times

_RUN_ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{4}$")


def new_run_id(started_at: datetime) -> str:
    """Sortable by start time (to the millisecond), unique by a random suffix."""
    moment = as_utc(started_at)
    return f"{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID_RE.match(text))


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: sorts as text in time order."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def canonical_json(value: Any) -> str:
    """Sorted keys, compact: equal values give equal text (scope keys, manifests)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"run scope is not JSON-serialisable: {exc}") from None
