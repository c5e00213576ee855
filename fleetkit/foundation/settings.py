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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from fleetkit.foundation.history_settings import KEYS as HISTORY_KEYS
from fleetkit.foundation.history_settings import SECTION as HISTORY_SECTION
from fleetkit.foundation.history_settings import HistorySettings, read_history
from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.settings_reader import (
    Reader,
    admin_networks,
    duration,
    endpoint,
    hunt_scope,
    local_path,
    osquery_names,
)
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.validate import (
    BACALHAU_VERSION,
    DEBIAN_PACKAGE,
    ENV_NAME,
    FILE_NAME,
    IMAGE,
    OSQUERY_VERSION,
    S3_BUCKET,
    S3_KEY_TEMPLATE,
    S3_REGION,
    SHA256,
    excerpt,
    matches,
    valid_http_url,
    whole,
)
from fleetkit.foundation.watch_settings import WatchSettings
from fleetkit.foundation.yamlfile import (
    SETTINGS_BYTES,
    load_yaml,
)

DEFAULT_SETTINGS_FILE = "fleetkit.yaml"
_API_USERNAME = whole(r"[^\x00-\x1f\x7f:]{1,256}")
DEFAULT_DISABLED_TABLES = ("curl", "curl_certificate", "carves", "process_envs", "shell_history")
_PARALLELISM = whole(r"[0-9]{1,4}")


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
    parallelism: int = 64
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
    #: Where every fleet run is recorded (default: .fleetkit/history.db beside fleetkit.yaml).
    history: HistorySettings
    #: Scheduled packs and their notifications (disabled unless ``watch.enabled``).
    watch: WatchSettings
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


def load_settings(environ: Mapping[str, str], cwd: str, path: str | None = None) -> Settings:
    """Read and validate the settings file; nothing is contacted."""
    chosen = path or environ.get("FLEETKIT_SETTINGS") or DEFAULT_SETTINGS_FILE
    file_path = (Path(cwd) / chosen).resolve()
    file = str(file_path)
    data = load_yaml(file_path, max_bytes=SETTINGS_BYTES)
    base = file_path.parent
    top = Reader(
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
            "history",
            "watch",
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
        admin_networks=admin_networks(top),
        templates_dir=top.path("templates_dir", base) if top.has("templates_dir") else None,
        hunt_scope=hunt_scope(top),
        quarantine_rollback_seconds=top.child("quarantine", {"rollback_seconds"}).number(
            "rollback_seconds", 30.0
        ),
        history=read_history(top.child(HISTORY_SECTION, HISTORY_KEYS), base),
        watch=WatchSettings.from_mapping(
            top.data.get("watch"), file=file, base_dir=base, environ=environ
        ),
    )


