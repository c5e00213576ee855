"""diff: per-node multiset changes in osquery's differential shape; retry-missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetkit.foundation.status import ExitStatus
from fleetkit.history import DiffMismatchError, NodeState, UnknownRunError
from tests.unit.history_helpers import Clock, Node, open_store, record


def row(name: str, pid: str = "1") -> dict[str, str]:
    return {"name": name, "pid": pid}


def events(diff: object) -> list[tuple[str, str, dict[str, str]]]:
    return [(c.action, c.node_id, c.columns()) for c in diff.changes()]  # type: ignore[attr-defined]


def test_a_process_started_between_two_runs_is_exactly_one_added_row(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        base = [row("sshd"), row("cron", "2")]
        record(history, [Node("n1", base), Node("n2", base)], started_at=clock())
        clock.advance(minutes=1)
        record(
            history,
            [Node("n1", base), Node("n2", [*base, row("kworkerd", "666")])],
            started_at=clock(),
        )
        diff = history.diff()
        assert events(diff) == [("added", "n2", row("kworkerd", "666"))]
        assert diff.appeared == [] and diff.disappeared == []
        change = next(iter(diff.changes()))
        assert (
            json.loads(change.json_bytes())
            == change.record()
            == {
                "action": "added",
                "nodeID": "n2",
                "hostname": "n2",
                "columns": {"name": "kworkerd", "pid": "666"},
            }
        )
        assert change.flat() == {
            "action": "added",
            "nodeID": "n2",
            "hostname": "n2",
            "name": "kworkerd",
            "pid": "666",
        }


def test_same_rows_in_another_order_are_no_change(tmp_path: Path) -> None:
    clock = Clock()
    rows = [row(f"p{i}", str(i)) for i in range(50)]
    with open_store(tmp_path, clock) as history:
        record(history, [Node("n1", rows)], started_at=clock())
        clock.advance(minutes=1)
        record(history, [Node("n1", list(reversed(rows)))], started_at=clock())
        assert events(history.diff()) == []


def test_duplicates_count_as_a_multiset(tmp_path: Path) -> None:
    clock = Clock()
    a, b = row("a"), row("b")
    with open_store(tmp_path, clock) as history:
        first = record(history, [Node("n1", [a, a, b, b])], started_at=clock())
        clock.advance(minutes=1)
        second = record(history, [Node("n1", [a, a, a, b])], started_at=clock())
        assert events(history.diff(first.run_id, second.run_id)) == [
            ("removed", "n1", b),
            ("added", "n1", a),
        ]
        # And back: the reverse diff mirrors it.
        assert events(history.diff(second.run_id, first.run_id)) == [
            ("removed", "n1", a),
            ("added", "n1", b),
        ]


def test_removed_rows_come_before_added_ones_in_recorded_order(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        record(history, [Node("n1", [row("x"), row("keep"), row("y")])], started_at=clock())
        clock.advance(minutes=1)
        record(history, [Node("n1", [row("z"), row("keep"), row("w")])], started_at=clock())
        assert [(a, c["name"]) for a, _, c in events(history.diff())] == [
            ("removed", "x"),
            ("removed", "y"),
            ("added", "z"),
            ("added", "w"),
        ]


def test_nodes_that_appear_or_disappear_are_named_not_diffed_row_by_row(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        record(
            history,
            [
                Node("stays", [row("a")]),
                Node("leaves", [row("b")]),
                Node("fails-later", [row("c")]),
                Node("was-missing", status="missing"),
            ],
            started_at=clock(),
        )
        clock.advance(minutes=1)
        record(
            history,
            [
                Node("stays", [row("a")]),
                Node("fails-later", status="failed", error="exit 1"),
                Node("was-missing", [row("d")]),
                Node("new", []),
            ],
            started_at=clock(),
        )
        diff = history.diff()
        assert events(diff) == []
        assert [(n.node_id, n.before, n.after) for n in diff.appeared] == [
            ("was-missing", NodeState.MISSING, NodeState.ROWS),
            ("new", None, NodeState.EMPTY),
        ]
        assert [(n.node_id, n.before, n.after) for n in diff.disappeared] == [
            ("fails-later", NodeState.ROWS, NodeState.FAILED),
            ("leaves", NodeState.ROWS, None),
        ]
        assert diff.disappeared[1].record()["action"] == "disappeared"


def test_an_empty_answer_after_rows_removes_them_all(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        record(history, [Node("n1", [row("a"), row("b")])], started_at=clock())
        clock.advance(minutes=1)
        record(history, [Node("n1", [])], started_at=clock())
        assert [a for a, _, _ in events(history.diff())] == ["removed", "removed"]


def test_the_default_pair_is_the_last_two_runs_of_the_same_question_and_scope(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        one = record(history, [Node("n1", [row("a")])], started_at=clock())
        clock.advance(minutes=1)
        record(history, [Node("n1", [row("zzz")])], sql="SELECT 2", started_at=clock())
        clock.advance(minutes=1)
        record(
            history,
            [Node("n1", [row("other-scope")])],
            scope={"hosts": ["n1"], "selector": "", "timeout": 60},
            started_at=clock(),
        )
        clock.advance(minutes=1)
        # Same question and scope as `one` (a different timeout does not change the scope).
        three = record(
            history,
            [Node("n1", [row("b")])],
            scope={"hosts": [], "selector": "", "timeout": 5},
            started_at=clock(),
        )
        diff = history.diff()
        assert (diff.before.run_id, diff.after.run_id) == (one.run_id, three.run_id)
        assert [a for a, _, _ in events(diff)] == ["removed", "added"]
        # One run given: from it to the newest later run of the same question and scope.
        since = history.diff(one.run_id)
        assert since.after.run_id == three.run_id
        assert history.previous_run(three.run_id).run_id == one.run_id  # type: ignore[union-attr]
        with pytest.raises(UnknownRunError, match="no later run"):
            history.diff(three.run_id)


def test_runs_of_different_questions_are_refused_naming_both(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        a = record(history, [Node("n1", [row("a")])], sql="SELECT a FROM t", started_at=clock())
        clock.advance(minutes=1)
        b = record(history, [Node("n1", [row("a")])], sql="SELECT b FROM t", started_at=clock())
        with pytest.raises(DiffMismatchError) as caught:
            history.diff(a.run_id, b.run_id)
    message = str(caught.value)
    assert a.run_id in message and b.run_id in message
    assert "SELECT a FROM t" in message and "SELECT b FROM t" in message
    assert caught.value.exit_status is ExitStatus.BAD_INPUT


def test_diff_without_enough_runs_says_why(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        with pytest.raises(UnknownRunError, match="no runs recorded"):
            history.diff()
        only = record(history, [Node("n1", [row("a")])])
        with pytest.raises(UnknownRunError, match=f"{only.run_id}.*no\\s+earlier run"):
            history.diff()
        with pytest.raises(UnknownRunError, match="no run 'missing-id'"):
            history.diff("missing-id", only.run_id)


# --------------------------------------------------------------------------- retry missing


def test_late_answers_complete_a_run_and_are_marked_late(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        run = record(
            history,
            [
                Node("n1", [row("a")]),
                Node("n2", status="missing", error="DISCONNECTED"),
                Node("n3", status="timed out"),
                Node("n4", status="failed", error="exit 1"),
            ],
            started_at=clock(),
        )
        assert [e.node_id for e in history.unanswered(run.run_id)] == ["n2", "n3", "n4"]
        clock.advance(hours=2)
        with history.resume_run(run.run_id) as late:
            late.add_node(node_id="n2", hostname="n2", status="ok", rows=[row("kworkerd")])
            late.add_node(node_id="n3", hostname="n3", status="ok", rows=[])
            late.add_node(node_id="n4", hostname="n4", status="failed", error="exit 1 again")
            late.add_node(node_id="n1", hostname="n1", status="ok", rows=[row("forged")])
        outcome = late.finish()
        summary = history.get_run(run.run_id)
        entries = {e.node_id: e for e in history.entries(run.run_id)}
        rows = {e.node_id: b.lines() for e, b in history.node_blocks(run.run_id)}
    assert outcome.complete
    assert any("n1 already answered" in w for w in outcome.warnings)
    assert summary.coverage.as_dict() == {
        "rows": 2,
        "empty": 1,
        "failed": 1,
        "timed_out": 0,
        "missing": 0,
        "excluded": 0,
    }
    assert summary.late_nodes == 2 and summary.row_count == 2
    assert entries["n2"].late and entries["n3"].late and not entries["n1"].late
    assert not entries["n4"].late and entries["n4"].error == "exit 1 again"
    assert rows["n1"] == [b'{"name":"a","pid":"1"}']  # the forged late answer was ignored
    assert rows["n2"] == [b'{"name":"kworkerd","pid":"1"}']
    assert list(entries) == ["n1", "n2", "n3", "n4"]  # recorded order kept


# --------------------------------------------------------------------------- compared nodes


def test_only_nodes_whose_rows_changed_are_read_and_each_is_compared_as_a_multiset(
    tmp_path: Path,
) -> None:
    clock = Clock()
    base = [row(f"p{i}", str(i)) for i in range(40)]
    with open_store(tmp_path, clock) as history:
        record(
            history,
            [Node("same", base), Node("moved", base), Node("changed", base), Node("dup", base)],
            started_at=clock(),
        )
        clock.advance(minutes=1)
        record(
            history,
            [
                Node("same", base),
                Node("moved", list(reversed(base))),
                Node("changed", [*base[5:], row("new", "99")]),
                Node("dup", [*base, base[0]]),
            ],
            started_at=clock(),
        )
        diff = history.diff()
        # Equal digests settle "same" without reading its rows.
        assert [new.node_id for _, new in diff._pairs] == ["moved", "changed", "dup"]
        found = events(diff)
    assert [(a, n, c["name"]) for a, n, c in found] == [
        *(("removed", "changed", f"p{i}") for i in range(5)),
        ("added", "changed", "new"),
        ("added", "dup", "p0"),
    ]
