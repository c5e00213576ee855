"""Policy packs: strict validation, the four verdicts, output formats, exit codes."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetkit.ask import packs, verdicts
from fleetkit.ask.answer import FleetAnswer, NodeStatus
from fleetkit.ask.scope import Question, Scope, SqlRules, Via
from fleetkit.ask.transport import Collected, NodeReply
from fleetkit.ask.validate import settle
from fleetkit.cli import run_command
from fleetkit.commands import policy
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.selectors import Selector
from fleetkit.foundation.settings import DEFAULT_DISABLED_TABLES
from fleetkit.foundation.status import ExitStatus
from fleetkit.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
TABLES_JSON = REPO.parent / "shared" / "reference" / "osquery-tables.json"
SSH_PACK = REPO / "fleetkit" / "packs" / "ssh-keys.yaml"

# --------------------------------------------------------------------------- helpers shared with
# test_hunt.py: a settings file + inventory on disk, and a scripted fleet.

SETTINGS = """\
inventory: inventory
osquery:
  package: {source: pkgs/osquery.deb, sha256: "%(sha)s"}
bacalhau:
  package: {source: pkgs/bacalhau.tgz, sha256: "%(sha)s"}
  node_token: {env: FK_TEST_TOKEN}
admin_networks: ["10.0.0.0/24"]
"""
INVENTORY = """\
control_plane:
  hosts:
    orch-1: {address: 10.0.0.2}
compute:
  vars: {labels: {role: osquery}}
  hosts:
    node-1: {address: 10.0.0.11}
    node-2: {address: 10.0.0.12}
    node-3: {address: 10.0.0.13}
"""


def make_runtime(tmp_path: Path, environ: dict[str, str] | None = None) -> Runtime:
    (tmp_path / "fleetkit.yaml").write_text(SETTINGS % {"sha": "0" * 64})
    (tmp_path / "inventory").mkdir(exist_ok=True)
    (tmp_path / "inventory" / "fleet.yaml").write_text(INVENTORY)
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ={"FK_TEST_TOKEN": "t", **(environ or {})},
        cwd=str(tmp_path),
    )
    return Runtime(env=env, settings_path=str(tmp_path / "fleetkit.yaml"))


def out(rt: Runtime) -> str:
    value = rt.env.stdout.getvalue()  # type: ignore[attr-defined]
    assert isinstance(value, str)
    return value


def err(rt: Runtime) -> str:
    value = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
    assert isinstance(value, str)
    return value


def osqueryi_json(rows: list[dict[str, str]]) -> bytes:
    """Exactly what ``osqueryi --connect ... --json`` prints (banner included)."""
    body = ",\n".join("  " + json.dumps(dict(sorted(r.items()))) for r in rows)
    return b"Connected to extension socket /var/osquery/osquery.em for debugging\n" + (
        f"[\n{body}\n]\n".encode()
    )


#: What one node answers: rows, or an error string (FAILED), or None (MISSING).
Answer = list[dict[str, str]] | str | None


@dataclass(frozen=True)
class Asked:
    """One question the fleet was asked: its SQL and the hosts it was narrowed to."""

    sql: str
    hosts: str  # comma-joined names, "" = the whole scope (for readable assertions)


class ScriptedFleet:
    """A fake engine: answers per SQL (matched by a substring) per node, validated for real."""

    def __init__(
        self, script: dict[str, dict[str, Answer]], hostnames: dict[str, str] | None = None
    ) -> None:
        self.script = script
        #: Machine hostnames that differ from the inventory name (default: the same).
        self.hostnames = hostnames or {}
        self.requests: list[Asked] = []

    def __call__(self, question: Question, scope: Scope) -> FleetAnswer:
        only = scope.host_names
        self.requests.append(Asked(question.sql, ",".join(h.name for h in scope.hosts or ())))
        answers = next(v for k, v in self.script.items() if k in question.sql)
        nodes = []
        for node_id, answer in answers.items():
            if only is not None and node_id not in only:
                continue
            machine = self.hostnames.get(node_id, node_id)
            if answer is None:
                nodes.append(NodeReply(node_id, "", NodeStatus.MISSING, error="never ran"))
            elif isinstance(answer, str):
                nodes.append(NodeReply(node_id, machine, NodeStatus.FAILED, b"", answer, 1))
            else:
                nodes.append(NodeReply(node_id, machine, NodeStatus.OK, osqueryi_json(answer)))
        return settle(Collected(tuple(nodes), "j-1", tuple(answers)))


def any_scope() -> Scope:
    """Every node, no selector (what a bare ``invoke policy`` asks)."""
    return Scope(Selector.parse(""), None, Via.SSH, 30.0)


def hosts_named(names: set[str]) -> dict[str, Host]:
    return {name: Host(name, "127.0.0.1") for name in names}


# --------------------------------------------------------------------------- packs

GOOD_PACK = """\
pack: demo
description: demo pack
policies:
  - name: no_root_keys
    description: root has no private key
    severity: medium
    meaning: fail_if_rows
    query: SELECT path FROM user_ssh_keys WHERE uid = '0'
    details: SELECT path, key_type FROM user_ssh_keys WHERE uid = '0'
    resolution: remove it
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- verdicts

