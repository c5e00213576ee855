"""The pinned software of the fleet: osquery and Bacalhau (``osquery:`` and
``bacalhau:`` of fleetkit.yaml).

Each comes from a package (URL or local path, always with its SHA-256) and is
installed at host paths that end up in files on the hosts, so every string is
matched whole (:mod:`fleetkit.foundation.validate`). The ``bacalhau:`` section
also says how fleetkit reaches the orchestrator (URL, API credentials).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.settings_reader import Reader, duration, local_path, osquery_names, secret
from fleetkit.foundation.validate import (
    BACALHAU_VERSION,
    DEBIAN_PACKAGE,
    FILE_NAME,
    OSQUERY_VERSION,
    SHA256,
    excerpt,
    matches,
    valid_http_url,
    whole,
)

_API_USERNAME = whole(r"[^\x00-\x1f\x7f:]{1,256}")
DEFAULT_DISABLED_TABLES = ("curl", "curl_certificate", "carves", "process_envs", "shell_history")


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


def read_package(r: Reader, name: str, base: Path) -> PackageSource:
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


def read_osquery(top: Reader, base: Path) -> OsquerySettings:
    r = top.child(
        "osquery", {"version", "package", "disabled_tables", "extensions_socket", "flags_file"}
    )
    tables = osquery_names(r, "disabled_tables", DEFAULT_DISABLED_TABLES, "table")
    return OsquerySettings(
        package=read_package(r, "package", base),
        version=r.matching(
            "version", "5.23.1", OSQUERY_VERSION, "an osquery version such as 5.23.1"
        ),
        disabled_tables=tables,
        extensions_socket=r.host_path("extensions_socket", "/var/osquery/osquery.em"),
        flags_file=r.host_path("flags_file", "/etc/osquery/osquery.flags"),
    )


def read_bacalhau(top: Reader, base: Path, environ: Mapping[str, str]) -> BacalhauSettings:
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
    token = secret(r, "node_token", base, environ)
    if token is None:
        raise r.err("node_token", "required: {env: NAME} or {file: PATH}")
    url = environ.get("FLEETKIT_ORCHESTRATOR_URL") or r.opt_str("orchestrator_url")
    if url is not None and not valid_http_url(url):
        raise r.err("orchestrator_url", f"expected http(s)://host:port, got {excerpt(url)}")
    return BacalhauSettings(
        package=read_package(r, "package", base),
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
        api_key=secret(r, "api_key", base, environ),
        api_username=(
            r.matching("api_username", None, _API_USERNAME, "a user name (no ':' or controls)")
            if r.has("api_username")
            else None
        ),
        api_password=secret(r, "api_password", base, environ),
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
