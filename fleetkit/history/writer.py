"""The recorder's writer thread, and the run counters it keeps true."""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable

from fleetkit.history.model import NodeState


class Writer:
    """One thread that stores nodes while the caller merges the next ones.

    At most ``depth`` nodes wait (memory stays bounded by a few nodes' rows);
    ``submit`` blocks when the writer is behind. Jobs report their own
    failures; anything unexpected is recorded through ``fail`` and the
    thread keeps draining, so a caller can never block on a dead writer.
    """

    def __init__(self, fail: Callable[[str], None], depth: int = 4) -> None:
        self._fail = fail
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def drain(self) -> None:
        """Wait until every job submitted so far has run."""
        if self._thread is not None and not self._closed:
            self._queue.join()

    def close(self) -> None:
        """Wait for every submitted job (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except Exception as exc:
                self._fail(f"recording failed: {type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()


def recount_run(connection: sqlite3.Connection, run_id: str) -> None:
    """The run's coverage counters from its node entries (after late answers)."""
    counts = {state: 0 for state in NodeState}
    rows = late = 0
    for state, count, row_sum, late_sum in connection.execute(
        "SELECT state, COUNT(*), SUM(row_count), SUM(late) FROM nodes WHERE run_id = ?"
        " GROUP BY state",
        (run_id,),
    ):
        counts[NodeState(state)] = count
        rows += row_sum or 0
        late += late_sum or 0
    connection.execute(
        "UPDATE runs SET n_rows = ?, n_empty = ?, n_failed = ?, n_timed_out = ?, n_missing = ?,"
        " n_excluded = ?, row_count = ?, late_nodes = ? WHERE run_id = ?",
        (*(counts[state] for state in NodeState), rows, late, run_id),
    )
