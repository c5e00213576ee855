"""``invoke watch`` end to end against a scripted orchestrator: one job per pack run,
the history, transitions, the signed webhook, restarts, failures and stops.

No lab: :class:`tests.unit.watch_fleet.PackOrchestrator` runs the pack script's
framing in Python (the lab tests run the real script). The history is a real
SQLite file, the webhook a local HTTP receiver that verifies every signature.
"""

from __future__ import annotations

import io
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from fleetkit.cli import run_command
from fleetkit.commands.watch import run as watch_run
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.history_settings import HistorySettings
from fleetkit.foundation.status import ExitStatus
from fleetkit.history import open_history
from fleetkit.runtime import Runtime
from fleetkit.watch.packrecord import STATEMENT_COLUMN, failed_statements
from fleetkit.watch.statusread import load_status
from tests.unit.test_watch_notify import PATH_TOKEN, SECRET, Receiver, wait
from tests.unit.test_watch_notify import receiver as receiver  # the fixture, re-exported
from tests.unit.watch_fleet import (
    BAD_KEY_ROW,
    FakeClock,
    Fleet,
    PackOrchestrator,
    write_watch_fleet,
)

REPO = Path(__file__).resolve().parents[2]
SSH_PACK = REPO / "fleetkit" / "packs" / "ssh-keys.yaml"


def fleet_dir(tmp_path: Path, receiver_url: str | None = None, **watch: Any) -> Path:
    settings: dict[str, Any] = {"missing_after": 2, **watch}
    if receiver_url is not None:
        (tmp_path / "hook.secret").write_bytes(SECRET)
        settings["webhook"] = {
            "url": receiver_url,
            "secret_file": "hook.secret",
            "retry": {"attempts": 4, "backoff": 0.05, "backoff_max": 0.2},
        }
    write_watch_fleet(tmp_path, settings)
    return tmp_path


def runtime(directory: Path) -> Runtime:
    fake = FakeClock()
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ={"TOKEN": "t0ken-value"},
        cwd=str(directory),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    return Runtime(env=env, settings_path=str(directory / "fleetkit.yaml"))


def run_watch(
    directory: Path,
    orchestrator: PackOrchestrator,
    *packs: str,
    once: bool = True,
    interval: float | None = None,
) -> tuple[int, str]:
    """``invoke watch`` in-process against the scripted orchestrator: (exit status, stderr)."""
    rt = runtime(directory)
    status = run_command(
        lambda r: watch_run(
            r,
            packs=list(packs) or [str(SSH_PACK)],
            once=once,
            interval=interval,
            client_factory=lambda _: orchestrator,
        ),
        rt,
    )
    return int(status), rt.env.stderr.getvalue()  # type: ignore[attr-defined]


def watch_once(directory: Path, orchestrator: PackOrchestrator, *packs: str) -> tuple[int, str]:
    return run_watch(directory, orchestrator, *packs)


def events(receiver: Receiver) -> list[tuple[str, str, str]]:
    out = []
    for delivery in receiver.accepted():
        body = json.loads(delivery.body)
        out.append((body["kind"], body["hostname"], body["subject"]))
    return out


def history(directory: Path) -> Any:
    return open_history(HistorySettings.default(directory), for_writing=False)


# --------------------------------------------------------------------------- one job per run


