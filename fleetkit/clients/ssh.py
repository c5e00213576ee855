"""SSH: pinned host keys, connections, commands, and the bounded fan-out.

Fabric resolves ssh_config (HostName, User, Port, ProxyJump, IdentityFile)
and builds the Paramiko client; fleetkit then replaces Fabric's trust-anything
host key policy with the project's pinned ``known_hosts`` and a policy that
refuses unknown keys. Commands run on a raw Paramiko channel so stdin is
delivered as bytes and closed (the SQL of a query never meets a shell), and
stdout comes back byte for byte.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shlex
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import paramiko
from fabric import Config, Connection

from fleetkit.foundation.atomic import atomic_write
from fleetkit.foundation.inventory import DEFAULT_PORT, DEFAULT_USER, Host
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.settings import SSHSettings
from fleetkit.foundation.status import ConfigError, HostError

T = TypeVar("T")


class SSHError(HostError):
    """The host could not be reached, authenticated or commanded."""


class HostKeyError(SSHError):
    """The host's key is not pinned, or differs from the pinned one."""

    def __init__(self, host: str, message: str, *, offered: paramiko.PKey | None = None) -> None:
        super().__init__(host, message)
        self.offered = offered


class CommandTimeout(SSHError):
    pass


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` form (base64, no padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class KnownHosts:
    """The project's pinned host keys (OpenSSH known_hosts format).

    Parsed line by line: one bad line (a ``@cert-authority`` entry, a typo)
    is skipped with a warning instead of losing the whole file, which is
    what Paramiko's own loader does.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self.keys = paramiko.HostKeys()
        self._load()

    def _load(self) -> None:
        try:
            lines = Path(self.path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read known_hosts: {exc.strerror}", file=self.path) from None
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(text, number)
            except Exception as exc:  # any unreadable line is skipped, never fatal
                self.warnings.append(f"{self.path}:{number}: skipped unreadable line ({exc})")
                continue
            if entry is None:
                self.warnings.append(f"{self.path}:{number}: skipped unsupported line")
                continue
            for name in entry.hostnames:
                self.keys.add(name, entry.key.get_name(), entry.key)

    def lookup(self, address: str, port: int) -> dict[str, paramiko.PKey]:
        found = self.keys.lookup(known_hosts_name(address, port))
        return dict(found) if found else {}

    def pin(self, address: str, port: int, key: paramiko.PKey) -> bool:
        """Add a key (atomic rewrite under a lock); False when it was already pinned."""
        name = known_hosts_name(address, port)
        with self._lock:
            existing = self.lookup(address, port).get(key.get_name())
            if existing is not None:
                if existing.asbytes() == key.asbytes():
                    return False
                raise HostKeyError(name, "a different key is already pinned for this address")
            self.keys.add(name, key.get_name(), key)
            line = f"{name} {key.get_name()} {key.get_base64()}\n"
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            old = target.read_text(encoding="utf-8") if target.exists() else ""
            if old and not old.endswith("\n"):
                old += "\n"
            atomic_write(target, (old + line).encode(), mode=0o644)
            return True


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    def __init__(self, host: Host, known_hosts_path: str) -> None:
        self.host = host
        self.path = known_hosts_path

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyError(
            self.host.name,
            f"host key for {hostname} is not pinned in {self.path} "
            f"(offered {key.get_name()} {fingerprint(key)}); refusing to connect. "
            "Learn it explicitly with `invoke onboard`.",
            offered=key,
        )


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
            last = detail[-1] if detail else "no output"
            raise SSHError(
                self.host,
                redact(f"{what or 'command'} failed (exit {self.exit_code}): {last}"),
            )
        return self


class Remote:
    """One open SSH session to one host. Commands run as root (sudo when needed)."""

    def __init__(self, host: Host, connection: Connection, command_timeout: float) -> None:
        self.host = host
        self.connection = connection
        self.command_timeout = command_timeout

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
        channel.settimeout(limit)
        channel.exec_command(command)
        errors: list[BaseException] = []
        err_chunks: list[bytes] = []

        def feed() -> None:
            try:
                if data:
                    channel.sendall(data)
                channel.shutdown_write()
            except (OSError, paramiko.SSHException) as exc:  # remote exited early
                errors.append(exc)

        def drain_stderr() -> None:
            try:
                while chunk := channel.recv_stderr(65536):
                    err_chunks.append(chunk)
            except (OSError, paramiko.SSHException) as exc:
                errors.append(exc)

        helpers = [
            threading.Thread(target=feed, daemon=True),
            threading.Thread(target=drain_stderr, daemon=True),
        ]
        for thread in helpers:
            thread.start()
        out_chunks: list[bytes] = []
        try:
            while chunk := channel.recv(65536):
                out_chunks.append(chunk)
        except TimeoutError:
            raise CommandTimeout(
                self.host.name, redact(f"command timed out after {limit:g}s: {_short(shown)}")
            ) from None
        for thread in helpers:
            thread.join(limit)
        if not channel.status_event.wait(limit):
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

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first[:80] + ("..." if len(first) > 80 or "\n" in command.strip() else "")


class Connector:
    """Makes :class:`Remote` sessions with strict host keys and bounded timeouts."""

    def __init__(self, settings: SSHSettings, known_hosts: KnownHosts | None = None) -> None:
        self.settings = settings
        self.known_hosts = known_hosts or KnownHosts(settings.known_hosts)

    def _config(self) -> Config:
        overrides: dict[str, Any] = {"load_ssh_configs": self.settings.load_ssh_config}
        if self.settings.config_file:
            if not Path(self.settings.config_file).is_file():
                raise ConfigError("ssh config file not found", file=self.settings.config_file)
            overrides["ssh_config_path"] = self.settings.config_file
            return Config(overrides=overrides, runtime_ssh_path=self.settings.config_file)
        return Config(overrides=overrides)

    def connection_for(self, host: Host) -> Connection:
        identity = host.identity_file or self.settings.identity_file
        connect_kwargs: dict[str, Any] = {
            "allow_agent": self.settings.use_agent,
            "look_for_keys": identity is None and self.settings.use_agent,
            "banner_timeout": self.settings.connect_timeout,
            "auth_timeout": self.settings.connect_timeout,
        }
        if identity:
            connect_kwargs["key_filename"] = [str(Path(identity).expanduser())]
        config = self._config()
        user, port = self._user_and_port(config, host)
        connection = Connection(
            host.address,
            user=user,
            port=port,
            config=config,
            connect_timeout=self.settings.connect_timeout,
            connect_kwargs=connect_kwargs,
        )
        self._pin(connection, host)
        return connection

    @staticmethod
    def _user_and_port(config: Config, host: Host) -> tuple[str, int]:
        """The inventory's user and port, unless left at their defaults and ssh_config
        names them for this host (``Host web-* / User deploy / Port 2222``).

        Open question: the inventory cannot say "22, and I mean it" against an
        ssh_config Port; set the port in ssh_config or the inventory, not both.
        """
        lookup = config.base_ssh_config.lookup(host.address)
        user = host.user
        if host.user == DEFAULT_USER and lookup.get("user"):
            user = str(lookup["user"])
        port = host.port
        if host.port == DEFAULT_PORT and str(lookup.get("port", "")).isdigit():
            port = int(lookup["port"])
        return user, port

    def _pin(self, connection: Connection, host: Host) -> None:
        clients = [connection.client]
        gateway = connection.gateway
        while isinstance(gateway, Connection):
            clients.append(gateway.client)
            gateway = gateway.gateway
        for client in clients:
            store = client.get_host_keys()
            store.clear()
            for name, keys in self.known_hosts.keys.items():
                for key_type, key in keys.items():
                    store.add(name, key_type, key)
            client.set_missing_host_key_policy(_RefuseUnknownKey(host, self.known_hosts.path))

    def connect(self, host: Host) -> Remote:
        connection = self.connection_for(host)
        try:
            connection.open()
        except HostKeyError:
            connection.close()
            raise
        except paramiko.BadHostKeyException as exc:
            connection.close()
            raise HostKeyError(
                host.name,
                f"HOST KEY CHANGED for {host.endpoint}: offered {fingerprint(exc.key)}, pinned "
                f"{fingerprint(exc.expected_key)} in {self.known_hosts.path}. Someone could be "
                "intercepting the connection (man-in-the-middle), or the host was reinstalled. "
                "Refusing to connect; verify the new key out of band before re-pinning.",
                offered=exc.key,
            ) from None
        except paramiko.AuthenticationException as exc:
            connection.close()
            raise SSHError(
                host.name, f"authentication failed as {host.user}@{host.endpoint}: {exc}"
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            connection.close()
            raise SSHError(
                host.name, f"cannot connect to {host.endpoint}: {_reason(exc)}"
            ) from None
        _send_small_packets_at_once(connection)
        return Remote(host, connection, self.settings.command_timeout)


def _send_small_packets_at_once(connection: Connection) -> None:
    """TCP_NODELAY: a plan is many short commands.

    Without it every channel open waits for the peer's delayed ACK (about
    40 ms on Linux): a 12-step idempotent run of one host took 10x longer.
    """
    transport = connection.client.get_transport()
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed ({exc.strerror})"
    return str(exc) or type(exc).__name__


def fetch_host_key(address: str, port: int, timeout: float = 10.0) -> paramiko.PKey:
    """The key a server offers, without authenticating (the first step of onboarding)."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise SSHError(f"{address}:{port}", f"cannot connect: {_reason(exc)}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"{address}:{port}", f"SSH handshake failed: {_reason(exc)}") from None
    finally:
        transport.close()


@dataclass
class Outcome(Generic[T]):
    """What one host's work produced: a value, or the error that stopped it."""

    host: Host
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def fan_out(
    hosts: Iterable[Host],
    work: Callable[[Host], T],
    *,
    parallelism: int,
    on_done: Callable[[Outcome[T]], None] | None = None,
) -> list[Outcome[T]]:
    """Run ``work`` for each host in a bounded pool; results in inventory order.

    Fabric's ThreadingGroup starts one unbounded thread per host; a fleet of
    thousands needs a ceiling. A host's exception is captured in its
    :class:`Outcome` and never stops the others. ``KeyboardInterrupt`` is
    re-raised once the running work has been abandoned.
    """
    host_list = list(hosts)
    outcomes: dict[str, Outcome[T]] = {}
    if not host_list:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(host_list)))) as pool:
        futures = {pool.submit(work, host): host for host in host_list}
        try:
            for future in as_completed(futures):
                host = futures[future]
                try:
                    outcome = Outcome(host, value=future.result())
                except Exception as exc:  # reported per host
                    outcome = Outcome(host, error=exc)
                outcomes[host.name] = outcome
                if on_done:
                    on_done(outcome)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise
    return [outcomes[h.name] for h in host_list]
