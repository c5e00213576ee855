"""``invoke query "SQL"``: ask every matching node one osquery question.

Two transports feed one collector, parser and merge:

- **bacalhau** (default): the expected node set is computed from the
  orchestrator's node list *before* submitting, because an ops job silently
  skips nodes that lack a capability; one ``ops`` job is submitted, polled
  with an adaptive interval, and each expected node is matched with its
  execution. Output comes from ``RunOutput`` when complete, else from the
  object the S3 publisher wrote.
- **ssh**: ``osqueryi --connect=<socket> --json SQL`` on each inventory
  compute host in the bounded pool; the SQL travels on stdin and reaches
  osqueryi as its argument without any parsing (never in a command line).

Every node ends as one :class:`~fleetkit.ask.results.NodeResult`: OK, FAILED,
TIMED OUT or MISSING, with the reason. Nothing is dropped silently.

Node identity: the node ID is the Bacalhau node ID, which is the inventory
name when nodes run with ``NameProvider: hostname`` (as fleetkit provisions
them); on the SSH path it is the inventory name. The ``hostname`` tag is that
same name -- unless the query returns its own ``hostname`` column (e.g. from
``system_info``), whose value is the host's own view and is kept.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleetkit.ask.results import NodeResult, NodeStatus, node_result, redact_row, tag_row
from fleetkit.clients.bacalhau import (
    BacalhauClient,
    ComputeState,
    Execution,
    NodeState,
    OrchestratorError,
    build_osquery_job,
    stdout_key,
)
from fleetkit.clients.ssh import CommandResult, CommandTimeout, Outcome, fan_out
from fleetkit.foundation.inventory import Host, parse_hosts_option
from fleetkit.foundation.output import check_format, check_output_path, write_result
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.selectors import Selector, parse_selector
from fleetkit.foundation.settings import S3Settings
from fleetkit.foundation.sqlguard import refuse_denied_tables
from fleetkit.foundation.status import ConfigError, ExitStatus, FleetkitError, UsageError
from fleetkit.runtime import Runtime

if TYPE_CHECKING:
    from fleetkit.clients.s3 import ResultStore

VIAS = ("bacalhau", "ssh")

#: Seconds the orchestrator may take beyond the execution timeout before the
#: job as a whole is failed (queueing, publishing).
_TOTAL_TIMEOUT_MARGIN = 10
#: Label Bacalhau (v1.8+) sets to the node's name; used to pin a job to --hosts.
_NAME_LABEL = "name"

ClientFactory = Callable[[Runtime], BacalhauClient]
#: Builds the S3 result reader (imported lazily: boto3 is slow to import and
#: only the S3 route needs it).
StoreFactory = Callable[[S3Settings, Mapping[str, str]], "ResultStore"]


@dataclass(frozen=True)
class QueryRequest:
    sql: str
    select: str = ""
    hosts: str = ""
    via: str = "bacalhau"
    #: Seconds to wait for the nodes; None = settings ``query.timeout``.
    timeout: float | None = None


@dataclass
class FleetAnswer:
    """Every expected node's result, in a stable order (node ID)."""

    nodes: list[NodeResult]
    job_id: str | None
    #: Node IDs the query was meant for (answered or not).
    expected: list[str]

    def tagged_rows(self, redact_columns: Iterable[str] = ()) -> Iterator[dict[str, str]]:
        """Every row of every OK node, tagged with ``nodeID`` and ``hostname``.

        A node whose output turns out unparseable is marked FAILED on the way
        (so :attr:`complete` and :attr:`problems` are final once this is consumed).
        Pass ``rt.settings.query.redact_columns`` when the rows are shown to anyone.
        """
        redact = frozenset(redact_columns)
        for node in self.nodes:
            for row in node.checked_rows():
                yield redact_row(tag_row(row, node.node_id, node.hostname), redact)

    @property
    def complete(self) -> bool:
        """True when there was at least one node and every node answered OK."""
        return bool(self.nodes) and all(node.ok for node in self.nodes)

    @property
    def problems(self) -> list[NodeResult]:
        return [node for node in self.nodes if not node.ok]


# --------------------------------------------------------------------------- the CLI


