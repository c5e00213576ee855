"""``watch``: the watch service on the control plane runs, and when it last completed a run.

Read in the control plane's one probe, like every other check: the service
(as provisioning looks at it), the status file the watch keeps (hostile
input: read strictly by :func:`fleetkit.watch.statusread.parse_status`) and
the host's own clock, so a clock skew between this machine and the control
plane never makes a live watch look stale (or a dead one fresh). Judged by
:func:`fleetkit.watch.state.assess_status`, the rule the watch documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleetkit.foundation.status import ConfigError
from fleetkit.hostfacts.facts import Fact, FileLook, FileState, Raw, ServiceLook
from fleetkit.hostfacts.roles.watch import STATUS_PATH, watch_service
from fleetkit.hostfacts.services import ServiceState
from fleetkit.readiness.expected import Expected, Looks
from fleetkit.readiness.model import CheckResult, Subject, failed, passed, provision_fix
from fleetkit.watch.state import MAX_STATUS_BYTES, assess_status
from fleetkit.watch.statusread import parse_status

NAME = "watch"
LOG_HINT = "journalctl -u fleetkit-watch, or /var/log/fleetkit-watch.log without systemd"


@dataclass(frozen=True)
class HostClock(Fact[datetime | None]):
    """The host's own time (UTC, whole seconds); None when it printed no number."""

    def command(self) -> str:
        return "date -u +%s"

    def parse(self, raw: Raw) -> datetime | None:
        text = raw.text.strip()
        if not raw.ok or not text.isdigit() or len(text) > 12:
            return None
        return datetime.fromtimestamp(int(text), UTC)


def watch_required(expected: Expected) -> str | None:
    return None if expected.watch else "not checked: watch.enabled is false"


def watch_facts(looks: Looks) -> tuple[Fact[Any], ...]:
    """The service through the manager verify uses for the others, the status file, the clock."""
    return (
        ServiceLook(watch_service(), looks.bacalhau.manager),
        FileLook(STATUS_PATH, limit=MAX_STATUS_BYTES),
        HostClock(),
    )


def check_watch(
    s: Subject, service: ServiceState, status_file: FileState, now: datetime | None
) -> CheckResult:
    host = s.target.name
    spec = watch_service()
    if not service.running:
        return failed(NAME, f"{spec.name} is not running ({service.manager})", provision_fix(host))
    if not status_file.exists:
        return failed(
            NAME,
            f"{spec.name} runs but has written no status file ({STATUS_PATH})",
            f"look at its log on {host} ({LOG_HINT})",
        )
    if now is None:
        return failed(NAME, f"cannot read {host}'s clock (date -u +%s)", f"look at {host}")
    try:
        if status_file.truncated:
            raise ConfigError(f"larger than {MAX_STATUS_BYTES} bytes", file=STATUS_PATH)
        status = parse_status(status_file.content, file=f"{host}:{STATUS_PATH}")
    except ConfigError as exc:
        return failed(NAME, f"unreadable status file: {exc}", provision_fix(host))
    health = assess_status(status, now=now)
    if health.ok:
        return passed(NAME, f"{spec.name} {health.message}")
    fix = (
        f"wait for its first run, or look at its log on {host} ({LOG_HINT})"
        if "no run completed" in health.message
        else provision_fix(host)
    )
    return failed(NAME, f"{spec.name}: {health.message}", fix)
