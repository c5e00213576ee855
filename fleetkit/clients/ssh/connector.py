"""Connections with pinned host keys: Fabric resolves, fleetkit decides trust.

Fabric resolves ssh_config (HostName, User, Port, ProxyJump, IdentityFile)
and builds the Paramiko client; fleetkit then replaces Fabric's
trust-anything policy. Each client in the chain (the target and every jump
host) is given only the keys the project's known_hosts trusts for the
address it really reaches (after ssh_config rewrote it), and a policy that
refuses everything else, saying why: not pinned, changed, another key type
pinned, revoked. Messages name the address actually reached, and the
inventory address when ssh_config rewrote it.

:meth:`Connector.offered_key` is onboarding's first step: the key the host
offers, fetched along the same path (ssh_config, jump hosts) that every later
connection takes, so the key shown and pinned is the key those connections
will check.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection

from fleetkit.clients.ssh.errors import HostKeyError, KeyProblem, SSHError
from fleetkit.clients.ssh.known_hosts import (
    KnownHosts,
    describe,
    known_hosts_name,
)
from fleetkit.clients.ssh.remote import Remote
from fleetkit.foundation.inventory import DEFAULT_PORT, DEFAULT_USER, Host
from fleetkit.foundation.settings import SSHSettings
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.table import cell


@dataclass(frozen=True)
class OfferedKey:
    """The key a host offered, and where it was really reached."""

    key: paramiko.PKey
    address: str
    port: int
    #: True when ssh_config sent the inventory address elsewhere (HostName, Port).
    rewritten: bool

    @property
    def name(self) -> str:
        """The known_hosts name the key is checked and pinned under."""
        return known_hosts_name(self.address, self.port)


def destination(host: Host, connection: Connection) -> str:
    """Where ``connection`` goes, for messages: the reached address, and the inventory's
    when ssh_config rewrote it."""
    reached = known_hosts_name(connection.host, int(connection.port))
    if connection.host != host.address:
        return f"{reached} (ssh_config HostName for {cell(host.address)})"
    return reached


def refusal(
    host: Host, known: KnownHosts, name: str, key: paramiko.PKey, where: str
) -> HostKeyError:
    """Why ``key`` offered at ``name`` is refused, as the error the user reads."""
    check = known.check(name, key)
    offered = describe(key)
    pinned = ", ".join(describe(k) for k in check.pinned.values())
    problem = check.problem or KeyProblem.CHANGED
    if problem is KeyProblem.REVOKED and check.revoked_by is not None:
        text = (
            f"REVOKED host key offered by {where}: {offered} is marked @revoked by line "
            f"{check.revoked_by.number} of {known.path}. A stolen key may be impersonating "
            "the host. Refusing to connect; give the host a new key and pin it (invoke "
            "onboard ... --replace-key)."
        )
    elif problem is KeyProblem.CHANGED:
        text = (
            f"HOST KEY CHANGED for {where}: offered {offered}, pinned {pinned} in "
            f"{known.path}. Someone could be intercepting the connection (man-in-the-middle), "
            "or the host was reinstalled. Refusing to connect; verify the new key out of band "
            "before re-pinning (invoke onboard ... --replace-key)."
        )
    elif problem is KeyProblem.OTHER_TYPE:
        text = (
            f"{where} offers a host key of another type: {offered}, while {pinned} is pinned "
            f"for it in {known.path}. The host was reinstalled or is being impersonated. "
            "Refusing to connect; verify the new key out of band, then replace the pinned one "
            "(invoke onboard ... --replace-key)."
        )
    else:
        text = (
            f"host key for {where} is not pinned in {known.path} (offered {offered}); "
            "refusing to connect. Learn it explicitly with `invoke onboard`."
        )
        for line in check.authorities:
            text += (
                f" Line {line.number} is a @cert-authority line for it, but fleetkit does not "
                "accept host certificates: pin the host's own key."
            )
    return HostKeyError(host.name, text, offered=key, problem=problem)


class _RefuseUntrusted(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Paramiko calls this for a key it was not given: say why it is refused."""

    def __init__(self, host: Host, known: KnownHosts, where: str) -> None:
        self.host = host
        self.known = known
        self.where = where

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise refusal(self.host, self.known, hostname, key, self.where)


