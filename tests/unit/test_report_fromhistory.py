"""The fleet report filled from a history written through the history's own API."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetkit.cli import run_command
from fleetkit.commands import report as command
from fleetkit.foundation.status import ExitStatus
from fleetkit.history import History, HistoryError, PolicyVerdict, Question
from fleetkit.history.verifyrun import CheckRecord, HostRecord, latest_verified, record_verify
from fleetkit.report.fromhistory import (
    HITS_KEPT,
    TREND_RUNS,
    Period,
    build_report,
    policy_matrix,
)
from fleetkit.report.model import ROW_LIMIT, Coverage, PolicyStatus
from tests.unit.history_helpers import START, Clock, Node, open_store, record
from tests.unit.test_policy import err, make_runtime

P, F, U, E = PolicyStatus.PASS, PolicyStatus.FAIL, PolicyStatus.UNKNOWN, PolicyStatus.ERROR
DAY = timedelta(days=1)
SSH = "ssh-keys/ssh_private_keys_encrypted"
ROOT = "accounts/no_root_login"


def policy_run(
    history: History, at: datetime, verdicts: dict[tuple[str, str], str], *, pack: str = "p"
) -> str:
    """One policy run: the given (host, policy) verdicts, every host answering."""
    recorder = history.begin_run(
        kind="policy",
        question=Question("SELECT 1", pack=pack),
        scope={"hosts": None},
        transport="bacalhau",
        started_at=at,
    )
    hosts = sorted({host for host, _ in verdicts})
    for host in hosts:
        recorder.add_node(node_id=host, hostname=host, status="ok", rows=[{"status": "x"}])
    recorder.add_verdicts(
        PolicyVerdict(host, host, policy, verdict) for (host, policy), verdict in verdicts.items()
    )
    recorder.finish(ended_at=at + timedelta(seconds=5))
    return recorder.run_id


def period(clock: Clock, days: float | None = None) -> Period:
    return Period(clock.now, clock.now - timedelta(days=days) if days is not None else None)


# --------------------------------------------------------------------------- policies


def test_policy_matrix_status_first_failed_at_and_trend(tmp_path: Path) -> None:
    clock = Clock(START + 10 * DAY)
    history = open_store(tmp_path, clock)
    days = [START + i * DAY for i in range(4)]
    statuses = {
        "node-a": ["PASS", "PASS", "PASS", "PASS"],
        "node-b": ["PASS", "PASS", "FAIL", "FAIL"],
        # UNKNOWN neither fixes nor breaks a failing streak: it began on day 0.
        "node-c": ["FAIL", "UNKNOWN", "FAIL", "FAIL"],
    }
    for index, at in enumerate(days):
        verdicts = {(host, SSH): seq[index] for host, seq in statuses.items()}
        if index < 2:
            verdicts[("node-d", SSH)] = "ERROR"  # node-d left the fleet after day 1
        policy_run(history, at, verdicts)
    matrix = policy_matrix(history, period(clock))
    assert matrix.policies == (SSH,)
    assert len(matrix.runs) == 4
    cells = {row.host: row.cells[0] for row in matrix.hosts}
    assert cells["node-a"] is not None and cells["node-a"].status is P
    assert cells["node-a"].first_failed_at is None
    b, c, d = cells["node-b"], cells["node-c"], cells["node-d"]
    assert b is not None and c is not None and d is not None
    assert (b.status, b.first_failed_at, b.trend) == (F, days[2], (P, P, F, F))
    assert (c.status, c.first_failed_at, c.trend) == (F, days[0], (F, U, F, F))
    assert (d.status, d.trend) == (E, (E, E, None, None))
    assert matrix.failing_hosts == 2


def test_a_streak_that_began_before_the_period_keeps_its_start(tmp_path: Path) -> None:
    clock = Clock(START + 30 * DAY)
    history = open_store(tmp_path, clock)
    for day in (0, 27, 29):
        policy_run(history, START + day * DAY, {("node-b", SSH): "FAIL"})
    matrix = policy_matrix(history, period(clock, days=7))
    cell = matrix.hosts[0].cells[0]
    assert cell is not None
    assert cell.trend == (F, F)  # only the two runs of the period
    assert cell.first_failed_at == START  # but the streak began on day 0


def test_a_run_of_another_pack_is_no_gap_in_a_trend(tmp_path: Path) -> None:
    clock = Clock(START + 10 * DAY)
    history = open_store(tmp_path, clock)
    policy_run(history, START, {("node-1", SSH): "PASS"}, pack="ssh")
    policy_run(history, START + DAY, {("node-1", ROOT): "FAIL"}, pack="accounts")
    policy_run(history, START + 2 * DAY, {("node-1", SSH): "FAIL"}, pack="ssh")
    matrix = policy_matrix(history, period(clock))
    assert matrix.policies == (ROOT, SSH)
    root, ssh = matrix.hosts[0].cells
    assert root is not None and ssh is not None
    assert root.trend == (F,)
    assert ssh.trend == (P, F)
    assert ssh.first_failed_at == START + 2 * DAY
    assert root.first_failed_at == START + DAY


def test_trends_span_the_newest_runs_only(tmp_path: Path) -> None:
    clock = Clock(START + 60 * DAY)
    history = open_store(tmp_path, clock)
    for day in range(TREND_RUNS + 5):
        policy_run(history, START + day * DAY, {("node-1", SSH): "PASS" if day < 5 else "FAIL"})
    matrix = policy_matrix(history, period(clock))
    cell = matrix.hosts[0].cells[0]
    assert len(matrix.runs) == TREND_RUNS
    assert cell is not None and cell.trend == (F,) * TREND_RUNS
    assert cell.first_failed_at == START + 5 * DAY  # older than the trend, still exact


def test_no_policy_run_in_the_period_is_an_empty_matrix(tmp_path: Path) -> None:
    clock = Clock(START + 30 * DAY)
    history = open_store(tmp_path, clock)
    policy_run(history, START, {("node-1", SSH): "FAIL"})
    assert policy_matrix(history, period(clock, days=7)).hosts == ()
    assert policy_matrix(history, period(clock)).failing_hosts == 1


# --------------------------------------------------------------------------- hunts, coverage


def test_hunts_hits_hosts_and_coverage(tmp_path: Path) -> None:
    clock = Clock(START + DAY)
    history = open_store(tmp_path, clock)
    trojan = {"path": "/var/www/x/functions.php", "sha256": "ef" * 32}
    record(
        history,
        [
            Node("node-1", [trojan]),
            Node("node-2", []),
            Node("node-3", [trojan, {**trojan, "path": "/srv/<script>x</script>"}]),
            Node("node-4", status="timed out"),
        ],
        kind="hunt",
        sql="SELECT path, sha256 FROM hash WHERE path = '/var/www/x/functions.php'",
        started_at=START,
    )
    model = build_report(history, period(clock), fleetkit_version="t")
    (hunt,) = model.hunts
    assert hunt.hosts_hit == ("node-1", "node-3")
    assert hunt.hit_count == 3
    assert [(h.host, h.path) for h in hunt.hits] == [
        ("node-1", trojan["path"]),
        ("node-3", trojan["path"]),
        ("node-3", "/srv/<script>x</script>"),  # kept exact: the renderer escapes it
    ]
    assert hunt.coverage == Coverage(with_rows=2, empty=1, timed_out=1)
    assert "functions.php" in hunt.question
    assert model.coverage[0].kind == "hunt"


def test_a_huge_hunt_keeps_the_first_hits_and_counts_all(tmp_path: Path) -> None:
    clock = Clock(START + DAY)
    history = open_store(tmp_path, clock)
    rows = [{"path": f"/tmp/f{i}", "sha256": ""} for i in range(HITS_KEPT + 10)]
    record(history, [Node("node-1", rows), Node("node-2", rows[:5])], kind="hunt", started_at=START)
    (hunt,) = build_report(history, period(clock), fleetkit_version="t").hunts
    assert len(hunt.hits) == HITS_KEPT
    assert hunt.hit_count == HITS_KEPT + 15
    assert hunt.hosts_hit == ("node-1", "node-2")


def test_coverage_of_recent_runs_without_verify_and_within_the_period(tmp_path: Path) -> None:
    clock = Clock(START + 10 * DAY)
    history = open_store(tmp_path, clock)
    record(history, [Node("node-1", [{"a": "1"}])], started_at=START)  # before the period
    record(
        history,
        [
            Node("node-1", [{"a": "1"}]),
            Node("node-2", []),
            Node("node-3", status="failed", error="osquery: no such table"),
            Node("node-4", status="missing"),
            Node("node-5", status="excluded"),
        ],
        started_at=START + 8 * DAY,
    )
    record_verify(history, [HostRecord("node-1", "compute", True)], scope={})
    model = build_report(history, period(clock, days=7), fleetkit_version="t")
    (run,) = model.coverage
    assert run.kind == "query"
    assert run.coverage == Coverage(with_rows=1, empty=1, failed=1, missing=1, excluded=1)
    assert run.started_at == START + 8 * DAY


# --------------------------------------------------------------------------- readiness


def checks(*failing: str) -> tuple[CheckRecord, ...]:
    names = ("ssh", "osquery.package", "cluster.node")
    return tuple(
        CheckRecord(name, "fail" if name in failing else "pass", f"evidence of {name}")
        for name in names
    )


def test_readiness_each_host_from_the_newest_verify_that_judged_it(tmp_path: Path) -> None:
    clock = Clock(START)
    history = open_store(tmp_path, clock)
    record_verify(
        history,
        [
            HostRecord("orch-1", "control_plane", True, checks()),
            HostRecord("node-1", "compute", False, checks("cluster.node")),
            HostRecord("node-2", "compute", True, checks(), osquery_version="5.23.1-1.linux"),
        ],
        scope={"hosts": None},
    )
    clock.advance(hours=2)
    record_verify(history, [HostRecord("node-1", "compute", True, checks())], scope={})
    model = build_report(history, period(clock, days=7), fleetkit_version="t")
    shown = {h.host: h for h in model.readiness}
    assert set(shown) == {"orch-1", "node-1", "node-2"}
    assert shown["node-1"].ready and shown["node-1"].verified_at == START + timedelta(hours=2)
    assert shown["node-2"].verified_at == START
    assert shown["orch-1"].role == "control_plane"
    assert model.coverage == ()  # verify runs are readiness, not coverage
    seen = {v.record.host: v.record for v in latest_verified(history)}
    assert seen["node-2"].osquery_version == "5.23.1-1.linux"
    assert seen["node-2"].bacalhau_version is None


def test_a_host_not_ready_names_its_failing_checks(tmp_path: Path) -> None:
    history = open_store(tmp_path)
    record_verify(
        history,
        [HostRecord("node-3", "compute", False, checks("ssh", "cluster.node"))],
        scope={},
    )
    (host,) = build_report(history, Period(START + DAY), fleetkit_version="t").readiness
    assert not host.ready
    assert [(c.name, c.evidence) for c in host.failing] == [
        ("ssh", "evidence of ssh"),
        ("cluster.node", "evidence of cluster.node"),
    ]


# --------------------------------------------------------------------------- queries


def test_queries_keep_the_first_rows_tagged_and_count_the_rest(tmp_path: Path) -> None:
    clock = Clock(START + DAY)
    history = open_store(tmp_path, clock)
    hostile = "<img src=x onerror=alert(1)>\x1b[31m"
    rows = [{"name": f"p{i}", "cmdline": hostile} for i in range(ROW_LIMIT)]
    record(
        history,
        [Node("node-1", rows, hostname="web-1"), Node("node-2", rows)],
        sql="SELECT name, cmdline FROM processes",
        started_at=START,
    )
    (run,) = build_report(history, period(clock), fleetkit_version="t").queries
    assert run.sql == "SELECT name, cmdline FROM processes"
    assert run.columns == ("nodeID", "hostname", "name", "cmdline")  # as first seen
    assert len(run.rows) == ROW_LIMIT
    assert run.rows[0] == ("node-1", "web-1", "p0", hostile)
    assert run.total_rows == 2 * ROW_LIMIT
    assert run.coverage == Coverage(with_rows=2)


def test_a_corrupt_row_is_a_history_error_naming_the_run(tmp_path: Path) -> None:
    history = open_store(tmp_path)
    outcome = record(history, [Node("node-1", [b'{"a":1}'])], started_at=START)
    with pytest.raises(HistoryError, match=f"run {outcome.run_id}, node 'node-1'"):
        build_report(history, Period(START + DAY), fleetkit_version="t")


def test_nothing_recorded_is_an_empty_report(tmp_path: Path) -> None:
    history = open_store(tmp_path)
    assert build_report(history, Period(START), fleetkit_version="t").empty


# --------------------------------------------------------------------------- the command

QUARANTINE = """\
quarantined:
  hosts:
    node-3: {labels: {quarantined: "true"}}
