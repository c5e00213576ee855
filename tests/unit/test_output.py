"""Merged output: formats, tagging, partial results, redaction, atomic files."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import random
from pathlib import Path

import pytest

from fleetkit.ask.answer import FleetAnswer, NodeStatus
from fleetkit.ask.merge import write_answer, write_merged
from fleetkit.ask.rows import redact_row, tag_row
from fleetkit.ask.transport import Collected, NodeReply, osqueryi_reply
from fleetkit.ask.validate import settle
from fleetkit.foundation.atomic import atomic_output
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.output import (
    FORMATS,
    check_format,
    check_output_path,
    write_pieces,
    writev_all,
)
from fleetkit.foundation.status import UsageError
from tests.unit.test_results import osqueryi


def node_result(
    node_id: str, hostname: str, *, exit_code: int, stdout: bytes, stderr: bytes
) -> NodeReply:
    return osqueryi_reply(node_id, hostname, exit_code=exit_code, stdout=stdout, stderr=stderr)


def ok(node_id: str, rows: list[dict[str, str]], **kw: bool) -> NodeReply:
    return node_result(node_id, node_id, exit_code=0, stdout=osqueryi(rows, **kw), stderr=b"")


def answer_of(nodes: list[NodeReply], redact: tuple[str, ...] = (), **kw: bool) -> FleetAnswer:
    return settle(Collected(tuple(nodes)), redacted=redact, **kw)


def merged(nodes: list[NodeReply], fmt: str, redact: tuple[str, ...] = (), **kw: bool) -> bytes:
    out = io.BytesIO()
    write_merged(answer_of(nodes, redact, **kw), fmt, out)
    return out.getvalue()


def pretty(node_id: str, rows: list[dict[str, str]]) -> NodeReply:
    """Same rows, other whitespace: forces the per-row path."""
    stdout = json.dumps(rows, indent=4, sort_keys=True).encode()
    return node_result(node_id, node_id, exit_code=0, stdout=stdout, stderr=b"")


def test_json_rows_are_tagged_and_merged() -> None:
    nodes = [ok("node-1", [{"path": "/a"}, {"path": "/b"}]), ok("node-2", [{"path": "/c"}])]
    rows = json.loads(merged(nodes, "json"))
    assert rows == [
        {"nodeID": "node-1", "hostname": "node-1", "path": "/a"},
        {"nodeID": "node-1", "hostname": "node-1", "path": "/b"},
        {"nodeID": "node-2", "hostname": "node-2", "path": "/c"},
    ]


def test_json_is_valid_when_empty_or_partial() -> None:
    assert json.loads(merged([], "json")) == []
    assert json.loads(merged([ok("n", [])], "json")) == []
    failed = node_result("n2", "n2", exit_code=1, stdout=b"[\n\n]\n", stderr=b"Error: x")
    timed_out = NodeReply("n3", "n3", NodeStatus.TIMED_OUT, error="deadline")
    nodes = [failed, ok("n1", [{"a": "1"}]), timed_out]
    assert json.loads(merged(nodes, "json")) == [{"nodeID": "n1", "hostname": "n1", "a": "1"}]


def test_garbage_node_is_left_out_and_marked_failed() -> None:
    bad = node_result("bad", "bad", exit_code=0, stdout=b'[\n  {"a":"1"},\n  {"a":', stderr=b"")
    nodes = [ok("good", [{"a": "1"}]), bad]
    rows = json.loads(merged(nodes, "json"))
    assert [r["nodeID"] for r in rows] == ["good"]
    settled = {n.node_id: n for n in answer_of(nodes).nodes}["bad"]
    assert settled.status is NodeStatus.FAILED
    assert "unparseable output" in (settled.error or "")


def test_fast_and_per_row_paths_give_the_same_rows() -> None:
    samples = [
        [{"a": "1", "b": 'quote " and \\ backslash'}],
        [{"hostname": "real", "x": "1"}, {"hostname": "real2", "x": "2"}],
        [{"cmd": "tab\there", "name": "日本語 é"}],
        [{"z": ""}] * 3,
        [{"a": "1"}, {"a": "2", "b": "extra column"}, {"c": "3"}],
        [{"a": "\u00e9\u0001 control"}, {"a": "/\\"}],
        [{'k"ey': "v", "x": '{"json": [1, 2]}'}],
    ]
    for rows in samples:
        for fmt in ("json", "ndjson"):
            fast = merged([ok("n", rows)], fmt)
            slow = merged([pretty("n", rows)], fmt)
            assert fast == slow, (fmt, rows)


def test_query_hostname_column_kept_and_node_id_always_ours() -> None:
    rows = json.loads(merged([ok("n1", [{"hostname": "host.example", "nodeID": "x"}])], "json"))
    assert rows == [{"nodeID": "n1", "hostname": "host.example"}]
    # Only some rows carry hostname: each row still gets the right value.
    mixed = [ok("n1", [{"hostname": "h", "a": "1"}]), ok("n2", [{"a": "2"}])]
    assert [r["hostname"] for r in json.loads(merged(mixed, "json"))] == ["h", "n2"]


def test_ndjson_one_object_per_line() -> None:
    nodes = [ok("n1", [{"a": "1"}, {"a": "2"}]), ok("n2", []), ok("n3", [{"b": "3"}])]
    lines = merged(nodes, "ndjson").decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"nodeID": "n1", "hostname": "n1", "a": "1"},
        {"nodeID": "n1", "hostname": "n1", "a": "2"},
        {"nodeID": "n3", "hostname": "n3", "b": "3"},
    ]


def test_csv_header_is_union_of_columns() -> None:
    nodes = [ok("n1", [{"a": "1", "b": "x,y"}]), ok("n2", [{"c": 'say "hi"\nbye'}])]
    text = merged(nodes, "csv").decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["nodeID", "hostname", "a", "b", "c"]
    assert rows[0] == {"nodeID": "n1", "hostname": "n1", "a": "1", "b": "x,y", "c": ""}
    assert rows[1]["c"] == 'say "hi"\nbye'
    assert rows[1]["a"] == ""


def test_csv_of_nothing_is_empty() -> None:
    assert merged([ok("n", [])], "csv") == b""


def test_table_is_aligned_and_neutralises_control_characters() -> None:
    nodes = [
        ok("node-1", [{"user": "root", "shell": "/bin/bash"}]),
        ok("n2", [{"user": "\x1b[31mx"}]),
    ]
    lines = merged(nodes, "table").decode().splitlines()
    assert lines[0].split() == ["nodeID", "hostname", "shell", "user"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["node-1", "node-1", "/bin/bash", "root"]
    assert "\x1b" not in "\n".join(lines)
    assert lines[2].index("/bin/bash") == lines[0].index("shell")
    assert merged([], "table") == b"(no rows)\n"


def test_redaction_in_every_format() -> None:
    nodes = [ok("n1", [{"path": "/root/.ssh/id", "secret": "hunter2"}])]
    for fmt in ("json", "ndjson", "csv", "table"):
        text = merged(nodes, fmt, redact=("secret",)).decode()
        assert "hunter2" not in text, fmt
        assert "<redacted>" in text, fmt
        assert "/root/.ssh/id" in text, fmt


def test_bad_format_is_usage_error() -> None:
    with pytest.raises(UsageError, match="--format"):
        check_format("xml")
    assert check_format("CSV") == "csv"


def test_atomic_output_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd=str(tmp_path))
    stats = write_answer(answer_of([ok("n1", [{"a": "1"}])]), "json", env=env, output=str(target))
    assert stats.rows == 1
    assert json.loads(target.read_text())[0]["a"] == "1"
    assert env.stdout.getvalue() == ""  # type: ignore[attr-defined]
    assert os.listdir(tmp_path) == ["out.json"]


def test_atomic_output_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("previous\n")

    answer = answer_of([ok("n1", [{"a": "1"}]), ok("n2", [{"a": "2"}])])

    class Interrupting:
        """A file that takes the first node's rows, then Ctrl-C arrives."""

        def __init__(self, handle: object) -> None:
            self.handle = handle
            self.writes = 0

        def write(self, data: bytes, /) -> object:
            self.writes += 1
            if self.writes == 4:
                raise KeyboardInterrupt
            return self.handle.write(data)  # type: ignore[attr-defined]

    with pytest.raises(KeyboardInterrupt), atomic_output(str(target)) as handle:
        write_merged(answer, "json", Interrupting(handle))
    assert target.read_text() == "previous\n"
    assert os.listdir(tmp_path) == ["out.json"]

    fresh = tmp_path / "new.json"
    with pytest.raises(KeyboardInterrupt), atomic_output(str(fresh)) as handle:
        write_merged(answer, "json", Interrupting(handle))
    assert not fresh.exists()
    assert os.listdir(tmp_path) == ["out.json"]