def _read_ssh(
    top: Reader, base: Path, inventory_dir: str, environ: Mapping[str, str]
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
    parallelism = r.integer("parallelism", 64, high=1024)
    if "FLEETKIT_PARALLELISM" in environ:
        raw = environ["FLEETKIT_PARALLELISM"]
        if not matches(_PARALLELISM, raw) or not 1 <= int(raw) <= 1024:
            raise ConfigError(
                f"expected an integer 1-1024, got {excerpt(raw)}", key="FLEETKIT_PARALLELISM"
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


def _read_package(r: Reader, name: str, base: Path) -> PackageSource:
    p = r.child(name, {"source", "sha256"})
    source = p.text("source")
    sha = p.text("sha256").lower()
    if not matches(SHA256, sha):
        raise p.err("sha256", "expected 64 hexadecimal characters")
    bad = p.err("source", f"expected an http(s) URL or a local path, got {excerpt(source)}")
    if urlparse(source).scheme in ("http", "https"):
        if not valid_http_url(source):
            raise bad
    elif urlparse(source).scheme in ("", "file"):
        source = local_path(source.removeprefix("file://"), base, bad)
    else:
        raise bad
    package = PackageSource(source=source, sha256=sha)
    if not matches(FILE_NAME, package.filename):
        raise p.err(
            "source",
            f"the file name {excerpt(package.filename)} is used on the hosts: letters, digits "
            "and . _ + ~ - only",
        )
    return package


def _read_osquery(top: Reader, base: Path) -> OsquerySettings:
    r = top.child(
        "osquery", {"version", "package", "disabled_tables", "extensions_socket", "flags_file"}
    )
    tables = osquery_names(r, "disabled_tables", DEFAULT_DISABLED_TABLES, "table")
    return OsquerySettings(
        package=_read_package(r, "package", base),
        version=r.matching(
            "version", "5.23.1", OSQUERY_VERSION, "an osquery version such as 5.23.1"
        ),
        disabled_tables=tables,
        extensions_socket=r.host_path("extensions_socket", "/var/osquery/osquery.em"),
        flags_file=r.host_path("flags_file", "/etc/osquery/osquery.flags"),
    )


def _secret(r: Reader, name: str, base: Path, environ: Mapping[str, str]) -> Secret | None:
    if not r.has(name):
        return None
    s = r.child(name, {"env", "file"})
    env = (
        s.matching("env", None, ENV_NAME, "an environment variable name") if s.has("env") else None
    )
    file = s.path("file", base) if s.has("file") else None
    if not env and not file:
        raise r.err(name, "a secret needs 'env' (variable name) or 'file' (path)")
    return Secret(name=r._k(name), env=env, file=file, settings_file=r.file, _environ=environ)


def _read_bacalhau(top: Reader, base: Path, environ: Mapping[str, str]) -> BacalhauSettings:
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
    if url is not None and not valid_http_url(url):
        raise r.err("orchestrator_url", f"expected http(s)://host:port, got {excerpt(url)}")
    return BacalhauSettings(
        package=_read_package(r, "package", base),
        node_token=token,
        version=r.matching(
            "version", "v1.9.3", BACALHAU_VERSION, "a Bacalhau version such as v1.9.3"
        ),
        install_path=r.host_path("install_path", "/usr/local/bin/bacalhau"),
        config_path=r.host_path("config_path", "/etc/bacalhau/config.yaml"),
        data_dir=r.host_path("data_dir", "/var/lib/bacalhau"),
        api_port=r.integer("api_port", 1234),
        nats_port=r.integer("nats_port", 4222),
        orchestrator_url=url.rstrip("/") if url else None,
        api_key=_secret(r, "api_key", base, environ),
        api_username=(
            r.matching("api_username", None, _API_USERNAME, "a user name (no ':' or controls)")
            if r.has("api_username")
            else None
        ),
        api_password=_secret(r, "api_password", base, environ),
        container_engine=r.text(
            "container_engine", "verify", choices=("install", "verify", "skip")
        ),
        container_engine_package=r.matching(
            "container_engine_package", "docker.io", DEBIAN_PACKAGE, "a Debian package name"
        ),
        manual_approval=r.boolean("manual_approval", False),
        heartbeat_interval=duration(r, "heartbeat_interval", "15s"),
        disconnect_timeout=duration(r, "disconnect_timeout", "1m"),
    )


def _read_query(top: Reader, base: Path, environ: Mapping[str, str]) -> QuerySettings:
    r = top.child("query", {"image", "timeout", "publisher", "s3", "redact_columns"})
    timeout = r.number("timeout", 120.0)
    if "FLEETKIT_QUERY_TIMEOUT" in environ:
        try:
            timeout = float(environ["FLEETKIT_QUERY_TIMEOUT"])
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigError(
                "expected a number of seconds > 0", key="FLEETKIT_QUERY_TIMEOUT"
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
        template = s.matching(
            "key_template",
            "fleetkit/{jobID}/{nodeID}/{executionID}",
            S3_KEY_TEMPLATE,
            "letters, digits, _ . / = - and {placeholders}",
        )
        for placeholder in ("{jobID}", "{nodeID}", "{executionID}"):
            if placeholder not in template:
                raise s.err("key_template", f"must contain {placeholder} so results never collide")
        s3 = S3Settings(
            bucket=s.matching("bucket", None, S3_BUCKET, "an S3 bucket name"),
            region=s.matching("region", "us-east-1", S3_REGION, "an S3 region such as eu-west-1"),
            endpoint=endpoint(s),
            key_template=template,
            access_key_id=_secret(s, "access_key_id", base, environ),
            secret_access_key=_secret(s, "secret_access_key", base, environ),
            parallelism=s.integer("parallelism", 16, high=256),
        )
    if publisher == "s3" and s3 is None:
        raise r.err("s3", "publisher is s3 but no s3 section (bucket, region, endpoint)")
    return QuerySettings(
        image=r.matching(
            "image",
            "osquery/osquery:5.23.1-ubuntu22.04",
            IMAGE,
            "a container image such as osquery/osquery:5.23.1-ubuntu22.04",
        ),
        timeout=timeout,
        publisher=publisher,
        s3=s3,
        redact_columns=osquery_names(r, "redact_columns", (), "column"),
    )