def test_a_pack_run_is_one_job_recorded_with_its_verdicts(tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path)
    fleet = Fleet(bad_keys={"node-2"})
    orchestrator = PackOrchestrator(fleet)
    status, err = watch_once(directory, orchestrator)
    assert status == 0, err
    assert len(orchestrator.submitted) == 1  # 2 policies, 5 statements: one job
    job = orchestrator.submitted[0]["Job"]
    assert job["Labels"] == {"fleetkit": "pack"} and job["Tasks"][0]["Name"] == "osquery-pack"
    assert len(job["Tasks"][0]["Engine"]["Params"]["Parameters"]) == 3 + 5
    with history(directory) as h:
        [run] = h.list_runs()
        assert run.kind == "policy" and run.question.pack == "ssh-keys" and run.status == "complete"
        assert run.job_id == "j-0"
        assert run.coverage.answered == 3
        states = {(s.hostname, s.policy): s.verdict.value for s in h.policy_states(run.run_id)}
        assert states == {
            (node, f"ssh-keys/{policy}"): "FAIL" if node == "node-2" else "PASS"
            for node in ("node-1", "node-2", "node-3")
            for policy in ("ssh_private_keys_encrypted_ec", "ssh_private_keys_encrypted")
        }
        rows = [json.loads(line) for line in h.node_rows(run.run_id, "node-2").lines()]
        assert {r[STATEMENT_COLUMN] for r in rows} == {
            "ssh_private_keys_encrypted_ec",
            "ssh_private_keys_encrypted_ec:details",
            "ssh_private_keys_encrypted",
            "ssh_private_keys_encrypted:details",
        }
    assert "watch: pack ssh-keys: run" in err and "(3/3 node(s) answered)" in err
    status_file = load_status(directory / "watch-status.json")
    assert status_file is not None and status_file.state == "stopped"
    assert status_file.packs["ssh-keys"].last_outcome == "ok"


def test_transitions_are_notified_once_signed_and_never_again_after_a_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    directory = fleet_dir(tmp_path, receiver.url)
    fleet = Fleet()
    orchestrator = PackOrchestrator(fleet)
    assert watch_once(directory, orchestrator)[0] == 0  # all pass: nothing to say
    fleet.bad_keys.add("node-2")
    status, err = watch_once(directory, orchestrator)
    assert status == 0
    wait(lambda: len(receiver.accepted()) == 2)
    assert sorted(events(receiver)) == [
        ("policy_failing", "node-2", "ssh-keys/ssh_private_keys_encrypted"),
        ("policy_failing", "node-2", "ssh-keys/ssh_private_keys_encrypted_ec"),
    ]
    assert all(d.verified for d in receiver.deliveries)
    assert "watch: policy_failing pack=ssh-keys host=node-2" in err  # the log sink
    assert PATH_TOKEN not in err and SECRET.decode() not in err
    assert watch_once(directory, orchestrator)[0] == 0  # restart, still failing: nothing
    fleet.bad_keys.clear()
    assert watch_once(directory, orchestrator)[0] == 0
    wait(lambda: len(receiver.accepted()) == 4)
    assert sorted(events(receiver)[2:]) == [
        ("policy_fixed", "node-2", "ssh-keys/ssh_private_keys_encrypted"),
        ("policy_fixed", "node-2", "ssh-keys/ssh_private_keys_encrypted_ec"),
    ]
    assert watch_once(directory, orchestrator)[0] == 0
    assert receiver.attempts == 4


def test_a_node_missing_for_n_runs_is_notified_once(receiver: Receiver, tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path, receiver.url)
    fleet = Fleet()
    orchestrator = PackOrchestrator(fleet)
    watch_once(directory, orchestrator)
    fleet.down.add("node-3")
    for _ in range(3):  # missing_after is 2: the 2nd run without it says so, the 3rd does not
        assert watch_once(directory, orchestrator)[0] == 0
    wait(lambda: len(receiver.accepted()) >= 1)
    assert events(receiver) == [("node_missing", "node-3", "")]
    details = json.loads(receiver.accepted()[0].body)["details"]
    assert details["consecutive_runs"] == 2 and "no execution" in details["reason"]