def test_output_path_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(str(tmp_path / "nope" / "out.json"))
    with pytest.raises(UsageError, match="is a directory"):
        check_output_path(str(tmp_path))
    check_output_path(str(tmp_path / "out.json"))


def test_stdout_gets_only_the_result() -> None:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd="/")
    write_answer(answer_of([ok("n1", [{"a": "é"}])]), "json", env=env, output=None)
    assert json.loads(env.stdout.getvalue()) == [  # type: ignore[attr-defined]
        {"nodeID": "n1", "hostname": "n1", "a": "é"}
    ]
    assert env.stderr.getvalue() == ""  # type: ignore[attr-defined]


def test_lone_surrogate_escape_stays_valid_utf8_everywhere() -> None:
    stdout = b'[\n  {"a":"\\ud800 x"}\n]\n'
    node = node_result("n", "n", exit_code=0, stdout=stdout, stderr=b"")
    for fmt in FORMATS:
        data = merged([node], fmt)
        data.decode("utf-8")  # strict: never invalid UTF-8 on stdout
    assert json.loads(merged([node], "json"))[0]["a"] == "\ud800 x"


def test_reader_closing_stdout_is_not_an_error() -> None:
    class ClosedPipe(io.BytesIO):
        def write(self, data: object, /) -> int:
            raise BrokenPipeError

    class Stdout(io.StringIO):
        buffer = ClosedPipe()

    env = Environment(stdout=Stdout(), stderr=io.StringIO(), environ={}, cwd="/")
    stats = write_answer(answer_of([ok("n1", [{"a": "1"}])]), "ndjson", env=env, output=None)
    assert stats.closed_early


