"""Facts: each a shell command that looks at a host plus a pure parser of its output.

Provisioning's steps and verify's checks read the same facts (one class per
kind of look), so the two never disagree about a host.
"""

from fleetkit.hostfacts.facts.base import Fact, FactView, MissingFact, Raw, unique
from fleetkit.hostfacts.facts.daemons import (
    Hostname,
    HttpAnswer,
    HttpOnHost,
    ManagerLook,
    ServiceLook,
)
from fleetkit.hostfacts.facts.files import (
    FILE_LIMIT,
    DirectoryLook,
    DirectoryState,
    FileLook,
    FileState,
    Metadata,
    PathExists,
    SocketLook,
    SocketState,
)
from fleetkit.hostfacts.facts.software import (
    BinaryLook,
    BinaryState,
    ClientVersion,
    CommandExists,
    DockerVersion,
    OsqueryAnswer,
    PackageState,
    PackageVersion,
    VersionAnswer,
    parse_client_version,
)

__all__ = [
    "FILE_LIMIT",
    "BinaryLook",
    "BinaryState",
    "ClientVersion",
    "CommandExists",
    "DirectoryLook",
    "DirectoryState",
    "DockerVersion",
    "Fact",
    "FactView",
    "FileLook",
    "FileState",
    "Hostname",
    "HttpAnswer",
    "HttpOnHost",
    "ManagerLook",
    "Metadata",
    "MissingFact",
    "OsqueryAnswer",
    "PackageState",
    "PackageVersion",
    "PathExists",
    "Raw",
    "ServiceLook",
    "SocketLook",
    "SocketState",
    "VersionAnswer",
    "parse_client_version",
    "unique",
]
