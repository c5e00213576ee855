"""The executor: one probe, few batches, per-step results, and nothing run in check mode.

Round trips are counted in the executor (``HostRun.round_trips``): a host
whose facts already match sends exactly one command; changes go out in one
batch, waits on the host included, and a wait asked from the admin machine
closes the batch.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from fleetkit.clients.ssh import CommandResult
from fleetkit.foundation.environment import Environment
from fleetkit.hostfacts.changes import Change, HttpWait, StepPlan, changing, unchanged
from fleetkit.hostfacts.executor import HostRun
from fleetkit.hostfacts.facts import Fact, FactView, PathExists, Raw, SocketLook
from fleetkit.hostfacts.probe import (
    SHORT_INPUT_EXIT,
    build_batch,
    build_probe,
    read_results,
    shell_command,
)
from fleetkit.hostfacts.steps import OrchestratorAliveStep, PlanContext, SocketStep, Step
from tests.unit.fakehost import (
    LocalRemote,
    ScriptedRemote,
    context,
    quiet_env,
    run_steps,
    tar_of,
)


@dataclass(frozen=True)
class Touch(Step):
    """A test step: creates a marker path when it is absent (stdin optional)."""

    path: str
    stdin: bytes | None = None

    def describe(self) -> str:
        return f"touch {self.path}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (PathExists(self.path),)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        if facts[PathExists(self.path)]:
            return unchanged("present")
        return changing(
            "touched",
            "would touch",
            Change(f"touch {self.path}", f"cat > {self.path}", stdin=self.stdin, diff="+x\n"),
        )


class NeverThere(ScriptedRemote):
    """A host whose readiness looks never hold."""

    def run(self, command: str, **kwargs: Any) -> CommandResult:
        result = super().run(command, **kwargs)
        if "fleetkit probe" in command or "fleetkit batch" in command:
            return result
        return CommandResult(result.host, command, 1, b"", b"")


@dataclass(frozen=True)
class Broken(Step):
    def describe(self) -> str:
        return "broken"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return ()

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        raise KeyError("a bug")


def absent(*paths: str) -> dict[Fact[Any], Raw]:
    return {PathExists(p): Raw(0, b"absent\n") for p in paths}


def test_a_host_already_in_its_state_takes_one_round_trip() -> None:
    remote = ScriptedRemote(facts={PathExists(p): Raw(0, b"present\n") for p in "abc"})
    outcome, _ = run_steps([Touch("a"), Touch("b"), Touch("c")], remote)
    assert outcome.error is None and outcome.round_trips == 1
    assert [r.result.message for r in outcome.records] == ["present"] * 3
    assert remote.batches == []


def test_changes_of_many_steps_go_out_in_one_batch_with_their_results() -> None:
    remote = ScriptedRemote(facts=absent("a", "b", "c"))
    steps = [Touch("a", b"one"), Touch("b"), Touch("c", b"three")]
    outcome, _ = run_steps(steps, remote)
    assert outcome.error is None and outcome.round_trips == 2
    assert remote.batches == [["cat > a", "cat > b", "cat > c"]]
    assert remote.stdins[-1] == b"onethree"
    assert [(r.step, r.result.changed, r.result.diff) for r in outcome.records] == [
        ("touch a", True, "+x\n"),
        ("touch b", True, "+x\n"),
        ("touch c", True, "+x\n"),
    ]


def test_a_wait_on_the_host_goes_into_the_batch_between_the_changes() -> None:
    remote = ScriptedRemote(facts={**absent("a", "b"), SocketLook("/s.em"): Raw(1, b"", b"no")})
    steps = [Touch("a"), SocketStep("/s.em"), Touch("b")]
    outcome, _ = run_steps(steps, remote)
    assert outcome.error is None
    [[first, look, last]] = remote.batches
    assert (first, last) == ("cat > a", "cat > b") and "[ -S /s.em ]" in look
    assert outcome.round_trips == 2  # probe, batch
    assert [r.result.message for r in outcome.records] == ["touched", "present", "touched"]


def test_a_wait_not_over_within_its_look_stops_the_batch_then_the_rest_follows() -> None:
    remote = ScriptedRemote(
        facts={**absent("a", "b"), SocketLook("/s.em"): Raw(1, b"", b"no")},
        fail=[("[ -S /s.em ]", Raw(1))],  # not there during the batch's look
    )
    steps = [Touch("a"), SocketStep("/s.em"), Touch("b")]
    outcome, _ = run_steps(steps, remote)
    assert outcome.error is None
    assert [batch[0] for batch in remote.batches] == ["cat > a", "cat > b"]
    assert remote.batches[1] == ["cat > b"]  # sent again: the first batch stopped at the look
    assert outcome.round_trips == 4  # probe, batch, one more look at the socket, batch
    assert [r.result.message for r in outcome.records] == ["touched", "present", "touched"]


def test_a_wait_that_never_holds_names_its_step_after_the_steps_before_it() -> None:
    remote = NeverThere(
        facts={**absent("a", "b"), SocketLook("/s.em"): Raw(1, b"", b"no")},
        fail=[("[ -S /s.em ]", Raw(1))],
    )
    steps = [Touch("a"), SocketStep("/s.em", timeout=1.0, poll=0.5), Touch("b")]
    outcome, _ = run_steps(steps, remote)
    assert [r.step for r in outcome.records] == ["touch a"]
    assert outcome.failed_step == "socket /s.em"
    assert "did not appear within 1s" in (outcome.error or "")
    assert len(remote.batches) == 1  # touch b was never sent again


def test_a_closed_gate_after_the_probe_leaves_the_host_untouched() -> None:
    """Provisioning's gate: facts are read, then nothing changes when the gate says no."""
    remote = ScriptedRemote(facts=absent("a"))
    asked: list[bool] = []

    def gate() -> str:
        asked.append(True)
        return "not touched: the control plane failed"

    run = HostRun(remote, context(), quiet_env())
    outcome = run.execute([Touch("a")], gate=gate)
    assert asked == [True] and remote.batches == [] and outcome.round_trips == 1
    assert outcome.error == "not touched: the control plane failed" and outcome.records == []
    opened = HostRun(ScriptedRemote(facts=absent("a")), context(), quiet_env())
    assert opened.execute([Touch("a")], gate=lambda: None).records[0].result.changed


