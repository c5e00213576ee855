"""``invoke hunt``: find indicator files (path and/or SHA-256) across the fleet.

Indicators come from ``--path``/``--sha256`` or ``--ioc-file`` (CSV with a
``path,sha256`` header, or a YAML list of ``{path, sha256}``); both may be given.

- ``--path /exact/file --sha256 H``: that file with that content.
- ``--path '/var/www/*/functions.php'``: ``*`` is the only wildcard and stays
  inside one directory level; ``**`` crosses levels (osquery's ``%%``). ``?``
  and ``[...]`` are refused in a glob (osquery would read them as glob syntax
  and silently miss the literal name). A path without ``*`` is exact, whatever
  characters it holds.
- ``--sha256 H`` alone: osquery's ``hash`` table needs a path or directory
  constraint, so a hash-only hunt looks in a scope of directory globs:
  :data:`DEFAULT_HASH_SCOPE`, or ``$FLEETKIT_HUNT_SCOPE`` (comma-separated
  globs). Files outside the scope are not hashed; say so to the user.
- A path without a hash reports every file found there (presence hunt).

The SQL and the hits are built in :mod:`fleetkit.ask.hunts`; this module reads
the indicators, asks through the engine and prints.

Size: at most :data:`MAX_INDICATORS` indicators (an IOC file of at most
:data:`MAX_IOC_FILE_BYTES`); more is refused with the limit named.

Exit status: 3 FINDINGS when anything was found (even if some nodes did not
answer); 1 FAILURE when some node could not answer and nothing was found
(the fleet is not proven clean); 0 clean. Cluster nodes that are not in the
inventory are left out and named.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from fleetkit.ask.engine import Asker, Engine
from fleetkit.ask.hunts import (
    HIT_COLUMNS,
    build_batches,
    exit_status_for_hunt,
    hunt_fleet,
    plan_targets,
)
from fleetkit.ask.scope import parse_scope
from fleetkit.foundation.output import CLOSED_EARLY, check_format, deliver, render_records
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.foundation.yamlfile import parse_yaml
from fleetkit.runtime import Runtime

# =========================================================================== IOC files
# Indicator-file parsing (Indicator, read_ioc_file, CSV/YAML readers, validators).
# Moving to fleetkit/foundation/iocfile.py (H4): kept here unchanged, in one block,
# so the imports can be swapped at merge.

MAX_INDICATORS = 5000
MAX_IOC_FILE_BYTES = 4 * 1024 * 1024
MAX_PATH_LENGTH = 4096
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Indicator:
    """One thing to look for; ``path`` None = anywhere in the hash scope."""

    path: str | None
    sha256: str | None


def normalize_sha256(value: str, *, where: str, file: str | None = None) -> str:
    text = value.strip().lower()
    if not _SHA256_RE.match(text):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ConfigError(
            f"expected a SHA-256 of exactly 64 hexadecimal characters, got {shown!r}",
            file=file,
            key=where,
        )
    return text


def validate_path(value: str, *, where: str, file: str | None = None) -> str:
    if "\x00" in value:
        raise ConfigError("path contains a NUL character", file=file, key=where)
    if not value.startswith("/"):
        raise ConfigError(f"path must be absolute, got {value!r}", file=file, key=where)
    if len(value) > MAX_PATH_LENGTH:
        raise ConfigError(f"path longer than {MAX_PATH_LENGTH} characters", file=file, key=where)
    if "*" in value and any(c in value for c in "?[]"):
        raise ConfigError(
            f"glob {value!r}: only * and ** are wildcards; ? and [...] are not supported",
            file=file,
            key=where,
        )
    return value


def indicator_from_values(
    path: str | None, sha256: str | None, *, file: str | None, where: str
) -> Indicator:
    path = path or None
    sha256 = sha256 or None
    if path is None and sha256 is None:
        raise ConfigError("an indicator needs a path, a sha256 or both", file=file, key=where)
    return Indicator(
        path=None if path is None else validate_path(path, where=f"{where}.path", file=file),
        sha256=(
            None if sha256 is None else normalize_sha256(sha256, where=f"{where}.sha256", file=file)
        ),
    )


def read_ioc_file(path: Path) -> list[Indicator]:
    """CSV (header ``path,sha256``) or YAML (a list of ``{path, sha256}``), size-limited."""
    file = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError("IOC file not found", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    if size > MAX_IOC_FILE_BYTES:
        raise ConfigError(
            f"IOC file is {size} bytes; the limit is {MAX_IOC_FILE_BYTES} bytes "
            f"(at most {MAX_INDICATORS} indicators per hunt): split it",
            file=file,
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    if path.suffix.lower() == ".csv":
        return _read_csv(text, file)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _read_yaml(text, file)
    raise ConfigError("IOC file must be .csv (path,sha256 header) or .yaml/.yml", file=file)


def _read_csv(text: str, file: str) -> list[Indicator]:
    reader = csv.DictReader(text.splitlines())
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    if "path" not in header or "sha256" not in header:
        raise ConfigError(
            f"CSV header must name the columns path and sha256, got {','.join(header)!r}",
            file=file,
            key="line 1",
        )
    reader.fieldnames = header
    out: list[Indicator] = []
    for row in reader:
        line = reader.line_num
        if len(out) >= MAX_INDICATORS:
            _too_many(file)
        values = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
        if not any(values.values()):
            continue  # blank line
        out.append(
            indicator_from_values(
                values.get("path"),
                values.get("sha256"),
                file=file,
                where=f"line {line}",
            )
        )
    return out


def _read_yaml(text: str, file: str) -> list[Indicator]:
    data = parse_yaml(text, file=file)
    if not isinstance(data, list):
        raise ConfigError("expected a YAML list of {path, sha256} entries", file=file)
    if len(data) > MAX_INDICATORS:
        _too_many(file)
    out: list[Indicator] = []
    for index, entry in enumerate(data):
        where = f"[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError("expected a mapping with path and/or sha256", file=file, key=where)
        unknown = sorted(set(entry) - {"path", "sha256"})
        if unknown:
            raise ConfigError(
                "unknown key (allowed: path, sha256)", file=file, key=f"{where}.{unknown[0]}"
            )
        path, sha = entry.get("path"), entry.get("sha256")
        for name, value in (("path", path), ("sha256", sha)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(
                    f"expected a string, got {type(value).__name__}",
                    file=file,
                    key=f"{where}.{name}",
                )
        out.append(indicator_from_values(path, sha, file=file, where=where))
    return out


def _too_many(file: str | None) -> None:
    raise ConfigError(
        f"more than {MAX_INDICATORS} indicators; the limit keeps one hunt bounded: split the file",
        file=file,
    )


# =========================================================================== end of IOC files

SCOPE_ENV = "FLEETKIT_HUNT_SCOPE"
#: Where a hash-only hunt looks (osquery cannot hash "everything"): web roots,
#: temporary directories, local binaries, home directories one level deep.
#: Every file in scope is read and hashed on every node, so vendor trees such as
#: /opt or /usr are left out on purpose; widen it with $FLEETKIT_HUNT_SCOPE.
DEFAULT_HASH_SCOPE = (
    "/var/www/**",
    "/srv/**",
    "/tmp/**",
    "/var/tmp/**",
    "/dev/shm/**",
    "/usr/local/bin/*",
    "/usr/local/sbin/*",
    "/root/*",
    "/home/*/*",
)


def hash_scope(
    environ: dict[str, str] | None, configured: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """The directory globs a hash-only indicator is looked for in.

    ``$FLEETKIT_HUNT_SCOPE`` wins over the settings' ``hunt.scope``, which wins
    over :data:`DEFAULT_HASH_SCOPE`.
    """
    raw = (environ or {}).get(SCOPE_ENV, "")
    if not raw.strip():
        return configured or DEFAULT_HASH_SCOPE
    scope = tuple(part.strip() for part in raw.split(",") if part.strip())
    for glob in scope:
        validate_path(glob, where=SCOPE_ENV)
    return scope


def gather_indicators(
    path: str | None, sha256: str | None, ioc_file: str | None, cwd: str
) -> list[Indicator]:
    indicators: list[Indicator] = []
    if path or sha256:
        try:
            indicators.append(
                Indicator(
                    path=validate_path(path, where="--path") if path else None,
                    sha256=normalize_sha256(sha256, where="--sha256") if sha256 else None,
                )
            )
        except ConfigError as exc:
            raise UsageError(exc.detail, key=exc.key) from None
    if ioc_file:
        indicators.extend(read_ioc_file(Path(cwd, ioc_file)))
    if not indicators:
        raise UsageError("give --path, --sha256 (or both) or --ioc-file", key="hunt")
    unique = list(dict.fromkeys(indicators))  # frozen dataclass: equal indicators collapse
    if len(unique) > MAX_INDICATORS:
        _too_many(ioc_file)
    return unique


def run(
    rt: Runtime,
    *,
    path: str | None,
    sha256: str | None,
    ioc_file: str | None,
    hosts: str,
    select: str,
    via: str,
    output_format: str,
    ask: Asker | None = None,
) -> ExitStatus:
    output_format = check_format(output_format)
    indicators = gather_indicators(path, sha256, ioc_file, rt.env.cwd)
    hash_globs = hash_scope(dict(rt.env.environ), rt.settings.hunt_scope)
    batches = build_batches(plan_targets(indicators, hash_globs))
    engine = Engine(rt)
    questions = [engine.question(sql) for sql in batches]  # every batch checked before any runs
    scope = parse_scope(rt, select=select, hosts=hosts, via=via)  # bad input: exit 2, nothing sent
    if any(i.path is None for i in indicators):
        rt.env.say(
            terminal_safe(
                f"hash-only indicators are looked for in: {', '.join(hash_globs)} (${SCOPE_ENV})"
            )
        )
    rt.env.say(f"hunting {len(indicators)} indicator(s) in {len(batches)} fleet query(ies)")
    result = hunt_fleet(questions, ask or engine.ask, scope)
    data = render_records(result.hits, HIT_COLUMNS, output_format)
    if deliver(rt.env, lambda sink: sink.write(data), None):
        rt.env.say(f"hunt: {CLOSED_EARLY}")
    for node_id, problem in result.problems.items():
        rt.env.say(terminal_safe(f"{node_id}: could not answer: {problem}"))
    for node_id, reason in result.excluded.items():
        rt.env.say(terminal_safe(f"{node_id}: excluded: {reason}"))
    if result.hits:
        infected = result.infected_hosts
        rt.env.say(terminal_safe(f"FOUND on {len(infected)} host(s): {', '.join(infected)}"))
    elif result.problems or not result.answered:
        rt.env.say("nothing found on the nodes that answered; the fleet is NOT proven clean")
    else:
        rt.env.say(f"clean: nothing found on {len(result.answered)} node(s)")
    return exit_status_for_hunt(result)
