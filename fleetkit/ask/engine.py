"""The fleet-asking engine: ``ask(question, scope) -> FleetAnswer``.

Every command that asks the fleet (query, policy, hunt; later the history,
scheduled packs and the report) goes through :class:`Engine`: it picks the
transport for the scope, lets it collect the raw replies, and validates all
of them into one immutable :class:`~fleetkit.ask.answer.FleetAnswer` before
returning. Results are returned, never printed (progress goes to stderr).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fleetkit.ask.answer import FleetAnswer
from fleetkit.ask.scope import Question, Scope, SqlRules, Via
from fleetkit.ask.transport import Transport
from fleetkit.ask.validate import settle
from fleetkit.ask.via_bacalhau import BacalhauTransport, ClientFactory
from fleetkit.ask.via_ssh import SshTransport
from fleetkit.runtime import Runtime

#: Asks the fleet one question; what policy and hunt take (tests inject scripted ones).
Asker = Callable[[Question, Scope], FleetAnswer]


@dataclass
class Engine:
    """Asks with the runtime's settings; transports are built on first use and reused."""

    rt: Runtime
    #: Makes the Bacalhau client (tests inject a scripted orchestrator).
    client_factory: ClientFactory | None = None
    transports: dict[Via, Transport] = field(default_factory=dict)

    def transport(self, via: Via) -> Transport:
        if via not in self.transports:
            self.transports[via] = (
                SshTransport.from_runtime(self.rt)
                if via is Via.SSH
                else BacalhauTransport.from_runtime(self.rt, self.client_factory)
            )
        return self.transports[via]

    def ask(self, question: Question, scope: Scope) -> FleetAnswer:
        """Ask; the answer is validated, so every consumer sees the same final statuses.

        :class:`~fleetkit.clients.bacalhau.OrchestratorError` when the cluster
        cannot be asked at all; KeyboardInterrupt after the job was stopped.
        """
        collected = self.transport(scope.via).ask(question, scope)
        return settle(
            collected,
            redacted=self.rt.settings.query.redact_columns,
            include_unknown=scope.include_unknown_nodes,
        )

    def question(self, sql: str) -> Question:
        """``sql`` checked against the settings' rules (see :meth:`Question.parse`)."""
        return Question.parse(sql, rules=SqlRules.of(self.rt.settings))


def ask(
    rt: Runtime,
    question: Question,
    scope: Scope,
    *,
    client_factory: ClientFactory | None = None,
) -> FleetAnswer:
    """One question, one answer (see :meth:`Engine.ask`)."""
    return Engine(rt, client_factory).ask(question, scope)
