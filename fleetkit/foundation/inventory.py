"""The inventory: which machines exist, how to reach them, what they are.

Ansible-shaped YAML under ``inventory/``: top-level keys are groups, each with
``hosts`` (name -> host entry) and ``vars`` (merged into its hosts). The
groups ``control_plane`` and ``compute`` give a host its role; any other
group is a free selection handle. ``inventory/hosts.d/<name>.yaml`` holds one
file per onboarded host so onboarding never rewrites a file a person edits.

Everything is validated before any host is contacted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.validate import (
    LABEL_KEY,
    LABEL_VALUE,
    NAME,
    USER,
    excerpt,
    has_control_characters,
    matches,
    valid_address,
)
from fleetkit.foundation.yamlfile import (
    INVENTORY_BYTES,
    expect_mapping,
    load_yaml,
    reject_unknown_keys,
)

CONTROL_PLANE = "control_plane"
COMPUTE = "compute"
ALL = "all"
ONBOARDED_DIR = "hosts.d"
DEFAULT_PORT = 22
DEFAULT_USER = "root"

#: Whole-string patterns (``\A...\Z``: safe even through ``.match()``); kept under
#: these names for the modules that import them.
NAME_RE = NAME
LABEL_KEY_RE = LABEL_KEY
LABEL_VALUE_RE = LABEL_VALUE
#: An identity file path: local, but still no control characters and bounded.
MAX_PATH_LENGTH = 4096

#: Keys a host entry may carry; group ``vars`` may carry the same minus ``address``.
HOST_KEYS = {"address", "port", "user", "labels", "identity_file", "bacalhau_api_port"}
GROUP_VAR_KEYS = HOST_KEYS - {"address"}
GROUP_KEYS = {"hosts", "vars"}


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = DEFAULT_PORT
    user: str = DEFAULT_USER
    labels: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    identity_file: str | None = None
    #: Agent API port of this node; only needed when several nodes share one
    #: network namespace (the lab). None = the settings' default.
    bacalhau_api_port: int | None = None
    #: The file that defined the host's address (for error messages).
    source: str = ""

    @property
    def is_control_plane(self) -> bool:
        return CONTROL_PLANE in self.groups

    @property
    def is_compute(self) -> bool:
        return COMPUTE in self.groups

    @property
    def role(self) -> str:
        return CONTROL_PLANE if self.is_control_plane else COMPUTE if self.is_compute else "other"

    @property
    def endpoint(self) -> str:
        """``address:port`` as shown to a person (IPv6 in brackets)."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.port}"


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[Host, ...]
    groups: dict[str, tuple[str, ...]]
    directory: str

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def get(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def control_plane(self) -> Host | None:
        return next((h for h in self.hosts if h.is_control_plane), None)

    @property
    def compute(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_compute)

    def select(self, patterns: Iterable[str] | None) -> list[Host]:
        """Hosts named directly or through a group; None or empty = every host.

        Order follows the inventory, duplicates collapse; an unknown name is
        bad input, reported before anything is contacted.
        """
        wanted = [p.strip() for p in (patterns or []) if p.strip()]
        if not wanted:
            return list(self.hosts)
        chosen: set[str] = set()
        for pattern in wanted:
            if pattern in self.groups:
                chosen.update(self.groups[pattern])
            elif self.get(pattern) is not None:
                chosen.add(pattern)
            else:
                known = ", ".join(sorted(self.groups)) or "none"
                raise ConfigError(
                    f"unknown host or group {excerpt(pattern)} (groups: {known})", key="--hosts"
                )
        return [h for h in self.hosts if h.name in chosen]


def parse_hosts_option(value: str | None) -> list[str]:
    """``--hosts a,b,group`` as a list (empty = whole inventory)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@dataclass
class _Draft:
    name: str
    values: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, file)
    labels: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


def inventory_files(directory: Path) -> list[Path]:
    """The YAML files read, in order: ``inventory/*.yaml`` then ``hosts.d/*.yaml``."""
    if not directory.is_dir():
        raise ConfigError("inventory directory not found", file=str(directory))
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    onboarded = directory / ONBOARDED_DIR
    if onboarded.is_dir():
        files += sorted(p for p in onboarded.iterdir() if p.suffix in (".yaml", ".yml"))
    return files


def load_inventory(directory: Path | str) -> Inventory:
    directory = Path(directory)
    files = inventory_files(directory)
    if not files:
        raise ConfigError("no inventory files (*.yaml)", file=str(directory))
    group_vars: dict[str, list[tuple[dict[str, Any], str]]] = {}
    drafts: dict[str, _Draft] = {}
    group_members: dict[str, list[str]] = {}
    for path in files:
        _read_inventory_file(path, drafts, group_vars, group_members)
    hosts = tuple(_finish_host(d, group_vars) for d in drafts.values())
    _reject_duplicate_endpoints(hosts)
    _reject_role_conflicts(hosts)
    groups = {g: tuple(dict.fromkeys(m)) for g, m in group_members.items() if g != ALL}
    groups[ALL] = tuple(h.name for h in hosts)
    return Inventory(hosts=hosts, groups=groups, directory=str(directory))


def _read_inventory_file(
    path: Path,
    drafts: dict[str, _Draft],
    group_vars: dict[str, list[tuple[dict[str, Any], str]]],
    group_members: dict[str, list[str]],
) -> None:
    file = str(path)
    data = expect_mapping(load_yaml(path, max_bytes=INVENTORY_BYTES), file=file, key="")
    for group, body in data.items():
        if not matches(NAME, group):
            raise ConfigError(
                f"invalid group name {excerpt(group)} (letters, digits, '_', '.', '-'; "
                "at most 63, starting with a letter or digit)",
                file=file,
            )
        body = expect_mapping(body, file=file, key=group)
        reject_unknown_keys(body, GROUP_KEYS, file=file, key=group)
        gvars = expect_mapping(body.get("vars"), file=file, key=f"{group}.vars")
        reject_unknown_keys(gvars, GROUP_VAR_KEYS, file=file, key=f"{group}.vars")
        group_vars.setdefault(group, []).append((gvars, file))
        members = group_members.setdefault(group, [])
        hosts = expect_mapping(body.get("hosts"), file=file, key=f"{group}.hosts")
        for name, entry in hosts.items():
            if not matches(NAME, name):
                raise ConfigError(
                    f"invalid host name {excerpt(name)} (letters, digits, '_', '.', '-'; "
                    "at most 63, starting with a letter or digit)",
                    file=file,
                    key=f"{group}.hosts",
                )
            key = f"{group}.hosts.{name}"
            entry = expect_mapping(entry, file=file, key=key)
            reject_unknown_keys(entry, HOST_KEYS, file=file, key=key)
            draft = drafts.setdefault(name, _Draft(name))
            draft.groups.append(group)
            members.append(name)
            for k, v in entry.items():
                if k == "labels":
                    draft.labels.update(_labels(v, file=file, key=f"{key}.labels"))
                    continue
                if k in draft.values and draft.values[k][0] != v:
                    other = draft.values[k][1]
                    raise ConfigError(
                        f"host {name!r} defined twice with different {k} (also in {other})",
                        file=file,
                        key=f"{key}.{k}",
                    )
                draft.values[k] = (v, file)


def _finish_host(draft: _Draft, group_vars: dict[str, list[tuple[dict[str, Any], str]]]) -> Host:
    merged: dict[str, tuple[Any, str]] = {}
    labels: dict[str, str] = {}
    for group in [ALL, *draft.groups]:
        for gvars, file in group_vars.get(group, []):
            for k, v in gvars.items():
                if k == "labels":
                    labels.update(_labels(v, file=file, key=f"{group}.vars.labels"))
                else:
                    merged[k] = (v, file)
    merged.update(draft.values)
    labels.update(draft.labels)
    if "address" not in merged:
        where = draft.groups[0] if draft.groups else "?"
        raise ConfigError(
            "missing address",
            file=_first_file(draft, group_vars),
            key=f"{where}.hosts.{draft.name}",
        )
    address, file = merged["address"]
    host_key = f"{draft.groups[0]}.hosts.{draft.name}"
    if not valid_address(address):
        raise ConfigError(
            f"invalid address {excerpt(address)} (an IPv4 or IPv6 address or a DNS name)",
            file=file,
            key=f"{host_key}.address",
        )
    port = _port(merged.get("port", (DEFAULT_PORT, file)), key=f"{host_key}.port")
    user_value, user_file = merged.get("user", (DEFAULT_USER, file))
    if not matches(USER, user_value):
        raise ConfigError(
            f"invalid user {excerpt(user_value)}", file=user_file, key=f"{host_key}.user"
        )
    identity, identity_file = merged.get("identity_file", (None, file))
    if identity is not None and (
        not isinstance(identity, str)
        or not identity
        or len(identity) > MAX_PATH_LENGTH
        or has_control_characters(identity)
    ):
        raise ConfigError(
            f"expected a path without control characters, got {excerpt(identity)}",
            file=identity_file,
            key=f"{host_key}.identity_file",
        )
    api_port = None
    if "bacalhau_api_port" in merged:
        api_port = _port(merged["bacalhau_api_port"], key=f"{host_key}.bacalhau_api_port")
    return Host(
        name=draft.name,
        address=address,
        port=port,
        user=user_value,
        labels=labels,
        groups=tuple(dict.fromkeys(draft.groups)),
        identity_file=identity,
        bacalhau_api_port=api_port,
        source=file,
    )


def _first_file(draft: _Draft, group_vars: dict[str, list[tuple[dict[str, Any], str]]]) -> str:
    for _v, file in draft.values.values():
        return file
    for group in draft.groups:
        for _g, file in group_vars.get(group, []):
            return file
    return ""


def _port(value_file: tuple[Any, str], *, key: str) -> int:
    value, file = value_file
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(
            f"port must be an integer 1-65535, got {excerpt(value)}", file=file, key=key
        )
    return value


def _labels(value: Any, *, file: str, key: str) -> dict[str, str]:
    labels = expect_mapping(value, file=file, key=key)
    out: dict[str, str] = {}
    for k, v in labels.items():
        if not matches(LABEL_KEY, k):
            raise ConfigError(
                f"invalid label key {excerpt(k)} (letters, digits, '_', '.', '-', "
                "optionally prefix/name)",
                file=file,
                key=key,
            )
        if isinstance(v, bool):
            v = "true" if v else "false"
        if isinstance(v, int | float):
            v = str(v)
        if not matches(LABEL_VALUE, v):
            raise ConfigError(
                f"invalid label value {excerpt(v)} (letters, digits, '_', '.', '-', at most 63)",
                file=file,
                key=f"{key}.{k}",
            )
        out[k] = v
    return out


def _reject_duplicate_endpoints(hosts: tuple[Host, ...]) -> None:
    seen: dict[tuple[str, int], Host] = {}
    for host in hosts:
        other = seen.setdefault((host.address, host.port), host)
        if other is not host:
            raise ConfigError(
                f"duplicate host: {host.name!r} and {other.name!r} both point at {host.endpoint}",
                file=host.source,
                key=host.name,
            )


def _reject_role_conflicts(hosts: tuple[Host, ...]) -> None:
    planes = [h for h in hosts if h.is_control_plane]
    for host in hosts:
        if host.is_control_plane and host.is_compute:
            raise ConfigError(
                f"host {host.name!r} is in both {CONTROL_PLANE} and {COMPUTE}",
                file=host.source,
                key=host.name,
            )
    if len(planes) > 1:
        names = ", ".join(h.name for h in planes)
        raise ConfigError(
            f"more than one control plane host ({names}); fleetkit manages one orchestrator",
            file=planes[1].source,
            key=CONTROL_PLANE,
        )
