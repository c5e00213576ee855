"""Roles: what a host of each group must look like, as an ordered plan of steps.

``plan_for(host, context)`` renders every file the host needs (so a template
mistake is found before any host is contacted) and returns a
:class:`HostPlan`: plain data that prints and compares without a host.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fleetkit.clients.urls import nats_url, orchestrator_url
from fleetkit.foundation.inventory import Host, Inventory
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import ConfigError
from fleetkit.hostfacts.packages import PackageRef
from fleetkit.hostfacts.steps import DebPackageStep, Step, TarballBinaryStep


@dataclass(frozen=True)
class HostPlan:
    host: Host
    steps: tuple[Step, ...]

    @property
    def packages(self) -> list[PackageRef]:
        return [s.ref for s in self.steps if isinstance(s, TarballBinaryStep | DebPackageStep)]

    def describe(self) -> list[str]:
        return [step.describe() for step in self.steps]


@dataclass
class RoleContext:
    """Everything roles read: settings, inventory, templates, and the revealed secrets."""

    settings: Settings
    inventory: Inventory
    renderer: Renderer

    @cached_property
    def token(self) -> str:
        """Revealed once, while planning: a missing token is bad input found before any host."""
        return self.settings.bacalhau.node_token.reveal()

    @cached_property
    def control_plane(self) -> Host:
        host = self.inventory.control_plane
        if host is None:
            compute = self.inventory.compute
            raise ConfigError(
                "no host in group control_plane: compute nodes need the orchestrator's address",
                file=compute[0].source if compute else self.inventory.directory,
                key="control_plane",
            )
        return host

    def api_port(self, host: Host) -> int:
        return host.bacalhau_api_port or self.settings.bacalhau.api_port

    @cached_property
    def orchestrator_url(self) -> str:
        return orchestrator_url(self.settings, lambda: self.inventory)

    @cached_property
    def nats_url(self) -> str:
        cp = self.control_plane
        return nats_url(cp.address, self.settings.bacalhau.nats_port)


def plan_for(host: Host, context: RoleContext) -> HostPlan:
    """The ordered steps that bring ``host`` to its role's desired state."""
    from fleetkit.hostfacts.roles import bacalhau, osquery, watch

    if host.is_control_plane:
        steps = bacalhau.orchestrator_steps(host, context)
        if context.settings.watch.enabled:  # after the orchestrator answers: the watch asks it
            steps += watch.watch_steps(host, context)
    elif host.is_compute:
        steps = [*osquery.compute_steps(host, context), *bacalhau.compute_steps(host, context)]
    else:
        steps = []
    return HostPlan(host, tuple(steps))
