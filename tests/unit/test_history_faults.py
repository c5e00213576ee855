"""Bad input and faults: corrupt, locked, unwritable or full history; two recorders at once."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetkit.foundation.status import ExitStatus
from fleetkit.history import HistoryError, NoHistoryError, Question, RunStatus, open_history
from tests.unit.history_helpers import Node, open_store, record, settings


def _expect_history_error(path: Path, match: str, **overrides: object) -> HistoryError:
    with pytest.raises(HistoryError, match=match) as caught:
        open_history(settings(path.parent.parent, **overrides))  # type: ignore[arg-type]
    assert str(path) in str(caught.value)
    assert caught.value.exit_status is ExitStatus.BAD_INPUT
    return caught.value


def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / ".fleetkit" / "history.db"
    path.parent.mkdir()
    path.write_bytes(b"this is not SQLite at all\n" * 200)
    _expect_history_error(path, "corrupt or not a fleetkit history")


def test_another_sqlite_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / ".fleetkit" / "history.db"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE accounts (id INTEGER)")
        other.commit()
    _expect_history_error(path, "not a fleetkit history")


def test_a_history_from_a_newer_fleetkit_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        history.database.connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
        path = Path(history.path)
    _expect_history_error(path, "newer fleetkit")


def test_a_damaged_run_index_is_refused_at_open(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        for _ in range(3):
            record(history, [Node("n1", [{"a": "1"}])])
        connection = history.database.connection
        root = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'runs'"
        ).fetchone()[0]
        page = connection.execute("PRAGMA page_size").fetchone()[0]
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(history.path)
    data = bytearray(path.read_bytes())
    start = (root - 1) * page
    data[start + 8 : start + 24] = b"\x7f" * 16  # the cell pointers of the table's page
    path.write_bytes(bytes(data))
    error = _expect_history_error(path, "corrupt")
    assert "move it aside" in str(error)


def test_tampered_values_are_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        run = record(history, [Node("n1", [{"a": "1"}])]).run_id
        connection = history.database.connection
        connection.execute("UPDATE nodes SET state = 'pwned'")
        with pytest.raises(HistoryError, match="corrupt") as caught:
            history.entries(run)
        assert history.path in str(caught.value)
        connection.execute("UPDATE runs SET status = 'pwned'")
        with pytest.raises(HistoryError, match="corrupt"):
            history.list_runs()
        connection.execute("UPDATE runs SET status = 'complete'")
        connection.execute("UPDATE nodes SET state = 'rows', raw_size = raw_size + 1")
        with pytest.raises(HistoryError, match="corrupt rows for node n1"):
            list(history.node_blocks(run))


def test_damage_inside_the_file_is_a_clear_error_when_reached(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        for _ in range(3):
            record(history, [Node("n1", [{"v": secrets.token_hex(3000)}] * 20)])
        path = Path(history.path)
        history.database.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 16384
    for offset in range(2 * page, len(data), page):  # every page after the schema's
        data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(HistoryError) as caught, open_history(settings(tmp_path)) as history:
        for run in history.list_runs():
            list(history.node_blocks(run.run_id))
    assert str(path) in str(caught.value)
    assert "corrupt" in str(caught.value)


def test_a_history_locked_past_the_timeout_is_refused_at_open(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        path = Path(history.path)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        _expect_history_error(path, "locked by another process", lock_timeout=0.2)
    finally:
        holder.close()
    with open_store(tmp_path, lock_timeout=0.2):  # free again
        pass


def test_a_lock_held_during_recording_makes_the_run_incomplete_not_an_exception(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path, lock_timeout=0.2) as history:
        recorder = history.begin_run(
            kind="query", question=Question("SELECT 1"), scope={}, transport="ssh"
        )
        recorder.add_node(node_id="n1", hostname="h", status="ok", rows=[{"a": "1"}])
        holder = sqlite3.connect(history.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            recorder.add_node(node_id="n2", hostname="h", status="ok", rows=[{"a": "2"}])
            outcome = recorder.finish()
        finally:
            holder.close()
    assert not outcome.complete
    assert "locked" in (outcome.note or "") and history.path in (outcome.note or "")


def test_a_path_that_is_a_directory_or_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".fleetkit" / "history.db").mkdir(parents=True)
    _expect_history_error(tmp_path / ".fleetkit" / "history.db", "is a directory")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot create history file") as caught:
        open_history(settings(tmp_path, path=str(blocker / "sub" / "history.db")))
    assert str(blocker / "sub" / "history.db") in str(caught.value)


def test_reading_a_history_that_does_not_exist_says_nothing_was_recorded(tmp_path: Path) -> None:
    with pytest.raises(NoHistoryError, match="nothing recorded yet") as caught:
        open_history(settings(tmp_path), for_writing=False)
    assert caught.value.exit_status is ExitStatus.BAD_INPUT
    assert not (tmp_path / ".fleetkit").exists()
    # A file another fleetkit has just created and not yet initialised reads the same.
    (tmp_path / ".fleetkit").mkdir()
    (tmp_path / ".fleetkit" / "history.db").touch()
    with pytest.raises(NoHistoryError):
        open_history(settings(tmp_path), for_writing=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_read_only_history_is_refused_for_recording(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        path = Path(history.path)
    path.chmod(0o400)
    try:
        _expect_history_error(path, "cannot be written")
        with open_history(settings(tmp_path), for_writing=False) as reader:
            assert reader.list_runs() == []
    finally:
        path.chmod(0o600)


# --------------------------------------------------------------------------- mounts (root)


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``directory``; skips the test when this machine cannot mount."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_read_only_filesystem_is_refused_at_open(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "4m") as mount:
        with open_store(mount):
            pass
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        _expect_history_error(mount / ".fleetkit" / "history.db", "cannot be written")


def test_a_disk_that_fills_while_recording_leaves_the_output_whole_and_the_run_incomplete(
    tmp_path: Path,
) -> None:
    """The contract: add_node/finish never raise; the caller's output is complete."""
    with tmpfs(tmp_path / "small", "1m") as mount:
        history = open_store(mount)
        recorder = history.begin_run(
            kind="query", question=Question("SELECT 1"), scope={}, transport="ssh"
        )
        output = io.BytesIO()
        for node in range(40):  # ~40 x 64 KB of incompressible rows: more than 1 MB
            rows = [{"v": secrets.token_hex(1024)} for _ in range(32)]
            output.write(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
            recorder.add_node(node_id=f"n{node}", hostname="h", status="ok", rows=rows)
        outcome = recorder.finish()
        assert not outcome.complete
        assert "full" in (outcome.note or "") and str(history.path) in (outcome.note or "")
        assert output.getvalue().count(b"\n") == 40 * 32
        assert 0 < outcome.nodes < 40
        history.close()


def test_max_page_count_full_marks_the_run_incomplete_with_the_reason(tmp_path: Path) -> None:
    with open_store(tmp_path) as history:
        record(history, [Node("n1", [{"a": "1"}])])
        pages = history.database.connection.execute("PRAGMA page_count").fetchone()[0]
        history.database.connection.execute(f"PRAGMA max_page_count = {pages + 2}")
        outcome = record(
            history, [Node(f"n{i}", [{"v": secrets.token_hex(4096)}] * 8) for i in range(8)]
        )
        run = history.get_run(outcome.run_id)
    assert not outcome.complete and "full" in (outcome.note or "")
    assert run.status is RunStatus.INCOMPLETE and "full" in (run.note or "")


# --------------------------------------------------------------------------- two processes


def _record_many(path: str, tag: str, runs: int, start: object) -> None:
    from fleetkit.history import HistorySettings, open_history

    start.wait(30)  # type: ignore[attr-defined]
    with open_history(HistorySettings(path=path, keep_days=None)) as history:
        for run in range(runs):
            recorder = history.begin_run(
                kind="query",
                question=Question(f"SELECT '{tag}'"),
                scope={"who": tag},
                transport="ssh",
            )
            for node in range(20):
                rows = [{"tag": tag, "run": str(run), "i": str(i)} for i in range(50)]
                recorder.add_node(node_id=f"n{node}", hostname=tag, status="ok", rows=rows)
            assert recorder.finish().complete


def test_two_processes_recording_at_once_both_get_every_run(tmp_path: Path) -> None:
    path = str(settings(tmp_path).path)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=_record_many, args=(path, tag, 15, start)) for tag in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with open_history(settings(tmp_path), for_writing=False) as history:
        runs = history.list_runs()
        assert len(runs) == 30
        assert all(r.status is RunStatus.COMPLETE for r in runs)
        assert all(r.coverage.rows == 20 and r.row_count == 1000 for r in runs)
        for run in runs:
            tag = run.scope["who"]
            for entry, block in history.node_blocks(run.run_id):
                assert entry.hostname == tag
                assert {json.loads(r)["tag"] for r in block.lines()} == {tag}
        integrity = history.database.connection.execute("PRAGMA integrity_check").fetchone()
    assert integrity[0] == "ok"
