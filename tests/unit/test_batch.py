"""One job per pack: the task's argv, the framing its script prints, and the strict parser.

The script is run for real (dash and bash, with a fake ``osqueryi`` on PATH
and with the lab's osquery stand-in behind a daemon socket); the framing
round trip and corruption detection are property-tested.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetkit.ask.batch import (
    DEFAULT_STDERR_LIMIT,
    MAGIC,
    SCRIPT,
    PackAnswer,
    QueryAnswer,
    encode_pack_output,
    pack_command,
    parse_pack_output,
)
from fleetkit.ask.packs import Statement, pack_from_data
from fleetkit.foundation.status import UsageError

# The stand-in's own fixtures (osqueryi/osqueryd on a PATH, a daemon with its socket).
from tests.unit.test_osquery_standin import bindir, daemon  # noqa: F401

SOCKET = "/var/osquery/osquery.em"

# --------------------------------------------------------------------------- helpers

#: A fake osqueryi: the "SQL" is a JSON spec of what to print, so any bytes can be produced.
FAKE_OSQUERYI = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import json, os, sys, time
    args = sys.argv[1:]
    assert args[0].startswith("--connect=/") and args[1] == "--json", args
    spec = json.loads(args[2])
    time.sleep(spec.get("sleep", 0))
    os.write(1, bytes.fromhex(spec.get("out", "")))
    os.write(2, bytes.fromhex(spec.get("err", "")))
    sys.exit(spec.get("rc", 0))
    """
)

SHELLS = [s for s in ("/usr/bin/dash", "/usr/bin/bash", "/bin/sh") if os.access(s, os.X_OK)]


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fake-osquery")
    program = directory / "osqueryi"
    program.write_text(FAKE_OSQUERYI)
    program.chmod(0o755)
    return directory


def spec(out: bytes = b"", err: bytes = b"", rc: int = 0, sleep: float = 0) -> str:
    return json.dumps({"out": out.hex(), "err": err.hex(), "rc": rc, "sleep": sleep})


