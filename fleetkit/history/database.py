"""The SQLite file: opened safely, or refused with the file named.

Opening does everything that could fail for reasons outside fleetkit (a
path that is a directory, a directory that cannot be created, a file that
is not a database or is corrupt, another process holding the write lock
past ``history.lock_timeout``, a read-only file) so a command can stop
with exit 2 *before* it submits anything to the fleet.

Concurrency: WAL journal (readers never block the writer), ``synchronous =
NORMAL`` (no fsync per commit; a crash can lose the last commits, never
corrupt the file), a busy timeout, and short write transactions (the
recorder commits once per node), so two commands recording at once simply
interleave their nodes.

Confidentiality: the file is created 0600 before SQLite opens it (SQLite
gives its ``-wal`` and ``-shm`` files the same mode), and the directory
fleetkit creates for it is 0700. Rows may hold whatever the fleet answered.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from fleetkit.history.errors import HistoryError, NoHistoryError

SCHEMA_VERSION = 2
#: What each schema version added, applied in order to an older file (one transaction).
_MIGRATIONS = {
    2: (
        # What the asker asked in its own words (query SQL, hunt batches, policy packs),
        # so --retry-missing can ask it again; the redacted columns show re-tags with.
        "ALTER TABLE runs ADD COLUMN asked TEXT",
        "ALTER TABLE runs ADD COLUMN redacted TEXT",
        # A node outside the inventory whose answer was merged on request.
        "ALTER TABLE nodes ADD COLUMN unknown INTEGER NOT NULL DEFAULT 0",
    ),
}

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    question TEXT NOT NULL,
    pack TEXT,
    question_key TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    transport TEXT NOT NULL,
    job_id TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL,
    note TEXT,
    recorder TEXT,
    asked TEXT,
    redacted TEXT,
    n_rows INTEGER NOT NULL DEFAULT 0,
    n_empty INTEGER NOT NULL DEFAULT 0,
    n_failed INTEGER NOT NULL DEFAULT 0,
    n_timed_out INTEGER NOT NULL DEFAULT 0,
    n_missing INTEGER NOT NULL DEFAULT 0,
    n_excluded INTEGER NOT NULL DEFAULT 0,
    row_count INTEGER NOT NULL DEFAULT 0,
    late_nodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_started ON runs (started_at);
CREATE INDEX runs_kind ON runs (kind, started_at);
CREATE INDEX runs_question ON runs (question_key, scope_key, started_at);
CREATE TABLE nodes (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    exit_code INTEGER,
    late INTEGER NOT NULL DEFAULT 0,
    row_count INTEGER NOT NULL,
    raw_size INTEGER NOT NULL,
    digest BLOB,
    codec TEXT,
    data BLOB,
    unknown INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, node_id)
);
CREATE INDEX nodes_order ON nodes (run_id, seq);
CREATE TABLE verdicts (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    policy TEXT NOT NULL,
    verdict TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id, policy)
);
CREATE INDEX verdicts_by_host ON verdicts (node_id, policy, at);
"""


