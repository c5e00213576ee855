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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetkit.ask.importquery import (
    DROPPED_QUERY_KEYS,
    FLEET_PLATFORM,
    Candidate,
    ImportReport,
    convert_query,
    runs_on_fleet,
)
from fleetkit.ask.osquerypack import (
    OSQUERY_PACK_KEYS,
    JsonObject,
    read_osquery_pack,
    shown,
)
from fleetkit.ask.packfields import (
    DEFAULT_INTERVAL,
    INTERVAL_CEILING,
    INTERVAL_FLOOR,
    format_interval,
    unique_name,
    valid_name,
)
from fleetkit.ask.packs import MAX_ITEMS
from fleetkit.ask.packwrite import Sql, pack_yaml
from fleetkit.ask.scope import SqlRules
from fleetkit.foundation.status import ConfigError, UsageError

IMPORT_KINDS = ("hunt", "inventory")
POLICY_REFUSAL = (
    "--kind policy is refused: a policy's pass condition is never inferred from an osquery "
    "pack (a row can mean a violation or compliance). Import it as --kind hunt (any row is a "
    "finding) or --kind inventory (rows are recorded), or write a policy pack by hand: each "
    "policy needs `meaning: fail_if_rows` (rows are violations) or `pass_if_rows` (rows prove "
    "compliance), plus `details`, `severity` and `resolution` (format: fleetkit/packs/README.md)"
)


def check_import_kind(kind: str) -> None:
    if kind == "policy":
        raise UsageError(POLICY_REFUSAL)
    if kind not in IMPORT_KINDS:
        raise UsageError(f"--kind must be hunt or inventory, got {shown(kind)}")


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
    report = ImportReport()
    if not isinstance(root, JsonObject):
        raise ConfigError(
            'expected a JSON object with a "queries" object', file=file, key="(top level)"
        )
    pairs = _top_level(root, report, file=file)
    pack_runs_here = True
    platform = root.last().get("platform")
    if platform is not None:
        pack_runs_here = runs_on_fleet(platform, "the pack", report)
    candidates: list[Candidate] = []
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
        candidate = convert_query(raw_name, body, rules, report)
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


def _top_level(root: JsonObject, report: ImportReport, *, file: str) -> JsonObject:
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


def _pack_name(path: Path, report: ImportReport) -> str:
    raw = path.stem if path.suffix in (".conf", ".json") else path.name
    name = valid_name(raw, fallback="imported")
    if name != raw:
        report.note(f"pack name {shown(raw)} (from the file name) written as {shown(name)}")
    return name


def _pack_interval(candidates: Sequence[Candidate], report: ImportReport) -> int:
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
    candidates: Sequence[Candidate],
    source_name: str,
    report: ImportReport,
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


def _query_names(candidates: Sequence[Candidate], report: ImportReport) -> list[str]:
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
