"""The pack model (fleetkit.ask.packs): kinds, interval, platform, strict validation.

The first tests are test_policy.py's pack-loader tests pointed at the new
module (the loader moved here); the rest cover what packs gained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fleetkit.ask import packs
from fleetkit.ask.packfields import (
    format_interval,
    parse_interval,
    parse_platform,
    platforms_include,
    unique_name,
    valid_name,
)
from fleetkit.ask.scope import NO_RULES, SqlRules
from fleetkit.foundation.settings import DEFAULT_DISABLED_TABLES
from fleetkit.foundation.status import ConfigError, ExitStatus
from tests.unit.test_policy import GOOD_PACK, REPO, SSH_PACK, TABLES_JSON, write

# --------------------------------------------------------------------------- moved from
# test_policy.py (same assertions, the loader's new home)


def test_a_good_pack_loads(tmp_path: Path) -> None:
    pack = packs.load_pack(write(tmp_path, "p.yaml", GOOD_PACK))
    assert [p.key for p in pack.policies] == ["demo/no_root_keys"]


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (("severity: medium", "severity: urgent"), "policies[0].severity", "must be one of"),
        (("meaning: fail_if_rows", "meaning: rows"), "policies[0].meaning", "must be one of"),
        (("    resolution: remove it\n", ""), "policies[0].resolution", "required"),
        (("    details: SELECT", "    detail: SELECT"), "policies[0].detail", "unknown key"),
        (("pack: demo", "pack: 'bad name'"), "pack", "invalid pack name"),
        (
            ("query: SELECT path FROM user_ssh_keys WHERE uid = '0'", "query: ''"),
            "policies[0].query",
            "non-empty string",
        ),
        (
            ("FROM user_ssh_keys WHERE uid = '0'\n    details", "FROM curl\n    details"),
            "policies[0].query",
            "denied table 'curl'",
        ),
        (("policies:\n", "policies: []\nx:\n"), "", "unknown key"),
    ],
)
def test_bad_packs_name_file_and_key(
    tmp_path: Path, change: tuple[str, str], key: str, message: str
) -> None:
    text = GOOD_PACK.replace(*change)
    assert text != GOOD_PACK
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as caught:
        packs.load_pack(path, SqlRules(DEFAULT_DISABLED_TABLES))
    assert caught.value.file == str(path)
    if key:
        assert caught.value.key == key
    assert message in str(caught.value)


def test_duplicate_policy_names_are_refused(tmp_path: Path) -> None:
    twice = GOOD_PACK + GOOD_PACK.split("policies:\n", 1)[1]
    with pytest.raises(ConfigError, match="duplicate policy name 'no_root_keys'"):
        packs.load_pack(write(tmp_path, "p.yaml", twice))
    one = write(tmp_path, "a.yaml", GOOD_PACK)
    other = write(tmp_path, "b.yaml", GOOD_PACK)
    with pytest.raises(ConfigError, match="also defined in"):
        packs.load_packs([one, other], NO_RULES)


def test_a_yaml_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        packs.load_pack(write(tmp_path, "p.yaml", "pack: x\n  bad: [\n"))


def test_shipped_packs_are_valid() -> None:
    shipped = sorted((REPO / "fleetkit" / "packs").glob("*.yaml"))
    loaded = packs.load_packs(shipped, SqlRules(DEFAULT_DISABLED_TABLES))
    names = [p.key for pack in loaded for p in pack.policies]
    assert "ssh-keys/ssh_private_keys_encrypted_ec" in names


@pytest.mark.skipif(not TABLES_JSON.exists(), reason="reference osquery-tables.json not present")
def test_shipped_pack_sql_uses_real_osquery_columns() -> None:
    """Every table.column the packs name exists in osquery's schema (reference data)."""
    schema = {
        table: {c["name"] for c in columns}
        for table, columns in json.loads(TABLES_JSON.read_text()).items()
    }
    for pack in packs.load_packs(sorted((REPO / "fleetkit" / "packs").glob("*.yaml")), NO_RULES):
        for statement in pack.statements:
            for table, column in re.findall(r"\b([a-z_]+)\.([a-z_]+)\b", statement.sql):
                where = f"{pack.name}/{statement.name}"
                assert table in schema, f"{where}: unknown table {table}"
                assert column in schema[table], f"{where}: unknown column {table}.{column}"