def stranger(reply: NodeReply) -> NodeReply:
    return dataclasses.replace(reply, in_inventory=False)


@pytest.mark.parametrize(
    "rows",
    [
        [{"a": "1", "hostname": "h1"}, {"a": "2", "hostname": "h2"}],  # hostname not first
        [{"a": "1", "nodeID": "forged"}],
        [{"a": "1", "unknownNode": "false"}],
        [{"b": 'é \\ " \t', "c": "日本"}],
        [{"z": "x"}, {}],
    ],
)
@pytest.mark.parametrize("unknown", [False, True])
@pytest.mark.parametrize("redact", [(), ("hostname",), ("nodeID", "b")])
def test_fast_and_per_row_paths_agree_on_every_tag_rule(
    rows: list[dict[str, str]], unknown: bool, redact: tuple[str, ...]
) -> None:
    def node(reply: NodeReply) -> NodeReply:
        return stranger(reply) if unknown else reply

    for fmt in ("json", "ndjson", "csv"):
        fast = merged([node(ok("n", rows))], fmt, redact, include_unknown=True)
        slow = merged([node(pretty("n", rows))], fmt, redact, include_unknown=True)
        assert fast == slow, (fmt, rows)
    answer = answer_of([node(ok("n", rows))], redact, include_unknown=True)
    tags = answer.tags(answer.nodes[0])
    expected = [tags.apply(redact_row(dict(r), set(redact))) for r in rows]
    assert [
        json.loads(line)
        for line in merged(
            [node(ok("n", rows))], "ndjson", redact, include_unknown=True
        ).splitlines()
    ] == expected


def test_random_rows_take_the_fast_path_and_keep_every_byte() -> None:
    rng = random.Random(7)
    alphabet = 'abc é日\U0001f41f"\\/\t\n\x01{}[],:'
    framed = 0
    for _ in range(200):
        keys = sorted(rng.sample(["a", "b", "c d", "hostname", "é", 'x"y'], rng.randint(1, 4)))
        rows = [
            {k: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for k in keys}
            for _ in range(rng.randint(1, 5))
        ]
        fast = merged([ok("n", rows)], "json")
        assert fast == merged([pretty("n", rows)], "json"), rows
        assert json.loads(fast) == [tag_row(r, "n", "n") for r in rows]
        assert [list(r) for r in json.loads(fast)] == [list(tag_row(r, "n", "n")) for r in rows]
        framed += answer_of([ok("n", rows)]).nodes[0].data.framed
    assert framed >= 40  # the byte path was exercised, not only the per-row one


def test_the_recorder_reads_rows_and_lines_of_both_layouts() -> None:
    rows = [{"a": "1", "b": "x"}, {"a": "2", "b": "é"}]
    for reply in (ok("n", rows), pretty("n", rows)):
        (node,) = answer_of([reply]).nodes
        assert node.rows() == rows
        assert node.row_lines() == b'{"a":"1","b":"x"}\n{"a":"2","b":"\xc3\xa9"}\n'
        assert node.row_count == 2 and node.columns == ("a", "b")


def test_pieces_reach_a_file_by_writev_and_a_buffer_joined(tmp_path: Path) -> None:
    pieces = [bytes([65 + i % 26]) * (i % 7) for i in range(3000)]
    expected = b"".join(pieces)
    with (tmp_path / "out").open("wb") as handle:
        handle.write(b"head:")  # buffered: must land before the gathered pieces
        write_pieces(handle, pieces)
        handle.write(b":tail")
    assert (tmp_path / "out").read_bytes() == b"head:" + expected + b":tail"
    memory = io.BytesIO()
    write_pieces(memory, pieces)
    assert memory.getvalue() == expected


def test_short_writes_are_resumed_where_they_stopped(tmp_path: Path) -> None:
    pieces = [b"abc", b"", b"defgh", b"i" * 50, b"jk"] * 300
    target = tmp_path / "out"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    calls = []

    def stingy_writev(fd: int, buffers: list[bytes | memoryview]) -> int:
        """A pipe that takes at most 7 bytes at a time (never more than asked)."""
        data = b""
        for buffer in buffers:
            data += bytes(buffer[: 7 - len(data)])
            if len(data) == 7:
                break
        calls.append(len(buffers))
        return os.write(fd, data)

    try:
        writev_all(fd, pieces, writev=stingy_writev)
    finally:
        os.close(fd)
    assert target.read_bytes() == b"".join(pieces)
    assert max(calls) <= 1024
