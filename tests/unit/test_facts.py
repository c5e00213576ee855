"""Every fact: its command run for real where that is harmless, its parser on hostile output.

Parsers are pure and total: whatever a host prints (garbage, a NUL, escape
codes, nothing), they return a typed value and never raise.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from pathlib import Path

import pytest

from fleetkit.hostfacts.facts import (
    BinaryLook,
    BinaryState,
    ClientVersion,
    CommandExists,
    DirectoryLook,
    DockerVersion,
    Fact,
    FactView,
    FileLook,
    FileState,
    Hostname,
    HttpOnHost,
    ManagerLook,
    Metadata,
    MissingFact,
    OsqueryAnswer,
    PackageState,
    PackageVersion,
    PathExists,
    Raw,
    ServiceLook,
    SocketLook,
    parse_client_version,
)
from fleetkit.hostfacts.services import ServiceSpec

GARBAGE = [Raw(0), Raw(1, b"", b"boom"), Raw(0, b"\x00\xff\x1b[2J\n\n--\n"), Raw(-1, b"x" * 5000)]


def look(fact: Fact[object]) -> Raw:
    """Run the fact's command on this machine (read-only commands on temp paths)."""
    done = subprocess.run(["sh", "-c", fact.command()], capture_output=True, timeout=30)
    return Raw(done.returncode, done.stdout, done.stderr)


def test_raw_says_its_most_telling_line() -> None:
    assert Raw(1, b"out\n", b"first\nlast line\n").said() == "last line"
    assert Raw(0, b"  only out  \n").said() == "only out"
    assert Raw(3).said() == "exit 3, no output"
    assert len(Raw(1, b"", b"y" * 999).said()) == 200


def test_file_look(tmp_path: Path) -> None:
    path = tmp_path / "app.conf"
    assert FileLook(str(path)).parse(look(FileLook(str(path)))) == FileState(exists=False)
    path.write_bytes(b"a\x00b\nsecond\n")
    path.chmod(0o640)
    state = FileLook(str(path)).parse(look(FileLook(str(path))))
    assert state.exists and state.content == b"a\x00b\nsecond\n" and not state.truncated
    assert state.meta is not None and state.meta.mode == 0o640
    path.write_bytes(b"z" * 100)
    small = FileLook(str(path), limit=10)
    big = small.parse(look(small))
    assert big.truncated and big.content == b"z" * 10


def test_file_look_on_garbage() -> None:
    for raw in GARBAGE:
        state = FileLook("/x").parse(raw)
        assert not state.exists
    assert FileLook("/x").parse(Raw(0, b"640 root root\nbody")).meta == Metadata(
        0o640, "root", "root"
    )
    assert not FileLook("/x").parse(Raw(0, b"rwx root root\nbody")).exists


def test_directory_and_path(tmp_path: Path) -> None:
    target = tmp_path / "d"
    assert not DirectoryLook(str(target)).parse(look(DirectoryLook(str(target)))).exists
    assert not PathExists(str(target)).parse(look(PathExists(str(target))))
    target.mkdir(mode=0o700)
    state = DirectoryLook(str(target)).parse(look(DirectoryLook(str(target))))
    assert state.exists and state.meta is not None and state.meta.mode == 0o700
    assert PathExists(str(target)).parse(look(PathExists(str(target))))
    assert all(not PathExists("/x").parse(raw) for raw in GARBAGE)


def test_socket_look(tmp_path: Path) -> None:
    path = tmp_path / "s.em"
    absent = SocketLook(str(path)).parse(look(SocketLook(str(path))))
    assert not absent.present and absent.detail == "no such file"
    path.write_text("x")
    plain = SocketLook(str(path)).parse(look(SocketLook(str(path))))
    assert not plain.present and "not a socket" in plain.detail
    path.unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        assert SocketLook(str(path)).parse(look(SocketLook(str(path)))).present
    finally:
        server.close()
        os.unlink(path)


def test_package_version() -> None:
    fact = PackageVersion("osquery")
    assert fact.parse(Raw(0, b"ii 5.23.1-1.linux")) == PackageState("5.23.1-1.linux")
    removed = fact.parse(Raw(0, b"rc 5.23.1-1.linux"))
    assert removed.version is None and "rc" in removed.detail
    absent = fact.parse(Raw(1, b"", b"dpkg-query: no packages found matching osquery\n"))
    assert absent.version is None and "no packages found" in absent.detail
    assert all(fact.parse(raw).version is None for raw in GARBAGE)
    assert "db:Status-Abbrev" in fact.command()