SSH_RULE = "ssh-keys/ssh_private_keys_encrypted_ec"
PEM_RSA = {"username": "root", "path": "/root/.ssh/id_rsa", "encrypted": "0", "key_type": "rsa"}
OPENSSH_ENC = {
    "username": "root",
    "path": "/root/.ssh/id_ed25519",
    "encrypted": "1",
    "key_type": "",
}
EC_ENC = {"username": "root", "path": "/root/.ssh/id_ec", "encrypted": "1", "key_type": "ec"}


def ssh_rule() -> packs.Policy:
    pack = packs.load_pack(SSH_PACK, SqlRules(DEFAULT_DISABLED_TABLES))
    return next(p for p in pack.policies if p.key == SSH_RULE)


def fleet_for_ssh_rule(keys: dict[str, Answer]) -> ScriptedFleet:
    """Answers the rule's three queries from each node's key list (like osquery would)."""

    def pick(keep: Callable[[dict[str, str]], bool]) -> dict[str, Answer]:
        return {
            node: (answer if not isinstance(answer, list) else [k for k in answer if keep(k)])
            for node, answer in keys.items()
        }

    def violates(k: dict[str, str]) -> bool:
        return k["encrypted"] == "0" or k["key_type"] not in ("", "ec")

    return ScriptedFleet(
        {
            "user_ssh_keys.key_length": pick(violates),  # details (lists key_length)
            "WHERE user_ssh_keys.key_type = ''": pick(lambda k: k["key_type"] == ""),
            "user_ssh_keys.encrypted = 0": pick(violates),  # the main query
        }
    )


def test_the_ssh_rule_gives_fail_unknown_pass_and_error() -> None:
    fleet = fleet_for_ssh_rule(
        {
            "node-1": [PEM_RSA, OPENSSH_ENC],  # a violation is proven: FAIL wins over unknown
            "node-2": [OPENSSH_ENC],  # osquery cannot tell the algorithm
            "node-3": [EC_ENC],
            "node-4": "Error: no such table: user_ssh_keys",
            "node-5": None,
        }
    )
    names = {"node-1", "node-2", "node-3", "node-4", "node-5"}
    results = policy.evaluate_policy(ssh_rule(), fleet, any_scope(), hosts_named(names))
    by_node = {v.node_id: v for v in results}
    assert {n: v.verdict.value for n, v in by_node.items()} == {
        "node-1": "FAIL",
        "node-2": "UNKNOWN",
        "node-3": "PASS",
        "node-4": "ERROR",
        "node-5": "ERROR",
    }
    assert by_node["node-1"].details[0]["path"] == "/root/.ssh/id_rsa"
    assert by_node["node-2"].details[0]["path"] == "/root/.ssh/id_ed25519"
    assert "no such table" in (by_node["node-4"].error or "")
    # details were asked of the failing host only, the unknown query of the passing ones only
    assert [r.hosts for r in fleet.requests] == ["", "node-1", "node-2,node-3"]


def test_a_pass_that_cannot_be_confirmed_is_an_error() -> None:
    fleet = fleet_for_ssh_rule({"node-1": [EC_ENC]})
    fleet.script["WHERE user_ssh_keys.key_type = ''"] = {"node-1": "Error: boom"}
    (verdict,) = policy.evaluate_policy(ssh_rule(), fleet, any_scope(), hosts_named({"node-1"}))
    assert verdict.verdict is verdicts.Verdict.ERROR
    assert "unknown_if_rows query" in (verdict.error or "")


def test_pass_if_rows_meaning(tmp_path: Path) -> None:
    text = GOOD_PACK.replace("fail_if_rows", "pass_if_rows")
    rule = packs.load_pack(write(tmp_path, "p.yaml", text)).policies[0]
    fleet = ScriptedFleet(
        {
            "key_type": {"node-1": [], "node-2": [{"path": "x"}]},  # details
            "SELECT path FROM": {"node-1": [{"path": "x"}], "node-2": []},
        }
    )
    found = policy.evaluate_policy(rule, fleet, any_scope(), hosts_named({"node-1", "node-2"}))
    assert [v.verdict.value for v in found] == ["PASS", "FAIL"]


