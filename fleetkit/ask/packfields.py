"""The pack fields with a little grammar: ``interval``, ``platform`` and names.

Shared by the pack loader (strict: a bad value is a :class:`ConfigError`) and
the osquery pack import (lenient: it reads osquery's spellings and reports
what it changed), so both agree on what an interval or a platform is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from fleetkit.foundation.inventory import NAME_RE
from fleetkit.foundation.status import ConfigError

#: Below this a scheduled pack would mostly measure the orchestrator: refused at load.
INTERVAL_FLOOR = 10
#: Above this a typo (``1000d``) is more likely than a real schedule.
INTERVAL_CEILING = 30 * 86400
#: What a pack without ``interval`` runs at when scheduled (policy packs of old had none).
DEFAULT_INTERVAL = 3600

_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
#: NAME_RE's longest name.
MAX_NAME_CHARS = 63

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_INTERVAL_RE = re.compile(r"^(?:(\d{1,7})d)?(?:(\d{1,7})h)?(?:(\d{1,7})m)?(?:(\d{1,7})s)?$")

#: Platform names a pack may give (osquery's spellings); ``all`` is read as ``any``.
PLATFORMS = ("any", "darwin", "freebsd", "linux", "posix", "windows")
_PLATFORM_SYNONYMS = {"all": "any"}
#: What ``posix`` covers (osquery: every non-Windows build).
POSIX_PLATFORMS = frozenset({"darwin", "freebsd", "linux"})


def parse_interval(value: object, *, file: str, key: str) -> int:
    """``1h``, ``15m``, ``30s``, ``1d``, ``1h30m`` -> seconds, within the floor and the ceiling.

    A bare number is refused rather than guessed: osquery counts seconds, cron
    users think in minutes, and a pack that runs 60 times too often is a bad surprise.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(
            f"give the unit: '{value}s' or '{value}m' (got the bare number {value})",
            file=file,
            key=key,
        )
    match = _INTERVAL_RE.match(value.strip()) if isinstance(value, str) else None
    if match is None or not str(value).strip():
        raise ConfigError(
            f"expected a duration like 1h, 15m, 30s or 1h30m, got {value!r}", file=file, key=key
        )
    seconds = sum(int(n) * size for n, (_u, size) in zip(match.groups(), _UNITS, strict=True) if n)
    check_interval_bounds(seconds, file=file, key=key)
    return seconds


def check_interval_bounds(seconds: int, *, file: str, key: str) -> None:
    if seconds < INTERVAL_FLOOR:
        raise ConfigError(
            f"interval {format_interval(seconds)} is below the floor of "
            f"{format_interval(INTERVAL_FLOOR)}",
            file=file,
            key=key,
        )
    if seconds > INTERVAL_CEILING:
        raise ConfigError(
            f"interval {format_interval(seconds)} is above the ceiling of "
            f"{format_interval(INTERVAL_CEILING)}",
            file=file,
            key=key,
        )


def format_interval(seconds: int) -> str:
    """Seconds as the pack format writes them: ``3600`` -> ``1h``, ``5400`` -> ``1h30m``."""
    if seconds <= 0:
        return f"{seconds}s"
    parts: list[str] = []
    rest = seconds
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def split_platforms(value: str) -> list[str]:
    """osquery's comma list, spaces and case forgiven: ``"Linux, darwin"`` -> [linux, darwin]."""
    return [part.strip().lower() for part in value.split(",") if part.strip()]


def normalize_platform(name: str) -> str | None:
    """The canonical platform name, or None when it is not one."""
    name = _PLATFORM_SYNONYMS.get(name, name)
    return name if name in PLATFORMS else None


def parse_platform(value: object, *, file: str, key: str) -> tuple[str, ...]:
    """A pack's ``platform``: a name or comma list -> sorted unique names; unknown is refused."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"expected a platform name or comma list ({', '.join(PLATFORMS)}), got {value!r}",
            file=file,
            key=key,
        )
    names: set[str] = set()
    for raw in split_platforms(value):
        name = normalize_platform(raw)
        if name is None:
            raise ConfigError(
                f"unknown platform {raw!r} (allowed: {', '.join(PLATFORMS)})", file=file, key=key
            )
        names.add(name)
    return ("any",) if "any" in names else tuple(sorted(names))


def platforms_include(platforms: Iterable[str], target: str) -> bool:
    """True when a pack or query for ``platforms`` runs on a node of ``target``."""
    names = set(platforms)
    return (
        not names
        or "any" in names
        or target in names
        or ("posix" in names and target in POSIX_PLATFORMS)
    )


def valid_name(raw: str, *, fallback: str = "query") -> str:
    """``raw`` made a valid pack or query name (the inventory's rule): runs of other
    characters become ``_``, a leading ``_ . -`` goes, the length is cut."""
    if NAME_RE.match(raw):
        return raw
    name = _NOT_NAME_CHARS.sub("_", raw).lstrip("_.-")[:MAX_NAME_CHARS]
    return name if NAME_RE.match(name) else fallback


def unique_name(base: str, used: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``... (cut to stay valid), whichever is free."""
    if base not in used:
        return base
    number = 2
    while True:
        suffix = f"_{number}"
        candidate = base[: MAX_NAME_CHARS - len(suffix)] + suffix
        if candidate not in used:
            return candidate
        number += 1


# --------------------------------------------------------------------------- readers
# Strict readers of one key of a parsed mapping; errors name the file and the key.


def read_name(data: dict[str, Any], field: str, *, file: str, key: str, what: str) -> str:
    """A pack, policy or query name: the inventory's rule (letters, digits, ``. _ -``)."""
    name = read_text(data, field, file=file, key=key)
    if not NAME_RE.match(name):
        raise ConfigError(f"invalid {what} name {name!r}", file=file, key=key)
    return name


def read_choice(
    entry: dict[str, Any], name: str, choices: Sequence[str], *, file: str, where: str
) -> str:
    value = read_text(entry, name, file=file, key=f"{where}.{name}")
    if value not in choices:
        raise ConfigError(
            f"must be one of {', '.join(choices)}, got {value!r}", file=file, key=f"{where}.{name}"
        )
    return value


def read_text(data: dict[str, Any], name: str, *, file: str, key: str) -> str:
    value = data.get(name)
    if value is None:
        raise ConfigError("required", file=file, key=key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty string, got {value!r}", file=file, key=key)
    return value


def read_optional_text(data: dict[str, Any], name: str, *, file: str, where: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {value!r}", file=file, key=f"{where}.{name}")
    return value
