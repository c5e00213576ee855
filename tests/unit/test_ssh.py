"""The SSH layer's pure parts: pinned keys, fingerprints, the bounded fan-out."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paramiko
import pytest

from fleetkit.clients.ssh import HostKeyError, KnownHosts, fan_out, fingerprint, known_hosts_name
from fleetkit.foundation.inventory import Host


def _key() -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(_KEYFILE)


_KEYFILE = ""


@pytest.fixture(autouse=True, scope="module")
def _keyfile(tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess

    global _KEYFILE
    path = tmp_path_factory.mktemp("keys") / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    _KEYFILE = str(path)


def test_fingerprint_matches_ssh_keygen() -> None:
    import subprocess

    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", _KEYFILE + ".pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert fingerprint(_key()) == out.split()[1]


def test_known_hosts_name_uses_brackets_for_non_default_ports() -> None:
    assert known_hosts_name("10.0.0.1", 22) == "10.0.0.1"
    assert known_hosts_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_known_hosts_skips_bad_lines_but_keeps_good_ones(tmp_path: Path) -> None:
    key = _key()
    path = tmp_path / "known_hosts"
    path.write_text(
        "# comment\n"
        "@cert-authority *.example ssh-ed25519 AAAAnotbase64\n"
        f"[127.0.0.9]:2201 {key.get_name()} {key.get_base64()}\n"
        "garbage\n"
    )
    known = KnownHosts(str(path))
    assert known.lookup("127.0.0.9", 2201)[key.get_name()].asbytes() == key.asbytes()
    assert len(known.warnings) == 2
    assert all(str(path) in w for w in known.warnings)


def test_pin_appends_once_and_refuses_a_different_key(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("# pinned keys\n")
    known = KnownHosts(str(path))
    key = _key()
    assert known.pin("127.0.0.9", 2201, key) is True
    assert known.pin("127.0.0.9", 2201, key) is False
    text = path.read_text()
    assert text.startswith("# pinned keys\n")
    assert text.count(key.get_base64()) == 1
    assert KnownHosts(str(path)).lookup("127.0.0.9", 2201)
    other = paramiko.Ed25519Key.from_private_key_file(_KEYFILE)  # same type, same key: fine
    assert known.pin("127.0.0.9", 2201, other) is False
    with pytest.raises(HostKeyError):
        _pin_different(known)


def _pin_different(known: KnownHosts) -> None:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/o"], check=True)
        known.pin("127.0.0.9", 2201, paramiko.Ed25519Key.from_private_key_file(f"{d}/o"))


def _hosts(n: int) -> list[Host]:
    return [Host(name=f"h{i}", address=f"127.0.0.{i + 1}") for i in range(n)]


def test_fan_out_keeps_inventory_order_and_captures_errors() -> None:
    def work(host: Host) -> str:
        if host.name == "h2":
            raise RuntimeError("boom")
        time.sleep(0.01 * (5 - int(host.name[1:])))
        return host.name.upper()

    seen: list[str] = []
    outcomes = fan_out(_hosts(5), work, parallelism=3, on_done=lambda o: seen.append(o.host.name))
    assert [o.host.name for o in outcomes] == ["h0", "h1", "h2", "h3", "h4"]
    assert [o.value for o in outcomes if o.ok] == ["H0", "H1", "H3", "H4"]
    assert isinstance(outcomes[2].error, RuntimeError)
    assert sorted(seen) == ["h0", "h1", "h2", "h3", "h4"]


def test_fan_out_never_exceeds_its_parallelism() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(host: Host) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    fan_out(_hosts(12), work, parallelism=4)
    assert peak == 4


# --------------------------------------------------------------------------- hung hosts


class _HungTransport:
    """A session whose server never answers an exec request: only close() ends the wait."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


class _HungChannel:
    def __init__(self, transport: _HungTransport) -> None:
        self.transport = transport

    def get_transport(self) -> _HungTransport:
        return self.transport

    def exec_command(self, command: str) -> None:
        # What paramiko does: wait for the reply with no timeout; a closed session ends it.
        self.transport.closed.wait()
        raise paramiko.SSHException("Channel closed.")


def test_a_host_that_never_answers_the_exec_request_times_out_naming_it() -> None:
    from fleetkit.clients.ssh import CommandTimeout
    from fleetkit.clients.ssh.remote import Remote

    remote = Remote(Host("node-2", "127.0.0.1"), connection=None, command_timeout=0.2)  # type: ignore[arg-type]
    transport = _HungTransport()
    with pytest.raises(CommandTimeout) as caught:
        remote._start(_HungChannel(transport), "true", 0.2, "write /etc/osquery/osquery.flags")  # type: ignore[arg-type]
    assert transport.closed.is_set()  # the session was given up, so the wait ended
    assert caught.value.host == "node-2"
    assert "timed out after 0.2s" in str(caught.value)
    assert "write /etc/osquery/osquery.flags" in str(caught.value)


