"""Rows for each table, read from the REAL host the stand-in runs on.

Each generator returns a list of dicts keyed by column name; missing columns
become NULL (printed as ""). Everything is read from /etc, /proc, /sys,
/var/lib/dpkg and home directories, so a lab host answers about itself: its
hostname, its users and keys, its files, its processes and packages.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from osquery_standin.sshkeys import inspect_private_key

VERSION = "5.23.1"
READ_MAX = 50 * 1024 * 1024  # osquery's --read_max default
Row = dict[str, Any]


@dataclass
class Context:
    """What a table may use to narrow its scan: constraints found in the SQL."""

    paths: list[str] = field(default_factory=list)  # exact absolute paths
    directories: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)  # LIKE patterns with % / _
    uids: list[int] = field(default_factory=list)
    all_users: bool = False  # joined with `users`: every user's rows
    start_time: int = 0
    instance_id: str = ""
    extensions: str = "inactive"


def _read(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def _hostname() -> str:
    return socket.gethostname()


def _canonical_hostname() -> str:
    name = _hostname()
    try:
        info = socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME)
        return info[0][3] or name
    except OSError:
        return name


def host_uuid() -> str:
    """Stable per host: lab hosts share one machine, so the hostname is mixed in."""
    machine = _read("/etc/machine-id").strip() or _read("/sys/class/dmi/id/product_uuid").strip()
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{machine}/{_hostname()}")).upper()


def _dmi(name: str) -> str:
    return _read(f"/sys/class/dmi/id/{name}").strip()


def system_info(ctx: Context) -> list[Row]:
    cpuinfo = _read("/proc/cpuinfo")
    brand = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "",
    )
    microcode = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "microcode" in line),
        "",
    )
    physical_ids = {line for line in cpuinfo.splitlines() if line.startswith("physical id")}
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if "MemTotal" in line
        ),
        0,
    )
    logical = os.cpu_count() or 1
    return [
        {
            "hostname": _canonical_hostname(),
            "uuid": host_uuid(),
            "cpu_type": platform.machine(),
            "cpu_subtype": "",
            "cpu_brand": brand,
            "cpu_physical_cores": logical,
            "cpu_logical_cores": logical,
            "cpu_sockets": max(1, len(physical_ids)),
            "cpu_microcode": microcode,
            "physical_memory": mem_kb * 1024,
            "hardware_vendor": _dmi("sys_vendor"),
            "hardware_model": _dmi("product_name"),
            "hardware_version": _dmi("product_version"),
            "hardware_serial": _dmi("product_serial"),
            "board_vendor": _dmi("board_vendor"),
            "board_model": _dmi("board_name"),
            "board_version": _dmi("board_version"),
            "board_serial": _dmi("board_serial"),
            "computer_name": _hostname(),
            "local_hostname": _hostname(),
        }
    ]


def _os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (_read("/etc/os-release") or _read("/usr/lib/os-release")).splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def os_version(ctx: Context) -> list[Row]:
    release = _os_release()
    numbers = [*release.get("VERSION_ID", "").split("."), "0", "0", "0"]
    debian = _read("/etc/debian_version").strip().split(".")
    if release.get("ID") == "debian" and len(debian) > 1 and debian[1].isdigit():
        numbers[1] = debian[1]
    return [
        {
            "name": release.get("NAME", "Linux"),
            "version": release.get("VERSION", ""),
            "major": int(numbers[0]) if numbers[0].isdigit() else 0,
            "minor": int(numbers[1]) if numbers[1].isdigit() else 0,
            "patch": int(numbers[2]) if numbers[2].isdigit() else 0,
            "build": "",
            "platform": release.get("ID", "linux"),
            "platform_like": release.get("ID_LIKE", ""),
            "codename": release.get("VERSION_CODENAME", ""),
            "arch": platform.machine(),
        }
    ]


def _passwd() -> list[list[str]]:
    out = []
    for line in _read("/etc/passwd").splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit():
            out.append(parts)
    return out


def users(ctx: Context) -> list[Row]:
    return [
        {
            "uid": int(p[2]),
            "gid": int(p[3]) if p[3].isdigit() else -1,
            "uid_signed": int(p[2]),
            "gid_signed": int(p[3]) if p[3].isdigit() else -1,
            "username": p[0],
            "description": p[4],
            "directory": p[5],
            "shell": p[6],
            "uuid": "",
        }
        for p in _passwd()
    ]


def groups(ctx: Context) -> list[Row]:
    rows = []
    for line in _read("/etc/group").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            rows.append({"gid": int(parts[2]), "gid_signed": int(parts[2]), "groupname": parts[0]})
    return rows


def _homes(ctx: Context) -> list[tuple[int, str]]:
    """(uid, home) of the users a per-user table covers.

    Like osquery: only the calling user unless the query joins ``users`` or
    names uids.
    """
    seen: set[str] = set()
    out = []
    wanted = set(ctx.uids) | ({os.getuid()} if not ctx.uids else set())
    for p in _passwd():
        uid, home = int(p[2]), p[5]
        if not ctx.all_users and uid not in wanted:
            continue
        if home and home not in seen and home != "/":
            seen.add(home)
            out.append((uid, home))
    return out


def user_ssh_keys(ctx: Context) -> list[Row]:
    rows = []
    for uid, home in _homes(ctx):
        directory = os.path.join(home, ".ssh")
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            try:
                if not stat.S_ISREG(os.stat(path).st_mode):
                    continue
                with open(path, "rb") as f:
                    data = f.read(1 << 20)
            except OSError:
                continue
            facts = inspect_private_key(data)
            if facts is None:
                continue
            rows.append(
                {
                    "uid": uid,
                    "path": path,
                    "encrypted": facts.encrypted,
                    "key_type": facts.key_type,
                    "key_group_name": facts.key_group_name,
                    "key_length": facts.key_length,
                    "key_security_bits": facts.key_security_bits,
                }
            )
    return rows


def authorized_keys(ctx: Context) -> list[Row]:
    rows = []
    for uid, home in _homes(ctx):
        for name in ("authorized_keys", "authorized_keys2"):
            path = os.path.join(home, ".ssh", name)
            for line in _read(path).splitlines():
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                rows.append({"uid": uid, "key_file": path, **_split_authorized(text)})
    return rows


def _split_authorized(line: str) -> Row:
    parts = line.split()
    for i, part in enumerate(parts):
        if part.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(parts):
            return {
                "options": " ".join(parts[:i]),
                "algorithm": part,
                "key": parts[i + 1],
                "comment": " ".join(parts[i + 2 :]),
            }
    return {"options": "", "algorithm": "", "key": "", "comment": line}


def shell_history(ctx: Context) -> list[Row]:
    rows = []
    for uid, home in _homes(ctx):
        for name in (".bash_history", ".sh_history", ".zsh_history"):
            path = os.path.join(home, name)
            for line in _read(path).splitlines():
                if line.strip():
                    rows.append({"uid": uid, "time": 0, "command": line, "history_file": path})
    return rows


# -- files -------------------------------------------------------------------------------------


def candidate_paths(ctx: Context) -> list[str]:
    """Every path the constraints could select (a superset; SQLite's WHERE filters exactly)."""
    found: list[str] = []
    for path in ctx.paths:
        found.append(path)
    for directory in ctx.directories:
        found += _entries(directory)
    for pattern in ctx.patterns:
        found += _expand_like(pattern)
    return list(dict.fromkeys(os.path.normpath(p) if p != "/" else p for p in found))


def _entries(directory: str) -> list[str]:
    try:
        return [os.path.join(directory, n) for n in sorted(os.listdir(directory))]
    except OSError:
        return []


def _expand_like(pattern: str) -> list[str]:
    """Paths a ``path LIKE`` pattern can match, walking only the levels it names.

    osquery's rule: ``%`` matches within one directory level, ``%%`` recurses.
    Hidden entries are included (SQL LIKE matches them); the result is a
    superset that SQLite's own LIKE then filters exactly.
    """
    current = ["/"]
    parts = [p for p in pattern.split("/") if p]
    for index, part in enumerate(parts):
        if "%%" in part:
            found: list[str] = []
            for base in current:
                found += _descendants(base)
            return found
        if "%" not in part and "_" not in part:
            current = [os.path.join(base, part) for base in current]
            continue
        regex = re.compile(_like_regex(part), re.IGNORECASE | re.DOTALL)
        last = index == len(parts) - 1
        current = [
            os.path.join(base, name)
            for base in current
            for name in _names(base)
            if regex.fullmatch(name) and (last or os.path.isdir(os.path.join(base, name)))
        ]
    return [path for path in current if os.path.lexists(path)]


def _like_regex(part: str) -> str:
    return "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in part)


def _names(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


#: Pseudo filesystems a recursive pattern does not descend into (endless or slow).
_NO_WALK = ("/proc", "/sys", "/dev")


def _descendants(base: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if os.path.join(root, d) not in _NO_WALK)
        found += [os.path.join(root, name) for name in dirs + sorted(files)]
    return found


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "regular"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "character"),
        (stat.S_ISBLK, "block"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def file_table(ctx: Context) -> list[Row]:
    rows = []
    for path in candidate_paths(ctx):
        try:
            link = os.lstat(path)
        except OSError:
            continue
        is_link = stat.S_ISLNK(link.st_mode)
        try:
            st = os.stat(path) if is_link else link
        except OSError:
            st = link
        target = ""
        if is_link:
            try:
                target = os.path.realpath(path)
            except OSError:
                target = ""
        rows.append(
            {
                "path": path,
                "directory": os.path.dirname(path) or "/",
                "filename": os.path.basename(path),
                "inode": st.st_ino,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mode": f"{stat.S_IMODE(st.st_mode):04o}",
                "device": st.st_rdev,
                "size": st.st_size,
                "block_size": st.st_blksize,
                "atime": int(st.st_atime),
                "mtime": int(st.st_mtime),
                "ctime": int(st.st_ctime),
                "btime": 0,
                "hard_links": st.st_nlink,
                "symlink": 1 if is_link else 0,
                "type": _file_type(st.st_mode),
                "symlink_target_path": target,
            }
        )
    return rows


def hash_table(ctx: Context) -> list[Row]:
    rows = []
    for path in candidate_paths(ctx):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        row: Row = {"path": path, "directory": os.path.dirname(path) or "/"}
        if st.st_size <= READ_MAX:
            digests = [hashlib.md5(), hashlib.sha1(), hashlib.sha256()]
            try:
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        for d in digests:
                            d.update(block)
            except OSError:
                continue
            row.update(
                md5=digests[0].hexdigest(),
                sha1=digests[1].hexdigest(),
                sha256=digests[2].hexdigest(),
            )
        rows.append(row)
    return rows


# -- processes -----------------------------------------------------------------------------------


def _pids() -> list[int]:
    return sorted(int(n) for n in os.listdir("/proc") if n.isdigit())


def _status(pid: int) -> dict[str, str]:
    values = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        values[key] = value.strip()
    return values


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def processes(ctx: Context) -> list[Row]:
    ticks = os.sysconf("SC_CLK_TCK")
    boot = time.time() - float(_read("/proc/uptime", "0 0").split()[0])
    rows = []
    for pid in _pids():
        stat_text = _read(f"/proc/{pid}/stat")
        if not stat_text:
            continue
        name = stat_text[stat_text.find("(") + 1 : stat_text.rfind(")")]
        fields = stat_text[stat_text.rfind(")") + 2 :].split()
        status = _status(pid)
        uids = (status.get("Uid", "-1 -1 -1").split() + ["-1"] * 3)[:3]
        gids = (status.get("Gid", "-1 -1 -1").split() + ["-1"] * 3)[:3]
        cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
        exe = _link(f"/proc/{pid}/exe")
        io = dict(
            line.split(": ", 1) for line in _read(f"/proc/{pid}/io").splitlines() if ": " in line
        )
        rows.append(
            {
                "pid": pid,
                "name": name,
                "path": exe.removesuffix(" (deleted)"),
                "cmdline": cmdline,
                "state": fields[0] if fields else "",
                "cwd": _link(f"/proc/{pid}/cwd"),
                "root": _link(f"/proc/{pid}/root"),
                "uid": int(uids[0]),
                "gid": int(gids[0]),
                "euid": int(uids[1]),
                "egid": int(gids[1]),
                "suid": int(uids[2]),
                "sgid": int(gids[2]),
                "on_disk": -1 if not exe else (0 if exe.endswith(" (deleted)") else 1),
                "wired_size": 0,
                "resident_size": _kb(status.get("VmRSS")),
                "total_size": _kb(status.get("VmSize")),
                "user_time": int(fields[11]) * 1000 // ticks if len(fields) > 12 else 0,
                "system_time": int(fields[12]) * 1000 // ticks if len(fields) > 12 else 0,
                "disk_bytes_read": int(io.get("read_bytes", "0")),
                "disk_bytes_written": int(io.get("write_bytes", "0")),
                "start_time": int(boot + int(fields[19]) / ticks) if len(fields) > 19 else 0,
                "parent": int(fields[1]) if len(fields) > 1 else -1,
                "pgroup": int(fields[2]) if len(fields) > 2 else -1,
                "threads": int(status.get("Threads", "0") or 0),
                "nice": int(fields[16]) if len(fields) > 16 else 0,
                "cgroup_path": _read(f"/proc/{pid}/cgroup").strip().split(":")[-1],
            }
        )
    return rows


def _kb(value: str | None) -> int:
    return int(value.split()[0]) * 1024 if value else 0


def process_envs(ctx: Context) -> list[Row]:
    rows = []
    for pid in _pids():
        for item in _read(f"/proc/{pid}/environ").split("\0"):
            if "=" in item:
                key, _, value = item.partition("=")
                rows.append({"pid": pid, "key": key, "value": value})
    return rows


# -- packages, system --------------------------------------------------------------------------


def deb_packages(ctx: Context) -> list[Row]:
    rows = []
    for block in _read("/var/lib/dpkg/status").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "Package" not in fields:
            continue
        version = fields.get("Version", "")
        rows.append(
            {
                "name": fields["Package"],
                "version": version,
                "source": fields.get("Source", "").split(" ")[0],
                "size": int(fields.get("Installed-Size", "0") or 0),
                "arch": fields.get("Architecture", ""),
                "revision": version.rsplit("-", 1)[1] if "-" in version else "",
                "status": fields.get("Status", ""),
                "maintainer": fields.get("Maintainer", ""),
                "section": fields.get("Section", ""),
                "priority": fields.get("Priority", ""),
                "admindir": "/var/lib/dpkg",
            }
        )
    return rows


def osquery_info(ctx: Context) -> list[Row]:
    return [
        {
            "pid": os.getpid(),
            "uuid": host_uuid(),
            "instance_id": ctx.instance_id,
            "version": VERSION,
            "config_hash": "",
            "config_valid": 0,
            "extensions": ctx.extensions,
            "build_platform": "linux",
            "build_distro": "stand-in",
            "start_time": ctx.start_time,
            "watcher": -1,
            "platform_mask": 9,
        }
    ]


def kernel_info(ctx: Context) -> list[Row]:
    args = _read("/proc/cmdline").strip()
    parts = dict(p.split("=", 1) for p in args.split() if "=" in p)
    return [
        {
            "version": platform.release(),
            "arguments": args,
            "path": parts.get("BOOT_IMAGE", ""),
            "device": parts.get("root", ""),
        }
    ]


def uptime(ctx: Context) -> list[Row]:
    total = int(float(_read("/proc/uptime", "0 0").split()[0]))
    return [
        {
            "days": total // 86400,
            "hours": total % 86400 // 3600,
            "minutes": total % 3600 // 60,
            "seconds": total % 60,
            "total_seconds": total,
        }
    ]


def _socket_owners() -> dict[int, tuple[int, int]]:
    owners: dict[int, tuple[int, int]] = {}
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            target = _link(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                owners.setdefault(int(target[8:-1]), (pid, int(fd)))
    return owners


def _hex_address(text: str, family: int) -> str:
    raw = bytes.fromhex(text)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_ports(ctx: Context) -> list[Row]:
    owners = _socket_owners()
    netns = _link("/proc/self/ns/net")
    netns_id = netns[netns.find("[") + 1 : -1] if "[" in netns else ""
    rows = []
    for name, protocol, family in (
        ("tcp", 6, socket.AF_INET),
        ("tcp6", 6, socket.AF_INET6),
        ("udp", 17, socket.AF_INET),
        ("udp6", 17, socket.AF_INET6),
    ):
        for line in _read(f"/proc/net/{name}").splitlines()[1:]:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, state, inode = parts[1], parts[3], int(parts[9])
            if protocol == 6 and state != "0A":  # TCP LISTEN
                continue
            if protocol == 17 and state != "07":
                continue
            if inode not in owners:
                continue  # like osquery: sockets of processes this host can see
            address, _, port = local.partition(":")
            pid, fd = owners[inode]
            rows.append(
                {
                    "pid": pid,
                    "port": int(port, 16),
                    "protocol": protocol,
                    "family": 2 if family == socket.AF_INET else 10,
                    "address": _hex_address(address, family),
                    "fd": fd,
                    "socket": inode,
                    "path": "",
                    "net_namespace": netns_id,
                }
            )
    return rows


def etc_hosts(ctx: Context) -> list[Row]:
    rows = []
    for line in _read("/etc/hosts").splitlines():
        text = line.split("#", 1)[0].split()
        if len(text) >= 2:
            rows.append({"address": text[0], "hostnames": " ".join(text[1:])})
    return rows


def mounts(ctx: Context) -> list[Row]:
    rows = []
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        device, path, kind, flags = parts[:4]
        row: Row = {"device": device, "device_alias": device, "path": path, "type": kind}
        row["flags"] = flags
        try:
            fs = os.statvfs(path)
            row.update(
                blocks_size=fs.f_bsize,
                blocks=fs.f_blocks,
                blocks_free=fs.f_bfree,
                blocks_available=fs.f_bavail,
                inodes=fs.f_files,
                inodes_free=fs.f_ffree,
            )
        except OSError:
            pass
        rows.append(row)
    return rows


def nothing(ctx: Context) -> list[Row]:
    """curl, curl_certificate, carves: the lab has no network and no carver."""
    return []


GENERATORS: dict[str, Callable[[Context], Iterable[Row]]] = {
    "system_info": system_info,
    "os_version": os_version,
    "users": users,
    "groups": groups,
    "user_ssh_keys": user_ssh_keys,
    "authorized_keys": authorized_keys,
    "shell_history": shell_history,
    "hash": hash_table,
    "file": file_table,
    "processes": processes,
    "process_envs": process_envs,
    "deb_packages": deb_packages,
    "osquery_info": osquery_info,
    "kernel_info": kernel_info,
    "uptime": uptime,
    "listening_ports": listening_ports,
    "etc_hosts": etc_hosts,
    "mounts": mounts,
    "curl": nothing,
    "curl_certificate": nothing,
    "carves": nothing,
}
