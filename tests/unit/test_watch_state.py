"""The status file: written by the watch, read strictly by verify (it is hostile input there)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fleetkit.foundation.status import ConfigError
from fleetkit.watch.notify import Counters
from fleetkit.watch.session import RunMark
from fleetkit.watch.state import (
    MAX_STATUS_BYTES,
    PackStatus,
    StatusBoard,
    WatchStatus,
    assess_status,
    ledger_of,
)
from fleetkit.watch.statusread import load_status, parse_status

T0 = "2025-01-01T10:00:00.000000Z"
T1 = "2025-01-01T10:05:00.000000Z"
NOW = datetime(2025, 1, 1, 10, 6, tzinfo=UTC)


def status(**changes: Any) -> WatchStatus:
    base = WatchStatus(
        pid=4242,
        state="idle",
        started_at=T0,
        updated_at=T1,
        heartbeat_seconds=30,
        packs={
            "ssh-keys": PackStatus(
                interval=3600,
                runs=2,
                failed_runs=1,
                last_run_id="20250101T100500.000Z-abcd",
                last_started_at=T1,
                last_finished_at=T1,
                last_outcome="ok",
                last_completed_at=T1,
                next_due_at="2025-01-01T11:00:00.000000Z",
                notified_run_id="20250101T100500.000Z-abcd",
                notified_started_at=T1,
            )
        },
        notifications=Counters(delivered=3, retries=1),
    )
    return WatchStatus(**{**base.__dict__, **changes})


def raw(value: WatchStatus | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((value or status()).to_json())
    return loaded


def test_the_status_file_round_trips_and_is_written_atomically_0640(tmp_path: Path) -> None:
    path = tmp_path / "state" / "watch-status.json"
    board = StatusBoard(str(path), status(), counters=lambda: Counters(delivered=7))
    board.write(NOW)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    loaded = load_status(path)
    assert loaded == status(
        updated_at="2025-01-01T10:06:00.000000Z", notifications=Counters(delivered=7)
    )
    assert json.loads(path.read_text())["format"] == "fleetkit-watch-status/1"
    assert load_status(tmp_path / "missing.json") is None


def test_writing_commits_the_notification_ledger(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    ledger = {"ssh-keys": RunMark("2025-01-01T10:10:00.000000Z", "20250101T101000.000Z-beef")}
    StatusBoard(str(path), status(), ledger=ledger).write(NOW)
    loaded = load_status(path)
    assert ledger_of(loaded) == ledger
    assert ledger_of(None) == {}
    assert ledger_of(status(packs={"p": PackStatus(interval=10)})) == {"p": None}


def test_an_error_text_with_a_lone_surrogate_still_writes(tmp_path: Path) -> None:
    packs = {"a": PackStatus(interval=60, last_outcome="failed", last_error="bad \ud800")}
    StatusBoard(str(tmp_path / "s.json"), status(packs=packs)).write(NOW)
    loaded = load_status(tmp_path / "s.json")
    assert loaded is not None and loaded.packs["a"].last_error == "bad \ud800"


def mutate(path: str, value: Any) -> bytes:
    data = raw()
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (b"\xff\xfe", None, "not a watch status file"),
        (b"[]", "(top level)", "expected an object"),
        (b'{"pid": 1, "pid": 2}', None, "duplicate key"),
        (b'{"pid": NaN}', None, "NaN is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, None, "not a watch status file"),
        (b" " * (MAX_STATUS_BYTES + 1), None, "larger than"),
        (mutate("format", "fleetkit-watch-status/9"), "format", "expected"),
        (mutate("extra", 1), "extra", "unknown key"),
        (mutate("pid", KeyError), "pid", "missing"),
        (mutate("pid", True), "pid", "expected int"),
        (mutate("pid", 0), "pid", "expected a count >= 1"),
        (mutate("state", "dancing"), "state", "one of starting, idle, running, stopped"),
        (mutate("updated_at", "yesterday"), "updated_at", "a UTC time"),
        (mutate("updated_at", "2025-13-01T10:00:00.000000Z"), "updated_at", "a UTC time"),
        (mutate("heartbeat_seconds", -1), "heartbeat_seconds", "positive number"),
        (mutate("packs.ssh-keys.runs", -1), "packs.ssh-keys.runs", "count"),
        (mutate("packs.ssh-keys.last_error", "x" * 501), "packs.ssh-keys.last_error", "short"),
        (mutate("packs.ssh-keys.last_run_id", "a b"), "packs.ssh-keys.last_run_id", "run id"),
        (mutate("packs.ssh-keys.interval", "1h"), "packs.ssh-keys.interval", "seconds"),
        (mutate("packs.bad\nname", {}), "packs", "invalid pack name"),
        (mutate("notifications.delivered", 1.5), "notifications.delivered", "expected int"),
    ],
)
def test_a_bad_status_file_is_refused_naming_the_file_and_key(
    data: bytes, key: str | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_status(data, file="/var/lib/fleetkit/watch-status.json")
    assert caught.value.file == "/var/lib/fleetkit/watch-status.json"
    assert caught.value.key == key
    assert message in str(caught.value)
    assert len(str(caught.value)) < 400


def test_verify_says_running_with_the_last_completed_run() -> None:
    health = assess_status(status(), now=NOW)
    assert health.ok and health.last_completed_at == T1
    assert health.message == f"running (pid 4242), last run completed {T1}"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"state": "stopped", "stop_reason": "terminated"}, "stopped (terminated) at"),
        ({"updated_at": "2025-01-01T10:04:00.000000Z"}, "no heartbeat for 120s (pid 4242)"),
        ({"packs": {"a": PackStatus(interval=60)}}, "no run completed yet"),
    ],
)
def test_verify_says_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    health = assess_status(status(**changes), now=NOW)
    assert not health.ok and message in health.message


def test_a_failing_last_run_is_named_but_the_watch_is_running() -> None:
    failed = PackStatus(interval=60, last_outcome="failed", last_completed_at=T0)
    health = assess_status(status(packs={**status().packs, "iocs": failed}), now=NOW)
    assert health.ok and health.message.endswith("last run failed: iocs")
    assert not assess_status(None, now=NOW).ok
