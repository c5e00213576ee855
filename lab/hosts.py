"""Lab hosts: real OpenSSH servers, each in its own namespaces over the real root.

A :class:`LabHost` is one ``unshare --mount --uts --ipc --pid`` namespace set
whose PID 1 is a tiny init (``/usr/bin/python3`` reaping orphans), with
overlays on /etc /var /opt /usr /srv /home over the machine's own root, a
fresh /root, tmpfs /run and /tmp, its own hostname and its own ``sshd``
(recipe and pitfalls: ``reference/lab.md``). Because sshd is *not* PID 1,
:meth:`LabHost.stop_sshd` makes the host unreachable over SSH while its
daemons keep running, which is what an administrator sees when sshd dies.

The processes are started in a new session so that a lab started by
``invoke lab.up`` outlives the ``invoke`` process; their pids go into the
lab's state file so :mod:`lab.fleet` can tear them down later.

Nothing here goes through fleetkit: :meth:`LabHost.sh` uses ``nsenter`` and is
meant for test assertions and fault injection.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.processes import alive, die_with_parent

SSHD = "/usr/sbin/sshd"
OVERLAID = ("etc", "var", "opt", "usr", "srv", "home")
#: What commands run through :meth:`LabHost.sh` see: a clean, predictable environment.
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "USER": "root",
    "LOGNAME": "root",
}

# PID 1 of every host. It starts sshd (which daemonizes and is reparented
# here), reaps every orphan, and on SIGTERM stops everything in the host.
_INIT = r"""# PID 1 of a fleetkit lab host (lab/hosts.py): starts sshd, reaps orphans.
import os, signal, sys, time

def reap(*_):
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

