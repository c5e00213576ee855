"""The one place that maps errors to exit codes and messages."""

from __future__ import annotations

import io

from fleetkit.cli import run_command
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.secrets import remember_secret
from fleetkit.foundation.status import ConfigError, ExitStatus, HostError
from fleetkit.runtime import Runtime


def _runtime(environ: dict[str, str] | None = None) -> Runtime:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ=environ or {}, cwd="/")
    return Runtime(env=env)


def _stderr(rt: Runtime) -> str:
    value = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
    assert isinstance(value, str)
    return value


def test_config_error_is_exit_2_naming_file_and_key() -> None:
    rt = _runtime()

    def work(_: Runtime) -> ExitStatus:
        raise ConfigError("port must be an integer", file="inventory/lab.yaml", key="compute.port")

    assert run_command(work, rt) == ExitStatus.BAD_INPUT
    assert "inventory/lab.yaml: compute.port: port must be an integer" in _stderr(rt)
    assert "Traceback" not in _stderr(rt)


def test_keyboard_interrupt_is_130() -> None:
    rt = _runtime()

    def work(_: Runtime) -> ExitStatus:
        raise KeyboardInterrupt

    assert run_command(work, rt) == ExitStatus.INTERRUPTED
    assert "interrupted" in _stderr(rt)


def test_internal_error_has_no_traceback_unless_asked() -> None:
    def work(_: Runtime) -> ExitStatus:
        raise ValueError("unexpected")

    quiet = _runtime()
    assert run_command(work, quiet) == ExitStatus.FAILURE
    assert "internal error: ValueError: unexpected" in _stderr(quiet)
    assert "Traceback" not in _stderr(quiet)
    loud = _runtime({"FLEETKIT_DEBUG": "1"})
    run_command(work, loud)
    assert "Traceback" in _stderr(loud)


def test_secrets_are_redacted_from_error_messages() -> None:
    remember_secret("s3cr3t-token-value")
    rt = _runtime()

    def work(_: Runtime) -> ExitStatus:
        raise HostError("node-1", "config holds s3cr3t-token-value")

    assert run_command(work, rt) == ExitStatus.FAILURE
    assert "s3cr3t-token-value" not in _stderr(rt)
    assert "node-1: config holds <redacted>" in _stderr(rt)


def test_success_passes_through() -> None:
    assert run_command(lambda _: ExitStatus.SUCCESS, _runtime()) == ExitStatus.SUCCESS


def test_query_help_prints_help_instead_of_running_a_query() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "from fleetkit.cli import main; main()", "query", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0
    assert "Usage: fleetkit query" in done.stdout
    assert "--select" in done.stdout
    assert "fleetkit.yaml" not in done.stderr


def test_the_console_script_takes_packs_subcommands_spaced_or_dotted() -> None:
    from fleetkit.cli import spaced_subcommands

    assert spaced_subcommands(["fleetkit", "packs", "import", "x.json", "--kind", "hunt"]) == [
        "fleetkit",
        "packs.import",
        "x.json",
        "--kind",
        "hunt",
    ]
    assert spaced_subcommands(["fleetkit", "packs.list"]) == ["fleetkit", "packs.list"]
    # Not a task of the collection: left for Invoke to refuse with its own message.
    assert spaced_subcommands(["fleetkit", "packs", "nope"]) == ["fleetkit", "packs", "nope"]
    assert spaced_subcommands(["fleetkit", "query", "SELECT 1"]) == [
        "fleetkit",
        "query",
        "SELECT 1",
    ]
