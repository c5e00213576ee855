"""The query command's logic against a scripted orchestrator (no lab, fake clock)."""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from fleetkit.ask.answer import FleetAnswer, NodeResult, NodeStatus
from fleetkit.ask.engine import Engine
from fleetkit.ask.expected import Roster
from fleetkit.ask.osqueryi import argv_safe_sql, osqueryi_command
from fleetkit.ask.scope import parse_scope
from fleetkit.ask.transport import Collected, NodeReply
from fleetkit.ask.validate import settle
from fleetkit.ask.via_bacalhau import BacalhauTransport, collect, expected_nodes
from fleetkit.ask.via_ssh import ask_command, ssh_reply
from fleetkit.clients.bacalhau import Execution, JobStatus, NodeState, OrchestratorError, Submitted
from fleetkit.clients.s3 import ResultFetchError
from fleetkit.clients.ssh import CommandResult, CommandTimeout, Outcome, SSHError
from fleetkit.commands.query import exit_status, run
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.selectors import parse_selector
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from fleetkit.hostfacts.identity import map_fleet
from fleetkit.runtime import Runtime
from tests.unit.test_results import osqueryi

SHA = "0" * 64


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Any = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))
        self.now += max(0.0, seconds)


def write_fleet(tmp: Path, query: dict[str, Any] | None = None) -> Path:
    (tmp / "inventory").mkdir()
    (tmp / "inventory" / "lab.yaml").write_text(
        "control_plane:\n  hosts:\n    orch-1: {address: 127.0.0.1, port: 2200}\n"
        "compute:\n  vars:\n    labels: {role: osquery, env: lab}\n  hosts:\n"
        "    node-1: {address: 127.0.0.1, port: 2201}\n"
        "    node-2: {address: 127.0.0.1, port: 2202}\n"
        "    node-3: {address: 127.0.0.1, port: 2203, labels: {env: prod}}\n"
    )
    settings = {
        "osquery": {"package": {"source": "pkg/osquery.deb", "sha256": SHA}},
        "bacalhau": {
            "package": {"source": "pkg/bacalhau.tgz", "sha256": SHA},
            "node_token": {"env": "TOKEN"},
            "orchestrator_url": "http://127.0.0.1:9",
        },
        "query": query or {"timeout": 30},
    }
    path = tmp / "fleetkit.yaml"
    path.write_text(json.dumps(settings))
    return path


def make_runtime(tmp: Path, fake: FakeClock, query: dict[str, Any] | None = None) -> Runtime:
    path = write_fleet(tmp, query)
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ={"TOKEN": "t0ken-value"},
        cwd=str(tmp),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    return Runtime(env=env, settings_path=str(path))


def node_state(
    node_id: str,
    *,
    labels: dict[str, str] | None = None,
    connection: str = "CONNECTED",
    membership: str = "APPROVED",
    storage: tuple[str, ...] = ("local", "localDirectory"),
    publishers: tuple[str, ...] = ("noop", "s3"),
    node_type: str = "Compute",
) -> NodeState:
    return NodeState.from_json(
        {
            "Info": {
                "NodeID": node_id,
                "NodeType": node_type,
                "Labels": {"role": "osquery", "env": "lab", "name": node_id, **(labels or {})},
                "ComputeNodeInfo": {
                    "ExecutionEngines": ["docker"],
                    "Publishers": list(publishers),
                    "StorageSources": list(storage),
                },
            },
            "Membership": membership,
            "ConnectionState": {"Status": connection},
        }
    )


def execution(
    node_id: str,
    state: int,
    *,
    stdout: str | None = None,
    exit_code: int = 0,
    stderr: str = "",
    truncated: bool = False,
    message: str = "",
) -> Execution:
    run_output = None
    if state == 9:
        run_output = {
            "Stdout": stdout or "",
            "StdoutTruncated": truncated,
            "stderr": stderr,
            "ExitCode": exit_code,
        }
    return Execution.from_json(
        {
            "ID": f"e-{node_id}",
            "NodeID": node_id,
            "JobID": "j-1",
            "ComputeState": {"StateType": state, "Message": message},
            "DesiredState": {"StateType": 2 if state >= 8 else 1},
            "RunOutput": run_output,
        }
    )


