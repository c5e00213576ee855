"""What one command run works with: environment, settings, inventory, SSH, the orchestrator.

Built once per command by the CLI layer; everything is loaded lazily and
validated on first use, before any host is contacted. Tests build a
``Runtime`` around a fake :class:`Environment` and the lab's settings file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import requests

from fleetkit.clients.bacalhau import ORCHESTRATOR_LIMITS, BacalhauClient, orchestrator_client
from fleetkit.clients.http import Limits
from fleetkit.clients.ssh import Connector, KnownHosts
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Inventory, load_inventory
from fleetkit.foundation.settings import Settings, load_settings


@dataclass
class Runtime:
    env: Environment = field(default_factory=Environment)
    #: Path to fleetkit.yaml; None = $FLEETKIT_SETTINGS or ./fleetkit.yaml.
    settings_path: str | None = None
    #: Makes the HTTP sessions of this run: the orchestrator client's and
    #: package downloads' (tests inject sessions with their own adapters).
    http_session_factory: Callable[[], requests.Session] = requests.Session
    #: Per-request limits of the orchestrator client (tests shorten the deadline).
    orchestrator_limits: Limits = field(default_factory=lambda: ORCHESTRATOR_LIMITS)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.env.environ, self.env.cwd, self.settings_path)

    @cached_property
    def inventory(self) -> Inventory:
        return load_inventory(self.settings.inventory_dir)

    @cached_property
    def known_hosts(self) -> KnownHosts:
        known = KnownHosts(self.settings.ssh.known_hosts)
        for warning in known.warnings:
            self.env.say(f"warning: {warning}")
        return known

    @cached_property
    def connector(self) -> Connector:
        return Connector(self.settings.ssh, self.known_hosts)

    @cached_property
    def orchestrator(self) -> BacalhauClient:
        """The orchestrator's REST client for this run (one session, pooled connections).

        Built from settings, inventory and the environment by
        :func:`~fleetkit.clients.bacalhau.orchestrator_client`; raises
        ConfigError (exit 2) when no orchestrator is configured.
        """
        return orchestrator_client(
            self.settings,
            lambda: self.inventory,
            self.env.environ,
            session=self.http_session_factory(),
            sleep=self.env.sleep,
            limits=self.orchestrator_limits,
        )

    def reload_inventory(self) -> Inventory:
        """Read the inventory again (after onboarding or quarantine wrote a file)."""
        self.__dict__.pop("inventory", None)
        return self.inventory

    def load(self) -> None:
        """Validate settings and inventory now (before anything is contacted)."""
        _ = self.settings, self.inventory
