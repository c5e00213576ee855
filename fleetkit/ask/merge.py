"""One merged result from a validated answer: JSON, NDJSON, CSV or a table, node by node.

The answer was validated before the first byte is written
(:mod:`fleetkit.ask.validate`), so writing never changes a node's status and
a node's rows are written whole or not at all. Writers stream: one node's
rows are in memory at a time.

- JSON / NDJSON: each node's rows come tagged as bytes
  (:meth:`~fleetkit.ask.answer.RowData.tagged_pieces`), compact, one row per
  line; ``json`` is always a valid array, even empty or cut short.
- CSV: the header is the union of all columns (known from validation, so one
  pass): ``nodeID``, ``hostname`` (``unknownNode`` when a stranger answered),
  then the others sorted.
- table: the one renderer's layout (:mod:`fleetkit.foundation.table`), cells
  terminal-safe and cut; a first pass over the rows finds the widths.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fleetkit.ask.answer import FleetAnswer, NodeResult
from fleetkit.ask.rows import HOSTNAME, LATE_ANSWER, NODE_ID, UNKNOWN_NODE
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.output import ByteSink, check_format, deliver, write_pieces
from fleetkit.foundation.table import Table, cell

#: Written by ``table`` when no node returned a row.
NO_ROWS_LINE = b"(no rows)\n"


@dataclass(frozen=True)
class MergeStats:
    rows: int = 0
    #: Nodes that contributed at least one row.
    nodes_with_rows: int = 0
    #: The reader of stdout went away before the end (``| head``).
    closed_early: bool = False


#: Called with each node once its rows are written (the history records it then).
AfterNode = Callable[[NodeResult], None]


def write_answer(
    answer: FleetAnswer,
    fmt: str,
    *,
    env: Environment,
    output: str | None,
    after_node: AfterNode | None = None,
) -> MergeStats:
    """Merge to ``output`` (atomically) or to stdout; stdout gets nothing but the result."""
    closed = deliver(env, lambda sink: write_merged(answer, fmt, sink, after_node), output)
    with_rows = [node for node in answer.nodes if node.has_rows]
    return MergeStats(answer.row_count, len(with_rows), closed)


def write_merged(
    answer: FleetAnswer, fmt: str, out: ByteSink, after_node: AfterNode | None = None
) -> None:
    """Every answering node's tagged rows in ``fmt``; ``after_node`` sees each node with
    rows right after its last byte was handed to ``out`` (while it is still at hand)."""
    fmt = check_format(fmt)
    nodes = _with_rows(answer, after_node)
    if fmt == "json":
        _write_json(answer, out, nodes)
    elif fmt == "ndjson":
        _write_ndjson(answer, out, nodes)
    elif fmt == "csv":
        _write_csv(answer, out, nodes)
    else:
        _write_table(answer, out, nodes)


def _with_rows(answer: FleetAnswer, after_node: AfterNode | None = None) -> Iterator[NodeResult]:
    for node in answer.nodes:
        if node.has_rows:
            yield node
            if after_node is not None:
                after_node(node)


def _write_json(answer: FleetAnswer, out: ByteSink, nodes: Iterator[NodeResult]) -> None:
    """``[``, each node's rows (each after a newline, separated by ``,``), ``\\n]``."""
    out.write(b"[")
    wrote = False
    try:
        for node in nodes:
            if wrote:
                out.write(b",")
            write_pieces(out, node.data.tagged_pieces(answer.tags(node), array=True))
            wrote = True
    finally:
        # Also on an error or Ctrl-C halfway: what was written stays a valid array.
        out.write(b"\n]\n" if wrote else b"]\n")


def _write_ndjson(answer: FleetAnswer, out: ByteSink, nodes: Iterator[NodeResult]) -> None:
    """One row a line: the pieces' leading newline ends the previous row instead."""
    wrote = False
    for node in nodes:
        pieces = node.data.tagged_pieces(answer.tags(node), array=False)
        if not wrote:
            pieces[0] = pieces[0][1:]
        write_pieces(out, pieces)
        wrote = True
    if wrote:
        out.write(b"\n")


def merged_columns(answer: FleetAnswer) -> list[str]:
    """The CSV/table columns: the tags first, then every other column sorted."""
    nodes = list(_with_rows(answer))
    if not nodes:
        return []
    tags = [NODE_ID, HOSTNAME] + ([UNKNOWN_NODE] if any(n.unknown for n in nodes) else [])
    tags += [LATE_ANSWER] if any(n.late for n in nodes) else []
    return tags + sorted(set(answer.columns) - set(tags))


def tagged_rows(answer: FleetAnswer, node: NodeResult) -> Iterator[dict[str, str]]:
    tags = answer.tags(node)
    return (tags.apply(row) for row in node.iter_rows())


def _write_csv(answer: FleetAnswer, out: ByteSink, nodes: Iterator[NodeResult]) -> None:
    columns = merged_columns(answer)
    if not columns:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for node in nodes:
        for count, row in enumerate(tagged_rows(answer, node), 1):
            writer.writerow(row)
            if count % 1000 == 0:
                out.write(buffer.getvalue().encode("utf-8", "backslashreplace"))
                buffer.seek(0)
                buffer.truncate()
        out.write(buffer.getvalue().encode("utf-8", "backslashreplace"))
        buffer.seek(0)
        buffer.truncate()
    out.write(buffer.getvalue().encode("utf-8", "backslashreplace"))


def _write_table(answer: FleetAnswer, out: ByteSink, nodes: Iterator[NodeResult]) -> None:
    columns = merged_columns(answer)
    if not columns:
        out.write(NO_ROWS_LINE)
        return
    header = tuple(cell(c, max_width=None) for c in columns)
    widths = [len(h) for h in header]
    for node in _with_rows(answer):  # first pass: the widths
        for row in tagged_rows(answer, node):
            for index, column in enumerate(columns):
                widths[index] = max(widths[index], len(cell(row.get(column, ""))))
    first = True
    for node in nodes:  # second pass: one node's cells at a time
        body = tuple(
            tuple(cell(row.get(c, "")) for c in columns) for row in tagged_rows(answer, node)
        )
        lines = Table(header, body, tuple(widths)).lines(rule=first)
        text = "".join(line + "\n" for line in (lines if first else lines[1:]))
        out.write(text.encode("utf-8", "backslashreplace"))
        first = False
