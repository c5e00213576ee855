"""One open SSH session, and what a command run on it returned."""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass

import paramiko
from fabric import Connection

from fleetkit.clients.ssh.errors import CommandTimeout, SSHError
from fleetkit.clients.ssh.known_hosts import known_hosts_name
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.table import cell

#: What one command may print before it is an error (as much as the orchestrator
#: client accepts in one answer: a node's query result travels the same way).
MAX_STDOUT_BYTES = 64 * 1024 * 1024
#: stderr carries diagnostics only.
MAX_STDERR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def check(self, what: str | None = None) -> CommandResult:
        if not self.ok:
            detail = (self.err or self.out).strip().splitlines()
            # The host's own words: escaped and cut (a compromised host chooses them).
            last = cell(detail[-1], max_width=200) if detail else "no output"
            raise SSHError(
                self.host,
                redact(f"{what or 'command'} failed (exit {self.exit_code}): {last}"),
            )
        return self


class Remote:
    """One open SSH session to one host. Commands run as root (sudo when needed)."""

    def __init__(
        self,
        host: Host,
        connection: Connection,
        command_timeout: float,
        *,
        max_stdout: int = MAX_STDOUT_BYTES,
    ) -> None:
        self.host = host
        self.connection = connection
        self.command_timeout = command_timeout
        self.max_stdout = max_stdout

    @property
    def reached(self) -> str:
        """Where the session really goes: ssh_config's HostName and Port may differ from
        the inventory's address (``[addr]:port`` as known_hosts names it)."""
        return known_hosts_name(self.connection.host, int(self.connection.port))

    def as_root(self, command: str) -> str:
        # The user actually logged in as (ssh_config may have chosen it).
        if self.connection.user == "root":
            return command
        return f"sudo -n -- sh -c {shlex.quote(command)}"

    def run(
        self,
        command: str,
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        root: bool = True,
    ) -> CommandResult:
        """Run ``command`` through the login shell; stdin is sent then closed."""
        full = self.as_root(command) if root else command
        data = stdin.encode() if isinstance(stdin, str) else stdin
        limit = timeout or self.command_timeout
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError(self.host.name, "connection closed")
        channel = transport.open_session(timeout=limit)
        try:
            return self._exchange(channel, full, data, limit, shown=command)
        finally:
            channel.close()

    def _exchange(
        self, channel: paramiko.Channel, command: str, data: bytes | None, limit: float, shown: str
    ) -> CommandResult:
        """Send stdin, read both streams and the exit status, all within one deadline.

        The host chooses every byte here: ``limit`` bounds the whole exchange (a
        host trickling a byte at a time cannot stretch it), and each stream is
        capped (:data:`MAX_STDOUT_BYTES`, :data:`MAX_STDERR_BYTES`) so a flood
        is an error naming the host, not a process that eats the admin machine.
        """
        deadline = time.monotonic() + limit
        channel.settimeout(limit)
        self._start(channel, command, limit, shown)
        errors: list[BaseException] = []
        overflow: list[str] = []
        err_chunks: list[bytes] = []

        def feed() -> None:
            try:
                if data:
                    channel.sendall(data)
                channel.shutdown_write()
            except (OSError, paramiko.SSHException) as exc:  # remote exited early
                errors.append(exc)

        def drain_stderr() -> None:
            size = 0
            try:
                while chunk := channel.recv_stderr(65536):
                    size += len(chunk)
                    if size > MAX_STDERR_BYTES:
                        overflow.append(f"stderr over the limit of {MAX_STDERR_BYTES} bytes")
                        channel.close()  # ends the stdout read too
                        return
                    err_chunks.append(chunk)
            except (OSError, paramiko.SSHException) as exc:
                errors.append(exc)

        helpers = [
            threading.Thread(target=feed, daemon=True),
            threading.Thread(target=drain_stderr, daemon=True),
        ]
        for thread in helpers:
            thread.start()
        timed_out = CommandTimeout(
            self.host.name, redact(f"command timed out after {limit:g}s: {_short(shown)}")
        )
        out_chunks = self._read_stdout(channel, deadline, timed_out, overflow)
        for thread in helpers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if overflow:
            raise SSHError(self.host.name, redact(f"{overflow[0]}: {_short(shown)}"))
        if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise CommandTimeout(
                self.host.name, f"no exit status after {limit:g}s: {_short(shown)}"
            )
        return CommandResult(
            host=self.host.name,
            command=shown,
            exit_code=channel.recv_exit_status(),
            stdout=b"".join(out_chunks),
            stderr=b"".join(err_chunks),
        )

    def _read_stdout(
        self,
        channel: paramiko.Channel,
        deadline: float,
        timed_out: CommandTimeout,
        overflow: list[str],
    ) -> list[bytes]:
        """stdout until EOF, each read given only what is left of the deadline."""
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise timed_out
            channel.settimeout(left)
            try:
                chunk = channel.recv(65536)
            except TimeoutError:
                raise timed_out from None
            if not chunk:
                return chunks
            size += len(chunk)
            if size > self.max_stdout:
                overflow.append(f"stdout over the limit of {self.max_stdout} bytes")
                channel.close()  # the host may go on printing: stop listening
                return chunks
            chunks.append(chunk)

    def _start(self, channel: paramiko.Channel, command: str, limit: float, shown: str) -> None:
        """``exec_command``, bounded by the command's limit.

        Paramiko waits for the server's answer to the exec request with no
        timeout at all (``Channel.settimeout`` covers reads and writes only), so
        a host that stops answering mid-run would hold the caller forever. A
        timer closes the session when the limit passes: the wait ends, and the
        host is named as timed out (the session is unusable after that anyway).
        """
        transport = channel.get_transport()
        expired = threading.Event()

        def give_up() -> None:
            expired.set()
            transport.close()

        timer = threading.Timer(limit, give_up)
        timer.daemon = True
        timer.start()
        try:
            channel.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if expired.is_set():
                raise CommandTimeout(
                    self.host.name,
                    redact(
                        f"command timed out after {limit:g}s: the host stopped answering "
                        f"before the command started: {_short(shown)}"
                    ),
                ) from None
            raise SSHError(
                self.host.name, f"the host refused the command: {cell(exc, max_width=200)}"
            ) from None
        finally:
            timer.cancel()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first[:80] + ("..." if len(first) > 80 or "\n" in command.strip() else "")