def run(
    rt: Runtime,
    *,
    sql: str,
    select: str,
    hosts: str,
    via: str,
    output_format: str,
    output: str | None,
    timeout: float | None,
    client_factory: ClientFactory | None = None,
) -> ExitStatus:
    """The ``query`` command: ask, merge to stdout or ``--output``, summarise on stderr."""
    fmt = check_format(output_format)
    check_output_path(output)
    request = QueryRequest(sql=sql, select=select, hosts=hosts, via=via, timeout=timeout)
    answer = ask_fleet(rt, request, client_factory=client_factory)
    stats = write_result(
        answer.nodes,
        fmt,
        env=rt.env,
        output=output,
        redact_columns=rt.settings.query.redact_columns,
    )
    if stats.closed_early:
        rt.env.say("query: the reader closed the output early; the rest was not written")
    report_summary(rt, answer, rows=stats.rows, output=output)
    return exit_status(answer)


def exit_status(answer: FleetAnswer) -> ExitStatus:
    """0 only when every expected node answered; 1 otherwise (the rest is still delivered)."""
    return ExitStatus.SUCCESS if answer.complete else ExitStatus.FAILURE


def report_summary(rt: Runtime, answer: FleetAnswer, *, rows: int, output: str | None) -> None:
    """The closing lines on stderr: counts, then every node that did not answer OK."""
    env = rt.env
    env.end_progress()
    ok = sum(1 for node in answer.nodes if node.ok)
    where = f" to {output}" if output else ""
    job = f" (job {answer.job_id})" if answer.job_id else ""
    env.say(f"query: {rows} rows from {ok}/{len(answer.nodes)} nodes{where}{job}")
    if not answer.nodes:
        env.say("query: no compute node matches the selection; nothing was asked")
    for node in answer.problems:
        env.say(redact(f"  {node.describe()}"))


# --------------------------------------------------------------------------- asking


def ask_fleet(
    rt: Runtime,
    request: QueryRequest,
    *,
    client_factory: ClientFactory | None = None,
) -> FleetAnswer:
    """Ask the fleet; results are returned, never printed (progress goes to stderr).

    Bad input raises :class:`UsageError` before anything is contacted;
    :class:`OrchestratorError` when the cluster cannot be asked at all.
    ``client_factory`` lets tests inject a scripted client.
    """
    sql = argv_safe_sql(check_sql(request.sql))
    if request.via not in VIAS:
        raise UsageError(f"must be one of {', '.join(VIAS)}, got {request.via!r}", key="--via")
    selector = parse_selector(request.select)
    timeout = check_timeout(request.timeout, rt.settings.query.timeout)
    refuse_denied_tables(sql, rt.settings.osquery.disabled_tables)
    wanted = selected_hosts(rt, request.hosts)
    if request.via == "ssh":
        return ask_over_ssh(rt, sql, selector, wanted, timeout)
    factory = client_factory or BacalhauClient.from_runtime
    return ask_over_bacalhau(rt, factory(rt), sql, selector, wanted, timeout)


def check_sql(sql: str) -> str:
    if not sql or not sql.strip():
        raise UsageError("the SQL query is empty", key="sql")
    if "\x00" in sql:
        raise UsageError("the SQL query contains a NUL character", key="sql")
    return sql


def check_timeout(timeout: float | None, default: float) -> float:
    value = default if timeout is None else timeout
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"must be a positive number of seconds, got {value!r}", key="--timeout")
    return float(value)


def selected_hosts(rt: Runtime, hosts: str) -> list[Host] | None:
    """The compute hosts named by ``--hosts`` (None = no restriction).

    Unknown names are bad input (exit 2); naming a host that is not a compute
    node (the control plane) is too, since it never runs queries.
    """
    patterns = parse_hosts_option(hosts)
    if not patterns:
        return None
    chosen = rt.inventory.select(patterns)
    not_compute = [h.name for h in chosen if not h.is_compute]
    explicit = [h for h in not_compute if h in patterns]
    if explicit:
        raise UsageError(f"{', '.join(explicit)} is not a compute node", key="--hosts")
    return [h for h in chosen if h.is_compute]


# --------------------------------------------------------------------------- SSH


def osqueryi_command(socket: str) -> str:
    """The remote command: fixed text; the SQL arrives on stdin and never meets a parser.

    ``sh`` reads stdin into a variable and hands it to osqueryi as its one
    positional argument: ``"${sql%.}"`` is expanded once, as data (no word
    splitting, no globbing, no command substitution of its content), and the
    trailing ``.`` keeps the SQL's own trailing newlines that ``$(...)`` would
    strip. osqueryi thus gets the SQL exactly as the Bacalhau job passes it (a
    positional argument), so both transports behave the same -- including
    multi-statement SQL, which osqueryi's stdin mode would print as several
    arrays. ``sh -c`` keeps this independent of the login shell.
    """
    script = (
        f'sql=$(cat; echo .); exec osqueryi --connect={shlex.quote(socket)} --json "${{sql%.}}"'
    )
    return f"sh -c {shlex.quote(script)}"


