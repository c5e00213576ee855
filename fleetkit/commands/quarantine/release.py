"""What ``--release`` found on a host: sections of the script's output, fleetkit's own
copies of the rulesets, and the per-host report of what changed during the quarantine.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from fleetkit.foundation.atomic import atomic_write
from fleetkit.foundation.rulediff import bounded_diff


def new_marker() -> str:
    """A per-run section marker a host cannot guess in advance."""
    return f"fleetkit-{secrets.token_hex(8)}"


def sections(text: str, marker: str) -> dict[str, str]:
    """Split script output at ``--- MARKER name`` lines: {name: text}."""
    out: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    prefix = f"--- {marker} "
    for line in text.splitlines(keepends=True):
        if line.startswith(prefix):
            if name is not None:
                out[name] = "".join(lines)
            name, lines = line[len(prefix) :].strip(), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        out[name] = "".join(lines)
    return out


@dataclass(frozen=True)
class LocalCopies:
    """fleetkit's own copies of a host's rulesets (on the admin machine, out of its reach)."""

    directory: Path

    def path(self, host: str, kind: str) -> Path:
        return self.directory / f"{host}.{kind}.nft"

    def read(self, host: str, kind: str) -> str | None:
        try:
            return self.path(host, kind).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def write(self, host: str, kind: str, text: str, *, keep_existing: bool = False) -> None:
        path = self.path(host, kind)
        if keep_existing and path.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode("utf-8"), mode=0o600)

    def forget(self, host: str) -> None:
        for kind in ("pre", "applied"):
            self.path(host, kind).unlink(missing_ok=True)


def release_report(host: str, found: dict[str, str], copies: LocalCopies | None) -> list[str]:
    """What changed on ``host`` during the quarantine; [] when the release restored it exactly.

    ``found``: the release script's sections (``table`` or ``no table``, ``now``,
    ``before`` or ``none``). Every line is bounded and terminal-safe.
    """
    warnings: list[str] = []
    local_pre = copies.read(host, "pre") if copies is not None else None
    host_pre = None if "none" in found else found.get("before")
    if (
        local_pre is not None
        and host_pre is not None
        and bounded_diff(local_pre, host_pre, labels=("a", "b"))
    ):
        warnings.append(
            f"{host}: the host's saved pre-quarantine ruleset was changed during the "
            "quarantine (compared with fleetkit's own copy instead)"
        )
    before = local_pre if local_pre is not None else host_pre
    if "no table" in found:
        warnings.append(
            f"{host}: the quarantine table was already gone: something other than fleetkit "
            "deleted it during the quarantine"
        )
    elif copies is not None and (applied := copies.read(host, "applied")) is not None:
        changed = bounded_diff(applied, found.get("table", ""), labels=("applied", "at release"))
        if changed:
            warnings.append(
                _lines(f"{host}: the quarantine table was changed during the quarantine", changed)
            )
    if before is None:
        warnings.append(f"{host}: no saved pre-quarantine ruleset to compare with")
        return warnings
    changed = bounded_diff(
        before, found.get("now", ""), labels=("before quarantine", "after release")
    )
    if changed:
        warnings.append(
            _lines(
                f"{host}: the ruleset differs from before the quarantine (changed meanwhile "
                "by something other than fleetkit; kept as it is)",
                changed,
            )
        )
    return warnings


def _lines(title: str, lines: list[str]) -> str:
    return "\n".join([title, *(f"    {line}" for line in lines)])
