"""``invoke policy``: compliance packs, one verdict per host per policy.

A pack is YAML (``packs/*.yaml``, user-writable): each policy has a ``query``
whose ``meaning`` says how to read it (``pass_if_rows``: the host complies when
rows come back; ``fail_if_rows``: rows are violations), a ``details`` query
listing the offending rows, an optional ``unknown_if_rows`` query, a
``resolution`` and a ``severity``.

Verdicts are three-valued plus one (Zentral's model, not Fleet's two-valued
one, because a wrong PASS is the worst outcome of a compliance check):

- PASS    the host answered and complies;
- FAIL    the host answered and violates the policy (details list why);
- UNKNOWN the host answered but osquery cannot decide: its ``unknown_if_rows``
          query returned rows (e.g. SSH keys whose algorithm osquery does not
          report) and nothing proved a violation;
- ERROR   the host did not answer (unreachable, failed, timed out, missing).

Exit status (documented precedence, highest first): 3 FINDINGS when any policy
FAILED on any host (even when other hosts errored: the violation is proven);
1 FAILURE when some host ERRORed and nothing failed (compliance is unproven);
0 otherwise. UNKNOWN alone exits 0 with a warning naming each undecided host:
exit 3 means a proven violation, and a fleet of compliant Ed25519 keys would
otherwise never exit 0; scripts that must treat UNKNOWN as non-compliant read
the ``status`` field of ``--format json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from fleetkit.ask.results import NodeResult
from fleetkit.commands.query import FleetAnswer, QueryRequest, ask_fleet
from fleetkit.foundation.inventory import NAME_RE, parse_hosts_option
from fleetkit.foundation.output import check_format, write_records
from fleetkit.foundation.secrets import REDACTED
from fleetkit.foundation.sqlguard import refuse_denied_tables
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from fleetkit.foundation.yamlfile import expect_mapping, load_yaml, reject_unknown_keys
from fleetkit.runtime import Runtime

#: Asks the fleet one question; injected by tests (default: ``query.ask_fleet``).
Asker = Callable[[QueryRequest], FleetAnswer]

PACK_KEYS = {"pack", "description", "platform", "policies"}
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
SEVERITIES = ("low", "medium", "high", "critical")
MEANINGS = ("pass_if_rows", "fail_if_rows")
#: The packs shipped with fleetkit (package data); ``packs/`` beside fleetkit.yaml wins.
SHIPPED_PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"
    ERROR = "ERROR"


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
class Pack:
    name: str
    description: str
    policies: tuple[Policy, ...]
    source: str


@dataclass
class HostVerdict:
    """One host's result for one policy."""

    policy: Policy
    node_id: str
    hostname: str
    verdict: Verdict
    details: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """The machine-readable shape (json/ndjson/csv)."""
        return {
            "pack": self.policy.pack,
            "policy": self.policy.name,
            "severity": self.policy.severity,
            "nodeID": self.node_id,
            "hostname": self.hostname,
            "status": self.verdict.value,
            "details": self.details,
            "error": self.error,
            "resolution": self.policy.resolution if self.verdict is not Verdict.PASS else "",
        }


# --------------------------------------------------------------------------- packs


def default_pack_files(settings_base_dir: str) -> list[Path]:
    """``packs/*.yaml`` beside fleetkit.yaml when that directory exists, else the shipped packs."""
    for directory in (Path(settings_base_dir) / "packs", SHIPPED_PACKS_DIR):
        if directory.is_dir():
            files = sorted(
                p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            if files:
                return files
    raise ConfigError("no policy packs found (packs/*.yaml); pass --pack FILE", key="--pack")


def load_packs(files: Iterable[Path], denied_tables: Iterable[str]) -> list[Pack]:
    """Read and validate every pack; a policy key (pack/name) must be unique."""
    denied = tuple(denied_tables)
    packs: list[Pack] = []
    seen: dict[str, str] = {}
    for path in files:
        pack = load_pack(path, denied)
        for policy in pack.policies:
            if policy.key in seen:
                raise ConfigError(
                    f"policy {policy.key!r} is also defined in {seen[policy.key]}",
                    file=pack.source,
                    key="policies",
                )
            seen[policy.key] = pack.source
        packs.append(pack)
    return packs


def load_pack(path: Path, denied_tables: Iterable[str] = ()) -> Pack:
    file = str(path)
    data = expect_mapping(load_yaml(path), file=file, key="(top level)")
    reject_unknown_keys(data, PACK_KEYS, file=file, key="")
    name = _text(data, "pack", file=file, key="pack")
    if not NAME_RE.match(name):
        raise ConfigError(f"invalid pack name {name!r}", file=file, key="pack")
    raw_policies = data.get("policies")
    if not isinstance(raw_policies, list) or not raw_policies:
        raise ConfigError("expected a non-empty list of policies", file=file, key="policies")
    policies: list[Policy] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_policies):
        policy = _read_policy(raw, pack=name, file=file, where=f"policies[{index}]")
        if policy.name in names:
            raise ConfigError(
                f"duplicate policy name {policy.name!r}", file=file, key=f"policies[{index}].name"
            )
        names.add(policy.name)
        _refuse_denied(policy, tuple(denied_tables), file=file, where=f"policies[{index}]")
        policies.append(policy)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("expected a string", file=file, key="description")
    return Pack(name=name, description=description, policies=tuple(policies), source=file)


