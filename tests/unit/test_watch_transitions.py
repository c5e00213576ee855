"""Events on transitions only, computed from a run's state as the history gives it."""

from __future__ import annotations

import json

import pytest

from fleetkit.watch.events import EventKind, event_id
from fleetkit.watch.transitions import (
    HuntObservation,
    NodeAbsence,
    PolicyObservation,
    RunInfo,
    RunObservations,
    compute_events,
)

RUN = RunInfo("20250101T100000.000Z-abcd", "ssh-keys", "2025-01-01T10:00:00.000000Z")


def policy(host: str, transition: str, **extra: str) -> PolicyObservation:
    return PolicyObservation(f"n-{host}", host, "ssh-keys/encrypted", transition, **extra)


def events_of(observed: RunObservations, missing_after: int = 3, limit: int = 1000) -> list:  # type: ignore[type-arg]
    return compute_events(observed, missing_after=missing_after, limit=limit)


def test_only_newly_failing_and_fixed_hosts_make_policy_events() -> None:
    observed = RunObservations(
        RUN,
        policies=(
            policy("web-1", "newly_failing", first_failed_at="2025-01-01T10:00:00.000000Z"),
            policy("web-2", "still_failing", first_failed_at="2024-12-01T10:00:00.000000Z"),
            policy("web-3", "fixed", last_passed_at="2025-01-01T10:00:00.000000Z"),
            policy("web-4", "still_passing"),
            policy("web-5", "undecided"),
        ),
    )
    events = events_of(observed)
    assert [(e.kind, e.hostname) for e in events] == [
        (EventKind.POLICY_FAILING, "web-1"),
        (EventKind.POLICY_FIXED, "web-3"),
    ]
    failing = events[0].payload()
    assert failing["subject"] == "ssh-keys/encrypted"
    assert failing["details"] == {
        "policy": "ssh-keys/encrypted",
        "first_failed_at": "2025-01-01T10:00:00.000000Z",
        "last_passed_at": None,
    }
    assert failing["nodeID"] == "n-web-1" and failing["run_id"] == RUN.run_id


def test_event_ids_are_stable_and_differ_by_run_kind_host_and_subject() -> None:
    observed = RunObservations(RUN, policies=(policy("web-1", "newly_failing"),))
    first, again = events_of(observed), events_of(observed)
    assert (
        first[0].id
        == again[0].id
        == event_id(RUN.run_id, EventKind.POLICY_FAILING, "n-web-1", "ssh-keys/encrypted")
    )
    other_ids = {
        event_id("another-run", EventKind.POLICY_FAILING, "n-web-1", "ssh-keys/encrypted"),
        event_id(RUN.run_id, EventKind.POLICY_FIXED, "n-web-1", "ssh-keys/encrypted"),
        event_id(RUN.run_id, EventKind.POLICY_FAILING, "n-web-2", "ssh-keys/encrypted"),
        event_id(RUN.run_id, EventKind.POLICY_FAILING, "n-web-1", "ssh-keys/other"),
    }
    assert first[0].id not in other_ids and len(other_ids) == 4


def test_an_unknown_transition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy transition"):
        policy("web-1", "failing")


def hunt(rows: list[dict[str, str]], previous: list[dict[str, str]] | None) -> HuntObservation:
    return HuntObservation(
        "n-web-1",
        "web-1",
        "trojan",
        tuple(rows),
        None if previous is None else tuple(previous),
        severity="critical",
    )


def test_a_hunt_hit_is_a_row_the_hosts_previous_answer_did_not_hold() -> None:
    old = {"path": "/tmp/a", "sha256": "aa"}
    new = {"path": "/tmp/b", "sha256": "bb"}
    events = events_of(RunObservations(RUN, hunts=(hunt([new, old], [old]),)))
    assert len(events) == 1
    assert events[0].kind is EventKind.HUNT_HIT
    assert events[0].details == {"query": "trojan", "row": new, "severity": "critical"}
    # same rows in another order and with columns reordered: no change, no event
    reordered = [{"sha256": "aa", "path": "/tmp/a"}, new]
    assert (
        events_of(RunObservations(RUN, hunts=(hunt(list(reversed(reordered)), reordered),))) == []
    )


def test_a_host_that_never_answered_before_reports_every_row_and_copies_count() -> None:
    row = {"path": "/tmp/x"}
    first = events_of(RunObservations(RUN, hunts=(hunt([row, row], None),)))
    assert len(first) == 2 and first[0].id != first[1].id
    # one copy was there before: only the second copy is new
    assert len(events_of(RunObservations(RUN, hunts=(hunt([row, row], [row]),)))) == 1


def test_a_node_is_reported_missing_once_when_its_streak_reaches_the_setting() -> None:
    absences = tuple(
        NodeAbsence(f"n{i}", f"web-{i}", streak=i, reason="missing") for i in range(1, 6)
    )
    events = events_of(RunObservations(RUN, absences=absences), missing_after=3)
    assert [(e.kind, e.hostname) for e in events] == [(EventKind.NODE_MISSING, "web-3")]
    assert events[0].details == {"consecutive_runs": 3, "reason": "missing"}


def test_too_many_events_end_with_one_that_counts_the_rest() -> None:
    hosts = tuple(policy(f"web-{i:03d}", "newly_failing") for i in range(10))
    events = events_of(RunObservations(RUN, policies=hosts), limit=4)
    assert len(events) == 4
    assert events[-1].kind is EventKind.EVENTS_TRUNCATED
    assert events[-1].details == {"left_out": 7, "by_kind": {"policy_failing": 7}}


def test_hostile_text_is_exact_in_json_escaped_in_the_log_and_rows_are_bounded() -> None:
    evil_host = "web-1\x1b[2J\nFAKE LINE"
    row = {"cmdline": "x" * 5000, **{f"c{i:03d}": "v" for i in range(100)}}
    observed = RunObservations(
        RUN,
        policies=(PolicyObservation("n1", evil_host, "p/q", "newly_failing"),),
        hunts=(HuntObservation("n1", evil_host, "q", (row,), None),),
    )
    events = events_of(observed)
    assert json.loads(events[0].body())["hostname"] == evil_host
    line = events[0].log_line()
    assert "\x1b" not in line and "\n" not in line and "\\x1b" in line
    carried = events[1].details["row"]
    assert len(carried) == 64 and all(len(v) <= 515 for v in carried.values())


def test_a_lone_surrogate_from_a_node_never_breaks_the_body_or_the_log() -> None:
    observed = RunObservations(
        RUN, hunts=(HuntObservation("n1", "web-\ud800", "q", ({"p": "\udcff"},), None),)
    )
    event = events_of(observed)[0]
    assert json.loads(event.body())["details"]["row"] == {"p": "\udcff"}
    assert event.body().isascii()
    assert "\\ud800" in event.log_line()
    event.log_line().encode("utf-8")
