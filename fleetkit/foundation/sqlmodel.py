"""SQLite's own view of one statement: which tables it touches, which columns it reads.

fleetkit does not know the schema of the tables on the nodes (osquery's, plus
extensions), and it must not guess the grammar: SQLite accepts a table name as
a bare word, "double-quoted", [bracketed], `backticked` or even as a
'string literal', schema-qualified, with comments anywhere. So the statement is
compiled by SQLite itself (the Python standard library's), on an in-memory
database that models the unknown schema and grows from SQLite's own errors:
"no such table: x" creates the table, "no such column: y" the column, "no such
function: f" a function; then the compile is retried (bounded by
:data:`MAX_ATTEMPTS`). What SQLite resolved is reported twice over:

- the authorizer callback (``set_authorizer``) gets every table and column a
  name resolved to, and every schema change (views, triggers, ...);
- the compiled program (``EXPLAIN``) opens a cursor on every table it reads,
  which also covers tables joined only through ``USING``/``NATURAL`` (their
  join columns never pass the authorizer).

Nothing runs on the model: the statement is only compiled (``EXPLAIN``), except
in :func:`result_names`, which executes a single plain SELECT over empty tables
under a VM-step budget to learn its result column names.

If SQLite cannot compile the statement even after learning, the result says so
(``error``); the caller decides (the guard then falls back to a conservative
token check, see :mod:`fleetkit.foundation.sqlguard`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Compile attempts per statement (each may teach the model one table, column or function).
MAX_ATTEMPTS = 400
#: VM steps allowed when a plain SELECT runs over the (empty) model to name its columns.
RESULT_NAME_STEPS = 200_000
_SCHEMAS = ("main", "temp")
_MODEL_COLUMN = "fleetkit model column"

_NO_TABLE = re.compile(r"no such table: (.+)", re.DOTALL)
_NO_COLUMN = re.compile(r"no such column: (.+)", re.DOTALL)
_AMBIGUOUS = re.compile(r"ambiguous column name: (.+)", re.DOTALL)
_NO_FUNCTION = re.compile(r"no such function: (.+)", re.DOTALL)
_NO_COLLATION = re.compile(r"no such collation sequence: (.+)", re.DOTALL)
_JOIN_USING = re.compile(
    r"cannot join using column (.+) - column not present in both tables", re.DOTALL
)
_NOT_A_FUNCTION = re.compile(r"'(.+)' is not a function", re.DOTALL)
_DQ_HINT = re.compile(r'"(.+)" - should this be a string literal in single-quotes\?', re.DOTALL)

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """The form SQLite compares identifiers in (ASCII case-insensitive)."""
    return name.translate(_ASCII_LOWER)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Access:
    """One authorizer report or one cursor the compiled program opens.

    ``action`` is the authorizer's action code (``sqlite3.SQLITE_READ``...), or
    :data:`OPENED` for a table the program opens, or :data:`CALLED_AS_FUNCTION`
    for a table used with table-valued-function syntax (``x(...)``).
    """

    action: int
    table: str = ""
    column: str = ""
    detail: str = ""


OPENED = -1
CALLED_AS_FUNCTION = -2


@dataclass(frozen=True)
class Analysis:
    statement: str
    #: What the last compile reported (complete when it succeeded).
    accesses: tuple[Access, ...]
    #: None when SQLite compiled the statement on the model; else its last error.
    error: str | None
    #: What failed attempts reported before their error: names SQLite had resolved.
    earlier: tuple[Access, ...] = ()

    @property
    def compiled(self) -> bool:
        return self.error is None


@dataclass
class _Table:
    name: str
    columns: dict[str, str] = field(default_factory=dict)  # folded -> declared


@dataclass
class Model:
    """The schema the statement needs, learned from SQLite's errors.

    ``declare`` maps a folded column name to the spelling to declare it with
    (the redaction check declares redacted columns in a spelling the SQL does
    not contain, so a result column bearing it can only be a plain reference).
    """

    seed_tables: Iterable[str] = ()
    declare: dict[str, str] = field(default_factory=dict)
    tables: dict[tuple[str, str], _Table] = field(default_factory=dict)
    functions: set[str] = field(default_factory=set)
    collations: set[str] = field(default_factory=set)
    #: column -> index into the tables it was spread over, once a spread proved ambiguous
    _narrowed: dict[str, int] = field(default_factory=dict)
    _spread: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.seed_tables:
            self.tables.setdefault(("main", fold(name)), _Table(name))

    # ----------------------------------------------------------------- building

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)
        for (schema, _key), table in self.tables.items():
            columns = [quote_identifier(_MODEL_COLUMN)]
            columns += [quote_identifier(c) for c in table.columns.values()]
            db.execute(
                f"CREATE TABLE {schema}.{quote_identifier(table.name)} ({', '.join(columns)})"
            )
        for name in self.functions:
            db.create_function(name, -1, _null)
        for name in self.collations:
            db.create_collation(name, _compare)
        return db

    def _add_column(self, key: tuple[str, str], column: str) -> bool:
        table = self.tables[key]
        folded = fold(column)
        if folded in table.columns:
            return False
        table.columns[folded] = self.declare.get(folded, column)
        return True

    def has_column(self, folded: str) -> bool:
        return any(folded in table.columns for table in self.tables.values())

    def _drop_column(self, key: tuple[str, str], column: str) -> None:
        self.tables[key].columns.pop(fold(column), None)

    # ----------------------------------------------------------------- learning

    def learn(self, message: str) -> bool:
        """Grow the model from one SQLite error; False when there is nothing to learn."""
        if match := _NO_TABLE.fullmatch(message):
            return self._learn_table(match.group(1))
        if match := _NO_COLUMN.fullmatch(message):
            hint = _DQ_HINT.fullmatch(match.group(1))
            return self._learn_column(hint.group(1) if hint else match.group(1))
        if match := _AMBIGUOUS.fullmatch(message):
            return self._narrow(match.group(1))
        if match := _JOIN_USING.fullmatch(message):
            return self.spread_column(match.group(1))
        if match := _NO_FUNCTION.fullmatch(message):
            return _add(self.functions, match.group(1))
        if match := _NO_COLLATION.fullmatch(message):
            return _add(self.collations, match.group(1))
        return False

    def _learn_table(self, text: str) -> bool:
        learned = False
        schema, dot, rest = text.partition(".")
        if dot and fold(schema) in _SCHEMAS:
            learned |= _add_table(self.tables, fold(schema), rest)
        # a quoted name may itself contain a dot: model that reading too
        learned |= _add_table(self.tables, "main", text)
        return learned

    def _learn_column(self, text: str) -> bool:
        parts = text.rsplit(".", 2)
        column = parts[-1]
        if len(parts) == 1:
            return self.spread_column(column)
        qualifier = fold(parts[-2])
        schemas = [fold(parts[0])] if len(parts) == 3 else list(_SCHEMAS)
        keys = [(s, qualifier) for s in schemas if (s, qualifier) in self.tables]
        if any([self._add_column(key, column) for key in keys]):
            return True
        # the qualifier is an alias (perhaps sharing a table's name): any table may be behind it
        return self.spread_column(column)

    def spread_column(self, column: str) -> bool:
        folded = fold(column)
        if folded in self._narrowed:
            return self._next_holder(column)
        spread = self._spread.setdefault(folded, [])
        learned = False
        for key in self.tables:
            if self._add_column(key, column):
                spread.append(key)
                learned = True
        return learned

    def _narrow(self, text: str) -> bool:
        """An unqualified column spread over several tables is ambiguous: keep one holder."""
        column = text.rsplit(".", 1)[-1]
        folded = fold(column)
        spread = self._spread.get(folded, [])
        if folded in self._narrowed or len(spread) < 2:
            return False
        self._narrowed[folded] = 0
        for key in spread[1:]:
            self._drop_column(key, column)
        return True

    def _next_holder(self, column: str) -> bool:
        folded = fold(column)
        spread = self._spread[folded]
        index = self._narrowed[folded] + 1
        if index >= len(spread):
            return False
        self._drop_column(spread[index - 1], column)
        self._narrowed[folded] = index
        return self._add_column(spread[index], column)

    def root_pages(self, db: sqlite3.Connection) -> dict[tuple[int, int], str]:
        """(database index, root page) -> table name, to read ``OpenRead`` opcodes."""
        pages: dict[tuple[int, int], str] = {}
        for index, master in ((0, "sqlite_master"), (1, "sqlite_temp_master")):
            for name, page in db.execute(f"SELECT name, rootpage FROM {master}"):
                pages[(index, page)] = name
        return pages


def _null(*_args: object) -> None:
    return None


def _compare(_a: str, _b: str) -> int:
    return 0


def _add(names: set[str], name: str) -> bool:
    if name in names:
        return False
    names.add(name)
    return True


def _add_table(tables: dict[tuple[str, str], _Table], schema: str, name: str) -> bool:
    key = (schema, fold(name))
    if key in tables:
        return False
    tables[key] = _Table(name)
    return True


# --------------------------------------------------------------------------- compiling


def analyze(statement: str, model: Model, *, quoted: Iterable[str] = ()) -> Analysis:
    """Compile one statement on the model, learning the schema; report what it touches.

    ``statement`` must be exactly one statement (see ``sqlguard.split_statements``)
    and must not start with EXPLAIN (the caller strips it: it is added here).
    Accesses reported by failed attempts are kept: a name SQLite resolved before
    failing on something else was still resolved.

    ``quoted``: the statement's quoted identifiers. SQLite reads a
    "double-quoted" name that matches no column as a string literal; on the
    node it may be a column. So each one that the model compiled as no column
    becomes a column too, and the statement is compiled again.
    """
    pending = {fold(name): name for name in quoted}
    earlier: list[Access] = []
    accesses: list[Access] = []
    error = "not compiled"
    for _attempt in range(MAX_ATTEMPTS):
        earlier += accesses
        accesses = []
        db = model.connect()
        try:
            outcome = _compile(db, statement, model, accesses)
        finally:
            db.close()
        if outcome is None:
            unresolved = [n for k, n in pending.items() if not model.has_column(k)]
            if not any([model.spread_column(name) for name in unresolved]):
                return Analysis(statement, tuple(accesses), None, tuple(earlier))
            continue
        error = outcome
        if match := _NOT_A_FUNCTION.fullmatch(outcome):
            accesses.append(Access(CALLED_AS_FUNCTION, match.group(1)))
        learned = model.learn(outcome)
        if not learned:
            break
    return Analysis(statement, tuple(accesses), error, tuple(earlier))


def _compile(
    db: sqlite3.Connection, statement: str, model: Model, accesses: list[Access]
) -> str | None:
    """None when compiled (accesses appended), else SQLite's error message."""

    def authorize(
        action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
    ) -> int:
        accesses.append(Access(action, arg1 or "", arg2 or "", _db or ""))
        return sqlite3.SQLITE_OK

    pages = model.root_pages(db)
    db.set_authorizer(authorize)
    try:
        program = db.execute("EXPLAIN " + statement).fetchall()
    except (sqlite3.Error, OverflowError, MemoryError, RecursionError) as exc:
        return str(exc) or type(exc).__name__
    finally:
        db.set_authorizer(None)
    for row in program:
        opcode, p2, p3 = row[1], row[3], row[4]
        if opcode in ("OpenRead", "OpenWrite") and (p3, p2) in pages:
            accesses.append(Access(OPENED, pages[(p3, p2)]))
    return None


def result_names(statement: str, model: Model) -> list[str] | None:
    """The result column names of one plain SELECT, run over the model's empty tables.

    None when it cannot be run within :data:`RESULT_NAME_STEPS` VM steps.
    Only call this for a single SELECT without subqueries (nothing else runs).
    """
    db = model.connect()
    steps = {"left": RESULT_NAME_STEPS // 1000}

    def budget() -> int:
        steps["left"] -= 1
        return 1 if steps["left"] < 0 else 0

    db.set_progress_handler(budget, 1000)
    try:
        cursor = db.execute(statement)
        names = [column[0] for column in cursor.description or ()]
        cursor.fetchmany(1)
        return names
    except (sqlite3.Error, OverflowError, MemoryError, RecursionError):
        return None
    finally:
        db.close()
