"""Packs: named sets of osquery questions, read strictly before anything is sent.

Three kinds, because "what does a row mean" is the one thing a pack must say
and it is never guessed:

- ``policy``    each policy has a ``query`` and an explicit ``meaning``
                (``fail_if_rows`` / ``pass_if_rows``), a ``details`` query and
                an optional ``unknown_if_rows`` query (``invoke policy`` reads
                them into PASS / FAIL / UNKNOWN / ERROR). The default kind, so
                packs written before kinds existed load unchanged.
- ``hunt``      ``queries``: any row any query returns is a finding.
- ``inventory`` ``queries``: rows are recorded, never judged.

Every pack has an ``interval`` (``1h``, ``15m``, ``30s``; at least 10 s;
default 1h) and a ``platform`` (``linux``, ``posix``, ``darwin``, ``windows``,
``any`` or a comma list; default ``any``). A pack is scheduled and run as one
unit (one job per node), so interval and platform belong to the pack, not to
its queries; :attr:`Pack.statements` is the stable list of (name, SQL) that
one run asks. The model is :mod:`fleetkit.ask.packmodel`; this module reads
and validates pack files into it.

Every error is a :class:`ConfigError` naming the file and the key (exit 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fleetkit.ask.packfields import (
    DEFAULT_INTERVAL,
    parse_interval,
    parse_platform,
    read_choice,
    read_name,
    read_optional_text,
    read_text,
)

# The model, re-exported: callers import every pack noun from here.
from fleetkit.ask.packmodel import Pack as Pack
from fleetkit.ask.packmodel import PackQuery as PackQuery
from fleetkit.ask.packmodel import Policy as Policy
from fleetkit.ask.packmodel import Statement as Statement
from fleetkit.ask.scope import NO_RULES, Question, SqlRules

# Where pack files are (shared with provisioning, which copies the watch's packs).
from fleetkit.foundation.packfiles import PACK_SUFFIXES as PACK_SUFFIXES
from fleetkit.foundation.packfiles import SHIPPED_PACKS_DIR as SHIPPED_PACKS_DIR
from fleetkit.foundation.packfiles import find_pack_files as find_pack_files
from fleetkit.foundation.packfiles import pack_files_in as pack_files_in
from fleetkit.foundation.status import ConfigError, UsageError
from fleetkit.foundation.yamlfile import PACK_BYTES, expect_mapping, load_yaml, reject_unknown_keys

KINDS = ("policy", "hunt", "inventory")
PACK_KEYS = {"pack", "description", "kind", "interval", "platform", "policies", "queries"}
POLICY_KEYS = {
    "name",
    "description",
    "severity",
    "meaning",
    "query",
    "details",
    "unknown_if_rows",
    "resolution",
}
#: A hunt query may say how bad a hit is and what to do; an inventory query only what it lists.
HUNT_QUERY_KEYS = {"name", "description", "query", "severity", "resolution"}
INVENTORY_QUERY_KEYS = {"name", "description", "query"}
SEVERITIES = ("low", "medium", "high", "critical")
MEANINGS = ("pass_if_rows", "fail_if_rows")
#: A pack runs as one job per node: keep that job (and its argv) reasonable.
MAX_ITEMS = 256
MAX_SQL_CHARS = 32 * 1024
MAX_PACK_SQL_CHARS = 256 * 1024


# --------------------------------------------------------------------------- finding packs


def default_pack_files(settings_base_dir: str) -> list[Path]:
    """:func:`find_pack_files`, refusing an empty result (``invoke policy`` needs a pack)."""
    files = find_pack_files(settings_base_dir)
    if not files:
        raise ConfigError("no policy packs found (packs/*.yaml); pass --pack FILE", key="--pack")
    return files


# --------------------------------------------------------------------------- loading


def load_packs(files: Iterable[Path], rules: SqlRules) -> list[Pack]:
    """Read and validate every pack; policy keys (pack/name) and pack names must be unique."""
    packs: list[Pack] = []
    seen: dict[str, str] = {}
    for path in files:
        pack = load_pack(path, rules)
        check_unique_across_packs(pack, seen)
        packs.append(pack)
    return packs


def check_unique_across_packs(pack: Pack, seen: dict[str, str]) -> None:
    """Refuse a policy key or pack name some earlier pack has; ``seen`` maps them to files."""
    for policy in pack.policies:
        if policy.key in seen:
            raise ConfigError(
                f"policy {policy.key!r} is also defined in {seen[policy.key]}",
                file=pack.source,
                key="policies",
            )
    pack_key = f"pack {pack.name}"
    if pack_key in seen:
        raise ConfigError(
            f"pack {pack.name!r} is also defined in {seen[pack_key]}", file=pack.source, key="pack"
        )
    for policy in pack.policies:
        seen[policy.key] = pack.source
    seen[pack_key] = pack.source


def load_pack(path: Path, rules: SqlRules = NO_RULES) -> Pack:
    """One pack file, its SQL checked against ``rules`` (the settings' :class:`SqlRules`)."""
    return pack_from_data(load_yaml(path, max_bytes=PACK_BYTES), file=str(path), rules=rules)


def pack_from_data(data: Any, *, file: str, rules: SqlRules = NO_RULES) -> Pack:
    """Validate one parsed pack document (``file`` names it in errors)."""
    data = expect_mapping(data, file=file, key="(top level)")
    _refuse_osquery_format(data, file=file)
    reject_unknown_keys(data, PACK_KEYS, file=file, key="")
    name = read_name(data, "pack", file=file, key="pack", what="pack")
    kind = data.get("kind", "policy")
    if kind not in KINDS:
        raise ConfigError(
            f"unknown kind {kind!r} (allowed: {', '.join(KINDS)})", file=file, key="kind"
        )
    interval = DEFAULT_INTERVAL
    if "interval" in data:
        interval = parse_interval(data["interval"], file=file, key="interval")
    platform: tuple[str, ...] = ("any",)
    if "platform" in data:
        platform = parse_platform(data["platform"], file=file, key="platform")
    policies: tuple[Policy, ...] = ()
    queries: tuple[PackQuery, ...] = ()
    if kind == "policy":
        policies = _read_policies(data, pack=name, file=file, rules=rules)
    else:
        queries = _read_queries(data, pack=name, kind=kind, file=file, rules=rules)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("expected a string", file=file, key="description")
    pack = Pack(
        name=name,
        description=description,
        policies=policies,
        source=file,
        kind=kind,
        interval=interval,
        platform=platform,
        queries=queries,
    )
    total = sum(len(statement.sql) for statement in pack.statements)
    if total > MAX_PACK_SQL_CHARS:
        raise ConfigError(
            f"the pack's SQL is {total} characters in all: at most {MAX_PACK_SQL_CHARS} "
            "(one run sends all of it in one job)",
            file=file,
            key="policies" if kind == "policy" else "queries",
        )
    return pack


def _refuse_osquery_format(data: dict[str, Any], *, file: str) -> None:
    """An osquery pack (``queries`` as a mapping) gets a pointer to the importer."""
    if "pack" not in data and isinstance(data.get("queries"), dict):
        raise ConfigError(
            "this looks like an osquery pack (queries as a mapping): convert it with "
            "`invoke packs.import FILE --kind hunt|inventory`",
            file=file,
            key="queries",
        )


def _items(data: dict[str, Any], *, kind: str, file: str) -> list[Any]:
    """The pack's non-empty list of policies or queries, refusing the other kind's key."""
    wanted, other = ("policies", "queries") if kind == "policy" else ("queries", "policies")
    if other in data:
        raise ConfigError(
            (
                "a policy pack lists `policies` (each with an explicit meaning); "
                "`queries` are for kind: hunt or inventory"
            )
            if kind == "policy"
            else f"a {kind} pack lists `queries`; `policies` need kind: policy",
            file=file,
            key=other,
        )
    raw = data.get(wanted)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"expected a non-empty list of {wanted}", file=file, key=wanted)
    if len(raw) > MAX_ITEMS:
        raise ConfigError(
            f"{len(raw)} {wanted}: at most {MAX_ITEMS} (a pack runs as one job per node)",
            file=file,
            key=wanted,
        )
    return raw


