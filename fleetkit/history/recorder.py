"""Recording one run, node by node, without ever failing the caller's output.

The contract with the commands: a recorder is created when the store is
opened and the run begins (errors there are exit 2, before anything is
submitted). After that, :meth:`RunRecorder.add_node` and
:meth:`RunRecorder.finish` never raise for storage problems: a disk that
fills, a history file that goes away, an unreachable bucket all turn the run
*incomplete* (status and reason recorded when the file still accepts them,
reported in :class:`RecordOutcome`) and the command still delivers its whole
merged output, then exits 1. Programming errors (an unknown status, rows that
are not JSON objects) still raise ``ValueError``.

Each node is one short write transaction: its entry (rows compressed as one
block, with its digest) and the run's counters. They are written by one
background thread while the caller merges the next nodes (zstd and SQLite
release the GIL), at most a few nodes behind, so memory stays bounded;
``finish`` waits for it.

What the engine hands over, and when: each node's validated rows (see
:mod:`fleetkit.ask.record`), already redacted -- ``redact_columns`` is checked
again here as a second wall (see ``rows.guard_redaction``). A run that asks
several questions (a policy pack, a hunt in batches) may give rows for a node
that failed one of them: they are kept, and the node counts as failed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

from fleetkit.history.database import Database
from fleetkit.history.model import (
    NodeEntry,
    NodeState,
    RecordOutcome,
    RunStatus,
    iso,
    parse_state,
)
from fleetkit.history.policy import PolicyVerdict, checked_verdicts, insert_verdicts
from fleetkit.history.rows import Codec, RowBlock, guard_redaction, to_block
from fleetkit.history.writer import Writer, recount_run

#: Longest error text kept per node (it came from a node: bounded).
ERROR_LIMIT = 4000
_NAME_LIMIT = 512

Rows = RowBlock | Iterable[bytes | Mapping[str, str]]


class Mirror(Protocol):
    """A second destination for the same records (the S3 layout).

    Its failures make the run incomplete (the reason names the object) but
    never stop the local recording.
    """

    def put_node(self, run_id: str, entry: NodeEntry, block: RowBlock) -> None: ...

    def finish(self, run_id: str) -> None: ...

    def close(self) -> None: ...


class RunRecorder:
    """Records the nodes of one run (new, or an earlier one being completed late)."""

    def __init__(
        self,
        database: Database,
        run_id: str,
        *,
        started_at: str,
        redact_columns: Iterable[str] = (),
        mirror: Mirror | None = None,
        resume: bool = False,
        after_finish: Callable[[], list[str]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clock = clock
        self.run_id = run_id
        self.started_at = started_at
        self._db = database
        self._redact = frozenset(redact_columns)
        self._mirror = mirror
        self._resume = resume
        self._after_finish = after_finish
        self._codec = Codec()
        self._failure: str | None = None
        self._mirror_failure: str | None = None
        self._warnings: list[str] = []
        self._nodes = 0
        self._rows = 0
        self._redacted = 0
        self._finished: RecordOutcome | None = None
        self._job_id: str | None = None
        self._seq = self._next_seq() if resume else 0
        self._writer = Writer(self._fail)

    # ------------------------------------------------------------------ recording

    @property
    def failed(self) -> str | None:
        """Why the recording stopped (the run will be incomplete), or None."""
        return self._failure

    def add_node(
        self,
        *,
        node_id: str,
        hostname: str,
        status: str,
        rows: Rows = (),
        error: str | None = None,
        exit_code: int | None = None,
        late: bool = False,
        unknown: bool = False,
    ) -> None:
        """One node's answer (``unknown``: not an inventory host, merged on request)."""
        state = parse_state(status)
        if self._finished is not None:
            raise ValueError(f"run {self.run_id} is already finished")
        if self._failure is not None:
            return
        block = to_block(rows) if state is not NodeState.EXCLUDED else RowBlock(b"", 0)
        if state.answered:
            state = NodeState.ROWS if block.count else NodeState.EMPTY
        block, redacted = guard_redaction(block, self._redact)
        entry = NodeEntry(
            node_id=node_id[:_NAME_LIMIT],
            hostname=hostname[:_NAME_LIMIT],
            state=state,
            row_count=block.count,
            error=error[:ERROR_LIMIT] if error else None,
            exit_code=exit_code,
            late=(late or self._resume) and state.answered,
            unknown=unknown,
        )
        self._writer.submit(lambda: self._write_node(entry, block, redacted))

    def flush(self) -> None:
        """Wait until everything handed over so far is stored (before reading it back)."""
        self._writer.drain()

    def add_verdicts(self, verdicts: Iterable[PolicyVerdict]) -> None:
        """Policy verdicts of this run (``invoke policy``), for first-failed/fixed state."""
        if self._finished is not None:
            raise ValueError(f"run {self.run_id} is already finished")
        batch = checked_verdicts(verdicts)
        self._writer.submit(lambda: self._write_verdicts(batch))

    def _write_node(self, entry: NodeEntry, block: RowBlock, redacted: int) -> None:
        """On the writer thread: compress (zstd and sqlite release the GIL), store, copy."""
        if self._failure is not None:
            return
        packed, digest = self._codec.pack(block)
        try:
            stored = self._store(entry, block, packed, digest)
        except (sqlite3.Error, OSError) as exc:
            self._fail(str(self._db.error(exc, f"record node {entry.node_id}")))
            return
        if not stored:
            return
        self._nodes += 1
        self._rows += block.count
        self._redacted += redacted
        if self._mirror is not None and self._mirror_failure is None:
            try:
                self._mirror.put_node(self.run_id, entry, RowBlock(block.raw(), block.count))
            except Exception as exc:
                self._mirror_failure = f"S3 copy: {exc}"

    def _write_verdicts(self, verdicts: list[PolicyVerdict]) -> None:
        if self._failure is not None:
            return
        try:
            with self._db.write() as connection:
                insert_verdicts(connection, self.run_id, self.started_at, verdicts)
        except (sqlite3.Error, OSError) as exc:
            self._fail(str(self._db.error(exc, "record policy verdicts")))

    def finish(
        self,
        *,
        ended_at: datetime | None = None,
        note: str | None = None,
        job_id: str | None = None,
    ) -> RecordOutcome:
        """End the run (``ended_at`` defaults to the store's clock).

        ``note`` marks the run incomplete with that reason (e.g. interrupted);
        ``job_id`` is the orchestrator's, known only once the job was submitted.
        Idempotent; never raises for storage problems.
        """
        if self._finished is not None:
            return self._finished
        self._writer.close()
        self._job_id = job_id
        if self._mirror is not None and self._mirror_failure is None:
            try:
                # First (with the run as it will be closed): the manifest is the S3 copy's
                # last write, and an unwritable bucket must make the local run incomplete.
                self._close_run(self._failure or note, ended_at)
                self._mirror.finish(self.run_id)
            except Exception as exc:
                self._mirror_failure = f"S3 copy: {exc}"
        reason = self._failure or self._mirror_failure or note
        self._close_run(reason, ended_at)
        if self._after_finish is not None:
            self._warnings += self._after_finish()
        self._finished = RecordOutcome(
            run_id=self.run_id,
            complete=reason is None,
            note=reason,
            nodes=self._nodes,
            rows=self._rows,
            redacted_by_guard=self._redacted,
            warnings=tuple(self._warnings),
        )
        return self._finished

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.finish()
        elif issubclass(kind, KeyboardInterrupt):
            self.finish(note="interrupted")
        else:
            self.finish(note=f"stopped by an error ({kind.__name__})")

    # ------------------------------------------------------------------ storage

    def _store(
        self,
        entry: NodeEntry,
        block: RowBlock,
        packed: bytes,
        digest: bytes,
    ) -> bool:
        """The node's entry and the run's counters: one transaction."""
        values = (
            entry.hostname,
            entry.state.value,
            entry.error,
            entry.exit_code,
            int(entry.late),
            entry.row_count,
            len(block.data),
            digest if packed else None,
            "zstd" if packed else None,
            packed or None,
            int(entry.unknown),
        )
        with self._db.write() as connection:
            if self._resume:
                return self._replace(connection, entry, values)
            try:
                connection.execute(_INSERT_NODE, (self.run_id, self._seq, entry.node_id, *values))
            except sqlite3.IntegrityError:
                self._warnings.append(f"node {entry.node_id} answered twice; kept the first")
                return False
            column = f"n_{entry.state.value}"  # from NodeState: a fixed set of names
            connection.execute(
                f"UPDATE runs SET {column} = {column} + 1, row_count = row_count + ?,"
                " late_nodes = late_nodes + ? WHERE run_id = ?",
                (entry.row_count, int(entry.late), self.run_id),
            )
        self._seq += 1
        return True

    def _replace(
        self, connection: sqlite3.Connection, entry: NodeEntry, values: tuple[object, ...]
    ) -> bool:
        """A late answer replaces a failed, timed-out or missing entry (or adds the node)."""
        found = connection.execute(
            "SELECT state FROM nodes WHERE run_id = ? AND node_id = ?", (self.run_id, entry.node_id)
        ).fetchone()
        if found is not None and not NodeState(found[0]).retryable:
            self._warnings.append(
                f"node {entry.node_id} already answered in run {self.run_id}; late answer ignored"
            )
            return False
        if found is None:
            seq = self._seq
            self._seq += 1
            connection.execute(_INSERT_NODE, (self.run_id, seq, entry.node_id, *values))
        else:
            connection.execute(
                "UPDATE nodes SET hostname = ?, state = ?, error = ?, exit_code = ?, late = ?,"
                " row_count = ?, raw_size = ?, digest = ?, codec = ?, data = ?, unknown = ?"
                " WHERE run_id = ? AND node_id = ?",
                (*values, self.run_id, entry.node_id),
            )
        recount_run(connection, self.run_id)
        return True

    def _next_seq(self) -> int:
        row = self._db.connection.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM nodes WHERE run_id = ?", (self.run_id,)
        ).fetchone()
        return int(row[0])

    def _close_run(self, reason: str | None, ended_at: datetime | None = None) -> None:
        """Status, end time and reason; best effort (a full disk may refuse even this)."""
        try:
            with self._db.write() as connection:
                if self._resume:
                    if reason is not None:
                        connection.execute(
                            "UPDATE runs SET status = ?, note = ? WHERE run_id = ?",
                            (RunStatus.INCOMPLETE.value, f"late answers: {reason}", self.run_id),
                        )
                    return
                status = RunStatus.COMPLETE if reason is None else RunStatus.INCOMPLETE
                connection.execute(
                    "UPDATE runs SET status = ?, note = ?, ended_at = ?,"
                    " job_id = COALESCE(?, job_id) WHERE run_id = ?",
                    (
                        status.value,
                        reason,
                        iso(ended_at or self._clock()),
                        self._job_id,
                        self.run_id,
                    ),
                )
        except (sqlite3.Error, OSError) as exc:
            self._fail(str(self._db.error(exc, "finish the run")))

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason


_INSERT_NODE = (
    "INSERT INTO nodes (run_id, seq, node_id, hostname, state, error, exit_code, late, row_count,"
    " raw_size, digest, codec, data, unknown)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