def argv_safe_sql(sql: str) -> str:
    """The SQL as osqueryi's positional argument: never mistaken for a flag.

    osqueryi (gflags) reads any argument starting with ``-`` as a flag, so a
    query opening with a ``-- comment`` would fail as an unknown flag. A
    leading space changes nothing for SQLite and everything for gflags.
    """
    return " " + sql if sql.startswith("-") else sql


def ask_over_ssh(
    rt: Runtime,
    sql: str,
    selector: Selector,
    wanted: list[Host] | None,
    timeout: float,
) -> FleetAnswer:
    hosts = [
        h
        for h in (wanted if wanted is not None else rt.inventory.compute)
        if selector.matches(h.labels)
    ]
    command = osqueryi_command(rt.settings.osquery.extensions_socket)
    payload = sql.encode("utf-8")
    progress = _Progress(rt, len(hosts))
    clock = rt.env.clock
    # One deadline for the whole fleet, not per host: with more hosts than the
    # pool has workers, the last ones start late and get what is left.
    deadline = clock() + timeout

    def remaining(host: Host) -> float:
        left = deadline - clock()
        if left <= 0:
            raise CommandTimeout(host.name, f"not asked before the {timeout:g}s deadline")
        return left

    def ask(host: Host) -> CommandResult:
        remaining(host)
        with rt.connector.connect(host) as remote:
            return remote.run(command, stdin=payload, timeout=remaining(host))

    outcomes = fan_out(
        hosts,
        ask,
        parallelism=rt.settings.ssh.parallelism,
        on_done=lambda _outcome: progress.step(),
    )
    nodes = _ordered([ssh_node_result(outcome) for outcome in outcomes])
    return FleetAnswer(nodes=nodes, job_id=None, expected=[h.name for h in hosts])


def ssh_node_result(outcome: Outcome[CommandResult]) -> NodeResult:
    name = outcome.host.name
    if outcome.error is not None:
        status = (
            NodeStatus.TIMED_OUT if isinstance(outcome.error, CommandTimeout) else NodeStatus.FAILED
        )
        message = getattr(outcome.error, "detail", None) or str(outcome.error)
        return NodeResult(name, name, status, error=message)
    result = outcome.value
    assert result is not None
    return node_result(
        name, name, exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr
    )


class _Progress:
    """``query: 3/10 nodes answered`` on stderr, one update per change."""

    def __init__(self, rt: Runtime, expected: int) -> None:
        self.env = rt.env
        self.expected = expected
        self.answered = 0
        self.shown = -1

    def step(self) -> None:
        self.show(self.answered + 1)

    def show(self, answered: int) -> None:
        self.answered = answered
        if answered != self.shown:
            self.shown = answered
            self.env.progress(f"query: {answered}/{self.expected} nodes answered")


# --------------------------------------------------------------------------- Bacalhau


@dataclass
class ExpectedNodes:
    """Who the job is for, and who matched the selection but cannot run it (and why)."""

    ids: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    #: Whether every expected node carries the ``name`` label (to pin --hosts).
    pinnable: bool = True


def expected_nodes(
    nodes: Sequence[NodeState],
    selector: Selector,
    wanted: list[Host] | None,
    *,
    publisher: str | None,
    inventory_compute: Sequence[Host] = (),
) -> ExpectedNodes:
    """The expected set: compute, CONNECTED, APPROVED, matching, advertising the needs.

    Nodes that match but cannot run the job (disconnected, pending approval,
    lacking docker / local storage / the publisher) are named as missing with
    the reason, because the orchestrator skips them without a word. Inventory
    compute hosts the orchestrator does not know are missing too.
    """
    names = {h.name for h in wanted} if wanted is not None else None
    result = ExpectedNodes()
    known: set[str] = set()
    for node in sorted(nodes, key=lambda n: n.node_id):
        if not node.is_compute:
            continue
        known.add(node.node_id)
        if names is not None and node.node_id not in names:
            continue
        if not selector.matches(node.labels):
            continue
        reason = unschedulable_reason(node, publisher)
        if reason:
            result.missing[node.node_id] = reason
            continue
        result.ids.append(node.node_id)
        if node.labels.get(_NAME_LABEL) != node.node_id:
            result.pinnable = False
    candidates = wanted if wanted is not None else list(inventory_compute)
    for host in candidates:
        if host.name not in known and selector.matches(host.labels):
            result.missing[host.name] = "not known to the orchestrator (never joined the cluster)"
    return result