def test_the_first_failing_change_stops_the_run_and_names_its_step() -> None:
    failure = Raw(1, b"", b"cat: b: Read-only file system\n")
    remote = ScriptedRemote(facts=absent("a", "b", "c"), fail=[("cat > b", failure)])
    outcome, _ = run_steps([Touch("a"), Touch("b"), Touch("c")], remote)
    assert [r.step for r in outcome.records] == ["touch a"]
    assert outcome.failed_step == "touch b"
    assert outcome.error == "touch b failed (exit 1): cat: b: Read-only file system"


def test_check_mode_reports_the_changes_and_sends_only_the_probe() -> None:
    remote = ScriptedRemote(facts=absent("a", "b"))
    outcome, _ = run_steps([Touch("a", b"data"), Touch("b")], remote, check=True)
    assert outcome.round_trips == 1 and remote.batches == []
    assert [r.result.message for r in outcome.records] == ["would touch", "would touch"]
    assert all(r.result.changed and r.result.diff == "+x\n" for r in outcome.records)


def test_a_bug_in_a_step_is_an_internal_error_after_the_changes_before_it() -> None:
    remote = ScriptedRemote(facts=absent("a"))
    outcome, _ = run_steps([Touch("a"), Broken()], remote)
    assert remote.batches == [["cat > a"]]
    assert outcome.failed_step == "broken" and "internal error: KeyError" in (outcome.error or "")


def test_a_probe_that_reads_nothing_fails_the_look() -> None:
    outcome, _ = run_steps([Touch("a")], ScriptedRemote())
    assert outcome.failed_step == "look at the host"
    assert "the probe read 0 of 1 facts" in (outcome.error or "")