def _read_policies(
    data: dict[str, Any], *, pack: str, file: str, rules: SqlRules
) -> tuple[Policy, ...]:
    policies: list[Policy] = []
    names: set[str] = set()
    for index, raw in enumerate(_items(data, kind="policy", file=file)):
        policy = _read_policy(raw, pack=pack, file=file, where=f"policies[{index}]")
        if policy.name in names:
            raise ConfigError(
                f"duplicate policy name {policy.name!r}", file=file, key=f"policies[{index}].name"
            )
        names.add(policy.name)
        for field_name in ("query", "details", "unknown_if_rows"):
            sql = getattr(policy, field_name)
            if sql is not None:
                _check_sql(sql, rules, file=file, key=f"policies[{index}].{field_name}")
        policies.append(policy)
    return tuple(policies)


def _read_policy(raw: Any, *, pack: str, file: str, where: str) -> Policy:
    entry = expect_mapping(raw, file=file, key=where)
    if not entry:
        raise ConfigError("empty policy", file=file, key=where)
    reject_unknown_keys(entry, POLICY_KEYS, file=file, key=where)
    name = read_name(entry, "name", file=file, key=f"{where}.name", what="policy")
    severity = read_choice(entry, "severity", SEVERITIES, file=file, where=where)
    meaning = read_choice(entry, "meaning", MEANINGS, file=file, where=where)
    unknown = entry.get("unknown_if_rows")
    return Policy(
        pack=pack,
        name=name,
        description=read_text(entry, "description", file=file, key=f"{where}.description"),
        severity=severity,
        meaning=meaning,
        query=read_text(entry, "query", file=file, key=f"{where}.query").strip(),
        details=read_text(entry, "details", file=file, key=f"{where}.details").strip(),
        resolution=read_text(entry, "resolution", file=file, key=f"{where}.resolution"),
        unknown_if_rows=(
            None
            if unknown is None
            else read_text(
                entry, "unknown_if_rows", file=file, key=f"{where}.unknown_if_rows"
            ).strip()
        ),
        source=file,
    )