# --------------------------------------------------------------------------- kinds


def test_the_shipped_ssh_pack_loads_unchanged_as_a_policy_pack() -> None:
    pack = packs.load_pack(SSH_PACK, SqlRules(DEFAULT_DISABLED_TABLES))
    assert (pack.name, pack.kind, pack.interval, pack.platform) == (
        "ssh-keys",
        "policy",
        3600,
        ("any",),
    )
    assert pack.queries == ()
    assert [p.name for p in pack.policies] == [
        "ssh_private_keys_encrypted_ec",
        "ssh_private_keys_encrypted",
    ]
    # One run asks every statement once: main query, details (when different), unknown_if_rows.
    assert [s.name for s in pack.statements] == [
        "ssh_private_keys_encrypted_ec",
        "ssh_private_keys_encrypted_ec:details",
        "ssh_private_keys_encrypted_ec:unknown_if_rows",
        "ssh_private_keys_encrypted",
        "ssh_private_keys_encrypted:details",
    ]
    first = pack.policies[0]
    assert pack.statements[0].sql == first.query
    assert pack.statements[2].sql == first.unknown_if_rows


HUNT_PACK = """\
pack: webshells
kind: hunt
description: files that should not be there
interval: 15m
platform: linux, Darwin
queries:
  - name: php_in_uploads
    description: PHP files under upload directories
    severity: high
    resolution: quarantine the host
    query: SELECT path FROM file WHERE path LIKE '/var/www/%/uploads/%.php'
  - name: tmp_executables
    query: |
      SELECT path FROM file
      WHERE directory = '/tmp' AND mode LIKE '%7%'
"""

INVENTORY_PACK = """\
pack: basics
kind: inventory
interval: 1h30m
queries:
  - name: os
    description: the operating system
    query: SELECT name, version FROM os_version
"""


def test_a_hunt_pack_loads_with_its_schedule(tmp_path: Path) -> None:
    pack = packs.load_pack(write(tmp_path, "h.yaml", HUNT_PACK), SqlRules(DEFAULT_DISABLED_TABLES))
    assert (pack.kind, pack.interval, pack.platform, pack.policies) == (
        "hunt",
        900,
        ("darwin", "linux"),
        (),
    )
    first, second = pack.queries
    assert (first.key, first.severity, first.resolution) == (
        "webshells/php_in_uploads",
        "high",
        "quarantine the host",
    )
    assert (second.severity, second.description) == (None, "")
    assert second.query == "SELECT path FROM file\nWHERE directory = '/tmp' AND mode LIKE '%7%'"
    assert [(s.name, s.sql) for s in pack.statements] == [
        ("php_in_uploads", first.query),
        ("tmp_executables", second.query),
    ]
    assert pack.size == 2


def test_an_inventory_pack_loads(tmp_path: Path) -> None:
    pack = packs.load_pack(write(tmp_path, "i.yaml", INVENTORY_PACK))
    assert (pack.kind, pack.interval, pack.platform, pack.size) == ("inventory", 5400, ("any",), 1)
    assert pack.statements == (packs.Statement("os", "SELECT name, version FROM os_version"),)


