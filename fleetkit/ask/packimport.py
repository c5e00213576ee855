"""Converting an osquery pack into a fleetkit hunt or inventory pack, saying what changed.

The import is lenient where osquery is (string intervals, comma platform
lists, comments) and candid about it: every oddity it met, and every change
it made, is one line of the report. What it never does is decide what a row
means beyond the kind the user chose: a hunt pack's rows are findings, an
inventory pack's rows are recorded, and a *policy* (which needs an explicit
pass condition) is refused outright.

A fleetkit pack runs as one unit on one interval; osquery schedules each
query on its own. The pack runs every *shortest* interval its queries asked
for (nothing is checked less often than its author wanted), and the report
says so when they differed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetkit.ask.osquerypack import (
    OSQUERY_PACK_KEYS,
    OSQUERY_QUERY_KEYS,
    JsonObject,
    read_osquery_pack,
    shown,
)
from fleetkit.ask.packfields import (
    DEFAULT_INTERVAL,
    INTERVAL_CEILING,
    INTERVAL_FLOOR,
    format_interval,
    normalize_platform,
    platforms_include,
    split_platforms,
    unique_name,
    valid_name,
)
from fleetkit.ask.packs import MAX_ITEMS, check_pack_sql
from fleetkit.ask.packwrite import Sql, pack_yaml
from fleetkit.ask.scope import SqlRules
from fleetkit.foundation.status import ConfigError, UsageError

#: fleetkit's compute nodes run osquery's Linux package; other platforms' queries are skipped.
FLEET_PLATFORM = "linux"
IMPORT_KINDS = ("hunt", "inventory")
POLICY_REFUSAL = (
    "--kind policy is refused: a policy's pass condition is never inferred from an osquery "
    "pack (a row can mean a violation or compliance). Import it as --kind hunt (any row is a "
    "finding) or --kind inventory (rows are recorded), or write a policy pack by hand: each "
    "policy needs `meaning: fail_if_rows` (rows are violations) or `pass_if_rows` (rows prove "
    "compliance), plus `details`, `severity` and `resolution` (format: fleetkit/packs/README.md)"
)
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


def check_import_kind(kind: str) -> None:
    if kind == "policy":
        raise UsageError(POLICY_REFUSAL)
    if kind not in IMPORT_KINDS:
        raise UsageError(f"--kind must be hunt or inventory, got {shown(kind)}")


@dataclass
class _Report:
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
class _Candidate:
    raw_name: str
    description: str
    sql: str
    interval: int | None


@dataclass(frozen=True)
class Conversion:
    """The imported pack (``text``, None when nothing could be kept) and the report."""

    name: str
    kind: str
    interval: int
    kept: int
    skipped: int
    notes: tuple[str, ...]
    text: str | None


def import_osquery_pack(path: Path, *, kind: str, rules: SqlRules) -> Conversion:
    return convert_osquery_pack(read_osquery_pack(path), file=str(path), kind=kind, rules=rules)


def convert_osquery_pack(root: Any, *, file: str, kind: str, rules: SqlRules) -> Conversion:
    """``root`` as :func:`read_osquery_pack` parsed it -> a fleetkit pack of ``kind``."""
    check_import_kind(kind)
    report = _Report()
    if not isinstance(root, JsonObject):
        raise ConfigError(
            'expected a JSON object with a "queries" object', file=file, key="(top level)"
        )
    pairs = _top_level(root, report, file=file)
    pack_runs_here = True
    platform = root.last().get("platform")
    if platform is not None:
        pack_runs_here = _runs_on_fleet(platform, "the pack", report)
    candidates: list[_Candidate] = []
    definitions: dict[str, list[Any]] = {}
    skipped = 0
    for raw_name, body in pairs:
        earlier = definitions.setdefault(raw_name, [])
        if body in earlier:
            report.note(f"query {shown(raw_name)} is defined again, identically: copy dropped")
            continue
        if earlier:
            report.note(
                f"query name {shown(raw_name)} is given again with a different definition: "
                "both kept (JSON readers would silently keep only the last)"
            )
        earlier.append(body)
        if not pack_runs_here:
            report.note(f"query {shown(raw_name)} skipped: the pack is for {shown(platform)}")
            skipped += 1
            continue
        candidate = _convert_query(raw_name, body, rules, report)
        if candidate is None:
            skipped += 1
        else:
            candidates.append(candidate)
    name = _pack_name(Path(file), report)
    interval = _pack_interval(candidates, report)
    text = _pack_text(name, kind, interval, candidates, Path(file).name, report, rules)
    return Conversion(
        name=name,
        kind=kind,
        interval=interval,
        kept=len(candidates),
        skipped=skipped,
        notes=tuple(report.all()),
        text=text,
    )


def _top_level(root: JsonObject, report: _Report, *, file: str) -> JsonObject:
    """Report the top level's oddities; every (name, body) pair of every ``queries`` object."""
    for key in root.repeated():
        report.note(
            f'the top level has "queries" {len(list(root.values_of(key)))} times: all were read'
            if key == "queries"
            else f"the top level has {shown(key)} more than once: the last one was used"
        )
    top = root.last()
    for key in top:
        if key not in OSQUERY_PACK_KEYS:
            report.note(f"unknown top-level key {shown(key)} dropped")
    if "version" in top:
        report.note(
            f"pack version {shown(top['version'])} (minimum osquery version) dropped: "
            f"{DROPPED_QUERY_KEYS['version']}"
        )
    if "discovery" in top:
        report.note(
            "discovery queries dropped: the pack runs on every node of its platform, "
            "not only where discovery queries return rows"
        )
    if "shard" in top:
        report.note(f"pack shard {shown(top['shard'])} dropped: fleetkit asks every matching node")
    objects = [v for v in root.values_of("queries") if isinstance(v, JsonObject)]
    if not objects:
        raise ConfigError("expected an object of named queries", file=file, key="queries")
    pairs = JsonObject(pair for obj in objects for pair in obj)
    if not pairs:
        raise ConfigError("the pack has no queries", file=file, key="queries")
    if len(pairs) > MAX_ITEMS:
        raise ConfigError(
            f"{len(pairs)} queries: at most {MAX_ITEMS} per pack (split the file)",
            file=file,
            key="queries",
        )
    return pairs


