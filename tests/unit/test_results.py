"""Reading osqueryi's output: banner, empty, errors, truncation, unicode, garbage."""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile

import pytest

from fleetkit.ask.answer import NodeResult, NodeStatus
from fleetkit.ask.osqueryi import OutputError, parse_osqueryi_json
from fleetkit.ask.rows import tag_row
from fleetkit.ask.transport import Output, osqueryi_reply
from fleetkit.ask.validate import settle_node

BANNER = b"Connected to extension socket /var/osquery/osquery.em for debugging\n"


def osqueryi(rows: list[dict[str, str]], *, banner: bool = True) -> bytes:
    """What osqueryi --json prints (reference/osquery.md §3): sorted keys, one row a line."""
    lines = [
        "  " + json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        for r in rows
    ]
    body = "[\n" + ",\n".join(lines) + "\n]\n"
    return (BANNER if banner else b"") + body.encode()


def node_result(
    node_id: str,
    hostname: str,
    *,
    exit_code: int | None,
    stdout: Output | None,
    stderr: bytes | str | None,
) -> NodeResult:
    """One finished osqueryi run, validated as the engine does."""
    reply = osqueryi_reply(node_id, hostname, exit_code=exit_code, stdout=stdout, stderr=stderr)
    return settle_node(reply)


def test_banner_is_skipped() -> None:
    out = osqueryi([{"hostname": "node-1", "uid": "0"}])
    assert parse_osqueryi_json(out) == [{"hostname": "node-1", "uid": "0"}]


def test_banner_with_bracket_in_socket_path_is_still_skipped() -> None:
    out = b'Connected to extension socket /tmp/[x]/o.em for debugging\n[\n  {"a":"1"}\n]\n'
    assert parse_osqueryi_json(out) == [{"a": "1"}]


def test_empty_result_is_an_empty_list() -> None:
    assert parse_osqueryi_json(BANNER + b"[\n\n]\n") == []
    assert parse_osqueryi_json(b"[\n\n]\n") == []


def test_no_array_at_all_is_an_error() -> None:
    with pytest.raises(OutputError, match="no JSON array"):
        parse_osqueryi_json(BANNER)


def test_truncated_output_is_an_error() -> None:
    out = osqueryi([{"a": "x" * 100}] * 50)[:2048]
    with pytest.raises(OutputError, match="invalid JSON"):
        parse_osqueryi_json(out)


def test_garbage_is_an_error_quoting_the_output() -> None:
    with pytest.raises(OutputError, match="Segmentation"):
        parse_osqueryi_json(b"[Segmentation fault (core dumped)\n")


def test_rows_must_be_objects() -> None:
    with pytest.raises(OutputError, match="row 1 is list"):
        parse_osqueryi_json(b'[\n  {"a":"1"},\n  ["b"]\n]\n')


def test_invalid_utf8_is_an_error() -> None:
    with pytest.raises(OutputError, match="not UTF-8"):
        parse_osqueryi_json(b'[\n  {"a":"\xff"}\n]\n')


def test_unicode_and_escapes_survive() -> None:
    rows = [{"name": "Zoë 日本 \U0001f41f", "cmd": 'sh -c "echo $(id)"\n\t`x`'}]
    assert parse_osqueryi_json(osqueryi(rows)) == rows


def test_very_wide_rows() -> None:
    row = {f"c{i:04d}": "v" * 200 for i in range(1000)}
    assert parse_osqueryi_json(osqueryi([row, row])) == [row, row]


def test_values_stay_strings_and_null_becomes_empty() -> None:
    assert parse_osqueryi_json(b'[{"a":"007","b":null,"c":3}]') == [{"a": "007", "b": "", "c": "3"}]


def test_exit_code_is_checked_before_trusting_empty_array() -> None:
    failed = node_result(
        "node-1",
        "node-1",
        exit_code=1,
        stdout=b"[\n\n]\n",
        stderr=b"Error: no such table: nosuch\n",
    )
    assert failed.status is NodeStatus.FAILED
    assert failed.error == "exit 1: Error: no such table: nosuch"
    assert failed.rows() == []


