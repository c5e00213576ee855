"""``packs import``: an osquery pack with every oddity -> a fleetkit pack and a full report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from fleetkit.ask.osquerypack import MAX_PACK_BYTES
from fleetkit.ask.packs import load_pack
from fleetkit.ask.scope import NO_RULES, SqlRules
from fleetkit.cli import run_command
from fleetkit.commands import packs as packs_command
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.settings import DEFAULT_DISABLED_TABLES
from fleetkit.foundation.status import ExitStatus
from fleetkit.runtime import Runtime

#: An osquery pack as osquery's own packs are written, with every oddity the importer reports.
ODD_PACK = r"""// Incident response, osquery format.
  # indented comments are comments too
{
  "platform": "posix",
  "version": "1.4.5",
  "discovery": ["SELECT pid FROM processes WHERE name = 'sshd';"],
  "shard": 10,
  "owner": "secops",
  "queries": {
    "crontab": {
      "query": "SELECT * FROM crontab;",
      "interval": "3600",
      "version": "1.4.5",
      "description": "Scheduled jobs.",
      "value": "Malware persists here."
    },
    "logged_in/users": {"query": "SELECT * FROM logged_in_users;", "interval": 600,
                        "snapshot": true},
    "crontab": {"query": "SELECT command FROM crontab;", "interval": 86400},
    "crontab": {"query": "SELECT command FROM crontab;", "interval": 86400},
    "launchd": {"query": "SELECT * FROM launchd;", "interval": "3600", "platform": "darwin"},
    "drivers": {"query": "SELECT * FROM drivers;", "interval": 3600, "platform": "windows"},
    "it's \"quoted\"": {"query": "SELECT * FROM users;", "interval": 3600, "removed": false,
                        "colour": "red"},
    "history": {"query": "SELECT * FROM shell_history;", "interval": 3600},
    "empty": {"interval": 3600},
    "broken": ["SELECT 1"],
    "evil\u001b[2Jname": {"query": "SELECT 1;", "interval": "often", "interval": "7200"},
    "multi": {"query": "SELECT pid,\n  name FROM processes;", "interval": 3600,
              "platform": "Linux, windows"}
  }
}
"""

#: What the importer must make of it (as hunt), parsed.
EXPECTED = {
    "pack": "incident-response",
    "kind": "hunt",
    "description": "Imported from the osquery pack incident-response.conf",
    "interval": "10m",
    "platform": "linux",
    "queries": [
        {
            "name": "crontab",
            "description": "Scheduled jobs. Value: Malware persists here.",
            "query": "SELECT * FROM crontab;",
        },
        {"name": "logged_in_users", "query": "SELECT * FROM logged_in_users;"},
        {"name": "crontab_2", "query": "SELECT command FROM crontab;"},
        {"name": "it_s_quoted_", "query": "SELECT * FROM users;"},
        {"name": "evil_2Jname", "query": "SELECT 1;"},
        {"name": "multi", "query": "SELECT pid,\n  name FROM processes;"},
    ],
}

#: One report line (or distinctive parts of one line) per oddity.
EXPECTED_REPORT: list[str | tuple[str, ...]] = [
    "pack version '1.4.5' (minimum osquery version) dropped",
    "discovery queries dropped",
    "pack shard 10 dropped",
    "unknown top-level key 'owner' dropped",
    "query name 'crontab' is given again with a different definition: both kept",
    "query 'crontab' is defined again, identically: copy dropped",
    "query 'launchd' skipped: platform 'darwin' does not include linux",
    "query 'drivers' skipped: platform 'windows' does not include linux",
    "query 'it\\'s \"quoted\"': unknown key 'colour' dropped",
    ("query 'history' skipped: ", "denied table 'shell_history'"),
    "query 'empty' skipped: no query text",
    "query 'broken' skipped: expected an object",
    "query 'evil\\x1b[2Jname' has 'interval' more than once: the last one was used",
    "queries asked for intervals from 10m to 1d: the pack runs every 10m (the shortest",
    "query 'logged_in/users' renamed 'logged_in_users' (names hold letters, digits, . _ - only)",
    "query 'crontab' renamed 'crontab_2' (an earlier query has that name)",
    "query 'it\\'s \"quoted\"' renamed 'it_s_quoted_'",
    "query 'evil\\x1b[2Jname' renamed 'evil_2Jname'",
    "version dropped from 'crontab': the fleet runs the osquery version pinned in settings",
    "interval given as a string (read as seconds) in 'crontab' ('3600'), "
    "'evil\\x1b[2Jname' ('7200')",
    "snapshot true noted on 'logged_in/users'",
    "removed false noted on 'it\\'s \"quoted\"'",
    "pack incident-response (hunt, every 10m): 6 queries kept, 5 skipped; written to out.yaml",
]


def make_runtime(tmp_path: Path, settings: str | None = None) -> Runtime:
    if settings is not None:
        (tmp_path / "fleetkit.yaml").write_text(settings)
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd=str(tmp_path))
    return Runtime(env=env)


def text_of(stream: object) -> str:
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def run_import(
    tmp_path: Path, text: str | bytes, kind: str = "hunt", output: str = "out.yaml", **kw: str
) -> tuple[int, str, str]:
    source = tmp_path / "incident-response.conf"
    if isinstance(text, bytes):
        source.write_bytes(text)
    else:
        source.write_text(text)
    rt = make_runtime(tmp_path, kw.get("settings"))
    status = run_command(lambda r: packs_command.run_import(r, source.name, kind, output), rt)
    return status, text_of(rt.env.stdout), text_of(rt.env.stderr)


def test_an_odd_osquery_pack_is_converted_and_every_oddity_reported(tmp_path: Path) -> None:
    status, stdout, stderr = run_import(tmp_path, ODD_PACK)
    assert status == ExitStatus.SUCCESS, stderr
    assert stdout == ""
    written = (tmp_path / "out.yaml").read_text()
    assert yaml.safe_load(written) == EXPECTED
    for expected in EXPECTED_REPORT:
        parts = (expected,) if isinstance(expected, str) else expected
        assert any(all(p in line for p in parts) for line in stderr.splitlines()), expected
    assert "\x1b" not in stderr  # the hostile name is shown escaped, never obeyed
    assert "default denied tables" in stderr  # no fleetkit.yaml here: said so
    # The result is a fleetkit pack: it loads, as a hunt pack with the floor respected.
    pack = load_pack(tmp_path / "out.yaml", SqlRules(DEFAULT_DISABLED_TABLES))
    assert (pack.kind, pack.interval, len(pack.statements)) == ("hunt", 600, 6)
    # No temporary file left beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incident-response.conf", "out.yaml"]


def test_the_output_is_deterministic_and_goes_to_stdout_without_output(tmp_path: Path) -> None:
    status, first, _ = run_import(tmp_path, ODD_PACK, kind="inventory", output="")
    assert status == ExitStatus.SUCCESS
    _, second, _ = run_import(tmp_path, ODD_PACK, kind="inventory", output="")
    assert first == second
    assert first.startswith("# Imported from an osquery pack by `invoke packs.import`")
    assert yaml.safe_load(first) == {**EXPECTED, "kind": "inventory"}
    assert not (tmp_path / "out.yaml").exists()


def test_a_clean_pack_converts_to_exactly_this_text(tmp_path: Path) -> None:
    clean = (
        '{"queries": {"users": {"query": "SELECT username FROM users;", "interval": 3600,'
        ' "description": "Local users."}}}'
    )
    status, stdout, stderr = run_import(tmp_path, clean, kind="inventory", output="")
    assert status == ExitStatus.SUCCESS
    assert stdout == (
        "# Imported from an osquery pack by `invoke packs.import` "
        "(kind inventory: rows are recorded, never judged).\n"
        "# The import report listed everything that was renamed, dropped or skipped.\n"
        "pack: incident-response\n"
        "kind: inventory\n"
        "description: Imported from the osquery pack incident-response.conf\n"
        "interval: 1h\n"
        "platform: linux\n"
        "queries:\n"
        "  - name: users\n"
        "    description: Local users.\n"
        "    query: |-\n"
        "      SELECT username FROM users;\n"
    )
    assert "nothing odd met" in stderr


def test_settings_decide_the_denied_tables(tmp_path: Path) -> None:
    settings = (
        "inventory: inventory\n"
        "osquery:\n"
        f"  package: {{source: pkgs/osquery.deb, sha256: '{'0' * 64}'}}\n"
        "  disabled_tables: [users]\n"
        "bacalhau:\n"
        f"  package: {{source: pkgs/bacalhau.tgz, sha256: '{'0' * 64}'}}\n"
        "  node_token: {env: FK_TEST_TOKEN}\n"
    )
    status, _, stderr = run_import(tmp_path, ODD_PACK, settings=settings)
    assert status == ExitStatus.SUCCESS, stderr
    assert "query 'it\\'s \"quoted\"' skipped: " in stderr and "denied table 'users'" in stderr
    # shell_history is not denied by these settings: kept.
    names = [q["name"] for q in yaml.safe_load((tmp_path / "out.yaml").read_text())["queries"]]
    assert "history" in names
    assert "default denied tables" not in stderr


def test_kind_policy_is_refused_with_how_to_write_one(tmp_path: Path) -> None:
    status, stdout, stderr = run_import(tmp_path, ODD_PACK, kind="policy")
    assert status == ExitStatus.BAD_INPUT
    assert "--kind policy is refused" in stderr
    assert "pass condition is never inferred" in stderr
    assert "meaning: fail_if_rows" in stderr and "pass_if_rows" in stderr
    assert stdout == "" and not (tmp_path / "out.yaml").exists()
    status, _, stderr = run_import(tmp_path, ODD_PACK, kind="alerts")
    assert status == ExitStatus.BAD_INPUT
    assert "--kind must be hunt or inventory" in stderr


def test_an_existing_output_is_replaced_whole_or_left_alone(tmp_path: Path) -> None:
    (tmp_path / "out.yaml").write_text("old pack\n")
    status, _, _ = run_import(tmp_path, "{ not json")
    assert status == ExitStatus.BAD_INPUT
    assert (tmp_path / "out.yaml").read_text() == "old pack\n"
    status, _, _ = run_import(tmp_path, ODD_PACK)
    assert status == ExitStatus.SUCCESS
    assert yaml.safe_load((tmp_path / "out.yaml").read_text()) == EXPECTED


def test_the_output_may_not_be_the_input(tmp_path: Path) -> None:
    status, _, stderr = run_import(tmp_path, ODD_PACK, output="incident-response.conf")
    assert status == ExitStatus.BAD_INPUT
    assert "--output is the file being imported" in stderr
    assert (tmp_path / "incident-response.conf").read_text() == ODD_PACK


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "queries": {\n    "a": {"query": "SELECT 1",}\n  }\n}', "line 3, column"),
        ('["queries"]', 'expected a JSON object with a "queries" object'),
        ('{"platform": "linux"}', "queries: expected an object of named queries"),
        ('{"queries": {}}', "queries: the pack has no queries"),
        ('{"queries": {"a": {"query": "SELECT 1", "interval": NaN}}}', "NaN is not a JSON"),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
        (
            '{"queries": {"a": {"query": "SELECT 1;", "platform": "windows"}}}',
            "nothing to import: every query was skipped",
        ),
        (
            '{"platform": "darwin", "queries": {"a": {"query": "SELECT 1;"}}}',
            "nothing to import",
        ),
        (
            '{"queries": {'
            + ",".join(f'"q{i}": {{"query": "SELECT {i}"}}' for i in range(300))
            + "}}",
            "300 queries: at most 256 per pack",
        ),
    ],
)
def test_unusable_osquery_packs_exit_2_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    status, stdout, stderr = run_import(tmp_path, text)
    assert status == ExitStatus.BAD_INPUT, stderr
    assert "incident-response.conf" in stderr
    assert message in stderr
    assert stdout == "" and not (tmp_path / "out.yaml").exists()
    assert "Traceback" not in stderr


def test_skipped_queries_are_named_even_when_nothing_is_left(tmp_path: Path) -> None:
    text = '{"platform": "darwin", "queries": {"a": {"query": "SELECT 1;"}}}'
    _, _, stderr = run_import(tmp_path, text)
    assert "query 'a' skipped: the pack is for 'darwin'" in stderr


def test_input_is_bounded(tmp_path: Path) -> None:
    big = b'{"queries": {}, "pad": "' + b"x" * MAX_PACK_BYTES + b'"}'
    status, _, stderr = run_import(tmp_path, big)
    assert status == ExitStatus.BAD_INPUT
    assert "larger than 256 KiB" in stderr
    status, _, stderr = run_import(tmp_path, b'{"queries": {"\xff": 1}}')
    assert status == ExitStatus.BAD_INPUT
    assert "not UTF-8" in stderr
    status, _, stderr = run_import(tmp_path, b"\xef\xbb\xbf" + ODD_PACK.encode())
    assert status == ExitStatus.SUCCESS  # a byte-order mark is not an error


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    status = run_command(lambda r: packs_command.run_import(r, "nope.conf", "hunt", ""), rt)
    assert status == ExitStatus.BAD_INPUT
    assert "nope.conf: file not found" in text_of(rt.env.stderr)


HOSTILE_TEXTS = [
    "SELECT 'a: b' AS x -- # not a comment in YAML",
    "SELECT '\x1b[2J' AS cls",
    "SELECT '\u202eevil\u2028line' AS bidi",
    "SELECT 1;\tSELECT 2;",
    "SELECT \"quoted\" FROM users WHERE x = '- item'",
    "SELECT 1 \nFROM   users   \n\n  WHERE 1",
    "SELECT '\\' AS backslash, 'é€' AS unicode",
]


@pytest.mark.parametrize("sql", HOSTILE_TEXTS)
def test_any_sql_and_description_round_trip_exactly(tmp_path: Path, sql: str) -> None:
    """What the pack says is byte for byte what osquery's pack said (after trimming ends)."""
    source = {"queries": {"q": {"query": sql, "description": sql, "interval": 60}}}
    status, stdout, stderr = run_import(tmp_path, json.dumps(source), output="")
    assert status == ExitStatus.SUCCESS, stderr
    assert all(ch == "\n" or (" " <= ch <= "~") for ch in stdout)  # escaped: safe to cat
    (tmp_path / "p.yaml").write_text(stdout)
    pack = load_pack(tmp_path / "p.yaml", NO_RULES)
    assert pack.queries[0].query == sql.strip()
    assert pack.queries[0].description == sql.strip()


def test_an_output_in_a_missing_directory_is_bad_input_naming_it(tmp_path: Path) -> None:
    status, stdout, stderr = run_import(tmp_path, ODD_PACK, output="missing/new.yaml")
    assert status == ExitStatus.BAD_INPUT
    assert "missing" in stderr and "does not exist" in stderr
    assert "internal error" not in stderr and stdout == ""
