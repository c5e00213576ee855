"""The Bacalhau transport: one ``ops`` job, polled, each expected node matched with its execution.

- The expected node set is computed from the orchestrator's node list *before*
  submitting, because an ops job silently skips nodes that lack a capability:
  those are named MISSING with the reason instead of being waited for.
- Which node is which inventory host is decided by the one identity mapping
  (:func:`fleetkit.hostfacts.identity.map_fleet`): each answer is filed under
  the inventory name (``nodeID``) with the machine's own hostname, whatever
  the node's ID at the orchestrator. Hosts in an identity conflict are named
  MISSING with the conflict, and the nodes involved are never merged.
- Cluster nodes that are not inventory hosts (a stranger holding the token)
  are never merged silently: excluded by default (named, and the job is pinned
  to the inventory nodes by fleetkit's ``fleetkit-host`` label, or Bacalhau's
  ``name`` label, when every expected node carries it), included and marked
  on request (``Scope.include_unknown_nodes``). ``--hosts`` pins the job the same way.
- Output comes from ``RunOutput`` when it is complete, else from the object
  the S3 publisher wrote (spooled to an anonymous temporary file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING

from fleetkit.ask.answer import NodeStatus
from fleetkit.ask.expected import ExpectedNodes, Roster, expected_nodes
from fleetkit.ask.poll import JobWaiter
from fleetkit.ask.scope import Question, Scope
from fleetkit.ask.transport import Collected, NodeReply, by_node_id, osqueryi_reply
from fleetkit.clients.bacalhau import (
    BacalhauClient,
    ComputeState,
    Execution,
    TaskCommand,
    build_ops_job,
    osquery_command,
    stdout_key,
)
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.settings import S3Settings, Settings
from fleetkit.foundation.status import ConfigError, FleetkitError
from fleetkit.runtime import Runtime

if TYPE_CHECKING:
    from fleetkit.clients.s3 import ResultStore

#: Seconds the orchestrator may take beyond the execution timeout before the
#: job as a whole is failed (queueing, publishing).
TOTAL_TIMEOUT_MARGIN = 10

ClientFactory = Callable[[Runtime], BacalhauClient]
#: Builds the S3 result reader (imported lazily: boto3 is slow to import and
#: only the S3 route needs it).
StoreFactory = Callable[[S3Settings, Mapping[str, str]], "ResultStore"]


@dataclass
class BacalhauTransport:
    """Asks through the orchestrator's REST API (client injected by tests)."""

    client: BacalhauClient
    settings: Settings
    #: Inventory compute hosts; () when there is no inventory (then every node is a stranger).
    inventory_compute: Sequence[Host]
    env: Environment
    store_factory: StoreFactory | None = None

    @classmethod
    def from_runtime(
        cls, rt: Runtime, client_factory: ClientFactory | None = None
    ) -> BacalhauTransport:
        client = client_factory(rt) if client_factory else rt.orchestrator
        return cls(client, rt.settings, _inventory_compute(rt), rt.env)

    def ask(self, question: Question, scope: Scope) -> Collected:
        command = osquery_command(question.argv, self.settings.osquery.extensions_socket)
        return self.run_task(command, scope)

    def run_task(
        self,
        command: TaskCommand,
        scope: Scope,
        *,
        purpose: str = "query",
        on_submitted: Callable[[str], None] | None = None,
    ) -> Collected:
        """One ops job running ``command`` on the scope's nodes, collected like a query.

        The pack job (:mod:`fleetkit.ask.packrun`) runs its framing script here;
        ``on_submitted`` learns the job id as soon as it exists (the watch stops
        that job on SIGTERM).
        """
        settings = self.settings
        s3 = settings.query.s3 if settings.query.publisher == "s3" else None
        nodes = self.client.nodes()
        expected = expected_nodes(
            nodes,
            scope.selector,
            scope.hosts,
            publisher="s3" if s3 is not None else None,
            inventory_compute=self.inventory_compute,
            include_unknown=scope.include_unknown_nodes,
        )
        early = _early_replies(expected, scope)
        if not expected.ids:
            return Collected(replies=by_node_id(early))
        constraints = scope.selector.constraints()
        pin = expected.pin(nodes)
        if (scope.hosts is not None or expected.strangers or expected.conflicts) and pin:
            constraints.append(pin)
        seconds = max(1, math.ceil(scope.timeout))
        job = build_ops_job(
            command,
            image=settings.query.image,
            socket_dir=settings.osquery.socket_dir,
            constraints=constraints,
            execution_timeout=seconds,
            total_timeout=seconds + TOTAL_TIMEOUT_MARGIN,
            s3=s3,
            purpose=purpose,
        )
        job_id = self.client.submit_job(job).job_id
        if on_submitted is not None:
            on_submitted(job_id)
        waited = JobWaiter(self.client, job_id, expected.ids, env=self.env).wait(scope.timeout)
        replies = collect(
            waited.executions,
            expected.ids,
            scope_names=scope.host_names,
            roster=expected.roster,
            include_unknown=scope.include_unknown_nodes,
            timed_out=waited.timed_out,
            job_message=waited.job_message,
            fetch=self.fetch_published,
        )
        # A node listed as unable to run may have run it after all (it reconnected
        # in between): its real result wins over the guess.
        answered = {r.node_id for r in replies}
        early = [r for r in early if r.node_id not in answered]
        return Collected(by_node_id(replies + early), job_id, tuple(sorted(expected.names)))

    def fetch_published(
        self, items: list[tuple[str, str, str]]
    ) -> dict[str, IO[bytes] | FleetkitError]:
        """``{node_id: spooled stdout or error}`` for ``(node_id, bucket, key)`` items."""
        s3 = self.settings.query.s3
        if s3 is None:  # the job published to S3 but the settings no longer say where
            return {
                node_id: FleetkitError(f"result is in s3://{bucket}/{key} but query.s3 is not set")
                for node_id, bucket, key in items
            }
        store = (self.store_factory or _default_store)(s3, self.env.environ)
        # Spooled to anonymous temporary files: however many nodes published
        # large results, memory holds one node's output at a time.
        return store.spool_many(items, s3.parallelism)


