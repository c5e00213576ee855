"""The watch's glue: each scheduled run asks the fleet, records, notifies.

One :class:`Watch` per process, built by ``invoke watch`` from the runtime:

1. the packs are loaded and validated (:mod:`.packset`; exit 2 before anything
   starts), the history opened (exit 2 when it cannot be), the previous
   status file read (its notification ledger says what was already sent);
2. runs recorded but not notified by a watch that died are notified now,
   once (:meth:`.session.Notifications.catch_up`);
3. the scheduler calls :meth:`Watch.run_pack` for each due pack: the run
   is begun in the history *before* anything is asked (so an orchestrator
   that is down gives a recorded, failed run with the reason), the pack is
   asked as ONE job per node (:func:`fleetkit.ask.packrun.run_pack`), every
   node and the policy verdicts are recorded, and the run's events are
   computed from the history and handed to the sinks;
4. SIGTERM / Ctrl-C: :class:`RunningJob` stops the job at the orchestrator
   (on the scheduler's stop thread); the run then ends by itself with what
   it has, recorded as incomplete ("stopped"), never notified; the status
   file says stopped; exit 0 (SIGTERM) or 130 (Ctrl-C).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fleetkit.ask.packrun import run_pack
from fleetkit.ask.via_bacalhau import BacalhauTransport
from fleetkit.clients.bacalhau import BacalhauClient, OrchestratorError
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.settings import S3Settings, Settings
from fleetkit.foundation.status import ExitStatus, FleetkitError
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.history import History, HistoryError
from fleetkit.watch.historyview import PackHistory
from fleetkit.watch.notify import LogSink, Notifier, Sink, WebhookSink
from fleetkit.watch.packrecord import begin_pack_run, record_pack_run
from fleetkit.watch.packset import WatchedPack, pack_scope
from fleetkit.watch.scheduler import (
    RunOutcome,
    RunRequest,
    ScheduledPack,
    Scheduler,
    StopReason,
    signals_handled,
)
from fleetkit.watch.session import Notifications, RunMark, runs_to_notify
from fleetkit.watch.state import (
    StatusBoard,
    WatchStatus,
    ledger_of,
    resume_delays,
    starting_status,
)
from fleetkit.watch.statusread import recover_status

if TYPE_CHECKING:
    from fleetkit.clients.s3 import ResultStore

Say = Callable[[str], None]


class QuietEnvironment(Environment):
    """The run's environment without progress lines (a service log is not a terminal)."""

    def progress(self, message: str) -> None:
        pass

    def end_progress(self) -> None:
        pass


def quiet(env: Environment) -> QuietEnvironment:
    """The same streams, environment and clock (its own lock)."""
    shared = {f.name: getattr(env, f.name) for f in fields(env) if f.init and f.name != "_lock"}
    return QuietEnvironment(**shared)


class OneStore:
    """The S3 result reader, made once per watch process and reused by every run (creating
    a boto3 client reads botocore's endpoint data: ~0.3 s, more than a small pack's job)."""

    def __init__(self) -> None:
        self._store: ResultStore | None = None
        self._lock = threading.Lock()

    def __call__(self, s3: S3Settings, environ: Mapping[str, str]) -> ResultStore:
        with self._lock:
            if self._store is None:
                from fleetkit.clients.s3 import ResultStore  # boto3: only when results are in S3

                self._store = ResultStore.from_settings(s3, environ)
            return self._store


@dataclass
class RunningJob:
    """The job of the run in progress, so that a stop request reaches the orchestrator."""

    client: BacalhauClient
    say: Say
    job_id: str | None = None
    stop_reason: StopReason | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        with self._lock:
            self.job_id = None

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def submitted(self, job_id: str) -> None:
        """Called as soon as the job exists: a stop that came first stops it now."""
        with self._lock:
            self.job_id = job_id
            reason = self.stop_reason
        if reason is not None:
            self._stop(job_id, reason)

    def stop(self, reason: StopReason) -> None:
        """The scheduler's ``on_stop`` (its own thread): stop the job, if there is one yet."""
        with self._lock:
            self.stop_reason = reason
            job_id = self.job_id
        if job_id is not None:
            self._stop(job_id, reason)

    def _stop(self, job_id: str, reason: StopReason) -> None:
        try:
            self.client.stop_job(job_id, f"fleetkit watch is stopping ({reason.value})")
        except OrchestratorError as exc:
            self.say(terminal_safe(f"watch: could not stop job {job_id}: {redact(str(exc))}"))
        else:
            self.say(f"watch: stopped job {job_id} at the orchestrator ({reason.value})")


