"""The watch service on the control plane (``watch.enabled: true``).

What the control plane gets, in plan order (every file is rendered while
planning, every fact joins the host's one probe):

- ``/opt/fleetkit/venv``: this fleetkit and its dependencies, from the
  wheelhouse built on the admin machine (:mod:`fleetkit.hostfacts.wheelhouse`);
- ``/etc/fleetkit/watch/``: ``fleetkit.yaml`` rendered for the control plane
  (the orchestrator at ``127.0.0.1``, the history and the status file in
  ``/var/lib/fleetkit/watch``, everything else as the admin's settings say),
  ``inventory/hosts.yaml`` (names, addresses, labels: the expected node set;
  no SSH keys, the watch never uses SSH), ``packs/<name>.yaml`` (exactly the
  packs the watch would run here), ``secrets/`` (0700; each secret a 0600
  file: node token, webhook secret, API credentials, S3 keys);
- the ``fleetkit-watch`` service: a systemd unit, or the same command line
  under start-stop-daemon; restarted once when any of the above changed.

The packs are copied as the admin wrote them; ``invoke provision`` checks
them first (the same loader the watch uses, exit 2 before any host is touched).
Open question: the watch runs as root (it reads the 0600 secrets); a
dedicated user would be tighter.
"""

from __future__ import annotations

from typing import Any

from fleetkit.clients.urls import http_url
from fleetkit.foundation.inventory import ALL, Host
from fleetkit.foundation.packfiles import pack_name_of, resolve_pack_files
from fleetkit.foundation.secrets import Secret, remember_secret
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.yamlfile import PACK_BYTES, read_regular_file
from fleetkit.hostfacts.roles import RoleContext
from fleetkit.hostfacts.services import ServiceSpec
from fleetkit.hostfacts.steps import DirectoryStep, FileStep, ServiceStep, Step
from fleetkit.hostfacts.wheelhouse import WheelhouseStep, build_wheelhouse

SERVICE = "fleetkit-watch"
ETC_DIR = "/etc/fleetkit/watch"
SETTINGS_PATH = f"{ETC_DIR}/fleetkit.yaml"
INVENTORY_DIR = f"{ETC_DIR}/inventory"
PACKS_DIR = f"{ETC_DIR}/packs"
SECRETS_DIR = f"{ETC_DIR}/secrets"
STATE_DIR = "/var/lib/fleetkit/watch"
STATUS_PATH = f"{STATE_DIR}/status.json"
HISTORY_PATH = f"{STATE_DIR}/history.db"
APP_DIR = "/opt/fleetkit"
VENV = f"{APP_DIR}/venv"
WHEELHOUSE_RECORD = f"{APP_DIR}/wheelhouse.key"
UNIT_PATH = f"/etc/systemd/system/{SERVICE}.service"
_RESTART = ((SERVICE, "restart"),)
_RELOAD = ((SERVICE, "restart"), (SERVICE, "reload"))


def watch_service() -> ServiceSpec:
    """The watch's command line, shared by the systemd unit and the fallback (and verify)."""
    return ServiceSpec(
        name=SERVICE,
        argv=(f"{VENV}/bin/fleetkit", "watch", "--settings", SETTINGS_PATH),
        unit=f"{SERVICE}.service",
    )