Fetcher = Callable[[list[tuple[str, str, str]]], Mapping[str, "IO[bytes] | FleetkitError"]]


def _early_replies(expected: ExpectedNodes, scope: Scope) -> list[NodeReply]:
    """The nodes known not to answer before the job is submitted: missing, strangers."""
    inventory = expected.roster.inventory | (scope.host_names or set())
    hostnames = {m.name: m.hostname for m in expected.roster.members.values()}
    return [
        NodeReply(
            n, hostnames.get(n, n), NodeStatus.MISSING, error=why, in_inventory=n in inventory
        )
        for n, why in expected.missing.items()
    ] + [NodeReply(n, n, NodeStatus.MISSING, in_inventory=False) for n in expected.strangers]


def collect(
    executions: Sequence[Execution],
    expected: Sequence[str],
    *,
    scope_names: Collection[str] | None,
    roster: Roster,
    include_unknown: bool,
    timed_out: bool,
    job_message: str = "",
    fetch: Fetcher,
) -> list[NodeReply]:
    """One reply per expected node, and per other node that ran the job anyway.

    ``expected`` are node IDs; each reply is filed under the node's name in
    the ``roster`` (its inventory name) with its machine's hostname. A node
    that joined between listing and scheduling ran the query: an inventory
    host's rows are kept; a stranger's are not even fetched unless
    ``include_unknown``; a node in an identity conflict's never are. With
    ``--hosts`` only the named hosts count.
    """
    by_node = latest_per_node(executions)
    node_ids = list(expected) + sorted(
        n
        for n in by_node
        if n not in expected
        and n not in roster.conflicted
        and (scope_names is None or roster.name_of(n) in scope_names)
    )
    replies: dict[str, NodeReply] = {}
    needs_s3: list[tuple[str, str, str]] = []
    for node_id in node_ids:
        name, hostname, known = roster.filing(node_id)
        execution = by_node.get(node_id)
        if not known and not include_unknown:
            replies[name] = NodeReply(name, hostname, NodeStatus.MISSING, in_inventory=False)
        elif execution is None:
            reason = "no execution: the orchestrator did not run the job on this node"
            if job_message:
                reason += f" (job: {job_message})"
            replies[name] = NodeReply(
                name, hostname, NodeStatus.MISSING, error=reason, in_inventory=known
            )
        else:
            reply, location = execution_reply(execution, timed_out=timed_out, in_inventory=known)
            replies[name] = replace(reply, node_id=name, hostname=hostname)
            if location is not None:
                needs_s3.append((name, *location))
    if needs_s3:
        fetched = fetch(needs_s3)
        for name, _bucket, _key in needs_s3:
            replies[name] = _published(replies[name], fetched.get(name))
    return list(replies.values())


