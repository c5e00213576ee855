"""The osquery stand-in keeps the osqueryi/osqueryd contract fleetkit relies on (osquery.md §3).

Run straight from the source tree through ``osqueryi``/``osqueryd`` symlinks,
exactly as the package installs them (mode chosen by argv[0]).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

STANDIN = Path(__file__).resolve().parents[2] / "lab/standins/osquery"
PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    not os.access(PYTHON, os.X_OK), reason="the stand-in runs with /usr/bin/python3"
)


@pytest.fixture(scope="module")
def bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("osquery-bin")
    for name in ("osqueryi", "osqueryd"):
        (directory / name).symlink_to(STANDIN / "bin/osqueryd")
    return directory


def osqueryi(
    bindir: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(bindir / "osqueryi"), *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=60,
        check=False,
    )


def rows(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, str]]:
    assert result.returncode == 0, result.stderr.decode()
    parsed: list[dict[str, str]] = json.loads(result.stdout)
    return parsed


# -- output contract ---------------------------------------------------------------------------


def test_json_framing_is_exact_with_strings_sorted_keys_and_null_as_empty(bindir: Path) -> None:
    result = osqueryi(
        bindir,
        "--json",
        "SELECT 2 AS zeta, 'x' AS alpha UNION ALL SELECT 10, NULL",
    )
    assert result.returncode == 0
    assert result.stdout == (b'[\n  {"alpha":"x","zeta":"2"},\n  {"alpha":"","zeta":"10"}\n]\n')
    assert result.stderr == b""


def test_empty_result_prints_an_empty_array(bindir: Path) -> None:
    result = osqueryi(bindir, "--json", "SELECT 1 WHERE 1 = 0")
    assert (result.returncode, result.stdout) == (0, b"[\n\n]\n")


def test_error_goes_to_stderr_with_nonzero_exit_and_empty_array(bindir: Path) -> None:
    result = osqueryi(bindir, "--json", "SELECT * FROM no_such_table")
    assert result.returncode == 1
    assert result.stderr == b"Error: no such table: no_such_table\n"
    assert result.stdout == b"[\n\n]\n"


def test_syntax_error_is_reported(bindir: Path) -> None:
    result = osqueryi(bindir, "--json", "SELEC 1")
    assert result.returncode != 0
    assert result.stderr.startswith(b"Error: near ")


def test_statements_are_merged_into_one_array(bindir: Path) -> None:
    result = osqueryi(bindir, "--json", "SELECT 1 AS n; SELECT 2 AS n;")
    assert rows(result) == [{"n": "1"}, {"n": "2"}]


def test_sql_on_stdin_with_or_without_semicolon(bindir: Path) -> None:
    for text in (b"SELECT 'in' AS via;\n", b"SELECT 'in' AS via"):
        assert rows(osqueryi(bindir, "--json", stdin=text)) == [{"via": "in"}]


def test_version_and_unknown_flags(bindir: Path) -> None:
    assert osqueryi(bindir, "--version").stdout == b"osqueryi version 5.23.1\n"
    bad = osqueryi(bindir, "--no_such_flag", "SELECT 1")
    assert bad.returncode == 1
    assert b"unknown command line flag 'no_such_flag'" in bad.stderr


def test_default_output_is_a_table(bindir: Path) -> None:
    result = osqueryi(bindir, "SELECT 'a' AS col")
    assert result.stdout.decode().splitlines() == [
        "+-----+",
        "| col |",
        "+-----+",
        "| a   |",
        "+-----+",
    ]


def test_disabled_table_is_no_such_table(bindir: Path) -> None:
    result = osqueryi(bindir, "--json", "--disable_tables=curl,shell_history", "SELECT * FROM curl")
    assert result.returncode == 1
    assert result.stderr == b"Error: no such table: curl\n"
    allowed = osqueryi(bindir, "--json", "--disable_tables=curl", "SELECT count(*) AS n FROM users")
    assert int(rows(allowed)[0]["n"]) >= 1


def test_attach_is_refused(bindir: Path, tmp_path: Path) -> None:
    result = osqueryi(bindir, "--json", f"ATTACH '{tmp_path}/x.db' AS x")
    assert result.returncode != 0
    assert result.stderr == b"Error: not authorized\n"
    assert not (tmp_path / "x.db").exists()


HOSTILE = [
    "it's a 'quoted' \"string\"",
    "a; DROP TABLE users; --",
    "$(touch /tmp/pwned) and `id` and ${HOME}",
    "line one\nline two\r\n\ttabbed",
    "non-ASCII: é ü ß 東京 🚀",
    "back\\slash and \\n literal",
    "x" * 65536,
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_literal_comes_back_byte_for_byte(bindir: Path, text: str) -> None:
    sql = "SELECT '" + text.replace("'", "''") + "' AS v"
    assert rows(osqueryi(bindir, "--json", sql)) == [{"v": text}]
    assert rows(osqueryi(bindir, "--json", stdin=sql.encode())) == [{"v": text}]


# -- host facts -----------------------------------------------------------------------------------


def test_system_info_and_os_version_describe_this_host(bindir: Path) -> None:
    [info] = rows(osqueryi(bindir, "--json", "SELECT hostname, physical_memory FROM system_info"))
    assert info["hostname"].split(".")[0] == os.uname().nodename.split(".")[0]
    assert int(info["physical_memory"]) > 0
    [version] = rows(osqueryi(bindir, "--json", "SELECT platform, codename FROM os_version"))
    release = Path("/etc/os-release").read_text()
    assert f"ID={version['platform']}" in release


def test_users_and_processes_are_real(bindir: Path) -> None:
    users = rows(osqueryi(bindir, "--json", "SELECT username, uid FROM users WHERE uid = 0"))
    assert users == [{"uid": "0", "username": "root"}]
    mine = rows(
        osqueryi(bindir, "--json", f"SELECT pid, name FROM processes WHERE pid = {os.getpid()}")
    )
    assert mine and mine[0]["pid"] == str(os.getpid())


def test_hash_of_files_named_exactly_or_by_like_pattern(bindir: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"alpha\n")
    (tmp_path / "b.bin").write_bytes(bytes(range(256)))
    (tmp_path / "sub").mkdir()
    exact = rows(
        osqueryi(
            bindir,
            "--json",
            f"SELECT path, md5, sha1, sha256 FROM hash WHERE path = '{tmp_path}/a.txt'",
        )
    )
    assert exact == [
        {
            "path": f"{tmp_path}/a.txt",
            "md5": hashlib.md5(b"alpha\n").hexdigest(),
            "sha1": hashlib.sha1(b"alpha\n").hexdigest(),
            "sha256": hashlib.sha256(b"alpha\n").hexdigest(),
        }
    ]
    liked = rows(
        osqueryi(bindir, "--json", f"SELECT path, sha256 FROM hash WHERE path LIKE '{tmp_path}/%'")
    )
    assert {r["path"] for r in liked} == {f"{tmp_path}/a.txt", f"{tmp_path}/b.bin"}
    assert {r["sha256"] for r in liked} >= {hashlib.sha256(bytes(range(256))).hexdigest()}


def test_like_matches_one_level_with_percent_and_recurses_with_double(
    bindir: Path, tmp_path: Path
) -> None:
    (tmp_path / "deep/er").mkdir(parents=True)
    for name in (".hidden", "top", "deep/mid", "deep/er/bottom"):
        (tmp_path / name).write_text(name)
    one = rows(osqueryi(bindir, "--json", f"SELECT path FROM file WHERE path LIKE '{tmp_path}/%'"))
    assert {r["path"] for r in one} == {f"{tmp_path}/{n}" for n in (".hidden", "top", "deep")}
    every = rows(
        osqueryi(bindir, "--json", f"SELECT path FROM hash WHERE path LIKE '{tmp_path}/%%'")
    )
    names = (".hidden", "top", "deep/mid", "deep/er/bottom")
    assert {r["path"] for r in every} == {f"{tmp_path}/{n}" for n in names}


def test_file_by_directory(bindir: Path, tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o750)
    (tmp_path / "link").symlink_to(tmp_path / "run.sh")
    found = rows(
        osqueryi(
            bindir,
            "--json",
            "SELECT filename, mode, size, type, symlink FROM file"
            f" WHERE directory = '{tmp_path}' ORDER BY filename",
        )
    )
    assert found == [
        {"filename": "link", "mode": "0750", "size": "10", "type": "regular", "symlink": "1"},
        {"filename": "run.sh", "mode": "0750", "size": "10", "type": "regular", "symlink": "0"},
    ]


def test_hash_without_a_path_constraint_is_refused(bindir: Path) -> None:
    result = osqueryi(bindir, "--json", "SELECT * FROM hash")
    assert result.returncode != 0
    assert result.stderr.startswith(b"Error: ")
    assert result.stdout == b"[\n\n]\n"


# -- user_ssh_keys on real keys ---------------------------------------------------------------


def _keygen(path: Path, *args: str, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-f", str(path), "-N", passphrase, "-C", "test", *args],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def ssh_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    home = tmp_path_factory.mktemp("home")
    ssh = home / ".ssh"
    ssh.mkdir()
    _keygen(ssh / "rsa_pem", "-t", "rsa", "-b", "2048", "-m", "PEM")
    _keygen(ssh / "ecdsa_pem", "-t", "ecdsa", "-b", "384", "-m", "PEM")
    _keygen(ssh / "rsa_pkcs8", "-t", "rsa", "-b", "3072", "-m", "PKCS8")
    _keygen(ssh / "ed25519", "-t", "ed25519")
    _keygen(ssh / "rsa_openssh", "-t", "rsa", "-b", "2048")
    _keygen(ssh / "rsa_pem_enc", "-t", "rsa", "-b", "2048", "-m", "PEM", passphrase="secret-pass")
    _keygen(ssh / "ecdsa_pkcs8_enc", "-t", "ecdsa", "-m", "PKCS8", passphrase="secret-pass")
    _keygen(ssh / "ed25519_enc", "-t", "ed25519", passphrase="secret-pass")
    (ssh / "authorized_keys").write_text((ssh / "ed25519.pub").read_text())
    (ssh / "config").write_text("Host *\n  User root\n")
    return home


EXPECTED_KEYS = {
    # file: (encrypted, key_type, key_group_name, key_length, key_security_bits)
    "rsa_pem": ("0", "rsa", "", "2048", "112"),
    "ecdsa_pem": ("0", "ec", "secp384r1", "384", "192"),
    "rsa_pkcs8": ("0", "rsa", "", "3072", "128"),
    "ed25519": ("0", "", "", "-1", "-1"),
    "rsa_openssh": ("0", "", "", "-1", "-1"),
    "rsa_pem_enc": ("1", "", "", "-1", "-1"),
    "ecdsa_pkcs8_enc": ("1", "", "", "-1", "-1"),
    "ed25519_enc": ("1", "", "", "-1", "-1"),
}


def test_user_ssh_keys_types_and_encryption(
    ssh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(STANDIN / "lib"))
    try:
        from osquery_standin import facts
        from osquery_standin.engine import Engine
    finally:
        sys.path.remove(str(STANDIN / "lib"))
    user = ["alice", "x", "1000", "1000", "Alice", str(ssh_home), "/bin/bash"]
    monkeypatch.setattr(facts, "_passwd", lambda: [user])
    engine = Engine()
    try:
        [result] = engine.run(
            "SELECT k.path, k.encrypted, k.key_type, k.key_group_name, k.key_length,"
            " k.key_security_bits FROM users u CROSS JOIN user_ssh_keys k USING (uid)"
        )
    finally:
        engine.close()
    found = {Path(row[0]).name: tuple(row[1:]) for row in result.rows}
    assert found == EXPECTED_KEYS  # .pub, authorized_keys and config are not private keys


# -- the daemon and --connect ---------------------------------------------------------------------


@pytest.fixture
def daemon(bindir: Path, tmp_path: Path) -> Iterator[Path]:
    socket_path = tmp_path / "osquery.em"
    flags = tmp_path / "osquery.flags"
    flags.write_text(
        f"--extensions_socket={socket_path}\n"
        "--disable_tables=curl,process_envs\n"
        f"--pidfile={tmp_path}/osqueryd.pidfile\n"
        f"--database_path={tmp_path}/osquery.db\n"
        f"--logger_path={tmp_path}/log\n"
        "--a_flag_this_version_does_not_know=1\n"
    )
    process = subprocess.Popen(
        [
            str(bindir / "osqueryd"),
            "--flagfile",
            str(flags),
            "--config_path",
            str(tmp_path / "none.conf"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "osqueryd did not create its socket"
        time.sleep(0.02)
    try:
        yield socket_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def test_connect_prints_banner_then_json_from_the_daemon(bindir: Path, daemon: Path) -> None:
    result = osqueryi(bindir, "--json", f"--connect={daemon}", "SELECT 'daemon' AS answer")
    assert result.returncode == 0
    assert result.stdout == (
        f"Connected to extension socket {daemon} for debugging\n".encode()
        + b'[\n  {"answer":"daemon"}\n]\n'
    )
    spaced = osqueryi(bindir, "--json", "--connect", str(daemon), stdin=b"SELECT 1 AS one;")
    assert spaced.stdout.endswith(b'[\n  {"one":"1"}\n]\n')


def test_daemon_applies_its_own_disabled_tables(bindir: Path, daemon: Path) -> None:
    result = osqueryi(bindir, "--json", f"--connect={daemon}", "SELECT * FROM curl")
    assert result.returncode == 1
    assert result.stderr == b"Error: no such table: curl\n"
    assert result.stdout == f"Connected to extension socket {daemon} for debugging\n".encode()
    info = osqueryi(bindir, "--json", f"--connect={daemon}", "SELECT version FROM osquery_info")
    assert info.stdout.endswith(b'[\n  {"version":"5.23.1"}\n]\n')


def test_daemon_refuses_a_second_instance_and_removes_socket_on_sigterm(
    bindir: Path, daemon: Path, tmp_path: Path
) -> None:
    second = subprocess.run(
        [str(bindir / "osqueryd"), "--flagfile", str(tmp_path / "osquery.flags")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert b"already running" in second.stderr
    pid = int((tmp_path / "osqueryd.pidfile").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while daemon.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not daemon.exists()
    assert not (tmp_path / "osqueryd.pidfile").exists()


def test_unconnectable_socket_is_an_error(bindir: Path, tmp_path: Path) -> None:
    result = osqueryi(bindir, "--json", f"--connect={tmp_path}/missing.em", "SELECT 1")
    assert result.returncode == 1
    assert result.stderr.startswith(b"Error: ")
    assert b"[" not in result.stdout