def unschedulable_reason(node: NodeState, publisher: str | None) -> str:
    if not node.is_approved:
        return f"not approved at the orchestrator (membership {node.membership or 'unknown'})"
    if not node.is_connected:
        since = f" since {node.disconnected_since}" if node.disconnected_since else ""
        return f"{(node.connection or 'not connected').lower()}{since}"
    lacking = node.advertises(engine="docker", storage="local", publisher=publisher)
    if lacking:
        return (
            "cannot run the query job: does not advertise "
            + ", ".join(lacking)
            + (
                " (is the osquery socket directory in Compute.AllowListedLocalPaths?)"
                if any(item.startswith("storage") for item in lacking)
                else ""
            )
        )
    return ""


def ask_over_bacalhau(
    rt: Runtime,
    client: BacalhauClient,
    sql: str,
    selector: Selector,
    wanted: list[Host] | None,
    timeout: float,
) -> FleetAnswer:
    settings = rt.settings
    s3 = settings.query.s3 if settings.query.publisher == "s3" else None
    publisher = "s3" if s3 is not None else None
    inventory_compute = _inventory_compute(rt) if wanted is None else ()
    expected = expected_nodes(
        client.nodes(),
        selector,
        wanted,
        publisher=publisher,
        inventory_compute=inventory_compute,
    )
    missing = [
        NodeResult(node_id, node_id, NodeStatus.MISSING, error=reason)
        for node_id, reason in expected.missing.items()
    ]
    if not expected.ids:
        return FleetAnswer(nodes=_ordered(missing), job_id=None, expected=[])
    constraints = selector.constraints()
    if wanted is not None and expected.pinnable:
        constraints.append({"Key": _NAME_LABEL, "Operator": "in", "Values": list(expected.ids)})
    seconds = max(1, math.ceil(timeout))
    job = build_osquery_job(
        sql,
        image=settings.query.image,
        socket_dir=settings.osquery.socket_dir,
        socket_path=settings.osquery.extensions_socket,
        constraints=constraints,
        execution_timeout=seconds,
        total_timeout=seconds + _TOTAL_TIMEOUT_MARGIN,
        s3=s3,
    )
    job_id = client.submit_job(job).job_id
    waiter = JobWaiter(client, job_id, expected.ids, rt=rt)
    executions, timed_out = waiter.wait(timeout)
    results = collect(
        rt, executions, expected.ids, wanted, timed_out=timed_out, job_message=waiter.job_message
    )
    # A node listed as unable to run may have run it after all (it reconnected
    # in between): its real result wins over the guess.
    answered = {r.node_id for r in results}
    missing = [m for m in missing if m.node_id not in answered]
    return FleetAnswer(nodes=_ordered(results + missing), job_id=job_id, expected=expected.ids)


def _inventory_compute(rt: Runtime) -> Sequence[Host]:
    """Inventory compute hosts, for naming the ones that never joined; () without inventory."""
    try:
        return rt.inventory.compute
    except ConfigError:
        return ()


def _ordered(nodes: list[NodeResult]) -> list[NodeResult]:
    return sorted(nodes, key=lambda n: n.node_id)


@dataclass(frozen=True)
class PollPolicy:
    """How often to ask the orchestrator while waiting.

    Fast at first (small queries finish in well under a second), slower when
    nothing changes, fast again when an execution finishes (others usually
    follow). The interval stays at ``settle`` for ``patience`` seconds after
    the last change, so the last answer is noticed within about ``settle``
    (merged output <= 0.3 s after the last node finished), and only then backs
    off to ``slowest``: a query still running after half a minute can afford a
    second of delay. Whatever the interval says, two requests are never closer
    than ``1 / max_rate`` (plus a margin for network jitter), so the
    orchestrator never sees more than ``max_rate`` requests in any second.
    """

    first: float = 0.05
    factor: float = 1.6
    settle: float = 0.2
    slowest: float = 1.0
    patience: float = 30.0
    max_rate: float = 5.0
    #: Once backed off, also ask for the job state this often: it reveals a job
    #: failed or stopped as a whole while some execution never reported back.
    job_check_every: float = 5.0


