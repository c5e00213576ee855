"""Reading runs back: the list, one run, its nodes and rows in recorded order.

Rows come back one node at a time (a run is never held whole), as the
:class:`RowBlock` that was recorded, so ``show`` can re-render a run through
the same merge writer and get the bytes the run printed.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from typing import Any

from fleetkit.history.database import Database
from fleetkit.history.errors import HistoryError, UnknownRunError
from fleetkit.history.model import (
    Coverage,
    NodeEntry,
    NodeState,
    Question,
    RunStatus,
    RunSummary,
)
from fleetkit.history.rows import Codec, RowBlock

_RUN_COLUMNS = (
    "run_id, kind, question, pack, scope, transport, job_id, started_at, ended_at, status, note,"
    " recorder, asked, redacted, n_rows, n_empty, n_failed, n_timed_out, n_missing, n_excluded,"
    " row_count, late_nodes"
)
_NODE_COLUMNS = "node_id, hostname, state, row_count, error, exit_code, late, unknown"
_NODE_WIDTH = 8
#: Longest run id prefix search result shown in an "ambiguous" message.
_SHOWN = 5


class RunReader:
    """Read queries over one open history database."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self._codec = Codec()
        self._host = socket.gethostname()

    # ------------------------------------------------------------------ runs

    def list_runs(
        self, *, kind: str | None = None, pack: str | None = None, limit: int | None = None
    ) -> list[RunSummary]:
        """Newest first (by start time)."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", kind), ("pack", pack)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        return [self._summary(row) for row in self._query(sql, params)]

    def get_run(self, run_id: str) -> RunSummary:
        """The run with this id or unique id prefix; UnknownRunError otherwise."""
        exact = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id])
        if exact:
            return self._summary(exact[0])
        text = run_id.strip()
        if not text:
            raise UnknownRunError("an empty run id", key="RUN")
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        found = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id LIKE ? ESCAPE '\\'"
            " ORDER BY run_id LIMIT ?",
            [pattern, _SHOWN + 1],
        )
        if len(found) == 1:
            return self._summary(found[0])
        if not found:
            raise UnknownRunError(
                f"no run {text!r} in {self.db.path} (invoke history lists the runs)", key="RUN"
            )
        names = ", ".join(row[0] for row in found[:_SHOWN])
        more = ", ..." if len(found) > _SHOWN else ""
        raise UnknownRunError(f"{text!r} matches several runs: {names}{more}", key="RUN")

    def latest_run(self, *, kind: str | None = None) -> RunSummary | None:
        runs = self.list_runs(kind=kind, limit=1)
        return runs[0] if runs else None

    def neighbour(self, run: RunSummary, *, later: bool) -> RunSummary | None:
        """The run of the same question and scope just before (or the newest after) ``run``."""
        keys = self._query(
            "SELECT question_key, scope_key FROM runs WHERE run_id = ?", [run.run_id]
        )[0]
        compare = ">" if later else "<"
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE question_key = ? AND scope_key = ?"
            f" AND (started_at, run_id) {compare} (?, ?)"
            " ORDER BY started_at DESC, run_id DESC LIMIT 1",
            [keys[0], keys[1], run.started_at, run.run_id],
        )
        return self._summary(rows[0]) if rows else None

    def same_question(self, a: RunSummary, b: RunSummary) -> bool:
        rows = self._query(
            "SELECT COUNT(DISTINCT question_key) FROM runs WHERE run_id IN (?, ?)",
            [a.run_id, b.run_id],
        )
        return int(rows[0][0]) == 1

    # ------------------------------------------------------------------ nodes and rows

    def entries(self, run_id: str) -> list[NodeEntry]:
        """The run's nodes in recorded order (no rows)."""
        return [
            self._entry(row)
            for row in self._query(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE run_id = ? ORDER BY seq", [run_id]
            )
        ]

    def node_blocks(self, run_id: str) -> Iterator[tuple[NodeEntry, RowBlock]]:
        """Each node with its rows, in recorded order, one node in memory at a time."""
        cursor = self.db.connection.execute(
            f"SELECT {_NODE_COLUMNS}, raw_size, data FROM nodes WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        try:
            while True:
                try:
                    row = cursor.fetchone()
                except sqlite3.Error as exc:
                    raise self.db.error(exc, f"read run {run_id}") from None
                if row is None:
                    return
                entry = self._entry(row[:_NODE_WIDTH])
                yield entry, self._block(entry, row[_NODE_WIDTH], row[_NODE_WIDTH + 1], run_id)
        finally:
            cursor.close()

    def node_block(self, run_id: str, node_id: str) -> RowBlock:
        rows = self._query(
            f"SELECT {_NODE_COLUMNS}, raw_size, data FROM nodes WHERE run_id = ? AND node_id = ?",
            [run_id, node_id],
        )
        if not rows:
            return RowBlock(b"", 0)
        row = rows[0]
        return self._block(
            self._entry(row[:_NODE_WIDTH]), row[_NODE_WIDTH], row[_NODE_WIDTH + 1], run_id
        )

    def digests(self, run_id: str) -> dict[str, tuple[NodeEntry, bytes | None]]:
        """node_id -> (entry, digest of its rows) for a diff, without reading rows."""
        return {
            row[0]: (self._entry(row[:_NODE_WIDTH]), row[_NODE_WIDTH])
            for row in self._query(
                f"SELECT {_NODE_COLUMNS}, digest FROM nodes WHERE run_id = ? ORDER BY seq",
                [run_id],
            )
        }

    def unanswered_streaks(self, run: RunSummary, *, window: int = 100) -> dict[str, int]:
        """For each node that did not answer ``run``: in how many consecutive runs of the
        same question and scope, ending with this one, it has not answered (at most
        ``window``). For watch's "missing for N consecutive runs"."""
        keys = self._query(
            "SELECT question_key, scope_key FROM runs WHERE run_id = ?", [run.run_id]
        )[0]
        run_ids = [
            row[0]
            for row in self._query(
                "SELECT run_id FROM runs WHERE question_key = ? AND scope_key = ?"
                " AND (started_at, run_id) <= (?, ?) ORDER BY started_at DESC, run_id DESC"
                " LIMIT ?",
                [keys[0], keys[1], run.started_at, run.run_id, window],
            )
        ]
        streaks: dict[str, int] = {}
        open_nodes: set[str] | None = None
        for run_id in run_ids:
            states = {e.node_id: e.state for e in self.entries(run_id)}
            if open_nodes is None:
                open_nodes = {n for n, s in states.items() if s.retryable}
            still = {n for n in open_nodes if n in states and states[n].retryable}
            for node in still:
                streaks[node] = streaks.get(node, 0) + 1
            open_nodes = still
            if not open_nodes:
                break
        return streaks

    # ------------------------------------------------------------------ helpers

    def _block(self, entry: NodeEntry, raw_size: int, data: bytes | None, run_id: str) -> RowBlock:
        try:
            rows = self._codec.unpack(data or b"", int(raw_size))
            return RowBlock(rows, entry.row_count if rows else 0)
        except ValueError as exc:
            raise self.db.error(
                ValueError(f"corrupt rows for node {entry.node_id} of run {run_id}: {exc}"),
                "read rows",
            ) from None

    def _query(self, sql: str, params: list[Any]) -> list[Any]:
        try:
            return self.db.connection.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.db.error(exc, "read") from None

    def _entry(self, row: Any) -> NodeEntry:
        try:
            return _entry_of(row)
        except (ValueError, TypeError) as exc:
            raise self._corrupt(f"node entry {row[:1]!r}: {exc}") from None

    def _summary(self, row: Any) -> RunSummary:
        try:
            return self._summary_of(row)
        except (ValueError, TypeError) as exc:
            raise self._corrupt(f"run {row[:1]!r}: {exc}") from None

    def _corrupt(self, detail: str) -> HistoryError:
        return self.db.error(ValueError(f"corrupt record, {detail}"), "read")

    def _summary_of(self, row: Any) -> RunSummary:
        (run_id, kind, question, pack, scope, transport, job_id, started, ended, status, note,
         recorder, asked, redacted, *counts) = row  # fmt: skip
        state = RunStatus(status)
        if state is RunStatus.RECORDING and not self._recorder_alive(recorder):
            state, note = RunStatus.INCOMPLETE, "the recording process ended before the run did"
        scope_value = _json_or(scope, {})
        asked_value = _json_or(asked, {})
        redacted_value = _json_or(redacted, [])
        return RunSummary(
            run_id=run_id,
            kind=kind,
            question=Question(text=question, pack=pack),
            scope=scope_value if isinstance(scope_value, dict) else {},
            transport=transport,
            job_id=job_id,
            started_at=started,
            ended_at=ended,
            status=state,
            coverage=Coverage(*counts[:6]),
            row_count=counts[6],
            late_nodes=counts[7],
            note=note,
            asked=asked_value if isinstance(asked_value, dict) else {},
            redacted=tuple(str(c) for c in redacted_value if isinstance(c, str))
            if isinstance(redacted_value, list)
            else (),
        )

    def _recorder_alive(self, recorder: str | None) -> bool:
        """True unless the recording process is known to be gone (same host, no such pid)."""
        host, _, pid = (recorder or "").rpartition(":")
        if host != self._host or not pid.isdigit():
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True


def _json_or(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _entry_of(row: Any) -> NodeEntry:
    node_id, hostname, state, row_count, error, exit_code, late, unknown = row
    return NodeEntry(
        node_id=node_id,
        hostname=hostname,
        state=NodeState(state),
        row_count=row_count,
        error=error,
        exit_code=exit_code,
        late=bool(late),
        unknown=bool(unknown),
    )
