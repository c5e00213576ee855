"""Steps look before they change, change only what differs, and report it.

File, directory, binary and socket steps run their real shell commands here
through the executor (``sh -c`` on this machine, on paths inside the test's
temp dir); steps that would touch this machine's packages or services are
checked as plans (pure functions of typed facts, pyinfra-style) or run
against a scripted host.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from fleetkit.foundation.inventory import Host
from fleetkit.foundation.secrets import remember_secret
from fleetkit.foundation.settings import PackageSource, load_settings
from fleetkit.hostfacts.changes import StepRecord
from fleetkit.hostfacts.executor import with_markers
from fleetkit.hostfacts.facts import (
    CommandExists,
    FileLook,
    FileState,
    Metadata,
    PackageState,
    PackageVersion,
    Raw,
    ServiceLook,
)
from fleetkit.hostfacts.packages import PackageError, PackageRef, PackageStore
from fleetkit.hostfacts.recap import HostRecap, ProvisionReport, format_plan, format_recap
from fleetkit.hostfacts.services import ServiceSpec, ServiceState
from fleetkit.hostfacts.steps import (
    AbsentFileStep,
    ContainerEngineStep,
    DebPackageStep,
    DirectoryStep,
    FileStep,
    ServiceStep,
    SocketStep,
    StepFailed,
    StepResult,
    TarballBinaryStep,
    unified_diff,
)
from tests.unit.fakehost import LocalRemote, ScriptedRemote, apply_step, plan_of, run_steps
from tests.unit.test_settings import _sha, make_setup, tarball_with

# --- files -------------------------------------------------------------------------------


def test_file_is_created_then_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "app" / "app.conf"
    step = FileStep(str(target), "a = 1\nb = 2\n", mode=0o600)
    first = apply_step(step, LocalRemote())
    assert first.changed and first.message == "created"
    assert first.diff is not None and first.diff.startswith("--- /dev/null")
    assert target.read_text() == "a = 1\nb = 2\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert not list(target.parent.glob(".app.conf.*")), "temp file left behind"
    again = apply_step(step, LocalRemote())
    assert not again.changed and again.diff is None


def test_drift_is_shown_in_check_mode_and_not_touched(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("a = 1\nb = 3\n")
    target.chmod(0o600)
    step = FileStep(str(target), "a = 1\nb = 2\n", mode=0o600, notify=(("app", "restart"),))
    remote = LocalRemote()
    outcome, context = run_steps([step], remote, check=True)
    [record] = outcome.records
    result = record.result
    assert result.changed and result.message.startswith("would update")
    assert result.diff is not None
    assert "-b = 3\n" in result.diff and "+b = 2\n" in result.diff
    assert target.read_text() == "a = 1\nb = 3\n"
    assert context.notified == {("app", "restart")}
    assert outcome.round_trips == 1 and len(remote.commands) == 1  # the probe only


def test_mode_only_drift_is_fixed_without_rewriting(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("same\n")
    target.chmod(0o644)
    inode = target.stat().st_ino
    step = FileStep(str(target), "same\n", mode=0o600, notify=(("app", "restart"),))
    plan = plan_of(
        step, {FileLook(str(target)): FileState(True, Metadata(0o644, "root", "root"), b"same\n")}
    )
    assert plan.notify == ()  # metadata alone restarts nothing
    result = apply_step(step, LocalRemote())
    assert result.changed and result.message == "fixed mode" and "0644" in (result.diff or "")
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.stat().st_ino == inode


def test_content_change_notifies_the_service_once_written() -> None:
    step = FileStep("/etc/app.conf", "new\n", mode=0o600, notify=(("app", "restart"),))
    facts = {FileLook("/etc/app.conf"): FileState(True, Metadata(0o600, "root", "root"), b"old\n")}
    plan = plan_of(step, facts)
    [change] = plan.changes
    assert "mktemp" in change.command and "mv -f" in change.command
    assert change.stdin == b"new\n"
    assert with_markers(change).endswith("touch /run/fleetkit/app.restart-pending")
    remote = ScriptedRemote(facts={FileLook("/etc/app.conf"): Raw(0, b"600 root root\nold\n")})
    outcome, _ = run_steps([step], remote)
    assert outcome.records[0].result.changed
    assert remote.stdins[1] == b"new\n"
    assert remote.batches[0][0].endswith("touch /run/fleetkit/app.restart-pending")


def test_secret_values_never_appear_in_diffs(tmp_path: Path) -> None:
    remember_secret("current-token-123456")
    old = 'Auth:\n  Token: "an-old-token-fleetkit-never-saw"\nPort: 1\n'
    new = 'Auth:\n  Token: "current-token-123456"\nPort: 2\n'
    diff = unified_diff("/etc/bacalhau/config.yaml", old, new, secret=True)
    assert "an-old-token" not in diff and "current-token-123456" not in diff
    assert "+Port: 2" in diff
    only_secret = unified_diff("/etc/x", "Token: a-b-c-d\n", "Token: e-f-g-h\n", secret=True)
    assert "a-b-c-d" not in only_secret and "e-f-g-h" not in only_secret
    assert "secret value differs" in only_secret


def test_a_file_larger_than_the_read_limit_is_rewritten_not_diffed() -> None:
    step = FileStep("/etc/app.conf", "small\n")
    huge = FileState(True, Metadata(0o644, "root", "root"), b"x" * 10, truncated=True)
    plan = plan_of(step, {FileLook("/etc/app.conf"): huge})
    assert plan.message == "updated" and "larger than" in (plan.diff or "")


def test_unit_files_are_skipped_without_systemd() -> None:
    remote = ScriptedRemote()
    step = FileStep("/etc/systemd/system/app.service", "[Unit]\n", systemd_only=True)
    result = apply_step(step, remote, manager="start-stop-daemon")
    assert not result.changed and "no systemd" in result.message
    assert remote.commands == []


def test_absent_file(tmp_path: Path) -> None:
    target = tmp_path / "env"
    step = AbsentFileStep(str(target))
    assert not apply_step(step, LocalRemote()).changed
    target.write_text("X=1\n")
    assert apply_step(step, LocalRemote(), check=True).changed
    assert target.exists()
    assert apply_step(step, LocalRemote()).changed
    assert not target.exists()


def test_directory(tmp_path: Path) -> None:
    target = tmp_path / "data"
    step = DirectoryStep(str(target), mode=0o700)
    assert apply_step(step, LocalRemote()).changed
    assert target.is_dir() and target.stat().st_mode & 0o777 == 0o700
    assert not apply_step(step, LocalRemote()).changed


# --- binaries from tarballs --------------------------------------------------------------


def _binary_setup(tmp_path: Path) -> tuple[PackageStore, PackageRef]:
    make_setup(tmp_path)
    settings = load_settings({}, str(tmp_path))
    ref = PackageRef("bacalhau tarball", "bacalhau.package", settings.bacalhau.package, "bacalhau")
    return PackageStore(settings), ref


def test_push_binary_installs_once_and_replaces_a_changed_one(tmp_path: Path) -> None:
    store, ref = _binary_setup(tmp_path)
    target = tmp_path / "bin" / "bacalhau"
    step = TarballBinaryStep(str(target), ref, state_dir=str(tmp_path / "state"))
    first = apply_step(step, LocalRemote(), store=store)
    assert first.changed and first.message == "installed"
    assert target.read_bytes() == store.artifact(ref).payload
    assert target.stat().st_mode & 0o777 == 0o755
    assert not apply_step(step, LocalRemote(), store=store).changed
    target.write_bytes(b"tampered")
    result = apply_step(step, LocalRemote(), store=store)
    assert result.changed and result.message.startswith("replaced")
    assert target.read_bytes() == store.artifact(ref).payload


def test_push_refuses_a_package_with_the_wrong_hash_before_any_upload(tmp_path: Path) -> None:
    make_setup(tmp_path)
    settings = load_settings({}, str(tmp_path))
    wrong = "f" * 64
    source = PackageSource(settings.osquery.package.source, wrong)
    ref = PackageRef("osquery package", "osquery.package", source)
    with pytest.raises(PackageError) as caught:
        PackageStore(settings).prepare([ref])
    message = str(caught.value)
    assert settings.osquery.package.source in message
    assert wrong in message and settings.osquery.package.sha256 in message


def _pull_ref(tmp_path: Path, sha: str | None = None) -> tuple[PackageRef, bytes]:
    binary = b"#!/bin/sh\necho pulled\n"
    tarball = tarball_with("bacalhau", binary)
    (tmp_path / "dist").mkdir()
    path = tmp_path / "dist" / "bacalhau_v1.9.3_linux_amd64.tar.gz"
    path.write_bytes(tarball)
    source = PackageSource(f"file://{path}", sha or _sha(tarball))
    return PackageRef("bacalhau tarball", "bacalhau.package", source, "bacalhau"), binary


@pytest.mark.skipif(not (Path("/usr/bin/curl").exists()), reason="needs curl")
def test_pull_binary_downloads_verifies_and_remembers(tmp_path: Path) -> None:
    ref, binary = _pull_ref(tmp_path)
    target = tmp_path / "bin" / "bacalhau"
    step = TarballBinaryStep(str(target), ref, transfer_mode="pull", state_dir=str(tmp_path))
    assert apply_step(step, LocalRemote()).changed
    assert target.read_bytes() == binary
    assert not apply_step(step, LocalRemote()).changed


@pytest.mark.skipif(not (Path("/usr/bin/curl").exists()), reason="needs curl")
def test_pull_with_a_wrong_hash_installs_nothing(tmp_path: Path) -> None:
    ref, _ = _pull_ref(tmp_path, sha="0" * 64)
    target = tmp_path / "bin" / "bacalhau"
    step = TarballBinaryStep(str(target), ref, transfer_mode="pull", state_dir=str(tmp_path))
    with pytest.raises(StepFailed) as caught:
        apply_step(step, LocalRemote())
    message = str(caught.value)
    assert "bacalhau_v1.9.3_linux_amd64.tar.gz: SHA-256 mismatch" in message
    assert "0" * 64 in message
    assert _sha((tmp_path / "dist" / "bacalhau_v1.9.3_linux_amd64.tar.gz").read_bytes()) in message
    assert not target.exists()


# --- packages (never dpkg on this machine: plans, a scripted host, or shims) --------------

DPKG_QUERY = """#!/bin/sh
[ -f "$FK_SHIM/version" ] || { echo "dpkg-query: no packages found matching $3" >&2; exit 1; }
case "$2" in
  *Status-Abbrev*) printf 'ii %s' "$(cat "$FK_SHIM/version")";;
  *) cat "$FK_SHIM/version";;
