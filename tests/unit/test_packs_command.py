"""``packs list`` and ``packs check``: what is found, what is broken (file and key), exit codes."""

from __future__ import annotations

import io
from pathlib import Path

from fleetkit.cli import run_command
from fleetkit.commands import packs as packs_command
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.status import ExitStatus
from fleetkit.runtime import Runtime
from tests.unit.test_packs import GOOD_PACK

SETTINGS = f"""\
inventory: inventory
osquery:
  package: {{source: pkgs/osquery.deb, sha256: "{"0" * 64}"}}
  disabled_tables: [curl, users]
bacalhau:
  package: {{source: pkgs/bacalhau.tgz, sha256: "{"0" * 64}"}}
  node_token: {{env: FK_TEST_TOKEN}}
"""

HUNT = """\
pack: webshells
kind: hunt
interval: 15m
platform: linux
queries:
  - {name: php_in_uploads, query: "SELECT path FROM file WHERE path LIKE '/srv/%.php'"}
  - {name: tmp_exec, query: "SELECT path FROM file WHERE directory = '/tmp'"}
"""
INVENTORY = """\
pack: basics
kind: inventory
interval: 1d
platform: posix,windows
queries:
  - {name: os, query: SELECT name FROM os_version}
"""
POLICY = GOOD_PACK.replace("pack: demo", "pack: root-keys")


def make_runtime(tmp_path: Path, *, settings: bool = True, **packs: str) -> Runtime:
    if settings:
        (tmp_path / "fleetkit.yaml").write_text(SETTINGS)
    if packs:
        (tmp_path / "packs").mkdir()
        for name, text in packs.items():
            (tmp_path / "packs" / f"{name}.yaml").write_text(text)
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ={"FK_TEST_TOKEN": "t"},
        cwd=str(tmp_path),
    )
    return Runtime(env=env)


def output(rt: Runtime) -> tuple[str, str]:
    assert isinstance(rt.env.stdout, io.StringIO) and isinstance(rt.env.stderr, io.StringIO)
    return rt.env.stdout.getvalue(), rt.env.stderr.getvalue()


def test_list_shows_every_pack_beside_the_settings(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, a_hunt=HUNT, b_inventory=INVENTORY, c_policy=POLICY)
    status = run_command(lambda r: packs_command.run_list(r), rt)
    stdout, stderr = output(rt)
    assert status == ExitStatus.SUCCESS, stderr
    assert stdout == (
        "PACK       KIND       INTERVAL  PLATFORM       QUERIES  FILE\n"
        "webshells  hunt       15m       linux          2        packs/a_hunt.yaml\n"
        "basics     inventory  1d        posix,windows  1        packs/b_inventory.yaml\n"
        "root-keys  policy     1h        any            1        packs/c_policy.yaml\n"
    )
    assert stderr == ""


def test_list_without_settings_shows_the_shipped_packs(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, settings=False)
    status = run_command(lambda r: packs_command.run_list(r), rt)
    stdout, stderr = output(rt)
    assert status == ExitStatus.SUCCESS
    assert stdout.splitlines()[1].split() == [
        "ssh-keys",
        "policy",
        "1h",
        "any",
        "2",
        "(shipped)",
        "ssh-keys.yaml",
    ]
    assert "no settings file" in stderr and "default denied tables" in stderr


def test_an_explicit_settings_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, settings=False)
    rt.settings_path = "elsewhere.yaml"
    status = run_command(lambda r: packs_command.run_check(r), rt)
    assert status == ExitStatus.BAD_INPUT
    assert "elsewhere.yaml: file not found" in output(rt)[1]


def test_check_passes_good_packs(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, a_hunt=HUNT, b_inventory=INVENTORY, c_policy=POLICY)
    status = run_command(lambda r: packs_command.run_check(r), rt)
    stdout, stderr = output(rt)
    assert status == ExitStatus.SUCCESS
    assert stdout.splitlines()[1:] == [
        "webshells  ok      2                 packs/a_hunt.yaml",
        "basics     ok      1                 packs/b_inventory.yaml",
        "root-keys  ok      2                 packs/c_policy.yaml",
    ]
    assert stderr == "packs check: 3 pack(s), all valid (exit 0)\n"


