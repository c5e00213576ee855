"""Exit statuses and the error types that map onto them.

One meaning everywhere (DESIGN.md): every command ends through
:func:`exit_status_for`, so no other module decides an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    SUCCESS = 0
    #: Some hosts or nodes failed or were unreachable, or the run could not
    #: finish (orchestrator down); whatever was obtained is still delivered.
    FAILURE = 1
    #: Bad input or configuration: nothing was touched.
    BAD_INPUT = 2
    #: policy: at least one policy FAILED; hunt: at least one indicator found.
    FINDINGS = 3
    INTERRUPTED = 130


class FleetkitError(Exception):
    """Base of every error a user may see; ``str()`` is the whole message."""

    exit_status: ExitStatus = ExitStatus.FAILURE


class ConfigError(FleetkitError):
    """Bad input: names the file, the key and what is wrong."""

    exit_status = ExitStatus.BAD_INPUT

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.detail = message
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class UsageError(ConfigError):
    """Bad command-line input (an option, an argument, a selector)."""


class HostError(FleetkitError):
    """A failure that belongs to one host; the others go on."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.detail = message
        super().__init__(f"{host}: {message}")


class Interrupted(FleetkitError):
    exit_status = ExitStatus.INTERRUPTED


def exit_status_for(error: BaseException) -> ExitStatus:
    """The single place that maps an exception to an exit status."""
    if isinstance(error, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(error, FleetkitError):
        return error.exit_status
    return ExitStatus.FAILURE
