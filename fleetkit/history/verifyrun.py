"""Verify runs in the history: each host's readiness, its checks, and the versions verify saw.

``invoke verify`` records one run of kind ``verify`` (what the report's
"fleet readiness from the last verify" reads). Each verified host is one node
entry (its node ID is the inventory name: readiness is judged per inventory
host, and a host the orchestrator does not know has no other name), answered
with rows in the same framing as any run:

- first a ``host`` row: ``role``, ``ready`` (``true``/``false``), the node ID
  the orchestrator knows it by (``cluster_node``, empty when not found), and
  the osquery and Bacalhau versions verify *confirmed* on it;
- then one ``check`` row per check: ``check``, ``verdict``
  (``pass``/``fail``/``skip``), ``evidence``, ``fix``.

Versions are recorded only as confirmed: the pinned version when the check
that compares it passed, else empty (the check's evidence then says what was
found). Nothing here parses evidence text, so a host cannot put a version
into the record by printing one.

Every value is a string (as osquery prints); the evidence was already
bounded and redacted by verify, and whatever reads it back escapes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from fleetkit.history.decode import record_name, row_objects
from fleetkit.history.model import NodeState, Question, RecordOutcome, RunKind
from fleetkit.history.store import History

#: The question of every verify run (``invoke history`` lists it so).
VERIFY_QUESTION = Question("invoke verify")
HOST_ROW = "host"
#: How many verify runs back a host's last judgement is looked for.
VERIFY_RUNS = 20
CHECK_ROW = "check"


@dataclass(frozen=True)
class CheckRecord:
    name: str
    verdict: str
    evidence: str = ""
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"


@dataclass(frozen=True)
class HostRecord:
    """One host as a verify run judged it."""

    host: str
    role: str
    ready: bool
    checks: tuple[CheckRecord, ...] = ()
    #: The node ID at the orchestrator (None: not found there, or not a compute node).
    cluster_node: str | None = None
    osquery_version: str | None = None
    bacalhau_version: str | None = None

    @property
    def failing(self) -> tuple[CheckRecord, ...]:
        return tuple(check for check in self.checks if check.failed)


@dataclass(frozen=True)
class Verified:
    """A host as the newest verify run that judged it saw it."""

    record: HostRecord
    run_id: str
    #: The run's start (ISO, UTC).
    at: str


def record_verify(
    history: History,
    hosts: Sequence[HostRecord],
    *,
    scope: Mapping[str, object],
    started_at: datetime | None = None,
) -> RecordOutcome:
    """Record one verify run (never raises for storage trouble after it began: see the
    outcome); HistoryError (exit 2) when the run cannot even begin."""
    recorder = history.begin_run(
        kind=RunKind.VERIFY.value,
        question=VERIFY_QUESTION,
        scope=dict(scope),
        transport="ssh",
        started_at=started_at,
    )
    with recorder:
        for host in hosts:
            recorder.add_node(
                node_id=host.host,
                hostname=host.host,
                status=NodeState.ROWS.value,
                rows=host_rows(host),
            )
    return recorder.finish()


def host_rows(host: HostRecord) -> list[dict[str, str]]:
    first = {
        "record": HOST_ROW,
        "role": host.role,
        "ready": "true" if host.ready else "false",
        "cluster_node": host.cluster_node or "",
        "osquery_version": host.osquery_version or "",
        "bacalhau_version": host.bacalhau_version or "",
    }
    checks = [
        {
            "record": CHECK_ROW,
            "check": c.name,
            "verdict": c.verdict,
            "evidence": c.evidence,
            "fix": c.fix,
        }
        for c in host.checks
    ]
    return [first, *checks]


def latest_verified(history: History, *, runs: int = VERIFY_RUNS) -> list[Verified]:
    """Each host from the newest of the last ``runs`` verify runs that judged it.

    ``invoke verify --hosts web-3`` judges one host; the others keep what the
    run before said about them (with its time). Hosts are in the newest
    run's order, then the older runs'.
    """
    found: dict[str, Verified] = {}
    for run in history.list_runs(kind=RunKind.VERIFY.value, limit=runs):
        if all(entry.node_id in found for entry in history.entries(run.run_id)):
            continue  # a newer run judged every host of this one (the usual case)
        for entry, block in history.node_blocks(run.run_id):
            if entry.node_id in found or not block.count:
                continue
            where = record_name(history.path, run.run_id, entry.node_id)
            record = _host_of(entry.node_id, row_objects(block.lines(), where=where))
            found[entry.node_id] = Verified(record, run.run_id, run.started_at)
    return list(found.values())


def _host_of(name: str, found: Iterable[dict[str, str]]) -> HostRecord:
    rows = list(found)
    head = next((row for row in rows if row.get("record") == HOST_ROW), {})
    checks = tuple(
        CheckRecord(*(r.get(key, "") for key in ("check", "verdict", "evidence", "fix")))
        for r in rows
        if r.get("record") == CHECK_ROW
    )
    return HostRecord(
        host=name,
        role=head.get("role", ""),
        ready=head.get("ready") == "true" and not any(c.failed for c in checks),
        checks=checks,
        cluster_node=head.get("cluster_node") or None,
        osquery_version=head.get("osquery_version") or None,
        bacalhau_version=head.get("bacalhau_version") or None,
    )
