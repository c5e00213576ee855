"""Runs every pack on its interval; each run is handed to a callback.

Timekeeping: a pack's next run is due at its previous *due* time plus its
interval, not at the end of the run, so the schedule does not drift. A run
(or anything else) that overruns makes the missed slots be skipped, with one
log line: the pack runs once as soon as it can, never a burst of catch-up
runs. Packs run one at a time, the most overdue first.

Stopping: :meth:`Scheduler.request_stop` (SIGTERM and Ctrl-C through
:meth:`Scheduler.install_signal_handlers`) wakes the idle wait at once. If a
run is in progress, ``on_stop`` is called (on its own thread: it stops the
submitted job at the orchestrator) and the run is allowed to finish and be
recorded, so the history and the status file stay consistent; without an
``on_stop``, or on a second signal, KeyboardInterrupt is raised in the run
(the ask engine stops its job on it). Exit status: SIGTERM 0 (a service
stop), Ctrl-C 130.

A run that fails (orchestrator down: the callback records the run as failed
with the reason and returns, or raises) is logged, counted in the status
file, and the schedule goes on: the next slot is a fresh try.

Clock, wall clock and sleep are injected, so tests run hours of schedule in
no time; the default sleep is an interruptible wait.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import FrameType
from typing import Protocol

from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.watch.state import (
    MAX_ERROR_CHARS,
    PackStatus,
    StatusBoard,
    WatchStatus,
    iso_now,
    starting_status,
)

DEFAULT_HEARTBEAT = 30.0


class StopReason(StrEnum):
    TERMINATED = "terminated"
    INTERRUPTED = "interrupted"

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.SUCCESS if self is StopReason.TERMINATED else ExitStatus.INTERRUPTED


@dataclass(frozen=True)
class ScheduledPack:
    name: str
    #: Seconds between runs (a pack's ``interval``).
    interval: float


@dataclass(frozen=True)
class RunRequest:
    """One run the scheduler asks for."""

    pack: str
    #: 1, 2, ... per pack, within this watch process.
    sequence: int
    #: How late the run starts against its slot (seconds; 0 when on time).
    late: float


@dataclass(frozen=True)
class RunOutcome:
    #: ok | failed | interrupted
    status: str
    #: The history's run id, when the run was recorded.
    run_id: str | None = None
    #: Why the run failed (orchestrator down...): shown in the log and the status file.
    error: str | None = None


RunCallback = Callable[[RunRequest], RunOutcome]
StopCallback = Callable[[StopReason], None]
Say = Callable[[str], None]


class Schedulable(Protocol):
    """Anything with a name and an interval: a loaded :class:`~fleetkit.ask.packs.Pack`."""

    @property
    def name(self) -> str: ...

    @property
    def interval(self) -> float: ...


def schedule_of(packs: Sequence[Schedulable]) -> list[ScheduledPack]:
    return [ScheduledPack(p.name, float(p.interval)) for p in packs]


class Scheduler:
    def __init__(
        self,
        packs: Sequence[ScheduledPack],
        run: RunCallback,
        *,
        say: Say,
        board: StatusBoard | None = None,
        on_stop: StopCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] | None = None,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        names = [p.name for p in packs]
        if not packs or len(set(names)) != len(names):
            raise ValueError("the schedule needs packs with unique names")
        if any(not p.interval > 0 for p in packs) or not heartbeat > 0:
            raise ValueError("intervals and the heartbeat must be positive")
        self.packs = list(packs)
        self.run_callback = run
        self.say = say
        self.on_stop = on_stop
        self.clock = clock
        self.wall = wall
        self.heartbeat = heartbeat
        self._wake = threading.Event()
        self._sleep = sleep or self._wake.wait
        self._lock = threading.Lock()
        self.stop_reason: StopReason | None = None
        self.running: str | None = None
        self.sequence = dict.fromkeys(names, 0)
        self.board = board or StatusBoard(None, self._initial_status())
        self._ensure_packs_on_board()

    # ---- stopping ----------------------------------------------------------------------------
    def request_stop(self, reason: StopReason) -> None:
        """Stop after the current run (callable from a signal handler or another thread)."""
        with self._lock:
            first = self.stop_reason is None
            if first:
                self.stop_reason = reason
            running = self.running
        self._wake.set()
        if first and running is not None and self.on_stop is not None:
            threading.Thread(
                target=self._call_on_stop, args=(reason,), name="fleetkit-watch-stop", daemon=True
            ).start()

    def _call_on_stop(self, reason: StopReason) -> None:
        try:
            assert self.on_stop is not None
            self.on_stop(reason)
        except Exception as exc:  # the run still ends by itself (its timeout)
            self.say(f"watch: could not stop the running job: {_text(exc)}")

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM -> stop (exit 0), SIGINT -> stop (exit 130). Returns a restore function."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            reason = StopReason.TERMINATED if signum == signal.SIGTERM else StopReason.INTERRUPTED
            already = self.stop_reason is not None
            self.request_stop(reason)
            if self.running is not None and (already or self.on_stop is None):
                raise KeyboardInterrupt

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    # ---- running -----------------------------------------------------------------------------
    def run_once(self) -> ExitStatus:
        """Each pack once, in order, then return (``--once``): 1 if a run failed."""
        failed = False
        try:
            self._set_state("idle")
            for pack in self.packs:
                if self.stop_reason is not None:
                    break
                outcome = self._run(pack, late=0.0)
                self._write()
                failed = failed or outcome.status != "ok"
        except KeyboardInterrupt:  # a signal between runs (the handler's last resort)
            self.request_stop(self.stop_reason or StopReason.INTERRUPTED)
        return self._finish(once=True, failed=failed)

    def run_forever(self, delays: Mapping[str, float] | None = None) -> ExitStatus:
        """Every pack on its interval until a stop is requested; ``delays`` (seconds, by
        pack) postpone first runs (:func:`~fleetkit.watch.state.resume_delays`)."""
        try:
            self._loop(delays or {})
        except KeyboardInterrupt:  # a signal between runs (the handler's last resort)
            self.request_stop(self.stop_reason or StopReason.INTERRUPTED)
        return self._finish(once=False, failed=False)

    def _loop(self, delays: Mapping[str, float]) -> None:
        start = self.clock()
        due = {p.name: start + max(0.0, delays.get(p.name, 0.0)) for p in self.packs}
        order = {p.name: index for index, p in enumerate(self.packs)}
        for p in self.packs:
            self.board.update_pack(p.name, next_due_at=self._wall_at(due[p.name]))
        self._set_state("idle")
        next_beat = start + self.heartbeat
        while self.stop_reason is None:
            pack = min(self.packs, key=lambda p: (due[p.name], order[p.name]))
            now = self.clock()
            if now < due[pack.name]:
                if now >= next_beat:
                    self._write()
                    next_beat = now + self.heartbeat
                self._sleep(max(0.0, min(due[pack.name], next_beat) - now))
                continue
            slot = due[pack.name]
            self._run(pack, late=now - slot)
            due[pack.name] = self._skip_missed(pack, slot + pack.interval)
            self.board.update_pack(pack.name, next_due_at=self._wall_at(due[pack.name]))
            self._write()
            next_beat = self.clock() + self.heartbeat

    def _skip_missed(self, pack: ScheduledPack, next_due: float) -> float:
        now = self.clock()
        if next_due >= now:
            return next_due
        missed = math.floor((now - next_due) / pack.interval) + 1
        later = next_due + missed * pack.interval
        self.say(
            f"watch: pack {pack.name}: behind schedule, skipping {missed} missed run(s); "
            f"next run in {later - now:.0f}s"
        )
        return later

    def _run(self, pack: ScheduledPack, *, late: float) -> RunOutcome:
        self.sequence[pack.name] += 1
        request = RunRequest(pack.name, self.sequence[pack.name], max(0.0, late))
        started = self.wall()
        beating = threading.Event()
        try:  # from here a signal may raise KeyboardInterrupt (see install_signal_handlers)
            with self._lock:
                self.running = pack.name
            self.board.update(state="running")
            self.board.update_pack(pack.name, last_started_at=iso_now(started))
            self._write()
            self._beat_while_running(beating)
            outcome = self.run_callback(request)
        except KeyboardInterrupt:
            outcome = RunOutcome("interrupted", error="stopped by a signal")
            self.request_stop(self.stop_reason or StopReason.INTERRUPTED)
        except Exception as exc:  # orchestrator down, a bug: the schedule goes on
            outcome = RunOutcome("failed", error=_text(exc))
        finally:
            beating.set()
            with self._lock:
                self.running = None
        self._record(pack, outcome)
        return outcome

    def _beat_while_running(self, done: threading.Event) -> None:
        """Keep the status file's heartbeat fresh during a long run (verify reads it)."""

        def beat() -> None:
            while not done.wait(self.heartbeat):
                self._write()

        threading.Thread(target=beat, name="fleetkit-watch-heartbeat", daemon=True).start()

    def _record(self, pack: ScheduledPack, outcome: RunOutcome) -> None:
        finished = iso_now(self.wall())
        status = self.board.pack(pack.name)
        changes: dict[str, object] = {
            "runs": status.runs + 1,
            "last_run_id": outcome.run_id,
            "last_finished_at": finished,
            "last_outcome": outcome.status if outcome.status in ("ok", "failed") else "interrupted",
            "last_error": _cut(outcome.error) if outcome.error else None,
        }
        if outcome.status == "ok":
            changes["last_completed_at"] = finished
        else:
            changes["failed_runs"] = status.failed_runs + (outcome.status == "failed")
            self.say(
                f"watch: pack {pack.name}: run {outcome.status}"
                + (f": {terminal_safe(_cut(outcome.error))}" if outcome.error else "")
            )
        self.board.update(state="idle")
        self.board.update_pack(pack.name, **changes)

    def _finish(self, *, once: bool, failed: bool) -> ExitStatus:
        reason = self.stop_reason
        self.board.update(
            state="stopped", stop_reason=reason.value if reason is not None else "once"
        )
        self._write()
        if reason is not None:
            self.say(f"watch: stopped ({reason.value})")
            return reason.exit_status
        return ExitStatus.FAILURE if once and failed else ExitStatus.SUCCESS

    # ---- status ------------------------------------------------------------------------------
    def _initial_status(self) -> WatchStatus:
        return starting_status(None, heartbeat=self.heartbeat, now=self.wall())

    def _ensure_packs_on_board(self) -> None:
        """Packs of this schedule on the board (keeping what a previous watch left)."""
        packs = {p.name: self.board.status.packs.get(p.name) for p in self.packs}
        self.board.update(
            packs={p.name: (packs[p.name] or PackStatus(interval=p.interval)) for p in self.packs}
        )
        for p in self.packs:
            self.board.update_pack(p.name, interval=p.interval, next_due_at=None)

    def _set_state(self, state: str) -> None:
        self.board.update(state=state)
        self._write()

    def _write(self) -> None:
        try:
            self.board.write(self.wall())
        except OSError as exc:  # the schedule matters more than its status file
            self.say(f"watch: cannot write the status file: {exc.strerror or exc}")

    def _wall_at(self, moment: float) -> str:
        return iso_now(self.wall() + timedelta(seconds=moment - self.clock()))


def _cut(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _text(exc: BaseException) -> str:
    """An exception as one redacted line (secrets revealed so far never appear)."""
    return redact(str(exc) or type(exc).__name__)


@contextlib.contextmanager
def signals_handled(scheduler: Scheduler) -> Iterator[Scheduler]:
    """``with signals_handled(s): s.run_forever()`` (main thread only)."""
    restore = scheduler.install_signal_handlers()
    try:
        yield scheduler
    finally:
        restore()
