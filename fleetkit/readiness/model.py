"""Readiness findings as data: one result per check per host, and the whole report.

Every finding is a :class:`CheckResult` -- a name, a verdict, the evidence
that led to it and, when it fails, the fix a person can paste -- so the
report is plain data that the table, the JSON and the tests all read
without a host. Evidence often quotes a host; it is redacted and bounded
here, and escaped wherever it is printed for a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from fleetkit.foundation.inventory import Host
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ExitStatus
from fleetkit.hostfacts.identity import FleetMap

if TYPE_CHECKING:
    from fleetkit.clients.bacalhau import NodeState
    from fleetkit.hostfacts.facts import FactView
    from fleetkit.readiness.cluster import ClusterView
    from fleetkit.readiness.expected import Expected, Looks

#: Characters of evidence kept (a hostile host cannot flood the report).
EVIDENCE_LIMIT = 500


class CheckVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    #: Not checked, because something it depends on is unavailable (named in the evidence).
    SKIP = "skip"
    #: Works, but differs from the rule (named with its fix); the host still counts as ready.
    WARN = "warn"


def _bounded(text: str) -> str:
    text = redact(text)
    return text if len(text) <= EVIDENCE_LIMIT else text[: EVIDENCE_LIMIT - 3] + "..."


@dataclass(frozen=True)
class CheckResult:
    """One finding about one host: what was checked, the verdict, why, and what to do."""

    name: str
    verdict: CheckVerdict
    evidence: str
    #: What a person runs or does when the check fails (None when it passes).
    fix: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is CheckVerdict.PASS

    @property
    def failed(self) -> bool:
        return self.verdict is CheckVerdict.FAIL

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "passed": self.passed,
            "evidence": self.evidence,
            "fix": self.fix,
        }


def passed(name: str, evidence: str) -> CheckResult:
    return CheckResult(name, CheckVerdict.PASS, _bounded(evidence))


def failed(name: str, evidence: str, fix: str) -> CheckResult:
    return CheckResult(name, CheckVerdict.FAIL, _bounded(evidence), _bounded(fix))


def warned(name: str, evidence: str, fix: str) -> CheckResult:
    return CheckResult(name, CheckVerdict.WARN, _bounded(evidence), _bounded(fix))


def skipped(name: str, why: str) -> CheckResult:
    return CheckResult(name, CheckVerdict.SKIP, _bounded(why))


def provision_fix(host: str) -> str:
    """The one fix most failures share; the same words everywhere so people learn them."""
    return f"run: invoke provision --hosts {host}"


@dataclass(frozen=True)
class Subject:
    """What a check judges: one host (None for the orchestrator's own row) and its world."""

    host: Host | None
    expected: Expected
    looks: Looks
    #: The host's facts from its probe; None when there was no SSH session.
    facts: FactView | None
    ssh_error: BaseException | None
    cluster: ClusterView
    #: The host's node at the orchestrator (None: not found, or not asked).
    node: NodeState | None
    control_plane: Host | None
    #: The compute hosts being verified (the --hosts selection).
    compute: Sequence[Host]
    #: Pinned host keys of the host, as shown (``ssh-ed25519 SHA256:...``).
    pinned: Sequence[str] = ()
    #: The inventory joined with the orchestrator's nodes (the one identity mapping).
    fleet: FleetMap = field(default_factory=FleetMap)

    @property
    def target(self) -> Host:
        if self.host is None:
            raise RuntimeError("a host check was asked about the orchestrator's row")
        return self.host


@dataclass(frozen=True)
class HostReadiness:
    """Every check of one host (the control plane row also carries the API checks)."""

    name: str
    role: str
    endpoint: str
    checks: tuple[CheckResult, ...]
    #: The node ID the orchestrator knows this host by (None: not found there).
    node_id: str | None = None
    #: SSH commands verify sent to this host (one probe; 0 when it was unreachable).
    round_trips: int = 0

    @property
    def ready(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict is CheckVerdict.WARN]

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.name,
            "role": self.role,
            "endpoint": self.endpoint,
            "node_id": self.node_id,
            "ready": self.ready,
            "round_trips": self.round_trips,
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass(frozen=True)
class VerifyReport:
    hosts: tuple[HostReadiness, ...]
    orchestrator_url: str

    @property
    def ready(self) -> bool:
        return all(h.ready for h in self.hosts)

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.SUCCESS if self.ready else ExitStatus.FAILURE

    @property
    def round_trips(self) -> dict[str, int]:
        """Host -> SSH commands verify sent to it (the counter the benchmarks print)."""
        return {h.name: h.round_trips for h in self.hosts}

    def host(self, name: str) -> HostReadiness | None:
        return next((h for h in self.hosts if h.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "orchestrator": self.orchestrator_url,
            "hosts": [h.to_json() for h in self.hosts],
            "failed": [
                {"host": h.name, "check": c.name, "fix": c.fix}
                for h in self.hosts
                for c in h.failures
            ],
            "warnings": [
                {"host": h.name, "check": c.name, "evidence": c.evidence, "fix": c.fix}
                for h in self.hosts
                for c in h.warnings
            ],
        }
