"""Faults under latency: a host stops answering (or crashes) while fleetkit works on it.

Every lab here runs in latency mode (40 ms one way through the lab's proxy,
``lab/latency.py``), so the faults meet fleetkit where real fleets live. The
proxy freezes a host (nothing forwarded either way, nothing closed: what a
hung machine or a black-holed route looks like) or cuts it (every connection
reset: a crash). The commands run through the real CLI (``run_cli``) on a
thread, so a command that does not end is a failed test, not a hung suite.

What must hold: the other hosts finish; the faulty host is named, with the
step it was in; the command ends within its timeouts; a rerun converges.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from lab.counters import sshd_log_counts
from lab.fleet import Lab
from tests.e2e.conftest import CliResult, run_cli, wait_connected

pytestmark = pytest.mark.lab

LATENCY = 0.040
#: Short, so that a host that stops answering costs the test seconds, not minutes.
COMMAND_TIMEOUT = 8
CONNECT_TIMEOUT = 5
#: "Ends within its timeouts": after the fault, the command may take its command
#: timeout, a connect timeout, and plenty of slack for a loaded 2-core machine.
ENDS_WITHIN = 30.0
#: The ``fleetkit`` console script, run by this interpreter.
FLEETKIT = (sys.executable, "-c", "from fleetkit.cli import main; main()")


def slow_lab(lab_factory: Callable[..., Lab], compute: int = 3) -> Lab:
    lab = lab_factory(compute=compute, latency=LATENCY)
    lab.write_settings(ssh={"command_timeout": COMMAND_TIMEOUT, "connect_timeout": CONNECT_TIMEOUT})
    return lab


class Background:
    """One CLI command on a thread; ``wait`` says whether it ended in time."""

    def __init__(self, lab: Lab, *argv: str) -> None:
        self.result: CliResult | None = None
        self.thread = threading.Thread(target=self._run, args=(lab, argv), daemon=True)
        self.thread.start()

    def _run(self, lab: Lab, argv: tuple[str, ...]) -> None:
        self.result = run_cli(lab, *argv)

    def wait(self, timeout: float) -> CliResult | None:
        self.thread.join(timeout)
        return None if self.thread.is_alive() else self.result


def wait_for_commands(lab: Lab, name: str, count: int, timeout: float = 120.0) -> None:
    """Block until fleetkit has run ``count`` commands on host ``name`` (it is mid-run)."""
    deadline = time.monotonic() + timeout
    while sshd_log_counts(lab.host(name).sshd_log.read_bytes())[1] < count:
        if time.monotonic() > deadline:
            pytest.fail(f"fleetkit never ran {count} commands on {name}")
        time.sleep(0.02)


def failed_line(result: CliResult, name: str) -> str:
    """The recap's ``failed: NAME: STEP: reason`` line for one host."""
    found = re.findall(rf"^failed: {re.escape(name)}: (.*)$", result.stderr, re.M)
    assert found, f"{name} is not named as failed:\n{result.stderr}"
    return str(found[0])


def assert_converges(lab: Lab) -> None:
    rerun = run_cli(lab, "provision")
    assert rerun.exit_code == 0, rerun.output
    wait_connected(lab, [h.name for h in lab.compute_hosts])
    verify = run_cli(lab, "verify")
    assert verify.exit_code == 0, verify.output


def test_a_host_that_stops_answering_mid_provision_is_named_and_the_rest_finish(
    lab_factory: Callable[..., Lab],
) -> None:
    lab = slow_lab(lab_factory)
    run = Background(lab, "provision")
    # A compute host's first run is two commands (the probe, then one batch of changes):
    # the second one started, so it is working through its steps.
    wait_for_commands(lab, "node-2", 2)
    lab.freeze("node-2")
    try:
        result = run.wait(ENDS_WITHIN)
        assert result is not None, (
            f"provision did not end within {ENDS_WITHIN:g} s of node-2 freezing "
            f"(command timeout {COMMAND_TIMEOUT} s)"
        )
        assert result.exit_code == 1, result.output
        step, _, reason = failed_line(result, "node-2").partition(": ")
        assert step and "timed out" in reason, result.stderr  # the step it was in, and why
        assert "summary: 4 hosts, 1 failed (node-2)" in result.stderr
        for other in ("orch-1", "node-1", "node-3"):
            assert re.search(rf"^\[\d/4\] {other}: (changed|ok) ", result.stderr, re.M)
    finally:
        lab.thaw("node-2")
        run.wait(120)  # whatever was held is delivered; the run ends
    assert_converges(lab)


def test_a_host_that_crashes_mid_provision_is_named_with_its_step_and_a_rerun_converges(
    lab_factory: Callable[..., Lab],
) -> None:
    lab = slow_lab(lab_factory)
    run = Background(lab, "provision")
    wait_for_commands(lab, "node-3", 2)  # in its batch of changes
    assert lab.cut("node-3") == 1  # its one SSH connection, reset
    result = run.wait(ENDS_WITHIN)
    assert result is not None, f"provision did not end within {ENDS_WITHIN:g} s of the crash"
    assert result.exit_code == 1, result.output
    step, _, reason = failed_line(result, "node-3").partition(": ")
    assert step and reason, result.stderr
    assert "summary: 4 hosts, 1 failed (node-3)" in result.stderr
    assert_converges(lab)

    # Now a host that has stopped answering altogether: each command names it and ends.
    lab.freeze("node-1")
    try:
        for argv, named in (
            (("verify",), r"NOT ready: node-1\b"),
            (("query", "SELECT hostname FROM system_info", "--via", "ssh"), r"node-1 failed"),
            (("provision",), r"failed: node-1: "),
        ):
            started = time.monotonic()
            answer = Background(lab, *argv).wait(ENDS_WITHIN)
            assert answer is not None, f"{argv[0]} did not end within {ENDS_WITHIN:g} s"
            assert answer.exit_code == 1, answer.output
            assert re.search(named, answer.stderr), answer.stderr
            assert not re.search(named.replace("node-1", "node-2"), answer.stderr)
            assert time.monotonic() - started < ENDS_WITHIN
        rows = run_cli(lab, "query", "SELECT hostname FROM system_info", "--via", "ssh")
        assert '"nodeID":"node-2"' in rows.stdout.replace(" ", "")
    finally:
        lab.thaw("node-1")


def test_an_unanswering_host_prints_no_traceback(lab_factory: Callable[..., Lab]) -> None:
    """As a user runs it: the console script in its own process, stderr as it prints.

    Paramiko's transport thread logs the banner timeout with a traceback; fleetkit
    gives its logger a NullHandler, and says itself what happened (paramiko's own
    words for it, "No existing session", say nothing)."""
    lab = slow_lab(lab_factory, compute=1)
    lab.freeze("node-1")
    answer = subprocess.run(
        [*FLEETKIT, "query", "SELECT 1", "--via", "ssh"],
        env=lab.environ(),
        cwd=lab.workdir,
        capture_output=True,
        text=True,
        timeout=ENDS_WITHIN,
        check=False,
    )
    assert answer.returncode == 1, answer.stderr
    assert "node-1" in answer.stderr
    for noise in ("Traceback", "Exception (client)", "paramiko", "No existing session"):
        assert noise not in answer.stderr, answer.stderr
    assert "accepted the connection but sent no SSH banner within 5s" in answer.stderr