def watch_steps(host: Host, context: RoleContext) -> list[Step]:
    """Everything the watch service needs on the control plane ``host``."""
    settings = context.settings
    secrets = secret_values(context)
    packs = pack_texts(settings)
    service = watch_service()
    steps: list[Step] = [
        WheelhouseStep(
            build_wheelhouse(settings.cache_dir, settings.transfer_mode),
            venv=VENV,
            record=WHEELHOUSE_RECORD,
            notify=_RESTART,
        ),
        DirectoryStep(ETC_DIR, mode=0o755),
        DirectoryStep(SECRETS_DIR, mode=0o700),
        DirectoryStep(STATE_DIR, mode=0o750),
    ]
    steps += [
        FileStep(
            path=secret_path(name),
            content=value + "\n",
            mode=0o600,
            notify=_RESTART,
            secret=True,
        )
        for name, value in secrets.items()
    ]
    steps += [
        FileStep(
            path=f"{PACKS_DIR}/{name}.yaml",
            content=text,
            mode=0o644,
            notify=_RESTART,
            template=source,
        )
        for name, (text, source) in packs.items()
    ]
    steps += [
        FileStep(
            path=f"{INVENTORY_DIR}/hosts.yaml",
            content=inventory_file(host, context),
            mode=0o644,
            notify=_RESTART,
            template="fleetkit-watch-inventory.yaml.j2",
        ),
        FileStep(
            path=SETTINGS_PATH,
            content=settings_file(host, context, sorted(packs), secrets),
            mode=0o600,
            notify=_RESTART,
            secret=True,
            template="fleetkit-watch.yaml.j2",
        ),
        FileStep(
            path=UNIT_PATH,
            content=context.renderer.render(
                "fleetkit-watch.service.j2",
                {"host": host, "exec_start": service.exec_start, "settings": SETTINGS_PATH},
            ),
            mode=0o644,
            notify=_RELOAD,
            systemd_only=True,
            template="fleetkit-watch.service.j2",
        ),
        ServiceStep(service),
    ]
    return steps


def secret_path(name: str) -> str:
    return f"{SECRETS_DIR}/{name}"


def secret_values(context: RoleContext) -> dict[str, str]:
    """Every secret the watch needs, revealed while planning (a missing one: exit 2 now)."""
    settings = context.settings
    values = {"node_token": context.token}
    named: list[tuple[str, Secret | None]] = [
        ("api_key", settings.bacalhau.api_key),
        ("api_password", settings.bacalhau.api_password),
        ("webhook", settings.watch.webhook.secret if settings.watch.webhook else None),
    ]
    s3 = settings.query.s3
    if s3 is not None:
        named += [
            ("s3_access_key_id", s3.access_key_id),
            ("s3_secret_access_key", s3.secret_access_key),
        ]
    for name, secret in named:
        if secret is not None:
            values[name] = secret.reveal().strip()
    return values


def pack_texts(settings: Settings) -> dict[str, tuple[str, str]]:
    """pack name -> (the file's text, its path here): exactly the packs the watch would run."""
    files = resolve_pack_files(
        settings.base_dir, settings.watch.packs, cwd=settings.base_dir, key="watch.packs"
    )
    texts: dict[str, tuple[str, str]] = {}
    for path in files:
        name = pack_name_of(path)
        data = read_regular_file(path, limit=PACK_BYTES, what="pack")
        texts[name] = (data.decode("utf-8", "replace"), str(path))
    return texts


def inventory_file(host: Host, context: RoleContext) -> str:
    """The inventory as the watch reads it: every host's full entry in its first group."""
    inventory = context.inventory
    placed: set[str] = set()
    groups: list[tuple[str, list[tuple[Host, bool]]]] = []
    for group, names in inventory.groups.items():
        if group == ALL or not names:
            continue
        members = []
        for name in names:
            member = inventory.get(name)
            if member is not None:
                members.append((member, name not in placed))
                placed.add(name)
        groups.append((group, members))
    return context.renderer.render(
        "fleetkit-watch-inventory.yaml.j2", {"host": host, "groups": groups}
    )


def settings_file(
    host: Host, context: RoleContext, packs: list[str], secrets: dict[str, str]
) -> str:
    """``fleetkit.yaml`` for the watch on the control plane (secrets by file, never by value)."""
    settings = context.settings
    webhook = settings.watch.webhook
    if webhook is not None:
        remember_secret(webhook.url)  # its path is often a token: never in a diff or a log
    values: dict[str, Any] = {
        "host": host,
        "settings": settings,
        "inventory_dir": INVENTORY_DIR,
        "orchestrator_url": http_url("127.0.0.1", context.api_port(host)),
        "history_path": HISTORY_PATH,
        "status_path": STATUS_PATH,
        "packs": [f"{PACKS_DIR}/{name}.yaml" for name in packs],
        "secret_files": {name: secret_path(name) for name in secrets},
        "webhook": webhook,
        "s3": settings.query.s3,
    }
    return context.renderer.render("fleetkit-watch.yaml.j2", values)
