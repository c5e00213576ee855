"""One query of an osquery pack, converted: what it becomes in a fleetkit pack,
or why it is skipped, with every oddity met written into the import's report.

:mod:`fleetkit.ask.packimport` assembles the pack from these; a query's
conversion depends on nothing else in the pack (only the SQL rules and the
report travel with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetkit.ask.osquerypack import OSQUERY_QUERY_KEYS, JsonObject, shown
from fleetkit.ask.packfields import normalize_platform, platforms_include, split_platforms
from fleetkit.ask.packs import check_pack_sql
from fleetkit.ask.scope import SqlRules
from fleetkit.foundation.status import UsageError

#: fleetkit's compute nodes run osquery's Linux package; other platforms' queries are skipped.
FLEET_PLATFORM = "linux"
#: osquery query keys with no fleetkit equivalent, and why they can go.
DROPPED_QUERY_KEYS = {
    "version": "the fleet runs the osquery version pinned in settings",
    "shard": "fleetkit asks every matching node",
    "denylist": "a flag of osquery's watchdog, which does not watch a fleetkit job",
    "blacklist": "a flag of osquery's watchdog, which does not watch a fleetkit job",
    "startup_priority": "fleetkit runs a pack's queries together in one job",
}
#: osquery's logging flags: fleetkit records every run's whole result, so they change nothing.
FLAG_MEANING = {
    "snapshot": "fleetkit records every run's whole result (a snapshot) whatever it says",
    "removed": "fleetkit records every run whole, so the history shows removed rows anyway",
}


@dataclass
class ImportReport:
    """Report lines in the order met; repeated kinds of oddity grouped into one line."""

    lines: list[str] = field(default_factory=list)
    groups: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.lines.append(text)

    def group(self, head: str, item: str, tail: str = "") -> None:
        """One line per (head, tail): ``head item, item, ...tail``."""
        self.groups.setdefault((head, tail), []).append(item)

    def all(self) -> list[str]:
        grouped = [
            f"{head} {', '.join(items)}{tail}" for (head, tail), items in self.groups.items()
        ]
        return self.lines + grouped


@dataclass(frozen=True)
class Candidate:
    """A query kept: its osquery name (made valid and unique when the pack is written)."""

    raw_name: str
    description: str
    sql: str
    interval: int | None


def convert_query(
    raw_name: str, body: Any, rules: SqlRules, report: ImportReport
) -> Candidate | None:
    """One osquery query -> a candidate, or None (skipped, reported)."""
    subject = f"query {shown(raw_name)}"
    if not isinstance(body, JsonObject):
        report.note(f"{subject} skipped: expected an object, got {shown(body)}")
        return None
    for key in body.repeated():
        report.note(f"{subject} has {shown(key)} more than once: the last one was used")
    fields = body.last()
    for key in fields:
        if key not in OSQUERY_QUERY_KEYS:
            report.note(f"{subject}: unknown key {shown(key)} dropped")
    sql = fields.get("query")
    if not isinstance(sql, str) or not sql.strip():
        report.note(f"{subject} skipped: no query text (got {shown(sql)})")
        return None
    if "platform" in fields and not runs_on_fleet(fields["platform"], subject, report):
        report.note(
            f"{subject} skipped: platform {shown(fields['platform'])} "
            f"does not include {FLEET_PLATFORM} (the platform of fleetkit's nodes)"
        )
        return None
    refusal = _sql_refusal(sql.strip(), rules)
    if refusal:
        report.note(f"{subject} skipped: {refusal}")
        return None
    for key, why in DROPPED_QUERY_KEYS.items():
        if key in fields:
            report.group(f"{key} dropped from", shown(raw_name), f": {why}")
    for key, why in FLAG_MEANING.items():
        if key in fields:
            report.group(f"{key} {shown(fields[key])} noted on", shown(raw_name), f": {why}")
    return Candidate(
        raw_name=raw_name,
        description=_description(fields, subject, report),
        sql=sql.strip(),
        interval=_query_interval(fields, raw_name, report),
    )


def _sql_refusal(sql: str, rules: SqlRules) -> str:
    """Why fleetkit would refuse this SQL at load ('' when it would not)."""
    try:
        check_pack_sql(sql, rules)
    except UsageError as exc:
        return exc.detail.removesuffix("; nothing was submitted")
    return ""


def runs_on_fleet(value: Any, subject: str, report: ImportReport) -> bool:
    """Whether osquery's ``platform`` value includes fleetkit's nodes; odd names reported."""
    if not isinstance(value, str):
        report.note(f"{subject}: platform {shown(value)} is not a string: ignored")
        return True
    names = split_platforms(value)
    known: list[str] = []
    for raw in names:
        name = normalize_platform(raw)
        if name is None:
            report.note(f"{subject}: unknown platform {shown(raw)}")
        else:
            known.append(name)
    if names and not known:
        return False
    return platforms_include(known, FLEET_PLATFORM)


def _description(fields: dict[str, Any], subject: str, report: ImportReport) -> str:
    """osquery's description and value (why the query is worth running), both kept."""
    parts: list[str] = []
    for key in ("description", "value"):
        text = fields.get(key)
        if text is None:
            continue
        if not isinstance(text, str):
            report.note(f"{subject}: {key} {shown(text)} is not a string: dropped")
        elif text.strip():
            parts.append(text.strip() if key == "description" else f"Value: {text.strip()}")
    return " ".join(parts)


def _query_interval(fields: dict[str, Any], raw_name: str, report: ImportReport) -> int | None:
    """Seconds, from an integer or a string of digits (osquery's own packs use strings)."""
    value = fields.get("interval")
    subject = f"query {shown(raw_name)}"
    if value is None:
        report.group("no interval given in", shown(raw_name))
        return None
    seconds: int | None = None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        if len(value.strip()) <= 9:
            seconds = int(value.strip())
            item = f"{shown(raw_name)} ({shown(value)})"
            report.group("interval given as a string (read as seconds) in", item)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    if seconds is None or seconds <= 0:
        report.note(
            f"{subject}: interval {shown(value)} is not a positive number of seconds: ignored"
        )
        return None
    return seconds
