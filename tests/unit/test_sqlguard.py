"""The denied-table guard and the SQL literal helpers, against hostile input."""

from __future__ import annotations

import sqlite3

import pytest

from fleetkit.foundation.settings import DEFAULT_DISABLED_TABLES
from fleetkit.foundation.sqlguard import (
    TokenKind,
    named_identifiers,
    refuse_denied_tables,
    split_statements,
    sql_string_literal,
    tokenize,
)
from fleetkit.foundation.status import ExitStatus, UsageError

DENIED = DEFAULT_DISABLED_TABLES


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM curl",
        "select * from CURL where url = 'http://169.254.169.254/'",
        "SELECT * FROM Curl_Certificate",
        'SELECT * FROM "curl"',
        'SELECT * FROM "CURL"',
        "SELECT * FROM [curl]",
        "SELECT * FROM `curl`",
        "SELECT * FROM main.curl",
        'SELECT * FROM main."shell_history"',
        "SELECT * FROM users JOIN shell_history USING (uid)",
        "SELECT * FROM users CROSS JOIN shell_history",
        "SELECT * FROM users u LEFT OUTER JOIN process_envs p ON p.pid = 1",
        "SELECT * FROM users, carves",
        "SELECT * FROM users,carves",
        "SELECT * FROM (SELECT * FROM (SELECT * FROM process_envs))",
        "SELECT (SELECT count(*) FROM curl) AS n",
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM curl)",
        "WITH x AS (SELECT * FROM curl) SELECT * FROM x",
        "SELECT 1 UNION SELECT 2 FROM curl",
        "SELECT * FROM curl('http://x')",
        "SELECT * FROM\tcurl",
        "SELECT * FROM\ncurl",
        "SELECT * FROM/**/curl",
        "SELECT * FROM/* 'not a string' */curl",
        "SELECT '--' FROM curl",
        "SELECT 'a''b' FROM curl",
        "SELECT '/*' FROM curl --*/",
        "SELECT 1; SELECT * FROM curl",
        "SELECT x'00' FROM curl",
        'SELECT "a""b" FROM curl',
        "SELECT [a]] FROM curl",
        "SELECT 'a\\' FROM curl",  # a backslash escapes nothing: the string ends before FROM
    ],
)
def test_a_denied_table_is_refused_wherever_it_is_read(sql: str) -> None:
    with pytest.raises(UsageError) as caught:
        refuse_denied_tables(sql, DENIED)
    assert caught.value.exit_status == ExitStatus.BAD_INPUT
    assert "nothing was submitted" in str(caught.value)
    assert "settings osquery.disabled_tables" in str(caught.value)


def test_the_message_names_the_table() -> None:
    with pytest.raises(UsageError, match="query reads denied table 'curl' "):
        refuse_denied_tables('SELECT * FROM "CuRl"', DENIED)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "SELECT 'curl'",
        "SELECT * FROM users WHERE shell = 'SELECT * FROM curl'",
        "SELECT * FROM users WHERE username = 'it''s curl'",
        "SELECT * FROM users -- FROM curl",
        "SELECT * FROM users /* JOIN curl */",
        "SELECT * FROM users /* unterminated comment runs to the end: FROM curl",
        "SELECT * FROM curly",
        "SELECT * FROM my_curl",
        "SELECT * FROM processes WHERE name LIKE '%curl%'",
        "SELECT * FROM hash WHERE path = '/usr/bin/curl'",
        "SELECT * FROM deb_packages WHERE name = 'curl'",
        "SELECT * FROM shell_history_archive",
    ],
)
def test_a_denied_name_that_is_data_or_a_comment_is_not_a_read(sql: str) -> None:
    refuse_denied_tables(sql, DENIED)


def test_nothing_is_refused_when_no_table_is_denied() -> None:
    refuse_denied_tables("SELECT * FROM curl", [])


def test_folding_is_ascii_like_sqlite() -> None:
    # SQLite folds only ASCII letters: the Kelvin sign is not a 'k'.
    refuse_denied_tables("SELECT * FROM \u212aernel_info", ["kernel_info"])
    with pytest.raises(UsageError):
        refuse_denied_tables("SELECT * FROM KERNEL_INFO", ["kernel_info"])


