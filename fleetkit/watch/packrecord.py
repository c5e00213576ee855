"""A pack run in the history: one recorded run per pack run, read back the same way.

Layout (what ``invoke history show`` displays, and what :mod:`.historyview` reads):

- the run's kind is the pack's (``policy``, ``hunt``, ``inventory``), its question
  the pack's name and every statement's SQL, its scope says ``runner: watch``
  (so the watch tells its own runs from ``invoke policy`` runs of the same pack);
- per node one entry: answered (rows or empty) when it answered at least one
  statement, else failed / timed out / missing / excluded as the job said;
- the node's rows are every statement's rows, each with one more column,
  :data:`STATEMENT_COLUMN`, naming the statement it answers (a row that
  already holds that column makes its statement a failure on that node: a
  node's output never decides which statement a row belongs to);
- statements a node did not answer while it answered others are named in
  the entry's error, first, in a fixed form (:func:`statement_error_text`,
  read back by :func:`failed_statements`), so a later run knows that node's
  last real answer to each statement;
- policy verdicts go with the run (``add_verdicts``), so the history derives
  ``first_failed_at`` and the transitions from all recorded verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from fleetkit.ask.answer import NodeStatus
from fleetkit.ask.packrun import PackRun, statement_errors, statement_rows
from fleetkit.ask.packs import Pack
from fleetkit.ask.scope import Scope
from fleetkit.ask.verdicts import HostVerdict
from fleetkit.history import History, PolicyVerdict, RunRecorder
from fleetkit.history import Question as HistoryQuestion

#: The column that says which statement of the pack a recorded row answers.
STATEMENT_COLUMN = "fleetkit_query"
#: ``scope.runner`` of the runs the watch records.
RUNNER = "watch"
_NOT_ANSWERED = "not answered: "
_NAMES_RE = re.compile(r"\Anot answered: ([A-Za-z0-9_.:-]+(?:, [A-Za-z0-9_.:-]+)*)(?: \(|\Z)")
_REASON_CHARS = 300


def pack_question(pack: Pack) -> HistoryQuestion:
    """The pack as the history's question: its name, and every statement it asks."""
    text = "\n".join(f"-- {s.name}\n{s.sql};" for s in pack.statements)
    return HistoryQuestion(text=text, pack=pack.name)


def scope_record(pack: Pack, scope: Scope) -> dict[str, Any]:
    return {
        "runner": RUNNER,
        "selector": str(scope.selector),
        "platform": list(pack.platform),
        "transport": scope.via.value,
        "include_unknown_nodes": scope.include_unknown_nodes,
        "timeout": scope.timeout,
    }


def is_watch_run(scope: Mapping[str, Any]) -> bool:
    return scope.get("runner") == RUNNER


def begin_pack_run(
    history: History,
    pack: Pack,
    scope: Scope,
    *,
    started_at: datetime,
    redact_columns: Iterable[str] = (),
) -> RunRecorder:
    """The run, visible at once as ``recording`` (HistoryError, exit 2, if it cannot be)."""
    return history.begin_run(
        kind=pack.kind,
        question=pack_question(pack),
        scope=scope_record(pack, scope),
        transport=scope.via.value,
        started_at=started_at,
        redact_columns=redact_columns,
    )


def record_pack_run(
    recorder: RunRecorder, run: PackRun, verdicts: Iterable[HostVerdict] = ()
) -> None:
    """Every node of ``run`` and the policy verdicts (never raises for storage problems)."""
    for node in run.nodes:
        errors = statement_errors(run, node.node_id)
        results = run.node_results(node.node_id)
        if any(result.status is NodeStatus.EXCLUDED for _, result in results):
            recorder.add_node(
                node_id=node.node_id, hostname=node.hostname, status="excluded", error=node.error
            )
            continue
        rows, refused = _tagged_rows(statement_rows(run, node.node_id))
        errors.update(refused)
        answered = len(results) - len(errors)
        if answered <= 0:
            status = next((r.status for _, r in results if not r.ok), node.status)
            reason = node.error if node.status is not NodeStatus.OK else None
            recorder.add_node(
                node_id=node.node_id,
                hostname=node.hostname,
                status=status.value if status is not NodeStatus.OK else "failed",
                error=reason or statement_error_text(errors) or "no answer",
            )
            continue
        notes = [text for text in (statement_error_text(errors), node.error) if text]
        recorder.add_node(
            node_id=node.node_id,
            hostname=node.hostname,
            status="ok",
            rows=[row for name, row in rows if name not in refused],
            error="; ".join(notes) or None,
        )
    recorder.add_verdicts(
        PolicyVerdict(v.node_id, v.hostname, v.policy.key, v.verdict.value) for v in verdicts
    )


def _tagged_rows(
    rows: Iterator[tuple[str, dict[str, str]]],
) -> tuple[list[tuple[str, dict[str, str]]], dict[str, str]]:
    """Rows with their statement column; statements whose rows already had one are refused."""
    out: list[tuple[str, dict[str, str]]] = []
    refused: dict[str, str] = {}
    for name, row in rows:
        if STATEMENT_COLUMN in row:
            refused[name] = f"failed: a row holds the column {STATEMENT_COLUMN} (reserved)"
            continue
        out.append((name, {STATEMENT_COLUMN: name, **row}))
    return out, refused


def statement_error_text(errors: Mapping[str, str]) -> str:
    """``not answered: a, b (a: why; b: why)``; "" when every statement was answered."""
    if not errors:
        return ""
    names = sorted(errors)
    reasons = "; ".join(f"{name}: {errors[name][:_REASON_CHARS]}" for name in names)
    return f"{_NOT_ANSWERED}{', '.join(names)} ({reasons})"


def failed_statements(error: str | None) -> frozenset[str]:
    """The statements a recorded entry names as not answered (see :func:`statement_error_text`)."""
    match = _NAMES_RE.match(error or "")
    return frozenset(match.group(1).split(", ")) if match else frozenset()


def rows_by_statement(lines: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Recorded rows of one node, split by statement (the column removed again)."""
    out: dict[str, list[dict[str, str]]] = {}
    for row in lines:
        name = row.get(STATEMENT_COLUMN)
        if not isinstance(name, str):
            continue
        out.setdefault(name, []).append(
            {str(k): str(v) for k, v in row.items() if k != STATEMENT_COLUMN}
        )
    return out
