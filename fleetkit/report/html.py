"""The fleet report as one self-contained, static HTML file.

Why it is built this way:

- Everything a host sent (names, evidence, paths, SQL, row values) is hostile.
  The page is rendered by Jinja2 with ``autoescape=True`` and a ``finalize``
  hook that first makes control characters visible (``\\x1b``, as on the
  terminal), so *every* ``{{ value }}`` is escaped; no host value is ever put
  into a URL, a script or a style, and nothing is marked safe except the
  report's own CSS and script.
- A Content-Security-Policy meta tag (``default-src 'none'``) allows only the
  report's own inline style and script, by SHA-256 hash: if an escaping bug
  ever let markup through, the browser would still run nothing and load
  nothing.
- The tables are rendered on the server side, so the page reads fine with
  JavaScript off; the small script only adds sorting and filtering.
- A 1,000-host fleet has 20,000 policy cells. A trend that never changed is
  a CSS line (no SVG); one that did is one SVG path of steps (only the
  changes cost bytes), coloured by CSS. Tables of more than ``LAZY_ROWS``
  rows are grids whose rows off screen are not laid out
  (``content-visibility: auto``): the page paints in about a second.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from fleetkit.foundation.atomic import atomic_write
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.report.model import (
    Coverage,
    FleetReport,
    PolicyCell,
    PolicyMatrix,
    PolicyStatus,
)

ASSETS = Path(__file__).resolve().parent / "assets"

#: Longest host-supplied text shown in one cell (the rest is cut with "…").
CELL_LIMIT = 300
#: Hits shown per hunt (the rest are counted).
HIT_LIMIT = 200
#: A table with more rows lays out only the rows on screen (content-visibility): the
#: policy matrix and the readiness table of a 1,000-host fleet.
LAZY_ROWS = 200

#: Lone surrogates cannot be encoded as UTF-8; a hostile JSON string can hold them.
_SURROGATE = re.compile("[\ud800-\udfff]")

#: CSS class of a status (cells, sparkline colour, sort rank in the script).
STATUS_CLASS = {
    PolicyStatus.FAIL: "f",
    PolicyStatus.ERROR: "e",
    PolicyStatus.UNKNOWN: "u",
    PolicyStatus.PASS: "p",
}
#: Height of a status in a sparkline (viewBox 8 high): up is bad.
_LEVEL = {
    PolicyStatus.FAIL: 1,
    PolicyStatus.ERROR: 3,
    PolicyStatus.UNKNOWN: 5,
    PolicyStatus.PASS: 7,
}

COVERAGE_CLASSES = ("c-rows", "c-empty", "c-failed", "c-timeout", "c-missing", "c-excluded")


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control and invisible characters shown as escapes, as on a terminal."""
    safe = terminal_safe(text, keep_newlines=keep_newlines)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", safe)


def multiline(text: str, limit: int = CELL_LIMIT) -> Markup:
    """Escaped text that keeps its line breaks (for ``<pre>``: SQL a person wrote)."""
    return Markup.escape(visible(clip(text, limit), keep_newlines=True))


def oneline(text: str, limit: int = CELL_LIMIT) -> str:
    """Whitespace runs (line breaks included) as single spaces, for a one-line summary."""
    return clip(" ".join(text.split()), limit)


def breakable(text: str, limit: int = CELL_LIMIT) -> Markup:
    """Escaped text that may wrap after ``/``, ``_``, ``.`` and ``-`` (long policy names)."""
    parts = re.split(r"(?<=[/_.-])", clip(text, limit))
    return Markup("<wbr>").join(Markup.escape(visible(part)) for part in parts)


def number(value: int) -> str:
    return f"{value:,}"


def noun(value: int, singular: str, plural: str | None = None, *, count: bool = False) -> str:
    """``host``/``hosts`` by ``value`` (with the number first when ``count``)."""
    word = singular if value == 1 else (plural or singular + "s")
    return f"{value:,} {word}" if count else word


def clip(text: str, limit: int = CELL_LIMIT) -> str:
    """``text`` cut to ``limit`` characters with a note of how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def when(value: datetime | None) -> str:
    """A time as shown everywhere in the report: UTC, to the minute."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def sparkline_path(trend: tuple[PolicyStatus | None, ...], width: int) -> str:
    """An SVG path of steps, one unit per run, right-aligned in ``width`` runs.

    Only changes cost bytes: twenty passes then ten failures are ``M0 7H20V1H30``.
    A run in which the host was not evaluated leaves a gap.
    """
    parts: list[str] = []
    x = width - len(trend)
    drawing: int | None = None  # the level of the stroke in progress
    for status in trend:
        if status is None:
            if drawing is not None:
                parts.append(f"H{x}")
            drawing = None
        else:
            level = _LEVEL[status]
            if drawing is None:
                parts.append(f"M{x} {level}")
            elif level != drawing:
                parts.append(f"H{x}V{level}")
            drawing = level
        x += 1
    if drawing is not None:
        parts.append(f"H{x}")
    return "".join(parts)


