"""The scheduler: intervals kept, missed slots skipped, --once, clean stops, failures survived.

A fake clock (sleep advances it) runs hours of schedule in no real time; one
test runs the real clock with a 2 s interval while the webhook's receiver is
down, and two run a real process to see SIGTERM -> 0 and SIGINT -> 130.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetkit.foundation.status import ExitStatus, FleetkitError
from fleetkit.foundation.watch_settings import RetryPolicy
from fleetkit.watch.events import EventKind, make_event
from fleetkit.watch.notify import Notifier, WebhookSink
from fleetkit.watch.scheduler import (
    RunOutcome,
    RunRequest,
    ScheduledPack,
    Scheduler,
    StopReason,
    schedule_of,
)
from fleetkit.watch.state import (
    StatusBoard,
    WatchStatus,
    resume_delays,
    starting_status,
)
from fleetkit.watch.statusread import load_status
from tests.unit.test_watch_notify import Log, closed_port_url

EPOCH = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


class FakeTime:
    """Monotonic clock + wall clock; sleeping advances both, and may run hooks at times."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.at: list[tuple[float, Callable[[], None]]] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.now)

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
        due = [hook for when, hook in self.at if when <= self.now]
        self.at = [(when, hook) for when, hook in self.at if when > self.now]
        for hook in due:
            hook()


class Runs:
    """The run callback: records (pack, start time, request), can be slow or fail."""

    def __init__(self, fake: FakeTime) -> None:
        self.fake = fake
        self.calls: list[tuple[str, float, RunRequest]] = []
        #: Seconds a run takes, by pack: one number, or a list consumed run by run.
        self.duration: dict[str, float | list[float]] = {}
        self.fail: Callable[[str, int], BaseException | None] = lambda pack, n: None
        self.stop_after: int | None = None
        self.scheduler: Scheduler | None = None

    def __call__(self, request: RunRequest) -> RunOutcome:
        self.calls.append((request.pack, self.fake.now, request))
        took = self.duration.get(request.pack, 0.0)
        self.fake.now += took.pop(0) if isinstance(took, list) else took
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            assert self.scheduler is not None
            self.scheduler.request_stop(StopReason.TERMINATED)
        error = self.fail(request.pack, request.sequence)
        if error is not None:
            raise error
        return RunOutcome("ok", run_id=f"{request.pack}-{request.sequence}")

    def starts(self, pack: str) -> list[float]:
        return [at for name, at, _ in self.calls if name == pack]


def scheduler(
    packs: list[ScheduledPack],
    fake: FakeTime,
    runs: Runs,
    log: Log,
    *,
    status_file: Path | None = None,
    **options: object,
) -> Scheduler:
    board = StatusBoard(str(status_file), _initial(fake)) if status_file else None
    made = Scheduler(
        packs,
        runs,
        say=log,
        board=board,
        clock=fake.clock,
        wall=fake.wall,
        sleep=fake.sleep,
        **options,  # type: ignore[arg-type]
    )
    runs.scheduler = made
    return made


def _initial(fake: FakeTime) -> WatchStatus:
    return starting_status(None, heartbeat=30, now=fake.wall())


def stop_at(fake: FakeTime, s: Scheduler, when: float, reason: StopReason) -> None:
    fake.at.append((when, lambda: s.request_stop(reason)))


# --------------------------------------------------------------------------- timekeeping


def test_every_pack_runs_on_its_own_interval() -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    s = scheduler([ScheduledPack("a", 60), ScheduledPack("b", 25)], fake, runs, log)
    stop_at(fake, s, 130, StopReason.TERMINATED)
    assert s.run_forever() is ExitStatus.SUCCESS
    assert runs.starts("a") == [0, 60, 120]
    assert runs.starts("b") == [0, 25, 50, 75, 100, 125]
    assert [r.sequence for name, _, r in runs.calls if name == "a"] == [1, 2, 3]


def test_slow_runs_do_not_make_the_schedule_drift() -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    runs.duration["a"] = 7.5
    s = scheduler([ScheduledPack("a", 30)], fake, runs, log)
    stop_at(fake, s, 100, StopReason.TERMINATED)
    s.run_forever()
    assert runs.starts("a") == [0, 30, 60, 90]  # not 0, 37.5, 75...


