"""The Bacalhau v1.9 stand-in of the lab, driven only through its official interfaces.

One orchestrator and two compute processes run locally (free ports, their own
DataDirs, names via the real ``--name`` flag): ``node-a`` allow-lists a local
directory and has AWS credentials (so it advertises ``local`` storage and the
``s3`` publisher); ``node-b`` has neither. A third compute presents a wrong
token. A second, small cluster has API users and manual approval. No lab
hosts are needed; every process is stopped at the end of the module.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from lab.hosts import free_ports
from lab.standins.bacalhau.bacalhau_standin.allowlist import NotAllowed, check_local_path
from lab.standins.bacalhau.bacalhau_standin.config import (
    ConfigProblem,
    build_config,
    parse_duration,
)
from lab.standins.bacalhau.bacalhau_standin.s3 import Credentials, signed_put_headers
from lab.standins.bacalhau.bacalhau_standin.selectors import parse_selector
from lab.standins.bacalhau.build import build_tarball

TOKEN = "lab-shared-token-0123456789"
API_KEY = "k-0123456789abcdefghij-admin"
READER_KEY = "k-0123456789abcdefghij-reader"
TERMINAL = ("Completed", "Failed", "Stopped")
NODE_B_HOST = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.2"  # a loopback of its own


def free_port() -> int:
    """A free port below the ephemeral range (no outgoing connection can take it)."""
    return free_ports(1, "127.0.0.1")[0]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Proc:
    """One ``bacalhau`` process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Cluster:
    binary: Path
    root: Path
    api_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(log, "wb") as sink:
            popen = subprocess.Popen(
                [str(self.binary), "serve", "--name", name, "-c", f"DataDir={data}", *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**base, **(env or {})},
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def orchestrator(self, *args: str) -> Proc:
        proc = self.start(
            "orch",
            "--orchestrator",
            "-c", f"API.Port={self.api_port}",
            "-c", "API.Host=127.0.0.1",
            "-c", f"Orchestrator.Port={self.nats_port}",
            "-c", "Orchestrator.Host=127.0.0.1",
            "-c", f"Orchestrator.Auth.Token={TOKEN}",
            "-c", "Orchestrator.NodeManager.DisconnectTimeout=1s",
            *args,
        )  # fmt: skip
        wait_for("orchestrator API", lambda: self._alive())
        return proc

    def compute(
        self, name: str, *args: str, token: str = TOKEN, host: str = "127.0.0.1", **env: str
    ) -> Proc:
        return self.start(
            name,
            "--compute",
            "-c", f"API.Port={free_port()}",
            "-c", f"API.Host={host}",
            "-c", f"Compute.Orchestrators=nats://127.0.0.1:{self.nats_port}",
            "-c", f"Compute.Auth.Token={token}",
            "-c", "Compute.Heartbeat.Interval=200ms",
            *args,
            env=env,
        )  # fmt: skip

    def _alive(self) -> bool:
        try:
            return requests.get(f"{self.api}/agent/alive", timeout=1).ok
        except requests.ConnectionError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        reply = requests.get(self.api + path, params=params, headers=self.headers, timeout=5)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def nodes(self, **params: Any) -> dict[str, dict[str, Any]]:
        return {n["Info"]["NodeID"]: n for n in self.get("/orchestrator/nodes", **params)["Nodes"]}

    def submit(self, job: dict[str, Any]) -> requests.Response:
        return requests.put(
            f"{self.api}/orchestrator/jobs", json={"Job": job}, headers=self.headers, timeout=5
        )

    def run(self, job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Submit, wait for a terminal state; (job, executions by node)."""
        reply = self.submit(job)
        assert reply.status_code == 200, reply.text
        job_id = reply.json()["JobID"]
        final = wait_for(
            f"job {job_id} to finish",
            lambda: (
                (j := self.get(f"/orchestrator/jobs/{job_id}")["Job"])["State"]["StateType"]
                in TERMINAL
                and j
            ),
        )
        return final, self.executions(job_id)

    def decide(self, node_id: str, action: str) -> Any:
        reply = requests.put(
            f"{self.api}/orchestrator/nodes/{node_id}",
            json={"Action": action},
            headers=self.headers,
            timeout=5,
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    def executions(self, job_id: str) -> dict[str, dict[str, Any]]:
        items = self.get(f"/orchestrator/jobs/{job_id}/executions")["Items"]
        return {e["NodeID"]: e for e in items}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()


def ops_job(argv: list[str], **task: Any) -> dict[str, Any]:
    """An ops job whose docker task the stand-in runs as ``argv`` on the host."""
    spec = {
        "Name": "main",
        "Engine": {"Type": "docker", "Params": {"Image": "osquery/osquery:5", "Entrypoint": argv}},
        "Timeouts": {"ExecutionTimeout": 20, "TotalTimeout": 30},
    }
    constraints = task.pop("Constraints", [])
    spec.update(task)
    return {"Type": "ops", "Constraints": constraints, "Tasks": [spec]}


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


PRINT_NODE = py("import os; print('hello from', os.environ['BACALHAU_NODE_ID'])")


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("standin-build")
    tarball = build_tarball(out)
    with tarfile.open(tarball) as archive:
        archive.extractall(out, filter="data")
    return out / "bacalhau"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            ["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.ConnectionError:
            return False

    try:
        wait_for("moto server", up)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory node-a allow-lists (an osquery socket dir in real life)."""
    return tmp_path_factory.mktemp("osquery-socket-dir")


@pytest.fixture(scope="module")
def cluster(
    binary: Path, tmp_path_factory: pytest.TempPathFactory, shared_dir: Path
) -> Iterator[Cluster]:
    c = Cluster(binary, tmp_path_factory.mktemp("cluster"))
    try:
        c.orchestrator()
        c.compute(
            "node-a",
            "-c", "Labels=role=osquery,zone=a",
            "-c", f"Compute.AllowListedLocalPaths={shared_dir},/srv/other/**:rw",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )  # fmt: skip
        c.compute("node-b", "-c", "Labels=role=osquery,zone=b", host=NODE_B_HOST)
        c.compute("node-c", "-c", "Labels=role=osquery", token="wrong-token")
        wait_for("node-a and node-b to join", lambda: {"node-a", "node-b"} <= set(c.nodes()))
        yield c
    finally:
        c.stop()


# ---- the artifact ---------------------------------------------------------------------------


def test_tarball_holds_one_executable_that_reports_its_version(tmp_path: Path) -> None:
    tarball = build_tarball(tmp_path, version="v1.9.3", arch="amd64")
    assert tarball.name == "bacalhau_v1.9.3_linux_amd64.tar.gz"
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
        assert [(m.name, m.mode & 0o777, m.isfile()) for m in members] == [
            ("bacalhau", 0o755, True)
        ]
        archive.extractall(tmp_path, filter="data")
    exe = str(tmp_path / "bacalhau")
    table = subprocess.run([exe, "version", "--client"], capture_output=True, text=True)
    assert table.returncode == 0
    assert table.stdout.split() == ["CLIENT", "v1.9.3"]
    as_json = subprocess.run(
        [exe, "version", "--client", "--output", "json"], capture_output=True, text=True
    )
    client = json.loads(as_json.stdout)["clientVersion"]
    assert (client["Major"], client["Minor"], client["GitVersion"]) == ("1", "9", "v1.9.3")
    old_flag = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert (old_flag.returncode, old_flag.stderr.strip()) == (1, "Error: unknown flag: --version")
    assert "STAND-IN" in subprocess.run([exe, "--help"], capture_output=True, text=True).stdout


def test_tarball_build_is_reproducible(tmp_path: Path) -> None:
    first = build_tarball(tmp_path / "one").read_bytes()
    assert build_tarball(tmp_path / "two").read_bytes() == first


# ---- nodes ----------------------------------------------------------------------------------


def test_compute_nodes_join_connected_with_labels_in_v19_shape(cluster: Cluster) -> None:
    nodes = cluster.nodes()
    a, b = nodes["node-a"], nodes["node-b"]
    assert a["Info"]["NodeType"] == "Compute"
    assert a["Info"]["Labels"] == {
        "role": "osquery",
        "zone": "a",
        "os_type": "linux",
        "os_arch": a["Info"]["BacalhauVersion"]["GOARCH"],
        "name": "node-a",
    }
    assert (a["Membership"], a["Connection"], a["ConnectionState"]["Status"]) == (
        "APPROVED",
        "CONNECTED",
        "CONNECTED",
    )
    assert a["ConnectionState"]["DisconnectedSince"] == "0001-01-01T00:00:00Z"
    assert a["Info"]["BacalhauVersion"]["GitVersion"] == "v1.9.3"
    info_a, info_b = a["Info"]["ComputeNodeInfo"], b["Info"]["ComputeNodeInfo"]
    assert info_a["ExecutionEngines"] == ["docker"]
    assert info_a["Publishers"] == ["noop", "local", "s3"]  # AWS credentials in its environment
    assert info_b["Publishers"] == ["noop", "local"]
    assert {"local", "localDirectory"} <= set(info_a["StorageSources"])
    assert "local" not in info_b["StorageSources"]  # no AllowListedLocalPaths
    assert info_b["address"] == NODE_B_HOST  # it dials from its own API.Host
    assert set(cluster.nodes(labels="zone=b")) == {"node-b"}
    assert set(cluster.nodes(labels="zone in (a,b),role")) == {"node-a", "node-b"}
    assert cluster.nodes(**{"filter-status": "DISCONNECTED"}) == {}
    single = cluster.get("/orchestrator/nodes/node-b")["Node"]
    assert single["Info"]["NodeID"] == "node-b"


def test_compute_with_wrong_token_never_joins(cluster: Cluster) -> None:
    node_c = next(p for p in cluster.procs if p.name == "node-c")
    wait_for("node-c to log its refusal", lambda: "refused" in node_c.text())
    assert "node-c" not in cluster.nodes()
    assert "authorization violation" in cluster.procs[0].text()
    assert node_c.popen.poll() is None  # it keeps retrying, like the real one
    node_c.popen.send_signal(signal.SIGTERM)
    assert node_c.popen.wait(timeout=5) == 0  # a clean shutdown


def test_every_node_serves_agent_endpoints(cluster: Cluster) -> None:
    version = cluster.get("/agent/version")
    assert version["GitVersion"] == "v1.9.3"
    node = cluster.get("/agent/node")
    assert node["NodeType"] == "Requester"
    config = cluster.get("/agent/config")["config"]
    assert config["Orchestrator"]["Auth"]["Token"] == "****"
    assert TOKEN not in json.dumps(config)
    missing = requests.get(f"{cluster.api}/requester/jobs", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["Code"] == "NotFound"


# ---- running ops jobs -----------------------------------------------------------------------


def test_ops_job_runs_once_on_every_matching_node(cluster: Cluster) -> None:
    job, executions = cluster.run(ops_job(PRINT_NODE))
    assert job["State"]["StateType"] == "Completed"
    assert set(executions) == {"node-a", "node-b"}
    for node_id, execution in executions.items():
        assert execution["ComputeState"]["StateType"] == 9
        assert execution["DesiredState"]["StateType"] == 2
        assert execution["JobVersion"] == 1
        assert execution["RunOutput"]["Stdout"] == f"hello from {node_id}\n"
        assert execution["RunOutput"]["ExitCode"] == 0
        assert execution["CreateTime"] > 10**18  # unix nanoseconds
    by_prefix = cluster.get(f"/orchestrator/jobs/{job['ID'][:12]}", include="executions,history")
    assert len(by_prefix["Executions"]["Items"]) == 2
    assert by_prefix["History"]["Items"]


def test_constraints_choose_the_nodes(cluster: Cluster) -> None:
    only_b = [{"Key": "zone", "Operator": "=", "Values": ["b"]}]
    _, executions = cluster.run(ops_job(PRINT_NODE, Constraints=only_b))
    assert set(executions) == {"node-b"}
    not_b = [{"Key": "zone", "Operator": "notin", "Values": ["b"]}]
    _, executions = cluster.run(ops_job(PRINT_NODE, Constraints=not_b))
    assert set(executions) == {"node-a"}


def test_no_matching_node_fails_the_job_at_once(cluster: Cluster) -> None:
    nowhere = [{"Key": "zone", "Operator": "=", "Values": ["mars"]}]
    job, executions = cluster.run(ops_job(PRINT_NODE, Constraints=nowhere))
    assert job["State"]["StateType"] == "Failed"
    assert "not enough nodes" in job["State"]["Message"]
    assert executions == {}


def test_unknown_constraint_operator_is_accepted_and_never_scheduled(cluster: Cluster) -> None:
    odd = [{"Key": "zone", "Operator": "~=", "Values": ["a"]}]
    reply = cluster.submit(ops_job(PRINT_NODE, Constraints=odd))
    assert reply.status_code == 200
    job_id = reply.json()["JobID"]
    answer = cluster.get(f"/orchestrator/jobs/{job_id}", include="history")
    assert answer["Job"]["State"]["StateType"] == "Pending"
    assert any("~=" in h["Event"]["Message"] for h in answer["History"]["Items"])
    assert cluster.executions(job_id) == {}


def local_input(path: Path) -> list[dict[str, Any]]:
    return [{"Source": {"Type": "local", "Params": {"SourcePath": str(path)}}, "Target": str(path)}]


def test_local_input_runs_only_where_allow_listed(cluster: Cluster, shared_dir: Path) -> None:
    (shared_dir / "osquery.em").write_text("socket stand-in")
    read = py(f"print(open({str(shared_dir / 'osquery.em')!r}).read())")
    job, executions = cluster.run(ops_job(read, InputSources=local_input(shared_dir)))
    assert set(executions) == {"node-a"}  # node-b lacks `local` storage: skipped silently
    assert executions["node-a"]["RunOutput"]["Stdout"] == "socket stand-in\n"
    assert job["State"]["StateType"] == "Completed"


def test_path_outside_the_allow_list_fails_the_execution(
    cluster: Cluster, shared_dir: Path
) -> None:
    child = shared_dir / "sub"  # the parent entry does not cover children
    child.mkdir(exist_ok=True)
    job, executions = cluster.run(ops_job(PRINT_NODE, InputSources=local_input(child)))
    assert job["State"]["StateType"] == "Failed"
    assert executions["node-a"]["ComputeState"]["StateType"] == 10
    assert executions["node-a"]["ComputeState"]["Message"] == f"volume {child} is not allowlisted"


def test_run_output_keeps_2048_bytes_and_says_so(cluster: Cluster) -> None:
    noisy = py("import sys; print('x' * 5000); sys.stderr.write('e' * 10)")
    _, executions = cluster.run(ops_job(noisy))
    output = executions["node-a"]["RunOutput"]
    assert output["Stdout"] == "x" * 2048
    assert output["StdoutTruncated"] is True
    assert (output["stderr"], output["StderrTruncated"]) == ("e" * 10, False)


def test_non_zero_exit_is_still_completed(cluster: Cluster) -> None:
    job, executions = cluster.run(ops_job(py("import sys; print('[ ]'); sys.exit(1)")))
    assert job["State"]["StateType"] == "Completed"
    for execution in executions.values():
        assert execution["ComputeState"]["StateType"] == 9
        assert execution["RunOutput"]["ExitCode"] == 1


def test_one_failing_node_fails_the_job_while_the_other_completes(cluster: Cluster) -> None:
    slow_on_b = py(
        "import os, time\n"
        "if os.environ['BACALHAU_NODE_ID'] == 'node-b': time.sleep(60)\n"
        "print('done')"
    )
    job, executions = cluster.run(
        ops_job(slow_on_b, Timeouts={"ExecutionTimeout": 1, "TotalTimeout": 30})
    )
    assert job["State"]["StateType"] == "Failed"
    assert executions["node-a"]["ComputeState"]["StateType"] == 9
    assert executions["node-a"]["RunOutput"]["Stdout"] == "done\n"
    assert executions["node-b"]["ComputeState"]["StateType"] == 10
    assert "timed out" in executions["node-b"]["ComputeState"]["Message"]


def test_total_timeout_fails_the_job(cluster: Cluster) -> None:
    only_a = [{"Key": "zone", "Operator": "=", "Values": ["a"]}]
    job, executions = cluster.run(
        ops_job(
            py("import time; time.sleep(30)"),
            Constraints=only_a,
            Timeouts={"ExecutionTimeout": 0, "TotalTimeout": 1},
        )
    )
    assert job["State"]["StateType"] == "Failed"
    assert "timed out" in job["State"]["Message"]
    assert executions["node-a"]["ComputeState"]["StateType"] in (10, 11)


def test_delete_stops_a_long_job_and_kills_its_process(cluster: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    write_pid = f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))"
    sleeper = py(f"import os, time; {write_pid}; time.sleep(120)")
    only_a = [{"Key": "zone", "Operator": "=", "Values": ["a"]}]
    reply = cluster.submit(ops_job(sleeper, Constraints=only_a))
    job_id = reply.json()["JobID"]
    pid = int(wait_for("the job's process", lambda: pid_file.exists() and pid_file.read_text()))
    stop = requests.delete(
        f"{cluster.api}/orchestrator/jobs/{job_id}", json={"reason": "operator abort"}, timeout=5
    )
    assert stop.status_code == 200 and stop.json()["EvaluationID"]
    job = cluster.get(f"/orchestrator/jobs/{job_id}")["Job"]
    assert (job["State"]["StateType"], job["State"]["Message"]) == ("Stopped", "operator abort")
    assert cluster.executions(job_id)["node-a"]["ComputeState"]["StateType"] == 11

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for("the job's process to be killed", gone)


def test_reusing_a_job_name_updates_the_job(cluster: Cluster) -> None:
    named = {**ops_job(PRINT_NODE), "Name": "policy-check"}
    first, _ = cluster.run(named)
    same = cluster.submit(named)
    assert same.status_code == 500
    assert "no changes detected" in same.json()["Message"]
    forced = requests.put(
        f"{cluster.api}/orchestrator/jobs", json={"Job": named, "Force": True}, timeout=5
    )
    assert forced.json()["JobID"] == first["ID"]
    job = wait_for(
        "version 2 to finish",
        lambda: (
            (j := cluster.get("/orchestrator/jobs/policy-check")["Job"])["State"]["StateType"]
            in TERMINAL
            and j
        ),
    )
    assert (job["Version"], job["State"]["StateType"]) == (2, "Completed")
    latest = cluster.executions(job["ID"])
    assert {e["JobVersion"] for e in latest.values()} == {2}


def test_invalid_jobs_are_refused_with_the_real_codes(cluster: Cluster) -> None:
    nameless = ops_job(PRINT_NODE)
    del nameless["Tasks"][0]["Name"]
    reply = cluster.submit(nameless)
    assert reply.status_code == 400
    assert reply.json()["Code"] == "InternalError"
    no_image = ops_job(PRINT_NODE)
    del no_image["Tasks"][0]["Engine"]["Params"]["Image"]
    assert "image" in cluster.submit(no_image).json()["Message"]
    too_long = ops_job(PRINT_NODE, Timeouts={"ExecutionTimeout": 20, "TotalTimeout": 10})
    reply = cluster.submit(too_long)
    assert (reply.status_code, reply.json()["Code"]) == (400, "BadRequest")
    assert cluster.submit({**ops_job(PRINT_NODE), "Type": "cron"}).status_code == 400
    missing = requests.get(f"{cluster.api}/orchestrator/jobs/j-nope", timeout=5)
    assert (missing.status_code, missing.json()["Code"]) == (404, "NotFound")


SWAGGER = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "bacalhau-swagger.json"
)


def test_wire_shapes_use_the_swagger_field_names(cluster: Cluster) -> None:
    if not SWAGGER.is_file():
        pytest.skip(f"reference data not available: {SWAGGER}")
    definitions = json.loads(SWAGGER.read_text())["definitions"]

    def fields(name: str) -> set[str]:
        return set(definitions[name]["properties"])

    job, executions = cluster.run(ops_job(PRINT_NODE))
    execution = executions["node-a"]
    assert set(job) <= fields("models.Job")
    assert set(job["Tasks"][0]) <= fields("models.Task")
    assert set(execution) <= fields("models.Execution")
    assert set(execution["RunOutput"]) == fields("models.RunCommandResult")
    node = cluster.nodes()["node-a"]
    assert set(node) == fields("models.NodeState")
    assert set(node["Info"]) == fields("models.NodeInfo")
    assert set(node["Info"]["ComputeNodeInfo"]) == fields("models.ComputeNodeInfo")
    assert set(node["ConnectionState"]) == fields("models.ConnectionState")
    assert set(node["Info"]["BacalhauVersion"]) == fields("models.BuildVersionInfo")
    history = cluster.get(f"/orchestrator/jobs/{job['ID']}/history")["Items"]
    assert history and all(set(h) <= fields("models.JobHistory") for h in history)


# ---- S3 publishing --------------------------------------------------------------------------


def s3_publisher(endpoint: str, bucket: str, encoding: str) -> dict[str, Any]:
    return {
        "Type": "s3",
        "Params": {
            "Bucket": bucket,
            "Key": "runs/{jobID}/{nodeID}/{executionID}",
            "Region": "us-east-1",
            "Endpoint": endpoint,
            "Encoding": encoding,
        },
    }


def test_s3_publisher_uploads_full_stdout_under_the_key_template(
    cluster: Cluster, moto: str
) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="results")
    big = py("print('y' * 5000)")
    job, executions = cluster.run(ops_job(big, Publisher=s3_publisher(moto, "results", "plain")))
    assert set(executions) == {"node-a"}  # node-b has no AWS credentials: skipped
    execution = executions["node-a"]
    key = f"runs/{job['ID']}/node-a/{execution['ID']}/"
    assert execution["PublishedResult"]["Type"] == "s3"
    assert execution["PublishedResult"]["Params"]["Key"] == key
    stdout = s3.get_object(Bucket="results", Key=key + "stdout")["Body"].read()
    assert stdout == b"y" * 5000 + b"\n"
    assert s3.get_object(Bucket="results", Key=key + "exitCode")["Body"].read() == b"0"

    job, executions = cluster.run(ops_job(big, Publisher=s3_publisher(moto, "results", "gzip")))
    execution = executions["node-a"]
    key = f"runs/{job['ID']}/node-a/{execution['ID']}.tar.gz"
    assert execution["PublishedResult"]["Params"]["Key"] == key
    archive = s3.get_object(Bucket="results", Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("stdout")
        assert member is not None and member.read() == b"y" * 5000 + b"\n"


def test_failed_upload_fails_the_execution(cluster: Cluster, moto: str) -> None:
    job, executions = cluster.run(
        ops_job(PRINT_NODE, Publisher=s3_publisher(moto, "no-such-bucket", "plain"))
    )
    assert job["State"]["StateType"] == "Failed"
    assert executions["node-a"]["ComputeState"]["StateType"] == 10
    assert "publish" in executions["node-a"]["ComputeState"]["Message"]


def test_sigv4_signature_matches_botocore() -> None:
    from datetime import UTC, datetime
    from unittest import mock

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = b"hello world"
    ours = signed_put_headers(
        Credentials("AKIDEXAMPLE", "secret"),
        "eu-west-1",
        "s3.local:9000",
        "/bucket/runs/j-1/node%20a/stdout",
        body,
        when,
    )
    request = AWSRequest(
        method="PUT",
        url="http://s3.local:9000/bucket/runs/j-1/node%20a/stdout",
        data=body,
        headers={"x-amz-content-sha256": ours["x-amz-content-sha256"]},
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        S3SigV4Auth(BotoCredentials("AKIDEXAMPLE", "secret"), "s3", "eu-west-1").add_auth(request)
    theirs = request.headers["Authorization"]
    assert ours["Authorization"].split("Signature=")[1] == theirs.split("Signature=")[1]


# ---- API auth, manual approval, disconnects -------------------------------------------------


@pytest.fixture(scope="module")
def guarded(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("guarded")
    config = root / "orch.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "api": {  # keys are case-insensitive
                    "auth": {
                        "users": [
                            {
                                "Alias": "admin",
                                "APIKey": API_KEY,
                                "Capabilities": [{"Actions": ["*"]}],
                            },
                            {
                                "Alias": "reader",
                                "APIKey": READER_KEY,
                                "Capabilities": [{"Actions": ["read:*"]}],
                            },
                            {
                                "Alias": "ops",
                                "Username": "ops",
                                "Password": "s3cret",
                                "Capabilities": [{"Actions": ["read:node"]}],
                            },
                        ]
                    }
                },
                "Orchestrator": {"NodeManager": {"ManualApproval": True}},
            }
        )
    )
    c = Cluster(binary, root)
    try:
        c.orchestrator("--config", str(config))
        c.headers = {"Authorization": f"Bearer {API_KEY}"}
        c.compute("edge-1", "-c", "Labels=role=osquery")
        wait_for("edge-1 to join", lambda: "edge-1" in c.nodes())
        yield c
    finally:
        c.stop()


