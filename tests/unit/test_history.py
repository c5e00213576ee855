"""The history store: recording, listing, reading back in order, settings, pruning."""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO

import pytest

from fleetkit.ask.answer import FleetAnswer, NodeStatus
from fleetkit.ask.merge import write_merged
from fleetkit.ask.record import row_block
from fleetkit.ask.replay import write_run
from fleetkit.ask.transport import Collected, NodeReply
from fleetkit.ask.validate import settle
from fleetkit.foundation.status import ConfigError, ExitStatus
from fleetkit.history import (
    HistorySettings,
    NodeState,
    Question,
    RowBlock,
    RunStatus,
    UnknownRunError,
    as_osqueryi_output,
)
from tests.unit.history_helpers import Clock, Node, open_store, record, settings

PROCS = [{"name": "sshd", "pid": "1"}, {"name": "cron", "pid": "2"}]


def test_a_run_is_recorded_with_its_coverage_and_listed_newest_first(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        first = record(history, [Node("n1", PROCS)], started_at=clock())
        clock.advance(minutes=5)
        second = record(
            history,
            [
                Node("n1", PROCS),
                Node("n2", []),
                Node("n3", status="failed", error="exit 1: Error: no such table"),
                Node("n4", status="timed out"),
                Node("n5", status="missing", error="not CONNECTED"),
                Node("n6", status="excluded"),
            ],
            kind="hunt",
            started_at=clock(),
        )
        runs = history.list_runs()
        assert [r.run_id for r in runs] == [second.run_id, first.run_id]
        newest = runs[0]
        assert newest.kind == "hunt"
        assert newest.status is RunStatus.COMPLETE
        assert newest.coverage.as_dict() == {
            "rows": 1,
            "empty": 1,
            "failed": 1,
            "timed_out": 1,
            "missing": 1,
            "excluded": 1,
        }
        assert newest.coverage.asked == 5 and newest.coverage.percent == 40.0
        assert newest.row_count == 2
        assert [r.run_id for r in history.list_runs(kind="query")] == [first.run_id]
        assert history.list_runs(pack="nope") == []
        assert history.node_rows(first.run_id, "n1").count == 2
        assert history.node_rows(second.run_id, "n3").count == 0
        assert len(history.list_runs(limit=1)) == 1
        entries = history.entries(second.run_id)
        assert [(e.node_id, e.state) for e in entries] == [
            ("n1", NodeState.ROWS),
            ("n2", NodeState.EMPTY),
            ("n3", NodeState.FAILED),
            ("n4", NodeState.TIMED_OUT),
            ("n5", NodeState.MISSING),
            ("n6", NodeState.EXCLUDED),
        ]
        assert entries[2].error == "exit 1: Error: no such table"


def test_run_ids_sort_by_start_and_resolve_by_unique_prefix(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        outcome = record(history, [Node("n1", PROCS)], started_at=clock())
        assert outcome.run_id.startswith("20261101T090000.000Z-")
        assert history.get_run(outcome.run_id[:-2]).run_id == outcome.run_id
        clock.advance(seconds=1)
        other = record(history, [Node("n1", PROCS)], started_at=clock())
        assert outcome.run_id < other.run_id
        with pytest.raises(UnknownRunError, match="matches several runs") as ambiguous:
            history.get_run("20261101T09")
        assert ambiguous.value.exit_status is ExitStatus.BAD_INPUT
        with pytest.raises(UnknownRunError, match="no run 'nope'") as unknown:
            history.get_run("nope")
        assert str(history.path) in str(unknown.value)


def answer_of(replies: dict[str, bytes | IO[bytes]]) -> FleetAnswer:
    return settle(
        Collected(
            replies=tuple(
                NodeReply(n, f"host-{n}", NodeStatus.OK, output=out, exit_code=0)
                for n, out in replies.items()
            )
        )
    )


def test_rows_come_back_in_recorded_order_whatever_form_they_were_given_in(
    tmp_path: Path,
) -> None:
    output = b'Connected to extension socket\n[\n  {"a":"1"},\n  {"a":"2"}\n]\n'
    with answer_of({"n": output}) as answer, open_store(tmp_path) as history:
        block = row_block(answer.nodes[0].data)
        outcome = record(
            history,
            [
                Node("dicts", [{"pid": "2", "name": "b"}, {"name": "a", "pid": "1"}]),
                Node("bytes", [b'{"x":"y"}', b'{"x":"z"}']),
                Node("block", block),  # type: ignore[arg-type]
                # A run of several questions keeps what a node answered before it failed.
                Node("partial", [{"kept": "rows of the questions it answered"}], status="failed"),
                Node("none", status="timed out"),
            ],
        )
        got = {e.node_id: b.lines() for e, b in history.node_blocks(outcome.run_id)}
        states = {e.node_id: e.state for e in history.entries(outcome.run_id)}
    assert got == {
        "dicts": [b'{"pid":"2","name":"b"}', b'{"name":"a","pid":"1"}'],  # order kept
        "bytes": [b'{"x":"y"}', b'{"x":"z"}'],
        "block": [b'{"a":"1"}', b'{"a":"2"}'],
        "partial": [b'{"kept":"rows of the questions it answered"}'],
        "none": [],
    }
    assert states["partial"] is NodeState.FAILED and states["block"] is NodeState.ROWS
    assert outcome.rows == 7


def test_show_re_renders_the_merged_output_byte_identical(tmp_path: Path) -> None:
    """The run's merged output and the one ``show`` rebuilds from the history, every format."""
    outputs: dict[str, bytes] = {
        "n1": b'Connected to extension socket /var/osquery/osquery.em\n[\n  {"name":"sshd",'
        b'"pid":"1"},\n  {"name":"caf\xc3\xa9","pid":"2"}\n]\n',
        "n2": b'[\n  {"hostname":"own-name","name":"tab\\there","pid":"7"}\n]\n',
        "n3": b"[\n\n]\n",
        # Not the fast path's framing: validation re-encodes these rows.
        "n4": b'[\n  {"pid":"9","name":"caf\\u00e9"},\n  {"pid":"8","name":"x"}\n]\n',
        "n5": b'[\n  {"name":"a","password":"hunter2"}\n]\n',
    }
    redacted = frozenset({"password"})

    def answer() -> FleetAnswer:
        spooled = tempfile.TemporaryFile()  # noqa: SIM115 - the answer closes it
        spooled.write(outputs["n1"])
        replies = {**outputs, "n1": spooled}  # one output as spooled from S3
        return settle(
            Collected(
                replies=tuple(
                    NodeReply(n, f"host-{n}", NodeStatus.OK, output=out, exit_code=0)
                    for n, out in replies.items()
                )
            ),
            redacted=redacted,
        )

    with open_store(tmp_path) as history:
        recorder = history.begin_run(
            kind="query",
            question=Question("SELECT 1"),
            scope={},
            transport="ssh",
            redact_columns=redacted,
        )
        with answer() as first:
            for node in first.nodes:
                recorder.add_node(
                    node_id=node.node_id,
                    hostname=node.hostname,
                    status="ok",
                    rows=row_block(node.data),
                )
        run = history.get_run(recorder.finish().run_id)
        assert run.redacted == ("password",)
        for fmt in ("json", "ndjson", "csv", "table"):
            original = io.BytesIO()
            with answer() as printed:
                write_merged(printed, fmt, original)
            again = io.BytesIO()
            write_run(history, run, fmt, again)
            assert again.getvalue() == original.getvalue(), fmt
        assert b"hunter2" not in original.getvalue()


def test_job_ids_and_unanswered_streaks_are_kept(tmp_path: Path) -> None:
    """watch's "missing for N consecutive runs" reads the streaks."""
    clock = Clock()
    with open_store(tmp_path, clock) as history:
        states = [
            {"a": "ok", "b": "missing", "c": "ok"},
            {"a": "missing", "b": "failed", "c": "ok"},
            {"a": "timed out", "b": "missing", "c": "missing"},
        ]
        last = ""
        for state in states:
            recorder = history.begin_run(
                kind="watch", question=Question("SELECT 1", pack="p"), scope={}, transport="ssh"
            )
            history.set_job_id(recorder.run_id, f"job-{clock.now.minute}")
            for node, status in state.items():
                recorder.add_node(node_id=node, hostname=node, status=status, rows=PROCS)
            last = recorder.finish().run_id
            clock.advance(minutes=1)
        assert history.get_run(last).job_id == "job-2"
        assert history.unanswered_streaks(last) == {"a": 2, "b": 3, "c": 1}


def test_the_file_is_private_and_wal(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        record(history, [Node("n1", PROCS)])
        path = Path(history.path)
        mode = history.database.connection.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_existing_file_open_to_others_is_made_private(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        path = Path(history.path)
    os.chmod(path, 0o644)
    with open_store(tmp_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_redacted_columns_are_redacted_in_storage_even_when_the_engine_forgot(
    tmp_path: Path,
) -> None:
    rows = [
        b'{"name":"a","password":"hunter2"}',
        b'{"name":"b","password":"<redacted>"}',
        b'{"name":"c","passw\\u006frd":"sneaky"}',  # a key spelled with an escape
        b'{"name":"d"}',
    ]
    with open_store(tmp_path) as history:
        outcome = record(history, [Node("n1", rows)], redact={"password"})
        stored = [json.loads(r) for r in history.reader.node_block(outcome.run_id, "n1").lines()]
        raw = history.database.connection.execute("SELECT data FROM nodes").fetchone()[0]
    assert outcome.redacted_by_guard == 2
    assert [row.get("password") for row in stored] == ["<redacted>"] * 3 + [None]
    assert b"hunter2" not in raw and b"sneaky" not in raw
    assert stored[3] == {"name": "d"}


def test_keep_days_prunes_old_runs_after_a_recording(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path, clock, keep_days=7) as history:
        old = record(history, [Node("n1", PROCS)], started_at=clock())
        abandoned = history.begin_run(  # its recorder died: never finished
            kind="query", question=Question("SELECT 1"), scope={}, transport="ssh"
        )
        clock.advance(days=3)
        middle = record(history, [Node("n1", PROCS)], started_at=clock())
        clock.advance(days=5)  # old is 8 days old now, middle 5
        new = record(history, [Node("n1", PROCS)], started_at=clock())
        assert [r.run_id for r in history.list_runs()] == [new.run_id, middle.run_id]
        for gone in (old.run_id, abandoned.run_id):
            with pytest.raises(UnknownRunError):
                history.get_run(gone)
        left = history.database.connection.execute(
            "SELECT COUNT(*) FROM nodes WHERE run_id = ?", (old.run_id,)
        ).fetchone()[0]
        assert left == 0


def test_a_recording_that_died_reads_as_incomplete(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        recorder = history.begin_run(
            kind="query", question=Question("SELECT 1"), scope={}, transport="ssh"
        )
        assert history.get_run(recorder.run_id).status is RunStatus.RECORDING
        history.database.connection.execute(
            "UPDATE runs SET recorder = ? WHERE run_id = ?",
            (f"{os.uname().nodename}:{2**22 + 7}", recorder.run_id),  # no such pid
        )
        run = history.get_run(recorder.run_id)
    assert run.status is RunStatus.INCOMPLETE
    assert "ended before" in (run.note or "")


def test_an_interrupted_recording_is_incomplete_with_the_reason(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        with (
            pytest.raises(KeyboardInterrupt),
            history.begin_run(
                kind="query", question=Question("SELECT 1"), scope={}, transport="ssh"
            ) as recorder,
        ):
            recorder.add_node(node_id="n1", hostname="h", status="ok", rows=PROCS)
            raise KeyboardInterrupt
        run = history.get_run(recorder.run_id)
    assert run.status is RunStatus.INCOMPLETE and run.note == "interrupted"
    assert run.coverage.rows == 1


def test_bad_statuses_and_rows_are_programming_errors(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        recorder = history.begin_run(
            kind="query", question=Question("SELECT 1"), scope={}, transport="ssh"
        )
        with pytest.raises(ValueError, match="unknown node status"):
            recorder.add_node(node_id="n", hostname="h", status="fine")
        with pytest.raises(ValueError, match="compact JSON"):
            recorder.add_node(node_id="n", hostname="h", status="ok", rows=[b'{"a":\n"b"}'])
        recorder.finish()
        with pytest.raises(ValueError, match="already finished"):
            recorder.add_node(node_id="n", hostname="h", status="ok")
        with pytest.raises(ValueError):
            history.begin_run(kind="nonsense", question=Question("x"), scope={}, transport="ssh")


# --------------------------------------------------------------------------- settings


def test_settings_defaults_sit_beside_fleetkit_yaml(tmp_path: Path) -> None:
    parsed = HistorySettings.from_mapping(None, file="fleetkit.yaml", base_dir=tmp_path)
    assert parsed.path == str(tmp_path / ".fleetkit" / "history.db")
    assert (parsed.keep_days, parsed.store, parsed.s3_prefix) == (90, "sqlite", "history/")
    custom = HistorySettings.from_mapping(
        {"path": "var/h.db", "keep_days": 0, "store": "s3", "s3_prefix": "fleet/hist"},
        file="fleetkit.yaml",
        base_dir=tmp_path,
    )
    assert custom.path == str(tmp_path / "var" / "h.db")
    assert custom.keep_days is None and custom.s3_prefix == "fleet/hist/"


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"kept_days": 3}, "history.kept_days", "unknown key"),
        ({"keep_days": "7"}, "history.keep_days", "whole days"),
        ({"keep_days": -1}, "history.keep_days", "whole days"),
        ({"keep_days": True}, "history.keep_days", "whole days"),
        ({"store": "postgres"}, "history.store", "must be one of sqlite, s3"),
        ({"path": ""}, "history.path", "non-empty"),
        ({"s3_prefix": "/abs"}, "history.s3_prefix", "key prefix"),
        ({"s3_prefix": "a b/"}, "history.s3_prefix", "key prefix"),
        ({"lock_timeout": 0}, "history.lock_timeout", "seconds"),
        ("nope", "history", "expected a mapping"),
    ],
)
def test_settings_errors_name_the_file_and_key(data: object, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        HistorySettings.from_mapping(data, file="/p/fleetkit.yaml", base_dir="/p")
    assert caught.value.file == "/p/fleetkit.yaml"
    assert caught.value.key == key
    assert message in str(caught.value)
    assert caught.value.exit_status is ExitStatus.BAD_INPUT


def test_settings_helper_matches_defaults(tmp_path: Path) -> None:
    assert settings(tmp_path).path == HistorySettings.default(tmp_path).path


def test_a_validated_node_becomes_a_block_without_a_copy_or_a_second_parse() -> None:
    framed = b'Connected to extension socket /x\n[\n  {"a":"1"},\n  {"a":"2"}\n]\n'
    spooled = tempfile.TemporaryFile()  # noqa: SIM115 - the answer closes it
    spooled.write(framed)
    odd = b'[\n  {"a":"1"},\n  {"b":"\\u00e9"}\n]\n'  # validation re-encodes these
    with answer_of({"bytes": framed, "file": spooled, "lines": odd, "none": b"[\n\n]\n"}) as got:
        blocks = {node.node_id: row_block(node.data) for node in got.nodes}
        # In memory: a window onto what the node printed, nothing copied.
        assert isinstance(blocks["bytes"].data, memoryview)
        assert blocks["bytes"].data.obj is framed
        for name in ("bytes", "file"):
            assert (blocks[name].count, blocks[name].lines()) == (2, [b'{"a":"1"}', b'{"a":"2"}'])
            assert as_osqueryi_output(blocks[name]) == framed[framed.index(b"\n[") + 1 :]
        assert blocks["lines"].lines() == [b'{"a":"1"}', '{"b":"é"}'.encode()]
        assert blocks["none"] == RowBlock(b"", 0)
        assert as_osqueryi_output(blocks["none"]) == b"[\n\n]\n"
