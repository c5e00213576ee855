"""The osquery part of a compute node: package, flags file, daemon, socket."""

from __future__ import annotations

from fleetkit.foundation.inventory import Host
from fleetkit.foundation.settings import Settings
from fleetkit.hostfacts.packages import PackageRef
from fleetkit.hostfacts.roles import RoleContext
from fleetkit.hostfacts.services import ServiceSpec
from fleetkit.hostfacts.steps import (
    ContainerEngineStep,
    DebPackageStep,
    FileStep,
    ServiceStep,
    SocketStep,
    Step,
)

PACKAGE = "osquery"
CONFIG_PATH = "/etc/osquery/osquery.conf"
DAEMON = "/opt/osquery/bin/osqueryd"
#: How long osqueryd may take to create its extensions socket.
SOCKET_TIMEOUT = 30.0


def osqueryd_service(settings: Settings) -> ServiceSpec:
    """The official unit's command line (the package ships the unit; fleetkit writes none)."""
    flags = settings.osquery.flags_file
    return ServiceSpec(
        name="osqueryd",
        argv=(DAEMON, "--flagfile", flags, "--config_path", CONFIG_PATH),
        unit="osqueryd.service",
        ready_socket=settings.osquery.extensions_socket,
    )


def flags_content(host: Host, context: RoleContext) -> str:
    osq = context.settings.osquery
    return context.renderer.render(
        "osquery.flags.j2",
        {
            "host": host,
            "extensions_socket": osq.extensions_socket,
            "disabled_tables": list(osq.disabled_tables),
            "pidfile": "/var/run/osqueryd.pidfile",
            "database_path": f"{osq.socket_dir}/osquery.db",
            "logger_path": "/var/log/osquery",
        },
    )


def compute_steps(host: Host, context: RoleContext) -> list[Step]:
    settings = context.settings
    osq = settings.osquery
    service = osqueryd_service(settings)
    restart = ((service.name, "restart"),)
    steps: list[Step] = []
    if settings.bacalhau.container_engine != "skip":
        steps.append(
            ContainerEngineStep(
                settings.bacalhau.container_engine, settings.bacalhau.container_engine_package
            )
        )
    steps += [
        DebPackageStep(
            package=PACKAGE,
            version=osq.dpkg_version,
            ref=PackageRef("osquery package", "osquery.package", osq.package),
            transfer_mode=settings.transfer_mode,
            notify=restart,
        ),
        FileStep(
            path=osq.flags_file,
            content=flags_content(host, context),
            mode=0o644,
            notify=restart,
            template="osquery.flags.j2",
        ),
        ServiceStep(service, socket=osq.extensions_socket),
        SocketStep(osq.extensions_socket, timeout=SOCKET_TIMEOUT),
    ]
    return steps