def _read_policy(raw: Any, *, pack: str, file: str, where: str) -> Policy:
    entry = expect_mapping(raw, file=file, key=where)
    if not entry:
        raise ConfigError("empty policy", file=file, key=where)
    reject_unknown_keys(entry, POLICY_KEYS, file=file, key=where)
    name = _text(entry, "name", file=file, key=f"{where}.name")
    if not NAME_RE.match(name):
        raise ConfigError(f"invalid policy name {name!r}", file=file, key=f"{where}.name")
    severity = _text(entry, "severity", file=file, key=f"{where}.severity")
    if severity not in SEVERITIES:
        raise ConfigError(
            f"must be one of {', '.join(SEVERITIES)}, got {severity!r}",
            file=file,
            key=f"{where}.severity",
        )
    meaning = _text(entry, "meaning", file=file, key=f"{where}.meaning")
    if meaning not in MEANINGS:
        raise ConfigError(
            f"must be one of {', '.join(MEANINGS)}, got {meaning!r}",
            file=file,
            key=f"{where}.meaning",
        )
    unknown = entry.get("unknown_if_rows")
    return Policy(
        pack=pack,
        name=name,
        description=_text(entry, "description", file=file, key=f"{where}.description"),
        severity=severity,
        meaning=meaning,
        query=_text(entry, "query", file=file, key=f"{where}.query").strip(),
        details=_text(entry, "details", file=file, key=f"{where}.details").strip(),
        resolution=_text(entry, "resolution", file=file, key=f"{where}.resolution"),
        unknown_if_rows=(
            None
            if unknown is None
            else _text(entry, "unknown_if_rows", file=file, key=f"{where}.unknown_if_rows").strip()
        ),
        source=file,
    )


