"""What to ask and whom: the user's options parsed once, at the command boundary.

A command turns its raw options into a :class:`Question` and a :class:`Scope`
before anything is contacted; every bad value is a :class:`UsageError`
(exit 2) naming the option. Below this point nothing is a string to split
again: hosts are inventory :class:`Host` objects, the selector is parsed, the
timeout is a positive number of seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from fleetkit.ask.osqueryi import argv_safe_sql
from fleetkit.foundation.inventory import Host, parse_hosts_option
from fleetkit.foundation.selectors import Selector, parse_selector
from fleetkit.foundation.sqlguard import refuse_denied_tables, refuse_redaction_bypass
from fleetkit.foundation.status import UsageError

if TYPE_CHECKING:  # the answer and merge modules import this one: keep SSH and HTTP out
    from fleetkit.foundation.settings import Settings
    from fleetkit.runtime import Runtime


class Via(StrEnum):
    """The transport that carries the question to the nodes."""

    BACALHAU = "bacalhau"
    SSH = "ssh"

    @classmethod
    def parse(cls, value: str) -> Via:
        try:
            return cls((value or "").strip().lower())
        except ValueError:
            choices = ", ".join(v.value for v in cls)
            raise UsageError(f"must be one of {choices}, got {value!r}", key="--via") from None


@dataclass(frozen=True)
class SqlRules:
    """What the settings forbid any SQL fleetkit sends, whoever wrote it.

    ``denied_tables`` (settings ``osquery.disabled_tables``): no statement may
    read them. ``redacted_columns`` (settings ``query.redact_columns``): their
    values are blanked by result column name, so no statement may carry them
    out under another name (an alias, another case, an expression, a
    condition; :func:`~fleetkit.foundation.sqlguard.refuse_redaction_bypass`
    has the rule). One value, so a place that checks SQL cannot check one
    rule and forget the other.
    """

    denied_tables: tuple[str, ...] = ()
    redacted_columns: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> SqlRules:
        return cls(tuple(settings.osquery.disabled_tables), tuple(settings.query.redact_columns))


#: Nothing denied, nothing redacted (packs read before any settings apply, tests).
NO_RULES = SqlRules()


@dataclass(frozen=True)
class Question:
    """One osquery SQL statement, checked: not empty, no NUL, nothing :class:`SqlRules` forbid.

    Build it with :meth:`parse`, the one place where the SQL guard runs for
    every question fleetkit sends (query, policy, hunt, packs), before
    submission.
    """

    sql: str

    @classmethod
    def parse(cls, sql: str, *, rules: SqlRules) -> Question:
        """UsageError (exit 2) naming the table or column a forbidden statement reads."""
        if not sql or not sql.strip():
            raise UsageError("the SQL query is empty", key="sql")
        if "\x00" in sql:
            raise UsageError("the SQL query contains a NUL character", key="sql")
        refuse_denied_tables(sql, rules.denied_tables)
        refuse_redaction_bypass(sql, rules.redacted_columns)
        return cls(sql)

    @property
    def argv(self) -> str:
        """The SQL as osqueryi's positional argument (see :func:`argv_safe_sql`)."""
        return argv_safe_sql(self.sql)


@dataclass(frozen=True)
class Scope:
    """Which nodes are asked, over which transport, for how long."""

    selector: Selector
    #: Inventory compute hosts named by ``--hosts``; None = no restriction.
    hosts: tuple[Host, ...] | None
    via: Via
    #: Seconds the whole fleet has to answer.
    timeout: float
    #: Merge answers of cluster nodes that are not inventory hosts (marked as such).
    include_unknown_nodes: bool = False

    @property
    def host_names(self) -> frozenset[str] | None:
        return None if self.hosts is None else frozenset(h.name for h in self.hosts)

    def narrowed(self, hosts: Iterable[Host]) -> Scope:
        """The same scope limited to ``hosts`` (policy asks follow-up queries of some nodes)."""
        return replace(self, hosts=tuple(hosts))


def parse_scope(
    rt: Runtime,
    *,
    select: str = "",
    hosts: str = "",
    via: str = "bacalhau",
    timeout: float | None = None,
    include_unknown_nodes: bool = False,
) -> Scope:
    """The user's options as a :class:`Scope`; raises :class:`UsageError` on any bad value."""
    transport = Via.parse(via)
    selector = parse_selector(select)
    seconds = check_timeout(timeout, rt.settings.query.timeout)
    return Scope(
        selector=selector,
        hosts=selected_hosts(rt, hosts),
        via=transport,
        timeout=seconds,
        include_unknown_nodes=include_unknown_nodes,
    )


def check_timeout(timeout: float | None, default: float) -> float:
    value = default if timeout is None else timeout
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"must be a positive number of seconds, got {value!r}", key="--timeout")
    return float(value)


def selected_hosts(rt: Runtime, hosts: str) -> tuple[Host, ...] | None:
    """The compute hosts named by ``--hosts`` (None = no restriction).

    Unknown names are bad input (exit 2); naming a host that is not a compute
    node (the control plane) is too, since it never runs queries. A group
    that holds the control plane as well only contributes its compute hosts.
    """
    patterns = parse_hosts_option(hosts)
    if not patterns:
        return None
    chosen = rt.inventory.select(patterns)
    explicit = [h.name for h in chosen if not h.is_compute and h.name in patterns]
    if explicit:
        raise UsageError(f"{', '.join(explicit)} is not a compute node", key="--hosts")
    return tuple(h for h in chosen if h.is_compute)
