"""SSH: pinned host keys (known_hosts), connections (connector), sessions and
commands (remote), and the bounded fan-out.

Commands run on a raw Paramiko channel so stdin is delivered as bytes and
closed (the SQL of a query never meets a shell), and stdout comes back byte
for byte. Trust follows OpenSSH's known_hosts rules (see ``known_hosts``).
"""

from __future__ import annotations

from fleetkit.clients.ssh.connector import Connector, OfferedKey, destination, refusal
from fleetkit.clients.ssh.errors import CommandTimeout, HostKeyError, KeyProblem, SSHError
from fleetkit.clients.ssh.fanout import Outcome, fan_out
from fleetkit.clients.ssh.known_hosts import (
    KeyCheck,
    KnownHostLine,
    KnownHosts,
    describe,
    fingerprint,
    host_matches,
    known_hosts_name,
)
from fleetkit.clients.ssh.remote import CommandResult, Remote

__all__ = [
    "CommandResult",
    "CommandTimeout",
    "Connector",
    "HostKeyError",
    "KeyCheck",
    "KeyProblem",
    "KnownHostLine",
    "KnownHosts",
    "OfferedKey",
    "Outcome",
    "Remote",
    "SSHError",
    "describe",
    "destination",
    "fan_out",
    "fingerprint",
    "host_matches",
    "known_hosts_name",
    "refusal",
]
