"""Service managers: systemd where it runs, the start-stop-daemon fallback elsewhere."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from fleetkit.foundation.status import ConfigError
from fleetkit.hostfacts.services import (
    DETECT_COMMAND,
    ServiceSpec,
    StartStopDaemon,
    Systemd,
    manager_from_detection,
    manager_named,
    ready_test,
)

BACALHAU = ServiceSpec(
    "bacalhau",
    ("/usr/local/bin/bacalhau", "serve", "--config", "/etc/bacalhau/config.yaml"),
    "bacalhau.service",
    env_file="/etc/bacalhau/env",
)


def test_detection() -> None:
    assert manager_from_detection("systemd\n").name == "systemd"
    assert manager_from_detection("none\n").name == "start-stop-daemon"
    assert "/run/systemd/system" in DETECT_COMMAND
    assert manager_named("systemd").name == "systemd"
    with pytest.raises(ConfigError, match="unknown service manager"):
        manager_named("upstart")


def test_fallback_runs_the_units_command_line_with_a_pidfile() -> None:
    start = StartStopDaemon().start_command(BACALHAU, reload=False)
    assert "start-stop-daemon --start --background --make-pidfile" in start
    assert "--pidfile /run/fleetkit/bacalhau.pid" in start
    script = StartStopDaemon().daemon_script(BACALHAU)
    assert script.endswith(
        "exec /usr/local/bin/bacalhau serve --config /etc/bacalhau/config.yaml "
        ">>/var/log/bacalhau.log 2>&1"
    )
    assert shlex.quote(script) in start
    restart = StartStopDaemon().restart_command(BACALHAU, reload=True)
    assert "--stop --oknodo --retry TERM/10/KILL/5 --remove-pidfile" in restart
    assert "daemon-reload" not in restart


def test_fallback_script_loads_the_environment_file(tmp_path: Path) -> None:
    """The same KEY=value file systemd reads with EnvironmentFile= is exported to the daemon."""
    env_file = tmp_path / "env"
    env_file.write_text("AWS_REGION='eu-west-1'\nAWS_SECRET_ACCESS_KEY='s3cr3t/+x'\n")
    spec = ServiceSpec("probe", ("/bin/sh", "-c", "env"), "probe.service", env_file=str(env_file))
    script = StartStopDaemon().daemon_script(spec).replace(f">>{spec.log_file} 2>&1", "")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert "AWS_REGION=eu-west-1" in out.splitlines()
    assert "AWS_SECRET_ACCESS_KEY=s3cr3t/+x" in out.splitlines()
    env_file.unlink()
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0  # a missing file is fine, like EnvironmentFile=-


def test_systemd_commands() -> None:
    systemd = Systemd()
    assert systemd.start_command(BACALHAU, reload=False).startswith(
        "systemctl enable --quiet bacalhau.service && systemctl start bacalhau.service"
    )
    assert systemd.restart_command(BACALHAU, reload=True).startswith(
        "systemctl daemon-reload && systemctl enable --quiet bacalhau.service && "
        "systemctl restart bacalhau.service"
    )
    assert "is-enabled" in systemd.look_command(BACALHAU)


def test_look_output_is_parsed_with_markers() -> None:
    state = StartStopDaemon.parse_look("running\nrestart\n")
    assert state.running and state.restart_pending and not state.reload_pending
    state = Systemd.parse_look("stopped\ndisabled\n")
    assert not state.running and not state.enabled


def _holds(test: str) -> bool:
    return subprocess.run(["sh", "-c", test], capture_output=True).returncode == 0


def test_a_socket_is_a_sign_of_serving_only_when_newer_than_the_pidfile(tmp_path: Path) -> None:
    """A socket left by an earlier run of the daemon must not end the start's settle early."""
    path = tmp_path / "osquery.em"
    spec = ServiceSpec("osqueryd", ("/opt/osqueryd",), "o.service", ready_socket=str(path))
    pidfile = tmp_path / "osqueryd.pid"
    test = ready_test(spec)
    assert test is not None
    test = test.replace(spec.pidfile, str(pidfile))
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
        os.utime(path, (1_000_000, 1_000_000))
        pidfile.write_text("123\n")  # the start writes the pidfile now
        assert not _holds(test)
    path.unlink()
    os.utime(pidfile, (2_000_000, 2_000_000))  # file times are coarse: make the order plain
    with socket.socket(socket.AF_UNIX) as fresh:
        fresh.bind(str(path))  # the new daemon's socket
        assert _holds(test)


def test_a_port_is_a_sign_of_serving_once_it_listens() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        spec = ServiceSpec("bacalhau", ("/usr/local/bin/bacalhau",), "b.service", ready_port=port)
        test = ready_test(spec)
        assert test is not None and not _holds(test)  # bound, not listening yet
        server.listen()
        assert _holds(test)


def test_a_daemon_without_a_sign_sits_out_the_settle_time() -> None:
    assert ready_test(BACALHAU) is None
    start = StartStopDaemon().start_command(BACALHAU, reload=False)
    assert f"sleep {StartStopDaemon.settle}" in start
