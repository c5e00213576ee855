"""What a ready node looks like (from the settings), and the facts verify reads to see it."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetkit.foundation.settings import Settings
from fleetkit.hostfacts.facts import (
    ClientVersion,
    DockerVersion,
    FileLook,
    Hostname,
    HttpOnHost,
    OsqueryAnswer,
    PackageVersion,
    ServiceLook,
    SocketLook,
)
from fleetkit.hostfacts.identity import metadata_path
from fleetkit.hostfacts.roles.bacalhau import bacalhau_service, named_service
from fleetkit.hostfacts.roles.osquery import PACKAGE, osqueryd_service
from fleetkit.hostfacts.services import ServiceSpec

#: The probe query: any running osqueryd answers it, and its exact output is known.
PROBE_SQL = "SELECT 1 AS ok"
#: Seconds a single probe command may take on a host before it counts as hung.
PROBE_TIMEOUT = 20
#: Bytes of ``system_metadata.yaml`` read (four short keys; more is not Bacalhau's file).
METADATA_LIMIT = 4096


@dataclass(frozen=True)
class Expected:
    """What a ready node looks like, taken from the settings once."""

    osquery_version: str
    socket: str
    socket_dir: str
    flags_file: str
    disabled_tables: frozenset[str]
    bacalhau_version: str
    bacalhau_binary: str
    bacalhau_config: str
    #: Bacalhau's DataDir (its ``system_metadata.yaml`` holds the persisted node name).
    bacalhau_data_dir: str
    api_port: int
    nats_port: int
    container_engine: str
    publisher: str | None
    service_manager: str
    #: The two daemons exactly as provisioning runs them (so both look the same way).
    osqueryd: ServiceSpec
    bacalhau: ServiceSpec
    #: The cluster's node token, compared with the one in each node's config and never shown.
    token: str = field(repr=False)
    #: ``watch.enabled``: the control plane runs the watch service (readiness/watch_check).
    watch: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Expected:
        osq, bac = settings.osquery, settings.bacalhau
        return cls(
            osquery_version=osq.dpkg_version,
            socket=osq.extensions_socket,
            socket_dir=osq.socket_dir,
            flags_file=osq.flags_file,
            disabled_tables=frozenset(osq.disabled_tables),
            bacalhau_version=bac.version,
            bacalhau_binary=bac.install_path,
            bacalhau_config=bac.config_path,
            bacalhau_data_dir=bac.data_dir,
            api_port=bac.api_port,
            nats_port=bac.nats_port,
            container_engine=bac.container_engine,
            publisher="s3" if settings.query.publisher == "s3" else None,
            service_manager=settings.service_manager,
            osqueryd=osqueryd_service(settings),
            bacalhau=bacalhau_service(settings),
            token=bac.node_token.reveal(),
            watch=settings.watch.enabled,
        )

    def agent_url(self, api_port: int) -> str:
        return f"http://127.0.0.1:{api_port}/api/v1/agent/alive"


@dataclass(frozen=True)
class Looks:
    """Every fact verify may read on one host (the checks declare which they need).

    The same fact classes provisioning plans with: verify and provision read
    a package, a file, a service or a socket the same way.
    """

    hostname: Hostname
    osquery_package: PackageVersion
    osqueryd: ServiceLook
    socket: SocketLook
    probe_query: OsqueryAnswer
    flags: FileLook
    bacalhau_binary: ClientVersion
    bacalhau_config: FileLook
    #: The agent's ``system_metadata.yaml`` (the node name it persisted).
    node_metadata: FileLook
    bacalhau: ServiceLook
    agent: HttpOnHost
    docker: DockerVersion

    @classmethod
    def build(cls, expected: Expected, api_port: int, node_name: str | None = None) -> Looks:
        """The looks of one host (``node_name``: its inventory name, in the agent's argv)."""
        manager = expected.service_manager
        return cls(
            hostname=Hostname(),
            osquery_package=PackageVersion(PACKAGE),
            osqueryd=ServiceLook(expected.osqueryd, manager),
            socket=SocketLook(expected.socket),
            probe_query=OsqueryAnswer(expected.socket, PROBE_SQL, PROBE_TIMEOUT),
            flags=FileLook(expected.flags_file),
            bacalhau_binary=ClientVersion(expected.bacalhau_binary, PROBE_TIMEOUT),
            bacalhau_config=FileLook(expected.bacalhau_config),
            node_metadata=FileLook(metadata_path(expected.bacalhau_data_dir), METADATA_LIMIT),
            bacalhau=ServiceLook(named_service(expected.bacalhau, node_name), manager),
            agent=HttpOnHost(expected.agent_url(api_port)),
            docker=DockerVersion(PROBE_TIMEOUT),
        )
