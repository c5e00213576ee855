"""The compute agent: join an orchestrator, heartbeat, take executions, report.

Joining tries each of ``Compute.Orchestrators`` in turn; a refused token is
logged and retried (the node never appears at the orchestrator until the
token is right). A heartbeat answered "not registered" (e.g. the orchestrator
restarted or deleted the node) makes the node join again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from .executor import Execution, NodeContext
from .logs import Log
from .models import node_info
from .transport import (
    POLL_WAIT,
    TransportClient,
    TransportError,
    TransportRefused,
    source_address,
)

_RETRY = 1.0


def storage_sources(allow_list: list[str]) -> list[str]:
    sources = ["urlDownload", "inline", "s3"]
    return [*sources, "local", "localDirectory"] if allow_list else sources


def publishers(environ: Mapping[str, str]) -> list[str]:
    has_creds = environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY")
    return ["noop", "local", "s3"] if has_creds else ["noop", "local"]


def capacity() -> dict[str, Any]:
    """80% of this machine, like the default ``Compute.AllocatedCapacity``."""
    cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    return {"CPU": round(cpus * 0.8, 2), "Memory": int(memory * 0.8), "Disk": 0, "GPU": 0}


class ComputeAgent:
    """Two loops (commands by long poll, heartbeats) plus one thread per execution."""

    def __init__(
        self,
        node: NodeContext,
        labels: dict[str, str],
        orchestrators: list[str],
        token: str,
        heartbeat_interval: float,
        log: Log,
        api_host: str = "",
    ):
        self.node = node
        self.labels = labels
        self.orchestrators = orchestrators
        self.source = source_address(api_host)
        self.token = token
        self.interval = heartbeat_interval if heartbeat_interval > 0 else 15.0
        self.log = log
        self.client: TransportClient | None = None
        self.lock = threading.Lock()
        self.running: dict[str, Execution] = {}
        self.ack = 0  # highest command Seq handled (per orchestrator connection)
        self.seen: set[str] = set()  # execution IDs already taken
        self.workers: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._command_loop, name="compute-commands", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="compute-heartbeat", daemon=True),
        ]

    def info(self) -> dict[str, Any]:
        with self.lock:
            running = len(self.running)
        return node_info(
            self.node.node_id,
            "Compute",
            self.labels,
            publishers=publishers(self.node.environ),
            storage_sources=storage_sources(self.node.allow_list),
            capacity=capacity(),
            running=running,
        )

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, grace: float = 5.0) -> None:
        """Kill running executions and give them ``grace`` seconds to report it."""
        self.stopping.set()
        with self.lock:
            executions = list(self.running.values())
            workers = list(self.workers)
        for execution in executions:
            execution.cancel("compute node shutting down: execution aborted")
        deadline = time.monotonic() + grace
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # ---- connection ------------------------------------------------------------------------
    def _join(self) -> TransportClient | None:
        for address in self.orchestrators:
            client = TransportClient(address, self.token, self.source)
            url = client.url
            try:
                with self.lock:
                    running = list(self.running)
                answer = client.call("/ncl/v1/join", {"NodeInfo": self.info(), "Running": running})
            except TransportRefused as exc:
                self.log.error("orchestrator refused connection", orchestrator=url, error=str(exc))
                continue
            except TransportError as exc:
                self.log.warn("cannot reach orchestrator", orchestrator=url, error=str(exc))
                continue
            self.log.info(
                "joined orchestrator", orchestrator=url, membership=answer.get("Membership", "")
            )
            return client
        return None

    def _connected_client(self) -> TransportClient | None:
        with self.lock:
            if self.client is not None:
                return self.client
        client = self._join()
        with self.lock:
            self.client = client
            self.ack = 0  # a (re)started orchestrator numbers its commands from 1 again
        return client

    def _drop(self, client: TransportClient) -> None:
        with self.lock:
            if self.client is client:
                self.client = None

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.interval):
            with self.lock:
                client = self.client
            if client is None:
                continue
            try:
                client.call(
                    "/ncl/v1/heartbeat", {"NodeID": self.node.node_id, "NodeInfo": self.info()}
                )
            except TransportError as exc:
                self.log.warn("heartbeat failed", error=str(exc))
                if exc.status == 404:
                    self._drop(client)
            except TransportRefused as exc:
                self.log.error("heartbeat refused", error=str(exc))
                self._drop(client)

    def _command_loop(self) -> None:
        while not self.stopping.is_set():
            client = self._connected_client()
            if client is None:
                self.stopping.wait(_RETRY)
                continue
            try:
                answer = client.call(
                    "/ncl/v1/poll",
                    {"NodeID": self.node.node_id, "Ack": self.ack, "Wait": POLL_WAIT},
                    timeout=POLL_WAIT + 10,
                )
            except (TransportError, TransportRefused) as exc:
                self.log.warn("lost orchestrator", error=str(exc))
                self._drop(client)
                self.stopping.wait(_RETRY)
                continue
            for command in answer.get("Commands") or []:
                self._handle(command)
                self.ack = max(self.ack, int(command.get("Seq") or 0))

    # ---- executions ------------------------------------------------------------------------
    def _handle(self, command: dict[str, Any]) -> None:
        if command.get("Type") == "Run":
            if command["Execution"]["ID"] in self.seen:
                return
            self.seen.add(command["Execution"]["ID"])
            execution = Execution(command["Execution"], command["Job"], self.node, self._report)
            with self.lock:
                self.running[execution.execution_id] = execution
            self.log.info(
                "execution received", execution=execution.execution_id, job=execution.job["ID"]
            )
            worker = threading.Thread(target=self._run, args=(execution,), daemon=True)
            with self.lock:
                self.workers = [w for w in self.workers if w.is_alive()] + [worker]
            worker.start()
        elif command.get("Type") == "Cancel":
            with self.lock:
                target = self.running.get(str(command.get("ExecutionID")))
            if target is not None:
                self.log.info("cancelling execution", execution=target.execution_id)
                target.cancel("execution cancelled by the orchestrator")

    def _run(self, execution: Execution) -> None:
        try:
            execution.run()
        finally:
            with self.lock:
                self.running.pop(execution.execution_id, None)

    def _report(self, update: dict[str, Any]) -> None:
        """Send one state change; retry while the orchestrator is unreachable (up to ~60 s)."""
        body = {"NodeID": self.node.node_id, **update}
        for _ in range(60):
            client = self._connected_client()
            if client is not None:
                try:
                    client.call("/ncl/v1/update", body)
                    return
                except TransportError as exc:
                    if 400 <= exc.status < 500:
                        self.log.warn("update rejected", error=str(exc))
                        return
                    self._drop(client)
                except TransportRefused:
                    self._drop(client)
            if self.stopping.wait(_RETRY):
                return
        self.log.error("gave up reporting execution state", execution=update.get("ExecutionID"))
