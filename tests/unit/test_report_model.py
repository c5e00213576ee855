"""The report's input model: what it accepts, what it refuses, what it computes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from fleetkit.report.model import (
    Coverage,
    FleetReport,
    HostReadiness,
    Hunt,
    HuntHit,
    Indicator,
    PolicyCell,
    PolicyHost,
    PolicyMatrix,
    PolicyStatus,
    QueryRun,
)
from fleetkit.report.samples import lab_sample

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
P, F = PolicyStatus.PASS, PolicyStatus.FAIL


def test_models_are_frozen() -> None:
    model = lab_sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.since = None  # type: ignore[misc]


def test_naive_times_are_refused_with_the_field_named() -> None:
    naive = datetime(2026, 11, 27, 9, 30)
    with pytest.raises(ValueError, match="generated_at"):
        FleetReport(naive, "0.1.0")
    with pytest.raises(ValueError, match="verified_at of 'web-1'"):
        HostReadiness("web-1", "compute", True, naive)
    with pytest.raises(ValueError, match="first_failed_at"):
        PolicyCell(F, naive)


def test_coverage_counts() -> None:
    cov = Coverage(with_rows=5, empty=2, failed=1, timed_out=1, missing=1, excluded=3)
    assert cov.answered == 7
    assert cov.expected == 10  # excluded nodes are not expected to answer
    assert not cov.complete
    assert Coverage(with_rows=2, excluded=1).complete
    with pytest.raises(ValueError, match="missing"):
        Coverage(missing=-1)


def test_matrix_from_cells_fills_gaps_and_counts_failing_hosts() -> None:
    cells = {
        ("web-2", "a"): PolicyCell(F, NOW, (P, F)),
        ("web-1", "a"): PolicyCell(P, None, (P, P)),
        ("web-1", "b"): PolicyCell(P, None, (P, P)),
    }
    matrix = PolicyMatrix.from_cells(cells, runs=("r1", "r2"))
    assert matrix.policies == ("a", "b")
    assert [row.host for row in matrix.hosts] == ["web-1", "web-2"]
    assert matrix.hosts[1].cells[1] is None  # web-2 never evaluated for b
    assert matrix.failing_hosts == 1


def test_matrix_refuses_rows_that_do_not_match_the_policies() -> None:
    with pytest.raises(ValueError, match="'web-1' has 1 cells for 2 policies"):
        PolicyMatrix(("a", "b"), (PolicyHost("web-1", (None,)),))
    with pytest.raises(ValueError, match="longer than the matrix's runs"):
        PolicyMatrix(("a",), (PolicyHost("web-1", (PolicyCell(P, None, (P, P, P)),)),), ("r1",))


def test_query_run_keeps_the_first_rows_and_counts_all_of_them() -> None:
    records = iter(
        [
            {"pid": "1", "hostname": "h1", "nodeID": "n1"},
            {"nodeID": "n2", "hostname": "h2", "x": "y"},
        ]
        + [{"nodeID": "n", "hostname": "h"}] * 50
    )
    run = QueryRun.from_records("r", NOW, "SELECT 1", Coverage(with_rows=3), records, limit=2)
    assert run.total_rows == 52
    assert run.columns == ("nodeID", "hostname", "pid", "x")
    assert run.rows == (("n1", "h1", "1", ""), ("n2", "h2", "", "y"))


def test_query_run_refuses_inconsistent_rows() -> None:
    with pytest.raises(ValueError, match="total_rows"):
        QueryRun("r", NOW, "SELECT 1", Coverage(), ("a",), (("1",),), 0)
    with pytest.raises(ValueError, match="columns"):
        QueryRun("r", NOW, "SELECT 1", Coverage(), ("a",), (("1", "2"),), 1)


def test_hunt_hosts_hit_in_first_seen_order() -> None:
    hunt = Hunt(
        "h1",
        NOW,
        (Indicator("/x", ""),),
        (HuntHit("b", "/x", "1"), HuntHit("a", "/x", "2"), HuntHit("b", "/y", "3")),
    )
    assert hunt.hosts_hit == ("b", "a")


def test_a_report_with_nothing_recorded_is_empty() -> None:
    assert FleetReport(NOW, "0.1.0").empty
    assert not lab_sample().empty
