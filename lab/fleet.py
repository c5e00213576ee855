"""The lab fleet: hosts + packages + a complete fleetkit setup in one directory.

``Lab(workdir).up()`` starts a control plane ``orch-1`` and compute hosts
``node-1..N`` (see :mod:`lab.hosts`), builds the stand-in packages, and
writes everything fleetkit needs to manage them: ``fleetkit.yaml``,
``inventory/lab.yaml``, ``inventory/known_hosts``, ``ssh/id_ed25519``,
``secrets/node_token`` and ``packages/*``. ``lab.json`` records the pids and
names so ``Lab.load(workdir).down()`` can tear down a lab started by another
process (``invoke lab.up`` / ``lab.down``).

The lab is deliberately *not provisioned*: bringing the hosts to the desired
state is fleetkit's job and the subject of the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import secrets
import shutil
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import netns as netns_mod
from lab.hosts import LabError, LabHost, free_ports, reserve_ports, start_hosts, stop_hosts
from lab.latency import LatencyProxy, ProxyError
from lab.s3 import S3Server
from lab.setup import (  # noqa: F401 - the versions and package names are part of lab.fleet's API
    BACALHAU_TARBALL,
    BACALHAU_VERSION,
    OSQUERY_DEB,
    OSQUERY_VERSION,
    LabSetup,
    append_line,
    atomic_write,
)

STATE_FILE = "lab.json"
CONTROL_PLANE = "control_plane"
COMPUTE = "compute"
DEFAULT_LABELS = {"role": "osquery", "env": "lab"}
#: Hosts per lab on the shared loopback (ports are the limit: 3 per host from 12,000).
MAX_HOSTS = 2000
#: Ports used inside per-host network namespaces (netns mode), where nothing collides.
NETNS_SSH_PORT = 22
NETNS_API_PORT = 1234
NETNS_NATS_PORT = 4222
#: Latency proxy routes: one per host's sshd, plus the orchestrator's API and S3.
API_ROUTE = "api"
S3_ROUTE = "s3"
_MACHINE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def ssh_route(name: str) -> str:
    """The latency proxy's route in front of lab host ``name``'s sshd."""
    return f"ssh:{name}"


@dataclass
class HostEntry:
    """How a lab host appears in the generated inventory."""

    role: str = COMPUTE
    in_inventory: bool = True
    pin_key: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    bacalhau_api_port: int | None = None

    def to_state(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "in_inventory": self.in_inventory,
            "pin_key": self.pin_key,
            "labels": dict(self.labels),
            "bacalhau_api_port": self.bacalhau_api_port,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> HostEntry:
        return cls(
            role=data["role"],
            in_inventory=data["in_inventory"],
            pin_key=data.get("pin_key", True),
            labels=dict(data.get("labels", {})),
            bacalhau_api_port=data.get("bacalhau_api_port"),
        )


class Lab(LabSetup):
    """A local fleet of namespaced sshd hosts plus the fleetkit setup to manage it."""

    def __init__(
        self,
        workdir: Path,
        *,
        compute: int = 3,
        netns: bool = False,
        s3: bool = False,
        detach: bool = True,
        latency: float | None = None,
        machine_names: Mapping[str, str] | None = None,
        cloud_hostnames: bool = False,
    ) -> None:
        """``detach=False`` ties every process of the lab to the creating thread (fixtures).

        ``latency`` (seconds, one way) puts the latency proxy (:mod:`lab.latency`) in
        front of every sshd, the orchestrator's API and S3; ``0`` proxies without
        delay (for its counters), None (default) connects directly.
        ``machine_names`` gives hosts a machine hostname other than their inventory
        name (``{"node-2": "ip-10-0-1-29"}``); ``cloud_hostnames`` does so for every
        second compute host (node-2, node-4, ...) with a name made from its address.
        """
        if latency is not None and netns:
            raise LabError("latency mode needs the shared loopback network (not netns)")
        if latency is not None and not 0 <= latency <= 10:
            raise LabError(f"latency {latency!r}: expected 0 to 10 seconds")
        for name, machine in (machine_names or {}).items():
            _check_machine_name(name, machine)
        self.workdir = Path(workdir).resolve()
        self.detach = detach
        self.compute = compute
        self.use_netns = netns
        self.use_s3 = s3
        self.hosts: list[LabHost] = []
        self.entries: dict[str, HostEntry] = {}
        self.s3: S3Server | None = None
        self.network: netns_mod.LabNetwork | None = None
        self.lab_id = secrets.token_hex(3)
        rng = random.SystemRandom()
        #: 127.A.B.0/24 for shared-network labs (A, B random per lab).
        self.loopback_prefix = f"127.{rng.randint(16, 250)}.{rng.randint(0, 255)}"
        self.api_port = NETNS_API_PORT
        self.nats_port = NETNS_NATS_PORT
        self.client_key_public = ""
        self.settings: dict[str, Any] = {}
        self.packages: dict[str, str] = {}  # file name -> sha256
        self.state = "new"
        self.latency = latency
        self.machine_names = dict(machine_names or {})
        self.cloud_hostnames = cloud_hostnames
        self.proxy: LatencyProxy | None = None
        self.api_proxy_port: int | None = None
        self.s3_proxy_port: int | None = None
        #: Sockets holding the ports of late-binding daemons (:func:`lab.hosts.reserve_ports`);
        #: only the process that made the lab holds them (a detached lab's are released).
        self._held_ports: list[socket.socket] = []

    # -- paths --------------------------------------------------------------------------------

    @property
    def hosts_dir(self) -> Path:
        return self.workdir / "hosts"

    # -- hosts ----------------------------------------------------------------------------------

    @property
    def control_plane(self) -> LabHost:
        return next(h for h in self.hosts if self.entries[h.name].role == CONTROL_PLANE)

    @property
    def compute_hosts(self) -> list[LabHost]:
        return [h for h in self.hosts if self.entries[h.name].role == COMPUTE]

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no lab host {name!r} (have: {', '.join(h.name for h in self.hosts)})")

    @property
    def orchestrator_url(self) -> str:
        """Where clients reach the orchestrator's API (through the proxy in latency mode)."""
        return f"http://{self.control_plane.address}:{self.api_proxy_port or self.api_port}"

    @property
    def direct_orchestrator_url(self) -> str:
        """The orchestrator's own API address (bypasses the latency proxy)."""
        return f"http://{self.control_plane.address}:{self.api_port}"

    @property
    def s3_endpoint(self) -> str:
        """Where clients and nodes reach S3 (through the proxy in latency mode)."""
        if self.s3 is None:
            raise LabError("this lab has no S3 server")
        if self.s3_proxy_port is None:
            return self.s3.endpoint
        return f"http://{self.s3.host}:{self.s3_proxy_port}"

    # -- lifecycle ------------------------------------------------------------------------------

    def up(self) -> Lab:
        """Start everything and write the fleetkit setup; on failure nothing is left running."""
        if self.state == "up":
            return self
        self._claim_workdir()
        try:
            if self.latency is not None:
                self.proxy = LatencyProxy(
                    self.workdir / "latency", delay=self.latency, detach=self.detach
                ).start()
            self._write_client_key()
            self._write_secrets()
            self._write_packages()
            if self.use_netns:
                subnet = netns_mod.pick_subnet()
                self.network = netns_mod.LabNetwork(self.lab_id, subnet)
                netns_mod.create_network(self.network)
            else:
                self.api_port, self.nats_port = self._reserve_ports(2)
            if self.use_s3:
                host = self.network.gateway if self.network else "127.0.0.1"
                self.s3 = self._new_s3_server(host).start()
                self._proxy_s3()
            names = [("orch-1", CONTROL_PLANE)]
            names += [(f"node-{i}", COMPUTE) for i in range(1, self.compute + 1)]
            new = self._make_hosts(
                [(n, HostEntry(role=r, labels=_default_labels(r))) for n, r in names]
            )
            self._proxy_api()
            self.state = "up"
            self._save_state()
            start_hosts(new)
            self._save_state()
            self._write_known_hosts()
            self._write_inventory()
            self.settings = self.default_settings()
            self._write_settings_file()
            self.check_settings()  # the lab must hand out a setup fleetkit accepts
        except BaseException:
            with contextlib.suppress(LabError):  # the original error is the one to see
                self.down()
            raise
        return self

    def _claim_workdir(self) -> None:
        """Use an empty dir, or a stopped lab's dir (wiped: a new lab starts clean)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if (self.workdir / STATE_FILE).exists():
            if Lab.load(self.workdir).is_running():
                raise LabError(f"{self.workdir}: a lab is already up here (run lab.down first)")
            for stale in ("hosts", "inventory", "secrets", "ssh", "packages", "s3", "latency"):
                shutil.rmtree(self.workdir / stale, ignore_errors=True)
            (self.workdir / STATE_FILE).unlink()
        elif any(self.workdir.iterdir()):
            raise LabError(f"{self.workdir}: not empty and not a lab directory; choose another")

    def down(self) -> None:
        """Stop every host and server, remove the network; the work dir stays for post-mortems."""
        problems: list[str] = []
        try:
            stop_hosts(self.hosts)
        except LabError as exc:
            problems.append(str(exc))
        if self.s3 is not None:
            self.s3.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if self.network is not None:
            problems += netns_mod.teardown(self.network)
        for held in self._held_ports:
            held.close()
        self._held_ports.clear()
        self.state = "down"
        if self.workdir.is_dir():
            self._save_state()
        if problems:
            raise LabError("lab teardown incomplete: " + "; ".join(problems))

    def is_running(self) -> bool:
        """True while any host of this lab still has processes."""
        return any(h.is_running() for h in self.hosts)

    def enable_s3(self) -> S3Server:
        """Start the S3 server on a running lab and switch ``fleetkit.yaml`` to publish there.

        Compute nodes publish only when their agent has AWS credentials in its
        environment, which is provisioning's business, not the lab's.
        """
        if self.s3 is None:
            host = self.network.gateway if self.network else "127.0.0.1"
            self.s3 = self._new_s3_server(host).start()
            self.use_s3 = True
            self._proxy_s3()
            self._save_state()
        fresh = self.default_settings()
        self.write_settings(query=fresh["query"])
        return self.s3

    @classmethod
    def load(cls, workdir: Path) -> Lab:
        """Re-attach to a lab from its ``lab.json`` (e.g. to tear down one started by invoke)."""
        workdir = Path(workdir).resolve()
        path = workdir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LabError(
                f"{path}: no lab state here (was the lab started in {workdir}?)"
            ) from None
        lab = cls(workdir, compute=data["compute"], netns=data["netns"], s3=data["s3"])
        lab.latency = data.get("latency")
        lab.cloud_hostnames = data.get("cloud_hostnames", False)
        lab.machine_names = dict(data.get("machine_names") or {})
        lab.api_proxy_port = data.get("api_proxy_port")
        lab.s3_proxy_port = data.get("s3_proxy_port")
        if data.get("proxy"):
            lab.proxy = LatencyProxy.from_state(data["proxy"])
        lab.lab_id = data["lab_id"]
        lab.loopback_prefix = data["loopback_prefix"]
        lab.api_port = data["api_port"]
        lab.nats_port = data["nats_port"]
        lab.client_key_public = data["client_key_public"]
        lab.settings = data["settings"]
        lab.packages = data["packages"]
        lab.state = data["state"]
        lab.hosts = [LabHost.from_state(h) for h in data["hosts"]]
        lab.entries = {h["name"]: HostEntry.from_state(h["entry"]) for h in data["hosts"]}
        if data.get("s3_server"):
            lab.s3 = S3Server.from_state(data["s3_server"])
        if data.get("network"):
            lab.network = netns_mod.LabNetwork.from_state(data["network"])
        return lab

    def _save_state(self) -> None:
        data = {
            "state": self.state,
            "compute": self.compute,
            "netns": self.use_netns,
            "s3": self.use_s3,
            "lab_id": self.lab_id,
            "loopback_prefix": self.loopback_prefix,
            "api_port": self.api_port,
            "nats_port": self.nats_port,
            "client_key_public": self.client_key_public,
            "settings": self.settings,
            "packages": self.packages,
            "hosts": [
                {**h.to_state(), "entry": self.entries[h.name].to_state()} for h in self.hosts
            ],
            "s3_server": self.s3.to_state() if self.s3 else None,
            "network": self.network.to_state() if self.network else None,
            "latency": self.latency,
            "cloud_hostnames": self.cloud_hostnames,
            "machine_names": self.machine_names,
            "proxy": self.proxy.to_state() if self.proxy else None,
            "api_proxy_port": self.api_proxy_port,
            "s3_proxy_port": self.s3_proxy_port,
        }
        atomic_write(self.workdir / STATE_FILE, json.dumps(data, indent=2) + "\n", 0o644)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- adding hosts ---------------------------------------------------------------------------

    def add_host(
        self,
        name: str,
        *,
        role: str = COMPUTE,
        in_inventory: bool = True,
        pin_key: bool = True,
        labels: dict[str, str] | None = None,
        machine_name: str = "",
    ) -> LabHost:
        """Start one more host (e.g. a device to onboard) and optionally list and pin it.

        ``machine_name`` is its hostname when that should differ from ``name``.
        """
        if machine_name:
            _check_machine_name(name, machine_name)
            self.machine_names[name] = machine_name
        if self.state != "up":
            raise LabError("add_host needs a running lab (call up() first)")
        if any(h.name == name for h in self.hosts):
            raise LabError(f"lab host {name!r} already exists")
        if role == CONTROL_PLANE and any(e.role == CONTROL_PLANE for e in self.entries.values()):
            raise LabError("the lab already has its control plane")
        chosen = dict(_default_labels(role)) if labels is None else dict(labels)
        entry = HostEntry(role=role, in_inventory=in_inventory, pin_key=pin_key, labels=chosen)
        [host] = self._make_hosts([(name, entry)])
        self._save_state()
        start_hosts([host])
        self._save_state()
        if pin_key:
            append_line(self.known_hosts_path, host.known_hosts_line)
        if in_inventory:
            self._write_inventory()
        return host

    def _make_hosts(self, wanted: list[tuple[str, HostEntry]]) -> list[LabHost]:
        """Create (not start) hosts: addresses, ports, files, network namespaces."""
        first = len(self.hosts) + 2  # .1 is the gateway in netns mode; keep both alike
        last = first + len(wanted) - 1
        if self.network is not None and last > 253:
            raise LabError("a network-namespace lab holds at most 252 hosts (one /24)")
        if last > MAX_HOSTS + 1:
            raise LabError(f"a lab holds at most {MAX_HOSTS} hosts")
        shared = self.network is None
        ports = self._free_ports(2 * len(wanted)) if shared else []
        agents = sum(entry.role == COMPUTE for _, entry in wanted)
        agent_ports = iter(self._reserve_ports(agents, also_exclude=ports) if shared else [])
        made: list[LabHost] = []
        for offset, (name, entry) in enumerate(wanted):
            index = first + offset
            if self.network is not None:
                address, ssh_port = self.network.address(index), NETNS_SSH_PORT
            else:
                address, ssh_port = self._loopback_address(index), ports[2 * offset]
                if entry.role == COMPUTE:
                    entry.bacalhau_api_port = next(agent_ports)
            host = LabHost(name, address, ssh_port, self.hosts_dir / name, detach=self.detach)
            host.machine_name = self._machine_name(name, entry, address)
            if self.network is not None:
                host.netns_cidr = self.network.cidr(index)
            if self.proxy is not None:
                host.proxy_port = ports[2 * offset + 1]
                self._route(ssh_route(name), (address, host.proxy_port), (address, ssh_port))
            host.directory.mkdir(parents=True, exist_ok=True)
            host.prepare(self.client_key_public)
            made.append(host)
            self.hosts.append(host)
            self.entries[name] = entry
        if self.network is not None:
            first_index = {h.name: first + i for i, h in enumerate(made)}
            netns_mod.add_hosts(self.network, first_index)
            for host in made:
                host.netns = self.network.hosts[host.name]
        return made

    def _loopback_address(self, index: int) -> str:
        """Host ``index`` (2, 3, ...) on the shared loopback: 250 hosts per /24, then the next.

        Indexes 2..251 keep the lab's own 127.A.B.0/24 (``127.A.B.index``);
        later ones continue in 127.A.B+1.0/24 and so on (the whole 127/8 is local).
        """
        _, a, b = (int(part) for part in self.loopback_prefix.split("."))
        block, offset = divmod(index - 2, 250)
        a, b = a + (b + block) // 256, (b + block) % 256
        return f"127.{a}.{b}.{offset + 2}"

    def _ports_in_use(self) -> set[int]:
        """Every port this lab has handed out (some maybe not bound yet)."""
        ports = {self.api_port, self.nats_port, self.api_proxy_port, self.s3_proxy_port}
        ports.add(self.s3.port if self.s3 is not None else None)
        for host in self.hosts:
            ports |= {host.ssh_port, host.proxy_port, self.entries[host.name].bacalhau_api_port}
        return {p for p in ports if p}

    def _free_ports(self, count: int) -> list[int]:
        """Ports free now and not already given to a daemon of this lab that has yet to bind."""
        return free_ports(count, exclude=self._ports_in_use())

    def _reserve_ports(self, count: int, also_exclude: Collection[int] = ()) -> list[int]:
        """Free ports for daemons that bind late (agents, orchestrator), held until ``down``.

        ``also_exclude``: ports just chosen for daemons not created yet (a held port
        would keep them from binding).
        """
        held = reserve_ports(count, exclude={*self._ports_in_use(), *also_exclude})
        self._held_ports += held
        return [s.getsockname()[1] for s in held]

    def _new_s3_server(self, host: str) -> S3Server:
        port = self._free_ports(1)[0] if self.network is None else 0
        return S3Server(self.workdir / "s3", host=host, port=port, detach=self.detach)

    def _machine_name(self, name: str, entry: HostEntry, address: str) -> str:
        """The host's machine hostname: asked for, cloud-style, or "" (= its name)."""
        if name in self.machine_names:
            return self.machine_names[name]
        if self.cloud_hostnames and entry.role == COMPUTE:
            match = re.fullmatch(r"node-(\d+)", name)
            if match and int(match.group(1)) % 2 == 0:
                return "ip-10-" + "-".join(address.split(".")[1:])
        return ""

    # -- latency mode ---------------------------------------------------------------------------

    def _route(self, name: str, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        assert self.proxy is not None
        try:
            kind = "ssh" if name.startswith("ssh:") else "http"
            self.proxy.add(name, listen, upstream, kind=kind)
        except ProxyError as exc:
            raise LabError(str(exc)) from None

    def _proxy_api(self) -> None:
        """Put the proxy in front of the orchestrator's API (it listens on every address)."""
        if self.proxy is None:
            return
        address = self.control_plane.address
        self.api_proxy_port = self._free_ports(1)[0]
        self._route(API_ROUTE, (address, self.api_proxy_port), (address, self.api_port))

    def _proxy_s3(self) -> None:
        if self.proxy is None or self.s3 is None:
            return
        self.s3_proxy_port = self._free_ports(1)[0]
        self._route(S3_ROUTE, (self.s3.host, self.s3_proxy_port), (self.s3.host, self.s3.port))

    def _require_proxy(self) -> LatencyProxy:
        if self.proxy is None:
            raise LabError("this lab has no latency proxy (start it with latency=...)")
        return self.proxy

    def freeze(self, name: str) -> None:
        """Host ``name`` stops answering: its SSH traffic is held both ways, nothing closed."""
        self.host(name)
        self._require_proxy().freeze(ssh_route(name))

    def cut(self, name: str) -> int:
        """Reset every open SSH connection to host ``name`` (a crash); how many there were."""
        self.host(name)
        return self._require_proxy().cut(ssh_route(name))

    def thaw(self, name: str) -> None:
        """Host ``name`` answers again; what was held is delivered."""
        self._require_proxy().thaw(ssh_route(name))

    def set_latency(self, seconds: float) -> None:
        """Change the one-way delay of every proxied connection from now on."""
        self._require_proxy().set_delay(seconds)
        self.latency = seconds
        self._save_state()


def _check_machine_name(name: str, machine: str) -> None:
    if not _MACHINE_NAME_RE.fullmatch(machine):
        raise LabError(f"{name}: machine name {machine!r} is not a valid hostname label")


def _default_labels(role: str) -> dict[str, str]:
    return dict(DEFAULT_LABELS) if role == COMPUTE else {}
