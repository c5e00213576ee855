"""``fleetkit query`` on the lab fleet: the seed's scenarios, both transports, failures.

Shared ``provisioned_lab`` (orch-1 + node-1..3, RunOutput only) for most
tests; every test that plants files or stops a daemon undoes it. The S3
route (outputs over 2 KB) runs on its own small lab from ``lab_factory``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import fleetkit.commands.query as query
from fleetkit.cli import run_command
from fleetkit.clients.bacalhau import BacalhauClient, Submitted
from fleetkit.foundation.environment import Environment
from fleetkit.runtime import Runtime
from lab.fleet import Lab
from tests.e2e.conftest import (
    CliResult,
    connection_of,
    orchestrator_nodes,
    reprovision,
    run_cli,
    wait_connected,
)

pytestmark = pytest.mark.lab

COMPUTE = ["node-1", "node-2", "node-3"]

#: The seed's policy: every SSH key encrypted and elliptic-curve (offenders listed).
POLICY_SQL = (
    "SELECT system_info.hostname, uid, username, path,\n"
    "encrypted, key_type\n"
    "FROM system_info, users CROSS JOIN user_ssh_keys USING (uid)\n"
    "WHERE encrypted=0 OR key_type<>'ec'"
)
TROJAN_PATH = "/var/www/htdocs/wp-content/themes/goldenrod/functions.php"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def rows_of(result: CliResult) -> list[dict[str, str]]:
    assert result.stdout, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return rows


def canonical(rows: list[dict[str, str]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------- the seed's story


def test_policy_query_empty_then_names_the_offending_host(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    clean = run_cli(lab, "query", POLICY_SQL)
    assert clean.exit_code == 0, clean.output
    assert rows_of(clean) == []
    assert "from 3/3 nodes" in clean.stderr

    offender = lab.host("node-2")
    key = "/root/.ssh/id_rsa_fleetkit_test"
    offender.sh(f"ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f {key}")
    try:
        dirty = run_cli(lab, "query", POLICY_SQL)
        assert dirty.exit_code == 0, dirty.output
        rows = rows_of(dirty)
        assert {r["nodeID"] for r in rows} == {"node-2"}
        # The query's own hostname column: the machine's name, not the inventory's.
        assert {r["hostname"] for r in rows} == {offender.hostname} != {"node-2"}
        assert any(r["path"] == key and r["encrypted"] == "0" for r in rows)
        assert all(r["username"] == "root" for r in rows)
    finally:
        offender.sh(f"rm -f {key} {key}.pub")


def test_hash_hunt_finds_exactly_the_infected_hosts(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    trojan = b"<?php /* fleetkit test trojan */ eval($_GET['x']); ?>\n"
    digest = hashlib.sha256(trojan).hexdigest()
    infected = ["node-1", "node-3"]
    plant = {"node-1": trojan, "node-2": b"<?php /* the real theme */ ?>\n", "node-3": trojan}
    for name, content in plant.items():
        lab.host(name).run(["mkdir", "-p", str(Path(TROJAN_PATH).parent)])
        lab.host(name).run(["tee", TROJAN_PATH], input=content)
    sql = (
        "SELECT system_info.hostname, path, sha256 FROM system_info, hash "
        f"WHERE path = '{TROJAN_PATH}' AND sha256 = '{digest}'"
    )
    try:
        over_bacalhau = run_cli(lab, "query", sql)
        over_ssh = run_cli(lab, "query", sql, "--via", "ssh")
    finally:
        for name in plant:
            lab.host(name).sh("rm -rf /var/www/htdocs")
    for result in (over_bacalhau, over_ssh):
        assert result.exit_code == 0, result.output
        rows = rows_of(result)
        assert sorted(r["nodeID"] for r in rows) == infected
        assert all(r["hostname"] == lab.host(r["nodeID"]).hostname for r in rows)
        assert all(r["sha256"] == digest and r["path"] == TROJAN_PATH for r in rows)
    assert canonical(rows_of(over_bacalhau)) == canonical(rows_of(over_ssh))


def test_both_transports_give_the_same_rows(provisioned_lab: Lab) -> None:
    sql = "SELECT username, uid, directory FROM users WHERE uid < 10 ORDER BY uid"
    results = [run_cli(provisioned_lab, "query", sql, "--via", via) for via in ("bacalhau", "ssh")]
    for result in results:
        assert result.exit_code == 0, result.output
    first, second = (rows_of(r) for r in results)
    assert {r["nodeID"] for r in first} == set(COMPUTE)
    assert any(r["username"] == "root" and r["uid"] == "0" for r in first)
    assert canonical(first) == canonical(second)


def summary_lines(result: CliResult, name: str, status: str) -> list[str]:
    """The closing summary's lines about host ``name`` (``node-2 (ip-10-...) failed: ...``)."""
    pattern = re.compile(rf"^\s*{re.escape(name)}( \([^)]*\))? {status}\b")
    return [line for line in result.stderr.splitlines() if pattern.match(line)]


