"""Daemons: a service enabled and running (restarted once when notified), and readiness.

Services are restarted like Ansible handlers: a change to a service's file,
binary or package *notifies* it; its :class:`ServiceStep`, placed after
everything that can notify it, restarts it once. The notification is also
left on the host as a marker in ``/run/fleetkit`` (by the same command that
made the change) so a run that fails between the change and the restart still
restarts next time (the trap described in ansible/ansible#4766).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any

from fleetkit.hostfacts.changes import (
    Change,
    HttpWait,
    RemoteWait,
    StepFailed,
    StepPlan,
    changing,
    unchanged,
)
from fleetkit.hostfacts.facts import Fact, FactView, ServiceLook, SocketLook
from fleetkit.hostfacts.services import MANAGERS, ServiceSpec, manager_named
from fleetkit.hostfacts.steps.base import PlanContext, Step

#: Seconds one readiness look may wait on the host before answering (fewer round trips).
LOOK_SLICE = 2.0


@dataclass(frozen=True)
class ServiceStep(Step):
    """The service enabled and running; restarted once when something notified it.

    ``socket``: a path the running daemon must provide (osqueryd's extensions
    socket). A daemon that runs without it is broken (someone removed the
    socket, or it lost it), so it is restarted rather than waited on.
    """

    spec: ServiceSpec
    socket: str | None = None

    def describe(self) -> str:
        return f"service {self.spec.name}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        service = ServiceLook(self.spec, context.service_manager)
        return (service, SocketLook(self.socket)) if self.socket else (service,)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        name = self.spec.name
        state = facts[ServiceLook(self.spec, context.service_manager)]
        if state.manager not in MANAGERS:
            raise StepFailed(context.host.name, f"could not tell whether {name} runs")
        manager = manager_named(state.manager)
        restart = state.restart_pending or (name, "restart") in context.notified
        if state.running and not restart and self.socket:
            restart = not facts[SocketLook(self.socket)].present
        reload = manager.can_enable and (
            state.reload_pending or (name, "reload") in context.notified
        )
        via = f"({manager.name})"
        if not state.running:
            start = Change(f"start {name}", manager.start_command(self.spec, reload=reload))
            return changing(f"started {name} {via}", f"would start {name} {via}", start)
        if restart:
            command = manager.restart_command(self.spec, reload=reload)
            again = Change(f"restart {name}", command)
            return changing(f"restarted {name} {via}", f"would restart {name} {via}", again)
        if manager.can_enable and not state.enabled:
            enable = Change(f"enable {name}", manager.enable_command(self.spec))
            return changing(f"enabled {name} {via}", f"would enable {name} {via}", enable)
        return unchanged(f"{name} running {via}")


def socket_wait_command(path: str, seconds: float, step: float = 0.1) -> str:
    """Exit 0 as soon as ``path`` is a socket, 1 after about ``seconds`` without one."""
    p = shlex.quote(path)
    tries = max(1, math.ceil(seconds / step))
    return (
        f"i=0; while [ $i -lt {tries} ]; do [ -S {p} ] && exit 0; i=$((i+1)); "
        f"sleep {step:g}; done; [ -S {p} ]"
    )


@dataclass(frozen=True)
class SocketStep(Step):
    """Wait (bounded) until a unix socket exists: osqueryd's extensions socket."""

    path: str
    timeout: float = 30.0
    poll: float = 0.2

    def describe(self) -> str:
        return f"socket {self.path}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (SocketLook(self.path),)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        present = facts[SocketLook(self.path)].present
        if present and not context.changed_before:
            return unchanged("present")
        if context.check:
            return unchanged("present" if present else "absent now (expected once the daemon runs)")
        wait = RemoteWait(
            f"socket {self.path}",
            socket_wait_command(self.path, min(self.timeout, LOOK_SLICE)),
            timeout=self.timeout,
            interval=self.poll,
            failure=f"socket {self.path} did not appear within {self.timeout:g}s "
            "(is osqueryd running? see /var/log/osqueryd.log or /var/log/osquery/)",
        )
        return StepPlan("present", wait=wait)


@dataclass(frozen=True)
class OrchestratorAliveStep(Step):
    """From the admin machine: the orchestrator answers ``/api/v1/agent/alive`` (bounded wait)."""

    url: str
    timeout: float = 60.0
    poll: float = 0.25

    def describe(self) -> str:
        return f"orchestrator alive at {self.url}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return ()

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        endpoint = f"{self.url}/api/v1/agent/alive"
        wait = HttpWait(
            endpoint,
            timeout=self.timeout,
            interval=self.poll,
            failure=f"the orchestrator did not answer {endpoint} within {self.timeout:g}s "
            "({last}); see /var/log/bacalhau.log on the control plane",
        )
        return StepPlan("answered", wait=wait)
