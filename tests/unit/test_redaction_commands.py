"""``query.redact_columns`` through the commands: every command that sends SQL refuses one
that would carry a redacted column out under another name (exit 2, naming the column),
before anything is contacted -- query, policy, hunt, the watch, ``packs check`` and
``packs import``. (The rule itself is tested in test_sqlguard_redaction.py.)

Each case runs the real Invoke task from argv, as a user types it, with an
injected runtime; the orchestrator URL points at a closed port, so a command
that did not refuse would fail with exit 1 instead of hanging.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser import Parser, ParserContext

import fleetkit.cli as cli
from fleetkit.foundation.environment import Environment
from fleetkit.runtime import Runtime
from tests.unit.test_ask_engine import _closed_port as closed_port
from tests.unit.test_policy import INVENTORY
from tests.unit.test_policy import SETTINGS as POLICY_SETTINGS

SETTINGS = f"""\
{POLICY_SETTINGS % {"sha": "0" * 64}}query:
  redact_columns: [cmdline, path]
watch:
  status_file: watch-status.json
"""
#: Reads the redacted ``cmdline`` under another name.
ALIASED = "SELECT pid, cmdline AS args FROM processes"
POLICY_PACK = f"""\
pack: sneaky
policies:
  - name: args
    description: d
    severity: low
    meaning: fail_if_rows
    query: SELECT pid FROM processes WHERE name = 'sshd'
    details: {ALIASED}
    resolution: r
"""
HUNT_PACK = f"""\
pack: sneaky-hunt
kind: hunt
queries:
  - {{name: args, query: "{ALIASED}"}}
"""


def fleet(tmp_path: Path) -> Path:
    (tmp_path / "fleetkit.yaml").write_text(SETTINGS)
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "fleet.yaml").write_text(INVENTORY)
    return tmp_path


def run_cli(directory: Path, *argv: str) -> tuple[int, str, str]:
    """``fleetkit ARGV`` in-process: the task's own parser, the one error mapping."""
    name, *rest = argv
    task = cli.namespace[name]
    parsed = Parser(contexts=[ParserContext(name=name, args=task.get_arguments())])
    kwargs: dict[str, Any] = parsed.parse_argv([name, *rest])[0].as_kwargs
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ={
            "FK_TEST_TOKEN": "t",
            "FLEETKIT_ORCHESTRATOR_URL": f"http://127.0.0.1:{closed_port()}",
        },
        cwd=str(directory),
    )
    rt = Runtime(env=env)
    code = 0
    try:
        task.body(Context(config=Config(overrides={cli.RUNTIME_CONFIG_KEY: rt})), **kwargs)
    except Exit as exc:
        code = exc.code
    assert isinstance(env.stdout, io.StringIO) and isinstance(env.stderr, io.StringIO)
    return code, env.stdout.getvalue(), env.stderr.getvalue()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT cmdline AS args FROM processes",
        "SELECT upper(CMDLINE) FROM processes",
        "SELECT pid FROM processes WHERE cmdline LIKE '%token%'",
    ],
)
def test_query_refuses_a_redacted_column_under_another_name(tmp_path: Path, sql: str) -> None:
    code, stdout, stderr = run_cli(fleet(tmp_path), "query", sql)
    assert code == 2, stderr
    assert stdout == ""
    assert "redacted column 'cmdline'" in stderr and "query.redact_columns" in stderr
    assert "nothing was submitted" in stderr


def test_query_reading_a_redacted_column_plainly_is_not_refused(tmp_path: Path) -> None:
    code, _, stderr = run_cli(fleet(tmp_path), "query", "SELECT pid, cmdline FROM processes")
    assert code == 1, stderr  # asked (the orchestrator is unreachable), not refused
    assert "redacted" not in stderr


def test_policy_refuses_a_pack_whose_details_move_a_redacted_column(tmp_path: Path) -> None:
    directory = fleet(tmp_path)
    (directory / "sneaky.yaml").write_text(POLICY_PACK)
    code, stdout, stderr = run_cli(directory, "policy", "--pack", "sneaky.yaml")
    assert code == 2, stderr
    assert stdout == ""
    assert "sneaky.yaml: policies[0].details:" in stderr
    assert "redacted column 'cmdline'" in stderr


def test_hunt_goes_through_the_same_rule(tmp_path: Path) -> None:
    """The hunt's own SQL filters on ``path``: with ``path`` redacted, it is refused too."""
    code, stdout, stderr = run_cli(
        fleet(tmp_path), "hunt", "--path", "/tmp/x", "--sha256", "a" * 64
    )
    assert code == 2, stderr
    assert stdout == ""
    assert "redacted column 'path'" in stderr


def test_watch_refuses_to_start_with_such_a_pack(tmp_path: Path) -> None:
    directory = fleet(tmp_path)
    (directory / "sneaky-hunt.yaml").write_text(HUNT_PACK)
    code, _, stderr = run_cli(directory, "watch", "--once", "--pack", "sneaky-hunt.yaml")
    assert code == 2, stderr
    assert "sneaky-hunt.yaml: queries[0].query:" in stderr
    assert "redacted column 'cmdline'" in stderr
    assert not (directory / "watch-status.json").exists()


def test_packs_check_names_the_pack_the_key_and_the_column(tmp_path: Path) -> None:
    directory = fleet(tmp_path)
    (directory / "packs").mkdir()
    (directory / "packs" / "sneaky.yaml").write_text(POLICY_PACK)
    (directory / "packs" / "fine.yaml").write_text(
        HUNT_PACK.replace("sneaky-hunt", "fine").replace(ALIASED, "SELECT pid FROM processes")
    )
    code, stdout, stderr = run_cli(directory, "packs.check")
    assert code == 2, stderr
    assert "fine" in stdout and "broken" in stdout
    assert "policies[0].details" in stdout
    assert "packs/sneaky.yaml: policies[0].details:" in stderr
    assert "redacted column 'cmdline'" in stderr


def test_packs_import_skips_such_a_query_and_says_why(tmp_path: Path) -> None:
    directory = fleet(tmp_path)
    osquery_pack = {
        "queries": {
            "args": {"query": ALIASED, "interval": 3600},
            "pids": {"query": "SELECT pid FROM processes", "interval": 3600},
        }
    }
    (directory / "procs.json").write_text(json.dumps(osquery_pack))
    code, stdout, stderr = run_cli(directory, "packs.import", "procs.json", "--kind", "hunt")
    assert code == 0, stderr
    assert "query 'args' skipped: query reads redacted column 'cmdline'" in stderr
    assert "name: pids" in stdout and "cmdline" not in stdout
