"""Notifications across watch restarts: state comes from the history, the ledger from run ids.

A fake history keeps verdicts per run and derives transitions the way the
history does (FAIL after PASS = newly failing, PASS after FAIL = fixed); each
"watch process" below is built from scratch (new scheduler, notifier, status
board), reading only the status file and the history, exactly as a restarted
service would. Deliveries go to a local HTTP receiver that checks signatures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.watch_settings import RetryPolicy
from fleetkit.watch.events import Event
from fleetkit.watch.notify import Notifier, WebhookSink
from fleetkit.watch.scheduler import RunOutcome, RunRequest, ScheduledPack, Scheduler
from fleetkit.watch.session import (
    Notifications,
    RunMark,
    adopted_mark,
    runs_to_notify,
)
from fleetkit.watch.state import (
    StatusBoard,
    iso_now,
    ledger_of,
    starting_status,
)
from fleetkit.watch.statusread import recover_status
from fleetkit.watch.transitions import (
    NodeAbsence,
    PolicyObservation,
    RunInfo,
    RunObservations,
)
from tests.unit.test_watch_notify import SECRET, Log, Receiver, wait

# the local HTTP receiver fixture (an explicit re-export, so pytest finds it here)
from tests.unit.test_watch_notify import receiver as receiver

PACK = "ssh-keys"
POLICY = "ssh-keys/encrypted"
EPOCH = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


@dataclass
class FakeHistory:
    """Runs of one pack: per run, each host's verdict (PASS/FAIL) or None (no answer)."""

    runs: list[tuple[RunMark, dict[str, str | None]]] = field(default_factory=list)

    def record(self, verdicts: dict[str, str | None]) -> RunMark:
        n = len(self.runs)
        started = EPOCH + timedelta(minutes=n)
        mark = RunMark(iso_now(started), f"{started:%Y%m%dT%H%M%S}.000Z-{n:04x}")
        self.runs.append((mark, verdicts))
        return mark

    def finished_runs(self, pack: str) -> Sequence[RunMark]:
        return [mark for mark, _ in self.runs] if pack == PACK else []

    def observations(self, pack: str, run: RunMark) -> RunObservations:
        index = [mark for mark, _ in self.runs].index(run)
        policies, absences = [], []
        for host, verdict in sorted(self.runs[index][1].items()):
            if verdict is None:
                streak = 0
                for _, earlier in reversed(self.runs[: index + 1]):
                    if earlier.get(host) is not None:
                        break
                    streak += 1
                absences.append(NodeAbsence(f"n-{host}", host, streak, "missing"))
                continue
            before = [v[host] for _, v in self.runs[:index] if v.get(host) in ("PASS", "FAIL")]
            previous = before[-1] if before else None
            if verdict == "FAIL":
                transition = "still_failing" if previous == "FAIL" else "newly_failing"
            else:
                transition = "fixed" if previous == "FAIL" else "still_passing"
            policies.append(PolicyObservation(f"n-{host}", host, POLICY, transition))
        return RunObservations(
            RunInfo(run.run_id, pack, run.started_at), tuple(policies), absences=tuple(absences)
        )


def watch_process(
    history: FakeHistory,
    url: str,
    status_file: Path,
    planned: list[dict[str, str | None]],
) -> list[str]:
    """One watch process from start to stop, running the pack once per planned verdict set.

    Returns the event kinds+hosts it published (what the log sink printed)."""
    log = Log()
    sink = WebhookSink(url, SECRET, say=log, retry=RetryPolicy(attempts=3, first_delay=0.05))
    published: list[str] = []
    notifier = Notifier([ListSink(published)], webhook=sink)
    notifier.start()
    previous = recover_status(status_file, log)
    ledger = ledger_of(previous)
    board = StatusBoard(
        str(status_file),
        starting_status(previous, heartbeat=30, now=EPOCH),
        counters=notifier.counters,
        ledger=ledger,
    )
    notifications = Notifications(
        history, notifier, ledger, missing_after=2, commit=lambda: board.write(EPOCH)
    )
    notifications.catch_up([PACK])

    def run(request: RunRequest) -> RunOutcome:
        mark = history.record(planned.pop(0))  # the engine asked, the history recorded
        notifications.after_run(request.pack, mark)
        return RunOutcome("ok", run_id=mark.run_id)

    for _ in range(len(planned)):
        scheduler = Scheduler([ScheduledPack(PACK, 10)], run, say=log, board=board)
        assert scheduler.run_once() is ExitStatus.SUCCESS
    notifier.close(grace=10)
    return published


