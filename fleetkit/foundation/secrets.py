"""Secrets: where they come from, and keeping them out of every output.

A :class:`Secret` stores where its value lives (an environment variable or a
file), never the value in its repr. Anything that prints text that might hold
a secret (diffs, command lines, errors) passes it through :func:`redact`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.yamlfile import read_regular_file

REDACTED = "<redacted>"
#: A token or key, never more.
MAX_SECRET_BYTES = 64 * 1024

_known_values: set[str] = set()
_known_lock = threading.Lock()


@dataclass(frozen=True)
class Secret:
    """A secret by reference: ``env:NAME`` or ``file:/path``."""

    name: str
    env: str | None = None
    file: str | None = None
    settings_file: str = ""
    _environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def reveal(self) -> str:
        """The value; registered so later output is redacted. Missing = bad input."""
        value: str | None
        if self.env:
            value = self._environ.get(self.env)
            if value is None and self.file:
                value = self._read_file()
        else:
            value = self._read_file()
        if not value:
            raise ConfigError(
                f"secret is empty or missing (expected in {self.describe()})",
                file=self.settings_file,
                key=self.name,
            )
        remember_secret(value)
        return value

    def _read_file(self) -> str | None:
        """The file's text; None when it does not exist. Only a regular file of at most
        :data:`MAX_SECRET_BYTES` is read (a FIFO would hang, a huge file exhaust memory)."""
        if not self.file:
            return None
        path = Path(self.file)
        if not path.exists():
            return None
        try:
            data = read_regular_file(path, limit=MAX_SECRET_BYTES, what="secret file")
            return data.decode("utf-8").strip()
        except ConfigError as exc:
            raise ConfigError(
                f"secret file {self.file}: {exc.detail}", file=self.settings_file, key=self.name
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"secret file {self.file} is not UTF-8 text",
                file=self.settings_file,
                key=self.name,
            ) from None

    def __str__(self) -> str:
        return REDACTED


def remember_secret(value: str) -> None:
    if len(value) >= 4:
        with _known_lock:
            _known_values.add(value)


def redact(text: str) -> str:
    """Replace every secret value revealed so far with ``<redacted>``."""
    with _known_lock:
        values = sorted(_known_values, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text
