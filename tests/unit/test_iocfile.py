"""IOC files as hostile input: one indicator per line, strict CSV, regular files only, limits."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetkit.foundation import iocfile
from fleetkit.foundation.iocfile import Indicator, gather_indicators, read_ioc_file
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError

H1 = "ef59adcbcf15a19cd742cfc3f3d45da135684eab56e042726a4fd4e4b77e94a6"
H2 = "a" * 64
#: Every character Python's str.splitlines() (and so a naive reader) breaks lines at, but "\n".
SEPARATORS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


# --------------------------------------------------------------------------- same contract as hunt


def test_csv_and_yaml_read_as_the_hunt_command_did(tmp_path: Path) -> None:
    write(
        tmp_path,
        "iocs.csv",
        f"\ufeffPath,SHA256\n/var/www/*/functions.php,{H1}\n,{H2}\n\n/opt/x,\n",
    )
    got = gather_indicators(None, None, "iocs.csv", str(tmp_path))
    assert got == [
        Indicator("/var/www/*/functions.php", H1),
        Indicator(None, H2),
        Indicator("/opt/x", None),
    ]
    write(tmp_path, "iocs.yaml", f"- {{path: /a, sha256: {H1.upper()}}}\n- {{sha256: {H2}}}\n")
    got = gather_indicators("/a", H1, "iocs.yaml", str(tmp_path))
    assert got == [Indicator("/a", H1), Indicator(None, H2)]


@pytest.mark.parametrize(
    ("name", "text", "key", "message"),
    [
        ("i.csv", "file,hash\n/a,b\n", "line 1", "header must name"),
        ("i.csv", f"path,sha256\n/a,{H1}\nrel/x,{H1}\n", "line 3.path", "absolute"),
        ("i.csv", "path,sha256\n/a,nothex\n", "line 2.sha256", "64 hexadecimal"),
        ("i.yaml", "{path: /a}\n", None, "YAML list"),
        ("i.yaml", "- {path: /a, sha: x}\n", "[0].sha", "unknown key"),
        ("i.yaml", "- {path: 5}\n", "[0].path", "expected a string"),
        ("i.yaml", "- {}\n", "[0]", "needs a path, a sha256"),
        ("i.txt", "x", None, "must be .csv"),
    ],
)
def test_bad_files_name_file_and_place(
    tmp_path: Path, name: str, text: str, key: str | None, message: str
) -> None:
    write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=message) as caught:
        gather_indicators(None, None, name, str(tmp_path))
    assert caught.value.file == str(tmp_path / name)
    assert caught.value.key == key
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


def test_bad_command_line_values_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="64 hexadecimal") as caught:
        gather_indicators(None, "xyz", None, "/")
    assert caught.value.key == "--sha256"
    with pytest.raises(UsageError, match="absolute"):
        gather_indicators("rel", None, None, "/")


# --------------------------------------------------------------------------- one indicator per line


@pytest.mark.parametrize("separator", SEPARATORS)
def test_unicode_line_separators_stay_inside_the_path(tmp_path: Path, separator: str) -> None:
    # A naive reader splits here and sees a second, attacker-chosen indicator ("/etc/x")
    # and a path "/srv/a" that is not the file to hunt.
    path = f"/srv/a{separator}/etc/x"
    write(tmp_path, "i.csv", f"path,sha256\n{path},{H1}\n/srv/b,{H2}\n")
    assert read_ioc_file(tmp_path / "i.csv") == [Indicator(path, H1), Indicator("/srv/b", H2)]


def test_a_separator_cannot_smuggle_a_second_record_into_a_line(tmp_path: Path) -> None:
    write(tmp_path, "i.csv", f"path,sha256\n/srv/x,{H1}\u2028/etc/shadow,{H2}\n")
    with pytest.raises(ConfigError, match="3 fields") as caught:
        read_ioc_file(tmp_path / "i.csv")
    assert caught.value.key == "line 2"


def test_crlf_files_are_read(tmp_path: Path) -> None:
    write(tmp_path, "i.csv", f"path,sha256\r\n/srv/x,{H1}\r\n")
    assert read_ioc_file(tmp_path / "i.csv") == [Indicator("/srv/x", H1)]


def test_a_quoted_path_may_hold_commas_and_quotes(tmp_path: Path) -> None:
    write(tmp_path, "i.csv", f'path,sha256\n"/srv/a,b ""c""",{H1}\n')
    assert read_ioc_file(tmp_path / "i.csv") == [Indicator('/srv/a,b "c"', H1)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f'"/srv/unterminated,{H1}', "unterminated quote"),
        (f'"/srv/a"x,{H1}', "text after a closing quote"),
        (f"/srv/a,b,{H1}", "3 fields, the header names 2"),
        ("/srv/" + "a" * 9000 + f",{H1}", "line longer than"),
    ],
)
def test_malformed_csv_is_bad_input_naming_the_line(
    tmp_path: Path, line: str, message: str
) -> None:
    write(tmp_path, "i.csv", f"path,sha256\n/srv/ok,{H1}\n{line}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        read_ioc_file(tmp_path / "i.csv")
    assert caught.value.key == "line 3"
    assert len(str(caught.value)) < 400


def test_a_quote_never_spans_lines(tmp_path: Path) -> None:
    write(tmp_path, "i.csv", f'path,sha256\n"/srv/a\n/srv/b",{H1}\n')
    with pytest.raises(ConfigError, match="unterminated quote") as caught:
        read_ioc_file(tmp_path / "i.csv")
    assert caught.value.key == "line 2"


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\n\x00*", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=30,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_every_line_is_exactly_one_indicator(names: list[str]) -> None:
    paths = ["/srv/" + name for name in names]
    rows = ['"' + p.replace('"', '""') + f'",{H1}' for p in paths]
    text = "path,sha256\n" + "\n".join(rows) + "\n"
    got = iocfile.read_csv(text, "gen.csv")
    assert [i.path for i in got] == [p.strip() for p in paths]


# --------------------------------------------------------------------------- only regular files


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "iocs.csv"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    worker = threading.Thread(target=lambda: _capture(result, fifo), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], ConfigError)
    assert "not a regular file" in str(result[0])