def test_an_overrun_skips_missed_slots_once_never_a_burst() -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    runs.duration["a"] = [75.0, 1.0, 1.0, 1.0]
    s = scheduler([ScheduledPack("a", 30)], fake, runs, log)
    stop_at(fake, s, 151, StopReason.TERMINATED)
    s.run_forever()
    # the first run ended at 75: the slots at 30 and 60 are gone, the next is at 90
    assert runs.starts("a") == [0, 90, 120, 150]
    assert "pack a: behind schedule, skipping 2 missed run(s); next run in 15s" in log.text()
    assert [r.late for _, _, r in runs.calls] == [0, 0, 0, 0]


def test_a_pack_delayed_by_another_runs_once_late_then_back_on_its_slots() -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    runs.duration["slow"] = 50
    s = scheduler([ScheduledPack("slow", 1000), ScheduledPack("fast", 20)], fake, runs, log)
    stop_at(fake, s, 101, StopReason.TERMINATED)
    s.run_forever()
    assert runs.starts("fast") == [50, 60, 80, 100]
    late = [r.late for name, _, r in runs.calls if name == "fast"]
    assert late == [50, 0, 0, 0]


def test_a_restarted_watch_keeps_each_packs_slot(tmp_path: Path) -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    status_file = tmp_path / "status.json"
    s = scheduler([ScheduledPack("a", 60)], fake, runs, log, status_file=status_file)
    stop_at(fake, s, 70, StopReason.TERMINATED)  # runs at 0 and 60, next slot at 120
    s.run_forever()
    previous = load_status(status_file)
    assert previous is not None and previous.packs["a"].next_due_at == "2025-01-01T10:02:00.000000Z"
    # restarted at t=100: "a" is due in 20 s, "b" is new; a changed interval runs now
    fake.now = 100.0
    delays = resume_delays(previous, {"a": 60, "b": 30}, fake.wall())
    assert delays == {"a": 20.0, "b": 0.0}
    assert resume_delays(previous, {"a": 90}, fake.wall()) == {"a": 0.0}
    assert resume_delays(None, {"a": 60}, fake.wall()) == {"a": 0.0}
    runs2 = Runs(fake)
    s2 = scheduler(
        [ScheduledPack("a", 60), ScheduledPack("b", 30)], fake, runs2, log, status_file=status_file
    )
    stop_at(fake, s2, 125, StopReason.TERMINATED)
    s2.run_forever(delays)
    assert runs2.starts("a") == [120] and runs2.starts("b") == [100]


def test_once_runs_each_pack_once_and_says_whether_one_failed() -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    s = scheduler([ScheduledPack("a", 60), ScheduledPack("b", 60)], fake, runs, log)
    assert s.run_once() is ExitStatus.SUCCESS
    assert [name for name, _, _ in runs.calls] == ["a", "b"] and fake.sleeps == []

    runs2 = Runs(fake)
    runs2.fail = lambda pack, n: FleetkitError("orchestrator down") if pack == "a" else None
    s2 = scheduler([ScheduledPack("a", 60), ScheduledPack("b", 60)], fake, runs2, log)
    assert s2.run_once() is ExitStatus.FAILURE
    assert [name for name, _, _ in runs2.calls] == ["a", "b"]


# --------------------------------------------------------------------------- faults and stops


def test_an_orchestrator_outage_is_a_failed_run_and_the_watch_recovers(tmp_path: Path) -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    runs.fail = lambda pack, n: (
        FleetkitError("cannot reach the orchestrator at http://orch:1234") if n in (2, 3) else None
    )
    status_file = tmp_path / "status.json"
    s = scheduler([ScheduledPack("a", 10)], fake, runs, log, status_file=status_file)
    stop_at(fake, s, 45, StopReason.TERMINATED)
    assert s.run_forever() is ExitStatus.SUCCESS
    assert runs.starts("a") == [0, 10, 20, 30, 40]
    assert log.text().count("pack a: run failed: cannot reach the orchestrator") == 2
    status = load_status(status_file)
    assert status is not None
    pack = status.packs["a"]
    assert (pack.runs, pack.failed_runs, pack.last_outcome) == (5, 2, "ok")
    assert pack.last_completed_at == "2025-01-01T10:00:40.000000Z"
    assert (status.state, status.stop_reason) == ("stopped", "terminated")