def test_a_pack_written_as_json_loads(tmp_path: Path) -> None:
    text = json.dumps(
        {
            "pack": "j",
            "kind": "inventory",
            "queries": [{"name": "users", "query": "SELECT username FROM users"}],
        }
    )
    assert packs.load_pack(write(tmp_path, "j.yaml", text)).queries[0].name == "users"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (HUNT_PACK.replace("kind: hunt", "kind: alert"), "kind", "unknown kind 'alert'"),
        (HUNT_PACK.replace("interval: 15m", "interval: 5s"), "interval", "below the floor of 10s"),
        (HUNT_PACK.replace("interval: 15m", "interval: 60"), "interval", "give the unit"),
        (HUNT_PACK.replace("interval: 15m", "interval: 1x"), "interval", "expected a duration"),
        (HUNT_PACK.replace("interval: 15m", "interval: 31d"), "interval", "above the ceiling"),
        (HUNT_PACK.replace("interval: 15m", "interval: ''"), "interval", "expected a duration"),
        (HUNT_PACK.replace("linux, Darwin", "linux,beos"), "platform", "unknown platform 'beos'"),
        (HUNT_PACK.replace("platform: linux, Darwin", "platform: 3"), "platform", "expected"),
        (HUNT_PACK.replace("  - name: tmp_exec", "  - nme: tmp_exec"), "queries[1].nme", "unknown"),
        (HUNT_PACK.replace("name: tmp_executables", "name: tmp/x"), "queries[1].name", "invalid"),
        (
            HUNT_PACK.replace("name: tmp_executables", "name: php_in_uploads"),
            "queries[1].name",
            "duplicate query name 'php_in_uploads'",
        ),
        (HUNT_PACK.replace("severity: high", "severity: dire"), "queries[0].severity", "one of"),
        (
            HUNT_PACK.replace("FROM file\n", "FROM shell_history\n"),
            "queries[1].query",
            "denied table 'shell_history'",
        ),
        (HUNT_PACK.replace("queries:", "policies:"), "policies", "a hunt pack lists `queries`"),
        (INVENTORY_PACK.replace("kind: inventory\n", ""), "queries", "a policy pack lists"),
        (INVENTORY_PACK + "    severity: low\n", "queries[0].severity", "unknown key"),
        (INVENTORY_PACK.replace("  - name: os", "  -"), "queries[0].name", "required"),
        ("pack: x\nkind: inventory\nqueries:\n  -\n", "queries[0]", "empty query"),
        ("pack: x\nkind: inventory\nqueries: [SELECT 1]\n", "queries[0]", "expected a mapping"),
        ("pack: x\nkind: hunt\nqueries: []\n", "queries", "non-empty list of queries"),
        (
            '{"platform": "linux", "queries": {"a": {"query": "SELECT 1"}}}',
            "queries",
            "packs.import",
        ),
        ("pack: x\nkind: hunt\nqueries: [\n", None, "invalid YAML at line 4"),
        ('{"pack": "x", "kind": "hunt", "queries": [}', None, "invalid YAML at line 1"),
    ],
)
def test_bad_packs_of_every_kind_name_file_and_key(
    tmp_path: Path, text: str, key: str | None, message: str
) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as caught:
        packs.load_pack(path, SqlRules(DEFAULT_DISABLED_TABLES))
    assert caught.value.file == str(path)
    assert caught.value.key == key
    assert message in str(caught.value)
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


def test_size_limits_of_a_pack(tmp_path: Path) -> None:
    many = "pack: big\nkind: inventory\nqueries:\n" + "".join(
        f"  - {{name: q{i}, query: SELECT {i}}}\n" for i in range(packs.MAX_ITEMS + 1)
    )
    with pytest.raises(ConfigError, match="at most 256") as caught:
        packs.load_pack(write(tmp_path, "big.yaml", many))
    assert caught.value.key == "queries"
    long_sql = "SELECT 1" + " " * packs.MAX_SQL_CHARS
    text = INVENTORY_PACK.replace(
        "query: SELECT name, version FROM os_version", f"query: '{long_sql}x'"
    )
    with pytest.raises(ConfigError, match="characters long") as caught:
        packs.load_pack(write(tmp_path, "long.yaml", text))
    assert caught.value.key == "queries[0].query"
    sql = "SELECT 1" + " " * (packs.MAX_SQL_CHARS - 100) + "x"
    heavy = "pack: heavy\nkind: hunt\nqueries:\n" + "".join(
        f"  - {{name: q{i}, query: '{sql}'}}\n"
        for i in range(packs.MAX_PACK_SQL_CHARS // len(sql) + 1)
    )
    with pytest.raises(ConfigError, match="characters in all: at most 262144") as caught:
        packs.load_pack(write(tmp_path, "heavy.yaml", heavy))
    assert caught.value.key == "queries"


def test_pack_names_are_unique_across_files(tmp_path: Path) -> None:
    one = write(tmp_path, "a.yaml", INVENTORY_PACK)
    two = write(tmp_path, "b.yaml", INVENTORY_PACK.replace("name: os", "name: other"))
    with pytest.raises(ConfigError, match="pack 'basics' is also defined in") as caught:
        packs.load_packs([one, two], NO_RULES)
    assert (caught.value.file, caught.value.key) == (str(two), "pack")


def test_pack_files_beside_the_settings_win_over_the_shipped_ones(tmp_path: Path) -> None:
    assert packs.find_pack_files(str(tmp_path)) == [packs.SHIPPED_PACKS_DIR / "ssh-keys.yaml"]
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "notes.txt").write_text("not a pack")
    assert packs.find_pack_files(str(tmp_path))[0].parent == packs.SHIPPED_PACKS_DIR
    mine = write(tmp_path / "packs", "mine.yml", INVENTORY_PACK)
    assert packs.find_pack_files(str(tmp_path)) == [mine]
    assert packs.default_pack_files(str(tmp_path)) == [mine]


