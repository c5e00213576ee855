"""The SSH transport: ``osqueryi --connect <socket> --json`` on each inventory host.

The hosts are inventory compute hosts (``--hosts`` or all of them) matching
the selector on their inventory labels, asked in the bounded SSH pool with
pinned host keys. The SQL travels on stdin and reaches osqueryi as its
argument without any parsing (:func:`~fleetkit.ask.osqueryi.osqueryi_command`).
The node ID of each answer is the inventory name (the identity rule,
:mod:`fleetkit.hostfacts.identity`); its hostname is the machine's own,
printed by ``uname -n`` in the same command, before osqueryi runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleetkit.ask.answer import NodeStatus
from fleetkit.ask.osqueryi import osqueryi_command
from fleetkit.ask.scope import Question, Scope
from fleetkit.ask.transport import Collected, NodeReply, Progress, by_node_id, osqueryi_reply
from fleetkit.clients.ssh import CommandResult, CommandTimeout, Outcome, Remote, fan_out
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.hostfacts.identity import machine_hostname
from fleetkit.runtime import Runtime

#: Bytes the host's first line (its hostname) may take before osqueryi's output.
HOSTNAME_LINE_LIMIT = 256


def ask_command(socket: str) -> str:
    """``uname -n`` (the machine's hostname, one line), then osqueryi with the SQL on stdin."""
    return f"uname -n; {osqueryi_command(socket)}"


def split_hostname(stdout: bytes) -> tuple[str | None, bytes]:
    """The hostname line printed before osqueryi's output, and that output.

    The line is the host's word: bounded, and only a valid hostname is taken
    (anything else stays for osqueryi's parser, which skips what precedes its
    JSON the way it skips the ``--connect`` banner).
    """
    end = stdout.find(b"\n", 0, HOSTNAME_LINE_LIMIT)
    name = machine_hostname(stdout[:end].decode("ascii", "replace")) if end > 0 else None
    return (name, stdout[end + 1 :]) if name else (None, stdout)


@dataclass
class SshTransport:
    """Asks inventory hosts directly; ``connect`` opens a verified SSH session."""

    compute_hosts: Callable[[], Sequence[Host]]
    connect: Callable[[Host], Remote]
    socket: str
    parallelism: int
    env: Environment

    @classmethod
    def from_runtime(cls, rt: Runtime) -> SshTransport:
        return cls(
            compute_hosts=lambda: rt.inventory.compute,
            connect=lambda host: rt.connector.connect(host),
            socket=rt.settings.osquery.extensions_socket,
            parallelism=rt.settings.ssh.parallelism,
            env=rt.env,
        )

    def ask(self, question: Question, scope: Scope) -> Collected:
        candidates = scope.hosts if scope.hosts is not None else self.compute_hosts()
        hosts = [h for h in candidates if scope.selector.matches(h.labels)]
        command = ask_command(self.socket)
        payload = question.argv.encode("utf-8")
        progress = Progress(self.env, len(hosts))
        clock = self.env.clock
        timeout = scope.timeout
        # One deadline for the whole fleet, not per host: with more hosts than the
        # pool has workers, the last ones start late and get what is left.
        deadline = clock() + timeout

        def remaining(host: Host) -> float:
            left = deadline - clock()
            if left <= 0:
                raise CommandTimeout(host.name, f"not asked before the {timeout:g}s deadline")
            return left

        def ask_one(host: Host) -> CommandResult:
            remaining(host)
            with self.connect(host) as remote:
                return remote.run(command, stdin=payload, timeout=remaining(host))

        outcomes = fan_out(
            hosts,
            ask_one,
            parallelism=self.parallelism,
            on_done=lambda _outcome: progress.step(),
        )
        return Collected(
            replies=by_node_id([ssh_reply(outcome) for outcome in outcomes]),
            expected=tuple(h.name for h in hosts),
        )


def ssh_reply(outcome: Outcome[CommandResult]) -> NodeReply:
    """One host's SSH outcome: connection or timeout problems, else osqueryi's run."""
    name = outcome.host.name
    if outcome.error is not None:
        status = (
            NodeStatus.TIMED_OUT if isinstance(outcome.error, CommandTimeout) else NodeStatus.FAILED
        )
        message = getattr(outcome.error, "detail", None) or str(outcome.error)
        return NodeReply(name, name, status, error=message)
    result = outcome.value
    assert result is not None
    hostname, stdout = split_hostname(result.stdout)
    return osqueryi_reply(
        name,
        hostname or name,
        exit_code=result.exit_code,
        stdout=stdout,
        stderr=result.stderr,
    )
