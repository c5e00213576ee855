"""Policy state over several runs: first_failed_at, last_passed_at, transitions, grace."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from fleetkit.history import History, PolicyVerdict, Question, Transition, Verdict
from tests.unit.history_helpers import Clock, open_store

POLICY = "ssh-keys/keys-encrypted"


def policy_run(history: History, clock: Clock, verdicts: dict[str, str]) -> str:
    recorder = history.begin_run(
        kind="policy",
        question=Question("SELECT * FROM user_ssh_keys", pack="ssh-keys"),
        scope={},
        transport="bacalhau",
        started_at=clock(),
    )
    for node in verdicts:
        recorder.add_node(node_id=node, hostname=f"host-{node}", status="ok", rows=[])
    recorder.add_verdicts(
        PolicyVerdict(node, f"host-{node}", POLICY, verdict) for node, verdict in verdicts.items()
    )
    run_id = recorder.finish().run_id
    clock.advance(days=1)
    return run_id


def states(
    history: History, run_id: str, grace: float | None = None, now: datetime | None = None
) -> dict[str, tuple]:
    return {
        s.node_id: (s.verdict.value, s.transition, s.first_failed_at, s.last_passed_at, s.overdue)
        for s in history.policy_states(run_id, grace_days=grace, now=now)
    }


def test_plant_a_bad_key_then_fix_it(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        day1 = clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        r1 = policy_run(history, clock, {"web": "PASS", "db": "PASS"})
        assert states(history, r1)["web"] == (
            "PASS",
            Transition.STILL_PASSING,
            None,
            day1,
            False,
        )
        day2 = clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        r2 = policy_run(history, clock, {"web": "FAIL", "db": "PASS"})  # bad key planted
        assert states(history, r2)["web"] == ("FAIL", Transition.NEWLY_FAILING, day2, day1, False)
        r3 = policy_run(history, clock, {"web": "FAIL", "db": "PASS"})  # still there
        assert states(history, r3)["web"] == ("FAIL", Transition.STILL_FAILING, day2, day1, False)
        r4 = policy_run(history, clock, {"web": "ERROR", "db": "PASS"})  # no answer: undecided
        assert states(history, r4)["web"] == ("ERROR", Transition.UNDECIDED, day2, day1, False)
        r5 = policy_run(history, clock, {"web": "FAIL", "db": "PASS"})  # an error is no fix
        assert states(history, r5)["web"][1:3] == (Transition.STILL_FAILING, day2)
        day6 = clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        r6 = policy_run(history, clock, {"web": "PASS", "db": "PASS"})  # fixed
        assert states(history, r6)["web"] == ("PASS", Transition.FIXED, None, day6, False)
        day7 = clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        r7 = policy_run(history, clock, {"web": "FAIL", "db": "UNKNOWN"})  # fails again: new streak
        assert states(history, r7)["web"] == ("FAIL", Transition.NEWLY_FAILING, day7, day6, False)
        assert states(history, r7)["db"][:3] == ("UNKNOWN", Transition.UNDECIDED, None)
        # The state of an earlier run is as it was then (a restarted watch sees the same).
        assert states(history, r3)["web"][1] is Transition.STILL_FAILING


def test_grace_marks_failures_older_than_n_days(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        policy_run(history, clock, {"web": "FAIL", "db": "PASS"})
        policy_run(history, clock, {"web": "FAIL", "db": "FAIL"})
        last = policy_run(history, clock, {"web": "FAIL", "db": "FAIL"})
        # As of the last run's start (the default, so a run's states never change): web
        # fails since 2 days, db since 1.
        got = states(history, last, grace=1.5)
        assert got["web"][4] is True and got["db"][4] is False
        assert states(history, last, grace=2.5)["web"][4] is False
        # As of now = 3 days after the first run: web fails since 3 days, db since 2.
        got = states(history, last, grace=2.5, now=clock())
        assert got["web"][4] is True and got["db"][4] is False
        assert all(not s[4] for s in states(history, last).values())


def test_a_late_verdict_replaces_the_nodes_earlier_one(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        run = policy_run(history, clock, {"web": "ERROR"})
        with history.resume_run(run) as late:
            late.add_node(node_id="web", hostname="host-web", status="ok", rows=[])
            late.add_verdicts([PolicyVerdict("web", "host-web", POLICY, "FAIL")])
        assert states(history, run)["web"][:2] == ("FAIL", Transition.NEWLY_FAILING)


def test_verdict_history_gives_every_verdict_oldest_first_for_trends(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        first = policy_run(history, clock, {"web": "PASS", "db": "FAIL"})
        second = policy_run(history, clock, {"web": "FAIL"})
        got = [(v.run_id, v.node_id, v.verdict.value) for v in history.verdict_history()]
        assert got == [(first, "db", "FAIL"), (first, "web", "PASS"), (second, "web", "FAIL")]
        assert [v.run_id for v in history.verdict_history(since=clock.now)] == []
        assert len(list(history.verdict_history(pack="ssh-keys"))) == 3
        assert list(history.verdict_history(pack="ssh")) == []


def test_an_unknown_verdict_is_a_programming_error(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        recorder = history.begin_run(
            kind="policy", question=Question("SELECT 1"), scope={}, transport="ssh"
        )
        with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
            recorder.add_verdicts([PolicyVerdict("n", "h", POLICY, "maybe")])
        recorder.add_verdicts([PolicyVerdict("n", "h", POLICY, "pass")])  # any case
        assert recorder.finish().complete
        assert [v.verdict for v in history.verdict_history()] == [Verdict.PASS]
