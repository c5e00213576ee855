"""Typed, validated access to the settings file's mappings (see :mod:`.settings`).

Every string that reaches a file on the hosts is checked against a whole-string
pattern of :mod:`fleetkit.foundation.validate`; every error names the file and
the key and quotes a bounded excerpt of the value.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetkit.foundation.iocfile import validate_path
from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.validate import (
    DURATION,
    ENV_NAME,
    HOST_PATH,
    TABLE,
    excerpt,
    has_control_characters,
    matches,
    valid_http_url,
)
from fleetkit.foundation.yamlfile import expect_mapping, reject_unknown_keys

#: Local paths (on the admin machine): bounded, no control characters.
MAX_LOCAL_PATH = 4096


class Reader:
    """Typed access to one mapping of the settings file, with errors naming the key."""

    def __init__(self, data: Any, *, file: str, key: str, allowed: set[str]) -> None:
        self.file = file
        self.key = key
        self.data = expect_mapping(data, file=file, key=key or "(top level)")
        reject_unknown_keys(self.data, allowed, file=file, key=key)

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def err(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=self._k(name))

    def child(self, name: str, allowed: set[str]) -> Reader:
        return Reader(self.data.get(name), file=self.file, key=self._k(name), allowed=allowed)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def text(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise self.err(name, "required")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise self.err(name, f"expected a non-empty string, got {excerpt(value)}")
        if choices and value not in choices:
            raise self.err(name, f"must be one of {', '.join(choices)}, got {excerpt(value)}")
        return value

    def matching(self, name: str, default: str | None, pattern: re.Pattern[str], what: str) -> str:
        """A string that must match ``pattern`` as a whole (it reaches files on hosts)."""
        value = self.text(name, default)
        if not matches(pattern, value):
            raise self.err(name, f"expected {what}, got {excerpt(value)}")
        return value

    def host_path(self, name: str, default: str) -> str:
        """An absolute path on the hosts (written into units, flags and configs)."""
        return self.matching(
            name,
            default,
            HOST_PATH,
            "an absolute path of letters, digits and _ . + @ = , : / - (no spaces, quotes, $ or %)",
        )

    def opt_str(self, name: str) -> str | None:
        return self.text(name) if self.has(name) else None

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.data.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= minimum
        ):
            raise self.err(name, f"expected a number > {minimum:g}, got {excerpt(value)}")
        return float(value)

    def integer(self, name: str, default: int, *, low: int = 1, high: int = 65535) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.err(name, f"expected an integer {low}-{high}, got {excerpt(value)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.err(name, f"expected true or false, got {excerpt(value)}")
        return value

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.data.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.err(name, "expected a list of strings")
        return tuple(value)

    def path(self, name: str, base: Path, default: str | None = None) -> str:
        """A local path (on this machine), resolved against the settings' directory."""
        value = self.text(name, default)
        return local_path(value, base, self.err(name, f"expected a path, got {excerpt(value)}"))


def local_path(value: str, base: Path, error: ConfigError) -> str:
    if len(value) > MAX_LOCAL_PATH or has_control_characters(value):
        raise error
    try:
        return str((base / Path(value).expanduser()).resolve())
    except (OSError, RuntimeError, ValueError):
        raise error from None


def osquery_names(r: Reader, name: str, default: tuple[str, ...], what: str) -> tuple[str, ...]:
    """osquery table or column names: lowercase, as osquery declares them."""
    names = r.str_list(name, default)
    for item in names:
        if not matches(TABLE, item):
            raise r.err(
                name,
                f"invalid {what} name {excerpt(item)} (osquery names: lowercase letters, "
                "digits and '_', at most 64)",
            )
    return names


def duration(r: Reader, name: str, default: str) -> str:
    return r.matching(name, default, DURATION, "a duration like 15s, 1m or 500ms")


def hunt_scope(top: Reader) -> tuple[str, ...] | None:
    r = top.child("hunt", {"scope"})
    if not r.has("scope"):
        return None
    scope = r.str_list("scope", ())
    if not scope:
        raise r.err("scope", "expected at least one directory glob")
    for glob in scope:
        try:
            validate_path(glob, where="scope")
        except ConfigError as exc:
            raise r.err("scope", exc.detail) from None
    return scope


def endpoint(s: Reader) -> str | None:
    if not s.has("endpoint"):
        return None
    url = s.text("endpoint")
    if not valid_http_url(url):
        raise s.err("endpoint", f"expected http(s)://host[:port], got {excerpt(url)}")
    return url


def admin_networks(top: Reader) -> tuple[str, ...]:
    """CIDRs or addresses (they end up in nftables rulesets on the hosts)."""
    networks = top.str_list("admin_networks", ())
    for value in networks:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise top.err(
                "admin_networks", f"invalid network {excerpt(value)} (expected an address or CIDR)"
            ) from None
    return networks


def secret(r: Reader, name: str, base: Path, environ: Mapping[str, str]) -> Secret | None:
    """The secret named ``name`` (``{env: NAME}`` or ``{file: PATH}``); None when absent."""
    if not r.has(name):
        return None
    s = r.child(name, {"env", "file"})
    env = (
        s.matching("env", None, ENV_NAME, "an environment variable name") if s.has("env") else None
    )
    file = s.path("file", base) if s.has("file") else None
    if not env and not file:
        raise r.err(name, "a secret needs 'env' (variable name) or 'file' (path)")
    return Secret(name=r._k(name), env=env, file=file, settings_file=r.file, _environ=environ)