"""


def run_report(tmp_path: Path, *args: str, **options: str) -> tuple[int, str]:
    rt = make_runtime(tmp_path)
    status = run_command(lambda r: command.run(r, now=START + DAY, **options), rt)
    return int(status), err(rt)


def test_command_without_history_writes_a_report_saying_so(tmp_path: Path) -> None:
    code, stderr = run_report(tmp_path)
    assert code == 0, stderr
    page = (tmp_path / "report.html").read_text()
    assert "No history yet" in page
    assert "no history yet at" in stderr
    assert not (tmp_path / ".fleetkit" / "history.db").exists()  # reading never creates it


def test_command_report_of_a_history_with_a_quarantined_host(tmp_path: Path) -> None:
    make_runtime(tmp_path)
    (tmp_path / "inventory" / "hosts.d").mkdir()
    (tmp_path / "inventory" / "hosts.d" / "_quarantine.yaml").write_text(QUARANTINE)
    history = open_store(tmp_path)
    policy_run(history, START, {("node-1", SSH): "FAIL", ("node-2", SSH): "PASS"})
    history.close()
    code, stderr = run_report(tmp_path, output="out/fleet.html", since="2d")
    assert code == 2 and "directory" in stderr and "out" in stderr  # no such directory
    (tmp_path / "out").mkdir()
    code, stderr = run_report(tmp_path, output="out/fleet.html", since="2d")
    assert code == 0, stderr
    page = (tmp_path / "out" / "fleet.html").read_text()
    assert 'id="t-quarantine"' in page and "<td>node-3</td>" in page
    assert "1 of 2 host(s) failing a policy" in stderr
    assert "1 quarantined" in stderr


@pytest.mark.parametrize("since", ["7", "d", "0d", "-1d", "1y", "7d;rm"])
def test_command_refuses_a_bad_since(tmp_path: Path, since: str) -> None:
    code, stderr = run_report(tmp_path, since=since)
    assert code == 2 and "--since" in stderr
    assert not (tmp_path / "report.html").exists()


def test_command_corrupt_history_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".fleetkit" / "history.db"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database, just some text long enough" * 100)
    code, stderr = run_report(tmp_path)
    assert code == 2
    assert str(path) in stderr
    assert not (tmp_path / "report.html").exists()


def test_command_foreign_sqlite_file_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / ".fleetkit" / "history.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    code, stderr = run_report(tmp_path)
    assert code == 2 and str(path) in stderr and "not a fleetkit history" in stderr


def test_command_named_history_that_is_missing_is_exit_2(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    settings = tmp_path / "fleetkit.yaml"
    settings.write_text(settings.read_text() + "history: {path: elsewhere/h.db}\n")
    status = run_command(lambda r: command.run(r, now=START), rt)
    assert status == ExitStatus.BAD_INPUT
    assert str(tmp_path / "elsewhere" / "h.db") in err(rt)


def test_command_output_that_cannot_be_written_is_exit_2_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "taken").mkdir()
    code, stderr = run_report(tmp_path, output="taken")
    assert code == 2 and "is a directory" in stderr
    code, stderr = run_report(tmp_path, output="missing/report.html")
    assert code == 2 and "does not exist" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleetkit.yaml", "inventory", "taken"]
    assert list((tmp_path / "taken").iterdir()) == []
