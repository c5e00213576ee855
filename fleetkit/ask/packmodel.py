"""The pack model: what a loaded, validated pack is (:mod:`fleetkit.ask.packs` reads them).

A :class:`Pack` holds either :class:`Policy` entries (kind ``policy``) or
:class:`PackQuery` entries (kinds ``hunt`` and ``inventory``); one run of it
asks its :attr:`Pack.statements`, and its :attr:`Pack.fingerprint` changes
exactly when what a run asks changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from fleetkit.ask.packfields import DEFAULT_INTERVAL, platforms_include


@dataclass(frozen=True)
class Policy:
    pack: str
    name: str
    description: str
    severity: str
    meaning: str
    query: str
    details: str
    resolution: str
    unknown_if_rows: str | None = None
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.pack}/{self.name}"

    def complies(self, rows: Sequence[dict[str, str]]) -> bool:
        """What the main query's rows say (before UNKNOWN is considered)."""
        return bool(rows) if self.meaning == "pass_if_rows" else not rows


@dataclass(frozen=True)
class PackQuery:
    """One query of a hunt pack (any row is a finding) or an inventory pack (rows recorded)."""

    pack: str
    name: str
    description: str
    query: str
    severity: str | None = None
    resolution: str = ""
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.pack}/{self.name}"


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a pack run; ``name`` is unique within the pack.

    Policies contribute ``NAME`` (the main query), ``NAME:details`` (unless it
    is the main query again) and ``NAME:unknown_if_rows``; ``:`` cannot occur
    in a policy name, so these never collide.
    """

    name: str
    sql: str


@dataclass(frozen=True)
class Pack:
    name: str
    description: str
    policies: tuple[Policy, ...]
    source: str
    kind: str = "policy"
    interval: int = DEFAULT_INTERVAL
    platform: tuple[str, ...] = ("any",)
    queries: tuple[PackQuery, ...] = ()

    @property
    def size(self) -> int:
        """How many policies or queries the pack holds (what a person counts)."""
        return len(self.policies) if self.kind == "policy" else len(self.queries)

    def runs_on(self, platform: str) -> bool:
        """Whether a node of ``platform`` (``linux``...) is one this pack is for."""
        return platforms_include(self.platform, platform)

    @property
    def fingerprint(self) -> str:
        """Changes exactly when what one run asks changes (kind or any statement's name/SQL):
        a record can tell a host that changed from a pack that changed."""
        digest = hashlib.sha256(self.kind.encode())
        for statement in self.statements:
            for part in (statement.name, statement.sql):
                digest.update(b"\0" + part.encode())
        return digest.hexdigest()

    @property
    def statements(self) -> tuple[Statement, ...]:
        """Every (name, SQL) one run of this pack asks, in file order."""
        if self.kind != "policy":
            return tuple(Statement(q.name, q.query) for q in self.queries)
        out: list[Statement] = []
        for policy in self.policies:
            out.append(Statement(policy.name, policy.query))
            if policy.details != policy.query:
                out.append(Statement(f"{policy.name}:details", policy.details))
            if policy.unknown_if_rows is not None:
                out.append(Statement(f"{policy.name}:unknown_if_rows", policy.unknown_if_rows))
        return tuple(out)
