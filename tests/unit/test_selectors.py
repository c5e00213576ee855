"""``--select``: parsing, Bacalhau constraints, k8s selector strings, client-side matching."""

from __future__ import annotations

from typing import Any

import pytest

from fleetkit.foundation.selectors import Selector, parse_selector
from fleetkit.foundation.status import ExitStatus, UsageError, exit_status_for

PROD_WEB = {"env": "prod", "role": "web", "zone": "us"}
PROD_OSQ_EU = {"env": "prod", "role": "osquery", "zone": "eu"}
LAB_OSQ = {"env": "lab", "role": "osquery"}
BARE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("text", "constraints", "query"),
    [
        ("env=prod", [{"Key": "env", "Operator": "=", "Values": ["prod"]}], "env=prod"),
        ("env==prod", [{"Key": "env", "Operator": "=", "Values": ["prod"]}], "env=prod"),
        (
            "role=osquery,role=web",
            [{"Key": "role", "Operator": "in", "Values": ["osquery", "web"]}],
            "role in (osquery,web)",
        ),
        (
            "env=prod,role=osquery,role=web,zone!=eu",
            [
                {"Key": "env", "Operator": "=", "Values": ["prod"]},
                {"Key": "role", "Operator": "in", "Values": ["osquery", "web"]},
                {"Key": "zone", "Operator": "!=", "Values": ["eu"]},
            ],
            "env=prod,role in (osquery,web),zone!=eu",
        ),
        (
            "zone!=eu,zone!=ap",
            [{"Key": "zone", "Operator": "notin", "Values": ["eu", "ap"]}],
            "zone notin (eu,ap)",
        ),
        ("gpu", [{"Key": "gpu", "Operator": "exists", "Values": []}], "gpu"),
        ("!tainted", [{"Key": "tainted", "Operator": "!", "Values": []}], "!tainted"),
        (
            " env = prod , , role=web ",
            [
                {"Key": "env", "Operator": "=", "Values": ["prod"]},
                {"Key": "role", "Operator": "=", "Values": ["web"]},
            ],
            "env=prod,role=web",
        ),
        # Duplicates collapse; key=value already implies the key exists.
        (
            "env=prod,env=prod,env",
            [{"Key": "env", "Operator": "=", "Values": ["prod"]}],
            "env=prod",
        ),
        (
            "example.com/tier=gold",
            [{"Key": "example.com/tier", "Operator": "=", "Values": ["gold"]}],
            "example.com/tier=gold",
        ),
        (
            "role=web,role!=canary",
            [
                {"Key": "role", "Operator": "=", "Values": ["web"]},
                {"Key": "role", "Operator": "!=", "Values": ["canary"]},
            ],
            "role=web,role!=canary",
        ),
    ],
)
def test_parse(text: str, constraints: list[dict[str, Any]], query: str) -> None:
    selector = parse_selector(text)
    assert selector.constraints() == constraints
    assert selector.query_param() == query
    # The k8s string parses back to the same selector (what GET /nodes?labels= sees).
    assert parse_selector(_k8s_to_option(query)).constraints() == constraints


def _k8s_to_option(query: str) -> str:
    """Expand ``k in (a,b)`` back to ``k=a,k=b`` to round-trip through the parser."""
    out = []
    for part in query.replace(" in (", "=(").replace(" notin (", "!=(").split("),"):
        part = part.rstrip(")")
        if "=(" in part:
            op = "!=" if "!=(" in part else "="
            key, values = part.split(op + "(")
            out += [f"{key}{op}{v}" for v in values.split(",")]
        else:
            out += part.split(",")
    return ",".join(out)


@pytest.mark.parametrize("text", [None, "", "  ", ",,"])
def test_empty_selector_matches_everything(text: str | None) -> None:
    selector = parse_selector(text)
    assert not selector
    assert selector.constraints() == []
    assert selector.query_param() is None
    assert selector.matches(BARE) and selector.matches(PROD_WEB)


@pytest.mark.parametrize(
    ("text", "matching"),
    [
        ("env=prod", ["PROD_WEB", "PROD_OSQ_EU"]),
        ("role=osquery,role=web", ["PROD_WEB", "PROD_OSQ_EU", "LAB_OSQ"]),
        ("env=prod,role=osquery,role=web,zone!=eu", ["PROD_WEB"]),
        # != and notin also match nodes without the key (k8s / Bacalhau semantics).
        ("zone!=eu", ["PROD_WEB", "LAB_OSQ", "BARE"]),
        ("zone!=eu,zone!=us", ["LAB_OSQ", "BARE"]),
        ("zone", ["PROD_WEB", "PROD_OSQ_EU"]),
        ("!zone", ["LAB_OSQ", "BARE"]),
        ("env=staging", []),
        ("role=osquery,!zone", ["LAB_OSQ"]),
    ],
)
def test_matches(text: str, matching: list[str]) -> None:
    fleet = {"PROD_WEB": PROD_WEB, "PROD_OSQ_EU": PROD_OSQ_EU, "LAB_OSQ": LAB_OSQ, "BARE": BARE}
    selector = parse_selector(text)
    assert [name for name, labels in fleet.items() if selector.matches(labels)] == matching


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("env=", "missing value in 'env='"),
        ("env!=", "missing value in 'env!='"),
        ("=prod", "invalid label key '' in '=prod'"),
        ("en v=prod", "invalid label key 'en v'"),
        ("-env=prod", "invalid label key '-env'"),
        ("env=pr od", "invalid label value 'pr od'"),
        ("env=prod;rm -rf /", "invalid label value 'prod;rm -rf /'"),
        ("env=$(id)", "invalid label value '$(id)'"),
        ("env=" + "x" * 64, "invalid label value"),
        ("role in (a,b)", "invalid label key 'role in (a'"),
        ("env>3", "invalid label key 'env>3'"),
        ("!", "invalid label key ''"),
        ("env=prod,env!=prod", "env=prod and env!=prod exclude each other"),
        ("env=prod,!env", "env=prod and !env exclude each other"),
        ("env,!env", "env and !env exclude each other"),
        ("favour_zone=eu", "soft preferences"),
    ],
)
def test_bad_selectors_are_usage_errors_naming_the_term(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_selector(text)
    assert message in str(caught.value)
    assert str(caught.value).startswith("--select: ")
    assert exit_status_for(caught.value) == ExitStatus.BAD_INPUT


def test_selector_parse_classmethod_and_str() -> None:
    selector = Selector.parse("role=web,role=osquery,zone!=eu")
    assert str(selector) == "role in (web,osquery),zone!=eu"
    assert selector == parse_selector("role=web,role=osquery,zone!=eu")


def test_longest_valid_value_is_accepted() -> None:
    value = "v" * 63
    assert parse_selector(f"env={value}").matches({"env": value})