def is_flat(trend: tuple[PolicyStatus | None, ...], width: int) -> bool:
    """The same status in every one of ``width`` runs (drawn as a plain CSS line, no SVG).

    Most cells of a healthy fleet are flat; an SVG each would make a
    1,000-host page twice as slow to lay out.
    """
    return len(trend) == width and trend[0] is not None and trend.count(trend[0]) == width


@dataclass(frozen=True)
class Segment:
    """One coloured part of a coverage bar (viewBox 100 wide)."""

    css: str
    label: str
    count: int
    x: float
    width: float


def coverage_segments(coverage: Coverage) -> tuple[Segment, ...]:
    """The stacked bar of a run's nodes: answered with rows, empty, failed, ... excluded."""
    total = sum(count for _, count in coverage.parts())
    segments: list[Segment] = []
    x = 0.0
    for css, (label, count) in zip(COVERAGE_CLASSES, coverage.parts(), strict=True):
        if count and total:
            width = round(100 * count / total, 2)
            segments.append(Segment(css, label, count, round(x, 2), width))
            x += width
    return tuple(segments)


@dataclass(frozen=True)
class MatrixCell:
    css: str
    label: str
    since: str
    #: "flat": a steady line (CSS); "": no trend; else an SVG path (see sparkline_path).
    trend: str


@dataclass(frozen=True)
class MatrixRow:
    host: str
    failing: int
    cells: tuple[MatrixCell, ...]


FLAT = "flat"


def matrix_rows(matrix: PolicyMatrix) -> list[MatrixRow]:
    """The matrix as the template draws it: failing hosts first, then by name."""
    width = trend_width(matrix)
    blank = MatrixCell("n", "—", "", "")
    memo: dict[PolicyCell, MatrixCell] = {}

    def shown(cell: PolicyCell | None) -> MatrixCell:
        if cell is None:
            return blank
        if cell not in memo:
            failing_since = cell.first_failed_at if cell.status is PolicyStatus.FAIL else None
            since = failing_since.astimezone(UTC).strftime("%Y-%m-%d") if failing_since else ""
            if not cell.trend:
                trend = ""
            elif is_flat(cell.trend, width):
                trend = FLAT
            else:
                trend = sparkline_path(cell.trend, width)
            memo[cell] = MatrixCell(STATUS_CLASS[cell.status], cell.status.value, since, trend)
        return memo[cell]

    rows = sorted(matrix.hosts, key=lambda row: (-row.failing, row.host))
    return [MatrixRow(row.host, row.failing, tuple(shown(c) for c in row.cells)) for row in rows]


def trend_width(matrix: PolicyMatrix) -> int:
    """How many runs a sparkline spans: the matrix's runs (or the longest trend)."""
    longest = max((len(c.trend) for row in matrix.hosts for c in row.cells if c), default=0)
    return max(len(matrix.runs), longest, 1)


def matrix_css(matrix: PolicyMatrix) -> str:
    """The matrix's grid columns (host, failing count, one per policy)."""
    return f".m tr{{grid-template-columns:150px 64px repeat({len(matrix.policies)},112px)}}\n"


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy(style: str, script: str) -> str:
    """Nothing may load; only this report's own inline style and script may apply."""
    return (
        "default-src 'none'; "
        f"style-src {_csp_hash(style)}; "
        f"script-src {_csp_hash(script)}; "
        "base-uri 'none'; form-action 'none'"
    )


def _finalize(value: Any) -> Any:
    """Runs on every ``{{ }}`` before autoescape: control characters become visible."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return visible(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ASSETS)),
        autoescape=True,
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["clip"] = clip
    env.filters["multiline"] = multiline
    env.filters["oneline"] = oneline
    env.filters["breakable"] = breakable
    env.filters["number"] = number
    env.filters["noun"] = noun
    return env


_ENV = _environment()


def render_html(model: FleetReport) -> str:
    """The whole report, one HTML document (pure: the same model gives the same page)."""
    style = (ASSETS / "report.css").read_text(encoding="utf-8") + matrix_css(model.policies)
    script = (ASSETS / "report.js").read_text(encoding="utf-8")
    return _ENV.get_template("report.html.j2").render(
        model=model,
        csp=content_security_policy(style, script),
        style=Markup(style),
        script=Markup(script),
        spark_width=trend_width(model.policies),
        matrix=matrix_rows(model.policies),
        readiness=sorted(model.readiness, key=lambda h: (h.ready, h.host)),
        ready_count=sum(1 for h in model.readiness if h.ready),
        hunt_hosts=sorted({host for hunt in model.hunts for host in hunt.hosts_hit}),
        segments=coverage_segments,
        hit_limit=HIT_LIMIT,
        lazy_rows=LAZY_ROWS,
    )


def write_report(path: str | Path, model: FleetReport) -> int:
    """Write the report atomically (a new file is 0600: it holds query rows); returns its size.

    A path that cannot be written is bad input naming the file (exit 2), and
    leaves no partial file behind.
    """
    data = render_html(model).encode("utf-8")
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise unwritable(path, exc) from None
    return len(data)


def unwritable(path: str | Path, exc: OSError) -> ConfigError:
    """The error for an output file that cannot be written."""
    return ConfigError(f"cannot write: {exc.strerror or exc}", file=str(path))
