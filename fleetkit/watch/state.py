"""The watch's status file: is it running, when did each pack last complete a run.

The watch rewrites it (atomically) when a run starts or ends and every
heartbeat while idle; ``invoke verify`` reads it from the control plane
through :func:`.statusread.parse_status` and judges it with :func:`assess_status`. It also
carries the notification ledger: per pack, the last run whose events were
handed to the sinks (see :mod:`.session`), which is how a restarted watch
knows what it already sent. Format (JSON, UTF-8, at most 1 MiB)::

    {
      "format": "fleetkit-watch-status/1",
      "pid": 4242,
      "state": "idle",                      # starting | idle | running | stopped
      "stop_reason": null,                  # terminated | interrupted | once | null
      "started_at": "2025-01-01T10:00:00.000000Z",
      "updated_at": "2025-01-01T10:05:00.000000Z",   # the heartbeat
      "heartbeat_seconds": 30,
      "packs": {
        "ssh-keys": {
          "interval": 3600, "runs": 5, "failed_runs": 1,
          "last_run_id": "...", "last_started_at": "...", "last_finished_at": "...",
          "last_outcome": "ok",             # ok | failed | interrupted | null
          "last_error": null,
          "last_completed_at": "...",       # end of the last run that completed
          "next_due_at": "...",
          "notified_run_id": "...", "notified_started_at": "..."
        }
      },
      "notifications": {"delivered": 3, "dropped": 0, "failed": 0, "abandoned": 0,
                        "retries": 1, "queued": 0}
    }

The file is written by the watch but read by verify as hostile input (it sits
on a host that may be compromised): :mod:`.statusread` reads it strictly.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetkit.foundation.atomic import atomic_write
from fleetkit.watch.notify import Counters
from fleetkit.watch.session import RunMark

STATUS_FORMAT = "fleetkit-watch-status/1"
MAX_STATUS_BYTES = 1024 * 1024
MAX_PACKS = 1024
MAX_ERROR_CHARS = 500
STATES = ("starting", "idle", "running", "stopped")
STOP_REASONS = ("terminated", "interrupted", "once")
OUTCOMES = ("ok", "failed", "interrupted")


def iso_now(moment: datetime) -> str:
    """The status file's time format (the history's too): UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class PackStatus:
    interval: float
    runs: int = 0
    failed_runs: int = 0
    last_run_id: str | None = None
    last_started_at: str | None = None
    last_finished_at: str | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    last_completed_at: str | None = None
    next_due_at: str | None = None
    #: The notification ledger: the last run whose events went to the sinks.
    notified_run_id: str | None = None
    notified_started_at: str | None = None


@dataclass(frozen=True)
class WatchStatus:
    pid: int
    state: str
    started_at: str
    updated_at: str
    heartbeat_seconds: float
    packs: Mapping[str, PackStatus] = field(default_factory=dict)
    notifications: Counters = field(default_factory=Counters)
    stop_reason: str | None = None

    def to_json(self) -> bytes:
        data = {
            "format": STATUS_FORMAT,
            "pid": self.pid,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "heartbeat_seconds": self.heartbeat_seconds,
            "packs": {name: asdict(p) for name, p in sorted(self.packs.items())},
            "notifications": asdict(self.notifications),
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- writing


class StatusBoard:
    """The watch's live status, written to the file on every change.

    The scheduler updates it (one thread); the webhook's counters and the
    notification ledger (``pack -> (started_at, run_id)`` of the last notified
    run) are read when the file is written, so the file commits the ledger.
    """

    def __init__(
        self,
        path: str | None,
        status: WatchStatus,
        *,
        counters: Callable[[], Counters] = Counters,
        ledger: Mapping[str, RunMark | None] | None = None,
    ) -> None:
        self.path = path
        self.status = status
        self.counters = counters
        self.ledger = ledger if ledger is not None else {}
        #: The heartbeat thread writes too.
        self._lock = threading.RLock()

    def update(self, **changes: Any) -> None:
        with self._lock:
            self.status = replace(self.status, **changes)

    def pack(self, name: str) -> PackStatus:
        return self.status.packs[name]

    def update_pack(self, name: str, **changes: Any) -> None:
        with self._lock:
            packs = dict(self.status.packs)
            packs[name] = replace(packs[name], **changes)
            self.status = replace(self.status, packs=packs)

    def write(self, now: datetime) -> None:
        with self._lock:
            self._write(now)

    def _write(self, now: datetime) -> None:
        packs = dict(self.status.packs)
        for name, mark in self.ledger.items():
            if name in packs and mark is not None:
                started_at, run_id = mark
                packs[name] = replace(
                    packs[name], notified_run_id=run_id, notified_started_at=started_at
                )
        self.status = replace(
            self.status, updated_at=iso_now(now), notifications=self.counters(), packs=packs
        )
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, self.status.to_json(), mode=0o640)


