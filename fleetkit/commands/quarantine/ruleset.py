"""The quarantine ruleset's inputs (admin networks, the orchestrator link) and the state file.

See :mod:`fleetkit.commands.quarantine` for the protocol and what the ruleset keeps.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from fleetkit.foundation.atomic import atomic_write
from fleetkit.foundation.inventory import ONBOARDED_DIR, Host
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.validate import excerpt
from fleetkit.foundation.yamlfile import INVENTORY_BYTES, expect_mapping, load_yaml

TABLE = "fleetkit_quarantine"
TEMPLATE = "quarantine.nft.j2"
STATE_DIR = "/var/lib/fleetkit/quarantine"
GROUP = "quarantined"
LABEL_KEY = "quarantined"
LABEL_VALUE = "true"
STATE_FILE_NAME = "_quarantine.yaml"
#: fleetkit's own copies of each host's rulesets, beside the state file.
LOCAL_COPIES_DIR = "_quarantine.d"
#: How long the host waits for fleetkit to come back over a new connection.
DEFAULT_ROLLBACK_SECONDS = 30.0
#: Applying can cut connection A; this bounds the wait for its answer.
APPLY_TIMEOUT = 10.0


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    """An address the node may open TCP connections to (and get replies from)."""

    address: str
    ports: tuple[int, ...]

    @property
    def family(self) -> str:
        return "ip6" if ipaddress.ip_address(self.address).version == 6 else "ip"


@dataclass(frozen=True)
class Isolation:
    """Everything a quarantine ruleset lets through."""

    ssh_port: int
    admin_networks: tuple[IPNetwork, ...]
    peers: tuple[Peer, ...]

    def context(self, host_name: str) -> dict[str, Any]:
        return {
            "host_name": host_name,
            "table": TABLE,
            "ssh_port": self.ssh_port,
            "admin_networks": [
                {"family": "ip6" if n.version == 6 else "ip", "cidr": str(n)}
                for n in self.admin_networks
            ],
            "peers": [
                {"family": p.family, "address": p.address, "ports": p.ports} for p in self.peers
            ],
        }


# --------------------------------------------------------------------------- inputs


def parse_admin_networks(values: tuple[str, ...], *, file: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(
                f"invalid network {excerpt(value)} (expected an address or CIDR)",
                file=file,
                key="admin_networks",
            ) from None
    return tuple(out)


def resolve_addresses(name: str, *, what: str) -> tuple[str, ...]:
    """IP literals stay; names are resolved here (nft needs addresses, the node may lack DNS)."""
    try:
        return (str(ipaddress.ip_address(name)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot resolve {what} {excerpt(name)}: {exc}") from None
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def orchestrator_peers(settings: Settings, control_plane: Host | None) -> tuple[Peer, ...]:
    """The node's link to its orchestrator (NATS + API) and, for S3 results, the endpoint."""
    if control_plane is None:
        raise ConfigError("the inventory has no control_plane host", key="control_plane")
    ports = (settings.bacalhau.nats_port, settings.bacalhau.api_port)
    peers = [
        Peer(address, tuple(dict.fromkeys(ports)))
        for address in resolve_addresses(control_plane.address, what="control plane address")
    ]
    s3 = settings.query.s3
    if settings.query.publisher == "s3" and s3 is not None and s3.endpoint:
        url = urlparse(s3.endpoint)
        if url.hostname:
            port = url.port or (443 if url.scheme == "https" else 80)
            peers += [
                Peer(address, (port,))
                for address in resolve_addresses(url.hostname, what="S3 endpoint")
            ]
    return tuple(peers)


def render_ruleset(isolation: Isolation, host_name: str, renderer: Renderer | None = None) -> str:
    if not isolation.admin_networks:
        raise ConfigError("no admin network: the ruleset would cut SSH", key="admin_networks")
    return (renderer or Renderer()).render(TEMPLATE, isolation.context(host_name))


# --------------------------------------------------------------------------- inventory label


def state_file(inventory_dir: str) -> Path:
    return Path(inventory_dir) / ONBOARDED_DIR / STATE_FILE_NAME


def local_copies(inventory_dir: str) -> Path:
    return Path(inventory_dir) / ONBOARDED_DIR / LOCAL_COPIES_DIR


def quarantined_in_inventory(inventory_dir: str) -> list[str]:
    path = state_file(inventory_dir)
    if not path.exists():
        return []
    data = expect_mapping(load_yaml(path, max_bytes=INVENTORY_BYTES), file=str(path), key="")
    group = expect_mapping(data.get(GROUP), file=str(path), key=GROUP)
    hosts = expect_mapping(group.get("hosts"), file=str(path), key=f"{GROUP}.hosts")
    return list(hosts)


def write_quarantine_state(inventory_dir: str, names: list[str]) -> None:
    """Rewrite the state file atomically; no names = the file is removed."""
    path = state_file(inventory_dir)
    if not names:
        path.unlink(missing_ok=True)
        return
    body = {
        GROUP: {"hosts": {name: {"labels": {LABEL_KEY: LABEL_VALUE}} for name in sorted(names)}}
    }
    text = (
        "# Written by `fleetkit quarantine`: hosts isolated for forensics. Do not edit by hand;\n"
        "# `fleetkit quarantine --release --hosts NAME` removes a host (the file goes when\n"
        "# empty).\n" + yaml.safe_dump(body, sort_keys=True)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))
