"""``osqueryd`` (stand-in): serve queries on the extensions socket until SIGTERM.

The real daemon speaks Thrift on its extensions socket; the stand-in speaks a
private line protocol (one JSON request, one JSON reply), which only its own
``osqueryi --connect`` uses. What an administrator can observe is kept: the
socket appears at ``--extensions_socket``, queries run in the daemon with the
daemon's ``--disable_tables``, the pidfile is written and refused when another
daemon holds it, a missing config is a warning, SIGTERM removes the socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from osquery_standin import facts
from osquery_standin.engine import Engine, QueryError

MAX_REQUEST = 16 * 1024 * 1024


def log(level: str, message: str, logger_path: str | None = None) -> None:
    """A glog-shaped line on stderr (and in ``<logger_path>/osqueryd.INFO``)."""
    now = time.time()
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"
    line = f"{level}{stamp} {os.getpid():>7} osqueryd] {message}\n"
    sys.stderr.write(line)
    sys.stderr.flush()
    if logger_path:
        try:
            with open(os.path.join(logger_path, "osqueryd.INFO"), "a", encoding="utf-8") as f:
                f.write(line)
        except OSError:
            pass


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        raw = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(raw.decode("utf-8", "surrogateescape"))
            reply = self.server.answer(str(request["sql"]))
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"status": 1, "message": f"bad request: {exc}"}
        self.wfile.write(json.dumps(reply).encode("utf-8", "surrogateescape") + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, disabled: list[str], base: facts.Context) -> None:
        self.disabled = disabled
        self.base = base
        super().__init__(path, _Handler)

    def answer(self, sql: str) -> dict[str, Any]:
        engine = Engine(self.disabled, self.base)
        try:
            results = engine.run(sql)
        except QueryError as exc:
            return {"status": exc.code, "message": exc.message}
        finally:
            engine.close()
        return {
            "status": 0,
            "results": [{"columns": r.columns, "rows": r.rows} for r in results],
        }


def query_socket(path: str, sql: str, timeout: float = 300) -> dict[str, Any]:
    """Ask a running stand-in daemon; raises OSError when it cannot be reached."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"sql": sql}).encode("utf-8", "surrogateescape") + b"\n")
        chunks = []
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    reply: dict[str, Any] = json.loads(b"".join(chunks).decode("utf-8", "surrogateescape"))
    return reply


def _socket_in_use(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _running_pid(pidfile: str) -> int | None:
    try:
        pid = int(Path(pidfile).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and b"osqueryd" in cmdline else None


def serve(flags: dict[str, str]) -> int:
    """Run the daemon in the foreground; returns the exit status."""
    logger_path = flags.get("logger_path", "/var/log/osquery/")
    config_path = flags.get("config_path", "/etc/osquery/osquery.conf")
    socket_path = flags.get("extensions_socket", "/var/osquery/osquery.em")
    pidfile = flags.get("pidfile", "/var/run/osqueryd.pidfile")
    disabled = [t for t in flags.get("disable_tables", "").split(",") if t]
    if flags.get("config_check") == "true":
        return _config_check(config_path)
    other = _running_pid(pidfile)
    if other is not None:
        log("E", f"Pidfile::Error::Busy: osqueryd (pid {other}) is already running", logger_path)
        return 1
    for directory in (logger_path, flags.get("database_path", "/var/osquery/osquery.db")):
        with contextlib.suppress(OSError):
            os.makedirs(directory, exist_ok=True)
    if not os.path.isfile(config_path):
        log(
            "W",
            f"Error reading config: config file does not exist: {config_path}",
            logger_path,
        )
    if flags.get("disable_extensions") == "true":
        log("W", "extensions are disabled: no extensions socket", logger_path)
    if flags.get("daemonize") == "true":
        _daemonize()
    try:
        Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
        Path(pidfile).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log("E", f"cannot write pidfile {pidfile}: {exc.strerror}", logger_path)
        return 1
    base = facts.Context(
        start_time=int(time.time()), instance_id=str(uuid.uuid4()), extensions="active"
    )
    server = None
    if flags.get("disable_extensions") != "true":
        if os.path.exists(socket_path):
            if _socket_in_use(socket_path):
                log("E", f"extensions socket {socket_path} is in use", logger_path)
                _remove(pidfile)
                return 1
            _remove(socket_path)
        try:
            os.makedirs(os.path.dirname(socket_path) or "/", exist_ok=True)
            server = _Server(socket_path, disabled, base)
        except OSError as exc:
            log("E", f"cannot create extensions socket {socket_path}: {exc}", logger_path)
            _remove(pidfile)
            return 1
    log("I", f"osqueryd started [version={facts.VERSION}] (stand-in)", logger_path)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if server is not None:
        threading.Thread(target=server.serve_forever, name="extensions", daemon=True).start()
    while not stop.wait(1):
        pass
    log("I", "osqueryd shutting down (SIGTERM)", logger_path)
    if server is not None:
        server.shutdown()
        server.server_close()
        _remove(socket_path)
    _remove(pidfile)
    return 0


def _config_check(config_path: str) -> int:
    try:
        json.loads(Path(config_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        log("E", f"config file does not exist: {config_path}")
        return 1
    except (OSError, ValueError) as exc:
        log("E", f"Error reading config: {exc}")
        return 1
    return 0


def _daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