def test_connect_failure_shows_osquery_message() -> None:
    failed = node_result(
        "n", "n", exit_code=1, stdout=BANNER, stderr=b"Error: Extension call failed: refused\n"
    )
    assert "Extension call failed" in (failed.error or "")


def test_ok_exit_with_garbage_is_failed_before_anyone_reads_it() -> None:
    reply = osqueryi_reply("n", "n", exit_code=0, stdout=b"oops", stderr=b"")
    assert reply.status is NodeStatus.OK  # osqueryi said 0 ...
    node = settle_node(reply)
    assert node.rows() == []  # ... but the validated answer never holds its garbage
    assert node.status is NodeStatus.FAILED
    assert (node.error or "").startswith("unparseable output")


def test_a_node_result_is_immutable() -> None:
    node = node_result("n", "n", exit_code=0, stdout=osqueryi([{"a": "1"}]), stderr=b"")
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.status = NodeStatus.FAILED  # type: ignore[misc]


def test_describe_names_node_status_and_error() -> None:
    node = NodeResult("node-2", "node-2", NodeStatus.TIMED_OUT, error="still running")
    assert node.describe() == "node-2 timed out: still running"


def test_tag_row_rule() -> None:
    assert tag_row({"a": "1"}, "n1", "h1") == {"nodeID": "n1", "hostname": "h1", "a": "1"}
    # The query's own hostname wins (the host's view of itself); nodeID is always ours.
    tagged = tag_row({"hostname": "real.example", "nodeID": "fake"}, "n1", "h1")
    assert tagged == {"nodeID": "n1", "hostname": "real.example"}
    assert next(iter(tagged)) == "nodeID"


def spooled(data: bytes) -> io.BufferedRandom:
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the reply
    handle.write(data)
    handle.seek(0)
    return handle


def test_spooled_output_gives_the_same_rows_and_lines() -> None:
    rows = [{"a": str(i), "b": 'é"\n'} for i in range(100)]
    out = osqueryi(rows)
    from_file = node_result("n", "n", exit_code=0, stdout=spooled(out), stderr=b"")
    in_memory = node_result("n", "n", exit_code=0, stdout=out, stderr=b"")
    assert from_file.rows() == in_memory.rows() == rows
    assert from_file.row_lines() == in_memory.row_lines()
    assert [json.loads(line) for line in in_memory.row_lines().splitlines()] == rows
    assert from_file.row_count == 100
    empty = node_result("n", "n", exit_code=0, stdout=spooled(BANNER + b"[\n\n]\n"), stderr=b"")
    assert (empty.status, empty.rows()) == (NodeStatus.OK, [])


def test_truncated_output_fails_the_node() -> None:
    out = osqueryi([{"a": str(i)} for i in range(10)])
    cut = out[: out.rindex(b"]")]
    node = node_result("n", "n", exit_code=0, stdout=spooled(cut), stderr=b"")
    assert node.status is NodeStatus.FAILED
    assert "invalid JSON" in (node.error or "")
    assert node.rows() == []


def test_other_framing_is_read_too() -> None:
    node = node_result("n", "n", exit_code=0, stdout=b'[{"a":"1"},{"a":"2"}]', stderr=b"")
    assert node.rows() == [{"a": "1"}, {"a": "2"}]
    assert node.row_lines() == b'{"a":"1"}\n{"a":"2"}\n'


def test_a_spooled_output_that_is_not_ascii_is_checked_all_the_same() -> None:
    """ASCII outputs in files are checked in place (mapped); others take the general path."""
    for rows in ([{"a": "plain"}], [{"a": "Zoë 日本"}]):
        node = node_result("n", "n", exit_code=0, stdout=spooled(osqueryi(rows)), stderr=b"")
        assert (node.status, node.rows(), node.data.framed) == (NodeStatus.OK, rows, True)
    bad = spooled(osqueryi([{"a": "x"}]).replace(b'"x"', b'"\xff"'))
    node = node_result("n", "n", exit_code=0, stdout=bad, stderr=b"")
    assert node.status is NodeStatus.FAILED and "UTF-8" in (node.error or "")
    raw_control = spooled(osqueryi([{"a": "x"}]).replace(b'"x"', b'"\x01"'))
    node = node_result("n", "n", exit_code=0, stdout=raw_control, stderr=b"")
    assert node.status is NodeStatus.FAILED
