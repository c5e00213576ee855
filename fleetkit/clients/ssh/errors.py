"""What can go wrong with SSH, as types callers can tell apart."""

from __future__ import annotations

from enum import StrEnum

import paramiko

from fleetkit.foundation.status import HostError


class SSHError(HostError):
    """The host could not be reached, authenticated or commanded."""


class KeyProblem(StrEnum):
    """Why a host key was refused (what ``verify`` and ``onboard`` word differently)."""

    NOT_PINNED = "not pinned"
    #: A different key of the same type is pinned.
    CHANGED = "changed"
    #: Only keys of other types are pinned for this host.
    OTHER_TYPE = "other type"
    #: A ``@revoked`` line names this key.
    REVOKED = "revoked"


class HostKeyError(SSHError):
    """The host's key is not pinned, differs from the pinned one, or is revoked."""

    def __init__(
        self,
        host: str,
        message: str,
        *,
        offered: paramiko.PKey | None = None,
        problem: KeyProblem = KeyProblem.NOT_PINNED,
    ) -> None:
        super().__init__(host, message)
        self.offered = offered
        self.problem = problem


class CommandTimeout(SSHError):
    pass