def _read_queries(
    data: dict[str, Any], *, pack: str, kind: str, file: str, rules: SqlRules
) -> tuple[PackQuery, ...]:
    allowed = HUNT_QUERY_KEYS if kind == "hunt" else INVENTORY_QUERY_KEYS
    queries: list[PackQuery] = []
    names: set[str] = set()
    for index, raw in enumerate(_items(data, kind=kind, file=file)):
        where = f"queries[{index}]"
        entry = expect_mapping(raw, file=file, key=where)
        if not entry:
            raise ConfigError("empty query", file=file, key=where)
        reject_unknown_keys(entry, allowed, file=file, key=where)
        name = read_name(entry, "name", file=file, key=f"{where}.name", what="query")
        if name in names:
            raise ConfigError(f"duplicate query name {name!r}", file=file, key=f"{where}.name")
        names.add(name)
        sql = read_text(entry, "query", file=file, key=f"{where}.query").strip()
        _check_sql(sql, rules, file=file, key=f"{where}.query")
        queries.append(
            PackQuery(
                pack=pack,
                name=name,
                description=read_optional_text(entry, "description", file=file, where=where),
                query=sql,
                severity=(
                    read_choice(entry, "severity", SEVERITIES, file=file, where=where)
                    if "severity" in entry
                    else None
                ),
                resolution=read_optional_text(entry, "resolution", file=file, where=where),
                source=file,
            )
        )
    return tuple(queries)


# --------------------------------------------------------------------------- SQL


def check_pack_sql(sql: str, rules: SqlRules) -> None:
    """UsageError when a pack may not send ``sql``: too long, or refused by
    :meth:`Question.parse` (denied table, redacted column), the parse every
    question goes through; the loader and the importer both ask here."""
    if len(sql) > MAX_SQL_CHARS:
        raise UsageError(f"query is {len(sql)} characters long: at most {MAX_SQL_CHARS}")
    Question.parse(sql, rules=rules)


def _check_sql(sql: str, rules: SqlRules, *, file: str, key: str) -> None:
    """A pack that asks what the rules forbid is refused when loaded, before anything is sent."""
    try:
        check_pack_sql(sql, rules)
    except UsageError as exc:
        raise ConfigError(exc.detail, file=file, key=key) from None