class RequestSpacer:
    """Keeps consecutive requests at least ``1 / rate`` seconds apart (5 % margin)."""

    def __init__(
        self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.gap = 1.05 / max(rate, 0.1)
        self.clock = clock
        self.sleep = sleep
        self.last: float | None = None

    def acquire(self) -> None:
        if self.last is not None:
            wait = self.last + self.gap - self.clock()
            if wait > 0:
                self.sleep(wait)
        self.last = self.clock()


class JobWaiter:
    """Polls one job until every expected node is done, the job ends, or the deadline.

    On the deadline or Ctrl-C the job is stopped at the orchestrator before
    returning (or re-raising), so no query keeps running unseen.
    """

    def __init__(
        self,
        client: BacalhauClient,
        job_id: str,
        expected: Sequence[str],
        *,
        rt: Runtime,
        policy: PollPolicy | None = None,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.expected = set(expected)
        self.env = rt.env
        self.policy = policy or PollPolicy()
        self.limiter = RequestSpacer(self.policy.max_rate, self.env.clock, self.env.sleep)
        self.progress = _Progress(rt, len(self.expected))
        self.requests = 0
        self.job_message = ""

    def wait(self, timeout: float) -> tuple[list[Execution], bool]:
        """(latest executions, timed out?)."""
        try:
            return self._wait(timeout)
        except KeyboardInterrupt:
            self._stop("interrupted by the user (Ctrl-C) in fleetkit query")
            raise
        except OrchestratorError as exc:
            self._stop("fleetkit lost track of the job")
            raise OrchestratorError(
                f"{exc} (while waiting for job {self.job_id}; it was asked to stop)"
            ) from None

    def _wait(self, timeout: float) -> tuple[list[Execution], bool]:
        clock, policy = self.env.clock, self.policy
        start = clock()
        deadline = start + timeout
        interval = policy.first
        last_change = start
        last_job_check = start
        done_before = -1
        self.env.sleep(interval)
        while True:
            executions = self._executions()
            done = self._done(executions)
            now = clock()
            if len(done) != done_before:
                if done_before >= 0 or done:
                    interval = policy.first
                done_before = len(done)
                last_change = now
                self.progress.show(len(done & self.expected))
            if self.expected <= done:
                return executions, False
            idle = all(e.is_terminal for e in executions)
            backed_off = now - last_change >= policy.patience
            if idle or (backed_off and now - last_job_check >= policy.job_check_every):
                last_job_check = now
                if self._job_finished():
                    return self._executions(), False
                now = clock()
            if now >= deadline:
                self._stop(f"fleetkit query timed out after {timeout:g}s")
                return self._executions(), True
            cap = policy.slowest if backed_off else policy.settle
            interval = min(interval * policy.factor, cap)
            self.env.sleep(max(0.0, min(interval, deadline - now)))

    def _executions(self) -> list[Execution]:
        self.limiter.acquire()
        self.requests += 1
        return self.client.executions(self.job_id)

    def _job_finished(self) -> bool:
        self.limiter.acquire()
        self.requests += 1
        status = self.client.job(self.job_id)
        self.job_message = status.message
        return status.is_terminal

    def _done(self, executions: Sequence[Execution]) -> set[str]:
        return {e.node_id for e in executions if e.is_terminal}

    def _stop(self, reason: str) -> None:
        try:
            self.client.stop_job(self.job_id, reason)
        except OrchestratorError as exc:
            self.env.say(f"warning: could not stop job {self.job_id}: {exc}")


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


def collect(
    rt: Runtime,
    executions: Sequence[Execution],
    expected: Sequence[str],
    wanted: list[Host] | None,
    *,
    timed_out: bool,
    job_message: str = "",
    store_factory: StoreFactory | None = None,
) -> list[NodeResult]:
    """One result per expected node (and per unexpected node that ran it anyway).

    A node that joined between listing and scheduling ran the query: its rows
    are kept. With ``--hosts`` only the named hosts count.
    """
    by_node = latest_per_node(executions)
    names = {h.name for h in wanted} if wanted is not None else None
    node_ids = list(expected) + sorted(
        n for n in by_node if n not in expected and (names is None or n in names)
    )
    results: dict[str, NodeResult] = {}
    needs_s3: list[tuple[str, str, str]] = []
    for node_id in node_ids:
        execution = by_node.get(node_id)
        if execution is None:
            reason = "no execution: the orchestrator did not run the job on this node"
            if job_message:
                reason += f" (job: {job_message})"
            results[node_id] = NodeResult(node_id, node_id, NodeStatus.MISSING, error=reason)
            continue
        result, s3_location = execution_result(execution, timed_out=timed_out)
        results[node_id] = result
        if s3_location is not None:
            needs_s3.append((node_id, *s3_location))
    if needs_s3:
        fetch_published(rt, needs_s3, results, store_factory or _default_store)
    return [results[n] for n in node_ids]


def execution_result(
    execution: Execution, *, timed_out: bool
) -> tuple[NodeResult, tuple[str, str] | None]:
    """The node's result from its execution; plus (bucket, key) when stdout must come from S3."""
    node_id = execution.node_id
    state = execution.compute_state
    detail = execution.message or execution.error_msg
    if not execution.is_terminal:
        when = "the deadline passed" if timed_out else "the job ended"
        reason = f"still {_state_name(state)} when {when}"
        status = NodeStatus.TIMED_OUT if timed_out else NodeStatus.FAILED
        return NodeResult(node_id, node_id, status, error=reason), None
    if state in (ComputeState.ASK_FOR_BID_REJECTED, ComputeState.BID_REJECTED):
        reason = f"refused the job: {detail}" if detail else "refused the job"
        return NodeResult(node_id, node_id, NodeStatus.MISSING, error=reason), None
    if state == ComputeState.CANCELLED or (state == ComputeState.FAILED and _is_timeout(detail)):
        status = NodeStatus.TIMED_OUT if timed_out or _is_timeout(detail) else NodeStatus.FAILED
        reason = detail or "execution cancelled"
        return NodeResult(node_id, node_id, status, error=reason), None
    if state == ComputeState.FAILED:
        message = detail or execution.stderr.strip() or "execution failed"
        return NodeResult(
            node_id, node_id, NodeStatus.FAILED, error=message, exit_code=execution.exit_code
        ), None
    stdout = execution.stdout.encode("utf-8") if execution.stdout is not None else None
    result = node_result(
        node_id, node_id, exit_code=execution.exit_code, stdout=stdout, stderr=execution.stderr
    )
    complete_in_run_output = execution.stdout is not None and not execution.stdout_truncated
    if not result.ok or complete_in_run_output:
        return result, None
    location = stdout_key(execution.published_result) if execution.published_result else None
    if location is None:
        result.status = NodeStatus.FAILED
        result.error = (
            "output over 2048 bytes was truncated in RunOutput and no S3 result was "
            "published (set query.publisher: s3 in the settings)"
            if execution.stdout_truncated
            else "the execution reported no output and published no result"
        )
        return result, None
    return result, location


def fetch_published(
    rt: Runtime,
    items: list[tuple[str, str, str]],
    results: dict[str, NodeResult],
    store_factory: StoreFactory,
) -> None:
    """Replace truncated RunOutput with the published stdout; a missing object fails that node."""
    s3 = rt.settings.query.s3
    if s3 is None:  # the job published to S3 but the settings no longer say where
        for node_id, bucket, key in items:
            _fail(results[node_id], f"result is in s3://{bucket}/{key} but query.s3 is not set")
        return
    store = store_factory(s3, rt.env.environ)
    # Spooled to anonymous temp files: however many nodes published large
    # results, memory holds one node's output at a time (during the merge).
    fetched = store.spool_many(items, s3.parallelism)
    for node_id, _bucket, _key in items:
        value = fetched.get(node_id)
        if value is not None and not isinstance(value, FleetkitError):
            results[node_id].stdout = None
            results[node_id].spool = value
        else:
            _fail(results[node_id], str(value) if value else "result object not fetched")


def _default_store(s3: S3Settings, environ: Mapping[str, str]) -> ResultStore:
    from fleetkit.clients.s3 import ResultStore

    return ResultStore.from_settings(s3, environ)


def _fail(result: NodeResult, message: str) -> None:
    result.status = NodeStatus.FAILED
    result.discard_output()
    result.error = message


def _is_timeout(message: str) -> bool:
    text = message.lower()
    return "timeout" in text or "timed out" in text or "deadline" in text


def _state_name(state: int) -> str:
    try:
        return ComputeState(state).name.lower().replace("_", " ")
    except ValueError:
        return f"state {state}"


__all__ = [
    "FleetAnswer",
    "JobWaiter",
    "PollPolicy",
    "QueryRequest",
    "ask_fleet",
    "run",
]
