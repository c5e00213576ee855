"""Output modes of ``osqueryi``, byte for byte where fleetkit depends on them (osquery.md §3).

``--json``: ``[\\n``, rows as ``  {...}`` joined by ``,\\n``, then ``\\n]\\n``; an
empty result is ``[\\n\\n]\\n``. Every value is a string, keys are sorted (a
std::map in osquery, so duplicate column names collapse), compact separators,
UTF-8 kept as is.
"""

from __future__ import annotations

import json

from osquery_standin.engine import Result


def rows_as_maps(results: list[Result]) -> list[dict[str, str]]:
    """All statements' rows merged into one list, as osquery's shell does."""
    return [dict(zip(r.columns, row, strict=True)) for r in results for row in r.rows]


def json_text(results: list[Result]) -> str:
    rows = [
        json.dumps(dict(sorted(row.items())), ensure_ascii=False, separators=(",", ":"))
        for row in rows_as_maps(results)
    ]
    return "[\n" + ",\n".join(f"  {r}" for r in rows) + "\n]\n"


def json_pretty_text(results: list[Result]) -> str:
    rows = [dict(sorted(row.items())) for row in rows_as_maps(results)]
    return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"


def line_text(results: list[Result]) -> str:
    blocks = []
    for result in results:
        width = max((len(c) for c in result.columns), default=0)
        for row in result.rows:
            blocks.append(
                "\n".join(
                    f"{c.rjust(width)} = {v}" for c, v in zip(result.columns, row, strict=True)
                )
            )
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def list_text(results: list[Result], separator: str = "|", header: bool = True) -> str:
    lines = []
    for result in results:
        if header and result.columns:
            lines.append(separator.join(result.columns))
        lines += [separator.join(row) for row in result.rows]
    return "".join(line + "\n" for line in lines)


def pretty_text(results: list[Result]) -> str:
    """osqueryi's default table (``+---+`` borders), one table per statement with rows."""
    out = []
    for result in results:
        if not result.rows:
            continue
        widths = [
            max([len(c), *(len(row[i]) for row in result.rows)])
            for i, c in enumerate(result.columns)
        ]
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        out.append(rule)
        out.append(
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True))
            + " |"
        )
        out.append(rule)
        for row in result.rows:
            out.append(
                "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
            )
        out.append(rule)
    return "".join(line + "\n" for line in out)
