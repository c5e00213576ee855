"""The orchestrator client for one command run, built from settings, inventory and the
environment (the clients layer never reaches up into the Runtime, which only calls this)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import requests

from fleetkit.clients.bacalhau.client import ORCHESTRATOR_LIMITS, BacalhauClient
from fleetkit.clients.http import Limits
from fleetkit.clients.urls import orchestrator_url
from fleetkit.foundation.inventory import Inventory
from fleetkit.foundation.secrets import remember_secret
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import ConfigError


def orchestrator_client(
    settings: Settings,
    inventory: Callable[[], Inventory],
    environ: Mapping[str, str],
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    limits: Limits = ORCHESTRATOR_LIMITS,
) -> BacalhauClient:
    """The client for the configured orchestrator, credentials resolved.

    URL: :func:`fleetkit.clients.urls.orchestrator_url` (``inventory`` is read
    only when the settings do not name the orchestrator). Credentials: the
    settings' secrets, else ``BACALHAU_API_KEY`` / ``BACALHAU_API_USERNAME`` +
    ``BACALHAU_API_PASSWORD`` in ``environ`` (the variables the bacalhau CLI reads).
    """
    bacalhau = settings.bacalhau
    api_key = bacalhau.api_key.reveal() if bacalhau.api_key else None
    username = bacalhau.api_username
    password = bacalhau.api_password.reveal() if bacalhau.api_password else None
    if not api_key and not (username and password):
        api_key = environ.get("BACALHAU_API_KEY") or None
        username = username or environ.get("BACALHAU_API_USERNAME") or None
        password = password or environ.get("BACALHAU_API_PASSWORD") or None
    if username and not password and not api_key:
        raise ConfigError(
            "bacalhau.api_username is set but no password (bacalhau.api_password or "
            "BACALHAU_API_PASSWORD)",
            file=settings.path,
            key="bacalhau.api_password",
        )
    for secret in (api_key, password):
        if secret:
            # Values taken from the environment are secrets too: keep them
            # out of every later message.
            remember_secret(secret)
    return BacalhauClient(
        orchestrator_url(settings, inventory),
        session=session,
        api_key=api_key,
        username=username,
        password=password,
        sleep=sleep,
        timeout=limits.timeout,
        deadline=limits.deadline,
        max_bytes=limits.max_bytes,
    )
