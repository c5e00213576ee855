"""What every step is: the facts it reads, and a pure plan from those facts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from fleetkit.foundation.inventory import Host
from fleetkit.hostfacts.changes import Notification, StepPlan
from fleetkit.hostfacts.facts import Fact, FactView, ManagerLook
from fleetkit.hostfacts.packages import PackageStore
from fleetkit.hostfacts.services import ServiceManager, manager_named


@dataclass
class PlanContext:
    """What a step plans with besides facts: the host, the run's settings, earlier steps."""

    host: Host
    #: Verified packages (push mode); None when the plan needs none.
    packages: PackageStore | None = None
    settings_file: str = "fleetkit.yaml"
    check: bool = False
    #: auto | systemd | start-stop-daemon (settings.service_manager)
    service_manager: str = "auto"
    #: Services notified by the steps planned so far in this run.
    notified: set[Notification] = field(default_factory=set)
    #: Whether a step planned so far changes something (readiness waits then look again).
    changed_before: bool = False

    def note(self, plan: StepPlan) -> None:
        """Remember a planned step: its notifications, and that it changes something."""
        self.notified.update(plan.notify)
        self.changed_before = self.changed_before or bool(plan.changes)

    def manager_looks(self) -> tuple[Fact[Any], ...]:
        """The fact needed to know the host's service manager (none when the settings force it)."""
        return (ManagerLook(),) if self.service_manager == "auto" else ()

    def manager(self, facts: FactView) -> ServiceManager:
        if self.service_manager == "auto":
            return manager_named(facts[ManagerLook()])
        return manager_named(self.service_manager)

    def packages_store(self) -> PackageStore:
        if self.packages is None:
            raise RuntimeError("push mode needs the verified packages (PlanContext.packages)")
        return self.packages


class Step(ABC):
    """One idempotent piece of a host's desired state, as data.

    A step never touches a host itself: it names the facts it reads
    (:meth:`looks`) and turns them into a :class:`StepPlan` (:meth:`plan`,
    pure), which the executor runs, batches, or in check mode only reports.
    """

    @abstractmethod
    def describe(self) -> str:
        """A short line for plans and recaps (``file /etc/osquery/osquery.flags``)."""

    @abstractmethod
    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        """The facts :meth:`plan` reads."""

    @abstractmethod
    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        """The changes that bring the host to this step's state (none when it is there)."""
