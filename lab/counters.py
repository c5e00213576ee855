"""What latency multiplies, per host: SSH logins, exec channels, round trips; HTTP requests.

Also what the lab costs the machine: :func:`lab_memory` (RSS and PSS of
every host's processes).

Take a :func:`snapshot` before and after a command; :func:`usage` is the
difference, i.e. what that command cost on the wire. Two sources:

- each lab host's sshd log (the lab runs sshd with ``LogLevel VERBOSE``):
  ``Accepted publickey for`` per SSH login, ``Starting session: command``
  per exec channel, ``Starting session: subsystem 'sftp'`` per SFTP session.
  The log lives in the host's overlay upper dir, so reading it needs no
  process inside the host and costs the host nothing;
- the latency proxy (only in latency mode, ``Lab(latency=...)``): TCP
  connections and round trips per route (see :mod:`lab.latency` for what a
  round trip is). On the orchestrator's API and S3 routes a round trip is
  one HTTP request.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.fleet import Lab

_LOGIN = b"Accepted publickey for "
_EXEC = b"Starting session: command "
_SFTP = b"Starting session: subsystem 'sftp' "


@dataclass(frozen=True)
class HostUsage:
    """Cumulative (in a snapshot) or per-command (from :func:`usage`) figures of one host."""

    logins: int = 0  # SSH authentications (one per connection fleetkit opens)
    exec_channels: int = 0  # commands run (one channel each)
    sftp_sessions: int = 0
    tcp_connections: int = 0  # at the proxy (0 without latency mode)
    round_trips: int = 0  # at the proxy: client sent, server answered

    def minus(self, other: HostUsage) -> HostUsage:
        return HostUsage(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )


@dataclass(frozen=True)
class HttpUsage:
    connections: int = 0
    requests: int = 0

    def minus(self, other: HttpUsage) -> HttpUsage:
        return HttpUsage(self.connections - other.connections, self.requests - other.requests)


@dataclass(frozen=True)
class Snapshot:
    hosts: Mapping[str, HostUsage]
    #: "api" (the orchestrator), "s3": empty without latency mode.
    http: Mapping[str, HttpUsage]


def sshd_log_counts(data: bytes) -> tuple[int, int, int]:
    """(logins, exec channels, sftp sessions) in an sshd VERBOSE log."""
    return data.count(_LOGIN), data.count(_EXEC), data.count(_SFTP)


def snapshot(lab: Lab) -> Snapshot:
    """Every counter of the lab right now (cumulative since each host/route started)."""
    from lab.fleet import API_ROUTE, S3_ROUTE, ssh_route

    routes = lab.proxy.stats() if lab.proxy is not None else {}
    hosts: dict[str, HostUsage] = {}
    for host in lab.hosts:
        try:
            logins, execs, sftp = sshd_log_counts(host.sshd_log.read_bytes())
        except FileNotFoundError:
            logins = execs = sftp = 0
        route = routes.get(ssh_route(host.name), {})
        hosts[host.name] = HostUsage(
            logins,
            execs,
            sftp,
            int(route.get("connections", 0)),
            int(route.get("round_trips", 0)),
        )
    http = {
        name: HttpUsage(int(routes[name]["connections"]), int(routes[name]["round_trips"]))
        for name in (API_ROUTE, S3_ROUTE)
        if name in routes
    }
    return Snapshot(hosts, http)


def usage(before: Snapshot, after: Snapshot) -> Snapshot:
    """What happened between two snapshots (hosts added in between count from zero)."""
    hosts = {
        name: now.minus(before.hosts.get(name, HostUsage())) for name, now in after.hosts.items()
    }
    http = {name: now.minus(before.http.get(name, HttpUsage())) for name, now in after.http.items()}
    return Snapshot(hosts, http)


@dataclass(frozen=True)
class Spread:
    """One figure across hosts: min / median / max."""

    low: float
    median: float
    high: float

    def __str__(self) -> str:
        if self.low == self.high:
            return f"{self.median:g}"
        return f"{self.median:g} (min {self.low:g}, max {self.high:g})"


def per_host(snap: Snapshot, names: Iterable[str], figure: str) -> Spread:
    """``figure`` (a :class:`HostUsage` field) across the hosts ``names``."""
    values = [float(getattr(snap.hosts[name], figure)) for name in names]
    if not values:
        return Spread(0, 0, 0)
    return Spread(min(values), statistics.median(values), max(values))


def describe(snap: Snapshot, names: Iterable[str]) -> str:
    """One line: per-host figures across ``names`` plus the HTTP requests."""
    chosen = list(names)
    parts = [
        f"{label} {per_host(snap, chosen, figure)}"
        for label, figure in (
            ("SSH logins", "logins"),
            ("exec channels", "exec_channels"),
            ("sftp", "sftp_sessions"),
            ("TCP connections", "tcp_connections"),
            ("round trips", "round_trips"),
        )
    ]
    parts += [
        f"{name} requests {u.requests} ({u.connections} conn)" for name, u in snap.http.items()
    ]
    return "per host: " + ", ".join(parts)


# ---- what the lab costs this machine --------------------------------------------------------


@dataclass(frozen=True)
class HostMemory:
    """Memory of one lab host's processes (its pid namespace, plus its ``unshare``)."""

    processes: int = 0
    rss: int = 0  # bytes; shared pages counted in every process
    pss: int = 0  # bytes; shared pages divided among their users: sums to the real cost


def host_pids(lab: Lab) -> dict[str, list[int]]:
    """Per host: the pids of its processes (its pid namespace, plus its ``unshare``)."""
    by_namespace: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                by_namespace.setdefault(os.readlink(entry / "ns" / "pid"), []).append(
                    int(entry.name)
                )
            except OSError:
                continue
    result: dict[str, list[int]] = {}
    for host in lab.hosts:
        pids: list[int] = [host.unshare_pid] if host.unshare_pid else []
        with contextlib.suppress(OSError):
            pids += by_namespace.get(os.readlink(f"/proc/{host.init_pid}/ns/pid"), [])
        result[host.name] = pids
    return result


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds the processes have used so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def lab_memory(lab: Lab) -> dict[str, HostMemory]:
    """Per host: its processes' RSS and PSS now (one pass over /proc for the whole lab)."""
    result: dict[str, HostMemory] = {}
    for name, pids in host_pids(lab).items():
        rss = pss = 0
        for pid in pids:
            rss_kb, pss_kb = _rollup(pid)
            rss, pss = rss + rss_kb * 1024, pss + pss_kb * 1024
        result[name] = HostMemory(len(pids), rss, pss)
    return result


def process_memory(pid: int) -> HostMemory:
    """One process (e.g. the latency proxy or the S3 server)."""
    rss_kb, pss_kb = _rollup(pid)
    return HostMemory(1, rss_kb * 1024, pss_kb * 1024)


def _rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in kB from /proc/PID/smaps_rollup; (0, 0) for a process that is gone."""
    rss = pss = 0
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss
