"""Settings: ``fleetkit.yaml``, overridable by environment variables.

One module per section of the file: this one reads the file, its top-level
keys and ``ssh:``; :mod:`.software_settings` (``osquery:``, ``bacalhau:``),
:mod:`.query_settings`, :mod:`.history_settings` and :mod:`.watch_settings`
read theirs. The section types are re-exported here, so callers import every
settings noun from this module.

Pinned versions and package sources (URL or local path, always with a
SHA-256), the orchestrator's address, the query image and publisher,
timeouts, parallelism, and where each secret comes from. Relative paths are
resolved against the directory holding the settings file.

Environment overrides (each read once, by its section's reader):
``FLEETKIT_SETTINGS`` (which file), ``FLEETKIT_ORCHESTRATOR_URL``,
``FLEETKIT_PARALLELISM``, ``FLEETKIT_QUERY_TIMEOUT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetkit.foundation.history_settings import KEYS as HISTORY_KEYS
from fleetkit.foundation.history_settings import SECTION as HISTORY_SECTION
from fleetkit.foundation.history_settings import HistorySettings, read_history
from fleetkit.foundation.query_settings import QuerySettings, S3Settings, read_query
from fleetkit.foundation.settings_reader import Reader, admin_networks, hunt_scope
from fleetkit.foundation.software_settings import (
    DEFAULT_DISABLED_TABLES,
    BacalhauSettings,
    OsquerySettings,
    PackageSource,
    read_bacalhau,
    read_osquery,
)
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.validate import excerpt, matches, whole
from fleetkit.foundation.watch_settings import WatchSettings
from fleetkit.foundation.yamlfile import (
    SETTINGS_BYTES,
    load_yaml,
)

__all__ = [
    "DEFAULT_DISABLED_TABLES",
    "DEFAULT_SETTINGS_FILE",
    "BacalhauSettings",
    "OsquerySettings",
    "PackageSource",
    "QuerySettings",
    "S3Settings",
    "SSHSettings",
    "Settings",
    "load_settings",
]

DEFAULT_SETTINGS_FILE = "fleetkit.yaml"
_PARALLELISM = whole(r"[0-9]{1,4}")


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
    osquery = read_osquery(top, base)
    bacalhau = read_bacalhau(top, base, environ)
    query = read_query(top, base, environ)
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
