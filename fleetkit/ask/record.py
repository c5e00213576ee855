"""Fleet runs into the history: one :class:`Recording` per command run.

Every command that asks the fleet records through this module (query, policy,
hunt, ``query --retry-missing``; a scheduled pack run too), so a run is
recorded the same way whoever asked:

    recording = Recording.open(rt, enabled=not no_history)    # exit 2 here, before any job
    recording.begin(kind="query", question=HistoryQuestion(sql), scope=scope,
                    asked={"sql": sql})
    answer = engine.ask(question, scope)                         # the fleet
    write_answer(answer, fmt, ..., after_node=recording.add_answer_node)
    recording.add_answer(answer)                                 # the nodes not merged
    recording.finish(job_id=answer.job_id)                       # never raises
    ...                                                          # the closing summary
    return recording.conclude(coverage, min_coverage, status)    # coverage, run id, exit

**One representation of rows.** A node's validated rows
(:class:`~fleetkit.ask.rows.RowData`) and a history block
(:class:`~fleetkit.history.rows.RowBlock`) are the same osqueryi framing:
rows ``{...}`` joined by ``,\\n  ``. :func:`row_block` is the adapter between
them: for output kept as the node printed it (the validated fast path) the
block is a ``memoryview`` onto those bytes (no copy, no re-encoding, no second
parse: validation already proved the framing), or one read of the rows'
region from a spooled file; rows validation re-encoded are joined with one
``replace``. Nothing here looks at the framing again.

Coverage and the exit status it decides: :mod:`fleetkit.ask.coverage`.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetkit.ask.answer import FleetAnswer, NodeResult
from fleetkit.ask.coverage import coverage_line, coverage_status, node_state, worst
from fleetkit.ask.rows import RowData, read_blob
from fleetkit.ask.scope import Scope
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.status import ExitStatus
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import (
    Coverage,
    History,
    HistoryError,
    NodeState,
    PolicyState,
    PolicyVerdict,
    RecordOutcome,
    RowBlock,
    RunRecorder,
    open_history,
)
from fleetkit.history import Question as HistoryQuestion
from fleetkit.history.rows import SEPARATOR
from fleetkit.runtime import Runtime

# --------------------------------------------------------------------------- rows


def row_block(data: RowData) -> RowBlock:
    """A node's validated rows as a history block, without re-encoding them.

    Framed rows are the region ``  {...},\\n  {...}`` of what the node printed:
    the block is that region after its first two spaces, as a ``memoryview``
    onto the node's bytes, or onto a read-only mapping of the file they were
    spooled to (a read when the file cannot be mapped). Re-encoded rows are
    compact JSON lines: the same rows, joined by the block's separator.
    """
    if not data.has_rows:
        return RowBlock(b"", 0)
    if data.framed:
        count = data.count
        blob = data.blob
        if isinstance(blob, bytes):
            return RowBlock(memoryview(blob)[data.start + 2 : data.end], count)
        handle, offset, _ = blob
        first, last = offset + data.start + 2, offset + data.end
        try:
            mapped = mmap.mmap(handle.fileno(), last, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # not a real file (SpooledTemporaryFile in memory)
            handle.seek(first)
            return RowBlock(handle.read(last - first), count)
        return RowBlock(memoryview(mapped)[first:last], count)
    lines = read_blob(data.blob)
    return RowBlock(lines[:-1].replace(b"\n", SEPARATOR), data.count)


# --------------------------------------------------------------------------- recording


def scope_record(scope: Scope) -> dict[str, Any]:
    """The scope as the history keeps it (what "the same scope" means for diff)."""
    return {
        "selector": str(scope.selector),
        "hosts": sorted(scope.host_names) if scope.host_names is not None else None,
        "transport": scope.via.value,
        "timeout": scope.timeout,
        "include_unknown_nodes": scope.include_unknown_nodes,
    }


@dataclass
class Recording:
    """One command run's recording; inert (records nothing) with ``--no-history``.

    Opened before anything is submitted: a corrupt, locked or unwritable
    history is a :class:`~fleetkit.history.HistoryError` (exit 2) naming the
    file. After :meth:`begin`, nothing raises for storage problems: a full
    disk makes the run incomplete, :meth:`finish` says so, and the command
    exits 1 (see :meth:`status`) after delivering its whole output.

    A long-lived caller (the watch) keeps one :class:`~fleetkit.history.History`
    open and records each run through ``Recording(env, history, redacted,
    owns_history=False)``: closing such a recording leaves the history open.
    """

    env: Environment
    history: History | None
    redacted: frozenset[str] = frozenset()
    #: Close the history with the recording (it was opened for this one run).
    owns_history: bool = True
    recorder: RunRecorder | None = None
    outcome: RecordOutcome | None = None
    resumed: bool = False
    _recorded: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, rt: Runtime, *, enabled: bool = True) -> Recording:
        settings = rt.settings
        redacted = frozenset(settings.query.redact_columns)
        if not enabled:
            return cls(rt.env, None, redacted)
        mirror = None
        if settings.history.store == "s3":  # boto3 is slow to import: only when needed
            from fleetkit.history.s3layout import open_mirror

            mirror = open_mirror(settings.history, settings.query.s3, rt.env.environ)
        try:
            history = open_history(settings.history, mirror=mirror)
        except HistoryError:
            if mirror is not None:
                mirror.close()
            raise
        return cls(rt.env, history, redacted)

    @property
    def run_id(self) -> str | None:
        return self.recorder.run_id if self.recorder is not None else None

    def begin(
        self,
        *,
        kind: str,
        question: HistoryQuestion,
        scope: Scope,
        asked: Mapping[str, Any],
    ) -> None:
        """The run starts (before submission; exit 2 when it cannot be recorded)."""
        if self.history is None:
            return
        self.recorder = self.history.begin_run(
            kind=kind,
            question=question,
            scope=scope_record(scope),
            transport=scope.via.value,
            redact_columns=self.redacted,
            asked=asked,
        )

    def resume(self, run_id: str) -> None:
        """Record late answers into ``run_id`` instead of a new run."""
        assert self.history is not None
        self.recorder = self.history.resume_run(run_id)
        self.resumed = True

    def add_answer_node(self, node: NodeResult) -> None:
        """One node of an answer (as the merge writes it: its rows are at hand)."""
        if self.recorder is None or node.node_id in self._recorded:
            return
        self._recorded.add(node.node_id)
        self.recorder.add_node(
            node_id=node.node_id,
            hostname=node.hostname,
            status=node_state(node).value,
            rows=row_block(node.data),
            error=node.error,
            exit_code=node.exit_code,
            unknown=node.unknown,
        )

    def add_answer(self, answer: FleetAnswer) -> None:
        """Every node of ``answer`` not recorded yet (nodes without rows; the rest of an
        output the reader stopped reading)."""
        for node in answer.nodes:
            self.add_answer_node(node)

    def add_node(
        self,
        *,
        node_id: str,
        hostname: str,
        state: NodeState,
        rows: list[bytes],
        error: str | None = None,
        unknown: bool = False,
    ) -> None:
        """A node of a run that asked several questions (policy, hunt): its own records."""
        if self.recorder is None or node_id in self._recorded:
            return
        self._recorded.add(node_id)
        self.recorder.add_node(
            node_id=node_id,
            hostname=hostname,
            status=state.value,
            rows=rows,
            error=error,
            unknown=unknown,
        )

    def add_verdicts(self, verdicts: Iterable[PolicyVerdict]) -> None:
        """Policy verdicts of this run (first failed / fixed state over runs)."""
        if self.recorder is not None:
            self.recorder.add_verdicts(verdicts)

    def policy_states(self, grace_days: float | None) -> list[PolicyState] | None:
        """The run's policy states as the history knows them (None when not recorded).
        Storage failing meanwhile leaves no states rather than an error: the output
        still comes, and the run is incomplete."""
        if self.recorder is None or self.history is None:
            return None
        self.recorder.flush()
        if self.recorder.failed is not None:
            return None
        try:
            return self.history.policy_states(self.recorder.run_id, grace_days=grace_days)
        except HistoryError:
            return None

    def finish(self, *, job_id: str | None = None, note: str | None = None) -> None:
        """End the recording (idempotent; never raises for storage problems)."""
        if self.recorder is None or self.outcome is not None:
            return
        self.outcome = self.recorder.finish(job_id=job_id, note=note)

    def report(self) -> None:
        """The closing summary's last lines: where the run was recorded, or why it is not
        complete (then the command exits 1, see :meth:`status`)."""
        outcome = self.outcome
        if outcome is None:
            return
        for warning in outcome.warnings:
            self.env.say(terminal_safe(f"history: warning: {warning}"))
        if outcome.complete:
            what = "late answers recorded into run" if self.resumed else "recorded as run"
            self.env.say(f"history: {what} {outcome.run_id}")
        else:
            self.env.say(
                terminal_safe(
                    f"history: run {outcome.run_id} is INCOMPLETE: {outcome.note} "
                    "(the output above is whole; exit 1)"
                )
            )

    def conclude(self, coverage: Coverage, minimum: float | None, status: ExitStatus) -> ExitStatus:
        """The closing summary's last lines -- the run's coverage, where it was recorded --
        and the exit status they decide with the command's own ``status``."""
        self.env.say(coverage_line(coverage))
        below = coverage_status(self.env, coverage, minimum)
        self.report()
        return worst(status, below, self.status())

    def status(self) -> ExitStatus:
        """FAILURE when the recording could not be completed."""
        if self.outcome is not None and not self.outcome.complete:
            return ExitStatus.FAILURE
        return ExitStatus.SUCCESS

    def close(self, error: BaseException | None = None) -> None:
        """Finish (as interrupted, or stopped by ``error``) and close the history."""
        if error is not None and self.outcome is None and self.recorder is not None:
            note = (
                "interrupted"
                if isinstance(error, KeyboardInterrupt)
                else f"stopped by an error ({type(error).__name__})"
            )
            with contextlib.suppress(Exception):
                self.outcome = self.recorder.finish(note=note)
        if self.history is not None and self.owns_history:
            self.history.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, kind: object, value: BaseException | None, traceback: object) -> None:
        self.close(value)
