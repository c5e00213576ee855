"""The watch service as provisioning plans it, and verify's ``watch`` check (no hosts).

Files are rendered from the real templates and read back with fleetkit's own
loaders (the control plane's settings and inventory must load there); the
wheelhouse is a stand-in tar in the cache under the key the real build
would use, so no ``pip wheel`` runs here (the lab test builds a real one).
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host, load_inventory
from fleetkit.foundation.render import Renderer
from fleetkit.foundation.settings import load_settings
from fleetkit.hostfacts.facts import FactView, FileLook, PathExists, Raw, ServiceLook
from fleetkit.hostfacts.roles import RoleContext, plan_for
from fleetkit.hostfacts.roles import watch as watch_role
from fleetkit.hostfacts.steps import FileStep, PlanContext, ServiceStep
from fleetkit.hostfacts.wheelhouse import (
    PYTHON_EXIT,
    Wheelhouse,
    WheelhouseStep,
    source_root,
    wheelhouse_key,
)
from fleetkit.readiness.catalog import checks_for, evaluate
from fleetkit.readiness.engine import looks_for
from fleetkit.readiness.expected import Expected
from fleetkit.readiness.model import CheckVerdict, Subject
from fleetkit.readiness.watch_check import HostClock, watch_facts
from fleetkit.runtime import Runtime
from fleetkit.watch.state import PackStatus, WatchStatus, iso_now
from tests.unit.test_verify_unit import healthy_cluster

TOKEN = "unit-node-token-0123456789"
HOOK_SECRET = "unit-webhook-secret-abcdef"
S3_KEY, S3_SECRET = "AKIAUNITTESTKEY", "unit-s3-secret-value-xyz"
HOOK_URL = "https://hooks.example.org/services/T0K3N-PATH"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in (("node_token", TOKEN), ("hook", HOOK_SECRET), ("s3_secret", S3_SECRET)):
        (secrets / name).write_text(value + "\n")
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "fleet.yaml").write_text(
        "control_plane:\n  hosts:\n    orch-1: {address: 10.0.0.1}\n"
        "compute:\n  vars:\n    labels: {role: osquery}\n  hosts:\n"
        "    node-1: {address: 10.0.0.11, labels: {env: prod}}\n"
        "    node-2: {address: 10.0.0.12, port: 2222, bacalhau_api_port: 1300}\n"
        "web:\n  hosts:\n    node-1: {}\n"
    )
    sha = "0" * 64
    settings = {
        "osquery": {"package": {"source": "packages/osquery.deb", "sha256": sha}},
        "bacalhau": {
            "package": {"source": "packages/bacalhau.tgz", "sha256": sha},
            "node_token": {"file": "secrets/node_token"},
            "api_port": 1299,
        },
        "query": {
            "publisher": "s3",
            "s3": {
                "bucket": "results",
                "endpoint": "http://10.0.0.5:9000",
                "access_key_id": {"env": "AWS_KEY"},
                "secret_access_key": {"file": "secrets/s3_secret"},
            },
        },
        "watch": {
            "enabled": True,
            "packs": ["ssh-keys"],
            "missing_after": 4,
            "webhook": {"url": HOOK_URL, "secret_file": "secrets/hook"},
        },
        "cache_dir": "cache",
    }
    (tmp_path / "fleetkit.yaml").write_text(json.dumps(settings))
    return tmp_path


@pytest.fixture
def rt(workdir: Path) -> Runtime:
    env = Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), environ={"AWS_KEY": S3_KEY}, cwd=str(workdir)
    )
    return Runtime(env=env)


@pytest.fixture
def context(rt: Runtime) -> RoleContext:
    """The role context, with the wheelhouse already in the cache (no pip here)."""
    key = wheelhouse_key(source_root(), rt.settings.transfer_mode)
    cache = Path(rt.settings.cache_dir)
    cache.mkdir()
    (cache / f"fleetkit-wheelhouse-{key[:16]}.tar").write_bytes(b"stand-in wheelhouse")
    return RoleContext(settings=rt.settings, inventory=rt.inventory, renderer=Renderer(None))


def control_plane(rt: Runtime) -> Host:
    found = rt.inventory.control_plane
    assert found is not None
    return found


def files_of(rt: Runtime, context: RoleContext) -> dict[str, FileStep]:
    orch = control_plane(rt)
    plan = plan_for(orch, context)
    return {s.path: s for s in plan.steps if isinstance(s, FileStep)}


def as_written(step: FileStep, tmp_path: Path) -> Path:
    """The file as the host will have it, under ``tmp_path`` (same name, own directory)."""
    target = tmp_path / step.path.strip("/").replace("/", "_") / Path(step.path).name
    target.parent.mkdir(parents=True)
    target.write_text(step.content)
    return target


def test_the_control_plane_gets_settings_that_load_there(
    rt: Runtime, context: RoleContext, tmp_path: Path
) -> None:
    files = files_of(rt, context)
    settings_file = as_written(files[watch_role.SETTINGS_PATH], tmp_path)
    loaded = load_settings({}, str(settings_file.parent), str(settings_file))
    assert loaded.bacalhau.orchestrator_url == "http://127.0.0.1:1299"
    assert loaded.history.path == watch_role.HISTORY_PATH
    assert loaded.watch.status_file == watch_role.STATUS_PATH
    assert loaded.watch.packs == (f"{watch_role.PACKS_DIR}/ssh-keys.yaml",)
    assert loaded.watch.missing_after == 4 and loaded.watch.enabled
    assert loaded.watch.webhook is not None and loaded.watch.webhook.url == HOOK_URL
    assert loaded.watch.webhook.secret.file == f"{watch_role.SECRETS_DIR}/webhook"
    assert loaded.query.s3 is not None and loaded.query.s3.endpoint == "http://10.0.0.5:9000"
    assert loaded.query.s3.access_key_id is not None
    assert loaded.query.s3.access_key_id.file == f"{watch_role.SECRETS_DIR}/s3_access_key_id"
    text = files[watch_role.SETTINGS_PATH].content
    for secret in (TOKEN, HOOK_SECRET, S3_KEY, S3_SECRET):
        assert secret not in text
    # each secret is its own 0600 file, restarting the watch when it changes
    for name, value in (
        ("node_token", TOKEN),
        ("webhook", HOOK_SECRET),
        ("s3_access_key_id", S3_KEY),
        ("s3_secret_access_key", S3_SECRET),
    ):
        step = files[f"{watch_role.SECRETS_DIR}/{name}"]
        assert step.content == value + "\n" and step.mode == 0o600 and step.secret
        assert ("fleetkit-watch", "restart") in step.notify
    assert files[watch_role.SETTINGS_PATH].mode == 0o600  # the URL's path may be a token


def test_the_inventory_on_the_control_plane_is_the_same_fleet(
    rt: Runtime, context: RoleContext, tmp_path: Path
) -> None:
    files = files_of(rt, context)
    written = as_written(files[f"{watch_role.INVENTORY_DIR}/hosts.yaml"], tmp_path)
    there = load_inventory(written.parent)
    here = rt.inventory
    assert [
        (h.name, h.address, h.port, h.labels, h.groups, h.bacalhau_api_port) for h in there
    ] == [(h.name, h.address, h.port, h.labels, h.groups, h.bacalhau_api_port) for h in here]


def test_the_shipped_pack_is_copied_and_the_service_comes_last(
    rt: Runtime, context: RoleContext
) -> None:
    files = files_of(rt, context)
    pack = files[f"{watch_role.PACKS_DIR}/ssh-keys.yaml"]
    shipped = Path(__file__).resolve().parents[2] / "fleetkit" / "packs" / "ssh-keys.yaml"
    assert pack.content == shipped.read_text()
    orch = control_plane(rt)
    steps = plan_for(orch, context).steps
    assert isinstance(steps[-1], ServiceStep) and steps[-1].spec.name == "fleetkit-watch"
    assert steps[-1].spec.argv[-2:] == ("--settings", watch_role.SETTINGS_PATH)
    unit = files[watch_role.UNIT_PATH]
    assert unit.systemd_only and "ExecStart=/opt/fleetkit/venv/bin/fleetkit watch" in unit.content


def test_without_watch_enabled_the_control_plane_plan_is_unchanged(
    workdir: Path, rt: Runtime
) -> None:
    path = workdir / "fleetkit.yaml"
    settings = json.loads(path.read_text())
    settings["watch"]["enabled"] = False
    path.write_text(json.dumps(settings))
    context = RoleContext(settings=rt.settings, inventory=rt.inventory, renderer=Renderer(None))
    orch = control_plane(rt)
    described = [s.describe() for s in plan_for(orch, context).steps]
    assert described and not any("fleetkit" in line for line in described)
    assert not (workdir / "cache").exists()  # no wheelhouse built for nothing


# --------------------------------------------------------------------------- the wheelhouse


def wheelhouse_step(tmp_path: Path, mode: str = "push") -> WheelhouseStep:
    archive = tmp_path / "wh.tar"
    archive.write_bytes(b"tar bytes")
    return WheelhouseStep(
        Wheelhouse("k" * 64, archive, "3.11", mode), venv="/opt/fk/venv", record="/opt/fk/key"
    )


def test_the_wheelhouse_is_installed_only_when_its_key_differs(rt: Runtime, tmp_path: Path) -> None:
    step = wheelhouse_step(tmp_path)
    orch = control_plane(rt)

    def plan(record: str | None, present: bool, check: bool = False) -> Any:
        raw = Raw(0, f"644 root root\n{record}".encode()) if record is not None else Raw(0, b"-\n")
        exists = Raw(0, b"present\n" if present else b"absent\n")
        facts = FactView.parsed(
            {FileLook("/opt/fk/key"): raw, PathExists("/opt/fk/venv/bin/fleetkit"): exists}
        )
        return step.plan(facts, PlanContext(host=orch, check=check))

    assert not plan("k" * 64 + "\n", True).changes
    assert plan("k" * 64 + "\n", False).changes  # the venv was removed: install again
    [install] = plan("other-key\n", True).changes
    assert install.stdin == b"tar bytes" and "other-key"[:9] in (install.diff or "")
    [checked] = plan(None, False, check=True).changes
    assert checked.stdin == b""  # check mode reads (and uploads) nothing


def test_the_install_command_refuses_another_python_and_never_uses_an_index(
    tmp_path: Path,
) -> None:
    command = wheelhouse_step(tmp_path).install_command()
    assert "--no-index" in command and "PIP_CONFIG_FILE=/dev/null" in command
    pull = wheelhouse_step(tmp_path, "pull").install_command()
    assert "--no-index" not in pull and "PIP_CONFIG_FILE" not in pull
    # run the python check part on this machine with a wrong version: exit 89, a clear message
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho 3.7\n")
    (fake / "python3").chmod(0o755)
    script = command.replace("tar -xf - -C", "true")
    done = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{fake}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == PYTHON_EXIT
    assert "python3 is 3.7" in done.stderr and "Python 3.11" in done.stderr
    assert "transfer_mode: pull" in done.stderr
    assert shlex.quote("k" * 64) in command


def test_the_wheelhouse_key_follows_the_source(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "fleetkit").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='fleetkit'\n")
    (root / "fleetkit" / "__init__.py").write_text("x = 1\n")
    first = wheelhouse_key(root, "push")
    (root / "fleetkit" / "__pycache__").mkdir()
    (root / "fleetkit" / "__pycache__" / "a.pyc").write_bytes(b"junk")
    assert wheelhouse_key(root, "push") == first  # bytecode is not source
    assert wheelhouse_key(root, "pull") != first
    (root / "fleetkit" / "__init__.py").write_text("x = 2\n")
    assert wheelhouse_key(root, "push") != first


# --------------------------------------------------------------------------- verify


HOST_NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def status_json(*, updated: datetime, completed: datetime | None, state: str = "idle") -> str:
    status = WatchStatus(
        pid=4242,
        state=state,
        started_at=iso_now(updated - timedelta(hours=1)),
        updated_at=iso_now(updated),
        heartbeat_seconds=30,
        packs={
            "ssh-keys": PackStatus(
                interval=3600,
                runs=3,
                last_outcome="ok",
                last_completed_at=iso_now(completed) if completed else None,
            )
        },
    )
    return status.to_json().decode()


def judge(rt: Runtime, service: str, status_file: Raw, clock: str) -> tuple[CheckVerdict, str]:
    expected = Expected.from_settings(rt.settings)
    orch = control_plane(rt)
    looks = looks_for(orch, expected)
    service_fact, file_fact, clock_fact = watch_facts(looks)
    assert isinstance(service_fact, ServiceLook) and isinstance(clock_fact, HostClock)
    facts = FactView.parsed(
        {
            service_fact: Raw(0, f"start-stop-daemon {service} disabled\n".encode()),
            file_fact: status_file,
            clock_fact: Raw(0, clock.encode()),
        }
    )
    subject = Subject(
        host=orch,
        expected=expected,
        looks=looks,
        facts=facts,
        ssh_error=None,
        cluster=healthy_cluster(),
        node=None,
        control_plane=orch,
        compute=[],
    )
    [spec] = [c for c in checks_for("control_plane") if c.name == "watch"]
    result = evaluate(spec, subject)
    return result.verdict, result.evidence + " | " + (result.fix or "")


def file_of(text: str) -> Raw:
    return Raw(0, f"640 root root\n{text}".encode())


def test_verify_reports_a_running_watch_and_its_last_run(rt: Runtime) -> None:
    now = str(int(HOST_NOW.timestamp()))
    good = file_of(status_json(updated=HOST_NOW - timedelta(seconds=10), completed=HOST_NOW))
    verdict, text = judge(rt, "running", good, now)
    assert verdict is CheckVerdict.PASS
    assert "running (pid 4242)" in text and "last run completed 2026-12-01T12:00:00" in text


@pytest.mark.parametrize(
    ("service", "status", "clock", "expect"),
    [
        ("stopped", "ok", "host", "not running"),
        ("running", "none", "host", "no status file"),
        ("running", "stale", "host", "no heartbeat for"),
        ("running", "never", "host", "no run completed yet"),
        ("running", "garbage", "host", "unreadable status file"),
        ("running", "ok", "junk", "clock"),
    ],
)
def test_verify_says_why_the_watch_is_not_healthy(
    rt: Runtime, service: str, status: str, clock: str, expect: str
) -> None:
    statuses = {
        "ok": file_of(status_json(updated=HOST_NOW, completed=HOST_NOW)),
        "none": Raw(0, b"-\n"),
        "stale": file_of(status_json(updated=HOST_NOW - timedelta(hours=2), completed=HOST_NOW)),
        "never": file_of(status_json(updated=HOST_NOW, completed=None)),
        "garbage": file_of('{"format": "fleetkit-watch-status/1", "\x1b[2J": 1}'),
    }
    clocks = {"host": str(int(HOST_NOW.timestamp())), "junk": "Tue Dec  1"}
    verdict, text = judge(rt, service, statuses[status], clocks[clock])
    assert verdict is CheckVerdict.FAIL and expect in text, text
    assert "\x1b" not in text


def test_verify_uses_the_control_planes_clock_not_this_one(rt: Runtime) -> None:
    """A control plane whose clock is a day behind this machine's is still fresh."""
    behind = HOST_NOW - timedelta(days=1)
    fresh_there = file_of(status_json(updated=behind, completed=behind))
    verdict, _ = judge(rt, "running", fresh_there, str(int(behind.timestamp())))
    assert verdict is CheckVerdict.PASS


def test_verify_skips_the_check_when_the_watch_is_disabled(rt: Runtime) -> None:
    expected = replace(Expected.from_settings(rt.settings), watch=False)
    [spec] = [c for c in checks_for("control_plane") if c.name == "watch"]
    assert spec.required(expected) is not None