def run_task(
    statements: list[Statement],
    path_dir: Path,
    *,
    shell: str = "/bin/sh",
    socket: str = SOCKET,
    query_timeout: int = 0,
    stderr_limit: int = DEFAULT_STDERR_LIMIT,
) -> subprocess.CompletedProcess[bytes]:
    """Exec the task's argv as the lab's Bacalhau stand-in does (no shell parses it)."""
    command = pack_command(
        statements, socket_path=socket, query_timeout=query_timeout, stderr_limit=stderr_limit
    )
    argv = [shell, *command.entrypoint[1:], *command.parameters]
    env = {"PATH": f"{path_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(argv, env=env, capture_output=True, timeout=120, check=False)


def answers_of(parsed: PackAnswer) -> list[tuple[int | None, bytes | None, bytes]]:
    return [(a.exit_code, a.stdout, a.stderr) for a in parsed.answers]


# --------------------------------------------------------------------------- the task's argv


def test_the_sql_travels_as_separate_parameters_never_inside_the_script() -> None:
    hostile = "SELECT '$(touch /tmp/pwned)' AS a; -- `id` \"$HOME\" '\n"
    command = pack_command(
        [Statement("a", "SELECT 1"), Statement("b", hostile)], socket_path=SOCKET
    )
    assert command.entrypoint == ("/bin/sh", "-c", SCRIPT, "fleetkit-pack")
    assert command.parameters == (SOCKET, "4096", "60", "SELECT 1", hostile)
    assert command.names == ("a", "b")
    assert hostile not in SCRIPT
    params = command.engine_params("osquery/osquery:5.23.1-ubuntu22.04")
    assert params == {
        "Image": "osquery/osquery:5.23.1-ubuntu22.04",
        "Entrypoint": ["/bin/sh", "-c", SCRIPT, "fleetkit-pack"],
        "Parameters": [SOCKET, "4096", "60", "SELECT 1", hostile],
    }
    json.dumps(params)  # the job body is JSON


def test_a_packs_statements_become_one_command_in_file_order(tmp_path: Path) -> None:
    pack = pack_from_data(
        {
            "pack": "keys",
            "policies": [
                {
                    "name": "no-rsa",
                    "description": "d",
                    "severity": "high",
                    "meaning": "fail_if_rows",
                    "query": "SELECT 1 AS x",
                    "details": "SELECT 2 AS y",
                    "resolution": "r",
                }
            ],
        },
        file="keys.yaml",
    )
    command = pack_command(pack.statements, socket_path=SOCKET)
    assert command.names == ("no-rsa", "no-rsa:details")
    assert command.parameters[3:] == ("SELECT 1 AS x", "SELECT 2 AS y")


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        ([], "at least one statement"),
        ([Statement("a", "  ")], "empty SQL"),
        ([Statement("a", "SELECT '\0'")], "NUL"),
        ([Statement("a", "SELECT 1"), Statement("a", "SELECT 2")], "unique"),
    ],
)
def test_a_command_that_cannot_be_sent_is_refused(
    statements: list[Statement], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        pack_command(statements, socket_path=SOCKET)


def test_a_relative_socket_is_refused() -> None:
    with pytest.raises(UsageError, match="absolute socket path"):
        pack_command([Statement("a", "SELECT 1")], socket_path="osquery.em")


# --------------------------------------------------------------------------- the real script


@pytest.mark.parametrize("shell", SHELLS)
def test_the_script_frames_every_answer_and_one_error_loses_none_of_the_others(
    fake_bin: Path, shell: str
) -> None:
    tricky = MAGIC + b" END 3\n" + b"0" * 64 + b"  f2\nFK> 3 0 0 0 0\n"
    statements = [
        Statement("ok", spec(out=b'Connected\n[\n  {"a":"1"}\n]\n')),
        Statement("fails", spec(out=b"[\n\n]\n", err=b"Error: no such table: nope\n", rc=1)),
        Statement("tricky", spec(out=tricky + b"\x00\xff no newline", err=b"\x1b[31m")),
    ]
    result = run_task(statements, fake_bin, shell=shell)
    assert result.returncode == 0, result.stderr
    parsed = parse_pack_output(result.stdout, [s.name for s in statements])
    assert parsed.complete, parsed.problem
    assert answers_of(parsed) == [
        (0, b'Connected\n[\n  {"a":"1"}\n]\n', b""),
        (1, b"[\n\n]\n", b"Error: no such table: nope\n"),
        (0, tricky + b"\x00\xff no newline", b"\x1b[31m"),
    ]
    assert parsed.answers[1].stderr_text == "Error: no such table: nope"
    assert result.stdout == encode_pack_output(answers_of(parsed))  # type: ignore[arg-type]


def test_the_script_keeps_stderr_bounded_and_says_it_cut_it(fake_bin: Path) -> None:
    noisy = Statement("noisy", spec(out=b"[\n\n]\n", err=b"E" * 10_000, rc=1))
    result = run_task([noisy], fake_bin, stderr_limit=100)
    parsed = parse_pack_output(result.stdout, ["noisy"], stderr_limit=100)
    assert parsed.complete
    answer = parsed.answers[0]
    assert (answer.stderr, answer.stderr_truncated) == (b"E" * 100, True)
    assert answer.stderr_text.endswith("[cut]")


def test_a_hanging_query_is_stopped_and_the_next_one_still_answers(fake_bin: Path) -> None:
    if shutil.which("timeout") is None:
        pytest.skip("no timeout command on this machine")
    statements = [
        Statement("hangs", spec(out=b"partial", sleep=30)),
        Statement("after", spec(out=b"[\n\n]\n")),
    ]
    result = run_task(statements, fake_bin, query_timeout=1)
    parsed = parse_pack_output(result.stdout, ["hangs", "after"])
    assert parsed.complete
    assert parsed.answers[0].exit_code == 124  # timeout's "timed out"
    assert (parsed.answers[1].exit_code, parsed.answers[1].stdout) == (0, b"[\n\n]\n")


def test_a_missing_osqueryi_is_an_answer_per_query_not_a_lost_node(tmp_path: Path) -> None:
    result = run_task([Statement("a", "SELECT 1"), Statement("b", "SELECT 2")], tmp_path)
    parsed = parse_pack_output(result.stdout, ["a", "b"])
    assert parsed.complete
    assert [a.exit_code for a in parsed.answers] == [127, 127]
    assert b"osqueryi" in parsed.answers[0].stderr


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    answers=st.lists(
        st.tuples(st.integers(0, 255), st.binary(max_size=300), st.binary(max_size=300)),
        min_size=1,
        max_size=4,
    )
)
def test_the_script_and_its_python_twin_print_the_same_bytes(
    fake_bin: Path, answers: list[tuple[int, bytes, bytes]]
) -> None:
    statements = [
        Statement(f"q{i}", spec(out=out, err=err, rc=rc))
        for i, (rc, out, err) in enumerate(answers)
    ]
    result = run_task(statements, fake_bin, stderr_limit=200)
    assert result.stdout == encode_pack_output(answers, stderr_limit=200)
    parsed = parse_pack_output(result.stdout, [s.name for s in statements], stderr_limit=200)
    assert parsed.complete
    assert answers_of(parsed) == [(rc, out, err[:200]) for rc, out, err in answers]


# --------------------------------------------------------------------------- the osquery stand-in


