"""BacalhauClient against a real local HTTP server scripted per test.

The server answers the v1.9 shapes, 401, 500 with Bacalhau's error JSON,
garbage, or hangs past the client timeout; a closed port stands for a dead
orchestrator. Requests are recorded so retries (and the absence of retries on
writes) are counted, not assumed.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleetkit.clients.bacalhau import (
    TERMINAL,
    BacalhauClient,
    ComputeState,
    OrchestratorError,
    OrchestratorUnavailable,
)
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.status import ConfigError, ExitStatus, exit_status_for
from fleetkit.runtime import Runtime
from tests.hostile_server import serving

# ---------------------------------------------------------------- scripted server


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes -> as is
    hang: float = 0.0  # seconds to wait before answering (released at teardown)
    close: bool = False  # drop the connection without answering


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    url: str = ""
    routes: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        """Answer ``method path`` with ``replies`` in order; the last one repeats."""
        self.routes[(method, path)] = list(replies)

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    def next_reply(self, method: str, path: str) -> Reply:
        replies = self.routes.get((method, path))
        if not replies:
            return Reply(404, {"Status": 404, "Message": "no route", "Code": "NotFound"})
        return replies.pop(0) if len(replies) > 1 else replies[0]


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.seen.append(
                Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
            )
            reply = server.next_reply(self.command, parts.path)
            if reply.hang:
                server.release.wait(reply.hang)
            if reply.close:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(reply.body, dict | list):
                data = json.dumps(reply.body).encode()
            elif isinstance(reply.body, str):
                data = reply.body.encode()
            else:
                data = reply.body or b""
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_DELETE = do_POST = _serve

    return Handler


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    with serving(_handler(scripted), scripted.release) as url:
        scripted.url = url
        yield scripted


class Sleeps(list[float]):
    """Records the backoff delays instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(server: ScriptedServer, **kwargs: Any) -> tuple[BacalhauClient, Sleeps]:
    sleeps = Sleeps()
    kwargs.setdefault("timeout", 2.0)
    return BacalhauClient(server.url, sleep=sleeps, **kwargs), sleeps


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- v1.9 shapes

NODE_A = {
    "Info": {
        "NodeID": "node-a",
        "NodeType": "Compute",
        "Labels": {"os_type": "linux", "name": "node-a", "role": "osquery", "env": "lab"},
        "SupportedProtocols": ["ncl/v1"],
        "ComputeNodeInfo": {
            "ExecutionEngines": ["docker"],
            "Publishers": ["noop", "s3", "local"],
            "StorageSources": ["urlDownload", "inline", "s3", "local", "localDirectory"],
            "MaxCapacity": {"CPU": 3.2},
            "address": "10.0.0.21",
        },
        "BacalhauVersion": {"Major": "1", "Minor": "9", "GitVersion": "v1.9.3"},
        "SomethingNew": {"x": 1},
    },
    "Membership": "APPROVED",
    "Connection": "CONNECTED",
    "ConnectionState": {
        "Status": "CONNECTED",
        "LastHeartbeat": "2026-11-27T06:00:00Z",
        "ConnectedSince": "2026-11-27T05:00:00Z",
        "DisconnectedSince": "0001-01-01T00:00:00Z",
        "LastError": "",
    },
}
# A v1.5-style node: only the deprecated Connection, no docker, pending approval.
NODE_B = {
    "Info": {
        "NodeID": "node-b",
        "NodeType": "Compute",
        "Labels": {"role": "osquery"},
        "ComputeNodeInfo": {"ExecutionEngines": ["wasm"], "StorageSources": ["inline"]},
    },
    "Membership": "PENDING",
    "Connection": "DISCONNECTED",
}
ORCH = {"Info": {"NodeID": "orch", "NodeType": "Requester"}, "Membership": "APPROVED"}


def execution(node: str, state: int, **run: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "ID": f"e-{node}",
        "NodeID": node,
        "JobID": "j-1",
        "JobVersion": 1,
        "DesiredState": {"StateType": 2, "Message": "execution completed"},
        "ComputeState": {"StateType": state, "Message": run.pop("message", ""), "Details": {}},
        "CreateTime": 1700000000000000000,
    }
    if run:
        item["RunOutput"] = {
            "Stdout": run.get("stdout", ""),
            "StdoutTruncated": run.get("truncated", False),
            "stderr": run.get("stderr", ""),
            "StderrTruncated": False,
            "ExitCode": run.get("exit_code", 0),
            "ErrorMsg": run.get("error", ""),
        }
    if "published" in run:
        item["PublishedResult"] = run["published"]
    return item


