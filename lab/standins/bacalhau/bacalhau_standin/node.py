"""``bacalhau serve``: one node (orchestrator, compute, or both) until SIGTERM.

Every node serves the agent endpoints on ``API.Host:API.Port``; an
orchestrator adds the orchestrator endpoints there and the compute transport
on ``Orchestrator.Host:Orchestrator.Port``.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import yaml

from .auth import Authorizer, users_from_config
from .buildinfo import go_arch
from .compute import ComputeAgent
from .config import Config, ConfigProblem, redact
from .executor import NodeContext
from .httpapi import JsonServer, Request, Router
from .logs import Log
from .models import node_info
from .orchestrator import Orchestrator
from .transport import TokenGuard, orchestrator_routes

_NAME_PROVIDERS = ("hostname", "uuid", "puuid")


def _new_name(provider: str) -> str:
    if provider == "hostname":
        return socket.gethostname()
    if provider == "uuid":
        return str(uuid.uuid4())
    if provider == "puuid":
        return f"n-{uuid.uuid4()}"
    raise ConfigProblem(
        f"NameProvider: {provider!r} is not supported by the stand-in "
        f"(use one of {', '.join(_NAME_PROVIDERS)})"
    )


def node_name(config: Config, data_dir: Path, requested: str, log: Log) -> str:
    """The node ID, persisted in ``system_metadata.yaml`` on first start (like v1.9)."""
    path = data_dir / "system_metadata.yaml"
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        stored = {}
    name = str(stored.get("NodeName") or "") if isinstance(stored, dict) else ""
    if name:
        if requested and requested != name:
            log.warn("node name already set; ignoring the new one", name=name, ignored=requested)
        return name
    name = requested or _new_name(config.text("NameProvider", "puuid").lower())
    metadata = {"NodeName": name, "InstanceID": str(uuid.uuid4())}
    path.write_text(yaml.safe_dump(metadata), encoding="utf-8")
    return name


def node_labels(config: Config, name: str) -> dict[str, str]:
    labels = config.mapping("Labels")
    labels.update({"os_type": "linux", "os_arch": go_arch(), "name": name})
    return labels


class Node:
    """Everything one ``serve`` process runs; ``stop()`` shuts it all down."""

    def __init__(self, config: Config, log: Log, requested_name: str = ""):
        self.config = config
        self.log = log
        self.data_dir = Path(config.text("DataDir"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.name = node_name(config, self.data_dir, requested_name, log)
        self.labels = node_labels(config, self.name)
        self.orchestrator: Orchestrator | None = None
        self.compute: ComputeAgent | None = None
        self.servers: list[JsonServer] = []
        if not config.flag("Orchestrator.Enabled") and not config.flag("Compute.Enabled"):
            log.warn("neither --orchestrator nor --compute given: running an orchestrator")
            config.set("Orchestrator.Enabled", True)

    def start(self) -> None:
        api = Router()
        self._agent_routes(api)
        if self.config.flag("Orchestrator.Enabled"):
            self._start_orchestrator(api)
        guard = Authorizer(users_from_config(self.config.get("API.Auth.Users")))
        host, port = self.config.text("API.Host"), self.config.integer("API.Port")
        self._listen(JsonServer(host, port, api, self.log, "api", guard))
        if self.config.flag("Compute.Enabled"):
            self._start_compute()
        self.log.info(
            "bacalhau stand-in node started",
            node=self.name,
            orchestrator=self.orchestrator is not None,
            compute=self.compute is not None,
            api=f"{host}:{port}",
        )

    def _listen(self, server: JsonServer) -> None:
        server.start()
        self.servers.append(server)

    def _start_orchestrator(self, api: Router) -> None:
        orch = Orchestrator(
            self.name,
            self.data_dir,
            self.log,
            manual_approval=self.config.flag("Orchestrator.NodeManager.ManualApproval"),
            disconnect_timeout=self.config.duration("Orchestrator.NodeManager.DisconnectTimeout"),
        )
        orch.routes(api)
        transport = Router()
        orchestrator_routes(orch, transport)
        guard = TokenGuard(self.config.text("Orchestrator.Auth.Token"), self.log)
        host, port = self.config.text("Orchestrator.Host"), self.config.integer("Orchestrator.Port")
        self._listen(JsonServer(host, port, transport, self.log, "transport", guard))
        orch.start()
        self.orchestrator = orch

    def _start_compute(self) -> None:
        context = NodeContext(
            node_id=self.name,
            allow_list=self.config.strings("Compute.AllowListedLocalPaths"),
            env_allow_list=self.config.strings("Compute.Env.AllowList"),
            environ=dict(os.environ),
        )
        agent = ComputeAgent(
            context,
            self.labels,
            self.config.strings("Compute.Orchestrators"),
            self.config.text("Compute.Auth.Token"),
            self.config.duration("Compute.Heartbeat.Interval"),
            self.log,
            api_host=self.config.text("API.Host"),
        )
        agent.start()
        self.compute = agent

    def _info(self) -> dict[str, Any]:
        if self.compute is not None:
            return self.compute.info()
        return node_info(self.name, "Requester", self.labels)

    def _agent_routes(self, router: Router) -> None:
        from .buildinfo import version_info

        def debug(_: Request) -> Any:
            running = len(self.compute.running) if self.compute else 0
            return [{"component": "stand-in", "info": {"RunningExecutions": running}}]

        router.add("GET", "/api/v1/agent/alive", lambda _: {"Status": "OK"})
        router.add("GET", "/api/v1/agent/version", lambda _: version_info())
        router.add("GET", "/api/v1/agent/node", lambda _: self._info())
        router.add(
            "GET", "/api/v1/agent/config", lambda _: {"config": redact(self.config.merged())}
        )
        router.add("GET", "/api/v1/agent/debug", debug)
        router.add(
            "GET",
            "/api/v1/agent/authconfig",
            lambda _: {"Version": "1.0.0", "Config": {"ProviderID": "", "ProviderName": ""}},
        )

    def stop(self) -> None:
        if self.compute is not None:
            self.compute.stop()
        if self.orchestrator is not None:
            self.orchestrator.stop()
        # The servers stay up until the process exits: closing a socket under a running
        # serve_forever loop would make it spin.


def serve(config: Config, log: Log, requested_name: str = "") -> int:
    node = Node(config, log, requested_name)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("shutting down", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node.start()
    except OSError as exc:
        log.error("failed to start node", error=str(exc))
        node.stop()
        return 1
    while not stop.wait(1.0):
        pass
    node.stop()
    log.info("node stopped", node=node.name)
    return 0