def starting_status(
    previous: WatchStatus | None, *, heartbeat: float, now: datetime, pid: int | None = None
) -> WatchStatus:
    """What a (re)starting watch's status begins with: per-pack history (run counts, last
    outcomes, the notification ledger) carried over; counters start again."""
    moment = iso_now(now)
    return WatchStatus(
        pid=pid if pid is not None else os.getpid(),
        state="starting",
        started_at=moment,
        updated_at=moment,
        heartbeat_seconds=heartbeat,
        packs=dict(previous.packs) if previous is not None else {},
    )


def ledger_of(status: WatchStatus | None) -> dict[str, RunMark | None]:
    """The notification ledger a previous watch left: pack -> its last notified run."""
    if status is None:
        return {}
    return {
        name: RunMark(p.notified_started_at, p.notified_run_id)
        if p.notified_run_id and p.notified_started_at
        else None
        for name, p in status.packs.items()
    }


def resume_delays(
    status: WatchStatus | None, intervals: Mapping[str, float], now: datetime
) -> dict[str, float]:
    """Seconds until each pack is due when a watch (re)starts, so a restart (or a crash
    loop) does not run every pack at once: a pack keeps its previous slot when its
    interval is unchanged and that slot is still ahead (at most one interval away);
    otherwise it is due now."""
    delays = dict.fromkeys(intervals, 0.0)
    if status is None:
        return delays
    for name, interval in intervals.items():
        previous = status.packs.get(name)
        if previous is None or previous.interval != interval or not previous.next_due_at:
            continue
        ahead = (parse_time(previous.next_due_at) - now).total_seconds()
        delays[name] = min(max(0.0, ahead), interval)
    return delays


# --------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class WatchHealth:
    """What ``invoke verify`` reports about the watch."""

    ok: bool
    message: str
    #: End of the most recent run that completed, any pack; None = none yet.
    last_completed_at: str | None


def assess_status(
    status: WatchStatus | None, *, now: datetime, stale_after: float | None = None
) -> WatchHealth:
    """Running means: not stopped, and a heartbeat within ``stale_after`` seconds
    (default: three heartbeats). A watch that never completed a run is not yet ok."""
    if status is None:
        return WatchHealth(False, "no status file: the watch has never run", None)
    completed = [p.last_completed_at for p in status.packs.values() if p.last_completed_at]
    last = max(completed) if completed else None
    if status.state == "stopped":
        reason = f" ({status.stop_reason})" if status.stop_reason else ""
        return WatchHealth(False, f"stopped{reason} at {status.updated_at}", last)
    limit = stale_after if stale_after is not None else 3 * status.heartbeat_seconds
    age = (now - parse_time(status.updated_at)).total_seconds()
    if age > limit:
        return WatchHealth(
            False, f"no heartbeat for {age:.0f}s (pid {status.pid}): not running", last
        )
    if last is None:
        return WatchHealth(False, f"running (pid {status.pid}), no run completed yet", None)
    failing = sorted(n for n, p in status.packs.items() if p.last_outcome == "failed")
    note = f"; last run failed: {', '.join(failing)}" if failing else ""
    return WatchHealth(True, f"running (pid {status.pid}), last run completed {last}{note}", last)
