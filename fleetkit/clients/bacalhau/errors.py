"""What a failed call to the orchestrator raises."""

from __future__ import annotations

from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import FleetkitError


class OrchestratorError(FleetkitError):
    """The orchestrator refused or failed a request; ``str()`` says what, where and why."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.hint = hint
        super().__init__(redact(message))


class OrchestratorUnavailable(OrchestratorError):
    """No complete answer: connection refused, unknown host name, a timeout or the deadline."""
