"""Steps: the idempotent pieces a host's plan is made of.

A plan is data (pyinfra's idea): an ordered list of frozen dataclasses that
can be printed and compared without a host. Each step names the facts it
reads and turns them into changes (:mod:`fleetkit.hostfacts.changes`) with a
pure function; :mod:`fleetkit.hostfacts.executor` reads all facts of a host
in one probe, runs the changes in as few round trips as it can, or in check
mode only reports them.
"""

from fleetkit.hostfacts.changes import StepFailed, StepPlan, StepResult
from fleetkit.hostfacts.steps.base import PlanContext, Step
from fleetkit.hostfacts.steps.daemons import (
    OrchestratorAliveStep,
    ServiceStep,
    SocketStep,
    socket_wait_command,
)
from fleetkit.hostfacts.steps.files import (
    AbsentFileStep,
    DirectoryStep,
    FileStep,
    atomic_write_command,
    mask_secret_lines,
    unified_diff,
)
from fleetkit.hostfacts.steps.software import (
    STATE_DIR,
    ContainerEngineStep,
    DebPackageStep,
    TarballBinaryStep,
)

__all__ = [
    "STATE_DIR",
    "AbsentFileStep",
    "ContainerEngineStep",
    "DebPackageStep",
    "DirectoryStep",
    "FileStep",
    "OrchestratorAliveStep",
    "PlanContext",
    "ServiceStep",
    "SocketStep",
    "Step",
    "StepFailed",
    "StepPlan",
    "StepResult",
    "TarballBinaryStep",
    "atomic_write_command",
    "mask_secret_lines",
    "socket_wait_command",
    "unified_diff",
]
