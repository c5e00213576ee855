"""How a policy or hunt run is printed, from the rows it records: one function for both.

``invoke policy`` and ``invoke hunt`` record, per node, the rows they print
(untagged, strings only); their output is then rendered *from those rows*,
and ``invoke show RUN`` renders a recorded run with the same functions from
the same rows read back -- so ``show`` prints byte for byte what the run
printed, in every format. (A query run's view is the merge writer itself:
:mod:`fleetkit.ask.merge`.)

- hunt: a node's rows are its hits ``{"path", "sha256"}``, each once, in the
  order found; printed ``hostname, nodeID, path, sha256``, node by node.
- policy: a node's rows are its verdicts ``{"pack", "policy", "severity",
  "status", "details" (the detail rows as JSON text), "error", "resolution"}``,
  in policy order; printed policy by policy, node by node, each verdict with
  its history state (``transition``, ``first_failed_at``, ``last_passed_at``,
  ``overdue``; null without a history).

Rows a node gave after its run ended (``--retry-missing``) are printed with
``answeredLate`` (only ``show`` can meet them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetkit.ask.hunts import HIT_COLUMNS
from fleetkit.ask.rows import HOSTNAME, LATE_ANSWER, NODE_ID, Tags, dump_row
from fleetkit.ask.verdicts import HostVerdict
from fleetkit.foundation.output import render_records
from fleetkit.foundation.table import make_table
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import PolicyState

#: A policy verdict as recorded (per node, untagged).
VERDICT_KEYS = ("pack", "policy", "severity", "status", "details", "error", "resolution")
#: What the history adds to each printed verdict.
STATE_KEYS = ("transition", "first_failed_at", "last_passed_at", "overdue")
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
    *STATE_KEYS,
)


@dataclass(frozen=True)
class NodeRows:
    """One node of a policy or hunt run with the rows it records."""

    node_id: str
    hostname: str
    rows: list[dict[str, str]] = field(default_factory=list)
    unknown: bool = False
    late: bool = False

    def encoded(self) -> list[bytes]:
        return [dump_row(row) for row in self.rows]


# --------------------------------------------------------------------------- hunt


def hunt_rows(hits: Iterable[Mapping[str, str]]) -> dict[str, list[dict[str, str]]]:
    """The hunt's hits per node (``nodeID`` -> its ``{path, sha256}`` rows, in order)."""
    rows: dict[str, list[dict[str, str]]] = {}
    for hit in hits:
        rows.setdefault(hit[NODE_ID], []).append({"path": hit["path"], "sha256": hit["sha256"]})
    return rows


def render_hunt(nodes: Sequence[NodeRows], redacted: frozenset[str], fmt: str) -> bytes:
    """Every node's hits, node by node, tagged as the run tagged them."""
    late = any(node.late and node.rows for node in nodes)
    hits = []
    for node in nodes:
        tags = dict(Tags(node.node_id, node.hostname, node.unknown, redacted).pairs())
        for row in node.rows:
            hit = {HOSTNAME: tags[HOSTNAME], NODE_ID: tags[NODE_ID], **row}
            if late:
                hit[LATE_ANSWER] = "true" if node.late else ""
            hits.append(hit)
    return render_records(hits, (*HIT_COLUMNS, *([LATE_ANSWER] if late else [])), fmt)


# --------------------------------------------------------------------------- policy


def verdict_rows(verdicts: Iterable[HostVerdict]) -> dict[str, list[dict[str, str]]]:
    """Each node's verdicts as recorded rows (``nodeID`` -> rows, in policy order)."""
    rows: dict[str, list[dict[str, str]]] = {}
    for verdict in verdicts:
        record = verdict.record()
        rows.setdefault(verdict.node_id, []).append(
            {
                **{key: str(record[key]) for key in ("pack", "policy", "severity", "status")},
                "details": json.dumps(verdict.details, ensure_ascii=False),
                "error": verdict.error or "",
                "resolution": str(record["resolution"]),
            }
        )
    return rows


