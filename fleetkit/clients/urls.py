"""The one place that turns a host address and a port into a URL.

IPv6 literals need brackets in URLs (``http://[fd00::1]:1234``) and in
Bacalhau's NATS addresses; writing that rule once keeps the orchestrator URL
the client uses, the one provisioning waits for and the NATS address written
into every compute node's config in step.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from fleetkit.foundation.inventory import Inventory
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import ConfigError


def host_for_url(address: str) -> str:
    """``address`` as the host part of a URL: IPv6 literals in brackets."""
    if ":" in address and not address.startswith("["):
        return f"[{address}]"
    return address


def http_url(address: str, port: int) -> str:
    return f"http://{host_for_url(address)}:{port}"


def nats_url(address: str, port: int) -> str:
    return f"nats://{host_for_url(address)}:{port}"


def without_userinfo(url: str) -> str:
    """``url`` as messages may show it: never credentials embedded in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def orchestrator_url(settings: Settings, inventory: Callable[[], Inventory]) -> str:
    """The orchestrator API as seen from the admin machine.

    ``bacalhau.orchestrator_url`` (or ``FLEETKIT_ORCHESTRATOR_URL``, applied by
    the settings loader) when set, else ``http://<control plane address>:<its
    API port>``. ``inventory`` is only called in the second case: settings that
    name the orchestrator need no inventory.
    """
    if settings.bacalhau.orchestrator_url:
        return settings.bacalhau.orchestrator_url
    host = inventory().control_plane
    if host is None:
        raise ConfigError(
            "no orchestrator: set bacalhau.orchestrator_url or put one host in the "
            "control_plane group",
            file=settings.path,
            key="bacalhau.orchestrator_url",
        )
    return http_url(host.address, host.bacalhau_api_port or settings.bacalhau.api_port)