def test_api_users_require_credentials(guarded: Cluster) -> None:
    url = f"{guarded.api}/orchestrator/nodes"
    anonymous = requests.get(url, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["Message"] == "Request Unauthorized"
    wrong = requests.get(url, headers={"Authorization": "Bearer wrong-key"}, timeout=5)
    assert wrong.status_code == 401
    basic = base64.b64encode(b"ops:s3cret").decode()
    assert requests.get(url, headers={"Authorization": f"Basic {basic}"}, timeout=5).ok
    reader = {"Authorization": f"Bearer {READER_KEY}"}
    assert requests.get(url, headers=reader, timeout=5).ok
    write = requests.put(
        f"{guarded.api}/orchestrator/jobs",
        json={"Job": ops_job(PRINT_NODE)},
        headers=reader,
        timeout=5,
    )
    assert write.status_code == 403
    assert requests.get(f"{guarded.api}/agent/alive", timeout=5).json() == {"Status": "OK"}
    assert requests.get(f"{guarded.api}/agent/version", timeout=5).ok


def test_manual_approval_holds_work_until_approved(guarded: Cluster) -> None:
    assert guarded.nodes()["edge-1"]["Membership"] == "PENDING"
    assert set(guarded.nodes(**{"filter-approval": "PENDING"})) == {"edge-1"}
    job, _ = guarded.run(ops_job(PRINT_NODE))
    assert job["State"]["StateType"] == "Failed"  # a pending node gets no work
    assert guarded.decide("edge-1", "approve") == {"Success": True, "Error": ""}
    assert guarded.nodes()["edge-1"]["Membership"] == "APPROVED"
    job, executions = guarded.run(ops_job(PRINT_NODE))
    assert job["State"]["StateType"] == "Completed"
    assert executions["edge-1"]["RunOutput"]["Stdout"] == "hello from edge-1\n"
    assert guarded.decide("edge-1", "reject") == {"Success": True, "Error": ""}
    job, executions = guarded.run(ops_job(PRINT_NODE))
    assert (job["State"]["StateType"], executions) == ("Failed", {})  # rejected: no work
    assert guarded.decide("edge-1", "approve")["Success"] is True


def test_silent_node_disconnects_fails_its_execution_and_reconnects(guarded: Cluster) -> None:
    edge = next(p for p in guarded.procs if p.name == "edge-1")

    def status() -> str:
        return str(guarded.nodes()["edge-1"]["ConnectionState"]["Status"])

    reply = guarded.submit(ops_job(py("import time; time.sleep(20)")))
    job_id = reply.json()["JobID"]
    wait_for(
        "the execution to run",
        lambda: guarded.executions(job_id)["edge-1"]["ComputeState"]["StateType"] == 6,
    )
    edge.popen.send_signal(signal.SIGSTOP)
    try:
        wait_for("edge-1 to disconnect", lambda: status() == "DISCONNECTED")
        state = guarded.nodes()["edge-1"]["ConnectionState"]
        assert state["DisconnectedSince"] != "0001-01-01T00:00:00Z"
        execution = guarded.executions(job_id)["edge-1"]
        assert execution["ComputeState"]["StateType"] == 10
        assert "disconnected" in execution["ComputeState"]["Message"]
        assert guarded.get(f"/orchestrator/jobs/{job_id}")["Job"]["State"]["StateType"] == "Failed"
    finally:
        edge.popen.send_signal(signal.SIGCONT)
    wait_for("edge-1 to reconnect", lambda: status() == "CONNECTED")


def test_compute_shutdown_fails_its_running_execution(guarded: Cluster) -> None:
    edge = next(p for p in guarded.procs if p.name == "edge-1")
    reply = guarded.submit(ops_job(py("import time; time.sleep(20)")))
    job_id = reply.json()["JobID"]
    wait_for(
        "the execution to run",
        lambda: guarded.executions(job_id)["edge-1"]["ComputeState"]["StateType"] == 6,
    )
    edge.popen.send_signal(signal.SIGTERM)
    assert edge.popen.wait(timeout=10) == 0
    execution = guarded.executions(job_id)["edge-1"]
    assert execution["ComputeState"]["StateType"] == 10
    assert "shutting down" in execution["ComputeState"]["Message"]
    assert guarded.get(f"/orchestrator/jobs/{job_id}")["Job"]["State"]["StateType"] == "Failed"
    again = guarded.compute("edge-1", "-c", "Labels=role=osquery")  # same DataDir and name
    wait_for("edge-1 to rejoin", lambda: "joined orchestrator" in again.text())
    _, executions = guarded.run(ops_job(PRINT_NODE))
    assert executions["edge-1"]["RunOutput"]["Stdout"] == "hello from edge-1\n"


def test_restarted_orchestrator_keeps_approvals_and_nodes_rejoin(guarded: Cluster) -> None:
    # Self-contained: approve here rather than rely on an earlier test's decision.
    if guarded.nodes()["edge-1"]["Membership"] != "APPROVED":
        assert guarded.decide("edge-1", "approve")["Success"] is True
    saved = json.loads((guarded.root / "orch" / "orchestrator" / "nodes.json").read_text())
    assert saved.get("edge-1") == "APPROVED"
    orch = next(p for p in guarded.procs if p.name == "orch")
    orch.popen.send_signal(signal.SIGTERM)
    assert orch.popen.wait(timeout=10) == 0
    guarded.procs.remove(orch)
    guarded.orchestrator("--config", str(guarded.root / "orch.yaml"))

    def edge_back() -> bool:
        node = guarded.nodes().get("edge-1")
        return node is not None and node["ConnectionState"]["Status"] == "CONNECTED"

    # Generous: a loaded machine (the e2e labs of the same session still run)
    # can take seconds to start the new orchestrator and for edge-1 to retry.
    try:
        wait_for("edge-1 to rejoin the new orchestrator", edge_back, timeout=30.0)
    except pytest.fail.Exception:
        logs = {p.name: p.log.read_text()[-1500:] for p in guarded.procs}
        pytest.fail(f"edge-1 did not rejoin the restarted orchestrator; logs: {logs}")
    membership = guarded.nodes()["edge-1"]["Membership"]
    assert membership == "APPROVED", (membership, orch.log.read_text()[-2000:])
    job, executions = guarded.run(ops_job(PRINT_NODE))
    assert job["State"]["StateType"] == "Completed"
    assert executions["edge-1"]["RunOutput"]["Stdout"] == "hello from edge-1\n"


# ---- node identity: hostname, --name persisted on first start, labels (issue 14) -------------

needs_uts = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a machine hostname of its own needs a UTS namespace (root and unshare)",
)


