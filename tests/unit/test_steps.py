"""Steps look before they change, change only what differs, and report it.

File, directory, binary and socket steps run their real shell commands here
(``sh -c`` on this machine, on paths inside the test's temp dir); steps that
would touch this machine's packages or services run against a scripted fake.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetkit.clients.ssh import CommandResult
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.secrets import remember_secret
from fleetkit.foundation.settings import PackageSource, load_settings
from fleetkit.hostfacts.packages import PackageError, PackageRef, PackageStore
from fleetkit.hostfacts.recap import (
    HostReport,
    ProvisionReport,
    StepRecord,
    format_plan,
    format_recap,
)
from fleetkit.hostfacts.services import ServiceSpec
from fleetkit.hostfacts.steps import (
    AbsentFileStep,
    ContainerEngineStep,
    DebPackageStep,
    DirectoryStep,
    FileStep,
    HostSession,
    ServiceStep,
    SocketStep,
    StepFailed,
    StepResult,
    TarballBinaryStep,
    unified_diff,
)
from tests.unit.test_settings import _sha, make_setup, tarball_with

HOST = Host("test-host", "127.0.0.1")


class LocalRemote:
    """Runs commands with ``sh -c`` on this machine (only on temp paths)."""

    def __init__(self) -> None:
        self.host = HOST
        self.commands: list[str] = []

    def run(self, command: str, *, stdin: bytes | str | None = None, **_: Any) -> CommandResult:
        self.commands.append(command)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run(["sh", "-c", command], input=data or b"", capture_output=True)
        return CommandResult(HOST.name, command, done.returncode, done.stdout, done.stderr)


@dataclass
class FakeRemote:
    """Answers commands by the first matching substring; records what ran."""

    answers: list[tuple[str, int, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    stdins: list[bytes | None] = field(default_factory=list)
    host: Host = HOST

    def run(self, command: str, *, stdin: bytes | str | None = None, **_: Any) -> CommandResult:
        self.commands.append(command)
        self.stdins.append(stdin.encode() if isinstance(stdin, str) else stdin)
        for needle, code, out in self.answers:
            if needle in command:
                return CommandResult(HOST.name, command, code, out.encode(), b"")
        return CommandResult(HOST.name, command, 0, b"", b"")


def session(
    remote: Any,
    *,
    check: bool = False,
    store: PackageStore | None = None,
    manager: str = "start-stop-daemon",
) -> HostSession:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd="/")
    return HostSession(
        host=HOST,
        remote=remote,
        env=env,
        packages=store,  # type: ignore[arg-type]
        settings_file="fleetkit.yaml",
        check=check,
        service_manager=manager,
    )


# --- files -------------------------------------------------------------------------------


def test_file_is_created_then_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "app" / "app.conf"
    step = FileStep(str(target), "a = 1\nb = 2\n", mode=0o600)
    first = step.apply(session(LocalRemote()))
    assert first.changed and first.message == "created"
    assert first.diff is not None and first.diff.startswith("--- /dev/null")
    assert target.read_text() == "a = 1\nb = 2\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert not list(target.parent.glob(".app.conf.*")), "temp file left behind"
    again = step.apply(session(LocalRemote()))
    assert not again.changed and again.diff is None


def test_drift_is_shown_in_check_mode_and_not_touched(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("a = 1\nb = 3\n")
    target.chmod(0o600)
    step = FileStep(str(target), "a = 1\nb = 2\n", mode=0o600, notify=(("app", "restart"),))
    s = session(LocalRemote(), check=True)
    result = step.apply(s)
    assert result.changed and result.message.startswith("would update")
    assert result.diff is not None
    assert "-b = 3\n" in result.diff and "+b = 2\n" in result.diff
    assert target.read_text() == "a = 1\nb = 3\n"
    assert s.notified == {("app", "restart")}


def test_mode_only_drift_is_fixed_without_rewriting(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("same\n")
    target.chmod(0o644)
    inode = target.stat().st_ino
    result = FileStep(str(target), "same\n", mode=0o600, notify=(("app", "restart"),)).apply(
        session(LocalRemote())
    )
    assert result.changed and result.message == "fixed mode" and "0644" in (result.diff or "")
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.stat().st_ino == inode


def test_content_change_notifies_the_service_once_written(tmp_path: Path) -> None:
    remote = FakeRemote(answers=[("stat -c", 0, "600 root root\nold\n")])
    s = session(remote)
    result = FileStep("/etc/app.conf", "new\n", mode=0o600, notify=(("app", "restart"),)).apply(s)
    assert result.changed
    assert any("mktemp" in c and "mv -f" in c for c in remote.commands)
    assert remote.stdins[1] == b"new\n"
    assert remote.commands[-1].endswith("touch /run/fleetkit/app.restart-pending")


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


def test_unit_files_are_skipped_without_systemd() -> None:
    remote = FakeRemote()
    step = FileStep("/etc/systemd/system/app.service", "[Unit]\n", systemd_only=True)
    result = step.apply(session(remote, manager="start-stop-daemon"))
    assert not result.changed and "no systemd" in result.message
    assert remote.commands == []


def test_absent_file(tmp_path: Path) -> None:
    target = tmp_path / "env"
    step = AbsentFileStep(str(target))
    assert not step.apply(session(LocalRemote())).changed
    target.write_text("X=1\n")
    assert step.apply(session(LocalRemote(), check=True)).changed
    assert target.exists()
    assert step.apply(session(LocalRemote())).changed
    assert not target.exists()


def test_directory(tmp_path: Path) -> None:
    target = tmp_path / "data"
    step = DirectoryStep(str(target), mode=0o700)
    assert step.apply(session(LocalRemote())).changed
    assert target.is_dir() and target.stat().st_mode & 0o777 == 0o700
    assert not step.apply(session(LocalRemote())).changed


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
    assert step.apply(session(LocalRemote(), store=store)).changed
    assert target.read_bytes() == store.artifact(ref).payload
    assert target.stat().st_mode & 0o777 == 0o755
    assert not step.apply(session(LocalRemote(), store=store)).changed
    target.write_bytes(b"tampered")
    result = step.apply(session(LocalRemote(), store=store))
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
    assert step.apply(session(LocalRemote())).changed
    assert target.read_bytes() == binary
    assert not step.apply(session(LocalRemote())).changed


@pytest.mark.skipif(not (Path("/usr/bin/curl").exists()), reason="needs curl")
def test_pull_with_a_wrong_hash_installs_nothing(tmp_path: Path) -> None:
    ref, _ = _pull_ref(tmp_path, sha="0" * 64)
    target = tmp_path / "bin" / "bacalhau"
    step = TarballBinaryStep(str(target), ref, transfer_mode="pull", state_dir=str(tmp_path))
    with pytest.raises(StepFailed) as caught:
        step.apply(session(LocalRemote()))
    message = str(caught.value)
    assert "bacalhau_v1.9.3_linux_amd64.tar.gz: SHA-256 mismatch" in message
    assert "0" * 64 in message
    assert _sha((tmp_path / "dist" / "bacalhau_v1.9.3_linux_amd64.tar.gz").read_bytes()) in message
    assert not target.exists()


# --- packages (scripted: never dpkg on this machine) --------------------------------------


def test_deb_is_skipped_at_the_pinned_version() -> None:
    remote = FakeRemote(answers=[("dpkg-query", 0, "5.23.1-1.linux")])
    ref = PackageRef("osquery package", "osquery.package", PackageSource("/x.deb", "0" * 64))
    result = DebPackageStep("osquery", "5.23.1-1.linux", ref).apply(session(remote))
    assert not result.changed
    assert len(remote.commands) == 1


def test_deb_is_uploaded_verified_and_installed(tmp_path: Path) -> None:
    make_setup(tmp_path)
    settings = load_settings({}, str(tmp_path))
    store = PackageStore(settings)
    ref = PackageRef("osquery package", "osquery.package", settings.osquery.package)
    remote = FakeRemote(
        answers=[("dpkg -i", 0, "5.23.1-1.linux"), ("dpkg-query", 0, "5.20.0-1.linux")]
    )
    step = DebPackageStep("osquery", "5.23.1-1.linux", ref, notify=(("osqueryd", "restart"),))
    result = step.apply(session(remote, store=store))
    assert result.changed and "was: 5.20.0-1.linux" in result.message
    install = remote.commands[1]
    assert "sha256sum" in install and install.index("sha256sum") < install.index("dpkg -i")
    assert remote.stdins[1] == store.artifact(ref).payload
    assert remote.commands[-1].endswith("touch /run/fleetkit/osqueryd.restart-pending")


def test_deb_reporting_another_version_after_install_fails() -> None:
    ref = PackageRef(
        "osquery package", "osquery.package", PackageSource("http://x/o.deb", "0" * 64)
    )
    remote = FakeRemote(answers=[("dpkg -i", 0, "5.20.0-1.linux"), ("dpkg-query", 0, "")])
    step = DebPackageStep("osquery", "5.23.1-1.linux", ref, transfer_mode="pull")
    with pytest.raises(StepFailed, match=r"not the pinned 5\.23\.1-1\.linux"):
        step.apply(session(remote))


# --- services and sockets ----------------------------------------------------------------

SPEC = ServiceSpec("app", ("/usr/bin/app", "--config", "/etc/app.yaml"), "app.service")


def _service(answers: list[tuple[str, int, str]], **kw: Any) -> tuple[Any, FakeRemote]:
    remote = FakeRemote(answers=answers)
    return ServiceStep(SPEC).apply(session(remote, **kw)), remote


def test_stopped_service_is_started() -> None:
    result, remote = _service([("--status", 0, "stopped\n")])
    assert result.changed and result.message.startswith("started app")
    assert "--start --background --make-pidfile" in remote.commands[-1]


def test_running_service_is_left_alone() -> None:
    result, remote = _service([("--status", 0, "running\n")])
    assert not result.changed and len(remote.commands) == 1


def test_pending_restart_restarts_once() -> None:
    result, remote = _service([("--status", 0, "running\nrestart\n")])
    assert result.changed and result.message.startswith("restarted app")
    assert len(remote.commands) == 2
    assert "--stop" in remote.commands[1] and "--start" in remote.commands[1]
    assert "rm -f /run/fleetkit/app.restart-pending" in remote.commands[1]


def test_check_mode_only_says_what_it_would_do() -> None:
    result, remote = _service([("--status", 0, "running\nrestart\n")], check=True)
    assert result.changed and result.message.startswith("would restart")
    assert len(remote.commands) == 1


def test_systemd_reloads_only_when_the_unit_changed() -> None:
    result, remote = _service([("is-active", 0, "running\nenabled\nrestart\n")], manager="systemd")
    assert result.changed and "daemon-reload" not in remote.commands[-1]
    assert "systemctl restart app.service" in remote.commands[-1]
    result, remote = _service(
        [("is-active", 0, "running\nenabled\nrestart\nreload\n")], manager="systemd"
    )
    assert remote.commands[-1].startswith("systemctl daemon-reload && ")


def test_socket_present_and_absent(tmp_path: Path) -> None:
    path = tmp_path / "osquery.em"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        assert not SocketStep(str(path)).apply(session(LocalRemote())).changed
    finally:
        server.close()
        os.unlink(path)
    with pytest.raises(StepFailed, match=r"did not appear within 0\.4s"):
        SocketStep(str(path), timeout=0.4).apply(session(LocalRemote()))


# --- container engine and the recap ------------------------------------------------------


def test_missing_docker_is_a_warning_in_verify_mode_and_installed_in_install_mode() -> None:
    remote = FakeRemote(answers=[("command -v docker", 0, "absent\n")])
    result = ContainerEngineStep("verify").apply(session(remote))
    assert not result.changed and result.warning and "docker is missing" in result.warning
    assert len(remote.commands) == 1
    result = ContainerEngineStep("install", "docker.io").apply(session(remote))
    assert result.changed and "apt-get install -y -q docker.io" in remote.commands[-1]


def _report(check: bool = False) -> ProvisionReport:
    ok = HostReport(Host("orch-1", "10.0.0.1", groups=("control_plane",)))
    ok.records.append(StepRecord("service bacalhau", StepResult(False, "running")))
    changed = HostReport(Host("node-1", "10.0.0.2", groups=("compute",)))
    changed.records += [
        StepRecord("container engine (verify)", StepResult(False, "x", warning="no docker")),
        StepRecord("file /etc/a", StepResult(True, "updated /etc/a", "--- a\n+++ b\n")),
    ]
    down = HostReport(
        Host("node-2", "10.0.0.3", groups=("compute",)), error="cannot connect: refused"
    )
    return ProvisionReport(check=check, hosts=[ok, changed, down])


def test_recap_counts_names_failures_and_warnings() -> None:
    report = _report()
    assert report.failed_hosts == ["node-2"] and report.exit_status == 1
    recap = format_recap(report)
    assert "orch-1  control_plane  ok=1   changed=0   failed=0" in recap
    assert "node-1  compute        ok=2   changed=1   failed=0" in recap
    assert "node-2  compute        ok=0   changed=0   failed=1" in recap
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