esac
"""
DPKG = """#!/bin/sh
echo "$@" >>"$FK_SHIM/dpkg.log"
cat "$FK_SHIM/installs-as" >"$FK_SHIM/version"
"""


def dpkg_shims(tmp_path: Path, *, installed: str | None, installs_as: str) -> tuple[Path, Path]:
    """Fake dpkg and dpkg-query on PATH, their state under ``tmp_path/shim``."""
    shim, state = tmp_path / "bin", tmp_path / "shim"
    shim.mkdir()
    state.mkdir()
    for name, text in (("dpkg-query", DPKG_QUERY), ("dpkg", DPKG)):
        path = shim / name
        path.write_text(text.replace("$FK_SHIM", str(state)))
        path.chmod(0o755)
    if installed:
        (state / "version").write_text(installed)
    (state / "installs-as").write_text(installs_as)
    return shim, state


def _deb(tmp_path: Path) -> tuple[PackageStore, PackageRef]:
    make_setup(tmp_path)
    settings = load_settings({}, str(tmp_path))
    ref = PackageRef("osquery package", "osquery.package", settings.osquery.package)
    return PackageStore(settings), ref


def test_deb_is_skipped_at_the_pinned_version() -> None:
    ref = PackageRef("osquery package", "osquery.package", PackageSource("/x.deb", "0" * 64))
    step = DebPackageStep("osquery", "5.23.1-1.linux", ref)
    plan = plan_of(step, {PackageVersion("osquery"): PackageState("5.23.1-1.linux")})
    assert plan.changes == () and plan.message == "osquery 5.23.1-1.linux installed"
    remote = ScriptedRemote(facts={PackageVersion("osquery"): Raw(0, b"ii 5.23.1-1.linux")})
    result = apply_step(step, remote)
    assert not result.changed
    assert len(remote.commands) == 1


def test_deb_is_uploaded_verified_and_installed(tmp_path: Path) -> None:
    store, ref = _deb(tmp_path)
    step = DebPackageStep("osquery", "5.23.1-1.linux", ref, notify=(("osqueryd", "restart"),))
    plan = plan_of(step, {PackageVersion("osquery"): PackageState("5.20.0-1.linux")}, store=store)
    [install] = plan.changes
    assert "sha256sum" in install.command
    assert install.command.index("sha256sum") < install.command.index("dpkg -i")
    assert install.stdin == store.artifact(ref).payload
    assert with_markers(install).endswith("touch /run/fleetkit/osqueryd.restart-pending")
    # For real, through the shell (fake dpkg on PATH), without the notification's marker:
    shim, state = dpkg_shims(tmp_path, installed="5.20.0-1.linux", installs_as="5.23.1-1.linux")
    quiet = DebPackageStep("osquery", "5.23.1-1.linux", ref)
    result = apply_step(quiet, LocalRemote(shim), store=store)
    assert result.changed and "was: 5.20.0-1.linux" in result.message
    assert (state / "dpkg.log").read_text().startswith("-i ")
    assert not apply_step(quiet, LocalRemote(shim), store=store).changed


def test_deb_reporting_another_version_after_install_fails(tmp_path: Path) -> None:
    store, ref = _deb(tmp_path)
    shim, _ = dpkg_shims(tmp_path, installed=None, installs_as="5.20.0-1.linux")
    step = DebPackageStep("osquery", "5.23.1-1.linux", ref)
    with pytest.raises(StepFailed, match=r"not the pinned 5\.23\.1-1\.linux") as caught:
        apply_step(step, LocalRemote(shim), store=store)
    assert "dpkg reports osquery 5.20.0-1.linux" in str(caught.value)


def test_a_package_with_the_wrong_hash_on_the_host_is_refused(tmp_path: Path) -> None:
    store, ref = _deb(tmp_path)
    shim, state = dpkg_shims(tmp_path, installed=None, installs_as="5.23.1-1.linux")
    forged = PackageRef(ref.what, ref.setting, PackageSource(ref.source.source, "e" * 64))
    step = DebPackageStep("osquery", "5.23.1-1.linux", forged)
    store._artifacts[forged] = store.artifact(ref)  # as if the cache held other bytes
    with pytest.raises(StepFailed, match="SHA-256 mismatch") as caught:
        apply_step(step, LocalRemote(shim), store=store)
    assert "e" * 64 in str(caught.value)
    assert not (state / "dpkg.log").exists()


# --- services and sockets ----------------------------------------------------------------

SPEC = ServiceSpec("app", ("/usr/bin/app", "--config", "/etc/app.yaml"), "app.service")


def _state(*words: str, manager: str = "start-stop-daemon") -> ServiceState:
    return ServiceState.from_words(list(words), manager=manager)


def _service(*words: str, manager: str = "start-stop-daemon", **kw: Any) -> Any:
    look = ServiceLook(SPEC, manager)
    return plan_of(
        ServiceStep(SPEC), {look: _state(*words, manager=manager)}, manager=manager, **kw
    )


def test_stopped_service_is_started() -> None:
    plan = _service("stopped")
    assert plan.message.startswith("started app")
    [start] = plan.changes
    assert "--start --background --make-pidfile" in start.command


def test_running_service_is_left_alone() -> None:
    assert _service("running").changes == ()
    look = ServiceLook(SPEC, "start-stop-daemon")
    remote = ScriptedRemote(facts={look: Raw(0, b"start-stop-daemon\nrunning\n")})
    assert not apply_step(ServiceStep(SPEC), remote).changed
    assert len(remote.commands) == 1


def test_pending_restart_restarts_once() -> None:
    plan = _service("running", "restart")
    assert plan.message.startswith("restarted app")
    [restart] = plan.changes
    assert "--stop" in restart.command and "--start" in restart.command
    assert "rm -f /run/fleetkit/app.restart-pending" in restart.command
    look = ServiceLook(SPEC, "start-stop-daemon")
    remote = ScriptedRemote(facts={look: Raw(0, b"start-stop-daemon\nrunning\nrestart\n")})
    assert apply_step(ServiceStep(SPEC), remote).changed
    assert len(remote.commands) == 2


def test_a_notification_from_an_earlier_step_restarts() -> None:
    plan = _service("running", notified={("app", "restart")})
    assert plan.message.startswith("restarted app")


def test_check_mode_only_says_what_it_would_do() -> None:
    look = ServiceLook(SPEC, "start-stop-daemon")
    remote = ScriptedRemote(facts={look: Raw(0, b"start-stop-daemon\nrunning\nrestart\n")})
    result = apply_step(ServiceStep(SPEC), remote, check=True)
    assert result.changed and result.message.startswith("would restart")
    assert len(remote.commands) == 1


def test_systemd_reloads_only_when_the_unit_changed() -> None:
    plan = _service("running", "enabled", "restart", manager="systemd")
    assert "daemon-reload" not in plan.changes[-1].command
    assert "systemctl restart app.service" in plan.changes[-1].command
    plan = _service("running", "enabled", "restart", "reload", manager="systemd")
    assert plan.changes[-1].command.startswith("systemctl daemon-reload && ")


def test_socket_present_and_absent(tmp_path: Path) -> None:
    path = tmp_path / "osquery.em"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        assert not apply_step(SocketStep(str(path)), LocalRemote()).changed
    finally:
        server.close()
        os.unlink(path)
    with pytest.raises(StepFailed, match=r"did not appear within 0\.4s"):
        apply_step(SocketStep(str(path), timeout=0.4), LocalRemote())


# --- container engine and the recap ------------------------------------------------------


def test_missing_docker_is_a_warning_in_verify_mode_and_installed_in_install_mode() -> None:
    facts = {CommandExists("docker"): False}
    plan = plan_of(ContainerEngineStep("verify"), facts)
    assert not plan.changes and plan.warning and "docker is missing" in plan.warning
    plan = plan_of(ContainerEngineStep("install", "docker.io"), facts)
    assert "apt-get install -y -q docker.io" in plan.changes[0].command
    remote = ScriptedRemote(facts={CommandExists("docker"): Raw(0, b"absent\n")})
    result = apply_step(ContainerEngineStep("verify"), remote)
    assert not result.changed and result.warning and len(remote.commands) == 1


def _report(check: bool = False) -> ProvisionReport:
    ok = HostRecap(Host("orch-1", "10.0.0.1", groups=("control_plane",)))
    ok.records.append(StepRecord("service bacalhau", StepResult(False, "running")))
    changed = HostRecap(Host("node-1", "10.0.0.2", groups=("compute",)))
    changed.records += [
        StepRecord("container engine (verify)", StepResult(False, "x", warning="no docker")),
        StepRecord("file /etc/a", StepResult(True, "updated /etc/a", "--- a\n+++ b\n")),
    ]
    down = HostRecap(
        Host("node-2", "10.0.0.3", groups=("compute",)), error="cannot connect: refused"
    )
    return ProvisionReport(check=check, hosts=[ok, changed, down])


def test_recap_counts_names_failures_and_warnings() -> None:
    report = _report()
    assert report.failed_hosts == ["node-2"] and report.exit_status == 1
    recap = format_recap(report)
    assert re.search(r"^HOST\s+ROLE\s+OK\s+CHANGED\s+FAILED$", recap, re.M)
    assert re.search(r"^orch-1\s+control_plane\s+1\s+0\s+0$", recap, re.M)
    assert re.search(r"^node-1\s+compute\s+2\s+1\s+0$", recap, re.M)
    assert re.search(r"^node-2\s+compute\s+0\s+0\s+1$", recap, re.M)
    assert "failed: node-2: cannot connect: refused" in recap
    assert "warning: node-1: no docker" in recap
    assert recap.endswith("summary: 3 hosts, 1 failed (node-2); 1 change(s) made")


def test_recap_says_no_changes_and_check_mode_plan_has_diffs() -> None:
    quiet = ProvisionReport(hosts=[_report().hosts[0]])
    assert format_recap(quiet).endswith("all ok; no changes")
    assert quiet.exit_status == 0
    plan = format_plan(_report(check=True))
    assert "  ~ file /etc/a: updated /etc/a\n    --- a\n    +++ b\n" in plan
    assert "  ! cannot connect: refused" in plan


def test_text_from_hosts_is_escaped_in_plan_and_recap() -> None:
    """A hostile file's escape codes and a hostile error line are shown, never obeyed."""
    report = _report(check=True)
    hostile = "-Interval: 9s\x1b]0;owned\x07\n+Interval: 1s\r\n"
    report.hosts[1].records.append(
        StepRecord("file /etc/b", StepResult(True, "would update", hostile))
    )
    report.hosts[2].error = "failed (exit 1): \x1b[2Jcleared"
    plan = format_plan(report)
    recap = format_recap(report)
    assert "\x1b" not in plan and "\x07" not in plan and "\r" not in plan
    assert "    -Interval: 9s\\x1b]0;owned\\x07\n    +Interval: 1s\\r\n" in plan
    assert "\x1b" not in recap and "\\x1b[2Jcleared" in recap


def test_report_data_carries_round_trips() -> None:
    report = _report()
    report.hosts[0].round_trips = 1
    assert report.round_trips == {"orch-1": 1, "node-1": 0, "node-2": 0}
    data = report.to_json()
    assert data["hosts"][0]["round_trips"] == 1 and data["failed"] == ["node-2"]
