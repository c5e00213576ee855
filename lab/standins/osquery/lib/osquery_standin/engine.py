"""The stand-in's SQL engine: stdlib sqlite3 in memory, tables filled on demand.

Every known (and not disabled) table is created empty; each statement is
first prepared (``EXPLAIN``) under an authorizer that records which tables
it reads, then only those tables are filled from the host's real facts and
the statement runs for real. The authorizer also refuses ``ATTACH`` and
pragmas other than ``table_info``, as osquery's does. ``hash`` and ``file``
need a path/directory constraint: the absolute-path string literals of the
SQL say which files to look at, and SQLite's WHERE then filters exactly.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from osquery_standin import facts
from osquery_standin.schema import REQUIRED, TABLES

SQLITE_ERROR = 1
SQLITE_CONSTRAINT = 19
SQLITE_AUTH = 23

_LITERAL_RE = re.compile(r"'((?:[^']|'')*)'")
_COLUMN_BEFORE_RE = re.compile(r"\b(path|directory)\b", re.IGNORECASE)
_UID_RE = re.compile(r"\buid\s*(?:=|==)\s*'?(\d+)", re.IGNORECASE)
_ALLOWED_PRAGMAS = {"table_info", "table_xinfo", "table_list"}


class QueryError(Exception):
    """A failed query: ``message`` as osquery prints it after ``Error: ``, ``code`` = exit."""

    def __init__(self, message: str, code: int = SQLITE_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Result:
    """One statement's columns (in SELECT order) and rows (all strings)."""

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


def split_statements(sql: str) -> list[str]:
    """Complete SQL statements in ``sql`` (``;`` inside literals does not split)."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statements.append(sql[start:index])
            start = index + 1
    statements.append(sql[start:])
    return [s for s in statements if s.strip() and not _only_comments(s)]


def _only_comments(statement: str) -> bool:
    text = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.DOTALL)
    return not text.strip()


def constraints(sql: str, ctx: facts.Context) -> None:
    """Fill ``ctx`` with the file constraints and uids named in ``sql``'s literals."""
    for match in _LITERAL_RE.finditer(sql):
        value = match.group(1).replace("''", "'")
        if not value.startswith("/"):
            continue
        if "%" in value:
            ctx.patterns.append(value)
            continue
        before = list(_COLUMN_BEFORE_RE.finditer(sql[max(0, match.start() - 200) : match.start()]))
        if before and before[-1].group(1).lower() == "directory":
            ctx.directories.append(value.rstrip("/") or "/")
        else:
            ctx.paths.append(value)
    ctx.uids = [int(u) for u in _UID_RE.findall(sql)]