def test_rows_carry_the_inventory_name_and_the_machine_hostname(provisioned_lab: Lab) -> None:
    """nodeID is the inventory name, hostname the machine's own, on both transports, even
    when the query returns no hostname column (node-2's machine is named ip-10-...)."""
    lab = provisioned_lab
    machines = {h.name: h.hostname for h in lab.compute_hosts}
    assert machines["node-2"] != "node-2"  # the lab's default: some machines named otherwise
    for via in ("bacalhau", "ssh"):
        result = run_cli(lab, "query", "SELECT 1 AS one", "--via", via)
        assert result.exit_code == 0, result.output
        tags = {(r["nodeID"], r["hostname"]) for r in rows_of(result)}
        assert tags == set(machines.items()), via
        single = run_cli(lab, "query", "SELECT 1 AS one", "--via", via, "--hosts", "node-2")
        assert single.exit_code == 0, single.output
        assert rows_of(single) == [{"nodeID": "node-2", "hostname": machines["node-2"], "one": "1"}]


def test_formats_and_output_file(provisioned_lab: Lab, tmp_path: Path) -> None:
    sql = "SELECT hostname, cpu_brand FROM system_info"
    target = tmp_path / "answer.csv"
    result = run_cli(
        provisioned_lab,
        "query",
        sql,
        "--format",
        "csv",
        "--output",
        str(target),
        "--select",
        "role=osquery",
        "--hosts",
        "node-1,node-3",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = target.read_text().splitlines()
    assert lines[0] == "nodeID,hostname,cpu_brand"
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["node-1", "node-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answer.csv"]
    table = run_cli(provisioned_lab, "query", sql, "--format", "table", "--via", "ssh")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split()[:2] == ["nodeID", "hostname"]
    ndjson = run_cli(provisioned_lab, "query", sql, "--format", "ndjson")
    assert sorted(json.loads(line)["nodeID"] for line in ndjson.stdout.splitlines()) == COMPUTE
    nobody = run_cli(provisioned_lab, "query", sql, "--select", "role=nosuch")
    assert (nobody.exit_code, json.loads(nobody.stdout)) == (1, [])
    assert "no compute node matches the selection" in nobody.stderr


# --------------------------------------------------------------------------- failures


def test_stopped_osqueryd_names_that_node_and_delivers_the_rest(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    broken = lab.host("node-2")
    for pid in broken.pids_of("osqueryd"):
        broken.sh(f"kill {pid}", check=False)
    wait_for(lambda: not broken.pids_of("osqueryd"), "osqueryd to stop on node-2")
    try:
        results = [
            run_cli(lab, "query", "SELECT hostname FROM system_info", "--via", via)
            for via in ("bacalhau", "ssh")
        ]
    finally:
        reprovision(lab)
    for result in results:
        assert result.exit_code == 1, result.output
        assert sorted(r["nodeID"] for r in rows_of(result)) == ["node-1", "node-3"]
        failure = summary_lines(result, "node-2", "failed")
        assert failure, result.stderr
        assert "exit" in failure[0] and "Error" in failure[0]
    healed = run_cli(lab, "query", "SELECT hostname FROM system_info")
    assert healed.exit_code == 0, healed.output


HOSTILE = [
    'it\'s "quoted" ; DROP TABLE users; --',
    "$(touch /tmp/{canary})",
    "`touch /tmp/{canary}`",
    "line one\nline two\r\n\ttab",
    "Zoë 日本語 \U0001f41f ü",
    "back\\slash %s %n {{}} <>&|",
]


def test_hostile_sql_reaches_osquery_byte_for_byte(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    canary = f"fleetkit-canary-{uuid.uuid4().hex[:8]}"
    literals = [text.replace("{canary}", canary) for text in HOSTILE]
    columns = ", ".join(f"{sql_literal(text)} AS c{i}" for i, text in enumerate(literals))
    sql = f"-- a comment first: must not be read as a flag\nSELECT {columns}"
    for via in ("bacalhau", "ssh"):
        result = run_cli(lab, "query", sql, "--via", via, "--hosts", "node-1")
        assert result.exit_code == 0, result.output
        (row,) = rows_of(result)
        assert [row[f"c{i}"] for i in range(len(literals))] == literals, via
        if via == "bacalhau":  # --hosts pins the job: no other node even ran it
            assert executed_on(lab, result) == ["node-1"]
    for host in lab.hosts:
        assert not host.exists(f"/tmp/{canary}"), host.name
    assert not Path(f"/tmp/{canary}").exists()


def test_bad_input_exits_2_and_submits_nothing(provisioned_lab: Lab) -> None:
    cases = [
        ("query", ""),
        ("query", "SELECT 1", "--via", "carrier-pigeon"),
        ("query", "SELECT 1", "--format", "xml"),
        ("query", "SELECT 1", "--select", "role!="),
        ("query", "SELECT 1", "--hosts", "node-99"),
        ("query", "SELECT 1", "--timeout", "-1"),
        ("query", "SELECT * FROM curl WHERE url = 'http://example.com'"),
    ]
    before = _job_count(provisioned_lab)
    for argv in cases:
        result = run_cli(provisioned_lab, *argv)
        assert result.exit_code == 2, (argv, result.output)
        assert result.stdout == ""
        assert "fleetkit: error:" in result.stderr
        assert "Traceback" not in result.output
    assert _job_count(provisioned_lab) == before


def executed_on(lab: Lab, result: CliResult) -> list[str]:
    """Nodes that ran the job named in the closing summary ``(job j-...)``."""
    match = re.search(r"\(job (j-[0-9a-f-]+)\)", result.stderr)
    assert match, result.stderr
    url = f"{lab.orchestrator_url}/api/v1/orchestrator/jobs/{match.group(1)}/executions"
    items = requests.get(url, timeout=10).json().get("Items") or []
    return sorted(item["NodeID"] for item in items)


def _job_count(lab: Lab) -> int:
    response = requests.get(f"{lab.orchestrator_url}/api/v1/orchestrator/jobs", timeout=10)
    response.raise_for_status()
    return len(response.json().get("Items") or [])


def test_ctrl_c_while_waiting_stops_the_job(provisioned_lab: Lab, tmp_path: Path) -> None:
    lab = provisioned_lab
    submitted: list[str] = []

    def recording_client(rt: Runtime) -> BacalhauClient:
        client = rt.orchestrator
        submit = client.submit_job

        def record(job: dict[str, Any]) -> Submitted:
            answer = submit(job)
            submitted.append(answer.job_id)
            return answer

        client.submit_job = record  # type: ignore[method-assign]
        return client

    sleeps: list[float] = []

    def interrupting_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    slow = SLOW_SQL
    target = tmp_path / "never.json"
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ=lab.environ(),
        cwd=str(lab.workdir),
        sleep=interrupting_sleep,
    )
    status = run_command(
        lambda rt: query.run(
            rt,
            sql=slow,
            select="",
            hosts="",
            via="bacalhau",
            output_format="json",
            output=str(target),
            timeout=None,
            client_factory=recording_client,
        ),
        Runtime(env=env),
    )
    assert status == 130
    assert env.stdout.getvalue() == ""  # type: ignore[attr-defined]
    assert not target.exists() and list(tmp_path.iterdir()) == []
    (job_id,) = submitted
    response = requests.get(f"{lab.orchestrator_url}/api/v1/orchestrator/jobs/{job_id}", timeout=10)
    assert response.json()["Job"]["State"]["StateType"] == "Stopped"
    # Stopped for real: the query no longer runs on any node.
    wait_for(
        lambda: not any(h.pids_of("osqueryi") for h in lab.compute_hosts),
        "the interrupted query to end on every node",
    )


SLOW_SQL = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000000) "
    "SELECT count(*) AS n FROM c"
)