def test_hunt_hits_are_new_rows_only(receiver: Receiver, tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path, receiver.url)
    pack = directory / "webshells.yaml"
    pack.write_text(
        "pack: webshells\nkind: hunt\ninterval: 1h\nqueries:\n"
        "  - name: trojan\n    severity: high\n"
        "    query: SELECT path, sha256 FROM hash WHERE path LIKE '/var/www/%'\n"
    )
    fleet = Fleet()
    orchestrator = PackOrchestrator(fleet)
    evil = {"path": "/var/www/x.php", "sha256": "ab" * 32}
    fleet.files["node-1"] = [evil]
    assert watch_once(directory, orchestrator, str(pack))[0] == 0
    assert watch_once(directory, orchestrator, str(pack))[0] == 0  # same row: no new hit
    fleet.broken[("node-1", "FROM hash")] = "no such table: hash"
    assert watch_once(directory, orchestrator, str(pack))[0] == 0  # an error is not "gone"
    del fleet.broken[("node-1", "FROM hash")]
    fleet.files["node-3"] = [evil]
    assert watch_once(directory, orchestrator, str(pack))[0] == 0  # back, and a new host
    wait(lambda: len(receiver.accepted()) == 2)
    hits = events(receiver)
    assert [(k, h) for k, h, _ in hits] == [("hunt_hit", "node-1"), ("hunt_hit", "node-3")]
    body = json.loads(receiver.accepted()[1].body)
    assert body["details"]["row"] == evil and body["details"]["severity"] == "high"
    with history(directory) as h:
        failed = [r for r in h.list_runs() if h.entries(r.run_id)[0].state.value == "failed"]
        assert len(failed) == 1  # node-1 answered nothing that run: failed, with the reason
        entry = next(e for e in h.entries(failed[0].run_id) if e.node_id == "node-1")
        assert "no such table: hash" in (entry.error or "")


def test_one_broken_statement_loses_none_of_the_others(tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path)
    fleet = Fleet(bad_keys={"node-1"})
    fleet.broken[("node-1", "key_type = ''")] = "no such column"
    status, _ = watch_once(directory, PackOrchestrator(fleet))
    assert status == 0
    with history(directory) as h:
        [run] = h.list_runs()
        entry = next(e for e in h.entries(run.run_id) if e.node_id == "node-1")
        assert entry.state.value == "rows"
        assert failed_statements(entry.error) == {"ssh_private_keys_encrypted_ec:unknown_if_rows"}
        verdicts = {
            s.policy: s.verdict.value for s in h.policy_states(run.run_id) if s.node_id == "node-1"
        }
        # the violation is proven by its own query; the broken statement was not needed
        assert verdicts == {
            "ssh-keys/ssh_private_keys_encrypted_ec": "FAIL",
            "ssh-keys/ssh_private_keys_encrypted": "FAIL",
        }


def test_hostile_node_output_is_that_nodes_failure_only(tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path)
    pack = directory / "hunt.yaml"
    pack.write_text(
        "pack: hostile\nkind: hunt\nqueries:\n"
        "  - {name: files, query: SELECT path FROM hash WHERE path = '/x'}\n"
        "  - {name: keys, query: SELECT path FROM user_ssh_keys WHERE encrypted = 0}\n"
    )
    fleet = Fleet(bad_keys={"node-1", "node-2"})
    # node-1 claims a row belongs to another statement; node-3 prints no framing at all
    fleet.files["node-1"] = [{"fleetkit_query": "keys", "path": "/x"}]
    fleet.garbage["node-3"] = "FLEETKIT-PACK/1 2\nFK> 1 0 99999 0 0\n\x1b[2Jgotcha"
    status, err = watch_once(directory, PackOrchestrator(fleet), str(pack))
    assert status == 0, err
    with history(directory) as h:
        [run] = h.list_runs()
        entries = {e.node_id: e for e in h.entries(run.run_id)}
        assert failed_statements(entries["node-1"].error) == {"files"}
        assert "reserved" in (entries["node-1"].error or "")
        rows = [json.loads(line) for line in h.node_rows(run.run_id, "node-1").lines()]
        assert rows == [{STATEMENT_COLUMN: "keys", **BAD_KEY_ROW}]  # the other statement intact
        assert entries["node-2"].state.value == "rows" and not entries["node-2"].error
        assert entries["node-3"].state.value == "failed"
        assert "pack output" in (entries["node-3"].error or "")


