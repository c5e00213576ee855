"""Reading the watch's status file strictly (see :mod:`.state` for its format).

``invoke verify`` reads the file from the control plane, where it is hostile
input like any byte from a host: bounded (1 MiB), strict JSON (no duplicate
keys, no NaN), every key required and none unknown, every value typed and
bounded; every error is a :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetkit.foundation.inventory import NAME_RE
from fleetkit.foundation.status import ConfigError
from fleetkit.watch.notify import Counters
from fleetkit.watch.state import (
    MAX_ERROR_CHARS,
    MAX_PACKS,
    MAX_STATUS_BYTES,
    OUTCOMES,
    STATES,
    STATUS_FORMAT,
    STOP_REASONS,
    PackStatus,
    WatchStatus,
    parse_time,
)

_TIME_RE = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_RUN_ID_RE = re.compile(r"\A[A-Za-z0-9._:-]{1,80}\Z")

_TOP_KEYS = {
    "format",
    "pid",
    "state",
    "stop_reason",
    "started_at",
    "updated_at",
    "heartbeat_seconds",
    "packs",
    "notifications",
}


def load_status(path: str | Path) -> WatchStatus | None:
    """The status file, or None when there is none (a watch that never ran)."""
    target = Path(path)
    try:
        with target.open("rb") as handle:
            data = handle.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the watch status: {exc.strerror}", file=str(path)) from None
    return parse_status(data, file=str(path))


def parse_status(data: bytes, *, file: str) -> WatchStatus:
    """Strictly read a status file's bytes; every problem names the file and the key."""
    if len(data) > MAX_STATUS_BYTES:
        raise ConfigError(f"larger than {MAX_STATUS_BYTES} bytes", file=file)
    try:
        raw = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"not a watch status file: {str(exc)[:200]}", file=file) from None
    r = _Fields(raw, file=file, key="", allowed=_TOP_KEYS)
    if r.get("format", str) != STATUS_FORMAT:
        raise r.err("format", f"expected {STATUS_FORMAT!r}")
    packs_raw = r.get("packs", dict)
    if len(packs_raw) > MAX_PACKS:
        raise r.err("packs", f"more than {MAX_PACKS} packs")
    packs = {}
    for name in packs_raw:
        if not NAME_RE.fullmatch(name):
            raise r.err("packs", f"invalid pack name {name[:80]!r}")
        packs[name] = _pack_status(r.child("packs", name, set(PackStatus.__dataclass_fields__)))
    counters = r.child("notifications", None, set(Counters.__dataclass_fields__))
    return WatchStatus(
        pid=r.count("pid", low=1),
        state=r.choice("state", STATES),
        stop_reason=r.optional_choice("stop_reason", STOP_REASONS),
        started_at=r.time("started_at"),
        updated_at=r.time("updated_at"),
        heartbeat_seconds=r.number("heartbeat_seconds"),
        packs=packs,
        notifications=Counters(**{name: counters.count(name) for name in counters.allowed}),
    )


def _pack_status(p: _Fields) -> PackStatus:
    return PackStatus(
        interval=p.number("interval"),
        runs=p.count("runs"),
        failed_runs=p.count("failed_runs"),
        last_run_id=p.optional_run_id("last_run_id"),
        last_started_at=p.optional_time("last_started_at"),
        last_finished_at=p.optional_time("last_finished_at"),
        last_outcome=p.optional_choice("last_outcome", OUTCOMES),
        last_error=p.optional_text("last_error"),
        last_completed_at=p.optional_time("last_completed_at"),
        next_due_at=p.optional_time("next_due_at"),
        notified_run_id=p.optional_run_id("notified_run_id"),
        notified_started_at=p.optional_time("notified_started_at"),
    )


class _Fields:
    """Typed access to one JSON object of the status file; every key is required."""

    def __init__(self, value: Any, *, file: str, key: str, allowed: set[str]) -> None:
        self.file, self.key, self.allowed = file, key, allowed
        if not isinstance(value, dict):
            raise ConfigError("expected an object", file=file, key=key or "(top level)")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ConfigError("unknown key", file=file, key=self._k(unknown[0][:80]))
        missing = sorted(allowed - set(value))
        if missing:
            raise ConfigError("missing", file=file, key=self._k(missing[0]))
        self.data: dict[str, Any] = value

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def err(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=self._k(name))

    def child(self, name: str, sub: str | None, allowed: set[str]) -> _Fields:
        value = self.data[name] if sub is None else self.data[name][sub]
        key = self._k(name) if sub is None else f"{self._k(name)}.{sub}"
        return _Fields(value, file=self.file, key=key, allowed=allowed)

    def get(self, name: str, kind: type) -> Any:
        value = self.data[name]
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            raise self.err(name, f"expected {kind.__name__}")
        return value

    def count(self, name: str, *, low: int = 0) -> int:
        value = self.get(name, int)
        if not low <= value <= 2**53:
            raise self.err(name, f"expected a count >= {low}")
        return int(value)

    def number(self, name: str) -> float:
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
            raise self.err(name, "expected a positive number of seconds")
        return float(value)

    def _optional(self, name: str, check: Callable[[str], bool], what: str) -> str | None:
        value = self.data[name]
        if value is None:
            return None
        if not isinstance(value, str) or not check(value):
            raise self.err(name, f"expected {what} or null")
        return value

    def time(self, name: str) -> str:
        value = self._optional(name, _valid_time, "a UTC time like 2025-01-01T10:00:00.000000Z")
        if value is None:
            raise self.err(name, "required")
        return value

    def optional_time(self, name: str) -> str | None:
        return self._optional(name, _valid_time, "a UTC time like 2025-01-01T10:00:00.000000Z")

    def optional_run_id(self, name: str) -> str | None:
        return self._optional(name, lambda v: bool(_RUN_ID_RE.match(v)), "a run id")

    def optional_text(self, name: str) -> str | None:
        return self._optional(name, lambda v: len(v) <= MAX_ERROR_CHARS, "a short text")

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.optional_choice(name, choices)
        if value is None:
            raise self.err(name, "required")
        return value

    def optional_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        return self._optional(name, lambda v: v in choices, f"one of {', '.join(choices)}")


def _valid_time(text: str) -> bool:
    if not _TIME_RE.match(text):
        return False
    try:
        parse_time(text)
    except ValueError:
        return False
    return True


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:80]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def recover_status(path: str | Path, say: Callable[[str], None]) -> WatchStatus | None:
    """The previous status for a starting watch; a damaged file is reported and ignored
    (the watch owns it: without its ledger, no past run is re-sent, see :mod:`.session`)."""
    try:
        return load_status(path)
    except ConfigError as exc:
        say(f"watch: ignoring the previous status file: {exc}")
        return None
