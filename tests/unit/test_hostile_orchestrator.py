"""A compromised orchestrator cannot hang, flood, redirect, crash or repaint fleetkit.

Each hostile answer is shown twice: at the client (the typed error, its
message) and through ``fleetkit nodes`` as a user runs it (exit code,
escaped output, ending within its deadline). Deadlines here are short so a
regression shows as a failure, not as a hung test run; the elapsed-time
bounds are generous (a loaded 2-core machine) yet far below what an
unbounded client would take (the drips last up to two minutes).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fleetkit.commands.nodes as nodes_cmd
from fleetkit.cli import run_command
from fleetkit.clients.bacalhau import BacalhauClient, OrchestratorError, OrchestratorUnavailable
from fleetkit.clients.http import Limits
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.status import ExitStatus
from fleetkit.runtime import Runtime
from tests.hostile_server import Act, HostileServer, hostile
from tests.unit.test_bacalhau_client import NODE_A, write_setup

__all__ = ["hostile"]

NODES = "/api/v1/orchestrator/nodes"
DEADLINE = 1.5
#: Far above DEADLINE (a loaded machine), far below a drip's two minutes.
SLACK = 15.0
CAP = 1024 * 1024
ESC = "\x1b"
#: Clears the screen, sets the window title, rings the bell.
NASTY = f"{ESC}[2J{ESC}]0;owned\x07\x9b31m"


def client(server: HostileServer, **kwargs: Any) -> BacalhauClient:
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("deadline", DEADLINE)
    kwargs.setdefault("max_bytes", CAP)
    kwargs.setdefault("sleep", lambda _: None)
    return BacalhauClient(server.url, **kwargs)


def timed(action: Callable[[], object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        action()
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def node_named(node_id: str, **info: Any) -> dict[str, Any]:
    node = json.loads(json.dumps(NODE_A))
    node["Info"]["NodeID"] = node_id
    node["Info"].update(info)
    return node


# ---------------------------------------------------------------- at the client


def test_huge_body_stops_at_the_cap(hostile: HostileServer) -> None:
    hostile.on(NODES, Act(body=b'{"Nodes": [', flood=200 * 1024 * 1024))
    error, elapsed = timed(client(hostile).nodes)
    assert isinstance(error, OrchestratorError)
    assert f"GET {NODES} is too large (the answer is larger than the {CAP}-byte cap)" in str(error)
    assert elapsed < SLACK


def test_announced_huge_body_is_refused_before_reading(hostile: HostileServer) -> None:
    hostile.on(NODES, Act(body=b"{}", claim=10 * 1024**3))
    with pytest.raises(OrchestratorError, match=r"announces 10737418240 bytes, over the"):
        client(hostile).nodes()


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "headers"])
def test_a_trickling_server_cannot_outlast_the_deadline(
    hostile: HostileServer, drip_headers: bool
) -> None:
    # One byte every 0.2 s: the 5 s per-read timeout never trips.
    hostile.on(NODES, Act(body=b'{"Nodes": []}', drip=0.2, drip_headers=drip_headers))
    error, elapsed = timed(client(hostile).nodes)
    assert isinstance(error, OrchestratorUnavailable)
    assert str(error) == (
        f"orchestrator at {hostile.url} did not finish answering GET {NODES} within the "
        f"{DEADLINE:g}s deadline"
    )
    assert elapsed < DEADLINE + SLACK


def test_a_trickled_submit_is_not_resent_and_warns(hostile: HostileServer) -> None:
    hostile.on("/api/v1/orchestrator/jobs", Act(body=b'{"JobID": "j"}', drip=0.2))
    error, elapsed = timed(lambda: client(hostile).submit_job({"Job": {"Name": "fk-1"}}))
    assert isinstance(error, OrchestratorUnavailable)
    assert "may have been accepted anyway: look for a job named fk-1" in str(error)
    assert [s.method for s in hostile.seen] == ["PUT"]
    assert elapsed < DEADLINE + SLACK


def test_retry_after_cannot_stretch_the_deadline(hostile: HostileServer) -> None:
    hostile.on(NODES, Act(503, {"Message": "busy"}, headers={"Retry-After": "86400"}))
    slept: list[float] = []
    with pytest.raises(OrchestratorError, match=r"\(503\): busy"):
        client(hostile, sleep=slept.append).nodes()
    assert slept and max(slept) <= DEADLINE


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_an_error_not_an_answer(hostile: HostileServer, status: int) -> None:
    location = f"http://evil.example/{NASTY}" + "x" * 5000
    # The body is a perfectly good answer: it must not be used.
    hostile.on(NODES, Act(status, {"Nodes": [NODE_A]}, headers={"Location": location}))
    with pytest.raises(OrchestratorError) as caught:
        client(hostile).nodes()
    message = str(caught.value)
    assert f"answered GET {NODES} with a redirect ({status}) to http://evil.example/" in message
    assert "\\x1b[2J\\x1b]0;owned\\x07\\x9b31m" in message
    assert ESC not in message and "\x07" not in message and "\x9b" not in message
    assert "x" * 300 not in message  # bounded
    assert "bacalhau.orchestrator_url" in message
    assert [s.path for s in hostile.seen] == [NODES]  # not followed


def test_a_redirected_submit_is_sent_once_and_not_followed(hostile: HostileServer) -> None:
    hostile.on("/api/v1/orchestrator/jobs", Act(307, headers={"Location": f"{hostile.url}/x"}))
    with pytest.raises(OrchestratorError, match=r"redirect \(307\)"):
        client(hostile).submit_job({"Job": {"Name": "fk-1"}})
    assert [(s.method, s.path) for s in hostile.seen] == [("PUT", "/api/v1/orchestrator/jobs")]


def test_a_json_recursion_bomb_is_an_error_not_a_crash(hostile: HostileServer) -> None:
    hostile.on(NODES, Act(body=b"[" * 200_000 + b"]" * 200_000))
    with pytest.raises(OrchestratorError, match=r"invalid response \(nested deeper than 64"):
        client(hostile).nodes()


def test_json_a_little_too_deep_is_refused_too(hostile: HostileServer) -> None:
    deep: Any = "bottom"
    for _ in range(100):
        deep = {"d": deep}
    hostile.on(NODES, Act(body={"Nodes": [deep]}))
    with pytest.raises(OrchestratorError, match=r"nested deeper than 64 levels"):
        client(hostile).nodes()


def test_escape_codes_and_floods_in_error_text_are_escaped_and_cut(
    hostile: HostileServer,
) -> None:
    body = {"Message": NASTY + "m" * 10_000, "Code": NASTY, "Hint": NASTY + "h" * 10_000}
    hostile.on(NODES, Act(404, body))
    with pytest.raises(OrchestratorError) as caught:
        client(hostile).nodes()
    message = str(caught.value)
    assert "\\x1b[2J" in message and ESC not in message and "\x9b" not in message
    assert len(message) < 1000


def test_node_ids_are_kept_exactly_by_the_client(hostile: HostileServer) -> None:
    hostile.on(NODES, Act(body={"Nodes": [node_named(f"evil{NASTY}")]}))
    [node] = client(hostile).nodes()
    assert node.node_id == f"evil{NASTY}"  # exact: escaping is the printer's job


# ---------------------------------------------------------------- through `fleetkit nodes`


def nodes_run(
    tmp_path: Path, server: HostileServer, *, as_json: bool = False
) -> tuple[ExitStatus, str, str, float]:
    tmp_path = tmp_path / ("json" if as_json else "table")
    tmp_path.mkdir()
    write_setup(tmp_path, {"orchestrator_url": server.url})
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, environ={}, cwd=str(tmp_path))
    rt = Runtime(env=env, orchestrator_limits=Limits(timeout=5.0, deadline=DEADLINE, max_bytes=CAP))
    started = time.monotonic()
    status = run_command(lambda r: nodes_cmd.run(r, as_json=as_json, approve=False), rt)
    return status, out.getvalue(), err.getvalue(), time.monotonic() - started


HOSTILE_ACTS = {
    "flood": (Act(body=b'{"Nodes": [', flood=200 * 1024 * 1024), "too large"),
    "drip": (Act(body=b'{"Nodes": []}', drip=0.2), "did not finish answering"),
    "drip-headers": (Act(body=b"{}", drip=0.2, drip_headers=True), "did not finish answering"),
    "redirect": (
        Act(302, {"Nodes": []}, headers={"Location": f"http://evil.example/{NASTY}"}),
        "with a redirect (302) to http://evil.example/\\x1b[2J",
    ),
    "deep-json": (Act(body=b"[" * 100_000), "nested deeper than 64 levels"),
}


@pytest.mark.parametrize("name", list(HOSTILE_ACTS))
def test_nodes_command_ends_with_exit_1_and_a_clear_message(
    tmp_path: Path, hostile: HostileServer, name: str
) -> None:
    act, expected = HOSTILE_ACTS[name]
    hostile.on(NODES, act)
    status, out, err, elapsed = nodes_run(tmp_path, hostile)
    assert status == ExitStatus.FAILURE
    assert err.startswith("fleetkit: error: ") and expected in err, err
    assert out == ""
    assert ESC not in err and "Traceback" not in err
    assert elapsed < DEADLINE + SLACK


def test_nodes_table_escapes_what_nodes_call_themselves(
    tmp_path: Path, hostile: HostileServer
) -> None:
    evil = f"rogue{NASTY}"
    cluster = [
        node_named("node-1"),
        node_named(evil, Labels={f"k{NASTY}": f"v{NASTY}"}, BacalhauVersion={"GitVersion": NASTY}),
    ]
    hostile.on(NODES, Act(body={"Nodes": cluster}))
    status, out, err, _ = nodes_run(tmp_path, hostile)
    assert status == ExitStatus.FAILURE  # a rogue node
    assert ESC not in err and "\x07" not in err and "\x9b" not in err
    escaped = "rogue\\x1b[2J\\x1b]0;owned\\x07\\x9b31m"
    rogue = "ROGUE: in the cluster but not in the inventory (they receive query jobs): "
    assert rogue + escaped in err
    assert any(line.startswith(escaped) and " NO " in line for line in err.splitlines())
    assert "k\\x1b[2J" in err and "v\\x1b[2J" in err

    status, out, err, _ = nodes_run(tmp_path, hostile, as_json=True)
    assert status == ExitStatus.FAILURE
    data = json.loads(out)  # exact values in JSON (control characters \\u-escaped by JSON)
    assert data["rogue"] == [evil]
    row = next(n for n in data["nodes"] if n["name"] == evil)
    assert row["labels"] == {f"k{NASTY}": f"v{NASTY}"} and row["version"] == NASTY
    assert ESC not in out and ESC not in err
    assert err.startswith("nodes: ROGUE: rogue\\x1b[2J")
