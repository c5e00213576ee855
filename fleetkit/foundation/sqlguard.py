"""SQL safety: refuse denied tables before submission, build SQL literals safely.

Why here and not in each command: query, policy and hunt all send operator or
pack SQL to the fleet, and hunt builds SQL from user input. One tokenizer that
follows SQLite's lexical rules (osquery's SQL is SQLite's) decides what is a
name and what is data for all of them.

The denied-table check is deliberately conservative: *any* identifier (bare or
quoted with "", [] or ``) outside string literals and comments that equals a
denied table name counts as a read, whatever its position (``FROM``, ``JOIN``,
comma join, subquery, schema-qualified ``main.curl``, table-valued call
``curl(...)``). A column or alias that happens to share a denied table's name is
refused too: a false refusal costs the operator a rename, a false pass leaks
data. The second line of defence is the provisioned ``--disable_tables`` flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from fleetkit.foundation.status import UsageError

#: SQLite folds identifier case for ASCII letters only; so do we.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_QUOTED_IDENTIFIER_CLOSERS = {'"': '"', "`": "`", "[": "]"}


class TokenKind(Enum):
    IDENTIFIER = "identifier"  # bare word (keywords included: SQLite decides by position)
    QUOTED_IDENTIFIER = "quoted identifier"
    STRING = "string literal"
    OTHER = "other"  # numbers, operators, punctuation, parameters


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # identifiers: the name with quotes removed; strings: the decoded value
    offset: int


def fold_identifier(name: str) -> str:
    """The form SQLite compares identifiers in (ASCII case-insensitive)."""
    return name.translate(_ASCII_LOWER)


def _is_word_start(char: str) -> bool:
    """SQLite: ASCII letters, underscore and every non-ASCII character start a word."""
    if not char.isascii():
        return True
    return char.isalpha() or char == "_"


def _is_word_char(char: str) -> bool:
    return _is_word_start(char) or (char.isascii() and char.isdigit()) or char == "$"


def _scan_quoted(sql: str, start: int, closer: str, what: str) -> tuple[str, int]:
    """Read a quoted run starting after the opening quote; the closer doubled is literal.

    ``[name]`` has no doubling in SQLite: ``]`` always closes it.
    Returns (decoded text, index after the closing quote).
    """
    parts: list[str] = []
    index = start
    while True:
        end = sql.find(closer, index)
        if end < 0:
            raise UsageError(
                f"query has an unterminated {what} at character {start}; nothing was submitted"
            )
        parts.append(sql[index:end])
        if closer != "]" and sql.startswith(closer, end + 1):
            parts.append(closer)
            index = end + 2
            continue
        return "".join(parts), end + 1


def tokenize(sql: str) -> Iterator[Token]:
    """Split SQL into tokens the way SQLite's lexer does; comments are dropped.

    Raises UsageError for what SQLite itself would refuse and what could hide a
    name from us: NUL characters, unterminated strings or quoted identifiers.
    (An unterminated ``/*`` comment is legal in SQLite and runs to the end.)
    """
    if "\x00" in sql:
        raise UsageError("query contains a NUL character; nothing was submitted")
    index, length = 0, len(sql)
    while index < length:
        char = sql[index]
        if char.isspace():
            index += 1
        elif sql.startswith("--", index):
            newline = sql.find("\n", index)
            index = length if newline < 0 else newline + 1
        elif sql.startswith("/*", index):
            close = sql.find("*/", index + 2)
            index = length if close < 0 else close + 2
        elif char == "'":
            text, index_after = _scan_quoted(sql, index + 1, "'", "string literal")
            yield Token(TokenKind.STRING, text, index)
            index = index_after
        elif char in _QUOTED_IDENTIFIER_CLOSERS:
            closer = _QUOTED_IDENTIFIER_CLOSERS[char]
            text, index_after = _scan_quoted(sql, index + 1, closer, "quoted identifier")
            yield Token(TokenKind.QUOTED_IDENTIFIER, text, index)
            index = index_after
        elif _is_word_start(char):
            end = index + 1
            while end < length and _is_word_char(sql[end]):
                end += 1
            yield Token(TokenKind.IDENTIFIER, sql[index:end], index)
            index = end
        else:
            yield Token(TokenKind.OTHER, char, index)
            index += 1


def named_identifiers(sql: str) -> set[str]:
    """Every identifier the SQL names (folded), outside literals and comments."""
    return {
        fold_identifier(token.text)
        for token in tokenize(sql)
        if token.kind in (TokenKind.IDENTIFIER, TokenKind.QUOTED_IDENTIFIER)
    }


def refuse_denied_tables(sql: str, denied: Iterable[str]) -> None:
    """Raise UsageError (exit 2) when the SQL names a denied table; call before submitting.

    The message names the first denied table in the order the SQL names it.
    """
    denied_folded = {fold_identifier(name) for name in denied}
    if not denied_folded:
        # Still tokenize: unterminated literals and NULs are refused either way.
        for _token in tokenize(sql):
            pass
        return
    for token in tokenize(sql):
        if token.kind is TokenKind.STRING or token.kind is TokenKind.OTHER:
            continue
        if fold_identifier(token.text) in denied_folded:
            raise UsageError(
                f"query reads denied table '{fold_identifier(token.text)}' "
                "(settings osquery.disabled_tables); nothing was submitted"
            )


def sql_string_literal(value: str) -> str:
    """Quote a value as an SQLite string literal: single quotes, embedded quotes doubled.

    NUL is refused because SQLite would end the statement text there.
    """
    if "\x00" in value:
        raise UsageError("value contains a NUL character and cannot be sent as SQL")
    return "'" + value.replace("'", "''") + "'"
