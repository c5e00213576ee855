"""``invoke report --bundle`` / ``--check-bundle`` over a history written through its API."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import tarfile
from datetime import timedelta
from pathlib import Path

from fleetkit.ask.replay import write_run
from fleetkit.cli import run_command
from fleetkit.commands import report as command
from fleetkit.history.verifyrun import CheckRecord, HostRecord, record_verify
from fleetkit.report import evidence
from fleetkit.report.bundle import write_bundle
from fleetkit.report.fromhistory import Period, build_report
from tests.unit.history_helpers import START, Clock, Node, open_store, record
from tests.unit.test_policy import err, make_runtime
from tests.unit.test_report_fromhistory import SSH, policy_run

NOW = START + timedelta(days=1)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def fleet_history(tmp_path: Path) -> dict[str, str]:
    """verify, policy, hunt and query runs; returns their ids by kind."""
    clock = Clock(START)
    ids = {}
    with open_store(tmp_path, clock) as history:
        ssh, package = CheckRecord("ssh", "pass"), CheckRecord("osquery.package", "fail")
        hosts = [
            HostRecord("node-1", "compute", True, (ssh,), "n1", "5.23.1-1", "v1.9.3"),
            HostRecord("node-2", "compute", False, (package,), None, None, "v1.9.3"),
        ]
        outcome = record_verify(history, hosts, scope={})
        ids["verify"] = outcome.run_id
        clock.advance(minutes=5)
        ids["policy"] = policy_run(
            history, clock.now, {("node-1", SSH): "PASS", ("node-2", SSH): "FAIL"}
        )
        clock.advance(minutes=5)
        hit = {"path": "/var/www/x.php", "sha256": "ab" * 32}
        ids["hunt"] = record(
            history, [Node("node-1", [hit]), Node("node-3", [])], kind="hunt"
        ).run_id
        clock.advance(minutes=5)
        rows = [{"name": "sshd", "pid": "1"}, {"name": "<b>x</b>", "pid": "2"}]
        ids["query"] = record(
            history, [Node("node-1", rows), Node("node-2", status="failed", error="boom")]
        ).run_id
    return ids


def bundle_command(tmp_path: Path, **options: str) -> tuple[int, str]:
    rt = make_runtime(tmp_path)
    status = run_command(lambda r: command.run(r, since="all", now=NOW, **options), rt)
    return int(status), err(rt)


def test_the_bundle_holds_each_run_as_show_prints_it_and_a_manifest(tmp_path: Path) -> None:
    ids = fleet_history(tmp_path)
    code, stderr = bundle_command(tmp_path, bundle="evidence.tar.gz")
    assert code == 0, stderr
    assert not (tmp_path / "report.html").exists()  # --bundle alone writes the bundle only
    files = members(tmp_path / "evidence.tar.gz")
    manifest = json.loads(files["manifest.json"])
    runs = {run["kind"]: run for run in manifest["runs"]}
    assert {kind: run["run_id"] for kind, run in runs.items()} == ids
    assert [run["kind"] for run in manifest["runs"]] == ["verify", "query", "hunt", "policy"]
    with open_store(tmp_path) as history:
        for run in manifest["runs"]:
            shown = io.BytesIO()
            write_run(history, history.get_run(run["run_id"]), "json", shown)
            assert files[run["file"]] == shown.getvalue()
    query = json.loads(files[runs["query"]["file"]])
    assert [(r["nodeID"], r["name"]) for r in query] == [("node-1", "sshd"), ("node-1", "<b>x</b>")]
    assert runs["query"]["sql"] == "SELECT name FROM processes"
    assert runs["query"]["status"] == "complete"
    nodes = {n["node_id"]: n for n in runs["policy"]["nodes"]}
    assert nodes["node-1"]["osquery_version"] == "5.23.1-1"
    assert nodes["node-1"]["bacalhau_version"] == "v1.9.3"
    assert nodes["node-1"]["verified_by"] == ids["verify"]
    assert nodes["node-2"]["osquery_version"] is None  # its check failed: unknown, not guessed
    unverified = {n["node_id"]: n for n in runs["hunt"]["nodes"]}["node-3"]
    assert unverified["verified_by"] is None and unverified["bacalhau_version"] is None
    assert "versions_source" in manifest
    for name, entry in manifest["files"].items():
        assert len(files[name]) == entry["bytes"]

    code, stderr = bundle_command(tmp_path, check="evidence.tar.gz")
    assert code == 0, stderr
    assert "all 5 file(s) match" in stderr


def test_runs_chosen_by_prefix_and_refused_when_unknown(tmp_path: Path) -> None:
    ids = fleet_history(tmp_path)
    code, stderr = bundle_command(
        tmp_path, bundle="b.tar.gz", runs=f"{ids['query'][:20]},{ids['hunt']}", output="r.html"
    )
    assert code == 0, stderr
    manifest = json.loads(members(tmp_path / "b.tar.gz")["manifest.json"])
    assert [run["run_id"] for run in manifest["runs"]] == [ids["query"], ids["hunt"]]
    assert (tmp_path / "r.html").exists()  # --output with --bundle: both
    for runs, message in (
        ("20991231T000000.000Z-ffff", "no run"),
        (f"{ids['query']},{ids['query'][:22]}", "given twice"),
        (",", "expected run ids"),
    ):
        code, stderr = bundle_command(tmp_path, bundle="c.tar.gz", runs=runs)
        assert code == 2 and message in stderr, stderr
        assert not (tmp_path / "c.tar.gz").exists()


def test_runs_without_a_bundle_and_check_with_others_are_refused(tmp_path: Path) -> None:
    code, stderr = bundle_command(tmp_path, runs="abc")
    assert code == 2 and "--bundle" in stderr
    code, stderr = bundle_command(tmp_path, check="x.tar.gz", bundle="y.tar.gz")
    assert code == 2 and "--check-bundle alone" in stderr


def test_no_history_bundle_holds_the_report_and_runs_are_refused(tmp_path: Path) -> None:
    code, stderr = bundle_command(tmp_path, bundle="b.tar.gz")
    assert code == 0, stderr
    files = members(tmp_path / "b.tar.gz")
    assert set(files) == {"manifest.json", "report.html"}
    assert b"No history yet" in files["report.html"]
    code, stderr = bundle_command(tmp_path, bundle="c.tar.gz", runs="abc")
    assert code == 2 and "nothing is recorded yet" in stderr


def test_check_bundle_names_a_changed_file_and_refuses_a_hostile_one(tmp_path: Path) -> None:
    ids = fleet_history(tmp_path)
    code, stderr = bundle_command(tmp_path, bundle="b.tar.gz")
    assert code == 0, stderr
    files = members(tmp_path / "b.tar.gz")
    changed = f"runs/{ids['query']}.json"
    files[changed] = files[changed].replace(b"sshd", b"sshx")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "t.tar.gz").write_bytes(gzip.compress(buffer.getvalue()))
    code, stderr = bundle_command(tmp_path, check="t.tar.gz")
    assert code == 1
    assert f"changed: {changed}" in stderr
    (tmp_path / "h.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    code, stderr = bundle_command(tmp_path, check="h.tar.gz")
    assert code == 2 and "h.tar.gz" in stderr
    code, stderr = bundle_command(tmp_path, check="missing.tar.gz")
    assert code == 2 and "missing.tar.gz" in stderr


def test_a_bundle_that_cannot_be_written_leaves_nothing(tmp_path: Path) -> None:
    fleet_history(tmp_path)
    (tmp_path / "taken.tar.gz").mkdir()
    code, stderr = bundle_command(tmp_path, bundle="taken.tar.gz")
    assert code == 2 and "is a directory" in stderr
    assert list((tmp_path / "taken.tar.gz").iterdir()) == []


def test_large_outputs_are_spooled_to_files(tmp_path: Path) -> None:
    ids = fleet_history(tmp_path)
    with open_store(tmp_path) as history, contextlib.ExitStack() as stack:
        (run,) = evidence.bundle_runs(history, [ids["query"]], [], stack, spool_bytes=64)
        assert run.output._rolled  # type: ignore[union-attr]  # on disk, not in memory
        written = write_bundle(
            tmp_path / "b.tar.gz", build_report(history, Period(NOW), fleetkit_version="t"), [run]
        )
    data = members(written.path)[f"runs/{ids['query']}.json"]
    assert json.loads(data)[1]["name"] == "<b>x</b>"
