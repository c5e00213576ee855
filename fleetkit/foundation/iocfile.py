"""Indicators of compromise: ``--path``/``--sha256`` values and IOC files, strictly read.

An IOC file often comes from outside (a CERT advisory, a colleague's export);
it is hostile input like any other:

- Only a regular file is read (a FIFO, a device or a symlink to one is
  refused: it is opened with ``O_NONBLOCK`` and checked with ``fstat`` before a
  byte is read), at most :data:`MAX_IOC_FILE_BYTES`, at most
  :data:`MAX_INDICATORS` indicators.
- CSV (``path,sha256`` header): **one indicator per line**, lines end at
  ``\\n`` (an ``\\r`` right before it is dropped: CRLF files work). Every other
  character, including ``\\r`` elsewhere, U+0085, U+2028, U+2029 and the other
  Unicode line separators, is data: it stays inside the path it is in (file
  names may hold them, and hunting the literal name is the faithful reading),
  so it can neither split an indicator in two nor hide one. A quoted field never
  spans lines: an unterminated quote, text after a closing quote, more fields
  than the header or a line over :data:`MAX_LINE_LENGTH` is bad input naming
  the line (exit 2).
- YAML: a list of ``{path, sha256}`` mappings, read by the strict loader
  (no aliases, size-capped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from fleetkit.foundation.status import ConfigError, UsageError
from fleetkit.foundation.validate import SHA256, excerpt, matches
from fleetkit.foundation.yamlfile import parse_yaml, read_regular_file

MAX_INDICATORS = 5000
MAX_IOC_FILE_BYTES = 4 * 1024 * 1024
MAX_PATH_LENGTH = 4096
#: A CSV line: a path, a hash, quotes and separators.
MAX_LINE_LENGTH = 2 * MAX_PATH_LENGTH + 128


@dataclass(frozen=True)
class Indicator:
    """One thing to look for; ``path`` None = anywhere in the hash scope."""

    path: str | None
    sha256: str | None


# --------------------------------------------------------------------------- values


def normalize_sha256(value: str, *, where: str, file: str | None = None) -> str:
    text = value.strip().lower()
    if not matches(SHA256, text):
        raise ConfigError(
            f"expected a SHA-256 of exactly 64 hexadecimal characters, got {excerpt(value)}",
            file=file,
            key=where,
        )
    return text


def validate_path(value: str, *, where: str, file: str | None = None) -> str:
    """An absolute path, or a glob whose only wildcards are ``*`` and ``**``."""
    if "\x00" in value:
        raise ConfigError("path contains a NUL character", file=file, key=where)
    if not value.startswith("/"):
        raise ConfigError(f"path must be absolute, got {excerpt(value)}", file=file, key=where)
    if len(value) > MAX_PATH_LENGTH:
        raise ConfigError(f"path longer than {MAX_PATH_LENGTH} characters", file=file, key=where)
    if "*" in value and any(c in value for c in "?[]"):
        raise ConfigError(
            f"glob {excerpt(value)}: only * and ** are wildcards; ? and [...] are not supported",
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


def too_many(file: str | None) -> NoReturn:
    raise ConfigError(
        f"more than {MAX_INDICATORS} indicators; the limit keeps one hunt bounded: split the file",
        file=file,
    )


def gather_indicators(
    path: str | None, sha256: str | None, ioc_file: str | None, cwd: str
) -> list[Indicator]:
    """The indicators of ``--path``/``--sha256`` and ``--ioc-file``, duplicates collapsed."""
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
        too_many(ioc_file)
    return unique


# --------------------------------------------------------------------------- files


def read_ioc_file(path: Path) -> list[Indicator]:
    """CSV (header ``path,sha256``) or YAML (a list of ``{path, sha256}``), size-limited."""
    file = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".yaml", ".yml"):
        raise ConfigError("IOC file must be .csv (path,sha256 header) or .yaml/.yml", file=file)
    data = read_regular_file(
        path,
        limit=MAX_IOC_FILE_BYTES,
        what="IOC file",
        hint=f" (at most {MAX_INDICATORS} indicators per hunt): split it",
    )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", file=file, key=f"line {line}") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ConfigError("contains a NUL character", file=file, key=f"line {line}")
    if suffix == ".csv":
        return read_csv(text, file)
    return read_yaml(text, file)


def csv_lines(text: str) -> list[str]:
    """Physical lines: split at ``\\n`` only, one ``\\r`` before it dropped (CRLF)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def split_csv_line(line: str, *, file: str, where: str) -> list[str]:
    """RFC 4180 fields of one line; a quoted field never spans lines."""
    fields: list[str] = []
    index, length = 0, len(line)
    while True:
        if index < length and line[index] == '"':
            parts: list[str] = []
            index += 1
            while True:
                end = line.find('"', index)
                if end < 0:
                    raise ConfigError("unterminated quote", file=file, key=where)
                parts.append(line[index:end])
                if line.startswith('"', end + 1):
                    parts.append('"')
                    index = end + 2
                    continue
                index = end + 1
                break
            if index < length and line[index] != ",":
                raise ConfigError("text after a closing quote", file=file, key=where)
            fields.append("".join(parts))
        else:
            end = line.find(",", index)
            end = length if end < 0 else end
            fields.append(line[index:end])
            index = end
        if index >= length:
            return fields
        index += 1  # the comma


def read_csv(text: str, file: str) -> list[Indicator]:
    lines = csv_lines(text)
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_LENGTH:
            raise ConfigError(
                f"line longer than {MAX_LINE_LENGTH} characters (a path is at most "
                f"{MAX_PATH_LENGTH})",
                file=file,
                key=f"line {number}",
            )
    first = split_csv_line(lines[0], file=file, where="line 1") if lines else []
    header = [name.strip().lower() for name in first]
    if "path" not in header or "sha256" not in header:
        raise ConfigError(
            f"CSV header must name the columns path and sha256, got {excerpt(','.join(header))}",
            file=file,
            key="line 1",
        )
    out: list[Indicator] = []
    for number, line in enumerate(lines[1:], start=2):
        where = f"line {number}"
        fields = split_csv_line(line, file=file, where=where)
        if len(fields) > len(header):
            raise ConfigError(
                f"{len(fields)} fields, the header names {len(header)} (quote a path "
                "holding a comma)",
                file=file,
                key=where,
            )
        values = {name: value.strip() for name, value in zip(header, fields, strict=False)}
        if not any(values.values()):
            continue  # blank line
        if len(out) >= MAX_INDICATORS:
            too_many(file)
        out.append(
            indicator_from_values(values.get("path"), values.get("sha256"), file=file, where=where)
        )
    return out


def read_yaml(text: str, file: str) -> list[Indicator]:
    data = parse_yaml(text, file=file, max_bytes=MAX_IOC_FILE_BYTES)
    if not isinstance(data, list):
        raise ConfigError("expected a YAML list of {path, sha256} entries", file=file)
    if len(data) > MAX_INDICATORS:
        too_many(file)
    out: list[Indicator] = []
    for index, entry in enumerate(data):
        where = f"[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError("expected a mapping with path and/or sha256", file=file, key=where)
        unknown = sorted(str(k) for k in set(entry) - {"path", "sha256"})
        if unknown:
            raise ConfigError(
                "unknown key (allowed: path, sha256)",
                file=file,
                key=f"{where}.{excerpt(unknown[0], quoted=False)}",
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