@pytest.mark.parametrize(
    ("found", "status"),
    [
        (["PASS", "PASS"], ExitStatus.SUCCESS),
        (["PASS", "UNKNOWN"], ExitStatus.SUCCESS),
        (["PASS", "ERROR"], ExitStatus.FAILURE),
        (["FAIL", "ERROR"], ExitStatus.FINDINGS),
        (["FAIL", "UNKNOWN", "PASS"], ExitStatus.FINDINGS),
        ([], ExitStatus.FAILURE),
    ],
)
def test_exit_status_precedence(found: list[str], status: ExitStatus) -> None:
    rule = ssh_rule()
    items = [
        verdicts.HostVerdict(rule, f"n{i}", f"n{i}", verdicts.Verdict(v))
        for i, v in enumerate(found)
    ]
    assert verdicts.exit_status_for_verdicts(items) == status


# --------------------------------------------------------------------------- the command


def run_policy(
    tmp_path: Path,
    fleet: ScriptedFleet,
    fmt: str,
    packs: tuple[str, ...] = (str(SSH_PACK),),
    **kw: str,
) -> tuple[Runtime, int]:
    """``invoke policy --pack ...`` (``packs=()``: the packs found beside fleetkit.yaml)."""
    rt = make_runtime(tmp_path)
    status = run_command(
        lambda r: policy.run(
            r,
            packs=list(packs),
            hosts=kw.get("hosts", ""),
            select="",
            via="ssh",
            output_format=fmt,
            ask=fleet,
        ),
        rt,
    )
    return rt, status


INCIDENT = {"node-1": [PEM_RSA], "node-2": [OPENSSH_ENC], "node-3": [EC_ENC]}


def test_command_json_output_and_exit_3(tmp_path: Path) -> None:
    rt, status = run_policy(tmp_path, fleet_for_ssh_rule(INCIDENT), "json")
    assert status == ExitStatus.FINDINGS
    records = json.loads(out(rt))
    rule = {r["nodeID"]: r for r in records if r["policy"] == "ssh_private_keys_encrypted_ec"}
    assert {n: r["status"] for n, r in rule.items()} == {
        "node-1": "FAIL",
        "node-2": "UNKNOWN",
        "node-3": "PASS",
    }
    assert rule["node-1"]["details"][0]["key_type"] == "rsa"
    assert rule["node-1"]["resolution"]
    assert "node-2 UNKNOWN" in err(rt)


def test_command_csv_and_ndjson(tmp_path: Path) -> None:
    rt, _ = run_policy(tmp_path, fleet_for_ssh_rule(INCIDENT), "csv")
    rows = list(csv.DictReader(io.StringIO(out(rt))))
    assert {r["status"] for r in rows} >= {"FAIL", "UNKNOWN", "PASS"}
    assert json.loads(rows[0]["details"]) is not None
    rt, _ = run_policy(tmp_path, fleet_for_ssh_rule(INCIDENT), "ndjson")
    lines = out(rt).splitlines()
    assert all(json.loads(line)["nodeID"] for line in lines)


def test_command_table_names_every_host(tmp_path: Path) -> None:
    rt, status = run_policy(tmp_path, fleet_for_ssh_rule(INCIDENT), "table")
    text = out(rt)
    assert status == ExitStatus.FINDINGS
    assert re.search(r"ssh_private_keys_encrypted_ec\s+high\s+node-1\s+FAIL", text)
    assert "/root/.ssh/id_rsa" in text


def test_all_pass_is_0_and_error_only_is_1(tmp_path: Path) -> None:
    clean = {"node-1": [EC_ENC], "node-2": []}
    rt, status = run_policy(tmp_path, fleet_for_ssh_rule(clean), "json")
    assert status == ExitStatus.SUCCESS
    assert "every host passed every policy (exit 0)" in err(rt)
    broken = {"node-1": [EC_ENC], "node-2": "Error: socket gone"}
    rt, status = run_policy(tmp_path, fleet_for_ssh_rule(broken), "json")
    assert status == ExitStatus.FAILURE
    assert "node-2 ERROR" in err(rt)
    assert "node-2 did not answer: compliance is unproven (exit 1)" in err(rt)


def test_bad_input_is_refused_before_asking(tmp_path: Path) -> None:
    fleet = fleet_for_ssh_rule(INCIDENT)
    rt, status = run_policy(tmp_path, fleet, "yaml")
    assert status == ExitStatus.BAD_INPUT
    rt, status = run_policy(tmp_path, fleet, "json", hosts="nosuchhost")
    assert status == ExitStatus.BAD_INPUT
    assert "nosuchhost" in err(rt)
    assert fleet.requests == []


