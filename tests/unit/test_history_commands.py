"""The history through the commands: query/policy/hunt record, show, diff, retry, coverage.

A scripted orchestrator (``tests.unit.test_query_unit``) and scripted fleets
(``tests.unit.test_policy``) stand in for the fleet; everything else is real:
the settings file, the history file beside it, the commands and their exit codes.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetkit.cli import run_command
from fleetkit.commands import history as history_command
from fleetkit.commands import hunt as hunt_command
from fleetkit.commands import policy as policy_command
from fleetkit.commands import query as query_command
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.status import ExitStatus
from fleetkit.history import HistorySettings, RunStatus, open_history
from fleetkit.runtime import Runtime
from tests.unit.test_history_faults import tmpfs
from tests.unit.test_policy import EC_ENC, PEM_RSA, SSH_PACK, fleet_for_ssh_rule
from tests.unit.test_query_unit import (
    FakeClock,
    ScriptedClient,
    done,
    execution,
    node_state,
    write_fleet,
)

SQL = "SELECT name, pid FROM processes"
SSHD = {"name": "sshd", "pid": "1"}
CRON = {"name": "cron", "pid": "2"}


class Fleet:
    """One settings directory; each ``run`` is a fresh command run with its own streams."""

    def __init__(
        self,
        tmp: Path,
        history: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.settings = write_fleet(tmp, query)
        if history is not None:
            data = json.loads(self.settings.read_text())
            data["history"] = history
            self.settings.write_text(json.dumps(data))
        self.environ = {"TOKEN": "t0ken-value", **(environ or {})}
        self.fake = FakeClock()
        self.out = ""
        self.err = ""

    def runtime(self) -> Runtime:
        env = Environment(
            stdout=io.StringIO(),
            stderr=io.StringIO(),
            environ=self.environ,
            cwd=str(self.tmp),
            clock=self.fake.clock,
            sleep=self.fake.sleep,
        )
        return Runtime(env=env, settings_path=str(self.settings))

    def run(self, work: Callable[[Runtime], ExitStatus]) -> int:
        rt = self.runtime()
        status = run_command(work, rt)
        self.out = rt.env.stdout.getvalue()  # type: ignore[attr-defined]
        self.err = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
        return int(status)

    def query(self, client: ScriptedClient | None, fmt: str = "json", **options: Any) -> int:
        def factory(_: Runtime) -> ScriptedClient:
            if client is None:
                raise AssertionError("the orchestrator must not be contacted")
            return client

        options = {"sql": SQL, "select": "", "hosts": "", "via": "bacalhau", **options}
        return self.run(
            lambda rt: query_command.run(
                rt,
                output_format=fmt,
                output=options.pop("output", None),
                timeout=None,
                client_factory=factory,
                **options,
            )
        )

    def show(self, run_id: str, fmt: str = "") -> int:
        return self.run(
            lambda rt: history_command.show(rt, run_id=run_id, output_format=fmt, output=None)
        )

    def diff(self, *runs: str, fmt: str = "json") -> int:
        return self.run(
            lambda rt: history_command.diff(rt, runs=list(runs), output_format=fmt, output=None)
        )

    def listing(self, fmt: str = "json", kind: str = "") -> list[dict[str, Any]]:
        status = self.run(
            lambda rt: history_command.list_runs(rt, kind=kind, limit=50, output_format=fmt)
        )
        assert status == 0, self.err
        return list(json.loads(self.out))

    @property
    def history_path(self) -> Path:
        return self.tmp / ".fleetkit" / "history.db"

    def last_run(self) -> str:
        return str(self.listing()[0]["run_id"])


def client_for(fleet: Fleet, answers: dict[str, list[dict[str, str]] | str | None]) -> Any:
    """Every node CONNECTED; each answers rows, fails with the text, or never finishes."""
    plan: dict[str, Any] = {}
    for node, answer in answers.items():
        if answer is None:
            plan[node] = None
        elif isinstance(answer, str):
            plan[node] = (0.1, execution(node, 9, exit_code=1, stderr=answer))
        else:
            plan[node] = (0.1, done(node, answer))
    return ScriptedClient(fleet.fake, [node_state(n) for n in answers], plan)


# --------------------------------------------------------------------------- recording


def test_a_query_is_recorded_with_its_coverage_and_show_prints_it_again(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    client = client_for(fleet, {"node-1": [SSHD, CRON], "node-2": [], "node-3": "Error: boom"})
    printed = {}
    for fmt in ("json", "ndjson", "csv", "table"):
        assert fleet.query(client, fmt) == 1, fleet.err
        summary = fleet.err
        printed[fmt] = (fleet.out, fleet.last_run())
    assert "coverage: 2/3 nodes answered (67%): 1 with rows, 1 empty, 1 failed" in summary
    assert f"history: recorded as run {printed['table'][1]}" in summary
    assert "node-3 failed" in summary
    for fmt, (output, run_id) in printed.items():
        assert fleet.show(run_id, fmt) == 0, fleet.err
        assert fleet.out == output, fmt
    run = fleet.listing()[0]
    assert run["coverage"] == {
        "rows": 1,
        "empty": 1,
        "failed": 1,
        "timed_out": 0,
        "missing": 0,
        "excluded": 0,
    }
    assert (run["kind"], run["question"], run["transport"], run["job_id"]) == (
        "query",
        SQL,
        "bacalhau",
        "j-1",
    )
    assert run["status"] == "complete" and run["rows"] == 2


def test_no_history_records_nothing_and_still_reports_coverage(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    client = client_for(fleet, {"node-1": [SSHD], "node-2": [SSHD], "node-3": [SSHD]})
    assert fleet.query(client, no_history=True) == 0, fleet.err
    assert "coverage: 3/3 nodes answered (100%)" in fleet.err
    assert not fleet.history_path.exists()


def test_min_coverage(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    answers: dict[str, Any] = {"node-1": [SSHD], "node-2": [SSHD], "node-3": "Error: gone"}
    assert fleet.query(client_for(fleet, answers), min_coverage="90") == 1
    assert "coverage 67% is below --min-coverage 90%" in fleet.err
    assert fleet.query(None, min_coverage="150") == 2
    assert "--min-coverage" in fleet.err and fleet.out == ""
    assert fleet.query(None, min_coverage="lots") == 2


# --------------------------------------------------------------------------- bad history


def test_a_corrupt_history_is_exit_2_before_anything_is_submitted(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.history_path.parent.mkdir()
    fleet.history_path.write_bytes(b"not a database, not at all\n" * 100)
    assert fleet.query(None) == 2  # the factory would fail the test if the fleet were asked
    assert str(fleet.history_path) in fleet.err and "corrupt" in fleet.err
    assert fleet.out == ""
    # --no-history runs without it.
    client = client_for(fleet, {"node-1": [SSHD], "node-2": [], "node-3": []})
    assert fleet.query(client, no_history=True) == 0, fleet.err
    assert json.loads(fleet.out) == [{"nodeID": "node-1", "hostname": "node-1", **SSHD}]


def test_a_locked_history_is_exit_2_before_anything_is_submitted(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, history={"lock_timeout": 0.2})
    assert fleet.query(client_for(fleet, {"node-1": [SSHD], "node-2": [], "node-3": []})) == 0
    holder = sqlite3.connect(fleet.history_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert fleet.query(None) == 2
        assert "locked by another process" in fleet.err and str(fleet.history_path) in fleet.err
    finally:
        holder.close()


def test_policy_and_hunt_refuse_a_bad_history_before_asking(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.history_path.parent.mkdir()
    fleet.history_path.mkdir()  # a directory where the file should be
    asked: list[str] = []

    def ask(question: Any, scope: Any) -> Any:
        asked.append(question.sql)
        raise AssertionError("asked")

    assert policy_run(fleet, {}, ask=ask) == 2 and "is a directory" in fleet.err
    assert hunt_run(fleet, ask, path="/x") == 2 and str(fleet.history_path) in fleet.err
    assert asked == []


def test_a_disk_that_fills_delivers_the_output_whole_and_exits_1(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as mount:
        fleet = Fleet(tmp_path, history={"path": str(mount / "history.db")})
        # ~3 x 700 KB of incompressible rows: more than the 1 MB the history may use
        rows = {
            node: [{"blob": secrets.token_hex(512), "n": str(i)} for i in range(700)]
            for node in ("node-1", "node-2", "node-3")
        }
        status = fleet.query(client_for(fleet, dict(rows)))
        assert status == 1, fleet.err
        merged = json.loads(fleet.out)
        assert len(merged) == 2100
        assert {r["nodeID"] for r in merged} == set(rows)
        assert "INCOMPLETE" in fleet.err and "full" in fleet.err
        with open_history(HistorySettings(path=str(mount / "history.db")), for_writing=False) as h:
            assert h.list_runs()[0].status is RunStatus.INCOMPLETE


# --------------------------------------------------------------------------- show / diff


def test_unknown_runs_and_different_questions_are_exit_2(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    assert fleet.show("20261101T000000.000Z-abcd") == 2
    assert "no history" in fleet.err and "nothing recorded yet" in fleet.err
    assert fleet.listing() == [] and "nothing recorded yet" in fleet.err
    assert not fleet.history_path.exists()
    fleet.query(client_for(fleet, {"node-1": [SSHD]}))
    first = fleet.last_run()
    fleet.query(client_for(fleet, {"node-1": [SSHD]}), sql="SELECT pid FROM processes")
    second = fleet.last_run()
    assert fleet.show("nosuchrun") == 2 and "no run 'nosuchrun'" in fleet.err
    assert fleet.diff("nosuchrun") == 2 and "no run 'nosuchrun'" in fleet.err
    assert fleet.diff(first, second) == 2
    assert first in fleet.err and second in fleet.err and "same question" in fleet.err
    assert fleet.query(None, sql="nosuchrun", retry_missing=True) == 2
    assert fleet.diff(first, second, "x") == 2 and "at most two" in fleet.err
    assert (
        fleet.run(
            lambda rt: history_command.list_runs(rt, kind="nope", limit=5, output_format="json")
        )
        == 2
    )


def test_query_diff_shows_exactly_what_changed_on_which_node(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    before = {"node-1": [SSHD, CRON], "node-2": [SSHD, CRON], "node-3": "Error: down"}
    assert fleet.query(client_for(fleet, before), diff=True) == 1
    assert json.loads(fleet.out) == [] and "baseline" in fleet.err
    kworker = {"name": "kworkerd", "pid": "666"}
    after = {"node-1": [CRON, SSHD], "node-2": [CRON, kworker, SSHD], "node-3": [SSHD]}
    assert fleet.query(client_for(fleet, after), diff=True) == 0
    events = json.loads(fleet.out)
    assert events == [
        {"action": "added", "nodeID": "node-2", "hostname": "node-2", "columns": kworker},
        {
            "action": "appeared",
            "nodeID": "node-3",
            "hostname": "node-3",
            "before": "failed",
            "after": "rows",
        },
    ]
    assert "1 row change(s), 1 node(s) appeared" in fleet.err
    # The same diff by run ids, and by default (the last two runs), in every format.
    runs = [r["run_id"] for r in fleet.listing()]
    assert fleet.diff() == 0 and json.loads(fleet.out) == events
    assert fleet.diff(runs[1], runs[0], fmt="ndjson") == 0
    assert [json.loads(line) for line in fleet.out.splitlines()] == events
    assert fleet.diff(runs[1], fmt="csv") == 0
    assert list(csv.DictReader(io.StringIO(fleet.out))) == [
        {"action": "added", "nodeID": "node-2", "hostname": "node-2", **kworker}
    ]
    assert fleet.diff(runs[0], runs[1]) == 0  # backwards: the process went away
    assert json.loads(fleet.out)[0]["action"] == "removed"


# --------------------------------------------------------------------------- retry


def test_retry_missing_completes_the_run_and_show_marks_the_late_rows(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    first = {"node-1": [SSHD], "node-2": [CRON], "node-3": "Error: socket gone"}
    assert fleet.query(client_for(fleet, first)) == 1
    shown_before = fleet.out
    run_id = fleet.last_run()
    late = client_for(fleet, {"node-3": [SSHD, CRON]})
    assert fleet.query(late, sql=run_id, retry_missing=True) == 0, fleet.err
    assert late.submitted and len(late.submitted) == 1
    assert "retry: asking node-3 again" in fleet.err
    retried = json.loads(fleet.out)
    assert {r["nodeID"] for r in retried} == {"node-3"}
    assert all(r["answeredLate"] == "true" for r in retried)
    assert "coverage: 3/3 nodes answered (100%)" in fleet.err
    assert fleet.show(run_id) == 0
    shown = json.loads(fleet.out)
    assert [r for r in shown if r["nodeID"] != "node-3"] == [
        dict(r) for r in json.loads(shown_before)
    ]
    assert [r for r in shown if r["nodeID"] == "node-3"] == retried
    assert "node-3: answered late" in fleet.err
    run = fleet.listing()[0]
    assert run["run_id"] == run_id and run["late_nodes"] == 1
    assert run["coverage"]["failed"] == 0 and run["coverage"]["rows"] == 3
    # Nothing left to retry.
    assert fleet.query(None, sql=run_id, retry_missing=True) == 0
    assert "nothing to retry" in fleet.err


def test_retry_missing_refuses_what_it_cannot_ask(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.query(client_for(fleet, {"node-1": "Error: x"}))
    run_id = fleet.last_run()
    assert fleet.query(None, sql=run_id, retry_missing=True, hosts="node-1") == 2
    assert fleet.query(None, sql=run_id, retry_missing=True, no_history=True) == 2
    assert policy_run(fleet, {"node-1": "Error: down"}) == 1
    assert fleet.query(None, sql=fleet.last_run(), retry_missing=True) == 2
    assert "policy run" in fleet.err and "invoke policy again" in fleet.err


# --------------------------------------------------------------------------- policy state


def policy_run(fleet: Fleet, keys: dict[str, Any], fmt: str = "json", **kw: Any) -> int:
    """``invoke policy`` with the shipped SSH-key pack, the fleet answering from ``keys``."""
    options = {"ask": fleet_for_ssh_rule(keys), **kw}
    return fleet.run(
        lambda rt: policy_command.run(
            rt, packs=[str(SSH_PACK)], hosts="", select="", via="ssh", output_format=fmt, **options
        )
    )


def hunt_run(fleet: Fleet, ask: Any, fmt: str = "json", **indicator: str) -> int:
    """``invoke hunt`` for ``indicator`` (path, sha256), the fleet answering through ``ask``."""
    options = {"path": None, "sha256": None, "ioc_file": None, **indicator}
    return fleet.run(
        lambda rt: hunt_command.run(
            rt, hosts="", select="", via="ssh", output_format=fmt, ask=ask, **options
        )
    )


def ssh_rule_state(fleet: Fleet) -> dict[str, dict[str, Any]]:
    records = json.loads(fleet.out)
    return {r["nodeID"]: r for r in records if r["policy"] == "ssh_private_keys_encrypted_ec"}


def test_policy_newly_failing_still_failing_fixed(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    clean = {"node-1": [EC_ENC], "node-2": [EC_ENC]}
    assert policy_run(fleet, clean) == 0, fleet.err
    assert ssh_rule_state(fleet)["node-1"]["transition"] == "still_passing"
    passed_at = ssh_rule_state(fleet)["node-1"]["last_passed_at"]
    assert passed_at is not None
    bad = {"node-1": [EC_ENC, PEM_RSA], "node-2": [EC_ENC]}
    assert policy_run(fleet, bad) == 3
    planted = ssh_rule_state(fleet)["node-1"]
    assert (planted["status"], planted["transition"]) == ("FAIL", "newly_failing")
    assert planted["first_failed_at"] and planted["last_passed_at"] == passed_at
    assert policy_run(fleet, bad, "table", grace="0.0000001") == 3
    assert "still failing" in fleet.out and "OVERDUE" in fleet.out
    assert policy_run(fleet, bad) == 3
    again = ssh_rule_state(fleet)["node-1"]
    assert again["transition"] == "still_failing"
    assert again["first_failed_at"] == planted["first_failed_at"]
    assert policy_run(fleet, clean) == 0
    fixed = ssh_rule_state(fleet)["node-1"]
    assert (fixed["status"], fixed["transition"], fixed["first_failed_at"]) == (
        "PASS",
        "fixed",
        None,
    )
    # show prints a policy run as it was printed, states included.
    for fmt in ("json", "csv", "table"):
        assert policy_run(fleet, bad, fmt) == 3
        printed = fleet.out
        assert fleet.show(fleet.last_run(), fmt) == 0, fleet.err
        assert fleet.out == printed, fmt
    assert policy_run(fleet, bad, grace="-1") == 2 and "--grace" in fleet.err


def test_policy_without_history_has_no_state(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    assert policy_run(fleet, {"node-1": [PEM_RSA]}, no_history=True) == 3
    record = ssh_rule_state(fleet)["node-1"]
    assert record["transition"] is None and record["first_failed_at"] is None
    assert not fleet.history_path.exists()


def test_hunt_runs_are_recorded_and_shown_again(tmp_path: Path) -> None:
    from tests.unit.test_policy import ScriptedFleet

    fleet = Fleet(tmp_path)
    digest = "a" * 64
    hit = {"path": "/srv/x.php", "sha256": digest}
    ask = ScriptedFleet({"FROM hash": {"node-1": [hit], "node-2": [], "node-3": "Error: x"}})
    for fmt in ("table", "json"):
        assert hunt_run(fleet, ask, fmt, path="/srv/x.php", sha256=digest) == 3, fleet.err
        printed = fleet.out
        assert fleet.show(fleet.last_run(), fmt) == 0
        assert fleet.out == printed
    assert json.loads(printed) == [{"hostname": "node-1", "nodeID": "node-1", **hit}]
    run = fleet.listing(kind="hunt")[0]
    assert run["coverage"]["rows"] == 1 and run["coverage"]["failed"] == 1
    assert len(fleet.listing(kind="hunt")) == 2


def test_history_lists_newest_first_in_every_format(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    for answers in ({"node-1": [SSHD]}, {"node-1": None}):
        fleet.query(client_for(fleet, answers))
    runs = fleet.listing()
    assert len(runs) == 2 and runs[0]["started_at"] >= runs[1]["started_at"]
    assert (
        fleet.run(lambda rt: history_command.list_runs(rt, kind="", limit=1, output_format="table"))
        == 0
    )
    lines = fleet.out.splitlines()
    assert lines[0].split()[:3] == ["RUN_ID", "KIND", "STARTED_AT"]
    assert len(lines) == 2 and runs[0]["run_id"] in lines[1]