def test_check_names_each_broken_pack_and_key(tmp_path: Path) -> None:
    rt = make_runtime(
        tmp_path,
        a_hunt=HUNT.replace("interval: 15m", "interval: 2s"),
        b_inventory=INVENTORY,
        c_policy=POLICY.replace("    meaning: fail_if_rows\n", ""),
        d_denied=INVENTORY.replace("pack: basics", "pack: who").replace("os_version", "users"),
        e_dupe=INVENTORY,
        f_kind=HUNT.replace("kind: hunt", "kind: alert").replace("webshells", "other"),
    )
    status = run_command(lambda r: packs_command.run_check(r), rt)
    stdout, stderr = output(rt)
    assert status == ExitStatus.BAD_INPUT
    lines = stderr.splitlines()
    folder = tmp_path / "packs"
    assert f"{folder}/a_hunt.yaml: interval: interval 2s is below the floor" in lines[0]
    assert lines[1] == f"broken pack: {folder}/c_policy.yaml: policies[0].meaning: required"
    assert f"{folder}/d_denied.yaml: queries[0].query: " in lines[2]
    assert "denied table 'users'" in lines[2]
    assert lines[3].startswith(f"broken pack: {folder}/e_dupe.yaml: pack: pack 'basics' is also")
    assert f"{folder}/f_kind.yaml: kind: unknown kind 'alert'" in lines[4]
    assert lines[5] == (
        "packs check: 5 of 6 pack(s) broken: packs/a_hunt.yaml, packs/c_policy.yaml, "
        "packs/d_denied.yaml, packs/e_dupe.yaml, packs/f_kind.yaml (exit 2)"
    )
    assert [line.split()[:3] for line in stdout.splitlines()[1:]] == [
        ["a_hunt", "broken", "interval"],
        ["basics", "ok", "1"],
        ["c_policy", "broken", "policies[0].meaning"],
        ["d_denied", "broken", "queries[0].query"],
        ["e_dupe", "broken", "pack"],
        ["f_kind", "broken", "kind"],
    ]
    # list shows the same packs, the broken ones marked, and exits 2 as well.
    rt = make_runtime(tmp_path / "packs" / "..", settings=False)
    status = run_command(lambda r: packs_command.run_list(r, packs=["packs"]), rt)
    stdout, stderr = output(rt)
    assert status == ExitStatus.BAD_INPUT
    assert "a_hunt    (broken)" in stdout and "basics    inventory" in stdout
    assert stderr.count("broken pack:") == 5


def test_check_takes_files_and_directories_once_each(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, a_hunt=HUNT)
    (tmp_path / "extra.yaml").write_text(INVENTORY)
    status = run_command(
        lambda r: packs_command.run_check(
            r, packs=["packs", "extra.yaml", "packs/a_hunt.yaml", "./extra.yaml"]
        ),
        rt,
    )
    stdout, stderr = output(rt)
    assert status == ExitStatus.SUCCESS, stderr
    assert [line.split()[0] for line in stdout.splitlines()[1:]] == ["webshells", "basics"]


def test_a_missing_pack_file_is_broken_not_a_crash(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    status = run_command(lambda r: packs_command.run_check(r, packs=["nope.yaml"]), rt)
    stdout, stderr = output(rt)
    assert status == ExitStatus.BAD_INPUT
    assert "nope.yaml: file not found" in stderr
    assert "nope  broken  (file)" in stdout


def test_hostile_file_names_and_values_are_escaped(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, **{"evil\x1b[2J": "pack: 'x\x1b[31m'\nkind: hunt\n"})
    status = run_command(lambda r: packs_command.run_check(r), rt)
    stdout, stderr = output(rt)
    assert status == ExitStatus.BAD_INPUT
    assert "\x1b" not in stdout and "\x1b" not in stderr
    assert "evil\\x1b[2J" in stdout and "evil\\x1b[2J" in stderr
