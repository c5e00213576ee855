"""The engine's promises: strangers never merged silently, answers final before output,
escaped summaries, one behaviour for a closed stdout (scripted orchestrator, fake clock)."""

from __future__ import annotations

import csv
import dataclasses
import http.server
import io
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit

import fleetkit.cli as cli
from fleetkit.ask.answer import NodeStatus
from fleetkit.cli import run_command
from fleetkit.commands.query import run
from fleetkit.foundation.status import ExitStatus
from fleetkit.runtime import Runtime
from tests.unit.test_query_unit import (
    FakeClock,
    ScriptedClient,
    ask,
    done,
    execution,
    make_runtime,
    node_state,
    three_nodes,
)


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


def with_rogue(**labels: str) -> list[Any]:
    """The three inventory nodes plus a stranger holding the token (not in the inventory)."""
    return [*three_nodes(), node_state("rogue-1", labels=labels or None)]


def fleet_plan(rogue_rows: list[dict[str, str]] | None = None) -> dict[str, Any]:
    plan: dict[str, Any] = {n: (0.1, done(n, [{"a": n}])) for n in ("node-1", "node-2", "node-3")}
    plan["rogue-1"] = (0.1, done("rogue-1", rogue_rows or [{"a": "planted"}]))
    return plan


def query(rt: Runtime, client: ScriptedClient, *, fmt: str = "json", **kw: Any) -> int:
    options = {"select": "", "hosts": "", "via": "bacalhau", "output": None, "timeout": None}
    options.update(kw)
    return run_command(
        lambda r: run(
            r, sql="SELECT 1", output_format=fmt, client_factory=lambda _: client, **options
        ),
        rt,
    )


def fresh_runtime(directory: Path, fake: FakeClock) -> Runtime:
    directory.mkdir()
    return make_runtime(directory, fake)


def out(rt: Runtime) -> str:
    return rt.env.stdout.getvalue()  # type: ignore[attr-defined,no-any-return]


def err(rt: Runtime) -> str:
    return rt.env.stderr.getvalue()  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------- strangers