class ScriptedClient:
    """An orchestrator whose executions finish at scripted (fake) times."""

    def __init__(self, fake: FakeClock, nodes: list[NodeState], plan: dict[str, Any]) -> None:
        self.fake = fake
        self._nodes = nodes
        #: node_id -> (seconds after submit, final Execution) or None (never finishes)
        self.plan = plan
        self.submitted: list[dict[str, Any]] = []
        self.requests: list[float] = []
        self.stopped: list[str] = []
        self.submit_time = 0.0
        self.fail_after: int | None = None

    def nodes(self, **_: Any) -> list[NodeState]:
        return self._nodes

    def submit_job(self, job: dict[str, Any]) -> Submitted:
        self.submitted.append(job)
        self.submit_time = self.fake.now
        return Submitted(job_id="j-1", evaluation_id="ev", warnings=[])

    def _record(self) -> None:
        self.requests.append(self.fake.now)
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            raise OrchestratorError("orchestrator at http://x answered 500")

    def executions(self, job_id: str) -> list[Execution]:
        self._record()
        elapsed = self.fake.now - self.submit_time
        out = []
        for node_id, step in self.plan.items():
            if step is None or (not self.stopped and elapsed < step[0]):
                out.append(execution(node_id, 6))
            elif self.stopped and elapsed < step[0]:
                out.append(execution(node_id, 11, message="execution cancelled"))
            else:
                out.append(step[1])
        return out

    def job(self, job_id: str) -> JobStatus:
        self._record()
        elapsed = self.fake.now - self.submit_time
        done = all(s is not None and elapsed >= s[0] for s in self.plan.values())
        state = "Stopped" if self.stopped else ("Completed" if done else "Running")
        return JobStatus(job_id=job_id, state=state, message="", raw={})

    def stop_job(self, job_id: str, reason: str) -> None:
        self.stopped.append(reason)


def done(node_id: str, rows: list[dict[str, str]]) -> Execution:
    return execution(node_id, 9, stdout=osqueryi(rows).decode())


def three_nodes() -> list[NodeState]:
    return [node_state("node-1"), node_state("node-2"), node_state("node-3")]


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


def ask_fleet(rt: Runtime, options: dict[str, Any], client_factory: Any) -> FleetAnswer:
    """What ``query`` does before writing: parse the options once, ask the engine."""
    options = {"sql": "SELECT 1", **options}
    engine = Engine(rt, client_factory)
    question = engine.question(options.pop("sql"))
    return engine.ask(question, parse_scope(rt, **options))


def ask(rt: Runtime, client: ScriptedClient, **kw: Any) -> FleetAnswer:
    return ask_fleet(rt, kw, client_factory=lambda _: client)


def tagged(answer: FleetAnswer) -> list[dict[str, str]]:
    """Every answering node's rows with their tags, as the merge writes them."""
    return [answer.tags(node).apply(row) for node in answer.nodes for row in node.iter_rows()]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sql": "  "}, "empty"),
        ({"via": "telnet"}, "--via"),
        ({"timeout": 0}, "--timeout"),
        ({"timeout": -5}, "--timeout"),
        ({"timeout": float("nan")}, "--timeout"),
        ({"select": "role=="}, "--select"),
        ({"hosts": "node-9"}, "unknown host"),
        ({"hosts": "orch-1"}, "not a compute node"),
        ({"sql": "SELECT * FROM curl WHERE url = 'http://x'"}, "curl"),
    ],
)
def test_bad_input_is_refused_before_anything_is_contacted(
    tmp_path: Path, fake: FakeClock, kw: dict[str, Any], match: str
) -> None:
    rt = make_runtime(tmp_path, fake)

    def factory(_: Runtime) -> Any:
        raise AssertionError("the orchestrator must not be contacted")

    with pytest.raises(ConfigError, match=match) as caught:
        ask_fleet(rt, kw, client_factory=factory)
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


