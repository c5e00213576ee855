"""Sample reports: the lab fleet's story (README screenshot) and a large fleet (benchmark).

They are built from made-up but realistic values, so the screenshot script,
the benchmark and the tests can render a report before any history exists.
The ``report`` command never uses them.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta

from fleetkit import __version__
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

SAMPLE_NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)

TROJAN_PATH = "/var/www/htdocs/wp-content/themes/goldenrod/functions.php"
TROJAN_SHA256 = "ef59adcbcf15a19cd742cfc3f3d45da135684eab56e042726a4fd4e4b77e94a6"
SSH_POLICIES = ("ssh-keys/ssh_private_keys_encrypted_ec", "ssh-keys/ssh_private_keys_encrypted")

P, F = PolicyStatus.PASS, PolicyStatus.FAIL


def _node_id(host: str) -> str:
    return "n-" + hashlib.sha256(host.encode()).hexdigest()[:8]


def lab_sample(now: datetime = SAMPLE_NOW) -> FleetReport:
    """The lab fleet after the README's story: 1 control plane + 3 nodes, a week of runs.

    node-2 started failing the SSH-key policy three days ago; the trojan hunt
    found the file on node-1 and node-3; node-3 was quarantined.
    """
    nodes = ("node-1", "node-2", "node-3")
    day = timedelta(days=1)
    policy_runs = tuple(f"pol-{i:02d}" for i in range(1, 8))
    failing_since = now - 3 * day
    cells: dict[tuple[str, str], PolicyCell] = {}
    for host in nodes:
        for policy in SSH_POLICIES:
            if host == "node-2":
                trend = (P, P, P, P, F, F, F)
                cells[(host, policy)] = PolicyCell(F, failing_since, trend)
            else:
                cells[(host, policy)] = PolicyCell(P, None, (P,) * 7)
    full = Coverage(with_rows=3)
    hunt_cov = Coverage(with_rows=2, empty=1)
    query_sql = "SELECT name, version, arch\nFROM deb_packages\nWHERE name LIKE 'openssh%'"
    rows = [
        {"nodeID": _node_id(h), "hostname": h, "name": n, "version": "1:9.2p1-2+deb12u3"}
        for h in nodes
        for n in ("openssh-client", "openssh-server", "openssh-sftp-server")
    ]
    proc_sql = "SELECT pid, name, path FROM processes WHERE name = 'kworkerd'"
    return FleetReport(
        generated_at=now,
        fleetkit_version=__version__,
        since=now - 7 * day,
        readiness=(
            HostReadiness("orch-1", "control plane", True, now - timedelta(hours=2)),
            HostReadiness("node-1", "compute", True, now - timedelta(hours=2)),
            HostReadiness("node-2", "compute", True, now - timedelta(hours=2)),
            HostReadiness(
                "node-3",
                "compute",
                False,
                now - timedelta(hours=2),
                (
                    FailingCheck(
                        "orchestrator: connected",
                        "node is DISCONNECTED at the orchestrator (quarantined: isolated)",
                    ),
                ),
            ),
        ),
        coverage=(
            RunCoverage(
                "run-0412", "query", now - timedelta(hours=1), Coverage(with_rows=2, excluded=1)
            ),
            RunCoverage("run-0411", "hunt", now - timedelta(hours=5), hunt_cov),
            RunCoverage("run-0410", "policy", now - timedelta(hours=6), full),
            RunCoverage("run-0409", "query", now - day, Coverage(with_rows=2, timed_out=1)),
            RunCoverage("run-0408", "policy", now - 2 * day, Coverage(with_rows=1, empty=2)),
        ),
        policies=PolicyMatrix.from_cells(cells, runs=policy_runs, policies=SSH_POLICIES),
        hunts=(
            Hunt(
                "run-0411",
                now - timedelta(hours=5),
                (Indicator(TROJAN_PATH, TROJAN_SHA256),),
                (
                    HuntHit("node-1", TROJAN_PATH, TROJAN_SHA256),
                    HuntHit("node-3", TROJAN_PATH, TROJAN_SHA256),
                ),
                hunt_cov,
            ),
        ),
        quarantined=(QuarantinedHost("node-3", now - timedelta(hours=4)),),
        queries=(
            QueryRun.from_records(
                "run-0412", now - timedelta(hours=1), proc_sql, Coverage(empty=2, excluded=1), []
            ),
            QueryRun.from_records(
                "run-0409", now - day, query_sql, Coverage(with_rows=2, timed_out=1), rows[:6]
            ),
        ),
    )


def large_fleet(
    hosts: int = 1000,
    policies: int = 20,
    runs: int = 30,
    *,
    seed: int = 1,
    now: datetime = SAMPLE_NOW,
) -> FleetReport:
    """A big fleet's report: ``hosts`` x ``policies`` with ``runs`` policy runs of trend.

    About one cell in twelve changes status during the period (some fail from
    a point on, some flap, a few hosts did not answer some runs), so the
    trends are not all flat lines.
    """
    rng = random.Random(seed)
    names = [f"web-{i:04d}" for i in range(1, hosts + 1)]
    policy_names = tuple(f"pack-{i // 5 + 1}/policy_{i:02d}_check" for i in range(policies))
    run_ids = tuple(f"pol-{i:03d}" for i in range(1, runs + 1))
    run_times = [now - timedelta(hours=6 * (runs - i)) for i in range(runs)]
    cells: dict[tuple[str, str], PolicyCell] = {}
    for host in names:
        for policy in policy_names:
            cells[(host, policy)] = _random_cell(rng, runs, run_times)
    readiness = tuple(
        HostReadiness(
            h,
            "compute",
            ready := rng.random() > 0.03,
            now - timedelta(minutes=rng.randint(5, 90)),
            ()
            if ready
            else (FailingCheck("osqueryd running", "no osqueryd process (pidfile stale)"),),
        )
        for h in names
    )
    coverage = tuple(
        RunCoverage(
            f"run-{i:04d}",
            ("policy", "query", "hunt")[i % 3],
            now - timedelta(hours=6 * i),
            Coverage(
                with_rows=hosts - (miss := rng.randint(0, 12)) - 40,
                empty=40,
                failed=miss // 3,
                timed_out=miss // 3,
                missing=miss - 2 * (miss // 3),
                excluded=rng.randint(0, 3),
            ),
        )
        for i in range(runs)
    )
    hits = tuple(
        HuntHit(names[rng.randrange(hosts)], TROJAN_PATH, TROJAN_SHA256) for _ in range(25)
    )
    queries = tuple(
        QueryRun.from_records(
            f"run-{i:04d}",
            now - timedelta(hours=6 * i),
            "SELECT pid, name, path, cmdline FROM processes WHERE on_disk = 0",
            Coverage(with_rows=hosts - 10, empty=10),
            (
                {"nodeID": _node_id(h), "hostname": h, "pid": str(100 + j), "name": "kworkerd"}
                for h in names
                for j in range(3)
            ),
        )
        for i in range(1, 31, 3)
    )
    return FleetReport(
        generated_at=now,
        fleetkit_version=__version__,
        since=run_times[0],
        readiness=readiness,
        coverage=coverage,
        policies=PolicyMatrix.from_cells(cells, runs=run_ids, policies=policy_names),
        hunts=(
            Hunt(
                "run-0002",
                now - timedelta(hours=12),
                (Indicator(TROJAN_PATH, TROJAN_SHA256),),
                hits,
            ),
        ),
        quarantined=tuple(QuarantinedHost(h.host, now - timedelta(days=1)) for h in hits[:5]),
        queries=queries,
    )


def random_trend(rng: random.Random, runs: int) -> list[PolicyStatus | None]:
    """One cell's statuses over ``runs`` runs, oldest first (None: not evaluated).

    90% always pass, 5% fail from some run on, 3% flap, 2% missed runs and
    ended in an error: the mix the benchmark's history is generated with too.
    """
    roll = rng.random()
    trend: list[PolicyStatus | None]
    if roll < 0.90:
        trend = [P for _ in range(runs)]
    elif roll < 0.95:  # fails from some run on
        start = rng.randrange(runs)
        trend = [P if i < start else F for i in range(runs)]
    elif roll < 0.98:  # flaps
        trend = [rng.choice((P, F, PolicyStatus.UNKNOWN)) for _ in range(runs)]
    else:  # missed some runs
        trend = [None if rng.random() < 0.3 else P for _ in range(runs)]
        trend[-1] = PolicyStatus.ERROR
    return trend


def _random_cell(rng: random.Random, runs: int, times: list[datetime]) -> PolicyCell:
    trend = random_trend(rng, runs)
    status = trend[-1] or PolicyStatus.ERROR
    first_failed = None
    if status is F:
        start = runs - 1
        while start > 0 and trend[start - 1] is F:
            start -= 1
        first_failed = times[start]
    return PolicyCell(status, first_failed, tuple(trend))