# --------------------------------------------------------------------------- faults


def test_orchestrator_down_is_a_recorded_failed_run_and_exit_1(tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path)
    orchestrator = PackOrchestrator(Fleet(), down=True)
    status, err = watch_once(directory, orchestrator)
    assert status == ExitStatus.FAILURE
    assert "run failed" in err and "refused the connection" in err
    with history(directory) as h:
        [run] = h.list_runs()
        assert run.status == "incomplete" and "refused the connection" in (run.note or "")
    orchestrator.down = False  # it is back: the next run just works
    assert watch_once(directory, orchestrator)[0] == 0


def test_sigterm_stops_the_job_records_the_run_as_stopped_and_exits_0(tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path)
    orchestrator = PackOrchestrator(Fleet())
    # the signal arrives while the job runs (right after submission)
    orchestrator.on_submit = lambda _job: signal.raise_signal(signal.SIGTERM)
    status, _ = run_watch(directory, orchestrator, once=False)
    assert status == ExitStatus.SUCCESS
    assert orchestrator.stopped and "terminated" in orchestrator.stopped[0]
    with history(directory) as h:
        [run] = h.list_runs()
        assert run.status == "incomplete" and "stopped" in (run.note or "")
        assert h.policy_states(run.run_id) == []  # nothing decided from a stopped job
    state = load_status(directory / "watch-status.json")
    assert state is not None and state.state == "stopped" and state.stop_reason == "terminated"


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    directory = fleet_dir(tmp_path)
    orchestrator = PackOrchestrator(Fleet())
    orchestrator.on_submit = lambda _job: signal.raise_signal(signal.SIGINT)
    status, _ = run_watch(directory, orchestrator)
    assert status == ExitStatus.INTERRUPTED
    assert orchestrator.stopped


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("pack: p\nkind: policy\npolicies: [\n", None),  # bad YAML
        ("pack: p\nkind: audit\nqueries: [{name: q, query: SELECT 1}]\n", "kind"),
        ("pack: p\nkind: hunt\ninterval: 2s\nqueries: [{name: q, query: SELECT 1}]\n", "interval"),
        (
            "pack: p\nkind: hunt\nqueries: [{name: q, query: SELECT * FROM curl}]\n",
            "queries[0].query",
        ),
    ],
)
def test_a_broken_pack_is_refused_before_anything_starts(
    tmp_path: Path, text: str, key: str | None
) -> None:
    directory = fleet_dir(tmp_path)
    bad = directory / "bad.yaml"
    bad.write_text(text)
    orchestrator = PackOrchestrator(Fleet())
    status, err = watch_once(directory, orchestrator, str(bad))
    assert status == ExitStatus.BAD_INPUT, err
    assert str(bad) in err and (key is None or key in err)
    assert orchestrator.requests == 0
    assert not (directory / "watch-status.json").exists()


def test_interval_override_has_a_floor(tmp_path: Path) -> None:
    orchestrator = PackOrchestrator(Fleet())
    status, err = run_watch(fleet_dir(tmp_path), orchestrator, interval=0.2)
    assert status == ExitStatus.BAD_INPUT and "--interval" in err
    assert orchestrator.requests == 0


def test_a_stop_thread_never_races_the_job_id() -> None:
    """A stop that comes before the job exists still stops it once it is submitted."""
    from fleetkit.watch.scheduler import StopReason
    from fleetkit.watch.service import RunningJob

    orchestrator = PackOrchestrator(Fleet())
    said: list[str] = []
    job = RunningJob(orchestrator, said.append)  # type: ignore[arg-type]
    stopper = threading.Thread(target=job.stop, args=(StopReason.TERMINATED,))
    stopper.start()
    stopper.join()
    job.submitted("j-9")
    assert orchestrator.stopped and job.stopping