def test_paramiko_logs_nothing_to_the_users_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from fleetkit.clients.ssh.connector import quiet_paramiko

    quiet_paramiko()
    quiet_paramiko()  # idempotent: one handler
    logger = logging.getLogger("paramiko.transport")
    logger.error("Exception (client): Error reading SSH protocol banner")
    assert capsys.readouterr().err == ""
    handlers = logging.getLogger("paramiko").handlers
    assert sum(isinstance(h, logging.NullHandler) for h in handlers) == 1


def test_a_connection_without_a_banner_says_so_not_no_existing_session() -> None:
    from fleetkit.clients.ssh.connector import _stalled_handshake

    class Transport:
        def __init__(self, version: str, key: object, authenticated: bool = False) -> None:
            self.remote_version, self.host_key = version, key
            self.authenticated = authenticated

        def is_authenticated(self) -> bool:
            return self.authenticated

    silent = _stalled_handshake(Transport("", None), 5)  # type: ignore[arg-type]
    assert silent is not None and "sent no SSH banner within 5s" in silent
    stuck = _stalled_handshake(Transport("SSH-2.0-OpenSSH_9.2", None), 5)  # type: ignore[arg-type]
    assert stuck == "the SSH handshake did not complete within 5s"
    assert _stalled_handshake(Transport("SSH-2.0-x", object()), 5) is None  # type: ignore[arg-type]
    assert _stalled_handshake(None, 5) is None


# --------------------------------------------------------------------------- hostile output


class _ScriptedChannel:
    """A host's session that prints what the test scripts, a chunk per read, each after
    ``pause`` seconds (honouring the read timeout as paramiko does)."""

    def __init__(self, chunks: list[bytes], pause: float = 0.0, stderr: bytes = b"") -> None:
        self.chunks = list(chunks)
        self.pause = pause
        self.stderr = [stderr] if stderr else []
        self.timeout: float | None = None
        self.closed = False
        self.status_event = threading.Event()
        self.status_event.set()
        self.reads = 0

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def get_transport(self) -> _HungTransport:
        return _HungTransport()

    def exec_command(self, command: str) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def recv(self, size: int) -> bytes:
        if self.closed or not self.chunks:
            return b""
        if self.timeout is not None and self.pause > self.timeout:
            time.sleep(self.timeout)
            raise TimeoutError
        time.sleep(self.pause)
        self.reads += 1
        return self.chunks.pop(0)

    def recv_stderr(self, size: int) -> bytes:
        return self.stderr.pop(0) if self.stderr and not self.closed else b""

    def close(self) -> None:
        self.closed = True

    def recv_exit_status(self) -> int:
        return 0


def _remote(limit: float, max_stdout: int = 1 << 20) -> object:
    from fleetkit.clients.ssh.remote import Remote

    return Remote(Host("node-2", "127.0.0.1"), None, limit, max_stdout=max_stdout)  # type: ignore[arg-type]


def test_a_host_trickling_its_output_cannot_stretch_the_command_past_its_limit() -> None:
    from fleetkit.clients.ssh import CommandTimeout

    # Each read well inside the limit, but 60 of them (3 s) are far beyond it.
    channel = _ScriptedChannel([b"x"] * 60, pause=0.05)
    with pytest.raises(CommandTimeout) as caught:
        _remote(0.5)._exchange(channel, "osqueryi", None, 0.5, "osqueryi --json")  # type: ignore[attr-defined]
    assert caught.value.host == "node-2"
    assert "timed out after 0.5s" in str(caught.value)
    assert channel.reads < 60


def test_a_host_flooding_stdout_is_an_error_naming_it_and_reading_stops() -> None:
    from fleetkit.clients.ssh import SSHError

    channel = _ScriptedChannel([b"y" * 1024] * 1000)
    with pytest.raises(SSHError) as caught:
        _remote(5.0, max_stdout=10 * 1024)._exchange(channel, "cat", None, 5.0, "cat big")  # type: ignore[attr-defined]
    assert caught.value.host == "node-2"
    assert "stdout over the limit of 10240 bytes" in str(caught.value)
    assert channel.closed and channel.reads == 11


def test_a_host_flooding_stderr_is_an_error_naming_it() -> None:
    from fleetkit.clients.ssh import SSHError
    from fleetkit.clients.ssh.remote import MAX_STDERR_BYTES

    channel = _ScriptedChannel([b"ok"], stderr=b"e" * (MAX_STDERR_BYTES + 1))
    with pytest.raises(SSHError) as caught:
        _remote(5.0)._exchange(channel, "true", None, 5.0, "true")  # type: ignore[attr-defined]
    assert "stderr over the limit" in str(caught.value)


def test_a_well_behaved_host_gets_its_whole_output_back() -> None:
    channel = _ScriptedChannel([b"a" * 1000, b"b" * 1000], stderr=b"warning\n")
    result = _remote(5.0)._exchange(channel, "true", None, 5.0, "true")  # type: ignore[attr-defined]
    assert result.stdout == b"a" * 1000 + b"b" * 1000
    assert result.stderr == b"warning\n" and result.exit_code == 0