def policy_records(
    nodes: Sequence[NodeRows],
    policies: Sequence[str],
    states: Iterable[PolicyState] | None,
) -> list[dict[str, Any]]:
    """The printed records: policy by policy (``policies``: ``pack/name`` in run order),
    node by node (node ID), each with its state (``states`` None: no history)."""
    by_key = {(s.node_id, s.policy): s for s in states or ()}
    order = {key: index for index, key in enumerate(policies)}
    late = any(node.late and node.rows for node in nodes)
    found: list[tuple[int, str, int, dict[str, Any]]] = []
    for node in nodes:
        for row in node.rows:
            key = f"{row.get('pack', '')}/{row.get('policy', '')}"
            state = by_key.get((node.node_id, key))
            record: dict[str, Any] = {
                "pack": row.get("pack", ""),
                "policy": row.get("policy", ""),
                "severity": row.get("severity", ""),
                "nodeID": node.node_id,
                "hostname": node.hostname,
                "status": row.get("status", ""),
                "details": _details(row.get("details", "")),
                "error": row.get("error") or None,
                "resolution": row.get("resolution", ""),
                "transition": state.transition.value if state else None,
                "first_failed_at": state.first_failed_at if state else None,
                "last_passed_at": state.last_passed_at if state else None,
                "overdue": state.overdue if state else None,
            }
            if late:
                record[LATE_ANSWER] = node.late
            found.append((order.get(key, len(order)), node.node_id, len(found), record))
    return [record for *_, record in sorted(found, key=lambda item: item[:3])]


def _details(text: str) -> list[dict[str, str]]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        return [{"unreadable details": text[:200]}]
    return value


def render_policy(records: Sequence[Mapping[str, Any]], fmt: str) -> bytes:
    """Machine formats for scripts; ``table`` is for people (one line per host per policy)."""
    late = [LATE_ANSWER] if any(LATE_ANSWER in record for record in records) else []
    if fmt == "table":
        return render_policy_table(records).encode("utf-8", "backslashreplace")
    if fmt == "csv":  # one cell per field: nested details as JSON text, null as empty
        records = [
            {
                **record,
                "details": json.dumps(record["details"], ensure_ascii=False),
                **{k: "" if record[k] is None else record[k] for k in ("error", *STATE_KEYS)},
            }
            for record in records
        ]
    return render_records(records, (*RECORD_COLUMNS, *late), fmt)


def render_policy_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The one renderer's table; FAIL/UNKNOWN rows are followed by their detail rows, indented."""
    header = ("POLICY", "SEVERITY", "HOST", "STATUS", "CHANGE", "FAILING SINCE", "DETAILS")
    rows = []
    for record in records:
        host = host_label(record["nodeID"], record["hostname"])
        if record.get(LATE_ANSWER):
            host += " [late]"
        details = record["details"]
        summary = record["error"] or (f"{len(details)} row(s)" if details else "")
        rows.append(
            (
                f"{record['pack']}/{record['policy']}",
                record["severity"],
                host,
                record["status"],
                (record["transition"] or "-").replace("_", " "),
                _since(record),
                summary,
            )
        )
    lines = make_table(header, rows, max_width=None).lines()
    text = [lines[0]]
    for record, line in zip(records, lines[1:], strict=True):
        text.append(line)
        text.extend(
            "    " + ", ".join(f"{terminal_safe(k)}={terminal_safe(v)}" for k, v in row.items())
            for row in record["details"]
        )
    return "\n".join(text) + "\n"


def host_label(node_id: str, hostname: str | None) -> str:
    """A node as people name it: the inventory name (what ``--hosts`` and
    ``quarantine`` take), then the machine's own hostname when it differs."""
    if hostname and hostname != node_id:
        return f"{node_id} ({hostname})"
    return node_id


def _since(record: Mapping[str, Any]) -> str:
    """When the current failing streak began (seconds, UTC), OVERDUE past ``--grace``."""
    since = record["first_failed_at"]
    if not since:
        return "-"
    text = f"{since[:10]} {since[11:19]}Z"
    return f"{text} OVERDUE" if record["overdue"] else text
