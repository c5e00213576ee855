"""The one place that turns a host address and a port into a URL.

IPv6 literals need brackets in URLs (``http://[fd00::1]:1234``) and in
Bacalhau's NATS addresses; writing that rule once keeps the orchestrator URL
the client uses, the one provisioning waits for and the NATS address written
into every compute node's config in step.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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
