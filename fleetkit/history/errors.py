"""Errors of the history layer, mapped to exit codes by ``foundation.status``.

Everything a user can cause (a corrupt, locked or unwritable history file, an
unknown run id, two runs of different questions given to diff) is bad input:
exit 2, raised before anything is submitted to the fleet.
"""

from __future__ import annotations

from fleetkit.foundation.status import ConfigError, UsageError


class HistoryError(ConfigError):
    """The history store cannot be used; names the file (or bucket) and why."""


class NoHistoryError(HistoryError):
    """Opened for reading, and the file does not exist: nothing was recorded yet.

    Still exit 2 for ``show``/``diff``; ``report`` may catch it and say so (exit 0).
    """


class UnknownRunError(UsageError):
    """A run id that is not in the history (or a prefix matching several)."""


class DiffMismatchError(UsageError):
    """diff was given two runs that asked different questions."""
