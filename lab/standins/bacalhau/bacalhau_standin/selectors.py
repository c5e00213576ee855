"""Label matching: job ``Constraints`` and the nodes list ``labels`` selector.

Both use Kubernetes selection semantics: ``=``/``==``/``!=`` take one value,
``in``/``notin`` one or more, ``exists``/``!`` none, ``gt``/``lt`` one integer.
A requirement that breaks these rules (e.g. an unknown operator) is an
``InvalidRequirement``: the orchestrator accepts such a job and never schedules
it, which is what v1.9 does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_OPERATORS = {"=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"}
_SOFT_PREFIX = "favour_"


class InvalidRequirement(ValueError):
    """A constraint the real selection package would refuse to build."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        op = self.operator
        if op in ("=", "=="):
            return present and value == self.values[0]
        if op == "!=":
            return not present or value != self.values[0]
        if op == "in":
            return present and value in self.values
        if op == "notin":
            return not present or value not in self.values
        if op == "exists":
            return present
        if op == "!":
            return not present
        try:
            number, bound = int(value), int(self.values[0])
        except ValueError:
            return False
        return present and (number > bound if op == "gt" else number < bound)


def requirement(key: str, operator: str, values: list[Any]) -> Requirement:
    """Build and check one requirement like ``selection.NewRequirement``."""
    op = operator.strip().lower() if operator.strip().lower() in ("in", "notin") else operator
    if op not in _OPERATORS:
        raise InvalidRequirement(f"{operator!r} is not a valid label selector operator")
    vals = tuple(str(v) for v in values or [])
    if op in ("=", "==", "!=", "gt", "lt") and len(vals) != 1:
        raise InvalidRequirement(f"operator {op!r} needs exactly one value for key {key!r}")
    if op in ("in", "notin") and not vals:
        raise InvalidRequirement(f"operator {op!r} needs at least one value for key {key!r}")
    if op in ("exists", "!") and vals:
        raise InvalidRequirement(f"operator {op!r} takes no values for key {key!r}")
    if op in ("gt", "lt"):
        try:
            int(vals[0])
        except ValueError as exc:
            raise InvalidRequirement(f"operator {op!r} needs an integer for {key!r}") from exc
    if not key:
        raise InvalidRequirement("constraint key must not be empty")
    return Requirement(key, op, vals)


def constraints_of(job: dict[str, Any]) -> list[Requirement]:
    """Hard requirements of a job (``favour_`` keys are soft preferences, ignored here)."""
    result = []
    for item in job.get("Constraints") or []:
        if not isinstance(item, dict):
            raise InvalidRequirement(f"constraint {item!r} is not an object")
        req = requirement(
            str(item.get("Key", "")), str(item.get("Operator", "")), item.get("Values") or []
        )
        if not req.key.startswith(_SOFT_PREFIX):
            result.append(req)
    return result


_SELECTOR_TERM = re.compile(
    r"""\s*(?:
        (?P<not>!)\s*(?P<nkey>[^\s,=!()]+)
      | (?P<skey>[^\s,=!()]+)\s*(?P<setop>notin|in)\s*\((?P<set>[^)]*)\)
      | (?P<key>[^\s,=!()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)
      | (?P<ekey>[^\s,=!()]+)
    )\s*(?:,|$)""",
    re.VERBOSE,
)


def parse_selector(text: str) -> list[Requirement]:
    """Parse ``role=osquery,env in (a,b),!gpu`` (the ``labels`` query parameter)."""
    result: list[Requirement] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _SELECTOR_TERM.match(text, pos)
        if not match or match.end() == pos:
            raise InvalidRequirement(f"unable to parse requirement: {text[pos:]!r}")
        if match.group("not"):
            result.append(requirement(match.group("nkey"), "!", []))
        elif match.group("setop"):
            values = [v.strip() for v in match.group("set").split(",") if v.strip()]
            result.append(requirement(match.group("skey"), match.group("setop"), values))
        elif match.group("op"):
            value = [match.group("value")]
            result.append(requirement(match.group("key"), match.group("op"), value))
        else:
            result.append(requirement(match.group("ekey"), "exists", []))
        pos = match.end()
    return result


def all_match(requirements: list[Requirement], labels: dict[str, str]) -> bool:
    return all(req.matches(labels) for req in requirements)