def test_sigterm_during_a_run_stops_the_job_lets_the_run_finish_and_exits_0(
    tmp_path: Path,
) -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    stopped: list[StopReason] = []
    runs.stop_after = 2  # the stop arrives while the 2nd run is in progress
    status_file = tmp_path / "status.json"
    s = scheduler(
        [ScheduledPack("a", 10)],
        fake,
        runs,
        log,
        status_file=status_file,
        on_stop=stopped.append,
    )
    assert s.run_forever() is ExitStatus.SUCCESS
    assert len(runs.calls) == 2  # no third run
    deadline = time.monotonic() + 10
    while not stopped and time.monotonic() < deadline:  # on_stop runs on its own thread
        time.sleep(0.01)
    assert stopped == [StopReason.TERMINATED]
    status = load_status(status_file)
    assert status is not None and status.packs["a"].last_outcome == "ok"
    assert status.packs["a"].runs == 2 and status.stop_reason == "terminated"


def test_ctrl_c_while_idle_ends_with_130_and_no_further_run() -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    s = scheduler([ScheduledPack("a", 10)], fake, runs, log)
    stop_at(fake, s, 5, StopReason.INTERRUPTED)
    assert s.run_forever() is ExitStatus.INTERRUPTED
    assert runs.starts("a") == [0]
    assert "watch: stopped (interrupted)" in log.text()


def test_a_keyboard_interrupt_inside_a_run_is_an_interrupted_run() -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    runs.fail = lambda pack, n: KeyboardInterrupt() if n == 2 else None
    s = scheduler([ScheduledPack("a", 10)], fake, runs, log)
    assert s.run_forever() is ExitStatus.INTERRUPTED
    assert len(runs.calls) == 2
    assert s.board.pack("a").last_outcome == "interrupted"


def test_a_bug_in_a_run_is_logged_redacted_and_the_schedule_goes_on() -> None:
    from fleetkit.foundation.secrets import remember_secret

    remember_secret("hunter2-token-value")
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    runs.fail = lambda pack, n: ValueError("bad token hunter2-token-value") if n == 1 else None
    s = scheduler([ScheduledPack("a", 10)], fake, runs, log)
    stop_at(fake, s, 15, StopReason.TERMINATED)
    s.run_forever()
    assert len(runs.calls) == 2
    assert "hunter2-token-value" not in log.text() and "<redacted>" in log.text()


def test_the_status_file_has_a_heartbeat_while_idle(tmp_path: Path) -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    status_file = tmp_path / "status.json"
    s = scheduler(
        [ScheduledPack("a", 3600)], fake, runs, log, status_file=status_file, heartbeat=30
    )
    beats: list[str] = []

    def look() -> None:
        status = load_status(status_file)
        assert status is not None
        beats.append(status.updated_at)

    for t in (31, 61, 95):
        fake.at.append((t, look))
    stop_at(fake, s, 100, StopReason.TERMINATED)
    s.run_forever()
    assert beats == [
        "2025-01-01T10:00:30.000000Z",
        "2025-01-01T10:01:00.000000Z",
        "2025-01-01T10:01:30.000000Z",
    ]
    assert max(fake.sleeps) <= 30
    status = load_status(status_file)
    assert status is not None and status.packs["a"].next_due_at == "2025-01-01T11:00:00.000000Z"


def test_an_unwritable_status_file_is_logged_and_the_schedule_goes_on(tmp_path: Path) -> None:
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    blocker = tmp_path / "file"
    blocker.write_text("")
    s = scheduler([ScheduledPack("a", 10)], fake, runs, log, status_file=blocker / "status.json")
    stop_at(fake, s, 25, StopReason.TERMINATED)
    s.run_forever()
    assert len(runs.calls) == 3 and "cannot write the status file" in log.text()


def test_bad_schedules_are_refused() -> None:
    fake, log = FakeTime(), Log()
    with pytest.raises(ValueError, match="unique"):
        scheduler([ScheduledPack("a", 10), ScheduledPack("a", 20)], fake, Runs(fake), log)
    with pytest.raises(ValueError, match="positive"):
        scheduler([ScheduledPack("a", 0)], fake, Runs(fake), log)


