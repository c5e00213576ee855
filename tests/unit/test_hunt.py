"""Indicator hunts: validation, safe SQL (checked by running it in SQLite), limits, exit codes."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from fleetkit.ask import hunts
from fleetkit.cli import run_command
from fleetkit.commands import hunt
from fleetkit.foundation import iocfile
from fleetkit.foundation.sqlguard import TokenKind, tokenize
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from tests.unit.test_policy import ScriptedFleet, err, make_runtime, out

H1 = "ef59adcbcf15a19cd742cfc3f3d45da135684eab56e042726a4fd4e4b77e94a6"
H2 = "a" * 64
H3 = "b" * 64


def hash_table(files: dict[str, str]) -> sqlite3.Connection:
    """A stand-in for osquery's ``hash`` table: path -> sha256."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE hash (path TEXT, directory TEXT, sha256 TEXT)")
    db.executemany(
        "INSERT INTO hash VALUES (?, ?, ?)",
        [(p, p.rsplit("/", 1)[0], h) for p, h in files.items()],
    )
    return db


def found(indicators: list[iocfile.Indicator], files: dict[str, str]) -> set[tuple[str, str]]:
    db = hash_table(files)
    batches = hunts.build_batches(hunts.plan_targets(indicators, hunt.DEFAULT_HASH_SCOPE))
    hits: set[tuple[str, str]] = set()
    for sql in batches:
        hits.update(db.execute(sql).fetchall())
    return hits


@pytest.mark.parametrize(
    "path",
    [
        "/var/www/it's/functions.php",
        "/var/www/''/x",
        "/srv/a'; DROP TABLE hash; --/f",
        "/srv/$(touch /tmp/canary)/`id`",
        '/srv/"quoted"/f',
        "/srv/back\\slash'/f",
        "/srv/new\nline",
        "/srv/ünïcødé/✓",
        "/srv/100%_sure/f",
        "/srv/[brackets]/f?",
    ],
)
def test_hostile_exact_paths_are_quoted_and_match_exactly(path: str) -> None:
    files = {path: H1, path + "x": H1, "/srv/other": H1}
    assert found([iocfile.Indicator(path, H1)], files) == {(path, H1)}
    # the literal is one SQL string token: nothing of the path becomes SQL
    (sql,) = hunts.build_batches(hunts.plan_targets([iocfile.Indicator(path, H1)], ()))
    strings = [t.text for t in tokenize(sql) if t.kind is TokenKind.STRING]
    assert path in strings


def test_a_glob_matches_one_level_and_literal_parts_exactly() -> None:
    files = {
        "/var/www/site1/functions.php": H1,
        "/var/www/site2/functions.php": H2,  # other content: legit file
        "/var/www/site3/Functions.php": H1,  # LIKE alone is case-insensitive: GLOB keeps it out
        "/var/www/site4/functionsXphp": H1,
        "/var/www_old/site/functions.php": H1,
    }
    assert found([iocfile.Indicator("/var/www/*/functions.php", H1)], files) == {
        ("/var/www/site1/functions.php", H1)
    }


def test_percent_and_underscore_in_a_glob_are_literal() -> None:
    files = {"/srv/50%_off/a/x": H1, "/srv/50XYoff/a/x": H1, "/srv/50%Zoff/a/x": H1}
    assert found([iocfile.Indicator("/srv/50%_off/*/x", H1)], files) == {("/srv/50%_off/a/x", H1)}


def test_globs_translate_to_osquery_like_patterns() -> None:
    where = hunts.Location("/var/www/**/wp-*.php").where()
    assert "path LIKE '/var/www/%%/wp-%.php'" in where
    assert "path GLOB '/var/www/*/wp-*.php'" in where


def test_hash_only_looks_in_the_scope_and_path_only_reports_presence() -> None:
    files = {"/tmp/x/y/evil": H1, "/etc/evil": H1, "/opt/tool/bin": H2, "/var/www/a": H3}
    hits = found([iocfile.Indicator(None, H1), iocfile.Indicator("/opt/tool/bin", None)], files)
    assert hits == {("/tmp/x/y/evil", H1), ("/opt/tool/bin", H2)}


def test_many_indicators_are_batched_under_the_size_limit() -> None:
    indicators = [iocfile.Indicator(f"/srv/f{i:05d}", f"{i:064x}") for i in range(3000)]
    indicators.append(iocfile.Indicator(None, H1))
    batches = hunts.build_batches(hunts.plan_targets(indicators, hunt.DEFAULT_HASH_SCOPE))
    assert len(batches) > 1
    assert all(len(b.encode()) <= hunts.MAX_SQL_BYTES for b in batches)
    files = {"/srv/f02999": f"{2999:064x}", "/srv/f00001": H2, "/home/u/evil": H1}
    db = hash_table(files)
    hits = {row for sql in batches for row in db.execute(sql).fetchall()}
    assert hits == {("/srv/f02999", f"{2999:064x}"), ("/home/u/evil", H1)}