def test_binary_look(tmp_path: Path) -> None:
    binary, record = tmp_path / "bin", tmp_path / "bin.source"
    fact = BinaryLook(str(binary), str(record))
    assert fact.parse(look(fact)) == BinaryState(None, None, ())
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(0o755)
    digest = hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    record.write_text(f"{'a' * 64} {digest}\n")
    assert fact.parse(look(fact)) == BinaryState(digest, 0o755, ("a" * 64, digest))
    assert fact.parse(Raw(0, b"not-a-hash\n7z5\n")).sha256 is None


def test_command_exists_and_hostname() -> None:
    assert CommandExists("sh").parse(look(CommandExists("sh")))
    assert not CommandExists("no-such-tool-xyz").parse(look(CommandExists("no-such-tool-xyz")))
    assert Hostname().parse(look(Hostname())) == os.uname().nodename
    assert Hostname().parse(Raw(0, b"\n")) is None and Hostname().parse(Raw(1, b"x")) is None


def test_client_version() -> None:
    js = b'{"clientVersion": {"Major": "1", "Minor": "9", "GitVersion": "v1.9.3"}}'
    assert ClientVersion("/b").parse(Raw(0, js)).version == "v1.9.3"
    assert ClientVersion("/b").parse(Raw(0, b"CLIENT\nv1.9.3\n")).version == "v1.9.3"
    missing = ClientVersion("/b").parse(Raw(127, b"", b"sh: /b: not found"))
    assert missing.exit_code == 127 and missing.version is None and "not found" in missing.said
    assert parse_client_version("Error: unknown flag: --output") is None
    assert parse_client_version("[" * 100000) is None  # deep JSON is not a crash


@pytest.mark.parametrize("manager", ["auto", "systemd", "start-stop-daemon"])
def test_service_look(manager: str) -> None:
    spec = ServiceSpec("app", ("/usr/bin/app",), "app.service")
    fact = ServiceLook(spec, manager)
    state = fact.parse(Raw(0, b"systemd\nrunning\nenabled\nrestart\n"))
    assert state.running and state.enabled and state.restart_pending and not state.reload_pending
    assert state.manager == "systemd"
    assert fact.parse(Raw(0, b"\x1b[2J running")).manager == "unknown"
    if manager == "auto":
        assert "/run/systemd/system" in fact.command()
    else:
        assert fact.command().startswith(f"echo {manager};")


def test_service_look_runs_against_the_fallback(tmp_path: Path) -> None:
    spec = ServiceSpec("fk-never-running", ("/bin/true",), "x.service")
    state = ServiceLook(spec, "start-stop-daemon").parse(
        look(ServiceLook(spec, "start-stop-daemon"))
    )
    assert state.manager == "start-stop-daemon" and not state.running


def test_manager_look() -> None:
    assert ManagerLook().parse(Raw(0, b"systemd\n")) == "systemd"
    assert ManagerLook().parse(Raw(0, b"none\n")) == "start-stop-daemon"
    assert ManagerLook().parse(Raw(1, b"systemd-ish")) == "start-stop-daemon"


def test_http_on_host_bounds_the_answer() -> None:
    fact = HttpOnHost("http://127.0.0.1:1/api/v1/agent/alive")
    answer = fact.parse(Raw(0, b'{"Status":"OK"}' + b" " * 5000 + b"tail"))
    assert answer.ok and answer.body == '{"Status":"OK"}'
    down = fact.parse(Raw(7, b"", b"curl: (7) Failed to connect\n"))
    assert not down.ok and "Failed to connect" in down.said
    assert "curl" in fact.command() and "wget" in fact.command() and "python3" in fact.command()


def test_answer_facts_keep_the_raw_answer() -> None:
    raw = Raw(0, b'banner\n[\n  {"ok":"1"}\n]\n')
    assert OsqueryAnswer("/s.em", "SELECT 1 AS ok").parse(raw) is raw
    assert DockerVersion().parse(raw) is raw
    assert "'SELECT 1 AS ok'" in OsqueryAnswer("/s.em", "SELECT 1 AS ok").command()


def test_paths_are_quoted_in_every_command() -> None:
    odd = "/tmp/a b;rm -rf x"
    for fact in (FileLook(odd), DirectoryLook(odd), PathExists(odd), SocketLook(odd)):
        assert "'/tmp/a b;rm -rf x'" in fact.command()


def test_fact_view_is_typed_and_says_what_is_missing() -> None:
    view = FactView({PathExists("/a"): True})
    assert view[PathExists("/a")] is True
    assert PathExists("/a") in view and SocketLook("/a") not in view
    with pytest.raises(MissingFact):
        view[PathExists("/b")]
