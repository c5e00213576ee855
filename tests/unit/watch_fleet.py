"""A scripted fleet for the watch's unit tests: an orchestrator that runs pack jobs.

:class:`PackOrchestrator` answers the REST calls the ask engine makes. A
submitted job's task is checked to be the pack script (``/bin/sh -c SCRIPT``
with the SQL as separate parameters) and each node's framed stdout is made
by :func:`fleetkit.ask.batch.encode_pack_output` from what :class:`Fleet`
says each node answers to each SQL statement: rows of the SSH-key policy
when the node holds an unencrypted key, an osquery error for a statement
the test breaks, nothing for a node that is down.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetkit.ask.batch import SCRIPT, SHELL, encode_pack_output
from fleetkit.clients.bacalhau import Execution, JobStatus, NodeState, OrchestratorError, Submitted
from tests.unit.test_query_unit import FakeClock, execution, node_state, write_fleet
from tests.unit.test_results import osqueryi

NODES = ("node-1", "node-2", "node-3")
BAD_KEY_ROW = {"username": "root", "path": "/root/.ssh/id_rsa", "encrypted": "0", "key_type": "rsa"}


@dataclass
class Fleet:
    """What each node answers: bad keys, broken statements, hunt rows, nodes that are down."""

    bad_keys: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    #: (node, substring of the SQL) -> osquery error for that statement.
    broken: dict[tuple[str, str], str] = field(default_factory=dict)
    #: node -> rows any statement containing "FROM hash" returns (hunt packs).
    files: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    #: node -> what it prints instead of the pack's framing (a hostile or broken node).
    garbage: dict[str, str] = field(default_factory=dict)

    def answer(self, node: str, sql: str) -> tuple[int, bytes, bytes]:
        for (who, needle), error in self.broken.items():
            if who == node and needle in sql:
                return 1, b"", f"Error: {error}\n".encode()
        rows: list[dict[str, str]] = []
        if "encrypted = 0" in sql and node in self.bad_keys:
            rows = [BAD_KEY_ROW]
        elif "FROM hash" in sql:
            rows = self.files.get(node, [])
        return 0, osqueryi(rows), b""


@dataclass
class PackOrchestrator:
    """Runs every submitted pack job at once on the nodes that are up (fake time)."""

    fleet: Fleet
    node_states: list[NodeState] = field(default_factory=lambda: [node_state(n) for n in NODES])
    submitted: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    requests: int = 0
    down: bool = False
    on_submit: Callable[[str], None] | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _runs: dict[str, list[Execution]] = field(default_factory=dict)

    def _ask(self) -> None:
        self.requests += 1
        if self.down:
            raise OrchestratorError("orchestrator at http://127.0.0.1:9 refused the connection")

    def nodes(self, **_: Any) -> list[NodeState]:
        self._ask()
        return self.node_states

    def submit_job(self, job: dict[str, Any]) -> Submitted:
        self._ask()
        self.submitted.append(job)
        job_id = f"j-{next(self._ids)}"
        params = job["Job"]["Tasks"][0]["Engine"]["Params"]
        assert params["Entrypoint"][:3] == [SHELL, "-c", SCRIPT], "not the pack script"
        statements = params["Parameters"][3:]
        runs = []
        for node in NODES:
            if node in self.fleet.down:
                continue
            answers = [self.fleet.answer(node, sql) for sql in statements]
            out = self.fleet.garbage.get(node) or encode_pack_output(answers).decode()
            runs.append(execution(node, 9, stdout=out))
        self._runs[job_id] = runs
        if self.on_submit is not None:
            self.on_submit(job_id)
        return Submitted(job_id=job_id, evaluation_id="ev", warnings=[])

    def executions(self, job_id: str) -> list[Execution]:
        self._ask()
        if self.stopped:
            return [execution(e.node_id, 11, message="cancelled") for e in self._runs[job_id]]
        return self._runs[job_id]

    def job(self, job_id: str) -> JobStatus:
        self._ask()
        state = "Stopped" if self.stopped else "Completed"
        return JobStatus(job_id=job_id, state=state, message="", raw={})

    def stop_job(self, job_id: str, reason: str) -> None:
        self._ask()
        self.stopped.append(reason)


def write_watch_fleet(tmp: Path, watch: dict[str, Any] | None = None) -> Path:
    """The unit tests' fleet (3 compute nodes) with a ``watch`` section."""
    path = write_fleet(tmp)
    settings = json.loads(path.read_text())
    settings["watch"] = {"status_file": "watch-status.json", **(watch or {})}
    path.write_text(json.dumps(settings))
    return path


__all__ = ["NODES", "FakeClock", "Fleet", "PackOrchestrator", "write_watch_fleet"]
