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
import copy
import hashlib
import json
import os
import random
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import netns as netns_mod
from lab.hosts import HostKey, LabError, LabHost, free_ports, start_hosts, stop_hosts
from lab.s3 import S3Server
from lab.standins import build_cached

STATE_FILE = "lab.json"
CONTROL_PLANE = "control_plane"
COMPUTE = "compute"
OSQUERY_VERSION = "5.23.1"
OSQUERY_DEB = f"osquery_{OSQUERY_VERSION}-1.linux_amd64.deb"
BACALHAU_VERSION = "v1.9.3"
BACALHAU_TARBALL = f"bacalhau_{BACALHAU_VERSION}_linux_amd64.tar.gz"
DEFAULT_LABELS = {"role": "osquery", "env": "lab"}
#: Ports used inside per-host network namespaces (netns mode), where nothing collides.
NETNS_SSH_PORT = 22
NETNS_API_PORT = 1234
NETNS_NATS_PORT = 4222


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


class Lab:
    """A local fleet of namespaced sshd hosts plus the fleetkit setup to manage it."""

    def __init__(
        self,
        workdir: Path,
        *,
        compute: int = 3,
        netns: bool = False,
        s3: bool = False,
        detach: bool = True,
    ) -> None:
        """``detach=False`` ties every process of the lab to the creating thread (fixtures)."""
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

    # -- paths --------------------------------------------------------------------------------

    @property
    def settings_path(self) -> Path:
        return self.workdir / "fleetkit.yaml"

    @property
    def inventory_dir(self) -> Path:
        return self.workdir / "inventory"

    @property
    def known_hosts_path(self) -> Path:
        return self.inventory_dir / "known_hosts"

    @property
    def identity_file(self) -> Path:
        return self.workdir / "ssh" / "id_ed25519"

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
        return f"http://{self.control_plane.address}:{self.api_port}"

    # -- lifecycle ------------------------------------------------------------------------------

    def up(self) -> Lab:
        """Start everything and write the fleetkit setup; on failure nothing is left running."""
        if self.state == "up":
            return self
        self._claim_workdir()
        try:
            self._write_client_key()
            self._write_secrets()
            self._write_packages()
            if self.use_netns:
                subnet = netns_mod.pick_subnet()
                self.network = netns_mod.LabNetwork(self.lab_id, subnet)
                netns_mod.create_network(self.network)
            else:
                self.api_port, self.nats_port = free_ports(2)
            if self.use_s3:
                host = self.network.gateway if self.network else "127.0.0.1"
                self.s3 = S3Server(self.workdir / "s3", host=host, detach=self.detach).start()
            names = [("orch-1", CONTROL_PLANE)]
            names += [(f"node-{i}", COMPUTE) for i in range(1, self.compute + 1)]
            new = self._make_hosts(
                [(n, HostEntry(role=r, labels=_default_labels(r))) for n, r in names]
            )
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
            for stale in ("hosts", "inventory", "secrets", "ssh", "packages", "s3"):
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
        if self.network is not None:
            problems += netns_mod.teardown(self.network)
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
            self.s3 = S3Server(self.workdir / "s3", host=host, detach=self.detach).start()
            self.use_s3 = True
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
        }
        _atomic_write(self.workdir / STATE_FILE, json.dumps(data, indent=2) + "\n", 0o644)

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
    ) -> LabHost:
        """Start one more host (e.g. a device to onboard) and optionally list and pin it."""
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
            _append_line(self.known_hosts_path, host.known_hosts_line)
        if in_inventory:
            self._write_inventory()
        return host

    def _make_hosts(self, wanted: list[tuple[str, HostEntry]]) -> list[LabHost]:
        """Create (not start) hosts: addresses, ports, files, network namespaces."""
        first = len(self.hosts) + 2  # .1 is the gateway in netns mode; keep both alike
        if first + len(wanted) > 254:
            raise LabError("a lab holds at most 252 hosts")
        shared = self.network is None
        ports = free_ports(2 * len(wanted)) if shared else []
        made: list[LabHost] = []
        for offset, (name, entry) in enumerate(wanted):
            index = first + offset
            if self.network is not None:
                address, ssh_port = self.network.address(index), NETNS_SSH_PORT
            else:
                address, ssh_port = f"{self.loopback_prefix}.{index}", ports[2 * offset]
                if entry.role == COMPUTE:
                    entry.bacalhau_api_port = ports[2 * offset + 1]
            host = LabHost(name, address, ssh_port, self.hosts_dir / name, detach=self.detach)
            if self.network is not None:
                host.netns_cidr = self.network.cidr(index)
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

    # -- generated files ------------------------------------------------------------------------

    def _write_client_key(self) -> None:
        key = HostKey.generate("fleetkit-lab")
        _atomic_write(self.identity_file, key.private_openssh, 0o600)
        _atomic_write(self.identity_file.with_suffix(".pub"), key.public_line + "\n", 0o644)
        self.identity_file.parent.chmod(0o700)
        self.client_key_public = key.public_line

    def _write_secrets(self) -> None:
        directory = self.workdir / "secrets"
        directory.mkdir(mode=0o700, exist_ok=True)
        _atomic_write(directory / "node_token", secrets.token_urlsafe(24) + "\n", 0o600)

    def _write_packages(self) -> None:
        directory = self.workdir / "packages"
        directory.mkdir(exist_ok=True)
        for filename, built in (
            (OSQUERY_DEB, _build_osquery()),
            (BACALHAU_TARBALL, _build_bacalhau()),
        ):
            if built is None:
                continue
            target = directory / filename
            target.unlink(missing_ok=True)
            try:
                os.link(built, target)
            except OSError:
                shutil.copyfile(built, target)
            self.packages[filename] = _sha256(target)

    def _write_known_hosts(self) -> None:
        lines = [
            "# Generated by the fleetkit lab (lab/fleet.py): pinned host keys of the lab hosts."
        ]
        lines += [h.known_hosts_line for h in self.hosts if self.entries[h.name].pin_key]
        _atomic_write(self.known_hosts_path, "\n".join(lines) + "\n", 0o644)

    def inventory_data(self) -> dict[str, Any]:
        groups: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            entry = self.entries[host.name]
            if not entry.in_inventory:
                continue
            group = groups.setdefault(entry.role, {"hosts": {}})
            item: dict[str, Any] = {"address": host.address, "port": host.ssh_port}
            if entry.labels:
                item["labels"] = dict(entry.labels)
            if entry.bacalhau_api_port is not None:
                item["bacalhau_api_port"] = entry.bacalhau_api_port
            group["hosts"][host.name] = item
        return groups

    def _write_inventory(self) -> None:
        header = (
            "# Generated by the fleetkit lab (lab/fleet.py) for the lab in this directory;\n"
            "# rewritten when the lab adds a host. Onboarded hosts go to hosts.d/.\n"
        )
        text = header + yaml.safe_dump(self.inventory_data(), sort_keys=False)
        _atomic_write(self.inventory_dir / "lab.yaml", text, 0o644)

    def default_settings(self) -> dict[str, Any]:
        """The lab's ``fleetkit.yaml`` as data (paths relative to the work dir)."""
        settings: dict[str, Any] = {
            "inventory": "inventory",
            "transfer_mode": "push",
            "service_manager": "auto",
            "cache_dir": ".fleetkit-cache",
            "ssh": {
                "known_hosts": "inventory/known_hosts",
                "identity_file": "ssh/id_ed25519",
                "use_agent": False,
                "load_ssh_config": False,
                "connect_timeout": 5,
                "command_timeout": 120,
                "parallelism": 32,
            },
            "osquery": {
                "version": OSQUERY_VERSION,
                "package": self._package_entry(OSQUERY_DEB),
            },
            "bacalhau": {
                "version": BACALHAU_VERSION,
                "package": self._package_entry(BACALHAU_TARBALL),
                "node_token": {"file": "secrets/node_token"},
                "api_port": self.api_port,
                "nats_port": self.nats_port,
                "orchestrator_url": self.orchestrator_url,
                "container_engine": "skip",
                "heartbeat_interval": "1s",
                "disconnect_timeout": "3s",
            },
            "query": {"timeout": 60, "publisher": "none"},
        }
        if self.network is not None:
            settings["admin_networks"] = [f"{self.network.gateway}/32"]
        if self.s3 is not None:
            self._write_s3_secrets(self.s3)
            settings["query"]["publisher"] = "s3"
            settings["query"]["s3"] = {
                "bucket": self.s3.bucket,
                "region": "us-east-1",
                "endpoint": self.s3.endpoint,
                "access_key_id": {"file": "secrets/s3_access_key_id"},
                "secret_access_key": {"file": "secrets/s3_secret_access_key"},
            }
        return settings

    def _package_entry(self, filename: str) -> dict[str, str]:
        # A missing stand-in still gets an entry (fleetkit.yaml needs one); provisioning
        # then fails on the hash, naming the file, which is the honest outcome.
        sha = self.packages.get(filename, hashlib.sha256(b"").hexdigest())
        return {"source": f"packages/{filename}", "sha256": sha}

    def _write_s3_secrets(self, server: S3Server) -> None:
        directory = self.workdir / "secrets"
        _atomic_write(directory / "s3_access_key_id", server.access_key_id + "\n", 0o600)
        _atomic_write(directory / "s3_secret_access_key", server.secret_access_key + "\n", 0o600)

    def write_settings(self, **changes: Any) -> None:
        """Rewrite ``fleetkit.yaml`` with ``changes`` merged in (dicts deep-merged, None deletes).

        Example: ``lab.write_settings(query={"publisher": "s3"})``. Changes stick
        for later calls; ``write_settings()`` with no arguments rewrites as is.
        """
        self.settings = _merge(self.settings or self.default_settings(), changes)
        self._write_settings_file()

    def reset_settings(self) -> None:
        """Back to the settings ``up()`` wrote (for tests that changed them)."""
        self.settings = self.default_settings()
        self._write_settings_file()

    def _write_settings_file(self) -> None:
        header = (
            "# Generated by the fleetkit lab (lab/fleet.py). Paths are relative to this file.\n"
            "# Stand-in packages, lab host keys and secrets live beside it.\n"
        )
        text = header + yaml.safe_dump(self.settings, sort_keys=False)
        _atomic_write(self.settings_path, text, 0o644)
        self._save_state()

    def check_settings(self) -> None:
        """Load ``fleetkit.yaml`` with fleetkit's own loader (raises its ConfigError if bad)."""
        from fleetkit.foundation.settings import load_settings

        load_settings(self.environ(), str(self.workdir), str(self.settings_path))

    def environ(self) -> dict[str, str]:
        """The environment to run fleetkit in against this lab."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETKIT_")}
        env["FLEETKIT_SETTINGS"] = str(self.settings_path)
        if self.s3 is not None:
            env["AWS_ACCESS_KEY_ID"] = self.s3.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = self.s3.secret_access_key
            env["AWS_DEFAULT_REGION"] = "us-east-1"
        return env


def _default_labels(role: str) -> dict[str, str]:
    return dict(DEFAULT_LABELS) if role == COMPUTE else {}


def _build_osquery() -> Path | None:
    try:
        from lab.standins.osquery.build import build_deb
    except ImportError:
        return None
    return build_cached("osquery", OSQUERY_DEB, lambda out: build_deb(out, OSQUERY_VERSION))


def _build_bacalhau() -> Path | None:
    try:  # owned by the Bacalhau stand-in engineer; the lab works without it
        from lab.standins.bacalhau.build import build_tarball
    except ImportError:
        return None
    return build_cached(
        "bacalhau", BACALHAU_TARBALL, lambda out: build_tarball(out, BACALHAU_VERSION, "amd64")
    )


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(path)


def _append_line(path: Path, line: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    _atomic_write(path, text + line + "\n", 0o644)