def test_inputs_of_one_batch_reach_the_right_files_on_a_real_shell(tmp_path: Path) -> None:
    first = bytes(range(256)) * 40 + b"\n"
    second = b"line\n\x00no newline at the end"
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    changes = [Change("a", f"cat > {a}", stdin=first), Change("b", f"cat > {b}", stdin=second)]
    batch = build_batch(changes)
    remote = LocalRemote()
    result = remote.run(shell_command(batch.script), stdin=batch.stdin)
    assert [raw.exit_code for raw in batch.results(result.stdout)] == [0, 0]
    assert a.read_bytes() == first and b.read_bytes() == second
    assert batch.stdin is not None
    short = remote.run(shell_command(batch.script), stdin=batch.stdin[:100])
    assert short.exit_code == SHORT_INPUT_EXIT and "upload ended early" in short.err
    assert batch.results(short.stdout) == []


def test_a_huge_plan_is_split_into_batches_that_fit_a_command_line() -> None:
    long = "true " + "x" * 40_000
    remote = ScriptedRemote(facts=absent())
    run = HostRun(remote, context(), _env())
    done, error = run._run_changes([Change(str(i), long) for i in range(4)])
    assert error is None and len(done) == 4
    assert [len(b) for b in remote.batches] == [1, 1, 1, 1]
    assert all(len(c) < 128 * 1024 for c in remote.commands)


def _env() -> Environment:
    return Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd="/")


def test_probe_keys_are_ours_and_each_fact_is_read_once() -> None:
    probe = build_probe([PathExists("/a"), PathExists("/a"), SocketLook("/a")])
    assert list(probe.keys) == ["f0", "f1"]
    assert probe.script.count("fk f") == 2 and probe.script.startswith("# fleetkit probe")


def test_hostile_probe_output_yields_only_well_formed_results() -> None:
    assert read_results(b"Welcome to the host!\n") == {}
    assert read_results(b"") == {}
    good = tar_of({"f0": Raw(0, b"present\n")})
    assert read_results(good) == {"f0": Raw(0, b"present\n")}
    assert read_results(good[:700]) in ({}, {"f0": Raw(0, b"")})  # cut mid-archive
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in (
            ("../../etc/f0.rc", b"0"),
            ("f1.rc", b"not a number"),
            ("f2.rc", b"99999999999"),
            ("F3.rc", b"0"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert read_results(buffer.getvalue()) == {}


class FlakyHttp:
    """An HTTP session whose GET fails ``failures`` times, then answers 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __enter__(self) -> FlakyHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get(self, url: str, timeout: float) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise requests.ConnectionError("refused")
        response = requests.Response()
        response.status_code = 200
        return response


def test_the_orchestrator_wait_polls_without_real_sleeps() -> None:
    http = FlakyHttp(failures=3)
    clock = [0.0]
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ={},
        cwd="/",
        clock=lambda: clock[0],
        sleep=lambda s: clock.__setitem__(0, clock[0] + s),
    )
    step = OrchestratorAliveStep("http://orch:1234", timeout=10, poll=0.5)
    run = HostRun(ScriptedRemote(), context(), env, lambda: http)  # type: ignore[arg-type,return-value]
    outcome = run.execute([step])
    assert outcome.error is None and http.calls == 4 and clock[0] == 1.5
    assert outcome.round_trips == 0  # asked from the admin machine, not over SSH
    never = HostRun(ScriptedRemote(), context(), env, lambda: FlakyHttp(99))  # type: ignore[arg-type,return-value]
    failed = never.execute([step])
    assert "did not answer http://orch:1234/api/v1/agent/alive within 10s" in (failed.error or "")
    assert "(ConnectionError)" in (failed.error or "")
    check = HostRun(ScriptedRemote(), context(check=True), env, lambda: FlakyHttp(99))  # type: ignore[arg-type,return-value]
    [record] = check.execute([step]).records
    assert record.result.message == "not answering now (ConnectionError)"


def test_http_wait_is_data() -> None:
    plan = OrchestratorAliveStep("http://o:1").plan(FactView(), context())
    assert isinstance(plan.wait, HttpWait) and plan.changes == ()
