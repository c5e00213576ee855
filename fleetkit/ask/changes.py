"""A diff of two recorded runs, written in osquery's differential shape.

Each row event is ``{"action": "added"|"removed", "nodeID", "hostname",
"columns": {...}}`` (osquery's differential log, with fleetkit's node tags);
nodes that appeared (answered now, not before) or disappeared (answered
before, not now) follow as ``{"action": "appeared"|"disappeared", "nodeID",
"hostname", "before", "after"}`` with the node's state in each run.

- ``json``: one array, one event per line; ``ndjson``: one event per line.
  Row events are written as bytes from the recorded rows (never decoded).
- ``csv`` and ``table``: one line per row event, ``action, nodeID,
  hostname`` and then the union of the rows' columns (sorted); node events go
  to the closing summary on stderr. Two passes over the events (the columns
  first), so neither holds the events of more than one node.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from itertools import chain

from fleetkit.foundation.output import ByteSink, render_records
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import RunDiff

_EVENT_COLUMNS = ("action", "nodeID", "hostname")


def write_diff(diff: RunDiff, fmt: str, out: ByteSink) -> int:
    """The events of ``diff`` in ``fmt``; returns how many row events there were."""
    if fmt in ("json", "ndjson"):
        return _write_stream(diff, out, array=fmt == "json")
    columns: set[str] = set()
    count = 0
    for change in diff.changes():
        columns.update(change.columns())
        count += 1
    header = [*_EVENT_COLUMNS, *sorted(columns - set(_EVENT_COLUMNS))]
    if fmt == "table":
        rows = [change.flat() for change in diff.changes()]
        out.write(render_records(rows, header, "table") if rows else b"(no changes)\n")
        return count
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, restval="", lineterminator="\n")
    writer.writeheader()
    for change in diff.changes():
        writer.writerow(change.flat())
        if buffer.tell() > 1 << 16:
            out.write(buffer.getvalue().encode("utf-8", "backslashreplace"))
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue().encode("utf-8", "backslashreplace"))
    return count


def _write_stream(diff: RunDiff, out: ByteSink, *, array: bool) -> int:
    """Row events, then node events; ``array``: a JSON array (valid even when cut short)."""
    node_events = [
        json.dumps(event.record(), ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace"
        )
        for event in diff.node_events()
    ]
    counted = [0]

    def row_events() -> Iterator[bytes]:
        for change in diff.changes():
            counted[0] += 1
            yield change.json_bytes()

    separator, lead = (b",\n", b"\n") if array else (b"\n", b"")
    wrote = False
    if array:
        out.write(b"[")
    try:
        for event in chain(row_events(), node_events):
            out.write((separator if wrote else lead) + event)
            wrote = True
    finally:
        if array:
            out.write(b"\n]\n" if wrote else b"]\n")
        elif wrote:
            out.write(b"\n")
    return counted[0]


def summarize_diff(diff: RunDiff, events: int, say: Callable[[str], None]) -> None:
    """The closing lines on stderr: which runs, how many events, every node event named."""
    say(
        terminal_safe(
            f"diff: run {diff.before.run_id} -> run {diff.after.run_id} "
            f"({diff.after.question.label()}): {events} row change(s), "
            f"{len(diff.appeared)} node(s) appeared, {len(diff.disappeared)} disappeared"
        )
    )
    for event in diff.node_events():
        before = event.before.value if event.before else "not in the run"
        after = event.after.value if event.after else "not in the run"
        say(terminal_safe(f"  {event.node_id} {event.action} (before: {before}, now: {after})"))
