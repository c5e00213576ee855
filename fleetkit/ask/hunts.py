"""Indicator hunts on the fleet: indicators to osquery SQL, answers to hits.

A file is a hit when it sits at a hunted location and its SHA-256 is one of
the hashes hunted there (or the location was hunted without a hash).

Every literal reaches SQL through :func:`fleetkit.foundation.sqlguard.sql_string_literal`
(quotes doubled, NUL refused); nothing is concatenated raw. Globs use ``LIKE``
(what osquery turns into a filesystem glob) AND ``GLOB`` (case-sensitive,
exact on the literal parts, since LIKE is case-insensitive and treats ``%``
and ``_`` in names as wildcards). Indicators are split into batches whose SQL
stays under :data:`MAX_SQL_BYTES` (one fleet job per batch; Linux caps one
argument at 128 KiB).

Here (below the commands) so that ``hunt`` and scheduled hunts build the
same SQL; an indicator is anything shaped like :class:`IndicatorLike`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fleetkit.ask.engine import Asker
from fleetkit.ask.rows import HOSTNAME, NODE_ID
from fleetkit.ask.scope import Question, Scope
from fleetkit.foundation.sqlguard import sql_string_literal
from fleetkit.foundation.status import ExitStatus, UsageError

MAX_SQL_BYTES = 48 * 1024
#: Columns of a hit, in output order.
HIT_COLUMNS = ("hostname", "nodeID", "path", "sha256")


class IndicatorLike(Protocol):
    """One thing to look for; ``path`` None = anywhere in the hash scope."""

    @property
    def path(self) -> str | None: ...
    @property
    def sha256(self) -> str | None: ...


@dataclass(frozen=True)
class Location:
    """Where to look, as osquery constraints."""

    glob: str  # the user's spelling

    @property
    def is_glob(self) -> bool:
        return "*" in self.glob

    def where(self) -> str:
        """The SQL condition selecting this location from ``hash`` (literals quoted)."""
        if not self.is_glob:
            return f"path = {sql_string_literal(self.glob)}"
        like = self.glob.replace("**", "%%").replace("*", "%")
        exact = self.glob.replace("**", "*")
        return f"path LIKE {sql_string_literal(like)} AND path GLOB {sql_string_literal(exact)}"


@dataclass
class Target:
    """One location and the hashes hunted there (empty = any file there)."""

    location: Location
    hashes: list[str] = field(default_factory=list)
    any_file: bool = False

    def sql(self) -> str:
        condition = self.location.where()
        if not self.any_file:
            listed = ", ".join(sql_string_literal(h) for h in sorted(set(self.hashes)))
            condition += f" AND sha256 IN ({listed})"
        return f"SELECT path, sha256 FROM hash WHERE {condition}"


def plan_targets(indicators: Sequence[IndicatorLike], scope: Sequence[str]) -> list[Target]:
    """Group indicators by location; hash-only ones go to every scope glob."""
    targets: dict[str, Target] = {}
    hash_only = [i.sha256 for i in indicators if i.path is None and i.sha256]
    for indicator in indicators:
        if indicator.path is None:
            continue
        target = targets.setdefault(indicator.path, Target(Location(indicator.path)))
        if indicator.sha256 is None:
            target.any_file = True
        else:
            target.hashes.append(indicator.sha256)
    if hash_only:
        for glob in scope:
            target = targets.setdefault(glob, Target(Location(glob)))
            target.hashes.extend(h for h in hash_only if h)
    return list(targets.values())


def build_batches(targets: Sequence[Target], limit: int = MAX_SQL_BYTES) -> list[str]:
    """SQL statements (UNION of per-location SELECTs), each at most ``limit`` bytes."""
    pieces: list[str] = []
    for target in targets:
        pieces.extend(_split_target(target, limit))
    batches: list[list[str]] = [[]]
    size = 0
    glue = len(" UNION ")
    for piece in pieces:
        cost = len(piece.encode()) + glue
        if batches[-1] and size + cost > limit:
            batches.append([])
            size = 0
        batches[-1].append(piece)
        size += cost
    return [" UNION ".join(batch) for batch in batches if batch]


def _split_target(target: Target, limit: int) -> list[str]:
    """One SELECT, or several when its hash list alone would exceed the limit."""
    sql = target.sql()
    if len(sql.encode()) <= limit or target.any_file:
        if len(sql.encode()) > limit:
            raise UsageError(f"path {target.location.glob[:80]!r}... makes a query too long")
        return [sql]
    hashes = sorted(set(target.hashes))
    half = len(hashes) // 2
    return [
        *_split_target(Target(target.location, hashes[:half]), limit),
        *_split_target(Target(target.location, hashes[half:]), limit),
    ]


# --------------------------------------------------------------------------- running


@dataclass
class HuntResult:
    hits: list[dict[str, str]] = field(default_factory=list)
    #: node ID -> why it could not answer (any batch)
    problems: dict[str, str] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    #: Cluster nodes that are not inventory hosts -> why they were left out.
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def infected_hosts(self) -> list[str]:
        """Inventory names (what ``quarantine --hosts`` takes), not machine hostnames."""
        return list(dict.fromkeys(hit["nodeID"] for hit in self.hits))


def hunt_fleet(questions: Sequence[Question], ask: Asker, scope: Scope) -> HuntResult:
    """Ask every batch; a hit is reported once per node, path and hash."""
    result = HuntResult()
    seen: set[tuple[str, str, str]] = set()
    for question in questions:
        with ask(question, scope) as answer:
            for node in answer.excluded:
                result.excluded.setdefault(node.node_id, node.error or "")
            for node in answer.counted:
                if not node.ok:
                    result.problems.setdefault(
                        node.node_id, f"{node.status.value}: {node.error or 'no answer'}"
                    )
                    continue
                result.answered.add(node.node_id)
                tags = dict(answer.tags(node).pairs())  # redacted like rows when listed
                for row in node.iter_rows():
                    key = (node.node_id, row.get("path", ""), row.get("sha256", ""))
                    if key not in seen:
                        seen.add(key)
                        result.hits.append(
                            {
                                "hostname": tags[HOSTNAME],
                                "nodeID": tags[NODE_ID],
                                "path": key[1],
                                "sha256": key[2],
                            }
                        )
    result.answered -= set(result.problems)
    return result


def exit_status_for_hunt(result: HuntResult) -> ExitStatus:
    """3 when anything was found; 1 when some node could not answer; 0 clean."""
    if result.hits:
        return ExitStatus.FINDINGS
    if result.problems or not result.answered:
        return ExitStatus.FAILURE
    return ExitStatus.SUCCESS