def test_packs_are_scheduled_by_their_name_and_interval() -> None:
    from fleetkit.ask.packs import pack_from_data

    pack = pack_from_data(
        {"pack": "iocs", "kind": "hunt", "interval": "15m", "queries": [
            {"name": "q", "query": "SELECT 1"}]},
        file="iocs.yaml",
    )  # fmt: skip
    assert schedule_of([pack]) == [ScheduledPack("iocs", 900.0)]


# --------------------------------------------------------------------------- real time


def test_with_the_receiver_down_the_schedule_still_runs_on_time() -> None:
    """Real clock, 2 s interval, every run publishes an event to a dead webhook."""
    log = Log()
    sink = WebhookSink(
        closed_port_url(),
        b"secret-0123456789",
        say=log,
        queue_size=2,
        retry=RetryPolicy(attempts=3, first_delay=0.5, max_delay=1),
    )
    notifier = Notifier([], webhook=sink)
    notifier.start()
    starts: list[float] = []
    holder: list[Scheduler] = []

    def run(request: RunRequest) -> RunOutcome:
        starts.append(time.monotonic())
        for n in range(3):
            notifier.publish(
                [
                    make_event(
                        EventKind.POLICY_FAILING,
                        run_id=f"r{request.sequence}",
                        pack="a",
                        at="2025-01-01T10:00:00.000000Z",
                        node_id=f"n{n}",
                    )
                ]
            )
        if request.sequence == 3:
            holder[0].request_stop(StopReason.TERMINATED)
        return RunOutcome("ok")

    s = Scheduler([ScheduledPack("a", 2.0)], run, say=log)
    holder.append(s)
    began = time.monotonic()
    assert s.run_forever() is ExitStatus.SUCCESS
    counters = notifier.close(grace=0.1)
    offsets = [round(at - began, 1) for at in starts]
    assert len(offsets) == 3
    # each run starts at its slot (0, 2, 4 s), give or take a loaded machine's scheduling
    for slot, offset in zip((0.0, 2.0, 4.0), offsets, strict=True):
        assert slot <= offset < slot + 1.5, offsets
    assert counters.dropped >= 1 and counters.delivered == 0
    assert counters.dropped + counters.failed + counters.abandoned + counters.queued == 9


SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from fleetkit.watch.scheduler import RunOutcome, ScheduledPack, Scheduler, signals_handled

    def run(request):
        print("run", request.sequence, flush=True)
        time.sleep({run_seconds})
        return RunOutcome("ok", run_id="r%d" % request.sequence)

    def on_stop(reason):
        print("stopping the job:", reason.value, flush=True)

    s = Scheduler([ScheduledPack("a", 30)], run, say=lambda line: print(line, flush=True),
                  on_stop=on_stop)
    with signals_handled(s):
        sys.exit(int(s.run_forever()))
    """
)


@pytest.mark.parametrize(
    ("signum", "code", "run_seconds"),
    [
        (signal.SIGTERM, 0, 0),  # idle when the signal comes
        (signal.SIGINT, 130, 0),
        (signal.SIGTERM, 0, 3),  # during a run: the job is stopped, the run finishes
    ],
)
def test_a_real_process_stops_on_signals_with_the_documented_status(
    signum: int, code: int, run_seconds: int
) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(repo=repo, run_seconds=run_seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "run 1"
    if run_seconds == 0:
        time.sleep(0.3)  # let it go idle (any moment is fine: the test is the exit status)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, (out, err)
    assert "Traceback" not in err
    if run_seconds:
        assert "stopping the job: terminated" in out
    assert "watch: stopped" in out


def test_ctrl_c_outside_a_run_without_handlers_still_ends_cleanly(tmp_path: Path) -> None:
    """Python's own SIGINT handler raises wherever the main thread is (here: asleep)."""
    fake, log = FakeTime(), Log()
    runs = Runs(fake)
    status_file = tmp_path / "status.json"
    s = scheduler([ScheduledPack("a", 10)], fake, runs, log, status_file=status_file)

    def interrupt() -> None:
        raise KeyboardInterrupt

    fake.at.append((5, interrupt))
    assert s.run_forever() is ExitStatus.INTERRUPTED
    status = load_status(status_file)
    assert status is not None and (status.state, status.stop_reason) == ("stopped", "interrupted")
