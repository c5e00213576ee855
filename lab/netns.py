"""Network namespaces for the lab: one per host, joined by a bridge in its own namespace.

Used when a test needs what the shared-loopback lab cannot give: a separate
network stack per host, e.g. quarantine applying nftables rules on one host
without touching the machine running the tests. Layout for a lab with id
``ab12cd`` and subnet 10.R.S.0/24::

    root ns:   fkab12cdr  10.R.S.1/24   (fleetkit and the tests live here)
                   |  veth
    fkab12cd-sw:  fkab12cdu -- br0 -- fkab12cdh2 ... (one port per host)
                                  |  veth
    fkab12cd-h2:  eth0 10.R.S.2/24, lo        (the host's sshd, osqueryd, ...)

Hosts have no default route, so nothing leaves the lab. Everything made here
is named after the lab id, recorded in the lab's state file, and removed by
:func:`teardown`.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class NetnsError(RuntimeError):
    """An ``ip`` command failed while building or removing the lab network."""


@dataclass
class LabNetwork:
    """The names and addresses of one lab's network plumbing."""

    lab_id: str
    subnet: str  # "10.R.S.0/24"
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> netns name

    @property
    def switch(self) -> str:
        return f"fk{self.lab_id}-sw"

    @property
    def root_link(self) -> str:
        return f"fk{self.lab_id}r"

    @property
    def uplink(self) -> str:
        return f"fk{self.lab_id}u"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        """The root namespace's address on the lab network (where fleetkit connects from)."""
        return str(self.network.network_address + 1)

    def address(self, index: int) -> str:
        return str(self.network.network_address + index)

    def cidr(self, index: int) -> str:
        return f"{self.address(index)}/{self.network.prefixlen}"

    def to_state(self) -> dict[str, Any]:
        return {"lab_id": self.lab_id, "subnet": self.subnet, "hosts": dict(self.hosts)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> LabNetwork:
        return cls(lab_id=data["lab_id"], subnet=data["subnet"], hosts=dict(data["hosts"]))


def _ip(args: list[str], *, batch: str | None = None, check: bool = True) -> str:
    command = ["ip", *args] if batch is None else ["ip", *args, "-batch", "-"]
    result = subprocess.run(command, input=batch, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def pick_subnet(rng: random.Random | None = None) -> str:
    """A random 10.R.S.0/24 that no route of this machine overlaps."""
    rng = rng or random.SystemRandom()
    taken = [ipaddress.IPv4Network(_route_prefix(line)) for line in _routes()]
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{rng.randint(16, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(net) for net in taken):
            return str(candidate)
    raise NetnsError("no free 10.x.y.0/24 subnet found for the lab network")


def _routes() -> list[str]:
    out = _ip(["-4", "route", "show", "table", "all"], check=False)
    return [line for line in out.splitlines() if line and line.split()[0][0].isdigit()]


def _route_prefix(line: str) -> str:
    first = line.split()[0]
    return first if "/" in first else f"{first}/32"


def create_network(network: LabNetwork) -> None:
    """The switch namespace with its bridge, and the root namespace's uplink."""
    _ip(["netns", "add", network.switch])
    try:
        _ip(
            ["-n", network.switch],
            batch="link add br0 type bridge\nlink set br0 up\nlink set lo up\n",
        )
        _ip(
            [],
            batch=(
                f"link add {network.root_link} type veth peer name {network.uplink} "
                f"netns {network.switch}\n"
                f"addr add {network.gateway}/{network.network.prefixlen} dev {network.root_link}\n"
                f"link set {network.root_link} up\n"
            ),
        )
        _ip(["-n", network.switch], batch=f"link set {network.uplink} master br0 up\n")
    except NetnsError:
        teardown(network)
        raise


def add_hosts(network: LabNetwork, names: dict[str, int]) -> None:
    """One namespace per host (name -> index in the subnet), its ``eth0`` on the bridge.

    Addresses are set by the host's own boot script (see ``LabHost.boot_script``).
    """
    namespaces: list[str] = []
    root_batch: list[str] = []
    switch_batch: list[str] = []
    for name, index in names.items():
        netns = f"fk{network.lab_id}-h{index}"
        port = f"fk{network.lab_id}h{index}"
        network.hosts[name] = netns  # recorded first: teardown removes even half-made ones
        namespaces.append(f"netns add {netns}")
        root_batch.append(f"link add {port} type veth peer name eth0 netns {netns}")
        root_batch.append(f"link set {port} netns {network.switch}")
        switch_batch.append(f"link set {port} master br0 up")
    if root_batch:
        _ip([], batch="\n".join(namespaces + root_batch) + "\n")
        _ip(["-n", network.switch], batch="\n".join(switch_batch) + "\n")


def teardown(network: LabNetwork) -> list[str]:
    """Remove every namespace and link of this lab; returns what could not be removed.

    Deleting a namespace destroys the veth ends inside it, and with them their peers.
    """
    problems: list[str] = []
    existing = set(list_namespaces())
    for netns in [*network.hosts.values(), network.switch]:
        if netns in existing:
            result = subprocess.run(
                ["ip", "netns", "del", netns], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                problems.append(f"netns {netns}: {result.stderr.strip()}")
    if Path(f"/sys/class/net/{network.root_link}").exists():
        subprocess.run(["ip", "link", "del", network.root_link], capture_output=True, check=False)
    return problems


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir())
    except FileNotFoundError:
        return []