@pytest.mark.skipif(
    not os.access("/usr/bin/python3", os.X_OK), reason="the stand-in runs with /usr/bin/python3"
)
def test_the_pack_job_against_the_osquery_stand_in_daemon(request: pytest.FixtureRequest) -> None:
    """The real ``--connect`` path: banner, JSON, errors, a denied table, all in one task."""
    socket: Path = request.getfixturevalue("daemon")
    standin_bin: Path = request.getfixturevalue("bindir")
    statements = [
        Statement("one", "SELECT 'pack' AS answer"),
        Statement("bad", "SELECT * FROM no_such_table"),
        Statement("denied", "SELECT * FROM curl"),
        Statement("two", "SELECT 2 AS two"),
    ]
    result = run_task(statements, standin_bin, socket=str(socket))
    parsed = parse_pack_output(result.stdout, [s.name for s in statements])
    assert parsed.complete, (parsed.problem, result.stderr)
    one, bad, denied, two = parsed.answers
    assert one.exit_code == 0 and one.stdout is not None
    assert one.stdout.startswith(b"Connected to extension socket")
    assert b'{"answer":"pack"}' in one.stdout
    assert bad.exit_code != 0 and b"no such table" in bad.stderr
    assert denied.exit_code != 0
    assert two.exit_code == 0 and two.stdout is not None and b'{"two":"2"}' in two.stdout


# --------------------------------------------------------------------------- parser: round trip

ANSWERS = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=200), st.binary(max_size=80)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200)
@given(answers=ANSWERS, limit=st.integers(0, 100))
def test_any_answers_round_trip_exactly(
    answers: list[tuple[int, bytes, bytes]], limit: int
) -> None:
    data = encode_pack_output(answers, stderr_limit=limit)
    names = [f"q{i}" for i in range(len(answers))]
    parsed = parse_pack_output(data, names, stderr_limit=limit)
    assert parsed.complete and not parsed.truncated
    assert [a.name for a in parsed.answers] == names
    assert answers_of(parsed) == [(rc, out, err[:limit]) for rc, out, err in answers]
    assert [a.stderr_truncated for a in parsed.answers] == [len(e) > limit for _, _, e in answers]
    # the same from a file (a spooled S3 download)
    assert parse_pack_output(io.BytesIO(data), names, stderr_limit=limit) == parsed


# --------------------------------------------------------------------------- parser: corruption


Answers = list[tuple[int, bytes, bytes]]


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[Answers, bytes, bytes]:
    answers = draw(ANSWERS)
    data = encode_pack_output(answers, stderr_limit=50)
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        new = draw(st.integers(0, 255).filter(lambda b: b != data[at]))
        bad = data[:at] + bytes([new]) + data[at + 1 :]
    elif kind == "insert":
        bad = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif kind == "delete":
        bad = data[:at] + data[at + draw(st.integers(1, 8)) :]
    elif kind == "truncate":
        bad = data[:at]
    else:
        bad = data + draw(st.binary(min_size=1, max_size=8))
    return answers, data, bad


@settings(max_examples=400)
@given(case=corrupted())
def test_any_corruption_is_detected_and_never_misattributed(
    case: tuple[Answers, bytes, bytes],
) -> None:
    answers, data, bad = case
    if bad == data:
        return
    names = [f"q{i}" for i in range(len(answers))]
    original = parse_pack_output(data, names, stderr_limit=50)
    parsed = parse_pack_output(bad, names, stderr_limit=50)
    assert not parsed.complete
    assert len(parsed.answers) == len(names)
    for got, want in zip(parsed.answers, original.answers, strict=True):
        assert got.name == want.name
        if got.framed:  # whatever is still accepted is exactly what the node sent for it
            assert got == want
        else:
            assert got.stdout is None and got.error


@settings(max_examples=200)
@given(first=ANSWERS, second=ANSWERS, at=st.integers(0), cut=st.integers(0))
def test_a_spliced_output_never_gives_one_statement_another_statements_answer(
    first: Answers, second: Answers, at: int, cut: int
) -> None:
    """Two valid outputs (another node's, another run's) spliced anywhere: an answer that is
    accepted is the one either output holds for that same statement, never a neighbour's."""
    a, b = encode_pack_output(first, stderr_limit=50), encode_pack_output(second, stderr_limit=50)
    spliced = a[: at % (len(a) + 1)] + b[cut % (len(b) + 1) :]
    names = [f"q{i}" for i in range(len(first))]
    parsed = parse_pack_output(spliced, names, stderr_limit=50)
    ours = parse_pack_output(a, names, stderr_limit=50).answers
    theirs = {
        i: QueryAnswer(i, names[i], code, out, err[:50], len(err) > 50)
        for i, (code, out, err) in enumerate(second[: len(names)])
    }
    candidates = [[ours[i], theirs.get(i)] for i in range(len(names))]
    for got, allowed in zip(parsed.answers, candidates, strict=True):
        assert not got.framed or got in allowed