def test_policy_output_for_people_is_escaped(tmp_path: Path) -> None:
    evil = dict(PEM_RSA, path="/root/.ssh/\x1b[8mhidden")
    fleet = fleet_for_ssh_rule({"node-1": [evil], "node-2": "Error: \x1b]0;x\x07"})
    rt, status = run_policy(tmp_path, fleet, "table")
    assert status == ExitStatus.FINDINGS
    assert "\x1b" not in out(rt) + err(rt)
    assert "path=/root/.ssh/\\x1b[8mhidden" in out(rt)
    assert "node-2 ERROR" in err(rt) and "\\x1b]0;x\\x07" in err(rt)


def test_hosts_are_named_by_inventory_name_first(tmp_path: Path) -> None:
    """Issue 14: the inventory name is the identity (what --hosts and quarantine take); the
    machine's own hostname follows it where it differs."""
    machines = {"node-1": "ip-10-0-1-11", "node-2": "ip-10-0-1-12"}
    fleet = fleet_for_ssh_rule(INCIDENT)
    fleet.hostnames = machines
    rt, status = run_policy(tmp_path, fleet, "table")
    assert status == ExitStatus.FINDINGS
    assert re.search(
        r"ssh_private_keys_encrypted_ec\s+high\s+node-1 \(ip-10-0-1-11\)\s+FAIL", out(rt)
    )
    assert re.search(r"\s+node-3\s+PASS", out(rt))  # same name: said once
    assert "node-2 UNKNOWN" in err(rt)
    assert "violations on 1 host(s): node-1 (exit 3)" in err(rt)
    assert "ip-10-0-1-1" not in err(rt)
    rt, _ = run_policy(tmp_path, fleet, "json")
    records = [r for r in json.loads(out(rt)) if r["nodeID"] == "node-1"]
    assert {(r["nodeID"], r["hostname"]) for r in records} == {("node-1", "ip-10-0-1-11")}


HUNT_PACK = """\
pack: webshells
kind: hunt
queries:
  - {name: php, query: "SELECT path FROM file WHERE path LIKE '/srv/%.php'"}
"""
INVENTORY_PACK = """\
pack: basics
kind: inventory
queries:
  - {name: os, query: SELECT name FROM os_version}
"""


@pytest.mark.parametrize(("text", "kind"), [(HUNT_PACK, "hunt"), (INVENTORY_PACK, "inventory")])
def test_a_named_pack_that_is_not_a_policy_pack_is_refused(
    tmp_path: Path, text: str, kind: str
) -> None:
    write(tmp_path, "demo.yaml", GOOD_PACK)
    other = write(tmp_path, "other.yaml", text)
    fleet = ScriptedFleet({"user_ssh_keys": {"node-1": []}})
    rt, status = run_policy(tmp_path, fleet, "json", ("demo.yaml", "other.yaml"))
    assert status == ExitStatus.BAD_INPUT
    name = "webshells" if kind == "hunt" else "basics"
    assert f"--pack: {other}: pack '{name}' is a {kind} pack" in err(rt)
    assert f"invoke watch --pack {name} --once" in err(rt)
    assert fleet.requests == [] and out(rt) == ""


def test_discovered_packs_of_other_kinds_are_skipped_and_named(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    write(tmp_path / "packs", "a_hunt.yaml", HUNT_PACK)
    write(tmp_path / "packs", "b_policy.yaml", GOOD_PACK)
    write(tmp_path / "packs", "c_inventory.yaml", INVENTORY_PACK)
    fleet = ScriptedFleet({"user_ssh_keys": {"node-1": [], "node-2": []}})
    rt, status = run_policy(tmp_path, fleet, "json", ())
    assert status == ExitStatus.SUCCESS, err(rt)
    assert "skipped packs that are not policy packs: webshells (hunt), basics (inventory)" in err(
        rt
    )
    assert {r["pack"] for r in json.loads(out(rt))} == {"demo"}
    assert all("user_ssh_keys" in asked.sql for asked in fleet.requests)


def test_discovering_only_other_kinds_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    write(tmp_path / "packs", "a_hunt.yaml", HUNT_PACK)
    fleet = ScriptedFleet({})
    rt, status = run_policy(tmp_path, fleet, "json", ())
    assert status == ExitStatus.BAD_INPUT
    assert "no policy packs found (only hunt or inventory packs)" in err(rt)
    assert fleet.requests == []
