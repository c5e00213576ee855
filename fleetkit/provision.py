"""Placeholder: being built (see the issue list). Not a working command yet."""

from __future__ import annotations

from typing import Any

from fleetkit.runtime import Runtime
from fleetkit.status import ExitStatus, FleetkitError


def run(rt: Runtime, **options: Any) -> ExitStatus:
    raise FleetkitError("'provision' is not implemented yet")