class Database:
    """One connection to the history file (autocommit; explicit short transactions)."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_timeout: float) -> None:
        self.path = path
        self.connection = connection
        self.lock_timeout = lock_timeout

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (IMMEDIATE) so it never deadlocks midway."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
            self.connection.execute("COMMIT")
        except BaseException:
            if self.connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.connection.execute("ROLLBACK")
            raise

    def error(self, exc: BaseException, doing: str) -> HistoryError:
        return describe_error(self.path, exc, doing, self.lock_timeout)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.connection.close()


def open_database(path: str | Path, *, lock_timeout: float, create: bool = True) -> Database:
    """Open (and on first use create) the history at ``path``; HistoryError names it."""
    target = Path(path)
    if target.is_dir():
        raise HistoryError(f"history file {target} is a directory")
    if not target.exists() or (not create and target.stat().st_size == 0):
        if not create:
            raise NoHistoryError(f"no history at {target} (nothing recorded yet)")
        _create_file(target)
    else:
        _check_file(target, writable=create)
    try:
        connection = sqlite3.connect(
            str(target), timeout=lock_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise describe_error(target, exc, "open", lock_timeout) from None
    database = Database(target, connection, lock_timeout)
    try:
        _prepare(database, writable=create)
    except sqlite3.Error as exc:
        database.close()
        raise database.error(exc, "open") from None
    except HistoryError:
        database.close()
        raise
    return database


def _create_file(target: Path) -> None:
    parent = target.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass  # another fleetkit process created it first
    except OSError as exc:
        raise HistoryError(f"cannot create history file {target}: {exc.strerror}") from None


def _check_file(target: Path, *, writable: bool) -> None:
    if not os.access(target, os.R_OK):
        raise HistoryError(f"history file {target} cannot be read (permission denied)")
    if not writable:
        return
    if not os.access(target, os.W_OK) or not os.access(target.parent, os.W_OK | os.X_OK):
        raise HistoryError(
            f"history file {target} cannot be written (the file and its directory must be "
            "writable; --no-history runs without recording)"
        )
    mode = stat.S_IMODE(target.stat().st_mode)
    if mode & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(target, 0o600)


def _prepare(database: Database, *, writable: bool) -> None:
    """Pragmas, then the schema check (or creation) in one write transaction."""
    connection = database.connection
    connection.execute("PRAGMA foreign_keys = ON")
    if not writable:
        if _schema_version(database, connection) < SCHEMA_VERSION:
            _upgrade(database)
        _check_schema(database, connection)
        return
    fresh = connection.execute("PRAGMA page_count").fetchone()[0] == 0
    if fresh:
        connection.execute("PRAGMA page_size = 16384")
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise HistoryError(f"history file {database.path}: cannot use WAL journaling ({mode})")
    connection.execute("PRAGMA synchronous = NORMAL")
    # A large run passes through the WAL; give the disk back once it is checkpointed.
    connection.execute("PRAGMA journal_size_limit = 67108864")
    with database.write():
        if not _has_table(connection, "meta"):
            if _has_table(connection, "runs") or _tables(connection):
                raise HistoryError(
                    f"history file {database.path} is an SQLite database but not a fleetkit "
                    "history (no fleetkit schema); point history.path elsewhere"
                )
            for statement in _SCHEMA.split(";\n"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        _migrate(connection, _schema_version(database, connection))
        _check_schema(database, connection)


def _upgrade(database: Database) -> None:
    """An older history opened only to read: upgraded in place when the file allows it."""
    if not os.access(database.path, os.W_OK):
        raise HistoryError(
            f"history file {database.path} was written by an earlier fleetkit; run a recording "
            "command (query, policy, hunt) once to upgrade it"
        )
    with database.write() as connection:
        _migrate(connection, _schema_version(database, connection))


def _migrate(connection: sqlite3.Connection, version: int) -> None:
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in _MIGRATIONS[target]:
            connection.execute(statement)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(target),))


def _schema_version(database: Database, connection: sqlite3.Connection) -> int:
    if not _has_table(connection, "meta"):
        raise HistoryError(f"history file {database.path} is not a fleetkit history")
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise HistoryError(f"history file {database.path} has no fleetkit schema version")
    return int(row[0])


def _check_schema(database: Database, connection: sqlite3.Connection) -> None:
    version = _schema_version(database, connection)
    if version != SCHEMA_VERSION:
        raise HistoryError(
            f"history file {database.path} was written by a newer fleetkit (schema {version}, "
            f"this one reads {SCHEMA_VERSION})"
        )
    # The run index is small: check it whole now, so a damaged history is refused before
    # anything is submitted. Damage among the row blocks surfaces when they are read (as
    # the same error, naming the file); checking them all here would cost seconds.
    problems = [row[0] for row in connection.execute("PRAGMA quick_check(runs)")]
    if problems != ["ok"]:
        raise HistoryError(
            f"history file {database.path} is corrupt ({problems[0]}); move it aside to start "
            "a new history"
        )


def _tables(connection: sqlite3.Connection) -> list[str]:
    return [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    return name in _tables(connection)


def describe_error(path: Path, exc: BaseException, doing: str, lock_timeout: float) -> HistoryError:
    """An SQLite or OS error as the user's problem with the file, named."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return HistoryError(
            f"history file {path} is locked by another process (waited {lock_timeout:g} s; "
            "raise history.lock_timeout, or --no-history)"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return HistoryError(
            f"history file {path} is corrupt or not a fleetkit history ({exc}); move it aside "
            "to start a new history"
        )
    if "full" in text:
        return HistoryError(f"history file {path}: the disk is full ({doing})")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return HistoryError(f"history file {path} cannot be written ({exc})")
    return HistoryError(f"history file {path}: cannot {doing} ({exc})")
