"""What the fleet report shows, as plain frozen data.

The renderer (:mod:`fleetkit.report.html`) is a pure function of a
:class:`FleetReport`, so it can be tested without a history, and the
``report`` command only has to fill this model from the history store.
Every string here may have come from a host (host names, evidence, paths,
SQL, row values): the model keeps them exact and the renderer escapes them.

Times are timezone-aware :class:`~datetime.datetime` values; a naive one is
refused, because a report read in another time zone would silently lie.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

#: Rows of one query run kept for the report (the rest are only counted).
ROW_LIMIT = 20


class PolicyStatus(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"
    ERROR = "ERROR"


def _aware(value: datetime | None, what: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")


# --------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class FailingCheck:
    """One failed verify check of a host, with its (short) evidence."""

    name: str
    evidence: str


@dataclass(frozen=True)
class HostReadiness:
    """One host as the last ``verify`` saw it."""

    host: str
    role: str
    ready: bool
    verified_at: datetime
    failing: tuple[FailingCheck, ...] = ()

    def __post_init__(self) -> None:
        _aware(self.verified_at, f"verified_at of {self.host!r}")


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class Coverage:
    """How many nodes answered a run, and how the others did not.

    ``excluded`` nodes were deliberately left out (quarantined, not selected)
    and do not count against the run.
    """

    with_rows: int = 0
    empty: int = 0
    failed: int = 0
    timed_out: int = 0
    missing: int = 0
    excluded: int = 0

    def __post_init__(self) -> None:
        for name, count in self.parts():
            if count < 0:
                raise ValueError(f"coverage count {name!r} is negative: {count}")

    def parts(self) -> tuple[tuple[str, int], ...]:
        """(label, count) in the order the report shows them."""
        return (
            ("rows", self.with_rows),
            ("empty", self.empty),
            ("failed", self.failed),
            ("timed out", self.timed_out),
            ("missing", self.missing),
            ("excluded", self.excluded),
        )

    @property
    def answered(self) -> int:
        return self.with_rows + self.empty

    @property
    def expected(self) -> int:
        return self.answered + self.failed + self.timed_out + self.missing

    @property
    def complete(self) -> bool:
        return self.answered == self.expected


@dataclass(frozen=True)
class RunCoverage:
    """One recent run and its coverage."""

    run_id: str
    kind: str
    started_at: datetime
    coverage: Coverage

    def __post_init__(self) -> None:
        _aware(self.started_at, f"started_at of run {self.run_id!r}")


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class PolicyCell:
    """One host x one policy: the latest status, since when it fails, and its trend.

    ``trend``: the statuses over the matrix's recent runs, oldest first; None
    where the host was not evaluated in that run. A trend shorter than the
    matrix's runs covers the newest ones.
    """

    status: PolicyStatus
    first_failed_at: datetime | None = None
    trend: tuple[PolicyStatus | None, ...] = ()

    def __post_init__(self) -> None:
        _aware(self.first_failed_at, "first_failed_at")


@dataclass(frozen=True)
class PolicyHost:
    """A row of the matrix: one cell per policy, None where never evaluated."""

    host: str
    cells: tuple[PolicyCell | None, ...]

    @property
    def failing(self) -> int:
        return sum(1 for c in self.cells if c is not None and c.status is PolicyStatus.FAIL)


@dataclass(frozen=True)
class PolicyMatrix:
    """Hosts x policies. ``runs``: the policy runs the trends span, oldest first."""

    policies: tuple[str, ...] = ()
    hosts: tuple[PolicyHost, ...] = ()
    runs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        width = len(self.policies)
        for row in self.hosts:
            if len(row.cells) != width:
                raise ValueError(
                    f"policy row {row.host!r} has {len(row.cells)} cells for {width} policies"
                )
            for cell in row.cells:
                if cell is not None and len(cell.trend) > max(len(self.runs), 1):
                    raise ValueError(f"trend of {row.host!r} is longer than the matrix's runs")

    @classmethod
    def from_cells(
        cls,
        cells: Mapping[tuple[str, str], PolicyCell],
        *,
        runs: Iterable[str] = (),
        policies: Iterable[str] | None = None,
    ) -> PolicyMatrix:
        """Build the matrix from ``{(host, policy): cell}``; hosts and policies sorted."""
        names = tuple(policies) if policies is not None else tuple(sorted({p for _, p in cells}))
        hosts = sorted({h for h, _ in cells})
        rows = tuple(PolicyHost(h, tuple(cells.get((h, p)) for p in names)) for h in hosts)
        return cls(policies=names, hosts=rows, runs=tuple(runs))

    @property
    def failing_hosts(self) -> int:
        return sum(1 for row in self.hosts if row.failing)


# --------------------------------------------------------------------------- hunts


@dataclass(frozen=True)
class Indicator:
    """What a hunt looked for: a path (exact or glob), a SHA-256, or both."""

    path: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class HuntHit:
    host: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Hunt:
    """A hunt run: what it looked for and what it found.

    ``hits`` may be the first of many (a presence hunt over a glob can find
    thousands): ``total_hits`` and ``hit_hosts`` then count them all.
    ``question`` is the SQL the hunt asked, for when its indicators were not
    recorded.
    """

    run_id: str
    started_at: datetime
    indicators: tuple[Indicator, ...]
    hits: tuple[HuntHit, ...] = ()
    coverage: Coverage | None = None
    total_hits: int | None = None
    hit_hosts: tuple[str, ...] | None = None
    question: str = ""

    def __post_init__(self) -> None:
        _aware(self.started_at, f"started_at of hunt {self.run_id!r}")
        if self.total_hits is not None and self.total_hits < len(self.hits):
            raise ValueError(f"hunt {self.run_id!r}: total_hits is less than the hits kept")

    @property
    def hit_count(self) -> int:
        return len(self.hits) if self.total_hits is None else self.total_hits

    @property
    def hosts_hit(self) -> tuple[str, ...]:
        if self.hit_hosts is not None:
            return self.hit_hosts
        return tuple(dict.fromkeys(hit.host for hit in self.hits))


@dataclass(frozen=True)
class QuarantinedHost:
    host: str
    since: datetime | None = None

    def __post_init__(self) -> None:
        _aware(self.since, f"since of {self.host!r}")


# --------------------------------------------------------------------------- query runs


@dataclass(frozen=True)
class QueryRun:
    """A recent query run: its SQL, coverage and the first rows (``total_rows`` in all)."""

    run_id: str
    started_at: datetime
    sql: str
    coverage: Coverage
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    total_rows: int = 0

    def __post_init__(self) -> None:
        _aware(self.started_at, f"started_at of run {self.run_id!r}")
        if self.total_rows < len(self.rows):
            raise ValueError(f"run {self.run_id!r}: total_rows is less than the rows kept")
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"run {self.run_id!r}: a row does not match the columns")

    @classmethod
    def from_records(
        cls,
        run_id: str,
        started_at: datetime,
        sql: str,
        coverage: Coverage,
        records: Iterable[Mapping[str, str]],
        *,
        limit: int = ROW_LIMIT,
    ) -> QueryRun:
        """Keep the first ``limit`` merged rows and count the others (records are streamed).

        Columns: ``nodeID`` and ``hostname`` first, then the others as first seen.
        """
        kept: list[Mapping[str, str]] = []
        total = 0
        for record in records:
            total += 1
            if len(kept) < limit:
                kept.append(record)
        present = {key for record in kept for key in record}
        columns: list[str] = [c for c in ("nodeID", "hostname") if c in present]
        seen = set(columns)
        for record in kept:
            for key in record:
                if key not in seen:
                    seen.add(key)
                    columns.append(key)
        rows = tuple(tuple(str(record.get(c, "")) for c in columns) for record in kept)
        return cls(run_id, started_at, sql, coverage, tuple(columns), rows, total)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class FleetReport:
    """Everything one report shows."""

    generated_at: datetime
    fleetkit_version: str
    #: Start of the period the report covers (None: the whole history).
    since: datetime | None = None
    readiness: tuple[HostReadiness, ...] = ()
    coverage: tuple[RunCoverage, ...] = ()
    policies: PolicyMatrix = field(default_factory=PolicyMatrix)
    hunts: tuple[Hunt, ...] = ()
    quarantined: tuple[QuarantinedHost, ...] = ()
    queries: tuple[QueryRun, ...] = ()

    def __post_init__(self) -> None:
        _aware(self.generated_at, "generated_at")
        _aware(self.since, "since")

    @property
    def empty(self) -> bool:
        """Nothing recorded yet: no verify, no run, no quarantine."""
        return not (
            self.readiness
            or self.coverage
            or self.policies.hosts
            or self.hunts
            or self.quarantined
            or self.queries
        )