def _text(data: dict[str, Any], name: str, *, file: str, key: str) -> str:
    value = data.get(name)
    if value is None:
        raise ConfigError("required", file=file, key=key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty string, got {value!r}", file=file, key=key)
    return value


def _refuse_denied(policy: Policy, denied: tuple[str, ...], *, file: str, where: str) -> None:
    """A pack that reads a denied table is refused when loaded, before anything is sent."""
    for field_name in ("query", "details", "unknown_if_rows"):
        sql = getattr(policy, field_name)
        if sql is None:
            continue
        try:
            refuse_denied_tables(sql, denied)
        except UsageError as exc:
            raise ConfigError(exc.detail, file=file, key=f"{where}.{field_name}") from None


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Scope:
    """Which nodes a policy run covers (the user's --hosts / --select / --via)."""

    select: str = ""
    hosts: str = ""
    via: str = "bacalhau"
    timeout: float | None = None

    def request(self, sql: str, only: Sequence[str] | None = None) -> QueryRequest:
        """A request for ``sql``; ``only`` narrows it to some already-answering nodes."""
        hosts = ",".join(only) if only is not None else self.hosts
        return QueryRequest(
            sql=sql, select=self.select, hosts=hosts, via=self.via, timeout=self.timeout
        )


def evaluate_policy(
    policy: Policy, ask: Asker, scope: Scope, inventory_names: set[str]
) -> list[HostVerdict]:
    """Run one policy: the main query, then details (failing hosts) and unknown (passing hosts)."""
    main = ask(scope.request(policy.query))
    verdicts: dict[str, HostVerdict] = {}
    failing: list[str] = []
    passing: list[str] = []
    main_rows: dict[str, list[dict[str, str]]] = {}
    for node in main.nodes:
        rows = node.checked_rows()
        if not node.ok:
            verdicts[node.node_id] = _error(policy, node)
            continue
        main_rows[node.node_id] = rows
        if policy.complies(rows):
            passing.append(node.node_id)
            verdicts[node.node_id] = HostVerdict(policy, node.node_id, node.hostname, Verdict.PASS)
        else:
            failing.append(node.node_id)
            verdicts[node.node_id] = HostVerdict(policy, node.node_id, node.hostname, Verdict.FAIL)
    if failing:
        if policy.details == policy.query:
            for node_id in failing:
                verdicts[node_id].details = main_rows[node_id]
        else:
            _attach_details(policy, ask, scope, failing, inventory_names, verdicts)
    if passing and policy.unknown_if_rows:
        _settle_unknown(policy, ask, scope, passing, inventory_names, verdicts)
    return [verdicts[node.node_id] for node in main.nodes]


def _narrow(node_ids: list[str], inventory_names: set[str]) -> list[str] | None:
    """Ask only these nodes when they are inventory names (node ID = inventory name)."""
    return node_ids if all(n in inventory_names for n in node_ids) else None


def _attach_details(
    policy: Policy,
    ask: Asker,
    scope: Scope,
    failing: list[str],
    inventory_names: set[str],
    verdicts: dict[str, HostVerdict],
) -> None:
    answer = ask(scope.request(policy.details, _narrow(failing, inventory_names)))
    for node in answer.nodes:
        verdict = verdicts.get(node.node_id)
        if verdict is None or verdict.verdict is not Verdict.FAIL:
            continue
        rows = node.checked_rows()
        if node.ok:
            verdict.details = rows
        else:
            # The violation is proven by the main query; only the listing is missing.
            verdict.error = f"details query: {node.error or node.status.value}"


def _settle_unknown(
    policy: Policy,
    ask: Asker,
    scope: Scope,
    passing: list[str],
    inventory_names: set[str],
    verdicts: dict[str, HostVerdict],
) -> None:
    assert policy.unknown_if_rows is not None
    answer = ask(scope.request(policy.unknown_if_rows, _narrow(passing, inventory_names)))
    answered: set[str] = set()
    for node in answer.nodes:
        verdict = verdicts.get(node.node_id)
        if verdict is None or verdict.verdict is not Verdict.PASS:
            continue
        answered.add(node.node_id)
        rows = node.checked_rows()
        if not node.ok:
            # A PASS that could not be confirmed is not a PASS.
            verdicts[node.node_id] = _error(policy, node, prefix="unknown_if_rows query: ")
        elif rows:
            verdict.verdict = Verdict.UNKNOWN
            verdict.details = rows
    for node_id in passing:
        if node_id not in answered:
            verdict = verdicts[node_id]
            verdict.verdict = Verdict.ERROR
            verdict.error = "unknown_if_rows query: node did not answer"


def _error(policy: Policy, node: NodeResult, prefix: str = "") -> HostVerdict:
    return HostVerdict(
        policy,
        node.node_id,
        node.hostname,
        Verdict.ERROR,
        error=f"{prefix}{node.status.value}: {node.error or 'no answer'}",
    )


def exit_status_for_verdicts(verdicts: Iterable[HostVerdict]) -> ExitStatus:
    """FAIL (3) wins over ERROR (1); PASS and UNKNOWN alone are 0 (see module doc)."""
    seen = {v.verdict for v in verdicts}
    if Verdict.FAIL in seen:
        return ExitStatus.FINDINGS
    if Verdict.ERROR in seen or not seen:
        return ExitStatus.FAILURE
    return ExitStatus.SUCCESS


# --------------------------------------------------------------------------- output


def redact_rows(rows: list[dict[str, str]], columns: Iterable[str]) -> list[dict[str, str]]:
    """settings.query.redact_columns applies to every row fleetkit prints, details included."""
    hidden = set(columns)
    if not hidden:
        return rows
    return [{k: REDACTED if k in hidden else v for k, v in row.items()} for row in rows]


#: Columns of the csv and ndjson records (one per host per policy).
RECORD_COLUMNS = (
    "pack",
    "policy",
    "severity",
    "nodeID",
    "hostname",
    "status",
    "details",
    "error",
    "resolution",
)


def write_verdicts(verdicts: Sequence[HostVerdict], output_format: str, out: TextIO) -> None:
    """Machine formats on stdout; ``table`` is for people (one line per host per policy)."""
    if output_format == "table":
        out.write(render_table(verdicts))
        return
    records = [v.record() for v in verdicts]
    if output_format == "csv":  # one cell per field: nested details as JSON text
        for record in records:
            record["details"] = json.dumps(record["details"], ensure_ascii=False)
            record["error"] = record["error"] or ""
    write_records(records, RECORD_COLUMNS, output_format, out)


def render_table(verdicts: Sequence[HostVerdict]) -> str:
    """Aligned table; FAIL/UNKNOWN rows are followed by their detail rows, indented."""
    header = ("POLICY", "SEVERITY", "HOST", "STATUS", "DETAILS")
    lines: list[tuple[str, ...]] = []
    extra: dict[int, list[str]] = {}
    for verdict in verdicts:
        host = verdict.hostname or verdict.node_id
        if verdict.node_id and verdict.hostname and verdict.node_id != verdict.hostname:
            host = f"{verdict.hostname} ({verdict.node_id})"
        summary = verdict.error or (f"{len(verdict.details)} row(s)" if verdict.details else "")
        lines.append(
            (verdict.policy.key, verdict.policy.severity, host, verdict.verdict.value, summary)
        )
        if verdict.details:
            extra[len(lines) - 1] = [
                "    " + ", ".join(f"{k}={v}" for k, v in row.items()) for row in verdict.details
            ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = [_line(header, widths)]
    for index, row in enumerate(lines):
        text.append(_line(row, widths))
        text.extend(extra.get(index, []))
    return "\n".join(text) + "\n"


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def summarize(verdicts: Sequence[HostVerdict], say: Callable[[str], None]) -> None:
    """Human closing lines on stderr: counts per policy, then every non-PASS host named."""
    by_policy: dict[str, list[HostVerdict]] = {}
    for verdict in verdicts:
        by_policy.setdefault(verdict.policy.key, []).append(verdict)
    for key, items in by_policy.items():
        counts = {v: sum(1 for i in items if i.verdict is v) for v in Verdict}
        text = ", ".join(f"{n} {v.value}" for v, n in counts.items() if n)
        say(f"{key}: {text}")
    for verdict in verdicts:
        if verdict.verdict is Verdict.UNKNOWN:
            say(
                f"warning: {verdict.policy.key}: {verdict.hostname or verdict.node_id} UNKNOWN: "
                "osquery cannot decide; see the details rows"
            )
        elif verdict.verdict is Verdict.ERROR:
            host = verdict.hostname or verdict.node_id
            say(f"{verdict.policy.key}: {host} ERROR: {verdict.error}")


# --------------------------------------------------------------------------- command


def run(
    rt: Runtime,
    *,
    packs: list[str],
    hosts: str,
    select: str,
    via: str,
    output_format: str,
    ask: Asker | None = None,
) -> ExitStatus:
    output_format = check_format(output_format)
    settings = rt.settings
    rt.inventory.select(parse_hosts_option(hosts))  # unknown names: exit 2 before anything runs
    files = [Path(rt.env.cwd, p) for p in packs] if packs else default_pack_files(settings.base_dir)
    loaded = load_packs(files, settings.osquery.disabled_tables)
    asker: Asker = ask or (lambda request: ask_fleet(rt, request))
    scope = Scope(select=select, hosts=hosts, via=via)
    inventory_names = {h.name for h in rt.inventory.hosts}
    verdicts: list[HostVerdict] = []
    policies = [policy for pack in loaded for policy in pack.policies]
    for index, policy in enumerate(policies, 1):
        rt.env.progress(f"policy {index}/{len(policies)}: {policy.key}")
        verdicts.extend(evaluate_policy(policy, asker, scope, inventory_names))
    rt.env.end_progress()
    for verdict in verdicts:
        verdict.details = redact_rows(verdict.details, settings.query.redact_columns)
    write_verdicts(verdicts, output_format, rt.env.stdout)
    rt.env.stdout.flush()
    summarize(verdicts, rt.env.say)
    status = exit_status_for_verdicts(verdicts)
    rt.env.say(closing_line(verdicts, status))
    return status


def closing_line(verdicts: Sequence[HostVerdict], status: ExitStatus) -> str:
    """The last stderr line: what the exit status means for this run."""

    def hosts(verdict: Verdict) -> list[str]:
        names = (v.hostname or v.node_id for v in verdicts if v.verdict is verdict)
        return list(dict.fromkeys(names))

    if not verdicts:
        return "policy: no node answered: nothing was checked (exit 1)"
    if status is ExitStatus.FINDINGS:
        failed = hosts(Verdict.FAIL)
        return f"policy: violations on {len(failed)} host(s): {', '.join(failed)} (exit 3)"
    if status is ExitStatus.FAILURE:
        errored = hosts(Verdict.ERROR)
        return (
            f"policy: no violation found, but {', '.join(errored)} did not answer: "
            "compliance is unproven (exit 1)"
        )
    unknown = hosts(Verdict.UNKNOWN)
    if unknown:
        return f"policy: no violation found; undecided on {', '.join(unknown)} (exit 0)"
    return "policy: every host passed every policy (exit 0)"