# --------------------------------------------------------------------------- fields


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10s", 10), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("1d", 86400)],
)
def test_intervals(text: str, seconds: int) -> None:
    assert parse_interval(text, file="f", key="interval") == seconds
    assert format_interval(seconds) == text


@pytest.mark.parametrize("value", ["9s", "0s", "30m1h", "1 h", "h", "-1m", True, None, 3.5])
def test_bad_intervals_are_refused(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_interval(value, file="f", key="interval")
    assert caught.value.key == "interval"


def test_platforms() -> None:
    assert parse_platform("Linux, darwin,linux", file="f", key="platform") == ("darwin", "linux")
    assert parse_platform("all", file="f", key="platform") == ("any",)
    assert parse_platform("posix,windows", file="f", key="platform") == ("posix", "windows")
    assert platforms_include(("posix",), "linux")
    assert platforms_include(("any",), "linux")
    assert not platforms_include(("darwin", "windows"), "linux")
    assert not platforms_include(("posix",), "windows")


def test_names_made_valid_and_unique() -> None:
    assert valid_name("fine-name_1.x") == "fine-name_1.x"
    assert valid_name("a/b 'c'") == "a_b_c_"
    assert valid_name("../etc") == "etc"
    assert valid_name("é", fallback="query") == "query"
    assert len(valid_name("x" * 200)) == 63
    assert unique_name("a", {"a", "a_2"}) == "a_3"
    assert unique_name("x" * 63, {"x" * 63}) == "x" * 61 + "_2"


def test_platform_and_fingerprint_of_a_pack(tmp_path: Path) -> None:
    hunt = packs.load_pack(write(tmp_path, "h.yaml", HUNT_PACK))
    assert hunt.runs_on("linux") and hunt.runs_on("darwin") and not hunt.runs_on("windows")
    assert packs.load_pack(SSH_PACK).runs_on("windows")  # no platform given: any
    # The fingerprint follows what a run asks, not descriptions or the schedule.
    same = HUNT_PACK.replace("interval: 15m", "interval: 1h").replace("files that", "files")
    assert packs.load_pack(write(tmp_path, "s.yaml", same)).fingerprint == hunt.fingerprint
    other = HUNT_PACK.replace("'/tmp'", "'/var/tmp'")
    assert packs.load_pack(write(tmp_path, "o.yaml", other)).fingerprint != hunt.fingerprint
    renamed = HUNT_PACK.replace("tmp_executables", "tmp_files")
    assert packs.load_pack(write(tmp_path, "r.yaml", renamed)).fingerprint != hunt.fingerprint
    as_inventory = HUNT_PACK.replace("kind: hunt", "kind: inventory").replace(
        "    severity: high\n    resolution: quarantine the host\n", ""
    )
    loaded = packs.load_pack(write(tmp_path, "i.yaml", as_inventory))
    assert loaded.statements == hunt.statements
    assert loaded.fingerprint != hunt.fingerprint