@pytest.fixture(scope="module")
def identity(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An orchestrator of its own: the nodes started here never meet the other tests' jobs."""
    c = Cluster(binary, tmp_path_factory.mktemp("identity"))
    try:
        c.orchestrator()
        yield c
    finally:
        c.stop()


def serve_compute(c: Cluster, data: Path, *args: str, hostname: str = "") -> Proc:
    """``bacalhau serve --compute`` as fleetkit's config starts it: no ``--name`` unless given.

    ``hostname``: run it in a UTS namespace whose machine hostname is that.
    """
    log = c.root / f"{data.name}-{len(c.procs)}.log"
    argv = [
        str(c.binary), "serve", "--compute",
        "-c", f"DataDir={data}",
        "-c", f"API.Port={free_port()}",
        "-c", "API.Host=127.0.0.1",
        "-c", f"Compute.Orchestrators=nats://127.0.0.1:{c.nats_port}",
        "-c", f"Compute.Auth.Token={TOKEN}",
        "-c", "Compute.Heartbeat.Interval=200ms",
        *args,
    ]  # fmt: skip
    if hostname:
        argv = ["unshare", "--uts", "/bin/sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
    with open(log, "wb") as sink:
        popen = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    proc = Proc(data.name, popen, log)
    c.procs.append(proc)
    return proc


def metadata(data: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((data / "system_metadata.yaml").read_text()))


def connected(c: Cluster, node_id: str) -> bool:
    node = c.nodes().get(node_id)
    return node is not None and node["ConnectionState"]["Status"] == "CONNECTED"


@needs_uts
def test_name_provider_hostname_makes_the_machine_hostname_the_node_id(
    identity: Cluster, tmp_path: Path
) -> None:
    data = tmp_path / "web-9"
    serve_compute(identity, data, "-c", "NameProvider=hostname", hostname="ip-10-0-1-29")
    wait_for("ip-10-0-1-29 to join", lambda: connected(identity, "ip-10-0-1-29"))
    info = identity.nodes()["ip-10-0-1-29"]["Info"]
    assert info["Labels"]["name"] == "ip-10-0-1-29"  # the automatic label follows the ID
    assert metadata(data)["NodeName"] == "ip-10-0-1-29"


def test_the_first_name_is_persisted_and_later_names_are_ignored(
    identity: Cluster, tmp_path: Path
) -> None:
    data = tmp_path / "edge-9"
    first = serve_compute(identity, data, "--name", "web-9", "-c", "NameProvider=hostname")
    wait_for("web-9 to join", lambda: connected(identity, "web-9"))
    assert metadata(data)["NodeName"] == "web-9"  # --name wins over the provider, once
    first.stop()
    # Restarted with another --name, another provider, and a `Name` key (not a v1.9 key):
    again = serve_compute(
        identity, data, "--name", "web-10", "-c", "NameProvider=uuid", "-c", "Name=web-11"
    )
    wait_for("the node to rejoin", lambda: "joined orchestrator" in again.text())
    wait_for("web-9 to be connected again", lambda: connected(identity, "web-9"))
    assert not {"web-10", "web-11"} & set(identity.nodes())
    assert metadata(data)["NodeName"] == "web-9"
    assert "node name already set; ignoring the new one" in again.text()
    assert "ignored=web-10" in again.text()


@needs_uts
def test_a_node_first_named_by_its_hostname_keeps_that_name_when_given_one(
    identity: Cluster, tmp_path: Path
) -> None:
    """The issue-14 case: joined as ip-10-0-1-29 before fleetkit named it web-7."""
    data = tmp_path / "web-7"
    early = serve_compute(identity, data, "-c", "NameProvider=hostname", hostname="ip-10-0-1-30")
    wait_for("ip-10-0-1-30 to join", lambda: connected(identity, "ip-10-0-1-30"))
    early.stop()
    later = serve_compute(
        identity, data, "--name", "web-7", "-c", "NameProvider=hostname", hostname="ip-10-0-1-30"
    )
    wait_for("the node to rejoin", lambda: "joined orchestrator" in later.text())
    assert "web-7" not in identity.nodes()
    assert metadata(data)["NodeName"] == "ip-10-0-1-30"


def test_labels_come_from_the_labels_key_and_follow_the_config_on_restart(
    identity: Cluster, tmp_path: Path
) -> None:
    data = tmp_path / "lab-node"
    config = tmp_path / "compute.yaml"
    config.write_text(
        "Labels:\n  role: osquery\n  fleetkit-host: web-5\n"
        "Compute:\n  Labels:\n    ignored: yes\n"  # Compute.Labels is not a v1.9 key
    )
    first = serve_compute(identity, data, "--name", "web-5", "--config", str(config))
    wait_for("web-5 to join", lambda: connected(identity, "web-5"))
    labels = identity.nodes()["web-5"]["Info"]["Labels"]
    assert labels == {
        "role": "osquery",
        "fleetkit-host": "web-5",
        "os_type": "linux",
        "os_arch": labels["os_arch"],
        "name": "web-5",
    }
    assert set(identity.nodes(labels="fleetkit-host=web-5")) == {"web-5"}
    first.stop()
    # Unlike the name, labels are not persisted: a restart advertises the config's labels.
    config.write_text("Labels:\n  role: osquery\n  fleetkit-host: web-6\n")
    serve_compute(identity, data, "--config", str(config))

    def relabelled() -> bool:
        node = identity.nodes().get("web-5")
        return node is not None and node["Info"]["Labels"].get("fleetkit-host") == "web-6"

    wait_for("web-5 to advertise its new labels", relabelled)
    assert set(identity.nodes(labels="fleetkit-host=web-5")) == set()


# ---- pieces with rules worth pinning --------------------------------------------------------


def test_config_precedence_and_go_durations(tmp_path: Path) -> None:
    low, high = tmp_path / "low.yaml", tmp_path / "high.yml"
    low.write_text("API:\n  Port: 1\n  Host: 10.0.0.1\nlabels: {a: b}\nUnknownKey: 1\n")
    high.write_text("api:\n  port: 2\n")
    config = build_config([], [str(low), str(high), "Api.Port=3", "Compute.Enabled"])
    assert config.integer("API.Port") == 3
    assert config.text("api.host") == "10.0.0.1"
    assert config.mapping("Labels") == {"a": "b"}
    assert config.flag("Compute.Enabled") is True
    listed = build_config([], ["Compute.AllowListedLocalPaths=/a,/b:rw", "Labels=x=1,y=2"])
    assert listed.strings("Compute.AllowListedLocalPaths") == ["/a", "/b:rw"]
    assert listed.mapping("labels") == {"x": "1", "y": "2"}
    assert parse_duration("1m30s", "k") == 90.0
    assert parse_duration("500ms", "k") == 0.5
    with pytest.raises(ConfigProblem, match="missing unit"):
        parse_duration("15", "Compute.Heartbeat.Interval")


def test_allow_list_uses_exact_doublestar_paths() -> None:
    check_local_path(["/var/osquery"], "/var/osquery", False)
    check_local_path(["/var/osquery/**"], "/var/osquery", False)
    check_local_path(["/var/osquery/**"], "/var/osquery/a/b", False)
    check_local_path(["/data/*:rw"], "/data/x", True)
    with pytest.raises(NotAllowed, match="is not allowlisted"):
        check_local_path(["/var/osquery"], "/var/osquery/osquery.em", False)
    with pytest.raises(NotAllowed, match="not granted write access"):
        check_local_path(["/var/osquery"], "/var/osquery", True)
    with pytest.raises(NotAllowed, match="is not allowlisted"):  # the docs' wrong syntax
        check_local_path(["/data:/data:ro"], "/data", False)


def test_label_selector_syntax() -> None:
    labels = {"role": "osquery", "env": "lab"}
    assert all(r.matches(labels) for r in parse_selector("role=osquery,env in (lab,prod),!gpu"))
    assert not all(r.matches(labels) for r in parse_selector("env notin (lab)"))