def test_non_ascii_identifier_chars_are_part_of_the_word() -> None:
    # "curlé" is another (unknown) table, not "curl" followed by junk.
    refuse_denied_tables("SELECT * FROM curlé", DENIED)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'unterminated FROM curl",
        'SELECT * FROM "curl',
        "SELECT * FROM [curl",
        "SELECT * FROM `curl",
        # no backslash escapes in SQL: 'x\' is a whole string, the last quote opens another
        "SELECT 'x\\' FROM users WHERE a = '",
    ],
)
def test_unterminated_literals_are_refused_not_guessed(sql: str) -> None:
    with pytest.raises(UsageError, match="unterminated"):
        refuse_denied_tables(sql, DENIED)


def test_nul_is_refused() -> None:
    with pytest.raises(UsageError, match="NUL"):
        refuse_denied_tables("SELECT 1\x00 FROM curl", DENIED)


def test_tokens_follow_sqlite_quoting() -> None:
    tokens = list(tokenize("SELECT 'it''s', \"a\"\"b\", [x y], `q``r` -- c\nFROM t"))
    kinds = [(t.kind, t.text) for t in tokens if t.kind is not TokenKind.OTHER]
    assert kinds == [
        (TokenKind.IDENTIFIER, "SELECT"),
        (TokenKind.STRING, "it's"),
        (TokenKind.QUOTED_IDENTIFIER, 'a"b'),
        (TokenKind.QUOTED_IDENTIFIER, "x y"),
        (TokenKind.QUOTED_IDENTIFIER, "q`r"),
        (TokenKind.IDENTIFIER, "FROM"),
        (TokenKind.IDENTIFIER, "t"),
    ]


def test_named_identifiers_skip_literals() -> None:
    assert named_identifiers("SELECT a FROM T WHERE b = 'curl'") == {
        "select",
        "a",
        "from",
        "t",
        "where",
        "b",
    }


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "it's",
        "''",
        "'; DROP TABLE users; --",
        "a\\'b",
        '"double"',
        "$(touch /tmp/canary) `id`",
        "line\nbreak",
        "ünïcødé ✓",
        "%_[*]?",
    ],
)
def test_string_literals_round_trip_through_sqlite(value: str) -> None:
    literal = sql_string_literal(value)
    with sqlite3.connect(":memory:") as db:
        assert db.execute(f"SELECT {literal}").fetchone() == (value,)
    # and the guard sees one string, nothing else
    assert [t.kind for t in tokenize(literal)] == [TokenKind.STRING]


def test_a_literal_with_nul_is_refused() -> None:
    with pytest.raises(UsageError):
        sql_string_literal("a\x00b")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM 'curl'",  # SQLite takes a string literal in table position
        "SELECT * FROM 'CURL' WHERE 1",
        "SELECT * FROM temp.curl",
        "SELECT * FROM TEMP.'curl'",
        "SELECT * FROM main . /* c */ [curl]",
        "SELECT name FROM processes JOIN curl USING (pid)",  # no column of curl is named
        "SELECT name FROM processes NATURAL JOIN shell_history",
        "SELECT * FROM users WHERE uid IN shell_history",
        "EXPLAIN QUERY PLAN SELECT * FROM curl",
        "CREATE TEMP TABLE t AS SELECT * FROM process_envs",
        "SELECT 1; /* ; */ SELECT * FROM `carves`",
    ],
)
def test_grammar_forms_the_token_check_missed_are_refused(sql: str) -> None:
    with pytest.raises(UsageError, match="denied table"):
        refuse_denied_tables(sql, DENIED)


@pytest.mark.parametrize(
    "sql",
    [
        "WITH curl AS (SELECT 1 AS a) SELECT a FROM curl",  # a CTE shadows the table
        "SELECT curl.uid FROM users AS curl",
        "SELECT uid AS curl FROM users",
        'SELECT "curl" FROM users',  # a string (or a column), never a table here
        "SELECT * FROM pragma_table_info('curl')",  # the schema, not the data
    ],
)
def test_a_denied_name_sqlite_does_not_read_as_that_table_passes(sql: str) -> None:
    refuse_denied_tables(sql, DENIED)


def test_numbers_are_one_token() -> None:
    texts = [t.text for t in tokenize("SELECT 0x1F, 1.5e-3, .5, 12 FROM t")]
    assert texts == ["SELECT", "0x1F", ",", "1.5e-3", ",", ".5", ",", "12", "FROM", "t"]


def test_statements_split_where_sqlite_ends_them() -> None:
    sql = (
        "EXPLAIN SELECT 1; -- a ; comment\n"
        "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; SELECT 2; END;"
        " SELECT ';' ;;"
    )
    texts = [s.text for s in split_statements(sql)]
    assert texts == [
        "SELECT 1;",
        "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; SELECT 2; END;",
        "SELECT ';' ;",
    ]
