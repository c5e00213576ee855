"""The history as commands see it: open once, record runs, read them back.

    history = open_history(settings.history, mirror=...)   # exit 2 here, before any job
    recorder = history.begin_run(kind="query", question=Question(sql), scope={...},
                                 transport="bacalhau", asked={"sql": sql})
    for node in answer.nodes:                         # as the merge writes them
        recorder.add_node(node_id=..., hostname=..., status=..., rows=...)
    outcome = recorder.finish(job_id=...)             # never raises; outcome.complete

(The ask engine's glue, :mod:`fleetkit.ask.record`, does this for a FleetAnswer.)

Reads: :meth:`History.list_runs`, :meth:`get_run`, :meth:`entries`,
:meth:`node_blocks`, :meth:`diff`, :meth:`policy_states`, :meth:`unanswered`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from fleetkit.foundation.history_settings import HistorySettings
from fleetkit.history.database import Database, open_database
from fleetkit.history.diff import RunDiff
from fleetkit.history.errors import DiffMismatchError, HistoryError, UnknownRunError
from fleetkit.history.model import (
    NodeEntry,
    Question,
    RunKind,
    RunStatus,
    RunSummary,
    canonical_json,
    iso,
    new_run_id,
    parse_iso,
)
from fleetkit.history.policy import PolicyState, RecordedVerdict, policy_states, verdict_history
from fleetkit.history.reader import RunReader
from fleetkit.history.recorder import Mirror, RunRecorder
from fleetkit.history.rows import RowBlock

#: Scope keys that do not change what is asked (so they do not split "same question").
_SCOPE_KEY_IGNORES = ("timeout",)
#: Runs deleted per transaction when pruning (keeps write transactions short).
_PRUNE_BATCH = 20


class History:
    """One open history; not shared between threads."""

    def __init__(
        self,
        settings: HistorySettings,
        database: Database,
        *,
        now: Callable[[], datetime] | None = None,
        mirror: Mirror | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.reader = RunReader(database)
        self.mirror = mirror
        bind = getattr(mirror, "bind", None)
        if bind is not None:
            bind(self.reader)
        self._now = now or (lambda: datetime.now(UTC))

    @property
    def path(self) -> str:
        return str(self.database.path)

    # ------------------------------------------------------------------ recording

    def begin_run(
        self,
        *,
        kind: str,
        question: Question,
        scope: Mapping[str, Any],
        transport: str,
        started_at: datetime | None = None,
        job_id: str | None = None,
        redact_columns: Iterable[str] = (),
        asked: Mapping[str, Any] | None = None,
    ) -> RunRecorder:
        """A new run, visible as ``recording`` at once; raises HistoryError (exit 2).

        ``asked`` is what the asker needs to ask the same again (``--retry-missing``):
        any JSON mapping, kept as given.
        """
        kind = RunKind(kind).value
        started = started_at or self._now()
        redacted = sorted(set(redact_columns))
        scope_json = canonical_json(dict(scope))
        scope_key = canonical_json({k: v for k, v in scope.items() if k not in _SCOPE_KEY_IGNORES})
        values = (
            kind,
            question.text,
            question.pack,
            _key(canonical_json([question.pack or "", question.text])),
            scope_json,
            _key(scope_key),
            transport,
            job_id,
            iso(started),
            RunStatus.RECORDING.value,
            f"{socket.gethostname()}:{os.getpid()}",
            canonical_json(dict(asked or {})),
            canonical_json(redacted),
        )
        for _attempt in range(5):
            run_id = new_run_id(started)
            try:
                with self.database.write() as connection:
                    connection.execute(
                        "INSERT INTO runs (run_id, kind, question, pack, question_key, scope,"
                        " scope_key, transport, job_id, started_at, status, recorder, asked,"
                        " redacted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, *values),
                    )
                break
            except sqlite3.IntegrityError:
                continue  # same millisecond, same random suffix: draw again
            except sqlite3.Error as exc:
                raise self.database.error(exc, "start recording a run") from None
        else:
            raise HistoryError(f"history file {self.path}: cannot allocate a run id")
        return RunRecorder(
            self.database,
            run_id,
            started_at=iso(started),
            redact_columns=redacted,
            mirror=self.mirror,
            after_finish=self._prune_quietly,
            clock=self._now,
        )

    def set_job_id(self, run_id: str, job_id: str) -> None:
        """The orchestrator's job id, known only after submission (not while a recorder of
        this history is writing: ``RunRecorder.finish(job_id=...)`` then)."""
        try:
            with self.database.write() as connection:
                connection.execute("UPDATE runs SET job_id = ? WHERE run_id = ?", (job_id, run_id))
        except sqlite3.Error as exc:
            raise self.database.error(exc, "record the job id") from None

    def resume_run(
        self, run_id: str, *, redact_columns: Iterable[str] | None = None
    ) -> RunRecorder:
        """Record late answers (``--retry-missing``) into an earlier run.

        Each answer replaces the node's failed, timed-out or missing entry
        (answered ones are kept: a late answer for them is ignored with a
        warning) and is marked late; the run's coverage is recounted.
        """
        run = self.get_run(run_id)
        return RunRecorder(
            self.database,
            run.run_id,
            started_at=run.started_at,
            redact_columns=set(run.redacted) | set(redact_columns or ()),
            mirror=self.mirror,
            resume=True,
            clock=self._now,
        )

    def prune(self) -> int:
        """Delete runs that started more than ``keep_days`` ago; returns how many."""
        if self.settings.keep_days is None:
            return 0
        cutoff = iso(self._now() - timedelta(days=self.settings.keep_days))
        deleted = 0
        try:
            while True:
                with self.database.write() as connection:
                    ids = [
                        row[0]
                        for row in connection.execute(
                            # Whatever the status: keep_days >= 1, so a run started before the
                            # cutoff and still "recording" lost its recorder long ago.
                            "SELECT run_id FROM runs WHERE started_at < ? LIMIT ?",
                            (cutoff, _PRUNE_BATCH),
                        )
                    ]
                    connection.executemany("DELETE FROM runs WHERE run_id = ?", [(i,) for i in ids])
                deleted += len(ids)
                if len(ids) < _PRUNE_BATCH:
                    break
            if deleted:
                self.database.connection.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            raise self.database.error(exc, "prune old runs") from None
        return deleted

    def _prune_quietly(self) -> list[str]:
        try:
            self.prune()
        except HistoryError as exc:
            return [f"pruning old runs failed: {exc}"]
        return []

    # ------------------------------------------------------------------ reading

    def list_runs(
        self, *, kind: str | None = None, pack: str | None = None, limit: int | None = None
    ) -> list[RunSummary]:
        """Newest first, with coverage; ``kind``/``pack`` filter, ``limit`` caps."""
        return self.reader.list_runs(kind=kind, pack=pack, limit=limit)

    def get_run(self, run_id: str) -> RunSummary:
        """By id or unique prefix; UnknownRunError (exit 2) names what is wrong."""
        return self.reader.get_run(run_id)

    def entries(self, run_id: str) -> list[NodeEntry]:
        return self.reader.entries(self.get_run(run_id).run_id)

    def node_blocks(self, run_id: str) -> Iterator[tuple[NodeEntry, RowBlock]]:
        """Nodes with their rows in recorded order (for ``show``; one node at a time)."""
        return self.reader.node_blocks(self.get_run(run_id).run_id)

    def node_rows(self, run_id: str, node_id: str) -> RowBlock:
        """One node's rows in a run (empty when it did not answer or is not in the run)."""
        return self.reader.node_block(self.get_run(run_id).run_id, node_id)

    def unanswered(self, run_id: str) -> list[NodeEntry]:
        """The nodes ``--retry-missing`` asks again: failed, timed out or missing."""
        return [entry for entry in self.entries(run_id) if entry.state.retryable]

    def previous_run(self, run_id: str) -> RunSummary | None:
        """The run of the same question and scope just before this one."""
        return self.reader.neighbour(self.get_run(run_id), later=False)

    def diff(self, run_a: str | None = None, run_b: str | None = None) -> RunDiff:
        """Changes from ``run_a`` to ``run_b``.

        No runs: the newest run against the one before it of the same
        question and scope. Only ``run_a``: ``run_a`` against the newest
        later run of the same question and scope. Runs of different questions
        are a DiffMismatchError naming both (exit 2).
        """
        if run_b is not None and run_a is not None:
            before, after = self.get_run(run_a), self.get_run(run_b)
            if not self.reader.same_question(before, after):
                raise DiffMismatchError(
                    f"run {before.run_id} asked {before.question.label()!r} but run "
                    f"{after.run_id} asked {after.question.label()!r}: diff compares two runs "
                    "of the same question",
                    key="diff",
                )
        elif run_a is not None:
            before = self.get_run(run_a)
            later = self.reader.neighbour(before, later=True)
            if later is None:
                raise UnknownRunError(
                    f"no later run of the same question and scope as {before.run_id}", key="diff"
                )
            after = later
        else:
            newest = self.reader.latest_run()
            if newest is None:
                raise UnknownRunError(f"no runs recorded in {self.path}", key="diff")
            previous = self.reader.neighbour(newest, later=False)
            if previous is None:
                raise UnknownRunError(
                    f"the newest run {newest.run_id} ({newest.question.label()!r}) has no "
                    "earlier run of the same question and scope to compare with",
                    key="diff",
                )
            before, after = previous, newest
        return RunDiff.between(self.reader, before, after)

    def policy_states(
        self, run_id: str, *, grace_days: float | None = None, now: datetime | None = None
    ) -> list[PolicyState]:
        """Each (host, policy) verdict of the run with its state; ``overdue`` is judged as of
        ``now``, by default the run's start (so a run's states read the same forever)."""
        run = self.get_run(run_id)
        try:
            return policy_states(
                self.database.connection,
                run.run_id,
                now=now or parse_iso(run.started_at),
                grace_days=grace_days,
            )
        except sqlite3.Error as exc:
            raise self.database.error(exc, "read policy state") from None
        except ValueError as exc:
            raise self.database.error(ValueError(f"corrupt verdict ({exc})"), "read") from None

    def verdict_history(
        self, *, since: datetime | None = None, pack: str | None = None
    ) -> Iterator[RecordedVerdict]:
        """Every recorded policy verdict, oldest run first (trends, the report's matrix)."""
        try:
            yield from verdict_history(
                self.database.connection, since=iso(since) if since else None, pack=pack
            )
        except sqlite3.Error as exc:
            raise self.database.error(exc, "read policy verdicts") from None
        except (ValueError, KeyError) as exc:
            raise self.database.error(ValueError(f"corrupt verdict ({exc})"), "read") from None

    def unanswered_streaks(self, run_id: str) -> dict[str, int]:
        return self.reader.unanswered_streaks(self.get_run(run_id))

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
        self.database.close()

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_history(
    settings: HistorySettings,
    *,
    for_writing: bool = True,
    mirror: Mirror | None = None,
    now: Callable[[], datetime] | None = None,
) -> History:
    """Open the store named by ``settings``; HistoryError (exit 2) names the file.

    ``for_writing=False`` (history, show, diff, report) does not create a
    missing file: it raises HistoryError saying nothing was recorded yet.
    The S3 copy (``history.store: s3``) is made by :func:`fleetkit.history.s3layout.open_mirror`
    and passed as ``mirror``.
    """
    database = open_database(settings.path, lock_timeout=settings.lock_timeout, create=for_writing)
    return History(settings, database, now=now, mirror=mirror)


def _key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
