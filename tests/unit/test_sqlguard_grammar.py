"""The denied-table guard against SQLite's own view, on generated SQL (hypothesis).

The oracle is SQLite itself: an in-memory database that really holds the
tables (denied and allowed, with their columns); a statement reads a denied
table when its compiled program (``EXPLAIN``) opens one. The guard knows none
of that schema, so agreeing with the oracle on every generated form is the
claim "decided by SQLite's grammar, whatever the token kind" put to the test.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetkit.foundation.sqlguard import refuse_denied_tables
from fleetkit.foundation.status import ExitStatus, UsageError

DENIED = ("curl", "shell_history")
ALLOWED = ("users", "processes")
SCHEMA = {
    "curl": ("uid", "url", "result"),
    "shell_history": ("uid", "command"),
    "users": ("uid", "username"),
    "processes": ("uid", "pid", "name"),
}
CHECK = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def oracle_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    for table, columns in SCHEMA.items():
        db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
        db.execute(f"CREATE TEMP TABLE {table} ({', '.join(columns)})")
    return db


ORACLE = oracle_db()
ROOT_PAGES = {
    (index, page): name
    for index, master in ((0, "sqlite_master"), (1, "sqlite_temp_master"))
    for name, page in ORACLE.execute(f"SELECT name, rootpage FROM {master}")
}


def oracle_reads_denied(sql: str) -> bool:
    """SQLite's own answer: does the compiled program open a denied table?"""
    program = ORACLE.execute("EXPLAIN " + sql).fetchall()
    opened = {
        ROOT_PAGES.get((row[4], row[3])) for row in program if row[1] in ("OpenRead", "OpenWrite")
    }
    return bool(opened & set(DENIED))


def guard_refuses(sql: str) -> bool:
    try:
        refuse_denied_tables(sql, DENIED)
    except UsageError as exc:
        assert exc.exit_status == ExitStatus.BAD_INPUT
        return True
    return False


# --------------------------------------------------------------------------- generators

separators = st.sampled_from([" ", "/**/", "/* FROM curl */", "-- curl\n", "\n\t", " /*x*/ "])
comments = st.one_of(st.just(""), separators)


@st.composite
def case_of(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))


@st.composite
def table_ref(draw: st.DrawFn, name: str) -> str:
    """``name`` in any form SQLite accepts in table position."""
    spelled = draw(case_of(name))
    quote = draw(st.sampled_from(["bare", "double", "bracket", "backtick", "string"]))
    token = {
        "bare": spelled,
        "double": f'"{spelled}"',
        "bracket": f"[{spelled}]",
        "backtick": f"`{spelled}`",
        "string": f"'{spelled}'",
    }[quote]
    schema = draw(st.sampled_from(["", "main", "temp", "MAIN", '"temp"', "[main]"]))
    if schema:
        token = f"{schema}{draw(comments)}.{draw(comments)}{token}"
    return token


tables = st.sampled_from(DENIED + ALLOWED)


@st.composite
def statement(draw: st.DrawFn) -> str:
    a, b = draw(tables), draw(tables)
    ra, rb = draw(table_ref(a)), draw(table_ref(b))
    c = draw(comments)
    shape = draw(st.integers(0, 11))
    return [
        f"SELECT *{c}FROM{c} {ra}",
        f"SELECT count(*) FROM {ra}{c}",
        f"SELECT 1 FROM {ra} JOIN {rb} USING (uid)",
        f"SELECT 1 FROM {ra} NATURAL JOIN {rb}",
        f"SELECT x.uid FROM {ra} AS x, {rb} y WHERE x.uid = y.uid",
        f"SELECT 1 WHERE EXISTS (SELECT 1 FROM {ra}{c})",
        f"WITH c AS (SELECT * FROM {ra}) SELECT * FROM c",
        f"SELECT uid FROM {ra} UNION SELECT uid FROM {rb}",
        f"SELECT * FROM users WHERE uid IN (SELECT uid FROM {ra})",
        f"SELECT (SELECT count(*) FROM {ra}) AS n, '{a}' AS s",
        f"WITH {a} AS (SELECT 1 AS uid) SELECT uid FROM {ra}",
        f"SELECT 1;{c}SELECT 1 FROM {ra} LEFT JOIN {rb} ON 1",
    ][shape]


@CHECK
@given(statement())
def test_the_guard_agrees_with_sqlite_on_every_table_form(sql: str) -> None:
    expected = any(oracle_reads_denied(part) for part in sql.split(";"))
    assert guard_refuses(sql) == expected, sql


@CHECK
@given(st.sampled_from(DENIED).flatmap(table_ref), separators)
def test_every_form_of_a_denied_name_in_table_position_is_refused(ref: str, c: str) -> None:
    assert guard_refuses(f"SELECT{c}*{c}FROM{c}{ref}{c}WHERE 1")


@CHECK
@given(st.sampled_from(DENIED).flatmap(case_of), comments)
def test_a_denied_name_as_data_alias_or_column_is_not_a_read(name: str, c: str) -> None:
    for sql in (
        f"SELECT '{name}'{c}AS label FROM users",
        f"SELECT * FROM processes WHERE name = '{name}'{c}",
        f"SELECT uid AS {name} FROM users {c}",
        f"SELECT {name}.uid FROM users AS {name}",
        f"SELECT * FROM users -- FROM {name}",
    ):
        assert not guard_refuses(sql), sql


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE VIEW v AS SELECT 1",
        "CREATE TEMP VIEW v AS SELECT * FROM users",
        "CREATE TRIGGER t AFTER INSERT ON users BEGIN SELECT 1; END",
        "CREATE VIRTUAL TABLE x USING curl",
        "ATTACH '/tmp/x.db' AS x",
        "ALTER TABLE curl RENAME TO innocent",
    ],
)
def test_objects_that_could_hide_a_read_cannot_be_created(sql: str) -> None:
    assert guard_refuses(sql)


def test_a_table_valued_call_of_a_denied_table_is_refused() -> None:
    assert guard_refuses("SELECT * FROM curl('http://169.254.169.254/')")
    assert guard_refuses("SELECT * FROM hash((SELECT url FROM curl LIMIT 1))")


def test_what_sqlite_cannot_compile_is_refused_only_when_it_names_a_denied_table() -> None:
    # unknown database: the node would fail too, but a denied name is never sent
    with pytest.raises(UsageError, match=r"may read denied table 'curl'.*no such table"):
        refuse_denied_tables("SELECT * FROM other.curl", DENIED)
    refuse_denied_tables("SELECT * FROM other.users", DENIED)
    refuse_denied_tables("SELEKT broken", DENIED)


def test_long_hostile_sql_is_bounded_in_the_message() -> None:
    name = "x" * 5000
    with pytest.raises(UsageError) as caught:
        refuse_denied_tables(f"SELECT * FROM {name}(1) JOIN curl", DENIED)
    assert len(str(caught.value)) < 400


def test_undecodable_text_and_deep_nesting_are_handled_without_a_crash() -> None:
    with pytest.raises(UsageError, match="not valid text"):
        refuse_denied_tables("SELECT * FROM cu\udcffrl", DENIED)
    # SQLite's parser stack overflows here; the fallback still sees the name
    deep = "SELECT " + "(" * 5000 + "1" + ")" * 5000 + " FROM curl"
    assert guard_refuses(deep)
    assert not guard_refuses(deep.replace("curl", "users"))
