"""Label selectors: ``--select "env=prod,role=osquery,role=web,zone!=eu"``.

One parsed :class:`Selector` serves three consumers, so they can never
disagree about which nodes a query is for:

- :meth:`Selector.constraints` -> Bacalhau job ``Constraints``;
- :meth:`Selector.query_param` -> the k8s-style string for ``GET /nodes?labels=``
  (the expected node set);
- :meth:`Selector.matches` -> inventory labels on the SSH path, and a
  client-side check of the nodes the orchestrator returned.

Grammar (comma separated terms, AND between keys):
``key=value`` (also ``key==value``; repeated for one key = any of the values),
``key!=value`` (repeated = none of the values), ``key`` (label present),
``!key`` (label absent). Keys and values follow the inventory's label rules.

Validation happens here, before anything is submitted: Bacalhau accepts an
unknown operator at submit time and then never schedules the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetkit.foundation.status import UsageError
from fleetkit.foundation.validate import LABEL_KEY, LABEL_VALUE, excerpt, matches

OPTION = "--select"

#: Operators used in generated constraints (all in Bacalhau's selection.Operator).
EQUALS = "="
IN = "in"
NOT_EQUALS = "!="
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"
#: Constraint keys with this prefix are only preferences for the Bacalhau scheduler.
_SOFT_PREFIX = "favour_"


@dataclass(frozen=True)
class Requirement:
    """One condition on one label key."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        # k8s semantics (which Bacalhau uses): != and notin also match a node
        # that does not carry the key at all.
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in (EQUALS, IN):
            return present and value in self.values
        if self.operator in (NOT_EQUALS, NOT_IN):
            return not present or value not in self.values
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        raise AssertionError(f"unknown operator {self.operator!r}")

    def constraint(self) -> dict[str, Any]:
        return {"Key": self.key, "Operator": self.operator, "Values": list(self.values)}

    def selector_text(self) -> str:
        """This requirement in k8s label-selector syntax."""
        if self.operator in (EQUALS, NOT_EQUALS):
            return f"{self.key}{self.operator}{self.values[0]}"
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        if self.operator == EXISTS:
            return self.key
        return f"!{self.key}"


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        return parse_selector(text)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(r.selector_text() for r in self.requirements)

    def constraints(self) -> list[dict[str, Any]]:
        """Bacalhau job ``Constraints`` (``[{"Key","Operator","Values"}]``)."""
        return [r.constraint() for r in self.requirements]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def query_param(self) -> str | None:
        """The selector for ``GET /nodes?labels=``; None when there is nothing to filter.

        Every form this module accepts has a k8s spelling, so None only means
        "no selector". Kept optional in the signature should a future form
        (e.g. ``gt``) have none.
        """
        return str(self) if self.requirements else None


def parse_selector(text: str | None) -> Selector:
    """Parse ``--select``; any bad term is a :class:`UsageError` naming it."""
    wanted: dict[str, list[str]] = {}
    unwanted: dict[str, list[str]] = {}
    present: list[str] = []
    absent: list[str] = []
    order: list[str] = []
    for raw in (text or "").split(","):
        term = raw.strip()
        if not term:
            continue
        key, op, value = _split_term(term)
        if key not in order:
            order.append(key)
        if op == EQUALS:
            _add_unique(wanted.setdefault(key, []), value)
        elif op == NOT_EQUALS:
            _add_unique(unwanted.setdefault(key, []), value)
        elif op == EXISTS:
            _add_unique(present, key)
        else:
            _add_unique(absent, key)
    _reject_contradictions(wanted, unwanted, present, absent)
    requirements: list[Requirement] = []
    for key in order:
        if key in wanted:
            values = tuple(wanted[key])
            requirements.append(Requirement(key, EQUALS if len(values) == 1 else IN, values))
        elif key in present:
            # key=value already implies the key exists; only keep a bare "key" alone.
            requirements.append(Requirement(key, EXISTS))
        if key in unwanted:
            values = tuple(unwanted[key])
            op = NOT_EQUALS if len(values) == 1 else NOT_IN
            requirements.append(Requirement(key, op, values))
        if key in absent:
            requirements.append(Requirement(key, DOES_NOT_EXIST))
    return Selector(tuple(requirements))


def _split_term(term: str) -> tuple[str, str, str]:
    """``(key, operator, value)`` of one term; operator is =, !=, exists or !."""
    if "!=" in term:
        key, _, value = term.partition("!=")
        op = NOT_EQUALS
    elif "=" in term:
        key, _, value = term.partition("=")
        value = value[1:] if value.startswith("=") else value
        op = EQUALS
    elif term.startswith("!"):
        key, value, op = term[1:], "", DOES_NOT_EXIST
    else:
        key, value, op = term, "", EXISTS
    key, value = key.strip(), value.strip()
    if not matches(LABEL_KEY, key):
        raise UsageError(
            f"invalid label key {excerpt(key)} in {excerpt(term)} (letters, digits, '_', '.', '-', "
            "optionally prefix/name)",
            key=OPTION,
        )
    if key.startswith(_SOFT_PREFIX):
        raise UsageError(
            f"label key {excerpt(key)} in {excerpt(term)}: Bacalhau treats keys starting with "
            f"{_SOFT_PREFIX!r} as soft preferences, so it would not restrict the nodes",
            key=OPTION,
        )
    if op in (EQUALS, NOT_EQUALS):
        if not value:
            raise UsageError(
                f"missing value in {excerpt(term)} (to require only that the label exists, "
                f"write {excerpt(key)} alone)",
                key=OPTION,
            )
        if not matches(LABEL_VALUE, value):
            raise UsageError(
                f"invalid label value {excerpt(value)} in {excerpt(term)} (letters, digits, "
                "'_', '.', '-', "
                "at most 63)",
                key=OPTION,
            )
    return key, op, value


def _add_unique(values: list[str], value: str) -> None:
    if value not in values:
        values.append(value)


def _reject_contradictions(
    wanted: dict[str, list[str]],
    unwanted: dict[str, list[str]],
    present: list[str],
    absent: list[str],
) -> None:
    """A selector no node can match is a typo, not a query worth submitting."""
    for key, values in wanted.items():
        both = [v for v in values if v in unwanted.get(key, [])]
        if both:
            raise UsageError(f"{key}={both[0]} and {key}!={both[0]} exclude each other", key=OPTION)
        if key in absent:
            raise UsageError(f"{key}={values[0]} and !{key} exclude each other", key=OPTION)
    for key in present:
        if key in absent:
            raise UsageError(f"{key} and !{key} exclude each other", key=OPTION)