class Engine:
    """One in-memory database answering one request (tables are per-request snapshots)."""

    def __init__(self, disabled: Iterable[str] = (), base: facts.Context | None = None) -> None:
        self.disabled = {t.strip() for t in disabled if t.strip()}
        self.base = base or facts.Context()
        self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.filled: set[str] = set()
        self._reads: set[str] = set()
        self._register_functions()
        for table, columns in TABLES.items():
            if table not in self.disabled:
                spec = ", ".join(f'"{name}" {kind}' for name, kind in columns)
                self.db.execute(f'CREATE TABLE "{table}" ({spec})')
        self.rootpages: dict[int, str] = dict(
            self.db.execute("SELECT rootpage, name FROM sqlite_master WHERE type = 'table'")
        )

    def close(self) -> None:
        self.db.close()

    def run(self, sql: str) -> list[Result]:
        """Every statement's result; the first failure raises :class:`QueryError`."""
        statements = split_statements(sql)
        ctx = facts.Context(
            start_time=self.base.start_time,
            instance_id=self.base.instance_id,
            extensions=self.base.extensions,
        )
        constraints(sql, ctx)
        results = []
        for statement in statements:
            tables = self._tables_read(statement)
            ctx.all_users = ctx.all_users or "users" in tables
            for table in sorted(tables - self.filled):
                self._fill(table, ctx)
            results.append(self._execute(statement))
        return results

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and arg1 in TABLES:
            self._reads.add(arg1)
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in _ALLOWED_PRAGMAS:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _tables_read(self, statement: str) -> set[str]:
        """Tables the statement opens: the authorizer's reads plus the bytecode's OpenRead.

        The authorizer alone misses tables only touched through ``USING``
        columns, so the ``EXPLAIN`` program's cursors are mapped to tables too.
        """
        self._reads = set()
        self.db.set_authorizer(self._authorize)
        try:
            program = self.db.execute("EXPLAIN " + statement).fetchall()
        except sqlite3.Error as exc:
            raise _query_error(exc) from None
        finally:
            self.db.set_authorizer(None)
        opened = {row[3] for row in program if row[1] in ("OpenRead", "OpenWrite")}
        return self._reads | {self.rootpages[page] for page in opened if page in self.rootpages}

    def _fill(self, table: str, ctx: facts.Context) -> None:
        required = REQUIRED.get(table)
        if required and not (ctx.paths or ctx.directories or ctx.patterns):
            # osquery: the table's xBestIndex refuses a scan without path/directory
            raise QueryError("no query solution", SQLITE_CONSTRAINT)
        columns = [name for name, _ in TABLES[table]]
        rows = [tuple(row.get(c) for c in columns) for row in facts.GENERATORS[table](ctx)]
        marks = ", ".join("?" for _ in columns)
        self.db.set_authorizer(None)
        self.db.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)
        self.filled.add(table)

    def _execute(self, statement: str) -> Result:
        self.db.set_authorizer(self._authorize)
        try:
            cursor = self.db.execute(statement)
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise _query_error(exc) from None
        columns = [d[0] for d in cursor.description or []]
        return Result(columns, [[_text(v) for v in row] for row in rows])

    def _register_functions(self) -> None:
        functions: dict[tuple[str, int], Callable[..., Any]] = {
            ("regex_match", 3): _regex_match,
            ("split", 3): _split,
            ("version_compare", 2): _version_compare,
            ("md5", 1): lambda s: _digest("md5", s),
            ("sha1", 1): lambda s: _digest("sha1", s),
            ("sha256", 1): lambda s: _digest("sha256", s),
            ("to_base64", 1): lambda s: None if s is None else base64.b64encode(_b(s)).decode(),
            ("from_base64", 1): _from_base64,
        }
        for (name, arity), function in functions.items():
            self.db.create_function(name, arity, function, deterministic=True)


def _query_error(exc: sqlite3.Error) -> QueryError:
    code = getattr(exc, "sqlite_errorcode", SQLITE_ERROR) & 0xFF or SQLITE_ERROR
    return QueryError(str(exc), code)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return str(value)


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


def _digest(name: str, value: object) -> str | None:
    return None if value is None else hashlib.new(name, _b(value)).hexdigest()


def _from_base64(value: object) -> str | None:
    try:
        return base64.b64decode(_b(value)).decode("utf-8", errors="replace")
    except ValueError:
        return None


def _regex_match(value: object, pattern: object, index: object) -> str | None:
    if value is None or pattern is None:
        return None
    match = re.search(str(pattern), str(value))
    if match is None:
        return None
    try:
        return match.group(int(str(index)))
    except (IndexError, ValueError):
        return None


def _split(value: object, tokens: object, index: object) -> str | None:
    if value is None or tokens is None:
        return None
    parts = [p for p in re.split("[" + re.escape(str(tokens)) + "]", str(value)) if p]
    i = int(str(index))
    return parts[i] if 0 <= i < len(parts) else None


def _version_compare(left: object, right: object) -> int | None:
    if left is None or right is None:
        return None

    def key(text: str) -> list[tuple[int, int | str]]:
        return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-:+~]", text)]

    a, b = key(str(left)), key(str(right))
    return (a > b) - (a < b)
