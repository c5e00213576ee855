"""A report whose every host-supplied field is an attack (shared by unit and browser tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleetkit.report.model import (
    Coverage,
    FailingCheck,
    FleetReport,
    HostReadiness,
    Hunt,
    HuntHit,
    Indicator,
    PolicyCell,
    PolicyMatrix,
    PolicyStatus,
    QuarantinedHost,
    QueryRun,
    RunCoverage,
)

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)

#: Each would set window.__pwned (or change the page) if it ever ran.
ATTACKS = (
    "<script>window.__pwned=1;document.title='pwned'</script>",
    '<img src=x onerror="window.__pwned=2">',
    "javascript:window.__pwned=3",
    "</textarea><script>window.__pwned=4</script>",
    '"><svg onload="window.__pwned=5">',
    "'><iframe src=javascript:window.__pwned=6></iframe>",
    "<!-- --><script>window.__pwned=7</script>",
    "</style><style>body{display:none}</style>",
    "<a href=javascript:window.__pwned=8>click</a>",
    "&lt;b&gt;",
)
#: Characters that must appear as escapes (as on a terminal), never raw.
INVISIBLE = {
    "\x1b[31mred\x1b[0m": "\\x1b[31mred\\x1b[0m",
    "bell\x07": "bell\\x07",
    "nul\x00byte": "nul\\x00byte",
    "abc\u202egnp.exe": "abc\\u202egnp.exe",
    "lone\ud800surrogate": "lone\\ud800surrogate",
}
ALL = ATTACKS + tuple(INVISIBLE)


def hostile_report() -> FleetReport:
    """Every string field of the model carries the attacks (host names, evidence, SQL, rows...)."""
    cov = Coverage(with_rows=1, failed=1)
    cells = {
        (attack, policy): PolicyCell(
            PolicyStatus.FAIL, NOW - timedelta(days=1), (PolicyStatus.PASS, PolicyStatus.FAIL)
        )
        for attack in ALL
        for policy in ("pack/" + ATTACKS[0], "pack/" + ATTACKS[1])
    }
    records = [{"nodeID": attack, "hostname": attack, attack: attack} for attack in ALL]
    return FleetReport(
        generated_at=NOW,
        fleetkit_version="0.1.0",
        since=NOW - timedelta(days=7),
        readiness=tuple(
            HostReadiness(attack, attack, False, NOW, (FailingCheck(attack, attack),))
            for attack in ALL
        ),
        coverage=tuple(RunCoverage(attack, attack, NOW, cov) for attack in ALL),
        policies=PolicyMatrix.from_cells(cells, runs=("r1", "r2")),
        hunts=tuple(
            Hunt(attack, NOW, (Indicator(attack, attack),), (HuntHit(attack, attack, attack),), cov)
            for attack in ALL
        ),
        quarantined=tuple(QuarantinedHost(attack, NOW) for attack in ALL),
        queries=tuple(
            QueryRun.from_records(attack, NOW, "SELECT 1 -- " + attack, cov, records, limit=100)
            for attack in ALL
        ),
    )
