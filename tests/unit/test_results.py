"""Reading osqueryi's output: banner, empty, errors, truncation, unicode, garbage."""

from __future__ import annotations

import io
import json

import pytest

from fleetkit.ask.results import (
    NodeResult,
    NodeStatus,
    OutputError,
    iter_osqueryi_rows,
    node_result,
    parse_osqueryi_json,
    tag_row,
)

BANNER = b"Connected to extension socket /var/osquery/osquery.em for debugging\n"


def osqueryi(rows: list[dict[str, str]], *, banner: bool = True) -> bytes:
    """What osqueryi --json prints (reference/osquery.md §3): sorted keys, one row a line."""
    lines = [
        "  " + json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        for r in rows
    ]
    body = "[\n" + ",\n".join(lines) + "\n]\n"
    return (BANNER if banner else b"") + body.encode()


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


def test_ok_node_with_garbage_becomes_failed_when_read() -> None:
    node = node_result("n", "n", exit_code=0, stdout=b"oops", stderr=b"")
    assert node.ok
    assert node.checked_rows() == []
    assert node.status is NodeStatus.FAILED
    assert (node.error or "").startswith("unparseable output")


def test_describe_names_node_status_and_error() -> None:
    node = NodeResult("node-2", "node-2", NodeStatus.TIMED_OUT, error="still running")
    assert node.describe() == "node-2 timed out: still running"


def test_tag_row_rule() -> None:
    assert tag_row({"a": "1"}, "n1", "h1") == {"nodeID": "n1", "hostname": "h1", "a": "1"}
    # The query's own hostname wins (the host's view of itself); nodeID is always ours.
    tagged = tag_row({"hostname": "real.example", "nodeID": "fake"}, "n1", "h1")
    assert tagged == {"nodeID": "n1", "hostname": "real.example"}
    assert next(iter(tagged)) == "nodeID"


def test_streaming_reader_matches_whole_parse() -> None:
    rows = [{"a": str(i), "b": 'é"\n'} for i in range(100)]
    out = osqueryi(rows)
    assert list(iter_osqueryi_rows(io.BytesIO(out))) == rows
    assert list(iter_osqueryi_rows(out)) == rows
    assert list(iter_osqueryi_rows(io.BytesIO(BANNER + b"[\n\n]\n"))) == []


def test_streaming_reader_detects_truncation() -> None:
    out = osqueryi([{"a": str(i)} for i in range(10)])
    cut = out[: out.rindex(b"]")]
    with pytest.raises(OutputError, match="truncated"):
        list(iter_osqueryi_rows(io.BytesIO(cut)))


def test_streaming_reader_handles_other_framing() -> None:
    assert list(iter_osqueryi_rows(io.BytesIO(b'[{"a":"1"},{"a":"2"}]'))) == [
        {"a": "1"},
        {"a": "2"},
    ]