def test_timeout_stops_the_job_and_names_the_slow_node(provisioned_lab: Lab) -> None:
    lab = provisioned_lab
    for via in ("bacalhau", "ssh"):
        result = run_cli(
            lab, "query", SLOW_SQL, "--hosts", "node-1", "--timeout", "1", "--via", via
        )
        assert result.exit_code == 1, result.output
        assert json.loads(result.stdout) == []
        assert "node-1 timed out" in result.stderr, result.stderr
    jobs = requests.get(f"{lab.orchestrator_url}/api/v1/orchestrator/jobs", timeout=10).json()
    newest = max(jobs["Items"], key=lambda job: job["CreateTime"])
    # Stopped by fleetkit at its deadline, or failed by the node's ExecutionTimeout
    # (same second): either way nothing is left running.
    assert newest["State"]["StateType"] in ("Stopped", "Failed")


# --------------------------------------------------------------------------- big outputs via S3


@pytest.fixture
def s3_lab(lab_factory: Callable[..., Lab]) -> Iterator[Lab]:
    lab = lab_factory(compute=2, s3=True)
    result = run_cli(lab, "provision")
    assert result.exit_code == 0, result.output
    try:
        # Generous: on a shared 2-core machine under load, joining can be slow.
        wait_connected(lab, [h.name for h in lab.compute_hosts], timeout=60)
    except AssertionError as exc:
        logs = {
            h.name: h.sh("tail -n 20 /var/log/bacalhau.log", check=False).stdout for h in lab.hosts
        }
        raise AssertionError(f"{exc}\nagent logs: {logs}\nprovision: {result.stderr}") from None
    yield lab