class ListSink:
    """Records ``kind:host`` of every event published (beside the webhook)."""

    def __init__(self, out: list[str]) -> None:
        self.out = out

    def publish(self, event: Event) -> bool:
        self.out.append(f"{event.kind.value}:{event.hostname}")
        return True


def kinds(receiver: Receiver) -> list[tuple[str, str]]:
    return [
        (json.loads(d.body)["kind"], json.loads(d.body)["hostname"]) for d in receiver.accepted()
    ]


def test_bad_key_fix_and_restart_each_notify_exactly_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    history, status_file = FakeHistory(), tmp_path / "status.json"
    url = receiver.url

    # first start: everything passes, then web-1 gets a bad key
    plan: list[dict[str, str | None]] = [
        {"web-1": "PASS", "web-2": "PASS"},
        {"web-1": "FAIL", "web-2": "PASS"},
    ]
    sent = watch_process(history, url, status_file, plan)
    assert sent == ["policy_failing:web-1"]
    # restart: still failing, nothing new
    assert watch_process(history, url, status_file, [{"web-1": "FAIL", "web-2": "PASS"}]) == []
    # the key is removed
    assert watch_process(history, url, status_file, [{"web-1": "PASS", "web-2": "PASS"}]) == [
        "policy_fixed:web-1"
    ]
    # restart without a run: nothing re-sent
    assert watch_process(history, url, status_file, []) == []
    wait(lambda: len(receiver.accepted()) == 2)
    assert kinds(receiver) == [("policy_failing", "web-1"), ("policy_fixed", "web-1")]
    assert all(d.verified for d in receiver.deliveries)
    assert receiver.attempts == 2


def test_a_run_recorded_before_a_crash_is_notified_once_at_the_next_start(
    receiver: Receiver, tmp_path: Path
) -> None:
    history, status_file = FakeHistory(), tmp_path / "status.json"
    watch_process(history, receiver.url, status_file, [{"web-1": "PASS"}])
    # the watch recorded this run, then died before notifying it
    crashed = history.record({"web-1": "FAIL"})
    sent = watch_process(history, receiver.url, status_file, [])
    assert sent == ["policy_failing:web-1"]
    assert watch_process(history, receiver.url, status_file, []) == []
    wait(lambda: len(receiver.accepted()) == 1)
    assert json.loads(receiver.accepted()[0].body)["run_id"] == crashed.run_id


def test_a_lost_status_file_never_resends_the_past(receiver: Receiver, tmp_path: Path) -> None:
    history, status_file = FakeHistory(), tmp_path / "status.json"
    history.record({"web-1": "PASS"})
    history.record({"web-1": "FAIL"})  # notified long ago by a watch whose status is gone
    assert watch_process(history, receiver.url, status_file, [{"web-1": "FAIL"}]) == []
    assert watch_process(history, receiver.url, status_file, [{"web-1": "PASS"}]) == [
        "policy_fixed:web-1"
    ]


def test_a_damaged_status_file_is_reported_and_nothing_is_re_sent(
    receiver: Receiver, tmp_path: Path
) -> None:
    history, status_file = FakeHistory(), tmp_path / "status.json"
    watch_process(history, receiver.url, status_file, [{"web-1": "FAIL"}])
    status_file.write_bytes(b"\x1b[2J garbage")
    log = Log()
    assert recover_status(status_file, log) is None
    assert "ignoring the previous status file" in log.text() and "\x1b" not in log.text()
    assert watch_process(history, receiver.url, status_file, [{"web-1": "FAIL"}]) == []


def test_a_node_missing_for_n_runs_is_reported_once(receiver: Receiver, tmp_path: Path) -> None:
    history, status_file = FakeHistory(), tmp_path / "status.json"
    plan: list[dict[str, str | None]] = [
        {"web-1": "PASS", "web-2": "PASS"},
        {"web-1": "PASS", "web-2": None},
        {"web-1": "PASS", "web-2": None},  # the 2nd consecutive run without web-2
        {"web-1": "PASS", "web-2": None},
    ]
    assert watch_process(history, receiver.url, status_file, plan) == ["node_missing:web-2"]


def test_the_ledger_rule() -> None:
    a, b, c = (RunMark(f"2025-01-01T10:0{i}:00.000000Z", f"r{i}") for i in range(3))
    assert runs_to_notify([c, a, b], a) == [b, c]
    assert runs_to_notify([a, b, c], c) == []
    assert runs_to_notify([a, b, c], None) == []  # no ledger: the past is not re-sent
    assert adopted_mark([a, c, b], None) == c
    assert adopted_mark([a, c, b], a) == a
    assert adopted_mark([], None) is None
    # same start time: the run id breaks the tie, as the history orders runs
    assert RunMark(a.started_at, "r9") > a