def stop(*_):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(-1, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
    os._exit(0)

signal.signal(signal.SIGCHLD, reap)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
os.spawnv(os.P_NOWAIT, "/usr/sbin/sshd", ["/usr/sbin/sshd", "-E", "/var/log/sshd.log"])
while True:
    signal.pause()
"""


class LabError(RuntimeError):
    """The lab itself could not do what was asked (not a fleetkit error)."""


@dataclass(frozen=True)
class HostKey:
    """An ed25519 key pair in OpenSSH formats."""

    private_openssh: str
    public_line: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def generate(cls, comment: str = "") -> HostKey:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        return cls(private, f"{public} {comment}".strip())

    @property
    def public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` without the comment."""
        return " ".join(self.public_line.split()[:2])


@dataclass
class LabHost:
    """One lab host; ``address``/``ssh_port`` is where SSH clients reach it."""

    name: str
    address: str
    ssh_port: int
    directory: Path
    host_key: str = ""  # "ssh-ed25519 AAAA..." (pinned in known_hosts)
    #: Network namespace holding the host (netns mode), or None (shared network).
    netns: str | None = None
    #: Address/prefix inside the netns (netns mode only), e.g. "10.9.8.3/24".
    netns_cidr: str | None = None
    unshare_pid: int | None = None
    init_pid: int | None = None
    #: The machine's own hostname (``uname -n`` inside the host); "" = its inventory name.
    machine_name: str = ""
    #: Where the lab's latency proxy listens for this host's SSH (same address), or None.
    proxy_port: int | None = None
    #: True: the host outlives the process that started it (``invoke lab.up``);
    #: False: it dies with that process's thread, even on SIGKILL (test fixtures).
    detach: bool = True
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    # -- state file -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "ssh_port": self.ssh_port,
            "directory": str(self.directory),
            "host_key": self.host_key,
            "netns": self.netns,
            "netns_cidr": self.netns_cidr,
            "unshare_pid": self.unshare_pid,
            "init_pid": self.init_pid,
            "machine_name": self.machine_name,
            "proxy_port": self.proxy_port,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> LabHost:
        return cls(
            name=data["name"],
            address=data["address"],
            ssh_port=int(data["ssh_port"]),
            directory=Path(data["directory"]),
            host_key=data.get("host_key", ""),
            netns=data.get("netns"),
            netns_cidr=data.get("netns_cidr"),
            unshare_pid=data.get("unshare_pid"),
            init_pid=data.get("init_pid"),
            machine_name=data.get("machine_name", ""),
            proxy_port=data.get("proxy_port"),
        )

    @property
    def hostname(self) -> str:
        """The machine hostname (what ``hostname`` prints on it), not the inventory name."""
        return self.machine_name or self.name

    @property
    def client_port(self) -> int:
        """The port SSH clients use: the latency proxy's when there is one, else sshd's."""
        return self.proxy_port or self.ssh_port

    @property
    def known_hosts_line(self) -> str:
        port = self.client_port
        name = self.address if port == 22 else f"[{self.address}]:{port}"
        return f"{name} {self.host_key}"

    # -- building the host's files ----------------------------------------------------------

    @property
    def overlay_dir(self) -> Path:
        return self.directory / "ov"

    def upper(self, path: str) -> Path:
        """Where ``path`` (an absolute path inside the host) lives in the overlay upper dirs.

        Only for files written before the host starts; afterwards use :meth:`write_file`.
        """
        parts = Path(path).parts
        if len(parts) < 2:
            raise LabError(f"{path}: not inside an overlaid directory")
        if parts[1] == "root":
            return self.directory.joinpath("root", *parts[2:])
        if parts[1] not in OVERLAID:
            raise LabError(f"{path}: not inside {', '.join(OVERLAID)} or /root")
        return self.overlay_dir.joinpath(f"{parts[1]}.up", *parts[2:])

    def prepare(self, authorized_key: str) -> None:
        """Write the host's own sshd config, host key, authorized_keys and identity."""
        for top in OVERLAID:
            (self.overlay_dir / f"{top}.up").mkdir(parents=True, exist_ok=True)
            (self.overlay_dir / f"{top}.work").mkdir(parents=True, exist_ok=True)
        root = self.directory / "root"
        root.mkdir(mode=0o700, exist_ok=True)
        root.chmod(0o700)
        key = HostKey.generate(f"root@{self.name}")
        self.host_key = key.public_key
        _write(self.upper("/etc/ssh/ssh_host_ed25519_key"), key.private_openssh, 0o600)
        _write(self.upper("/etc/ssh/ssh_host_ed25519_key.pub"), key.public_line + "\n", 0o644)
        _write(self.upper("/etc/ssh/sshd_config"), self.sshd_config(), 0o644)
        _write(self.directory / "lab-init.py", _INIT, 0o644)
        _write(self.upper("/etc/hostname"), self.hostname + "\n", 0o644)
        _write(self.upper("/etc/hosts"), self.etc_hosts(), 0o644)
        ssh_dir = root / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        ssh_dir.chmod(0o700)
        _write(ssh_dir / "authorized_keys", authorized_key.strip() + "\n", 0o600)
        (self.upper("/var/log")).mkdir(parents=True, exist_ok=True)

    def sshd_config(self) -> str:
        listen = f"{self.address}:{self.ssh_port}"
        return "\n".join(
            [
                f"# Generated by the fleetkit lab for host {self.name}.",
                f"ListenAddress {listen}",
                "HostKey /etc/ssh/ssh_host_ed25519_key",
                "PidFile /run/sshd.pid",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes yes",
                "UseDNS no",
                "PrintMotd no",
                # VERBOSE logs one "Starting session: command ..." line per exec channel:
                # what lab.counters counts (LogLevel INFO logs logins only).
                "LogLevel VERBOSE",
                # fleetkit opens many sessions at once during fan-out and tests.
                "MaxStartups 200:30:400",
                "MaxSessions 100",
                "AcceptEnv LANG LC_*",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )

    def etc_hosts(self) -> str:
        try:
            base = Path("/etc/hosts").read_text(encoding="utf-8")
        except OSError:
            base = "127.0.0.1\tlocalhost\n"
        if base and not base.endswith("\n"):
            base += "\n"
        return base + f"{self.address}\t{self.hostname}\n"

    # -- lifecycle ----------------------------------------------------------------------------

    def boot_script(self) -> str:
        """The shell that becomes PID 1: mounts, hostname, network, then the init."""
        ov = shlex.quote(str(self.overlay_dir))
        lines = ["set -e", f"hostname {shlex.quote(self.hostname)}"]
        for top in OVERLAID:
            lines.append(
                f"mount -t overlay fk-lab -o lowerdir=/{top},upperdir={ov}/{top}.up,"
                f"workdir={ov}/{top}.work /{top}"
            )
        lines += [
            f"mount --bind {shlex.quote(str(self.directory / 'root'))} /root",
            "mount -t proc proc /proc",
            "mount -t tmpfs -o mode=755 run /run",
            f"cp {shlex.quote(str(self.directory / 'lab-init.py'))} /run/lab-init",
            "mount -t tmpfs -o mode=1777 tmp /tmp",
            "mkdir -p /run/sshd /run/lock",
            "chmod 755 /run/sshd",
        ]
        if self.netns:
            lines += ["ip link set lo up"]
            if self.netns_cidr:
                lines += [f"ip addr add {self.netns_cidr} dev eth0", "ip link set eth0 up"]
        # The host dir in argv makes `ps` say which lab a host belongs to.
        lines += ["cd /", f"exec /usr/bin/python3 /run/lab-init {shlex.quote(str(self.directory))}"]
        return "\n".join(lines)

    def start(self, timeout: float = 30) -> None:
        """Boot the host (again): after :meth:`kill` this is a reboot, disk kept, /run fresh."""
        self.launch()
        self.wait_ready(time.monotonic() + timeout)

    def launch(self) -> None:
        """Start the host's namespaces (returns at once; see :meth:`wait_ready`)."""
        if self.is_running():
            raise LabError(f"{self.name}: already running (pid {self.unshare_pid})")
        command = [
            "unshare",
            "--mount",
            "--uts",
            "--ipc",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            self.boot_script(),
        ]
        if self.netns:
            command = ["nsenter", f"--net=/run/netns/{self.netns}", "--", *command]
        log = open(self.directory / "boot.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=None if self.detach else die_with_parent,
                env=HOST_ENV,
                cwd="/",
            )
        finally:
            log.close()
        self.unshare_pid = self._process.pid
        self.init_pid = None

    def _find_init_pid(self) -> int | None:
        if self.unshare_pid is None:
            return None
        pid = self.unshare_pid  # with netns, nsenter execs unshare in place: same pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def wait_ready(self, deadline: float) -> None:
        """Block until the init runs and sshd accepts TCP connections, or raise."""
        while time.monotonic() < deadline:
            if self.init_pid is None:
                self.init_pid = self._find_init_pid()
            if self._process is not None and self._process.poll() is not None:
                raise LabError(f"{self.name}: host exited at boot; see {self.boot_log_tail()}")
            # Gate on sshd's pidfile first: with netns, probing before the host's
            # eth0 has its address leaves a failed ARP entry that costs a second.
            if self.init_pid is not None and self._sshd_started() and self._accepts():
                return
            time.sleep(0.01)
        raise LabError(
            f"{self.name}: sshd not answering on {self.address}:{self.ssh_port}; "
            f"{self.boot_log_tail()}"
        )

    def _sshd_started(self) -> bool:
        return os.path.exists(f"/proc/{self.init_pid}/root/run/sshd.pid")

    def boot_log_tail(self) -> str:
        """The end of the boot and sshd logs, for error messages."""
        text = ""
        for path in (self.directory / "boot.log", self.upper("/var/log/sshd.log")):
            if path.exists():
                text += path.read_text(errors="replace")[-800:]
        return text.strip() or "(no log output)"

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.address, self.ssh_port), timeout=0.2):
                return True
        except OSError:
            return False

    def is_running(self) -> bool:
        return self.unshare_pid is not None and _alive(self.unshare_pid, self.directory)

    def kill(self, timeout: float = 10) -> None:
        """The whole host is gone at once (power cut): every process in it is SIGKILLed."""
        self._signal_kill()
        pid = self.unshare_pid
        if self._process is not None:
            self._process.wait(timeout=timeout)
        elif pid is not None:
            _wait_gone(pid, timeout=timeout)
        if self.init_pid is not None:
            _wait_gone(self.init_pid, timeout=timeout)
        self._process = None
        self.unshare_pid = None
        self.init_pid = None

    def _signal_kill(self) -> None:
        """SIGKILL the host's init: the kernel then kills its whole pid namespace.

        Killing the init (not ``unshare``) lets ``unshare`` reap it and exit, so
        no zombie is left for a PID 1 that may not reap (this sandbox's does not).
        ``unshare --kill-child`` is the fallback when the init is unknown.
        """
        if self.unshare_pid is None or not _alive(self.unshare_pid, self.directory):
            return
        init = self.init_pid or self._find_init_pid()
        target = init if init is not None and _parent(init) == self.unshare_pid else None
        with contextlib.suppress(ProcessLookupError):
            os.kill(target or self.unshare_pid, signal.SIGKILL)

    # -- inside the host ------------------------------------------------------------------------

    def _nsenter(self) -> list[str]:
        if self.init_pid is None or not self.is_running():
            raise LabError(f"{self.name}: host is not running")
        return ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-p", "-n", "--"]

    def sh(
        self,
        cmd: str,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` with /bin/sh inside the host (not through fleetkit or SSH)."""
        result = subprocess.run(
            [*self._nsenter(), "/bin/sh", "-c", cmd],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=HOST_ENV,
            cwd="/",
            check=False,
        )
        if check and result.returncode != 0:
            raise LabError(
                f"{self.name}: `{cmd}` exited {result.returncode}: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[bytes]:
        """Run argv inside the host without a shell; bytes in and out, never raises on rc."""
        return subprocess.run(
            [*self._nsenter(), *argv],
            input=input,
            capture_output=True,
            timeout=timeout,
            env=HOST_ENV,
            cwd="/",
            check=False,
        )

    def read_bytes(self, path: str) -> bytes:
        result = self.run(["cat", "--", path])
        if result.returncode != 0:
            raise FileNotFoundError(f"{self.name}:{path}: {result.stderr.decode().strip()}")
        return result.stdout

    def read_file(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path]).returncode == 0

    def write_file(self, path: str, text: str | bytes, mode: int = 0o644) -> None:
        data = text.encode() if isinstance(text, str) else text
        quoted = shlex.quote(path)
        script = (
            f"mkdir -p -- $(dirname -- {quoted}) && cat > {quoted} && chmod {mode:o} -- {quoted}"
        )
        result = self.run(["/bin/sh", "-c", script], input=data)
        if result.returncode != 0:
            raise LabError(f"{self.name}: cannot write {path}: {result.stderr.decode().strip()}")

    def pids_of(self, name: str) -> list[int]:
        """Pids (as seen inside the host) of processes called ``name`` in this host.

        Matches the kernel's comm, argv[0], or the script run by an interpreter
        (the stand-ins are Python programs).
        """
        if self.init_pid is None:
            return []
        try:
            ns = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        except OSError:
            return []
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "pid") != ns:
                    continue
                if name in _process_names(entry):
                    found.append(_ns_pid(entry))
            except OSError:
                continue
        return sorted(found)

    def sshd_pid(self) -> int | None:
        result = self.run(["cat", "/run/sshd.pid"])
        text = result.stdout.decode().strip()
        return int(text) if result.returncode == 0 and text.isdigit() else None

    def stop_sshd(self, timeout: float = 10) -> None:
        """Stop the listening sshd only: the host stays up, its daemons keep running."""
        pid = self.sshd_pid()
        if pid is not None:
            self.sh(f"kill {pid} 2>/dev/null; rm -f /run/sshd.pid", check=False)
        deadline = time.monotonic() + timeout
        while self._accepts():
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: sshd still accepting after stop")
            time.sleep(0.02)

    @property
    def sshd_log(self) -> Path:
        """The host's sshd log as seen from the machine running the lab (overlay upper dir)."""
        return self.upper("/var/log/sshd.log")

    def start_sshd(self, timeout: float = 10) -> None:
        """Start sshd again (it daemonizes; the host's init adopts and reaps it)."""
        if not self._accepts():
            self.sh(f"{SSHD} -E /var/log/sshd.log")
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: sshd did not come back; {self.boot_log_tail()}")
            time.sleep(0.02)


def start_hosts(hosts: Iterable[LabHost], timeout: float = 30) -> None:
    """Launch every host, then wait for all of them (fast: boots run in parallel)."""
    started = list(hosts)
    for host in started:
        host.launch()
    deadline = time.monotonic() + timeout
    for host in started:
        host.wait_ready(deadline)


def stop_hosts(hosts: Iterable[LabHost]) -> None:
    """Kill every host; signals go out first so hosts die in parallel.

    The kernel tears thousands of processes down one after another, and slower on a
    busy machine: the hosts share one deadline that grows with their number.
    """
    chosen = list(hosts)
    for host in chosen:
        host._signal_kill()
    deadline = time.monotonic() + 10 + 0.1 * len(chosen)
    for host in chosen:
        host.kill(timeout=max(1.0, deadline - time.monotonic()))


#: Ports handed out by the lab: below the kernel's ephemeral range (32768-60999)
#: so an outgoing connection can never take a port before its daemon binds it.
_PORT_RANGE = (20000, 32000)


def free_ports(count: int, address: str = "", exclude: Collection[int] = ()) -> list[int]:
    """``count`` distinct TCP ports free right now (all held open until all are chosen).

    Random ports below the ephemeral range, each proven free by binding it.
    ``exclude``: ports already handed out but maybe not bound yet (a lab's own).
    """
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            port = random.randint(*_PORT_RANGE)
            if port in exclude:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((address, port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def reserve_ports(count: int, exclude: Collection[int] = ()) -> list[socket.socket]:
    """``count`` free ports, each held by a bound (never listening) ``SO_REUSEPORT`` socket.

    For ports a daemon binds long after the lab chose them: the agents' and the
    orchestrator's APIs bind only when provisioning starts them, tens of seconds
    later, and meanwhile another lab on this machine (tests and benchmarks run
    side by side) could take a port that was merely chosen: that agent then dies
    with "Address already in use". A held port fails every other bind (ports
    are probed by binding), except one with ``SO_REUSEPORT`` by root: the
    Bacalhau stand-in binds so, and is the only listener, so it gets every
    connection. Close the sockets when the lab goes down.
    """
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            [port] = free_ports(1, exclude={*exclude, *(s.getsockname()[1] for s in held)})
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                s.bind(("", port))  # bound by someone since the probe: pick another
            except OSError:
                s.close()
                continue
            held.append(s)
        return held
    except BaseException:
        for s in held:
            s.close()
        raise


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _alive(pid: int, directory: Path) -> bool:
    """True when ``pid`` is still one of this host's processes (guards against pid reuse)."""
    return alive(pid, str(directory).encode())


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return
        time.sleep(0.01)
    raise LabError(f"process {pid} did not exit")


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[1])


def _process_names(proc: Path) -> set[str]:
    names = {(proc / "comm").read_text().strip()}
    argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    if argv:
        names.add(os.path.basename(argv[0].split()[0]) if argv[0] else "")
        if "python" in os.path.basename(argv[0]) and len(argv) > 1:
            script = next((a for a in argv[1:] if not a.startswith("-")), "")
            names.add(os.path.basename(script))
    return names


def _ns_pid(proc: Path) -> int:
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return int(proc.name)