def test_outputs_over_2kb_come_whole_from_s3(s3_lab: Lab) -> None:
    lab = s3_lab
    sql = "SELECT name, version, arch FROM deb_packages"
    over_bacalhau = run_cli(lab, "query", sql)
    over_ssh = run_cli(lab, "query", sql, "--via", "ssh")
    for result in (over_bacalhau, over_ssh):
        assert result.exit_code == 0, result.output
    rows = rows_of(over_bacalhau)
    for node in ("node-1", "node-2"):
        mine = [r for r in rows if r["nodeID"] == node]
        assert len(json.dumps(mine)) > 2048, "the test needs more than RunOutput's 2 KB"
        assert any(r["name"] == "osquery" for r in mine)
    assert canonical(rows) == canonical(rows_of(over_ssh))
    assert lab.s3 is not None and lab.s3.keys()

    # A 64 KB query whose answer is itself 64 KB, byte for byte on both paths.
    big = "".join(chr(0x20 + (i * 7) % 90) for i in range(64 * 1024 - 64)).replace("'", "x")
    big_sql = f"SELECT {sql_literal(big)} AS big, 'é' AS e"
    assert 63 * 1024 < len(big_sql.encode()) <= 64 * 1024
    for via in ("bacalhau", "ssh"):
        result = run_cli(lab, "query", big_sql, "--via", via, "--hosts", "node-1")
        assert result.exit_code == 0, (via, result.stderr)
        (row,) = rows_of(result)
        machine = lab.host("node-1").hostname
        assert row == {"nodeID": "node-1", "hostname": machine, "big": big, "e": "é"}, via

    # A node whose agent runs without the allow-list is skipped by the orchestrator:
    # fleetkit names it as missing (with the reason) instead of dropping it silently.
    broken = lab.host("node-2")
    broken.sh("sed -i '/AllowListedLocalPaths:/,+1d' /etc/bacalhau/config.yaml")
    broken.sh(RESTART_AGENT)
    wait_until_lacks_local_storage(lab, "node-2")
    result = run_cli(lab, "query", "SELECT hostname FROM system_info")
    assert result.exit_code == 1, result.output
    assert [r["nodeID"] for r in rows_of(result)] == ["node-1"]
    missing = summary_lines(result, "node-2", "missing")
    assert missing and "AllowListedLocalPaths" in missing[0], result.stderr