@dataclass
class Watch:
    """Everything one watch process runs with (built by :func:`build_watch`)."""

    settings: Settings
    env: Environment
    packs: Sequence[WatchedPack]
    history: History
    transport: BacalhauTransport
    notifier: Notifier
    notifications: Notifications
    view: PackHistory
    board: StatusBoard
    job: RunningJob
    #: What the previous watch left in the status file (its packs' next slots).
    previous: WatchStatus | None = None
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def scheduler(self) -> Scheduler:
        return Scheduler(
            [ScheduledPack(p.name, p.interval) for p in self.packs],
            self.run_pack,
            say=self.env.say,
            board=self.board,
            on_stop=self.job.stop,
            clock=self.env.clock,
            wall=self.wall,
            heartbeat=self.settings.watch.heartbeat,
        )

    def run(self, *, once: bool) -> ExitStatus:
        """Catch up on unsent runs, then run (each pack once, or until stopped)."""
        try:
            sent = self.notifications.catch_up([p.name for p in self.packs])
            if sent:
                self.env.say(f"watch: sent {len(sent)} event(s) of runs recorded before a restart")
            intervals = {p.name: p.interval for p in self.packs}
            delays = resume_delays(self.previous, intervals, self.wall())
            scheduler = self.scheduler()
            with signals_handled(scheduler):
                return scheduler.run_once() if once else scheduler.run_forever(delays)
        finally:
            self.close()

    def close(self) -> None:
        self.notifier.close(self.settings.watch.stop_grace)
        try:
            self.board.write(self.wall())
        except OSError as exc:
            self.env.say(f"watch: cannot write the status file: {exc.strerror or exc}")
        self.history.close()

    # ---- one run -----------------------------------------------------------------------------
    def run_pack(self, request: RunRequest) -> RunOutcome:
        """One run of one pack: begin the record, ask, record, notify (the scheduler's callback)."""
        watched = next(p for p in self.packs if p.name == request.pack)
        pack, settings = watched.pack, self.settings
        scope = pack_scope(pack, settings)
        self.job.begin()
        try:
            recorder = begin_pack_run(
                self.history,
                pack,
                scope,
                started_at=self.wall(),
                redact_columns=settings.query.redact_columns,
            )
        except HistoryError as exc:
            return RunOutcome("failed", error=f"cannot record the run: {exc}")
        run_id = recorder.run_id
        try:
            if self.job.stopping:
                recorder.finish(note="stopped before the job was submitted")
                return RunOutcome("interrupted", run_id, "stopped before the job was submitted")
            with run_pack(
                self.transport,
                pack,
                scope,
                query_timeout=settings.watch.query_timeout,
                redacted=settings.query.redact_columns,
                on_submitted=self.job.submitted,
            ) as answers:
                if self.job.stopping:
                    record_pack_run(recorder, answers)
                    note = f"stopped: job {answers.job_id} was stopped at the orchestrator"
                    recorder.finish(note=note)
                    self._record_job(run_id, answers.job_id)
                    return RunOutcome("interrupted", run_id, note)
                verdicts = answers.verdicts(scope) if pack.kind == "policy" else []
                record_pack_run(recorder, answers, verdicts)
                answered = sum(
                    any(r.ok for _, r in answers.node_results(n.node_id)) for n in answers.nodes
                )
                asked = len(answers.nodes)
        except FleetkitError as exc:  # orchestrator down, results unreadable: recorded as failed
            reason = redact(str(exc))
            recorder.finish(note=f"run failed: {reason}")
            return RunOutcome("failed", run_id, reason)
        except BaseException as exc:
            recorder.finish(note="interrupted" if isinstance(exc, KeyboardInterrupt) else "error")
            raise
        outcome = recorder.finish()
        self._record_job(run_id, answers.job_id)
        if not outcome.complete:
            return RunOutcome("failed", run_id, f"history: {outcome.note}")
        events = self.notify(pack.name, RunMark(recorder.started_at, run_id))
        self.env.say(
            f"watch: pack {pack.name}: run {run_id} recorded "
            f"({answered}/{asked} node(s) answered), {events} event(s)"
        )
        return RunOutcome("ok", run_id)

    def _record_job(self, run_id: str, job_id: str | None) -> None:
        """The job's id with the run (after the recorder is done with the file)."""
        if job_id is None:
            return
        try:
            self.history.set_job_id(run_id, job_id)
        except HistoryError as exc:
            self.env.say(terminal_safe(f"watch: run {run_id}: job id not recorded: {exc}"))

    def notify(self, pack: str, run: RunMark) -> int:
        """Notify ``run``, and any earlier run this process recorded but could not notify."""
        try:
            mark = self.notifications.ledger.get(pack)
            pending = runs_to_notify(self.view.finished_runs(pack), mark) if mark else [run]
            return sum(len(self.notifications.after_run(pack, r)) for r in pending)
        except HistoryError as exc:  # the next run (or restart) retries: the ledger did not move
            self.env.say(terminal_safe(f"watch: pack {pack}: events not computed: {exc}"))
            return 0


def build_watch(
    settings: Settings,
    env: Environment,
    packs: Sequence[WatchedPack],
    history: History,
    client: BacalhauClient,
    inventory_compute: Sequence[Host],
    *,
    wall: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Watch:
    """Wire one watch process: sinks, status board and ledger, history view, transport."""
    w = settings.watch
    sinks: list[Sink] = [LogSink(env.say)] if w.log_events else []
    webhook = None
    if w.webhook is not None:
        webhook = WebhookSink(
            w.webhook.url,
            w.webhook.secret.reveal().encode(),
            say=env.say,
            queue_size=w.webhook.queue_size,
            timeout=w.webhook.timeout,
            retry=w.webhook.retry,
        )
    notifier = Notifier(sinks, webhook=webhook)
    previous = recover_status(w.status_file, env.say)
    ledger = ledger_of(previous)
    board = StatusBoard(
        w.status_file,
        starting_status(previous, heartbeat=w.heartbeat, now=wall()),
        counters=notifier.counters,
        ledger=ledger,
    )
    view = PackHistory(history, {p.name: p.pack for p in packs}, missing_after=w.missing_after)
    notifications = Notifications(
        view,
        notifier,
        ledger,
        missing_after=w.missing_after,
        limit=w.max_events_per_run,
        commit=lambda: board.write(wall()),
    )
    run_env = quiet(env)
    transport = BacalhauTransport(
        client, settings, tuple(inventory_compute), run_env, store_factory=OneStore()
    )
    notifier.start()
    return Watch(
        settings=settings,
        env=env,
        packs=packs,
        history=history,
        transport=transport,
        notifier=notifier,
        notifications=notifications,
        view=view,
        board=board,
        job=RunningJob(client, env.say),
        previous=previous,
        wall=wall,
    )
