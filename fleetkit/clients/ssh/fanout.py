"""The bounded fan-out: one piece of work per host, a ceiling on how many run at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TypeVar

from fleetkit.foundation.inventory import Host

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """What one host's work produced: a value, or the error that stopped it."""

    host: Host
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def fan_out(
    hosts: Iterable[Host],
    work: Callable[[Host], T],
    *,
    parallelism: int,
    on_done: Callable[[Outcome[T]], None] | None = None,
) -> list[Outcome[T]]:
    """Run ``work`` for each host in a bounded pool; results in inventory order.

    Fabric's ThreadingGroup starts one unbounded thread per host; a fleet of
    thousands needs a ceiling. A host's exception is captured in its
    :class:`Outcome` and never stops the others. ``KeyboardInterrupt`` is
    re-raised once the running work has been abandoned.
    """
    host_list = list(hosts)
    outcomes: dict[str, Outcome[T]] = {}
    if not host_list:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(host_list)))) as pool:
        futures = {pool.submit(work, host): host for host in host_list}
        try:
            for future in as_completed(futures):
                host = futures[future]
                try:
                    outcome = Outcome(host, value=future.result())
                except Exception as exc:  # reported per host
                    outcome = Outcome(host, error=exc)
                outcomes[host.name] = outcome
                if on_done:
                    on_done(outcome)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise
    return [outcomes[h.name] for h in host_list]