# ---------------------------------------------------------------- happy paths


def test_agent_alive_and_version(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/agent/alive", Reply(body={"Status": "OK"}))
    server.on(
        "GET",
        "/api/v1/agent/version",
        Reply(body={"Major": "1", "Minor": "9", "GitVersion": "v1.9.3", "GOOS": "linux"}),
    )
    client, _ = client_for(server)
    assert client.alive() is True
    version = client.version()
    assert (version.major, version.minor, version.git_version) == (1, 9, "v1.9.3")


def test_nodes_are_parsed_and_filters_sent(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/orchestrator/nodes", Reply(body={"Nodes": [NODE_A, NODE_B, ORCH]}))
    client, _ = client_for(server)
    nodes = client.nodes(labels="role in (osquery,web)", approval="approved", status="connected")
    query = server.requests_to("GET", "/api/v1/orchestrator/nodes")[0].query
    assert query == {
        "labels": ["role in (osquery,web)"],
        "filter-approval": ["APPROVED"],
        "filter-status": ["CONNECTED"],
    }
    a, b, orch = nodes
    assert a.node_id == "node-a" and a.labels["role"] == "osquery"
    assert a.schedulable and a.version == "v1.9.3"
    assert a.last_heartbeat == "2026-11-27T06:00:00Z"
    assert a.advertises(engine="docker", storage="local", publisher="s3") == []
    assert "SomethingNew" in a.raw["Info"]
    # The deprecated Connection field is the fallback for older servers.
    assert b.connection == "DISCONNECTED" and not b.is_connected
    assert not b.is_approved and not b.schedulable
    assert b.advertises(publisher="s3") == ["engine docker", "storage local", "publisher s3"]
    assert not orch.is_compute and not orch.schedulable


def test_node_by_id_quotes_the_path(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/orchestrator/nodes/node-a", Reply(body={"Node": NODE_A}))
    client, _ = client_for(server)
    assert client.node("node-a").node_id == "node-a"
    server.on(
        "GET",
        "/api/v1/orchestrator/nodes/a%2F..%2Fjobs",
        Reply(404, {"Status": 404, "Message": "node not found", "Code": "NotFound"}),
    )
    with pytest.raises(OrchestratorError, match="node not found"):
        client.node("a/../jobs")
    assert server.seen[-1].path == "/api/v1/orchestrator/nodes/a%2F..%2Fjobs"


def test_approve_and_reject_send_the_action(server: ScriptedServer) -> None:
    server.on("PUT", "/api/v1/orchestrator/nodes/node-b", Reply(body={"Success": True}))
    client, _ = client_for(server)
    client.approve_node("node-b", "onboarded by fleetkit")
    client.reject_node("node-b")
    bodies = [
        json.loads(s.body) for s in server.requests_to("PUT", "/api/v1/orchestrator/nodes/node-b")
    ]
    assert bodies == [
        {"NodeID": "node-b", "Action": "approve", "Message": "onboarded by fleetkit"},
        {"NodeID": "node-b", "Action": "reject", "Message": ""},
    ]
    server.on(
        "PUT",
        "/api/v1/orchestrator/nodes/node-b",
        Reply(body={"Success": False, "Error": "node already approved"}),
    )
    with pytest.raises(OrchestratorError, match="did not approve node node-b: node already"):
        client.approve_node("node-b")


def test_submit_job_sends_the_body_once_and_reads_the_answer(server: ScriptedServer) -> None:
    server.on(
        "PUT",
        "/api/v1/orchestrator/jobs",
        Reply(body={"JobID": "j-42", "EvaluationID": "ev-1", "Warnings": None}),
    )
    client, _ = client_for(server)
    job = {"Job": {"Name": "fleetkit-x", "Type": "ops", "Tasks": []}, "Force": False}
    submitted = client.submit_job(job)
    assert (submitted.job_id, submitted.evaluation_id, submitted.warnings) == ("j-42", "ev-1", [])
    [request] = server.requests_to("PUT", "/api/v1/orchestrator/jobs")
    assert json.loads(request.body) == job
    assert request.headers["content-type"] == "application/json"


def test_job_state_strings_and_terminal(server: ScriptedServer) -> None:
    server.on(
        "GET",
        "/api/v1/orchestrator/jobs/j-1",
        Reply(body={"Job": {"ID": "j-1", "State": {"StateType": "Running"}}}),
        Reply(body={"Job": {"ID": "j-1", "State": {"StateType": "Failed", "Message": "x"}}}),
    )
    client, _ = client_for(server)
    running = client.job("j-1")
    assert running.state == "Running" and not running.is_terminal
    failed = client.job("j-1")
    assert failed.state == "Failed" and failed.is_terminal and failed.message == "x"


def test_executions_parse_states_output_and_follow_pages(server: ScriptedServer) -> None:
    published = {
        "Type": "s3",
        "Params": {"Bucket": "b", "Key": "fleetkit/j-1/node-c/e-node-c/", "Encoding": "plain"},
    }
    server.on(
        "GET",
        "/api/v1/orchestrator/jobs/j-1/executions",
        Reply(
            body={
                "Items": [
                    execution("node-a", 9, stdout='[\n  {"a":"1"}\n]\n'),
                    execution("node-b", 9, stdout="", stderr="Error: no such table", exit_code=1),
                ],
                "NextToken": "page2",
            }
        ),
        Reply(
            body={
                "Items": [
                    execution(
                        "node-c", 9, stdout="[" + "x" * 2047, truncated=True, published=published
                    ),
                    execution("node-d", 6),
                    execution("node-e", 8, message="volume /var/osquery is not allowlisted"),
                ],
                "NextToken": "",
            }
        ),
    )
    client, _ = client_for(server)
    a, b, c, d, e = client.executions("j-1")
    calls = server.requests_to("GET", "/api/v1/orchestrator/jobs/j-1/executions")
    assert [call.query.get("next_token") for call in calls] == [None, ["page2"]]
    assert a.completed and a.exit_code == 0 and a.stdout == '[\n  {"a":"1"}\n]\n'
    assert b.completed and b.exit_code == 1 and b.stderr == "Error: no such table"
    assert c.stdout_truncated and c.published_result == published
    assert d.compute_state == ComputeState.RUNNING and not d.is_terminal
    assert d.stdout is None and d.exit_code is None and d.published_result is None
    assert e.failed and e.message == "volume /var/osquery is not allowlisted"
    assert {ComputeState.COMPLETED, ComputeState.FAILED} <= TERMINAL


def test_stop_job_is_a_delete_with_a_json_reason(server: ScriptedServer) -> None:
    server.on("DELETE", "/api/v1/orchestrator/jobs/j-1", Reply(body={"EvaluationID": "ev-2"}))
    client, _ = client_for(server)
    client.stop_job("j-1", "interrupted by the user")
    [request] = server.requests_to("DELETE", "/api/v1/orchestrator/jobs/j-1")
    assert json.loads(request.body) == {"reason": "interrupted by the user"}


def test_stopping_a_finished_job_is_not_an_error(server: ScriptedServer) -> None:
    finished = {
        "Status": 400,
        "Message": "job j-1 is already in a terminal state: Completed",
        "Code": "BadRequest",
    }
    server.on("DELETE", "/api/v1/orchestrator/jobs/j-1", Reply(400, finished))
    client, _ = client_for(server)
    client.stop_job("j-1", "timeout")
    server.on(
        "DELETE",
        "/api/v1/orchestrator/jobs/j-2",
        Reply(404, {"Status": 404, "Message": "job not found: j-2", "Code": "NotFound"}),
    )
    with pytest.raises(OrchestratorError, match="job not found: j-2"):
        client.stop_job("j-2", "timeout")


# ---------------------------------------------------------------- auth


def test_api_key_is_sent_as_bearer(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/agent/version", Reply(body={"Major": "1", "Minor": "9"}))
    client, _ = client_for(server, api_key="k" * 24)
    client.version()
    assert server.seen[0].headers["authorization"] == "Bearer " + "k" * 24


def test_username_and_password_are_sent_as_basic(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/agent/version", Reply(body={"Major": "1", "Minor": "9"}))
    client, _ = client_for(server, username="admin", password="s3cret-pass")
    client.version()
    expected = base64.b64encode(b"admin:s3cret-pass").decode()
    assert server.seen[0].headers["authorization"] == f"Basic {expected}"


def test_401_names_the_orchestrator_and_the_setting_without_the_key(
    server: ScriptedServer,
) -> None:
    server.on(
        "GET",
        "/api/v1/orchestrator/nodes",
        Reply(
            401,
            {
                "Status": 401,
                "Message": "Request Unauthorized",
                "Code": "Unauthorized",
                "Details": {"reason": "invalid API key"},
            },
        ),
    )
    client, sleeps = client_for(server, api_key="wrong-key-wrong-key-wrong")
    with pytest.raises(OrchestratorError) as caught:
        client.nodes()
    message = str(caught.value)
    assert f"orchestrator at {server.url} refused the request (401 Request Unauthorized)" in message
    assert "bacalhau.api_key" in message
    assert "wrong-key" not in message
    assert caught.value.status == 401
    assert exit_status_for(caught.value) == ExitStatus.FAILURE
    # A refusal is an answer: asking again would not change it.
    assert len(server.seen) == 1 and sleeps == []


def test_403_says_the_capability_is_missing(server: ScriptedServer) -> None:
    server.on(
        "PUT",
        "/api/v1/orchestrator/jobs",
        Reply(403, {"Status": 403, "Message": "Forbidden", "Code": "Forbidden"}),
    )
    client, _ = client_for(server, api_key="r" * 24)
    with pytest.raises(OrchestratorError, match=r"\(403 Forbidden\).*lacks the capability"):
        client.submit_job({"Job": {"Name": "n"}})


# ---------------------------------------------------------------- failures and retries


BACALHAU_500 = {
    "Status": 500,
    "Message": "failed to query job store",
    "RequestID": "r-1",
    "Code": "InternalError",
    "Component": "APIServer",
    "Hint": "check the orchestrator's disk space",
}


def test_500_on_a_read_is_retried_with_backoff_then_reported(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/orchestrator/jobs/j-1", Reply(500, BACALHAU_500))
    client, sleeps = client_for(server, retries=3, backoff=0.2)
    with pytest.raises(OrchestratorError) as caught:
        client.job("j-1")
    assert len(server.requests_to("GET", "/api/v1/orchestrator/jobs/j-1")) == 4
    assert sleeps == pytest.approx([0.2, 0.4, 0.8])
    message = str(caught.value)
    assert "GET /api/v1/orchestrator/jobs/j-1 failed (500 InternalError)" in message
    assert "failed to query job store" in message
    assert "(hint: check the orchestrator's disk space)" in message
    assert (caught.value.status, caught.value.code) == (500, "InternalError")
    assert not isinstance(caught.value, OrchestratorUnavailable)


@pytest.mark.parametrize("status", [429, 502, 503])
def test_a_read_recovers_after_a_transient_error(server: ScriptedServer, status: int) -> None:
    server.on(
        "GET",
        "/api/v1/agent/version",
        Reply(status, {"Status": status, "Message": "busy", "Code": "ServiceUnavailable"}),
        Reply(body={"Major": "1", "Minor": "9", "GitVersion": "v1.9.3"}),
    )
    client, sleeps = client_for(server)
    assert client.version().git_version == "v1.9.3"
    assert len(server.seen) == 2 and len(sleeps) == 1


def test_404_is_not_retried_and_carries_the_message(server: ScriptedServer) -> None:
    server.on(
        "GET",
        "/api/v1/orchestrator/jobs/j-missing",
        Reply(404, {"Status": 404, "Message": "job not found: j-missing", "Code": "NotFound"}),
    )
    client, _ = client_for(server)
    with pytest.raises(OrchestratorError, match=r"\(404 NotFound\): job not found: j-missing"):
        client.job("j-missing")
    assert len(server.seen) == 1


def test_submit_is_never_retried_on_500(server: ScriptedServer) -> None:
    server.on(
        "PUT",
        "/api/v1/orchestrator/jobs",
        Reply(500, {"Status": 500, "Message": "no changes detected for new job spec", "Code": ""}),
    )
    client, sleeps = client_for(server, retries=5)
    with pytest.raises(OrchestratorError, match="no changes detected"):
        client.submit_job({"Job": {"Name": "fleetkit-1"}})
    assert len(server.requests_to("PUT", "/api/v1/orchestrator/jobs")) == 1 and sleeps == []


def test_garbage_body_is_reported_with_its_start(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/agent/version", Reply(body="<html><body>" + "proxy error " * 20))
    client, _ = client_for(server)
    with pytest.raises(OrchestratorError) as caught:
        client.version()
    message = str(caught.value)
    assert message.startswith(
        "invalid response (not JSON) from GET /api/v1/agent/version at " + server.url
    )
    assert message.endswith(("<html><body>" + "proxy error " * 20)[:80].strip())


def test_json_that_is_not_an_object_is_invalid(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/orchestrator/jobs/j-1", Reply(body=["not", "a", "job"]))
    client, _ = client_for(server)
    with pytest.raises(OrchestratorError, match=r"invalid response \(not a JSON object\) from GET"):
        client.job("j-1")


def test_non_json_error_page_is_reported(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/agent/version", Reply(502, "Bad Gateway from nginx"))
    client, _ = client_for(server, retries=1)
    with pytest.raises(OrchestratorError, match="failed \\(502 Bad Gateway\\): Bad Gateway from"):
        client.version()
    assert len(server.seen) == 2


def test_hang_is_a_timeout_naming_the_url_and_the_limit(server: ScriptedServer) -> None:
    server.on("GET", "/api/v1/orchestrator/jobs/j-1", Reply(hang=30))
    client, sleeps = client_for(server, timeout=0.3)
    with pytest.raises(OrchestratorUnavailable) as caught:
        client.job("j-1")
    assert str(caught.value) == (
        f"orchestrator at {server.url} did not answer GET /api/v1/orchestrator/jobs/j-1 within 0.3s"
    )
    assert exit_status_for(caught.value) == ExitStatus.FAILURE
    # A hung server is not asked again: the user would wait retries x timeout.
    assert len(server.seen) == 1 and sleeps == []


def test_submit_that_times_out_says_it_may_have_been_accepted(server: ScriptedServer) -> None:
    server.on("PUT", "/api/v1/orchestrator/jobs", Reply(hang=30))
    client, sleeps = client_for(server, timeout=0.3, retries=3)
    with pytest.raises(OrchestratorUnavailable) as caught:
        client.submit_job({"Job": {"Name": "fleetkit-abc"}})
    message = str(caught.value)
    assert "did not answer PUT /api/v1/orchestrator/jobs within 0.3s" in message
    assert "may have been accepted anyway: look for a job named fleetkit-abc" in message
    assert len(server.requests_to("PUT", "/api/v1/orchestrator/jobs")) == 1 and sleeps == []


def test_dropped_connection_on_a_read_is_retried(server: ScriptedServer) -> None:
    server.on(
        "GET",
        "/api/v1/agent/version",
        Reply(close=True),
        Reply(body={"Major": "1", "Minor": "9", "GitVersion": "v1.9.3"}),
    )
    client, sleeps = client_for(server)
    assert client.version().minor == 9
    assert len(server.seen) == 2 and len(sleeps) == 1


def test_dropped_connection_on_submit_is_not_retried(server: ScriptedServer) -> None:
    server.on("PUT", "/api/v1/orchestrator/jobs", Reply(close=True))
    client, _ = client_for(server)
    with pytest.raises(OrchestratorUnavailable, match="may have been accepted anyway"):
        client.submit_job({"Job": {"Name": "fleetkit-abc"}})
    assert len(server.seen) == 1


def test_closed_port_is_unavailable_after_bounded_retries() -> None:
    url = closed_port_url()
    sleeps = Sleeps()
    client = BacalhauClient(url, retries=2, backoff=0.1, sleep=sleeps)
    with pytest.raises(OrchestratorUnavailable) as caught:
        client.nodes()
    assert str(caught.value) == (
        f"cannot reach orchestrator at {url} (GET /api/v1/orchestrator/nodes): "
        "connection refused after 3 attempts"
    )
    assert sleeps == pytest.approx([0.1, 0.2])
    assert client.alive() is False


def test_credentials_in_the_url_never_appear_in_messages() -> None:
    url = closed_port_url()
    client = BacalhauClient(url.replace("http://", "http://ops:url-password@"), retries=0)
    with pytest.raises(OrchestratorUnavailable) as caught:
        client.version()
    assert f"cannot reach orchestrator at {url} " in str(caught.value)
    assert "url-password" not in str(caught.value)


def test_refused_submit_is_tried_once_and_says_nothing_was_sent() -> None:
    sleeps = Sleeps()
    client = BacalhauClient(closed_port_url(), retries=3, sleep=sleeps)
    with pytest.raises(OrchestratorUnavailable) as caught:
        client.submit_job({"Job": {"Name": "n"}})
    assert "connection refused" in str(caught.value)
    assert "may have been accepted" not in str(caught.value)
    assert sleeps == []


# ---------------------------------------------------------------- wiring: rt.orchestrator

PACKAGE = {"source": "pkg.deb", "sha256": "0" * 64}


def write_setup(root: Path, bacalhau: dict[str, Any]) -> None:
    (root / "inventory").mkdir()
    (root / "inventory" / "fleet.yaml").write_text(
        json.dumps(
            {
                "control_plane": {
                    "hosts": {"orch-1": {"address": "127.9.9.1", "bacalhau_api_port": 20123}}
                },
                "compute": {"hosts": {"node-1": {"address": "127.9.9.2"}}},
            }
        )
    )
    (root / "inventory" / "known_hosts").write_text("")
    settings = {
        "osquery": {"package": PACKAGE},
        "bacalhau": {"package": PACKAGE, "node_token": {"env": "TOKEN"}, **bacalhau},
    }
    (root / "fleetkit.yaml").write_text(json.dumps(settings))


def runtime_for(root: Path, environ: dict[str, str]) -> Runtime:
    return Runtime(env=Environment(environ=environ, cwd=str(root)))


def test_orchestrator_uses_the_control_plane_and_its_api_port(tmp_path: Path) -> None:
    write_setup(tmp_path, {})
    client = runtime_for(tmp_path, {}).orchestrator
    assert client.base_url == "http://127.9.9.1:20123"


def test_orchestrator_sends_the_api_key_secret(tmp_path: Path, server: ScriptedServer) -> None:
    write_setup(tmp_path, {"orchestrator_url": server.url, "api_key": {"env": "FK_API_KEY"}})
    server.on("GET", "/api/v1/agent/version", Reply(body={"Major": "1", "Minor": "9"}))
    key = "from-settings-key-0123456789"
    client = runtime_for(tmp_path, {"FK_API_KEY": key}).orchestrator
    client.version()
    assert server.seen[0].headers["authorization"] == f"Bearer {key}"


def test_username_without_password_is_bad_input(tmp_path: Path) -> None:
    write_setup(tmp_path, {"api_username": "ops"})
    with pytest.raises(ConfigError, match="api_username is set but no password") as caught:
        _ = runtime_for(tmp_path, {}).orchestrator
    assert exit_status_for(caught.value) == ExitStatus.BAD_INPUT


def test_orchestrator_honours_orchestrator_url_and_bacalhau_env(
    tmp_path: Path, server: ScriptedServer
) -> None:
    write_setup(tmp_path, {})
    server.on("GET", "/api/v1/agent/version", Reply(body={"Major": "1", "Minor": "9"}))
    environ = {
        "FLEETKIT_ORCHESTRATOR_URL": server.url,
        "BACALHAU_API_USERNAME": "ops",
        "BACALHAU_API_PASSWORD": "env-password-123",
    }
    client = runtime_for(tmp_path, environ).orchestrator
    client.version()
    expected = base64.b64encode(b"ops:env-password-123").decode()
    assert server.seen[0].headers["authorization"] == f"Basic {expected}"


def test_settings_naming_the_orchestrator_need_no_inventory(
    tmp_path: Path, server: ScriptedServer
) -> None:
    write_setup(tmp_path, {"orchestrator_url": server.url})
    (tmp_path / "inventory" / "fleet.yaml").unlink()
    (tmp_path / "inventory" / "known_hosts").unlink()
    (tmp_path / "inventory").rmdir()
    server.on("GET", "/api/v1/agent/version", Reply(body={"Major": "1", "Minor": "9"}))
    assert runtime_for(tmp_path, {}).orchestrator.version().minor == 9