def test_a_stranger_is_excluded_named_and_kept_off_the_job(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(fake, with_rogue(), fleet_plan())
    status = query(rt, client)
    assert status == ExitStatus.SUCCESS  # every inventory node answered
    rows = json.loads(out(rt))
    assert sorted(r["nodeID"] for r in rows) == ["node-1", "node-2", "node-3"]
    assert "planted" not in out(rt)
    line = next(x for x in err(rt).splitlines() if "rogue-1" in x)
    assert "excluded" in line and "not in the inventory" in line
    assert "--include-unknown-nodes" in line
    # the job was pinned to the inventory nodes: the stranger never even saw the SQL
    constraints = client.submitted[0]["Job"]["Constraints"]
    pin = {"Key": "name", "Operator": "in", "Values": ["node-1", "node-2", "node-3"]}
    assert pin in constraints


def test_a_stranger_that_ran_anyway_is_still_excluded(tmp_path: Path, fake: FakeClock) -> None:
    """Nodes without ``name`` labels cannot be pinned: the stranger's execution is ignored."""
    rt = make_runtime(tmp_path, fake)
    nodes = [*three_nodes(), node_state("rogue-1")]
    for node in nodes:
        del node.labels["name"]
    client = ScriptedClient(fake, nodes, fleet_plan())
    answer = ask(rt, client)
    assert not any(c["Key"] == "name" for c in client.submitted[0]["Job"]["Constraints"])
    by_id = {n.node_id: n for n in answer.nodes}
    assert by_id["rogue-1"].status is NodeStatus.EXCLUDED
    assert by_id["rogue-1"].rows() == []
    assert answer.complete and [n.node_id for n in answer.excluded] == ["rogue-1"]


def test_strangers_included_on_request_are_marked(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(fake, with_rogue(), fleet_plan())
    status = query(rt, client, include_unknown_nodes=True)
    assert status == ExitStatus.SUCCESS
    rows = {r["nodeID"]: r for r in json.loads(out(rt))}
    assert rows["rogue-1"] == {
        "nodeID": "rogue-1",
        "hostname": "rogue-1",
        "unknownNode": "true",
        "a": "planted",
    }
    assert "unknownNode" not in rows["node-1"]
    assert "rogue-1: not in the inventory; its rows are included" in err(rt)
    assert not any(c["Key"] == "name" for c in client.submitted[0]["Job"]["Constraints"])

    rt = fresh_runtime(tmp_path / "csv", fake)
    query(
        rt, ScriptedClient(fake, with_rogue(), fleet_plan()), fmt="csv", include_unknown_nodes=True
    )
    table = list(csv.DictReader(io.StringIO(out(rt))))
    assert list(table[0]) == ["nodeID", "hostname", "unknownNode", "a"]
    assert {r["nodeID"]: r["unknownNode"] for r in table}["rogue-1"] == "true"


def test_a_stranger_cannot_pose_as_an_inventory_node(tmp_path: Path, fake: FakeClock) -> None:
    """Its rows claim another node ID: the tag is fleetkit's, and marks the stranger."""
    rt = make_runtime(tmp_path, fake)
    forged = [{"nodeID": "node-1", "hostname": "node-1", "unknownNode": "false", "a": "x"}]
    client = ScriptedClient(fake, with_rogue(), fleet_plan(forged))
    query(rt, client, include_unknown_nodes=True)
    forged_rows = [r for r in json.loads(out(rt)) if r["a"] == "x"]
    assert forged_rows == [
        {"nodeID": "rogue-1", "hostname": "node-1", "unknownNode": "true", "a": "x"}
    ]


# --------------------------------------------------------------------------- the answer


def test_the_answer_is_immutable_and_final(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    plan = {
        "node-1": (0.1, done("node-1", [{"a": "1"}])),
        "node-2": (0.1, execution("node-2", 9, stdout='[\n  {"a":')),  # exit 0, garbage
        "node-3": (0.1, done("node-3", [])),
    }
    answer = ask(rt, ScriptedClient(fake, three_nodes(), plan))
    assert not answer.complete
    assert [(n.node_id, n.status) for n in answer.problems] == [("node-2", NodeStatus.FAILED)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.nodes[1].status = NodeStatus.OK  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.job_id = None  # type: ignore[misc]
    # The recorder's view: status, error, hostname, rows as dicts or compact lines.
    first, _, third = answer.nodes
    assert (first.status, first.row_count, first.rows()) == (NodeStatus.OK, 1, [{"a": "1"}])
    assert first.row_lines() == b'{"a":"1"}\n'
    assert (third.status, third.row_count, third.row_lines()) == (NodeStatus.OK, 0, b"")


# --------------------------------------------------------------------------- terminal safety


def test_node_text_reaches_the_terminal_escaped(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    plan = {
        "node-1": (0.1, done("node-1", [{"a": "\x1b[2J\x1b]0;pwned\x07"}])),
        "node-2": (0.1, execution("node-2", 10, message="boom \x1b[31mred\x1b[0m\nfake line")),
    }
    status = query(rt, ScriptedClient(fake, three_nodes(), plan))
    assert status == ExitStatus.FAILURE
    assert "\x1b" not in err(rt)
    assert "node-2 failed: boom \\x1b[31mred\\x1b[0m\\nfake line" in err(rt)
    assert json.loads(out(rt))[0]["a"] == "\x1b[2J\x1b]0;pwned\x07"  # machine formats exact

    rt = fresh_runtime(tmp_path / "table", fake)
    query(rt, ScriptedClient(fake, three_nodes(), plan), fmt="table")
    assert "\x1b" not in out(rt) and "\\x1b[2J" in out(rt)


# --------------------------------------------------------------------------- closed stdout


class ClosedPipe(io.BytesIO):
    def write(self, data: object, /) -> int:
        raise BrokenPipeError


class PipeStdout(io.StringIO):
    """A stdout whose reader went away (``fleetkit query ... | head`` after head exited)."""

    buffer = ClosedPipe()


def test_a_closed_stdout_is_reported_and_the_summary_still_comes(
    tmp_path: Path, fake: FakeClock
) -> None:
    rt = make_runtime(tmp_path, fake)
    rt.env.stdout = PipeStdout()
    plan = {n: (0.1, done(n, [{"a": n}])) for n in ("node-1", "node-2")}
    status = query(rt, ScriptedClient(fake, three_nodes(), plan))
    # The exit status is still the fleet's (node-3 never answered), not 141 nor a traceback.
    assert status == ExitStatus.FAILURE
    text = err(rt)
    assert "query: the reader closed the output early; the rest was not written" in text
    assert "2 rows from 2/3 nodes" in text and "node-3 missing" in text
    assert "Traceback" not in text and "internal error" not in text


# --------------------------------------------------------------------------- orchestrator down


class ScriptedOrchestrator:
    """A local HTTP server answering every request with one scripted response."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json"):
        handler = self._handler(status, body, content_type)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.requests = 0

    def _handler(self, status: int, body: bytes, content_type: str) -> type:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ScriptedOrchestrator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            401,
            b'{"Status":401,"Message":"Request Unauthorized","Code":"Unauthorized"}',
            "refused the request (401",
        ),
        (
            500,
            b'{"Status":500,"Message":"database is locked","Code":"InternalError"}',
            "database is locked",
        ),
        (200, b"<html>captive portal</html>", "not JSON"),
        (None, b"", "cannot reach orchestrator"),
    ],
)
def test_orchestrator_failures_are_clear(
    tmp_path: Path, status: int | None, body: bytes, expected: str
) -> None:
    """Moved from the lab: only the orchestrator's answers matter here, and they are scripted."""

    def ask(url: str) -> tuple[int, str, str]:
        rt = make_runtime(tmp_path, FakeClock())
        rt.env = dataclasses.replace(
            rt.env, environ={**rt.env.environ, "FLEETKIT_ORCHESTRATOR_URL": url}
        )
        context = Context(config=Config(overrides={cli.RUNTIME_CONFIG_KEY: rt}))
        code = 0
        try:
            cli.namespace.tasks["query"].body(context, sql="SELECT 1")
        except Exit as exc:
            code = exc.code
        return code, out(rt), err(rt)

    if status is None:
        code, stdout, stderr = ask(f"http://127.0.0.1:{_closed_port()}")
    else:
        with ScriptedOrchestrator(status, body) as server:
            code, stdout, stderr = ask(server.url)
    assert code == 1, stderr
    assert stdout == ""
    assert expected in stderr, stderr
    assert "Traceback" not in stdout + stderr
    assert "internal error" not in stderr


def test_an_orchestrator_error_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    body = b'{"Status":500,"Message":"locked \\u001b[2J\\u001b]0;owned\\u0007","Code":"X"}'
    with ScriptedOrchestrator(500, body) as server:
        rt = make_runtime(tmp_path, FakeClock())
        rt.env = dataclasses.replace(
            rt.env, environ={**rt.env.environ, "FLEETKIT_ORCHESTRATOR_URL": server.url}
        )
        status = run_command(
            lambda r: run(
                r,
                sql="SELECT 1",
                select="",
                hosts="",
                via="bacalhau",
                output_format="json",
                output=None,
                timeout=None,
            ),
            rt,
        )
    assert status == ExitStatus.FAILURE
    assert "\x1b" not in err(rt) and "\x07" not in err(rt)
    assert "locked \\x1b[2J\\x1b]0;owned\\x07" in err(rt)