def test_a_runoutput_cut_at_2048_bytes_keeps_the_whole_frames_and_says_truncated() -> None:
    answers = [(0, b"a" * 100, b""), (0, b"b" * 3000, b""), (0, b"c", b"")]
    data = encode_pack_output(answers)[:2048]
    parsed = parse_pack_output(data, ["a", "b", "c"])
    assert parsed.truncated and not parsed.complete
    assert parsed.answers[0].stdout == b"a" * 100
    assert parsed.answers[1].error is not None and "ends" in parsed.answers[1].error
    assert parsed.answers[2].error is not None and parsed.answers[2].error.startswith(
        "not answered"
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "ends before the pack header"),
        (b"Connected to extension socket\n[]\n", "expected the pack header"),
        (MAGIC + b" 3\n", "answered for 3 statements, the pack has 2"),
        (MAGIC + b" 02\n", "expected the pack header"),
        (b"x" * 10_000, "expected the pack header"),
    ],
)
def test_garbage_is_an_error_for_the_node_not_a_crash(data: bytes, problem: str) -> None:
    parsed = parse_pack_output(data, ["a", "b"])
    assert parsed.problem is not None and problem in parsed.problem
    assert [a.framed for a in parsed.answers] == [False, False]


def frame(number: int, code: int, out: bytes, err: bytes = b"", total: int | None = None) -> bytes:
    head = b"FK> %d %d %d %d %d\n" % (number, code, len(out), len(err), total or len(err))
    body = head + out + err
    return body + b"%s  f%d\n" % (hashlib.sha256(body).hexdigest().encode(), number)


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        # frames out of order: the second statement's frame first
        (frame(2, 0, b"x") + frame(1, 0, b"y"), "got frame 2"),
        # a length that claims fewer bytes than were sent: no trailer where it must be
        (b"FK> 1 0 3 0 0\nshort" + b"0" * 64 + b"  f1\n", "no frame end"),
        # the right shape and a wrong checksum
        (frame(1, 0, b"x")[:-69] + b"0" * 64 + b"  f1\n", "checksum"),
        # a frame that ends as another statement's
        (frame(1, 0, b"x")[:-2] + b"2\n", "another statement's number"),
        # stderr lengths that do not add up with the limit
        (frame(1, 1, b"", b"E" * 10, total=5000), "keeps 10 of 5000"),
        (frame(1, 256, b""), "not an exit code"),
        (b"FK> 1 0 -1 0 0\n", "bad frame header"),
        (b"FK> 1 0 99999999999999999999999 0 0\n", "bad frame header"),
    ],
)
def test_hostile_frames_are_errors_for_that_statement_and_the_rest(
    frames: bytes, error: str
) -> None:
    data = MAGIC + b" 2\n" + frames + frame(2, 0, b"z") + MAGIC + b" END 2\n"
    parsed = parse_pack_output(data, ["a", "b"])
    assert not parsed.complete
    first, second = parsed.answers
    assert first.error is not None and error in first.error, first.error
    assert second.error is not None and second.error.startswith("not answered")


def test_a_frame_claiming_a_huge_length_is_a_truncation_not_a_memory_blow_up() -> None:
    data = MAGIC + b" 1\nFK> 1 0 999999999999999999 0 0\n" + b"x" * 1000
    parsed = parse_pack_output(data, ["a"])
    assert parsed.truncated and parsed.answers[0].error is not None


def test_an_oversized_answer_is_an_error_for_that_statement_only() -> None:
    data = encode_pack_output([(0, b"x" * 5000, b""), (0, b"[\n\n]\n", b"")])
    parsed = parse_pack_output(data, ["big", "small"], max_query_bytes=1000)
    assert parsed.problem is None
    big, small = parsed.answers
    assert big.stdout is None and big.error == "output of 5000 bytes is over the limit of 1000"
    assert small == QueryAnswer(1, "small", exit_code=0, stdout=b"[\n\n]\n")


def test_output_after_the_end_is_a_problem_but_the_answers_stand() -> None:
    data = encode_pack_output([(0, b"[]", b"")]) + b"FK> 2 0 0 0 0\n"
    parsed = parse_pack_output(data, ["a"])
    assert parsed.problem == "unexpected output after the end of the pack"
    assert parsed.answers[0].stdout == b"[]" and not parsed.complete


def test_messages_quote_hostile_bytes_briefly_and_escaped() -> None:
    parsed = parse_pack_output(b"\x1b]0;pwned\x07" + b"A" * 500 + b"\n", ["a"])
    assert parsed.problem is not None
    assert "\x1b" not in parsed.problem and len(parsed.problem) < 200
