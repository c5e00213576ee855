"""``query.redact_columns`` cannot be walked around: the redaction guard, hostile forms.

The rule (sqlguard.refuse_redaction_bypass): a redacted column may only be read as
a plain result column under its own name; every other read is refused (exit 2).
The property test runs every query the guard lets through on a real SQLite
table holding secrets, blanks result columns by name as fleetkit's output does,
and checks that no secret survives.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetkit.foundation.sqlguard import refuse_redaction_bypass
from fleetkit.foundation.status import ExitStatus, UsageError

REDACTED = ("cmdline",)
SECRET = "s3cr3t-token"


def refused(sql: str) -> bool:
    try:
        refuse_redaction_bypass(sql, REDACTED)
    except UsageError as exc:
        assert exc.exit_status == ExitStatus.BAD_INPUT
        assert "query.redact_columns" in str(exc)
        return True
    return False


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT cmdline FROM processes",
        "SELECT CMDLINE FROM processes",
        'SELECT "CmdLine" FROM processes',
        "SELECT p.cmdline, p.pid FROM processes p WHERE p.pid = 1",
        "SELECT * FROM processes",
        "SELECT *, cmdline FROM processes ORDER BY pid DESC LIMIT 3",
        "SELECT cmdline, name AS cmdline2 FROM processes",
        "SELECT cmdline FROM processes -- AS x",
        "SELECT name FROM processes WHERE name = 'cmdline'",
        "SELECT 1; SELECT cmdline FROM processes",
    ],
)
def test_plain_reads_under_the_own_name_pass(sql: str) -> None:
    assert not refused(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT cmdline AS c FROM processes",
        "SELECT cmdline c FROM processes",
        "SELECT cmdline AS CMDLINE FROM processes",
        "SELECT cmdline AS cmdline FROM processes",
        'SELECT cmdline AS "x" FROM processes',
        "SELECT upper(cmdline) FROM processes",
        "SELECT cmdline || '' FROM processes",
        "SELECT substr(CmdLine, 1, 3) AS s FROM processes",
        "SELECT pid FROM processes WHERE cmdline LIKE '%token%'",
        "SELECT pid FROM processes p JOIN processes q ON p.cmdline = q.cmdline",
        "SELECT p.pid FROM processes p JOIN processes q USING (cmdline)",
        "SELECT pid FROM processes NATURAL JOIN process_open_sockets",
        "SELECT pid, count(*) FROM processes GROUP BY cmdline",
        "SELECT pid FROM processes GROUP BY pid HAVING max(cmdline) > 'm'",
        "SELECT pid FROM processes ORDER BY cmdline",
        "SELECT cmdline FROM processes ORDER BY 1",
        "SELECT cmdline FROM processes ORDER BY +1 DESC",
        "SELECT cmdline, pid FROM processes GROUP BY 0x1",
        "SELECT DISTINCT cmdline FROM processes",
        "SELECT x FROM (SELECT cmdline AS x FROM processes)",
        "SELECT cmdline FROM (SELECT cmdline FROM processes)",
        "WITH t AS (SELECT cmdline FROM processes) SELECT cmdline FROM t",
        "SELECT name FROM processes UNION SELECT cmdline FROM processes",
        "SELECT (SELECT cmdline FROM processes LIMIT 1) AS n",
        "SELECT pid FROM processes WHERE pid IN (SELECT pid FROM processes WHERE cmdline = 'x')",
        "CREATE TEMP TABLE t AS SELECT cmdline FROM processes",
        "INSERT INTO t SELECT cmdline FROM processes",
        "SELECT pid, row_number() OVER (ORDER BY cmdline) FROM processes",
        "SELECT cmdline FROM processes WHERE cmdline = cmdline",
        "SELECT cmdline FROM processes; SELECT cmdline AS x FROM processes",
    ],
)
def test_every_other_read_is_refused(sql: str) -> None:
    assert refused(sql)


def test_the_message_names_the_column_and_the_setting() -> None:
    with pytest.raises(UsageError, match="redacted column 'cmdline'") as caught:
        refuse_redaction_bypass("SELECT cmdline AS c FROM processes", ["CmdLine"])
    assert "settings query.redact_columns" in str(caught.value)
    assert "nothing was submitted" in str(caught.value)


def test_nothing_is_checked_without_redacted_columns() -> None:
    refuse_redaction_bypass("SELECT cmdline AS c FROM processes", [])


def test_a_query_sqlite_cannot_compile_may_not_name_a_redacted_column() -> None:
    with pytest.raises(UsageError, match="could not compile"):
        refuse_redaction_bypass("SELECT cmdline FROM processes WHERE", REDACTED)
    refuse_redaction_bypass("SELECT pid FROM processes WHERE", REDACTED)


def test_spelling_every_case_variant_in_the_query_cannot_fake_a_plain_column() -> None:
    # "id" has four spellings; a query that contains them all leaves no unseen
    # spelling to recognise plain references by, so any read is refused.
    sql = "SELECT id AS iD, 1 AS Id, 2 AS ID FROM t"
    with pytest.raises(UsageError):
        refuse_redaction_bypass(sql, ["id"])


# --------------------------------------------------------------------------- property


def secret_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE processes (pid, name, cmdline)")
    db.executemany(
        "INSERT INTO processes VALUES (?, ?, ?)",
        [(1, "sshd", f"{SECRET}-a"), (2, "cron", f"{SECRET}-b")],
    )
    return db


DB = secret_db()

spellings = st.sampled_from(
    ["cmdline", "CMDLINE", "CmdLine", '"cmdline"', "[cmdline]", "p.cmdline"]
)
aliases = st.sampled_from(["", " AS cmdline", " AS CMDLINE", " AS x", ' "cmdline"', " AS pid"])


@st.composite
def result_column(draw: st.DrawFn) -> str:
    column = draw(spellings)
    form = draw(st.sampled_from(["{}", "upper({})", "{} || ''", "substr({}, 1)", "'k'", "name"]))
    return form.format(column) + draw(aliases)


@st.composite
def hostile_query(draw: st.DrawFn) -> str:
    columns = draw(st.lists(result_column(), min_size=1, max_size=3))
    where = draw(st.sampled_from(["", " WHERE pid > 0", f" WHERE {draw(spellings)} LIKE '%'"]))
    order = draw(st.sampled_from(["", " ORDER BY pid", " ORDER BY 1"]))
    return f"SELECT {', '.join(columns)} FROM processes p{where}{order}"


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(hostile_query())
def test_whatever_the_guard_lets_through_carries_no_secret_after_redaction(sql: str) -> None:
    if refused(sql):
        return
    cursor = DB.execute(sql)
    names = [d[0] for d in cursor.description]
    for row in cursor.fetchall():
        shown = [value for name, value in zip(names, row, strict=True) if name not in REDACTED]
        assert not any(SECRET in str(value) for value in shown), (sql, names, row)
