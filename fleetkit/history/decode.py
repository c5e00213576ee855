"""Recorded rows read back as objects of strings (verify runs, hunt hits, a report's rows).

A history file is input like any other: a row that is not a JSON object of
strings is a corrupt record, named (run, node, file) as bad input (exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from fleetkit.history.errors import HistoryError


def row_objects(lines: Iterable[bytes], *, where: str) -> Iterator[dict[str, str]]:
    """Each recorded row (compact JSON bytes) as a dict; ``where`` names the record."""
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not all(isinstance(v, str) for v in row.values()):
            raise HistoryError(f"{where}: a recorded row is not an object of strings; corrupt")
        yield row


def record_name(path: str, run_id: str, node_id: str) -> str:
    """How an error names one node's record of one run."""
    return f"history file {path}: run {run_id}, node {node_id!r}"
