"""The watch on the lab: real pack jobs, real hosts changing, a local webhook receiver.

``fleetkit watch --interval 2`` runs as its own process (the console script,
as a service would run it) against a provisioned lab whose compute nodes
publish to the lab's S3 server (a pack's framed answer is bigger than the
2048 bytes RunOutput keeps). Hosts are changed from the inside (a weak SSH
key planted in root's ``~/.ssh``), the receiver checks every signature.
Waits are bounded polls on what the watch wrote (its status file) or what
the receiver got: a loaded machine makes them slower, never wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetkit.foundation.polling import wait_until
from fleetkit.watch.state import WatchStatus
from fleetkit.watch.statusread import load_status
from lab.fleet import Lab
from tests.conftest import lab_unavailable_reason
from tests.e2e.conftest import reprovision, run_cli
from tests.unit.test_watch_notify import SECRET, Receiver, closed_port_url
from tests.unit.test_watch_notify import receiver as receiver  # the fixture, re-exported

pytestmark = pytest.mark.lab

FLEETKIT = str(Path(sys.executable).parent / "fleetkit")
WEAK_KEY = "/root/.ssh/id_rsa_watch"
#: One policy, so one bad key is exactly one "newly failing" event.
PACK = """\
pack: ssh-encrypted
kind: policy
interval: 1h
policies:
  - name: keys_encrypted
    description: Every SSH private key is protected by a passphrase.
    severity: high
    meaning: fail_if_rows
    query: >-
      SELECT users.username, user_ssh_keys.path FROM users CROSS JOIN user_ssh_keys USING (uid)
      WHERE user_ssh_keys.encrypted = 0
    details: >-
      SELECT users.username, user_ssh_keys.path, user_ssh_keys.key_type
      FROM users CROSS JOIN user_ssh_keys USING (uid) WHERE user_ssh_keys.encrypted = 0
    resolution: ssh-keygen -p -f KEY
"""
SLOW = 90.0


@pytest.fixture(scope="module")
def watch_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"lab not available: {reason}")
    lab = Lab(tmp_path_factory.mktemp("watch-lab"), compute=2, s3=True, detach=False).up()
    try:
        reprovision(lab)
        (lab.workdir / "watch-packs").mkdir()
        (lab.workdir / "watch-packs" / "ssh-encrypted.yaml").write_text(PACK)
        (lab.workdir / "secrets" / "webhook").write_bytes(SECRET)
        yield lab
    finally:
        lab.down()


def configure(lab: Lab, url: str, **watch: Any) -> Path:
    """The lab's settings with a watch section; returns the status file."""
    status = lab.workdir / f"watch-status-{time.monotonic_ns()}.json"
    webhook = {
        "url": url,
        "secret_file": "secrets/webhook",
        "retry": {"attempts": 5, "backoff": 0.5, "backoff_max": 2},
        **watch.pop("webhook", {}),
    }
    set_watch(
        lab,
        **{
            "packs": ["watch-packs/ssh-encrypted.yaml"],
            "status_file": str(status),
            "heartbeat": 1,
            "stop_grace": 2,
            "missing_after": 3,
            "webhook": webhook,
            **watch,
        },
    )
    return status


def set_watch(lab: Lab, **watch: Any) -> None:
    """The lab's ``watch`` section replaced by exactly ``watch`` (nothing left from before)."""
    lab.write_settings(watch=None)
    if watch:
        lab.write_settings(watch=watch)