#: Restart the agent by hand, the way fleetkit starts it on hosts without systemd.
RESTART_AGENT = (
    "start-stop-daemon --stop --oknodo --retry TERM/10/KILL/5 --remove-pidfile "
    "--pidfile /run/fleetkit/bacalhau.pid; "
    "set -a; [ -f /etc/bacalhau/env ] && . /etc/bacalhau/env; set +a; "
    "start-stop-daemon --start --background --make-pidfile --pidfile /run/fleetkit/bacalhau.pid "
    "--exec /usr/bin/python3 -- /usr/local/bin/bacalhau serve --config /etc/bacalhau/config.yaml"
)


def wait_until_lacks_local_storage(lab: Lab, node: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(lab)}
        info = nodes.get(node, {}).get("Info", {})
        storage = (info.get("ComputeNodeInfo") or {}).get("StorageSources") or []
        if connection_of(nodes.get(node, {})) == "CONNECTED" and "local" not in storage:
            return
        time.sleep(0.2)
    raise AssertionError(f"{node} still advertises local storage after {timeout}s")


# --------------------------------------------------------------- one behaviour for `| head`

REPO = Path(__file__).resolve().parents[2]
MANY_ROWS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) "
    "SELECT x FROM c"
)


def test_a_closed_pipe_is_reported_the_same_by_both_entry_points(provisioned_lab: Lab) -> None:
    """``fleetkit query ... | head`` and ``invoke query ... | head``: report, summary, exit 0."""
    entry_points = {
        "fleetkit": [sys.executable, "-c", "from fleetkit.cli import main; main()"],
        "invoke": [sys.executable, "-m", "invoke", "--search-root", str(REPO)],
    }
    for name, argv in entry_points.items():
        command = shlex.join([*argv, "query", MANY_ROWS, "--via", "ssh", "--format", "ndjson"])
        script = f'{command} | head -n 2; echo "exit=${{PIPESTATUS[0]}}" >&2'
        done = subprocess.run(
            ["bash", "-c", script],
            env=provisioned_lab.environ(),
            cwd=provisioned_lab.workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert len(done.stdout.splitlines()) == 2, (name, done.stderr)
        assert "exit=0" in done.stderr, (name, done.stderr)
        assert "the reader closed the output early" in done.stderr, name
        assert "60000 rows from 3/3 nodes" in done.stderr, name
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, name


# --------------------------------------------------------------------------- strangers


def test_a_rogue_node_is_excluded_unless_asked_for(lab_factory: Callable[..., Lab]) -> None:
    from tests.e2e.test_nodes import start_rogue, status_of, wait_for

    lab = lab_factory(compute=1)
    assert run_cli(lab, "provision").exit_code == 0
    wait_connected(lab, ["node-1"])
    start_rogue(lab)
    wait_for(lab, "rogue-1", lambda n: status_of(n) == "CONNECTED")

    result = run_cli(lab, "query", "SELECT hostname FROM system_info")
    assert result.exit_code == 0, result.output
    assert [r["nodeID"] for r in rows_of(result)] == ["node-1"]
    assert "from 1/1 nodes" in result.stderr
    line = next(x for x in result.stderr.splitlines() if "rogue-1" in x)
    assert "excluded" in line and "not in the inventory" in line
    assert executed_on(lab, result) == ["node-1"]  # the stranger never got the SQL

    # On request it is asked too, and marked (it has no osquery: it fails, named as a stranger).
    result = run_cli(lab, "query", "SELECT hostname FROM system_info", "--include-unknown-nodes")
    assert [r["nodeID"] for r in rows_of(result)] == ["node-1"]
    assert "rogue-1 [not in the inventory]" in result.stderr, result.stderr
    assert sorted(executed_on(lab, result)) == ["node-1", "rogue-1"]