def test_bad_format_refused_by_run(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    with pytest.raises(UsageError, match="--format"):
        run(
            rt,
            sql="SELECT 1",
            select="",
            hosts="",
            via="bacalhau",
            output_format="xml",
            output=None,
            timeout=None,
        )


# --------------------------------------------------------------------------- expected set


def test_expected_set_names_every_node_that_cannot_run() -> None:
    nodes = [
        node_state("node-1"),
        node_state("node-2", connection="DISCONNECTED"),
        node_state("node-3", membership="PENDING"),
        node_state("node-4", storage=("urlDownload",)),
        node_state("node-5", publishers=("noop",)),
        node_state("node-6", labels={"role": "web"}),
        node_state("orch-1", node_type="Requester"),
    ]
    inventory = [
        Host("node-1", "a", labels={"role": "osquery"}),
        Host("node-7", "b", labels={"role": "osquery"}),
    ]
    got = expected_nodes(
        nodes, parse_selector("role=osquery"), None, publisher="s3", inventory_compute=inventory
    )
    assert got.ids == ["node-1"]
    assert set(got.missing) == {"node-2", "node-3", "node-4", "node-5", "node-7"}
    assert "disconnected" in got.missing["node-2"]
    assert "not approved" in got.missing["node-3"]
    assert "storage local" in got.missing["node-4"]
    assert "AllowListedLocalPaths" in got.missing["node-4"]
    assert "publisher s3" in got.missing["node-5"]
    assert "never joined" in got.missing["node-7"]


def test_expected_set_with_hosts_and_selector() -> None:
    nodes = [
        node_state("node-1"),
        node_state("node-2", labels={"env": "prod"}),
        node_state("node-3"),
    ]
    lab = {"env": "lab"}
    wanted = [Host(n, n, labels=lab) for n in ("node-1", "node-2", "node-9")]
    got = expected_nodes(nodes, parse_selector("env=lab"), wanted, publisher=None)
    assert got.ids == ["node-1"]
    assert list(got.missing) == ["node-9"]
    # Nodes without fleetkit's label are pinned by Bacalhau's name label.
    assert got.pin(nodes) == {"Key": "name", "Operator": "in", "Values": ["node-1"]}


# --------------------------------------------------------------------------- waiting


def test_all_nodes_answer_and_polling_is_adaptive(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(
        fake,
        three_nodes(),
        {
            "node-1": (0.3, done("node-1", [{"a": "1"}])),
            "node-2": (1.2, done("node-2", [{"a": "2"}, {"a": "3"}])),
            "node-3": (7.9, done("node-3", [])),
        },
    )
    answer = ask(rt, client)
    assert answer.complete
    assert [n.status for n in answer.nodes] == [NodeStatus.OK] * 3
    rows = tagged(answer)
    assert [(r["nodeID"], r["a"]) for r in rows] == [
        ("node-1", "1"),
        ("node-2", "2"),
        ("node-2", "3"),
    ]
    # The last node finished 7.9 s after submission: noticed within 0.3 s ...
    assert fake.now - client.submit_time - 7.9 <= 0.3
    # ... at no more than 5 requests in any one-second window.
    times = client.requests
    assert all(sum(1 for t in times if s <= t < s + 1.0) <= 5 for s in times)
    assert not client.stopped
    progress = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
    assert "query: 3/3 nodes answered" in progress


def test_polling_backs_off_when_nothing_changes(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake, {"timeout": 120})
    client = ScriptedClient(
        fake,
        [node_state("node-1")],
        {
            "node-1": (70.0, done("node-1", [{"a": "1"}])),
        },
    )
    answer = ask(rt, client, hosts="node-1")
    assert answer.complete
    # Quick at first, then about one request a second once nothing changed for a while.
    start = client.submit_time
    assert sum(1 for t in client.requests if t < start + 1.0) >= 4
    assert sum(1 for t in client.requests if start + 40 <= t < start + 60) <= 24
    assert max(fake.sleeps) <= 1.0
    assert fake.sleeps[0] <= 0.05


def test_failed_query_and_missing_node_are_named(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    failing = execution(
        "node-2", 9, stdout="[\n\n]\n", exit_code=1, stderr="Error: no such table: nosuch\n"
    )
    client = ScriptedClient(
        fake,
        three_nodes(),
        {
            "node-1": (0.1, done("node-1", [{"a": "1"}])),
            "node-2": (0.1, failing),
        },
    )
    answer = ask(rt, client)
    by_id = {n.node_id: n for n in answer.nodes}
    assert by_id["node-1"].ok
    assert by_id["node-2"].status is NodeStatus.FAILED
    assert by_id["node-2"].error == "exit 1: Error: no such table: nosuch"
    assert by_id["node-3"].status is NodeStatus.MISSING
    assert exit_status(answer) == ExitStatus.FAILURE


def test_timeout_stops_the_job_and_names_slow_nodes(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(
        fake,
        three_nodes(),
        {
            "node-1": (0.2, done("node-1", [{"a": "1"}])),
            "node-2": None,
            "node-3": (0.4, done("node-3", [{"a": "3"}])),
        },
    )
    answer = ask(rt, client, timeout=5)
    assert client.stopped and "timed out after 5s" in client.stopped[0]
    by_id = {n.node_id: n for n in answer.nodes}
    assert by_id["node-2"].status is NodeStatus.TIMED_OUT
    assert by_id["node-1"].ok and by_id["node-3"].ok
    assert fake.now - client.submit_time <= 5.5
    job = client.submitted[0]["Job"]
    assert job["Tasks"][0]["Timeouts"]["ExecutionTimeout"] == 5


def test_ctrl_c_while_waiting_stops_the_job(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(fake, three_nodes(), {n: None for n in ("node-1", "node-2", "node-3")})

    def interrupt(count: int) -> None:
        if count == 4:
            raise KeyboardInterrupt

    fake.on_sleep = interrupt
    with pytest.raises(KeyboardInterrupt):
        ask(rt, client)
    assert client.stopped and "Ctrl-C" in client.stopped[0]


def test_ctrl_c_through_run_leaves_no_output_file(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(fake, three_nodes(), {"node-1": None})
    fake.on_sleep = lambda count: (_ for _ in ()).throw(KeyboardInterrupt) if count == 2 else None
    target = tmp_path / "out.json"
    with pytest.raises(KeyboardInterrupt):
        run(
            rt,
            sql="SELECT 1",
            select="",
            hosts="",
            via="bacalhau",
            output_format="json",
            output=str(target),
            timeout=None,
            client_factory=lambda _: client,
        )
    assert client.stopped
    assert not target.exists()
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != ".fleetkit")  # the history
    assert written == ["fleetkit.yaml", "inventory"]


def test_orchestrator_lost_while_waiting(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(fake, three_nodes(), {"node-1": None})
    client.fail_after = 2
    with pytest.raises(OrchestratorError, match="while waiting for job j-1"):
        ask(rt, client)
    assert client.stopped


def test_truncated_output_without_s3_is_a_node_error(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    big = osqueryi([{"a": "x" * 100}] * 40).decode()
    truncated = execution("node-1", 9, stdout=big[:2048], truncated=True)
    client = ScriptedClient(fake, [node_state("node-1")], {"node-1": (0.1, truncated)})
    answer = ask(rt, client)
    assert answer.nodes[0].status is NodeStatus.FAILED
    assert "truncated" in (answer.nodes[0].error or "")


def test_rejected_bid_is_missing_with_reason(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    rejected = execution("node-1", 8, message="volume /var/osquery is not allowlisted")
    client = ScriptedClient(fake, [node_state("node-1")], {"node-1": (0.1, rejected)})
    answer = ask(rt, client)
    assert answer.nodes[0].status is NodeStatus.MISSING
    assert "not allowlisted" in (answer.nodes[0].error or "")


def test_hosts_pin_the_job_to_named_nodes(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(fake, three_nodes(), {"node-2": (0.1, done("node-2", []))})
    answer = ask(rt, client, hosts="node-2", select="role=osquery")
    assert [n.node_id for n in answer.nodes] == ["node-2"]
    constraints = client.submitted[0]["Job"]["Constraints"]
    assert {"Key": "name", "Operator": "in", "Values": ["node-2"]} in constraints
    assert {"Key": "role", "Operator": "=", "Values": ["osquery"]} in constraints


def labelled(node_id: str, host: str, machine: str | None = None) -> NodeState:
    """A node provisioned by fleetkit for inventory host ``host`` (any node ID)."""
    return node_state(
        node_id, labels={"fleetkit-host": host, "fleetkit-hostname": machine or node_id}
    )


def test_answers_are_filed_under_the_inventory_name_with_the_machine_hostname(
    tmp_path: Path, fake: FakeClock
) -> None:
    """node-2 joined as ip-10-0-0-2 (a persisted name): found by its label, rows under node-2."""
    rt = make_runtime(tmp_path, fake)
    nodes = [
        labelled("node-1", "node-1", "web-1.prod"),
        labelled("ip-10-0-0-2", "node-2"),
        labelled("node-3", "node-3", "db-3"),
    ]
    plan = {n.node_id: (0.1, done(n.node_id, [{"a": n.node_id}])) for n in nodes}
    answer = ask(rt, ScriptedClient(fake, nodes, plan))
    assert answer.complete and answer.expected == ("node-1", "node-2", "node-3")
    rows = tagged(answer)
    assert {"nodeID": "node-2", "hostname": "ip-10-0-0-2", "a": "ip-10-0-0-2"} in rows
    assert {"nodeID": "node-1", "hostname": "web-1.prod", "a": "node-1"} in rows
    assert not any(r["nodeID"] == "ip-10-0-0-2" for r in rows)

    # --hosts node-2 reaches it: pinned by fleetkit's label, not by its node ID.
    client = ScriptedClient(fake, nodes, {"ip-10-0-0-2": plan["ip-10-0-0-2"]})
    answer = ask(rt, client, hosts="node-2")
    assert [(n.node_id, n.hostname, n.status) for n in answer.nodes] == [
        ("node-2", "ip-10-0-0-2", NodeStatus.OK)
    ]
    constraints = client.submitted[0]["Job"]["Constraints"]
    assert {"Key": "fleetkit-host", "Operator": "in", "Values": ["node-2"]} in constraints


def test_nodes_in_an_identity_conflict_are_named_and_never_merged(
    tmp_path: Path, fake: FakeClock
) -> None:
    rt = make_runtime(tmp_path, fake)
    nodes = [
        labelled("node-1", "node-1"),
        labelled("node-2", "node-2"),
        labelled("impostor", "node-2"),  # a second node claiming node-2
        labelled("node-3", "node-3"),
    ]
    # Both claimants run the job anyway (say the pin was not honoured): neither is merged.
    plan = {n.node_id: (0.1, done(n.node_id, [{"a": n.node_id}])) for n in nodes}
    client = ScriptedClient(fake, nodes, plan)
    answer = ask(rt, client)
    assert not answer.complete  # exit 1
    by_id = {n.node_id: n for n in answer.nodes}
    assert set(by_id) == {"node-1", "node-2", "node-3"}
    assert by_id["node-2"].status is NodeStatus.MISSING
    assert "identity conflict" in (by_id["node-2"].error or "")
    assert "impostor" in (by_id["node-2"].error or "")
    assert {r["a"] for r in tagged(answer)} == {"node-1", "node-3"}
    pin = {"Key": "fleetkit-host", "Operator": "in", "Values": ["node-1", "node-3"]}
    assert pin in client.submitted[0]["Job"]["Constraints"]


def test_a_stranger_without_the_fleetkit_label_is_excluded(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    nodes = [labelled("node-1", "node-1"), labelled("node-2", "node-2"), node_state("rogue-1")]
    plan = {n.node_id: (0.1, done(n.node_id, [{"a": n.node_id}])) for n in nodes}
    answer = ask(rt, ScriptedClient(fake, nodes, {k: plan[k] for k in ("node-1", "node-2")}))
    assert [(n.node_id, n.status) for n in answer.excluded] == [("rogue-1", NodeStatus.EXCLUDED)]
    assert {r["a"] for r in tagged(answer)} == {"node-1", "node-2"}


def test_no_matching_node_submits_nothing(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(fake, three_nodes(), {})
    answer = ask(rt, client, select="role=nosuch")
    assert list(answer.nodes) == [] and not client.submitted
    assert not answer.complete


def test_run_prints_rows_and_summary(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    client = ScriptedClient(
        fake,
        three_nodes(),
        {
            "node-1": (0.1, done("node-1", [{"a": "1"}])),
            "node-2": (0.1, execution("node-2", 10, message="container exited badly")),
        },
    )
    status = run(
        rt,
        sql="SELECT 1",
        select="",
        hosts="",
        via="bacalhau",
        output_format="json",
        output=None,
        timeout=None,
        client_factory=lambda _: client,
    )
    assert status == ExitStatus.FAILURE
    assert json.loads(rt.env.stdout.getvalue()) == [  # type: ignore[attr-defined]
        {"nodeID": "node-1", "hostname": "node-1", "a": "1"}
    ]
    err = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
    assert "1 rows from 1/3 nodes" in err
    assert "node-2 failed: container exited badly" in err
    assert "node-3 missing" in err


# --------------------------------------------------------------------------- SSH path


def test_sql_travels_on_stdin_not_in_the_command(tmp_path: Path) -> None:
    command = osqueryi_command("/var/osquery/osquery.em")
    assert "SELECT" not in command
    # Run the exact command with a fake osqueryi: it must receive the stdin bytes
    # as one argument, untouched, and nothing may be executed from them.
    fake = tmp_path / "osqueryi"
    fake.write_text('#!/bin/sh\nprintf "%s" "$#" > "$OUT.argc"; printf "%s" "$3" > "$OUT"\n')
    fake.chmod(0o755)
    canary = tmp_path / "canary"
    sql = f"SELECT '$(touch {canary})' AS x, `touch {canary}`; -- ;\n\n\t'é\\' \n\n"
    out = tmp_path / "argv"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "OUT": str(out)}
    done = subprocess.run(["sh", "-c", command], input=sql.encode(), env=env, check=False)
    assert done.returncode == 0
    assert out.read_bytes() == sql.encode()
    assert Path(f"{out}.argc").read_text() == "3"
    assert not canary.exists()


def test_sql_never_mistaken_for_a_flag() -> None:
    assert argv_safe_sql("-- why\nSELECT 1") == " -- why\nSELECT 1"
    assert argv_safe_sql("SELECT 1") == "SELECT 1"


def test_ssh_outcomes_become_node_results() -> None:
    host = Host("node-1", "127.0.0.1")
    ok = Outcome(host, value=CommandResult("node-1", "c", 0, osqueryi([{"a": "1"}]), b""))
    assert settle(Collected((ssh_reply(ok),))).nodes[0].rows() == [{"a": "1"}]
    bad = Outcome(host, value=CommandResult("node-1", "c", 1, b"", b'Error: near "x"\n'))
    assert ssh_reply(bad).error == 'exit 1: Error: near "x"'
    down = Outcome(host, error=SSHError("node-1", "cannot connect to 127.0.0.1:22: refused"))
    result = ssh_reply(down)
    assert (result.status, result.error) == (
        NodeStatus.FAILED,
        "cannot connect to 127.0.0.1:22: refused",
    )
    slow = Outcome(host, error=CommandTimeout("node-1", "command timed out after 5s"))
    assert ssh_reply(slow).status is NodeStatus.TIMED_OUT


def test_ssh_answers_carry_the_machine_hostname_printed_before_osqueryi() -> None:
    """``uname -n`` runs first in the same command: node ID = inventory name, hostname = the
    machine's; a line that is not a hostname is left for osqueryi's parser (never trusted)."""
    host = Host("web-9", "127.0.0.1")
    banner = b"Connected to extension socket /var/osquery/osquery.em for debugging\n"
    for stdout, hostname in (
        (b"ip-10-0-1-29\n" + banner + osqueryi([{"a": "1"}]), "ip-10-0-1-29"),
        (b"\x1b[2J evil\n" + osqueryi([{"a": "1"}]), "web-9"),
        (osqueryi([{"a": "1"}]), "web-9"),
    ):
        reply = ssh_reply(Outcome(host, value=CommandResult("web-9", "c", 0, stdout, b"")))
        assert (reply.node_id, reply.hostname) == ("web-9", hostname)
        assert settle(Collected((reply,))).nodes[0].rows() == [{"a": "1"}]
    assert ask_command("/var/osquery/osquery.em").startswith("uname -n; sh -c ")


def test_exit_status_logic() -> None:
    good = NodeResult("a", "a", NodeStatus.OK, exit_code=0)
    assert exit_status(FleetAnswer((good,), None, ("a",))) == ExitStatus.SUCCESS
    lost = NodeResult("b", "b", NodeStatus.MISSING, error="x")
    assert exit_status(FleetAnswer((good, lost), None, ("a",))) == ExitStatus.FAILURE
    assert exit_status(FleetAnswer((), None, ())) == ExitStatus.FAILURE
    stranger = NodeResult("r", "r", NodeStatus.EXCLUDED, error="not in the inventory")
    assert exit_status(FleetAnswer((good, stranger), None, ("a",))) == ExitStatus.SUCCESS
    assert exit_status(FleetAnswer((stranger,), None, ())) == ExitStatus.FAILURE


def test_the_answer_is_final_before_anything_reads_it() -> None:
    good = NodeReply("a", "a", NodeStatus.OK, osqueryi([{"k": "secret", "p": "/x"}]), exit_code=0)
    garbage = NodeReply("b", "b", NodeStatus.OK, b"Segmentation fault", exit_code=0)
    answer = settle(Collected((good, garbage), None, ("a", "b")), redacted=["k"])
    assert not answer.complete  # known at once: no output was written yet
    assert [n.node_id for n in answer.problems] == ["b"]
    assert "unparseable output" in (answer.problems[0].error or "")
    rows = tagged(answer)
    assert rows == [{"nodeID": "a", "hostname": "a", "k": "<redacted>", "p": "/x"}]
    assert list(answer.nodes[0].iter_rows()) == [{"k": "<redacted>", "p": "/x"}]  # held redacted


def test_node_thought_unable_but_answering_is_counted_once(tmp_path: Path, fake: FakeClock) -> None:
    rt = make_runtime(tmp_path, fake)
    nodes = [node_state("node-1"), node_state("node-2", connection="DISCONNECTED")]
    client = ScriptedClient(
        fake,
        nodes,
        {
            "node-1": (0.1, done("node-1", [{"a": "1"}])),
            "node-2": (0.1, done("node-2", [{"a": "2"}])),
        },
    )
    answer = ask(rt, client, hosts="node-1,node-2")
    assert [(n.node_id, n.status) for n in answer.nodes] == [
        ("node-1", NodeStatus.OK),
        ("node-2", NodeStatus.OK),
    ]


def test_s3_route_and_missing_object(tmp_path: Path, fake: FakeClock) -> None:
    s3 = {"bucket": "results", "endpoint": "http://127.0.0.1:9"}
    rt = make_runtime(tmp_path, fake, {"timeout": 30, "publisher": "s3", "s3": s3})
    big = osqueryi([{"a": "x" * 100}] * 40)

    def published(node_id: str) -> Execution:
        item = execution(node_id, 9, stdout=big.decode()[:2048], truncated=True)
        key = f"fleetkit/j-1/{node_id}/e-{node_id}"
        raw = {
            **item.raw,
            "PublishedResult": {"Type": "s3", "Params": {"Bucket": "results", "Key": key}},
        }
        return Execution.from_json(raw)

    class FakeStore:
        def __init__(self) -> None:
            self.asked: list[tuple[str, str, str]] = []

        def spool_many(self, items: list[tuple[str, str, str]], parallelism: int) -> dict:
            self.asked = items
            spooled = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the NodeResult
            spooled.write(big)
            return {
                "node-1": spooled,
                "node-2": ResultFetchError(
                    "results", "k", "result object s3://results/k not found"
                ),
            }

    store = FakeStore()
    transport = BacalhauTransport(
        client=None,  # type: ignore[arg-type]
        settings=rt.settings,
        inventory_compute=rt.inventory.compute,
        env=rt.env,
        store_factory=lambda settings, environ: store,  # type: ignore[arg-type,return-value]
    )
    roster = Roster.of(map_fleet(rt.inventory.compute, three_nodes()), rt.inventory.compute)
    replies = collect(
        [published("node-1"), published("node-2")],
        ["node-1", "node-2"],
        scope_names=None,
        roster=roster,
        include_unknown=False,
        timed_out=False,
        fetch=transport.fetch_published,
    )
    assert not isinstance(replies[0].output, bytes)  # the big output waits on disk
    results = settle(Collected(tuple(replies))).nodes
    assert [item[1:] for item in store.asked] == [
        ("results", "fleetkit/j-1/node-1/e-node-1/stdout"),
        ("results", "fleetkit/j-1/node-2/e-node-2/stdout"),
    ]
    by_id = {r.node_id: r for r in results}
    assert len(by_id["node-1"].rows()) == 40
    assert by_id["node-2"].status is NodeStatus.FAILED
    assert "not found" in (by_id["node-2"].error or "")
