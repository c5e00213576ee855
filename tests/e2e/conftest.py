"""End-to-end fixtures: a provisioned lab, and the CLI run in-process.

``run_cli(lab, "query", "SELECT 1", "--format", "csv")`` parses the argv with
Invoke's own parser against the real task of ``fleetkit.cli.namespace`` (so
option names, flags and positional arguments are exactly the user's), runs
the task body with a :class:`Runtime` injected through the Invoke config
(``fleetkit.cli.RUNTIME_CONFIG_KEY``) whose environment has ``StringIO``
streams, ``lab.environ()`` and the lab's work dir. Exit codes and error
messages therefore go through the one mapping users get.

``provisioned_lab`` is the session ``lab`` after ``fleetkit provision``
(exit 0 asserted) with every compute node CONNECTED at the orchestrator.
Tests that break a host must restore it (``reprovision(lab)`` brings a
drifted lab back) or use their own lab from ``lab_factory``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser import Parser, ParserContext

import fleetkit.cli as cli
from fleetkit.foundation.environment import Environment
from fleetkit.runtime import Runtime
from lab.fleet import Lab

#: Seconds the compute agents get to join the orchestrator after provisioning.
JOIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together (for 'never appears anywhere' assertions)."""
        return self.stdout + self.stderr


def parse_cli(argv: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """``("query", "SELECT 1", "--via", "ssh")`` -> task name and its keyword arguments."""
    if not argv:
        raise ValueError("run_cli needs a command name, e.g. run_cli(lab, 'provision')")
    name, *rest = argv
    task = cli.namespace.tasks[name]
    context = ParserContext(name=name, args=task.get_arguments())
    parsed = Parser(contexts=[context]).parse_argv([name, *rest])
    return name, parsed[0].as_kwargs


def run_cli(
    lab: Lab,
    *argv: str,
    environ: dict[str, str] | None = None,
    stdin: str = "",
    http_session_factory: Callable[[], requests.Session] | None = None,
) -> CliResult:
    """Run one fleetkit command in-process against ``lab``; never raises for exit codes."""
    name, kwargs = parse_cli(argv)
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=out,
        stderr=err,
        stdin=io.StringIO(stdin),
        environ=environ if environ is not None else lab.environ(),
        cwd=str(lab.workdir),
    )
    runtime = Runtime(env=env)
    if http_session_factory is not None:
        runtime.http_session_factory = http_session_factory
    context = Context(config=Config(overrides={cli.RUNTIME_CONFIG_KEY: runtime}))
    status = 0
    try:
        cli.namespace.tasks[name].body(context, **kwargs)
    except Exit as exc:
        status = exc.code
    return CliResult(int(status), out.getvalue(), err.getvalue())


def orchestrator_nodes(lab: Lab) -> list[dict[str, Any]]:
    """The orchestrator's node list (v1.9 shape), straight from its REST API."""
    response = requests.get(f"{lab.orchestrator_url}/api/v1/orchestrator/nodes", timeout=10)
    response.raise_for_status()
    return list(response.json().get("Nodes") or [])


def connection_of(node: dict[str, Any]) -> str:
    state = node.get("ConnectionState") or {}
    return str(state.get("Status") or node.get("Connection") or "")


def wait_connected(lab: Lab, names: list[str], timeout: float = JOIN_TIMEOUT) -> dict[str, Any]:
    """Wait (bounded) until every named node is CONNECTED; returns the nodes by ID."""
    deadline = time.monotonic() + timeout
    nodes: dict[str, Any] = {}
    while True:
        try:
            nodes = {n["Info"]["NodeID"]: n for n in orchestrator_nodes(lab)}
        except requests.RequestException:
            nodes = {}
        if all(connection_of(nodes.get(name, {})) == "CONNECTED" for name in names):
            return nodes
        if time.monotonic() > deadline:
            seen = {k: connection_of(v) for k, v in nodes.items()}
            raise AssertionError(f"nodes {names} not all CONNECTED after {timeout}s: {seen}")
        time.sleep(0.25)


def reprovision(lab: Lab) -> CliResult:
    """Bring a lab back to the desired state after a test changed it."""
    result = run_cli(lab, "provision")
    assert result.exit_code == 0, result.output
    wait_connected(lab, [h.name for h in lab.compute_hosts])
    return result


@pytest.fixture(scope="session")
def provisioned_lab(lab: Lab) -> Lab:
    """The session lab after a successful ``fleetkit provision``, compute nodes CONNECTED."""
    result = run_cli(lab, "provision")
    assert result.exit_code == 0, f"provision failed:\n{result.output}"
    token = (lab.workdir / "secrets" / "node_token").read_text().strip()
    assert token not in result.output, "the node token leaked into provision's output"
    wait_connected(lab, [h.name for h in lab.compute_hosts])
    return lab