class WatchProcess:
    """``fleetkit watch --interval 2`` as its own process; its log in a file."""

    def __init__(self, lab: Lab, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [FLEETKIT, "watch", "--interval", "2"],
                cwd=lab.workdir,
                env=lab.environ(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the watch did not stop on {sig}:\n{self.text()}") from None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(condition: Callable[[], bool], what: str, proc: WatchProcess) -> None:
    waited = wait_until(
        condition, bool, timeout=SLOW, interval=0.2, clock=time.monotonic, sleep=time.sleep
    )
    if not waited.done:
        raise AssertionError(f"{what} did not happen within {SLOW:g}s:\n{proc.text()[-3000:]}")


def status_of(path: Path) -> WatchStatus | None:
    try:
        return load_status(path)
    except Exception:  # being replaced right now (atomic rename): look again
        return None


def completed_runs(path: Path) -> int:
    status = status_of(path)
    if status is None:
        return 0
    pack = status.packs.get("ssh-encrypted")
    return pack.runs - pack.failed_runs if pack is not None else 0


def runs_after(path: Path, count: int, proc: WatchProcess) -> None:
    """Wait until ``count`` more runs completed than now."""
    start = completed_runs(path)
    wait_for(lambda: completed_runs(path) >= start + count, f"{count} more runs", proc)


def kinds(receiver: Receiver) -> list[tuple[str, str]]:
    return [
        (json.loads(d.body)["kind"], json.loads(d.body)["hostname"]) for d in receiver.accepted()
    ]


def test_bad_key_fixed_key_and_restart_notify_exactly_once_each(
    watch_lab: Lab, receiver: Receiver, tmp_path: Path
) -> None:
    lab = watch_lab
    node = lab.host("node-2")
    status_path = configure(lab, receiver.url)
    receiver.script = [500]  # the first delivery is refused: retried, delivered once, late
    watch = WatchProcess(lab, tmp_path / "watch.log")
    try:
        runs_after(status_path, 1, watch)
        assert receiver.attempts == 0  # everything passes: nothing to say
        node.sh(f"mkdir -p /root/.ssh && ssh-keygen -q -t rsa -b 1024 -m PEM -N '' -f {WEAK_KEY}")
        wait_for(lambda: len(receiver.accepted()) >= 1, "the newly-failing delivery", watch)
        runs_after(status_path, 2, watch)  # still failing: nothing more
        assert kinds(receiver) == [("policy_failing", "node-2")]
        assert receiver.attempts == 2  # 500, then 200
        body = json.loads(receiver.accepted()[0].body)
        assert body["subject"] == "ssh-encrypted/keys_encrypted"
        assert body["details"]["first_failed_at"] is not None
        node.sh(f"rm -f {WEAK_KEY} {WEAK_KEY}.pub")
        wait_for(lambda: len(receiver.accepted()) >= 2, "the fixed delivery", watch)
        runs_after(status_path, 2, watch)
        assert kinds(receiver) == [("policy_failing", "node-2"), ("policy_fixed", "node-2")]
        assert watch.stop() == 0
    finally:
        node.sh(f"rm -f {WEAK_KEY} {WEAK_KEY}.pub", check=False)
        watch.stop(signal.SIGKILL)
    assert all(d.verified for d in receiver.deliveries)
    text = watch.text()
    assert "delivered on attempt 2" in text and "watch: stopped (terminated)" in text
    assert SECRET.decode() not in text
    final = status_of(status_path)
    assert final is not None and final.state == "stopped" and final.stop_reason == "terminated"

    # a restart re-sends nothing
    again = WatchProcess(lab, tmp_path / "watch-again.log")
    try:
        runs_after(status_path, 2, again)
        assert again.stop() == 0
    finally:
        again.stop(signal.SIGKILL)
    assert receiver.attempts == 3 and len(receiver.accepted()) == 2


def test_a_receiver_down_never_delays_the_schedule(watch_lab: Lab, tmp_path: Path) -> None:
    lab = watch_lab
    node = lab.host("node-1")
    status_path = configure(
        lab,
        closed_port_url(),
        webhook={"retry": {"attempts": 50, "backoff": 5, "backoff_max": 30}},
    )
    watch = WatchProcess(lab, tmp_path / "watch.log")
    try:
        runs_after(status_path, 1, watch)
        node.sh(f"mkdir -p /root/.ssh && ssh-keygen -q -t rsa -b 1024 -m PEM -N '' -f {WEAK_KEY}")
        # the event is stuck in retries (5 s, 10 s, ... apart) while the pack keeps running
        wait_for(
            lambda: (s := status_of(status_path)) is not None and s.notifications.retries >= 1,
            "a failed delivery being retried",
            watch,
        )
        runs_after(status_path, 3, watch)
        status = status_of(status_path)
        assert status is not None
        assert status.notifications.delivered == 0 and status.notifications.failed == 0
        assert status.packs["ssh-encrypted"].last_outcome == "ok"
        assert watch.stop() == 0
    finally:
        node.sh(f"rm -f {WEAK_KEY} {WEAK_KEY}.pub", check=False)
        watch.stop(signal.SIGKILL)
    assert "1 abandoned at stop" in watch.text()


def test_ctrl_c_stops_the_running_job_and_exits_130(watch_lab: Lab, tmp_path: Path) -> None:
    lab = watch_lab
    status_path = configure(lab, closed_port_url())
    watch = WatchProcess(lab, tmp_path / "watch.log")
    try:
        wait_for(
            lambda: (s := status_of(status_path)) is not None and s.state == "running",
            "a run in progress",
            watch,
        )
        assert watch.stop(signal.SIGINT) == 130
    finally:
        watch.stop(signal.SIGKILL)
    status = status_of(status_path)
    assert status is not None and status.stop_reason == "interrupted"


def test_a_broken_pack_stops_the_watch_before_it_starts(watch_lab: Lab, tmp_path: Path) -> None:
    lab = watch_lab
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: bad\nkind: hunt\ninterval: 5s\nqueries: [{name: q, query: SELECT 1}]\n")
    status_path = configure(lab, closed_port_url(), packs=[str(bad)])
    result = subprocess.run(
        [FLEETKIT, "watch", "--once"],
        cwd=lab.workdir,
        env=lab.environ(),
        capture_output=True,
        text=True,
        timeout=SLOW,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr and "interval" in result.stderr
    assert not status_path.exists()
    assert os.path.exists(lab.workdir / "fleetkit.yaml")


# --------------------------------------------------------------------------- the service


def verify_watch(lab: Lab) -> dict[str, Any]:
    result = run_cli(lab, "verify", "--hosts", "orch-1", "--json")
    report = json.loads(result.stdout)
    [row] = [h for h in report["hosts"] if h["host"] == "orch-1"]
    return next(c for c in row["checks"] if c["name"] == "watch")


def test_provision_installs_the_watch_service_and_verify_reports_it(watch_lab: Lab) -> None:
    lab = watch_lab
    cp = lab.control_plane
    set_watch(
        lab,
        enabled=True,
        packs=["ssh-keys"],  # the shipped pack
        heartbeat=2,
        missing_after=3,
        webhook={"url": "http://127.0.0.1:9/hooks/T0K3N", "secret_file": "secrets/webhook"},
    )
    try:
        first = run_cli(lab, "provision")
        assert first.exit_code == 0, first.output
        assert "orch-1: changed" in first.output
        assert cp.exists("/opt/fleetkit/venv/bin/fleetkit")
        for secret in ("node_token", "webhook", "s3_access_key_id", "s3_secret_access_key"):
            mode = cp.sh(f"stat -c '%a %U' /etc/fleetkit/watch/secrets/{secret}").stdout.split()
            assert mode == ["600", "root"], secret
        settings = cp.read_file("/etc/fleetkit/watch/fleetkit.yaml")
        assert "T0K3N" in settings and SECRET.decode() not in settings
        assert SECRET.decode() not in first.output and "T0K3N" not in first.output
        # the service runs the shipped pack as soon as it starts: verify sees it complete
        waited = wait_until(
            lambda: verify_watch(lab),
            lambda check: check["verdict"] == "pass",
            timeout=SLOW,
            interval=1.0,
            clock=time.monotonic,
            sleep=time.sleep,
        )
        check = waited.value
        assert waited.done, check
        assert "running (pid" in check["evidence"] and "last run completed" in check["evidence"]
        status = load_status_on(cp)
        assert status.packs["ssh-keys"].last_outcome == "ok"
        pid = status.pid

        # nothing changed: nothing to do; a setting changed: its diff, then a restart
        again = run_cli(lab, "provision", "--check")
        assert again.exit_code == 0 and "would" not in again.output.split("orch-1", 1)[-1]
        lab.write_settings(watch={"missing_after": 5})
        diff = run_cli(lab, "provision", "--check")
        assert diff.exit_code == 0, diff.output
        assert "/etc/fleetkit/watch/fleetkit.yaml" in diff.stdout
        assert "-  missing_after: 3" in diff.stdout and "+  missing_after: 5" in diff.stdout
        assert "T0K3N" not in diff.output and SECRET.decode() not in diff.output
        assert run_cli(lab, "provision").exit_code == 0
        waited = wait_until(
            lambda: load_status_on(cp),
            lambda s: s.pid != pid and s.packs["ssh-keys"].last_completed_at is not None,
            timeout=SLOW,
            interval=1.0,
            clock=time.monotonic,
            sleep=time.sleep,
        )
        assert waited.done, "the watch was not restarted with its new settings"
    finally:
        cp.sh(
            "start-stop-daemon --stop --oknodo --pidfile /run/fleetkit/fleetkit-watch.pid",
            check=False,
        )
        set_watch(lab)
    stopped = load_status_on(cp)
    assert stopped.state == "stopped" and stopped.stop_reason == "terminated"


def load_status_on(host: Any) -> WatchStatus:
    from fleetkit.watch.statusread import parse_status

    return parse_status(host.read_bytes("/var/lib/fleetkit/watch/status.json"), file="status.json")


def test_provision_refuses_a_broken_watch_pack_before_any_host(watch_lab: Lab) -> None:
    lab = watch_lab
    bad = lab.workdir / "broken-pack.yaml"
    bad.write_text("pack: broken\nkind: hunt\nqueries: [{name: q, query: SELECT * FROM curl}]\n")
    set_watch(lab, enabled=True, packs=[str(bad)])
    try:
        result = run_cli(lab, "provision")
        assert result.exit_code == 2, result.output
        assert str(bad) in result.output and "queries[0].query" in result.output
        assert "[1/" not in result.output  # no host was contacted
    finally:
        set_watch(lab)
