"""Which runs still need notifying, decided from run ids, so a restart re-sends nothing.

The rule (the *ledger*): per pack, the watch remembers the last run whose
events it handed to the sinks (``notified_run_id`` / ``notified_started_at``
in the status file). A run is notified when it is newer than that mark,
ordered as the history orders runs, by (start time, run id):

- after each run the watch records, its events are computed from the history
  and published, then the mark moves to that run and ``commit`` writes the
  status file: the commit point;
- on start, runs of a pack newer than the mark (recorded by a watch that died
  before publishing) are notified then, once, with the same event ids;
- a pack with no mark (first start, or the status file was lost) adopts its
  latest recorded run as the mark: the past is never re-sent.

Events themselves are transitions computed by the history (``newly_failing``
after ``still_failing`` etc.), so even a lost mark re-sends only the runs
after the adopted one, never an old change. Queued but undelivered webhook
events die with the process (the queue is in memory); receivers de-duplicate
on the event id for the opposite case, a run notified twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from fleetkit.watch.events import Event
from fleetkit.watch.notify import Notifier
from fleetkit.watch.transitions import DEFAULT_EVENT_LIMIT, RunObservations, compute_events


class RunMark(NamedTuple):
    """A recorded run of a pack, ordered as the history orders runs (start time, run id)."""

    started_at: str
    run_id: str


class HistoryView(Protocol):
    """What the notifications need from the history (the glue adapts ``fleetkit.history``)."""

    def finished_runs(self, pack: str) -> Sequence[RunMark]:
        """The pack's finished watch runs (any order)."""

    def observations(self, pack: str, run: RunMark) -> RunObservations:
        """The run's state, as :mod:`.transitions` reads it."""


def runs_to_notify(recorded: Iterable[RunMark], mark: RunMark | None) -> list[RunMark]:
    """Runs newer than ``mark``, oldest first; with no mark, none (the past is not re-sent)."""
    if mark is None:
        return []
    return sorted(run for run in set(recorded) if run > mark)


def adopted_mark(recorded: Iterable[RunMark], mark: RunMark | None) -> RunMark | None:
    """The mark a starting watch uses: its own, else the latest recorded run (or none)."""
    if mark is not None:
        return mark
    return max(recorded, default=None)


class Notifications:
    """Computes a run's events from the history, publishes them, moves the ledger."""

    def __init__(
        self,
        history: HistoryView,
        notifier: Notifier,
        ledger: dict[str, RunMark | None] | None = None,
        *,
        missing_after: int,
        limit: int = DEFAULT_EVENT_LIMIT,
        commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.history = history
        self.notifier = notifier
        #: Persists the ledger (the watch writes its status file): called after each
        #: notified run, so a crash later never re-sends that run.
        self.commit = commit
        self.ledger: dict[str, RunMark | None] = ledger if ledger is not None else {}
        self.missing_after = missing_after
        self.limit = limit

    def catch_up(self, packs: Iterable[str]) -> list[Event]:
        """On start: notify runs recorded after each pack's mark (a crash between recording
        and notifying); adopt the latest run as the mark of a pack that has none."""
        sent: list[Event] = []
        for pack in packs:
            recorded = list(self.history.finished_runs(pack))
            mark = self.ledger.get(pack)
            self.ledger[pack] = adopted_mark(recorded, mark)
            for run in runs_to_notify(recorded, mark):
                sent += self.after_run(pack, run)
        return sent

    def after_run(self, pack: str, run: RunMark) -> list[Event]:
        """Notify one recorded run, unless the ledger says it already was."""
        mark = self.ledger.get(pack)
        if mark is not None and run <= mark:
            return []
        events = compute_events(
            self.history.observations(pack, run),
            missing_after=self.missing_after,
            limit=self.limit,
        )
        self.notifier.publish(events)
        self.ledger[pack] = run
        self.commit()
        return events