@pytest.mark.parametrize(
    ("sha", "message"),
    [
        ("xyz", "64 hexadecimal"),
        ("g" * 64, "64 hexadecimal"),
        ("a" * 63, "64 hexadecimal"),
        ("a" * 65, "64 hexadecimal"),
        ("a" * 63 + "'", "64 hexadecimal"),
    ],
)
def test_bad_hashes_are_refused(sha: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        iocfile.gather_indicators(None, sha, None, "/")


def test_hashes_are_lower_cased() -> None:
    (indicator,) = iocfile.gather_indicators("/x", H1.upper(), None, "/")
    assert indicator.sha256 == H1


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("relative/path", "absolute"),
        ("/a\x00b", "NUL"),
        ("/var/www/*/x?.php", "only \\* and \\*\\*"),
        ("/var/*/[ab]", "only \\* and \\*\\*"),
        ("/" + "a" * 5000, "longer than"),
    ],
)
def test_bad_paths_are_refused(path: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        iocfile.gather_indicators(path, H1, None, "/")
    assert caught.value.key == "--path"


def test_nothing_to_hunt_is_bad_input() -> None:
    with pytest.raises(UsageError):
        iocfile.gather_indicators(None, None, None, "/")


def test_scope_can_be_set_from_the_environment() -> None:
    assert hunt.hash_scope({hunt.SCOPE_ENV: "/data/**, /mnt/*"}) == ("/data/**", "/mnt/*")
    assert hunt.hash_scope({}) == hunt.DEFAULT_HASH_SCOPE
    with pytest.raises(ConfigError):
        hunt.hash_scope({hunt.SCOPE_ENV: "data"})


# --------------------------------------------------------------------------- the command

PLANTED = "/var/www/htdocs/wp-content/themes/goldenrod/functions.php"


def run_hunt(tmp_path: Path, fleet: ScriptedFleet, fmt: str = "json", **kw: str | None):  # type: ignore[no-untyped-def]
    rt = make_runtime(tmp_path)
    status = run_command(
        lambda r: hunt.run(
            r,
            path=kw.get("path", PLANTED),
            sha256=kw.get("sha256", H1),
            ioc_file=kw.get("ioc_file"),
            hosts="",
            select="",
            via="ssh",
            output_format=fmt,
            ask=fleet,
        ),
        rt,
    )
    return rt, status


def test_found_hosts_are_listed_with_node_and_hash_exit_3(tmp_path: Path) -> None:
    hit = [{"path": PLANTED, "sha256": H1}]
    fleet = ScriptedFleet({"FROM hash": {"node-1": hit, "node-2": [], "node-3": hit}})
    rt, status = run_hunt(tmp_path, fleet)
    assert status == ExitStatus.FINDINGS
    assert json.loads(out(rt)) == [
        {"hostname": "node-1", "nodeID": "node-1", "path": PLANTED, "sha256": H1},
        {"hostname": "node-3", "nodeID": "node-3", "path": PLANTED, "sha256": H1},
    ]
    assert "FOUND on 2 host(s): node-1, node-3" in err(rt)


def test_clean_is_0_and_unanswered_is_1(tmp_path: Path) -> None:
    _, status = run_hunt(tmp_path, ScriptedFleet({"FROM hash": {"node-1": [], "node-2": []}}))
    assert status == ExitStatus.SUCCESS
    rt, status = run_hunt(tmp_path, ScriptedFleet({"FROM hash": {"node-1": [], "node-2": None}}))
    assert status == ExitStatus.FAILURE
    assert "NOT proven clean" in err(rt)
    assert "node-2" in err(rt)


def test_csv_output(tmp_path: Path) -> None:
    hit = [{"path": PLANTED, "sha256": H1}]
    rt, _ = run_hunt(tmp_path, ScriptedFleet({"FROM hash": {"node-1": hit}}), "csv")
    assert list(csv.DictReader(io.StringIO(out(rt)))) == [
        {"hostname": "node-1", "nodeID": "node-1", "path": PLANTED, "sha256": H1}
    ]


def test_hostile_input_runs_nothing(tmp_path: Path) -> None:
    fleet = ScriptedFleet({"FROM hash": {"node-1": []}})
    for bad in ({"sha256": "not-hex"}, {"path": "relative"}, {"path": "/x\x00"}):
        rt, status = run_hunt(tmp_path, fleet, **bad)
        assert status == ExitStatus.BAD_INPUT, bad
        assert "Traceback" not in err(rt)
    assert fleet.requests == []


def test_node_text_is_escaped_for_people_and_exact_for_scripts(tmp_path: Path) -> None:
    evil = PLANTED + "\x1b]0;owned\x07"
    hit = [{"path": evil, "sha256": H1}]
    fleet = ScriptedFleet({"FROM hash": {"node-1": hit, "node-2": "Error: \x1b[2Jgone"}})
    rt, status = run_hunt(tmp_path, fleet, "table")
    assert status == ExitStatus.FINDINGS
    assert "\x1b" not in out(rt) + err(rt)
    assert "\\x1b]0;owned\\x07" in out(rt)
    assert "Error: \\x1b[2Jgone" in err(rt)
    rt, _ = run_hunt(tmp_path, fleet, "json")
    assert json.loads(out(rt))[0]["path"] == evil
