"""Latency mode: one userspace delay proxy in front of the lab's sshds, orchestrator API and S3.

The kernel's netem is not available here, so the lab puts this proxy between
fleetkit and every endpoint it talks to. One asyncio process serves every
route (a route = one listening address forwarding to one upstream), which
keeps it cheap at 200 hosts. What it simulates:

- **one-way delay per direction, per burst**: every chunk read from one side
  is delivered to the other side ``delay`` seconds after it was read, in
  order. A burst of segments is delayed once (each chunk carries its own due
  time), not once per segment, so one request/response exchange costs
  ``2 x delay``;
- **the TCP handshake**: the upstream connection is opened ``3 x delay``
  after the client's connect was accepted, so the first answer reaches the
  client ``4 x delay`` after it connected, as on a real network (SYN,
  SYN-ACK, ACK, then the first data).

What it counts, per route: TCP connections, bytes each way, and round trips:
a round trip is "the client sent, then the server answered", i.e. a burst
from the server that follows data from the client on the same connection.
That is the number of times a client waited for its peer; a trailing
unanswered send (an SSH disconnect) is not one. On HTTP routes (no
pipelining) it equals the number of requests. Data the server sends while
the client streams (SSH window adjustments during an upload) counts too, so
the figure is an upper bound for bulk transfers.

Fault injection: ``freeze(route)`` stops forwarding in both directions
without closing anything (new connections are accepted and held); ``thaw``
resumes, delivering what was held. That is what a host that stops answering
looks like: its TCP peers see silence, not a reset. ``cut(route)`` is the
other fault: every open connection is reset at once (a crash or reboot).

Control: a Unix socket speaking JSON lines (``{"op": "stats"}`` ->
``{"ok": true, ...}``). :class:`LatencyProxy` is the client the lab uses;
``python -m lab.proxy_server serve --control SOCK --delay 0.04`` is the
process (:mod:`lab.proxy_server`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import processes

#: The proxy process's command line (``lab/proxy_server.py``).
_SERVE = (sys.executable, "-m", "lab.proxy_server", "serve")


class ProxyError(RuntimeError):
    """The latency proxy could not do what was asked."""


def parse_delay(text: str) -> float:
    """``40ms``, ``0.04s``, ``0.04`` or ``0`` -> seconds (one-way delay)."""
    value = text.strip().lower()
    try:
        if value.endswith("ms"):
            seconds = float(value[:-2]) / 1000
        elif value.endswith("s"):
            seconds = float(value[:-1])
        else:
            seconds = float(value)
    except ValueError:
        raise ProxyError(f"latency {text!r}: expected e.g. 40ms, 0.04s or 0") from None
    if not 0 <= seconds <= 10:
        raise ProxyError(f"latency {text!r}: must be between 0 and 10 s")
    return seconds


# ---- the client the lab uses ---------------------------------------------------------------


@dataclass
class LatencyProxy:
    """The proxy process of one lab: start, add routes, read counters, freeze, stop."""

    directory: Path
    delay: float = 0.0
    pid: int | None = None
    #: route name -> {"listen": [host, port], "upstream": [host, port], "kind": ...}
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    detach: bool = True
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def control_path(self) -> Path:
        return self.directory / "control.sock"

    def start(self, timeout: float = 20) -> LatencyProxy:
        self.directory.mkdir(parents=True, exist_ok=True)
        repo = str(Path(__file__).resolve().parent.parent)
        self._process = processes.spawn(
            [*_SERVE, "--control", str(self.control_path), "--delay", repr(self.delay)],
            self.directory / "proxy.log",
            detach=self.detach,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": repo},
        )
        self.pid = self._process.pid
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise ProxyError(f"latency proxy exited at start; see {self.directory}/proxy.log")
            try:
                self.call("ping")
                return self
            except ProxyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """One command over the control socket (a fresh connection each: callers are rare)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(self.control_path))
                sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    data += chunk
        except OSError as exc:
            raise ProxyError(f"latency proxy not answering at {self.control_path}: {exc}") from exc
        try:
            answer = json.loads(data)
        except ValueError:
            raise ProxyError(f"latency proxy: unreadable answer to {op}") from None
        if not answer.get("ok"):
            raise ProxyError(f"latency proxy: {op}: {answer.get('error')}")
        return dict(answer)

    def add(self, name: str, listen: tuple[str, int], upstream: tuple[str, int], kind: str) -> None:
        self.call("add", name=name, listen=list(listen), upstream=list(upstream), kind=kind)
        self.routes[name] = {"listen": list(listen), "upstream": list(upstream), "kind": kind}

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per route (cumulative since the route was added)."""
        return dict(self.call("stats")["routes"])

    def freeze(self, name: str) -> None:
        self.call("freeze", name=name)

    def cut(self, name: str) -> int:
        """Reset every open connection of route ``name``; how many there were."""
        return int(self.call("cut", name=name)["cut"])

    def thaw(self, name: str) -> None:
        self.call("thaw", name=name)

    def set_delay(self, seconds: float) -> None:
        """Change the one-way delay of every route from now on."""
        self.delay = float(self.call("delay", seconds=seconds)["delay"])

    def is_running(self) -> bool:
        # The control socket's path is in the proxy's argv: it tells this lab's proxy
        # from a process that reused the pid.
        return processes.alive(self.pid, str(self.control_path).encode())

    def stop(self) -> None:
        processes.stop(self.pid, self._process, str(self.control_path).encode())
        self._process = None
        self.pid = None

    def to_state(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "delay": self.delay,
            "pid": self.pid,
            "routes": self.routes,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> LatencyProxy:
        return cls(
            directory=Path(data["directory"]),
            delay=float(data["delay"]),
            pid=data.get("pid"),
            routes=dict(data.get("routes") or {}),
        )