def _published(reply: NodeReply, value: IO[bytes] | FleetkitError | None) -> NodeReply:
    """The reply with its whole stdout from S3; a missing object fails that node."""
    if value is not None and not isinstance(value, FleetkitError):
        return NodeReply(
            reply.node_id,
            reply.hostname,
            reply.status,
            output=value,
            exit_code=reply.exit_code,
            in_inventory=reply.in_inventory,
        )
    error = str(value) if value is not None else "result object not fetched"
    return _failed(reply, error)


def _failed(reply: NodeReply, error: str) -> NodeReply:
    return NodeReply(
        reply.node_id,
        reply.hostname,
        NodeStatus.FAILED,
        error=error,
        exit_code=reply.exit_code,
        in_inventory=reply.in_inventory,
    )


def execution_reply(
    execution: Execution, *, timed_out: bool, in_inventory: bool = True
) -> tuple[NodeReply, tuple[str, str] | None]:
    """The node's reply from its execution; plus (bucket, key) when stdout must come from S3."""
    node_id = execution.node_id
    state = execution.compute_state
    detail = execution.message or execution.error_msg

    def reply(status: NodeStatus, error: str, exit_code: int | None = None) -> NodeReply:
        return NodeReply(node_id, node_id, status, None, error, exit_code, in_inventory)

    if not execution.is_terminal:
        when = "the deadline passed" if timed_out else "the job ended"
        status = NodeStatus.TIMED_OUT if timed_out else NodeStatus.FAILED
        return reply(status, f"still {_state_name(state)} when {when}"), None
    if state in (ComputeState.ASK_FOR_BID_REJECTED, ComputeState.BID_REJECTED):
        return reply(
            NodeStatus.MISSING, f"refused the job: {detail}" if detail else "refused the job"
        ), None
    if state == ComputeState.CANCELLED or (state == ComputeState.FAILED and _is_timeout(detail)):
        status = NodeStatus.TIMED_OUT if timed_out or _is_timeout(detail) else NodeStatus.FAILED
        return reply(status, detail or "execution cancelled"), None
    if state == ComputeState.FAILED:
        message = detail or execution.stderr.strip() or "execution failed"
        return reply(NodeStatus.FAILED, message, execution.exit_code), None
    stdout = execution.stdout.encode("utf-8") if execution.stdout is not None else None
    result = osqueryi_reply(
        node_id,
        node_id,
        exit_code=execution.exit_code,
        stdout=stdout,
        stderr=execution.stderr,
        in_inventory=in_inventory,
    )
    complete_in_run_output = execution.stdout is not None and not execution.stdout_truncated
    if result.status is not NodeStatus.OK or complete_in_run_output:
        return result, None
    location = stdout_key(execution.published_result) if execution.published_result else None
    if location is None:
        return _failed(
            result,
            "output over 2048 bytes was truncated in RunOutput and no S3 result was "
            "published (set query.publisher: s3 in the settings)"
            if execution.stdout_truncated
            else "the execution reported no output and published no result",
        ), None
    return result, location


def latest_per_node(executions: Sequence[Execution]) -> dict[str, Execution]:
    """One execution per node: a completed one wins, then any terminal one, then the rest."""

    def rank(e: Execution) -> tuple[int, int]:
        modified = e.raw.get("ModifyTime")
        return (
            2 if e.completed else 1 if e.is_terminal else 0,
            modified if isinstance(modified, int) else 0,
        )

    chosen: dict[str, Execution] = {}
    for execution in executions:
        current = chosen.get(execution.node_id)
        if current is None or rank(execution) > rank(current):
            chosen[execution.node_id] = execution
    return chosen


def _inventory_compute(rt: Runtime) -> Sequence[Host]:
    """Inventory compute hosts; () without an inventory (every node is then a stranger)."""
    try:
        return rt.inventory.compute
    except ConfigError:
        return ()


def _default_store(s3: S3Settings, environ: Mapping[str, str]) -> ResultStore:
    from fleetkit.clients.s3 import ResultStore

    return ResultStore.from_settings(s3, environ)


def _is_timeout(message: str) -> bool:
    text = message.lower()
    return "timeout" in text or "timed out" in text or "deadline" in text


def _state_name(state: int) -> str:
    try:
        return ComputeState(state).name.lower().replace("_", " ")
    except ValueError:
        return f"state {state}"
