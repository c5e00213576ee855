"""Settings: ``fleetkit.yaml``, overridable by environment variables.

Pinned versions and package sources (URL or local path, always with a
SHA-256), the orchestrator's address, the query image and publisher,
timeouts, parallelism, and where each secret comes from. Relative paths are
resolved against the directory holding the settings file.

Environment overrides (read once, here):
``FLEETKIT_SETTINGS`` (which file), ``FLEETKIT_ORCHESTRATOR_URL``,
``FLEETKIT_PARALLELISM``, ``FLEETKIT_QUERY_TIMEOUT``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.yamlfile import expect_mapping, load_yaml, reject_unknown_keys

DEFAULT_SETTINGS_FILE = "fleetkit.yaml"
DEFAULT_DISABLED_TABLES = ("curl", "curl_certificate", "carves", "process_envs", "shell_history")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class PackageSource:
    """Where a package comes from and the hash it must have."""

    source: str
    sha256: str

    @property
    def is_url(self) -> bool:
        return urlparse(self.source).scheme in ("http", "https")

    @property
    def filename(self) -> str:
        return Path(urlparse(self.source).path if self.is_url else self.source).name


@dataclass(frozen=True)
class SSHSettings:
    known_hosts: str
    parallelism: int = 32
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    #: ssh_config file to honour; None = the usual ~/.ssh/config and /etc/ssh/ssh_config.
    config_file: str | None = None
    load_ssh_config: bool = True
    identity_file: str | None = None
    use_agent: bool = True


@dataclass(frozen=True)
class OsquerySettings:
    package: PackageSource
    version: str = "5.23.1"
    disabled_tables: tuple[str, ...] = DEFAULT_DISABLED_TABLES
    extensions_socket: str = "/var/osquery/osquery.em"
    flags_file: str = "/etc/osquery/osquery.flags"

    @property
    def dpkg_version(self) -> str:
        """What dpkg reports for the official package: ``5.23.1-1.linux``."""
        return f"{self.version}-1.linux"

    @property
    def socket_dir(self) -> str:
        return str(Path(self.extensions_socket).parent)


@dataclass(frozen=True)
class BacalhauSettings:
    package: PackageSource
    node_token: Secret
    version: str = "v1.9.3"
    install_path: str = "/usr/local/bin/bacalhau"
    config_path: str = "/etc/bacalhau/config.yaml"
    data_dir: str = "/var/lib/bacalhau"
    api_port: int = 1234
    nats_port: int = 4222
    #: Orchestrator API as seen from the admin machine; None = the control plane's address.
    orchestrator_url: str | None = None
    api_key: Secret | None = None
    api_username: str | None = None
    api_password: Secret | None = None
    #: install | verify | skip (the lab skips: no Docker engine there)
    container_engine: str = "verify"
    container_engine_package: str = "docker.io"
    manual_approval: bool = False
    #: Bacalhau durations (Go syntax): how often compute nodes heartbeat and how
    #: long the orchestrator waits before calling a silent node DISCONNECTED.
    heartbeat_interval: str = "15s"
    disconnect_timeout: str = "1m"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    region: str = "us-east-1"
    endpoint: str | None = None
    key_template: str = "fleetkit/{jobID}/{nodeID}/{executionID}"
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    parallelism: int = 16


@dataclass(frozen=True)
class QuerySettings:
    image: str = "osquery/osquery:5.23.1-ubuntu22.04"
    timeout: float = 120.0
    #: none (RunOutput only) or s3
    publisher: str = "none"
    s3: S3Settings | None = None
    redact_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    path: str
    base_dir: str
    inventory_dir: str
    ssh: SSHSettings
    osquery: OsquerySettings
    bacalhau: BacalhauSettings
    query: QuerySettings
    #: push (fetch once here, upload) or pull (each host downloads)
    transfer_mode: str = "push"
    #: where push mode caches downloaded packages
    cache_dir: str = ".fleetkit-cache"
    #: auto | systemd | start-stop-daemon
    service_manager: str = "auto"
    #: Networks from which administrators reach quarantined hosts over SSH.
    admin_networks: tuple[str, ...] = ()
    #: Directory of the Jinja2 templates provisioning renders; None = the ones
    #: shipped with fleetkit (``fleetkit/templates/``).
    templates_dir: str | None = None
    #: Where a hash-only hunt looks (directory globs); None = fleetkit.commands.hunt's default.
    hunt_scope: tuple[str, ...] | None = None
    #: Seconds a quarantined host waits for fleetkit to reconnect before rolling back.
    quarantine_rollback_seconds: float = 30.0


class _Reader:
    """Typed access to one mapping of the settings file, with errors naming the key."""

    def __init__(self, data: Any, *, file: str, key: str, allowed: set[str]) -> None:
        self.file = file
        self.key = key
        self.data = expect_mapping(data, file=file, key=key or "(top level)")
        reject_unknown_keys(self.data, allowed, file=file, key=key)

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def err(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=self._k(name))

    def child(self, name: str, allowed: set[str]) -> _Reader:
        return _Reader(self.data.get(name), file=self.file, key=self._k(name), allowed=allowed)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def text(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise self.err(name, "required")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise self.err(name, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.err(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def opt_str(self, name: str) -> str | None:
        return self.text(name) if self.has(name) else None

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= minimum:
            raise self.err(name, f"expected a number > {minimum:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int, *, low: int = 1, high: int = 65535) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.err(name, f"expected an integer {low}-{high}, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.err(name, f"expected true or false, got {value!r}")
        return value

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.data.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.err(name, "expected a list of strings")
        return tuple(value)

    def path(self, name: str, base: Path, default: str | None = None) -> str:
        value = self.text(name, default)
        return str((base / Path(value).expanduser()).resolve())


def load_settings(environ: Mapping[str, str], cwd: str, path: str | None = None) -> Settings:
    """Read and validate the settings file; nothing is contacted."""
    chosen = path or environ.get("FLEETKIT_SETTINGS") or DEFAULT_SETTINGS_FILE
    file_path = (Path(cwd) / chosen).resolve()
    file = str(file_path)
    data = load_yaml(file_path)
    base = file_path.parent
    top = _Reader(
        data,
        file=file,
        key="",
        allowed={
            "inventory",
            "ssh",
            "osquery",
            "bacalhau",
            "query",
            "transfer_mode",
            "cache_dir",
            "service_manager",
            "admin_networks",
            "templates_dir",
            "hunt",
            "quarantine",
        },
    )
    inventory_dir = top.path("inventory", base, "inventory")
    ssh = _read_ssh(top, base, inventory_dir, environ)
    osquery = _read_osquery(top, base)
    bacalhau = _read_bacalhau(top, base, environ)
    query = _read_query(top, base, environ)
    return Settings(
        path=file,
        base_dir=str(base),
        inventory_dir=inventory_dir,
        ssh=ssh,
        osquery=osquery,
        bacalhau=bacalhau,
        query=query,
        transfer_mode=top.text("transfer_mode", "push", choices=("push", "pull")),
        cache_dir=top.path("cache_dir", base, ".fleetkit-cache"),
        service_manager=top.text(
            "service_manager", "auto", choices=("auto", "systemd", "start-stop-daemon")
        ),
        admin_networks=top.str_list("admin_networks", ()),
        templates_dir=top.path("templates_dir", base) if top.has("templates_dir") else None,
        hunt_scope=_read_hunt_scope(top),
        quarantine_rollback_seconds=top.child("quarantine", {"rollback_seconds"}).number(
            "rollback_seconds", 30.0
        ),
    )


def _read_ssh(
    top: _Reader, base: Path, inventory_dir: str, environ: Mapping[str, str]
) -> SSHSettings:
    r = top.child(
        "ssh",
        {
            "known_hosts",
            "parallelism",
            "connect_timeout",
            "command_timeout",
            "config_file",
            "load_ssh_config",
            "identity_file",
            "use_agent",
        },
    )
    parallelism = r.integer("parallelism", 32, high=1024)
    if "FLEETKIT_PARALLELISM" in environ:
        raw = environ["FLEETKIT_PARALLELISM"]
        if not raw.isdigit() or not 1 <= int(raw) <= 1024:
            raise ConfigError(
                f"expected an integer 1-1024, got {raw!r}", key="FLEETKIT_PARALLELISM"
            )
        parallelism = int(raw)
    return SSHSettings(
        known_hosts=r.path("known_hosts", base, str(Path(inventory_dir) / "known_hosts")),
        parallelism=parallelism,
        connect_timeout=r.number("connect_timeout", 10.0),
        command_timeout=r.number("command_timeout", 600.0),
        config_file=r.path("config_file", base) if r.has("config_file") else None,
        load_ssh_config=r.boolean("load_ssh_config", True),
        identity_file=r.path("identity_file", base) if r.has("identity_file") else None,
        use_agent=r.boolean("use_agent", True),
    )


def _read_package(r: _Reader, name: str, base: Path) -> PackageSource:
    p = r.child(name, {"source", "sha256"})
    source = p.text("source")
    sha = p.text("sha256").lower()
    if not _SHA256_RE.match(sha):
        raise p.err("sha256", "expected 64 hexadecimal characters")
    if urlparse(source).scheme not in ("http", "https"):
        if urlparse(source).scheme not in ("", "file"):
            raise p.err("source", f"expected an http(s) URL or a local path, got {source!r}")
        source = str((base / Path(source.removeprefix("file://")).expanduser()).resolve())
    return PackageSource(source=source, sha256=sha)


def _read_osquery(top: _Reader, base: Path) -> OsquerySettings:
    r = top.child(
        "osquery", {"version", "package", "disabled_tables", "extensions_socket", "flags_file"}
    )
    tables = r.str_list("disabled_tables", DEFAULT_DISABLED_TABLES)
    for table in tables:
        if not _TABLE_RE.match(table):
            raise r.err("disabled_tables", f"invalid table name {table!r}")
    socket = r.text("extensions_socket", "/var/osquery/osquery.em")
    if not socket.startswith("/"):
        raise r.err("extensions_socket", "must be an absolute path")
    return OsquerySettings(
        package=_read_package(r, "package", base),
        version=r.text("version", "5.23.1"),
        disabled_tables=tables,
        extensions_socket=socket,
        flags_file=r.text("flags_file", "/etc/osquery/osquery.flags"),
    )


def _secret(r: _Reader, name: str, base: Path, environ: Mapping[str, str]) -> Secret | None:
    if not r.has(name):
        return None
    s = r.child(name, {"env", "file"})
    env = s.opt_str("env")
    file = s.path("file", base) if s.has("file") else None
    if not env and not file:
        raise r.err(name, "a secret needs 'env' (variable name) or 'file' (path)")
    return Secret(name=r._k(name), env=env, file=file, settings_file=r.file, _environ=environ)


def _read_bacalhau(top: _Reader, base: Path, environ: Mapping[str, str]) -> BacalhauSettings:
    r = top.child(
        "bacalhau",
        {
            "version",
            "package",
            "install_path",
            "config_path",
            "data_dir",
            "api_port",
            "nats_port",
            "orchestrator_url",
            "node_token",
            "api_key",
            "api_username",
            "api_password",
            "container_engine",
            "container_engine_package",
            "manual_approval",
            "heartbeat_interval",
            "disconnect_timeout",
        },
    )
    token = _secret(r, "node_token", base, environ)
    if token is None:
        raise r.err("node_token", "required: {env: NAME} or {file: PATH}")
    url = environ.get("FLEETKIT_ORCHESTRATOR_URL") or r.opt_str("orchestrator_url")
    if url is not None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise r.err("orchestrator_url", f"expected http(s)://host:port, got {url!r}")
    return BacalhauSettings(
        package=_read_package(r, "package", base),
        node_token=token,
        version=r.text("version", "v1.9.3"),
        install_path=r.text("install_path", "/usr/local/bin/bacalhau"),
        config_path=r.text("config_path", "/etc/bacalhau/config.yaml"),
        data_dir=r.text("data_dir", "/var/lib/bacalhau"),
        api_port=r.integer("api_port", 1234),
        nats_port=r.integer("nats_port", 4222),
        orchestrator_url=url.rstrip("/") if url else None,
        api_key=_secret(r, "api_key", base, environ),
        api_username=r.opt_str("api_username"),
        api_password=_secret(r, "api_password", base, environ),
        container_engine=r.text(
            "container_engine", "verify", choices=("install", "verify", "skip")
        ),
        container_engine_package=r.text("container_engine_package", "docker.io"),
        manual_approval=r.boolean("manual_approval", False),
        heartbeat_interval=_duration(r, "heartbeat_interval", "15s"),
        disconnect_timeout=_duration(r, "disconnect_timeout", "1m"),
    )


def _duration(r: _Reader, name: str, default: str) -> str:
    value = r.text(name, default)
    if not re.fullmatch(r"(\d+(ms|s|m|h))+", value):
        raise r.err(name, f"expected a duration like 15s, 1m or 500ms, got {value!r}")
    return value


def _read_query(top: _Reader, base: Path, environ: Mapping[str, str]) -> QuerySettings:
    r = top.child("query", {"image", "timeout", "publisher", "s3", "redact_columns"})
    timeout = r.number("timeout", 120.0)
    if "FLEETKIT_QUERY_TIMEOUT" in environ:
        try:
            timeout = float(environ["FLEETKIT_QUERY_TIMEOUT"])
        except ValueError:
            raise ConfigError(
                "expected a number of seconds", key="FLEETKIT_QUERY_TIMEOUT"
            ) from None
    publisher = r.text("publisher", "none", choices=("none", "s3"))
    s3 = None
    if r.has("s3"):
        s = r.child(
            "s3",
            {
                "bucket",
                "region",
                "endpoint",
                "key_template",
                "access_key_id",
                "secret_access_key",
                "parallelism",
            },
        )
        template = s.text("key_template", "fleetkit/{jobID}/{nodeID}/{executionID}")
        for placeholder in ("{jobID}", "{nodeID}", "{executionID}"):
            if placeholder not in template:
                raise s.err("key_template", f"must contain {placeholder} so results never collide")
        s3 = S3Settings(
            bucket=s.text("bucket"),
            region=s.text("region", "us-east-1"),
            endpoint=s.opt_str("endpoint"),
            key_template=template,
            access_key_id=_secret(s, "access_key_id", base, environ),
            secret_access_key=_secret(s, "secret_access_key", base, environ),
            parallelism=s.integer("parallelism", 16, high=256),
        )
    if publisher == "s3" and s3 is None:
        raise r.err("s3", "publisher is s3 but no s3 section (bucket, region, endpoint)")
    return QuerySettings(
        image=r.text("image", "osquery/osquery:5.23.1-ubuntu22.04"),
        timeout=timeout,
        publisher=publisher,
        s3=s3,
        redact_columns=r.str_list("redact_columns", ()),
    )


def _read_hunt_scope(top: _Reader) -> tuple[str, ...] | None:
    r = top.child("hunt", {"scope"})
    if not r.has("scope"):
        return None
    scope = r.str_list("scope", ())
    for glob in scope:
        if not glob.startswith("/"):
            raise r.err("scope", f"expected absolute directory globs, got {glob!r}")
    return scope