def quiet_paramiko() -> None:
    """Paramiko's own log lines (``Exception (client): Error reading SSH protocol
    banner`` and a traceback, from its transport thread) never reach the user:
    fleetkit reports every SSH failure itself, one line naming the host."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


class Connector:
    """Makes :class:`Remote` sessions with strict host keys and bounded timeouts."""

    def __init__(self, settings: SSHSettings, known_hosts: KnownHosts | None = None) -> None:
        self.settings = settings
        self.known_hosts = known_hosts or KnownHosts(settings.known_hosts)
        quiet_paramiko()

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
        """Every client in the chain trusts only its own destination's pinned keys."""
        for hop in _chain(connection):
            name = known_hosts_name(hop.host, int(hop.port))
            store = hop.client.get_host_keys()
            store.clear()
            for key_type, key in self.known_hosts.trusted(name).items():
                store.add(name, key_type, key)
            where = destination(host, hop) if hop is connection else f"jump host {name}"
            hop.client.set_missing_host_key_policy(_RefuseUntrusted(host, self.known_hosts, where))

    def connect(self, host: Host) -> Remote:
        connection = self.connection_for(host)
        try:
            connection.open()
        except HostKeyError:
            connection.close()
            raise
        except paramiko.BadHostKeyException as exc:
            # Paramiko's own refusal (the offered key differs from the pinned
            # ones): find the hop it came from and say why, as the policy would.
            connection.close()
            hop = next((c for c in _chain(connection) if c.host == exc.hostname), connection)
            name = known_hosts_name(hop.host, int(hop.port))
            where = destination(host, hop) if hop is connection else f"jump host {name}"
            raise refusal(host, self.known_hosts, name, exc.key, where) from None
        except paramiko.AuthenticationException as exc:
            connection.close()
            raise SSHError(
                host.name,
                f"authentication failed as {connection.user}@{destination(host, connection)}: "
                f"{cell(exc, max_width=200)}",
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            timeout = self.settings.connect_timeout
            transport = connection.client.get_transport()
            why = _stalled_handshake(transport, timeout) or _reason(exc)
            connection.close()
            raise SSHError(
                host.name, f"cannot connect to {destination(host, connection)}: {why}"
            ) from None
        _send_small_packets_at_once(connection)
        return Remote(host, connection, self.settings.command_timeout)

    def offered_key(self, host: Host) -> OfferedKey:
        """The host key ``host`` offers where its connections really go (no login).

        Jump hosts are held to their pinned keys; the key types already pinned
        for the destination are asked for first (as Paramiko does on connect),
        so a host offering several types shows the pinned one if it still has it.
        """
        connection = self.connection_for(host)
        name = known_hosts_name(connection.host, int(connection.port))
        where = destination(host, connection)
        timeout = self.settings.connect_timeout
        try:
            if connection.gateway:
                sock: Any = connection.open_gateway()
            else:
                sock = socket.create_connection((connection.host, connection.port), timeout)
        except HostKeyError:
            connection.close()
            raise
        except (OSError, paramiko.SSHException, EOFError) as exc:
            connection.close()
            raise SSHError(host.name, f"cannot connect to {where}: {_reason(exc)}") from None
        transport = paramiko.Transport(sock)
        try:
            _prefer_key_types(transport, list(self.known_hosts.trusted(name)))
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            why = _stalled_handshake(transport, timeout) or _reason(exc)
            raise SSHError(host.name, f"SSH handshake with {where} failed: {why}") from None
        finally:
            transport.close()
            connection.close()
        rewritten = (connection.host, int(connection.port)) != (host.address, host.port)
        return OfferedKey(key, connection.host, int(connection.port), rewritten)


def _chain(connection: Connection) -> list[Connection]:
    """The connection and its jump hosts (ProxyJump), nearest first."""
    hops = [connection]
    gateway = connection.gateway
    while isinstance(gateway, Connection):
        hops.append(gateway)
        gateway = gateway.gateway
    return hops


def _prefer_key_types(transport: paramiko.Transport, pinned: list[str]) -> None:
    """Ask for the pinned key types first (RSA keys are negotiated as rsa-sha2-*)."""
    options = transport.get_security_options()
    available = list(options.key_types)
    wanted: list[str] = []
    for key_type in pinned:
        if key_type == "ssh-rsa":
            wanted += [t for t in ("rsa-sha2-512", "rsa-sha2-256") if t in available]
        if key_type in available:
            wanted.append(key_type)
    options.key_types = wanted + [t for t in available if t not in wanted]


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


def _stalled_handshake(transport: paramiko.Transport | None, timeout: float) -> str | None:
    """What happened when the TCP connection opened but no SSH session came of it.

    Paramiko's ``start_client`` returns at its timeout without a word when the
    host never sent its banner, and the next call fails with "No existing
    session": say what really happened instead. None when the handshake is not
    the problem.
    """
    if transport is None or transport.is_authenticated():
        return None
    if not transport.remote_version:
        return (
            f"the host accepted the connection but sent no SSH banner within {timeout:g}s "
            "(hung, overloaded, or not an SSH server)"
        )
    if transport.host_key is None:
        return f"the SSH handshake did not complete within {timeout:g}s"
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return cell(str(exc) or type(exc).__name__, max_width=200)