def _convert_query(raw_name: str, body: Any, rules: SqlRules, report: _Report) -> _Candidate | None:
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
    if "platform" in fields and not _runs_on_fleet(fields["platform"], subject, report):
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
    return _Candidate(
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


def _runs_on_fleet(value: Any, subject: str, report: _Report) -> bool:
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


def _description(fields: dict[str, Any], subject: str, report: _Report) -> str:
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


def _query_interval(fields: dict[str, Any], raw_name: str, report: _Report) -> int | None:
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


def _pack_name(path: Path, report: _Report) -> str:
    raw = path.stem if path.suffix in (".conf", ".json") else path.name
    name = valid_name(raw, fallback="imported")
    if name != raw:
        report.note(f"pack name {shown(raw)} (from the file name) written as {shown(name)}")
    return name


def _pack_interval(candidates: Sequence[_Candidate], report: _Report) -> int:
    asked = sorted({c.interval for c in candidates if c.interval is not None})
    if not asked:
        if candidates:
            default = format_interval(DEFAULT_INTERVAL)
            report.note(f"no query gave an interval: the pack runs every {default} (the default)")
        return DEFAULT_INTERVAL
    chosen = min(max(asked[0], INTERVAL_FLOOR), INTERVAL_CEILING)
    if len(asked) > 1:
        report.note(
            f"queries asked for intervals from {format_interval(asked[0])} to "
            f"{format_interval(asked[-1])}: the pack runs every {format_interval(asked[0])} "
            "(the shortest: a pack runs as one job)"
        )
    if chosen != asked[0]:
        beyond = (
            "below fleetkit's floor" if chosen == INTERVAL_FLOOR else "above fleetkit's ceiling"
        )
        report.note(
            f"interval {format_interval(asked[0])} is {beyond} of {format_interval(chosen)}: "
            f"the pack runs every {format_interval(chosen)}"
        )
    return chosen


def _pack_text(
    name: str,
    kind: str,
    interval: int,
    candidates: Sequence[_Candidate],
    source_name: str,
    report: _Report,
    rules: SqlRules,
) -> str | None:
    """The pack YAML (checked by loading it back), or None when no query was kept."""
    if not candidates:
        return None
    names = _query_names(candidates, report)
    queries: list[dict[str, str]] = []
    for query_name, candidate in zip(names, candidates, strict=True):
        entry = {"name": query_name}
        if candidate.description:
            entry["description"] = candidate.description
        entry["query"] = Sql(candidate.sql)
        queries.append(entry)
    document = {
        "pack": name,
        "kind": kind,
        "description": f"Imported from the osquery pack {source_name}",
        "interval": format_interval(interval),
        "platform": FLEET_PLATFORM,
        "queries": queries,
    }
    meaning = "any row is a finding" if kind == "hunt" else "rows are recorded, never judged"
    header = (
        f"Imported from an osquery pack by `invoke packs.import` (kind {kind}: {meaning}).",
        "The import report listed everything that was renamed, dropped or skipped.",
    )
    return pack_yaml(document, header=header, rules=rules)


def _query_names(candidates: Sequence[_Candidate], report: _Report) -> list[str]:
    """Valid unique names; a name already valid keeps it unless an earlier query has it."""
    reserved = {c.raw_name for c in candidates if valid_name(c.raw_name) == c.raw_name}
    taken: set[str] = set()
    names: list[str] = []
    for candidate in candidates:
        raw = candidate.raw_name
        if raw in reserved and raw not in taken:
            name = raw
        else:
            name = unique_name(valid_name(raw, fallback="query"), taken | reserved)
            why = (
                "an earlier query has that name"
                if raw in taken
                else "names hold letters, digits, . _ - only"
            )
            report.note(f"query {shown(raw)} renamed {shown(name)} ({why})")
        taken.add(name)
        names.append(name)
    return names