def _capture(result: list[BaseException], path: Path) -> None:
    try:
        read_ioc_file(path)
    except BaseException as exc:  # the test inspects it
        result.append(exc)


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "iocs.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_ioc_file(link)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        read_ioc_file(tmp_path / "dir.csv")


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    target = write(tmp_path, "real.csv", f"path,sha256\n/x,{H1}\n")
    (tmp_path / "link.csv").symlink_to(target)
    assert read_ioc_file(tmp_path / "link.csv") == [Indicator("/x", H1)]


# --------------------------------------------------------------------------- limits


def test_count_and_size_limits(tmp_path: Path) -> None:
    rows = "".join(f"/srv/f{i},{i:064x}\n" for i in range(iocfile.MAX_INDICATORS + 1))
    write(tmp_path, "big.csv", "path,sha256\n" + rows)
    with pytest.raises(ConfigError, match=f"more than {iocfile.MAX_INDICATORS} indicators"):
        read_ioc_file(tmp_path / "big.csv")
    write(tmp_path, "bigger.csv", "path,sha256\n/x," + "a" * iocfile.MAX_IOC_FILE_BYTES)
    with pytest.raises(ConfigError, match="the limit is"):
        read_ioc_file(tmp_path / "bigger.csv")


def test_binary_and_nul_are_refused_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "bin.csv").write_bytes(b"path,sha256\n/x,\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        read_ioc_file(tmp_path / "bin.csv")
    assert caught.value.key == "line 2"
    (tmp_path / "nul.csv").write_bytes(b"path,sha256\n/x\x00y," + H1.encode() + b"\n")
    with pytest.raises(ConfigError, match="NUL") as caught:
        read_ioc_file(tmp_path / "nul.csv")
    assert caught.value.key == "line 2"


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\n'
    write(tmp_path, "bomb.yaml", bomb)
    with pytest.raises(ConfigError, match="aliases"):
        read_ioc_file(tmp_path / "bomb.yaml")
