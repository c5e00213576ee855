"""SQLite's lexical rules, for the SQL guard: tokens and statement boundaries.

Kept apart from :mod:`fleetkit.foundation.sqlguard` (which decides) so both stay
small. The tokenizer follows SQLite's lexer: it tells names from data (string
literals) and comments, and refuses what SQLite would refuse and what could
hide a name (NUL, unterminated literals).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from fleetkit.foundation.sqlmodel import fold
from fleetkit.foundation.status import UsageError

_QUOTED_IDENTIFIER_CLOSERS = {'"': '"', "`": "`", "[": "]"}


class TokenKind(Enum):
    IDENTIFIER = "identifier"  # bare word (keywords included: SQLite decides by position)
    QUOTED_IDENTIFIER = "quoted identifier"
    STRING = "string literal"
    OTHER = "other"  # numbers (whole), operators, punctuation, parameters


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # identifiers: the name with quotes removed; strings: the decoded value
    offset: int

    @property
    def is_name(self) -> bool:
        """A token SQLite may read as a table name (a string literal can be one)."""
        return self.kind is not TokenKind.OTHER

    def is_keyword(self, *words: str) -> bool:
        return self.kind is TokenKind.IDENTIFIER and fold(self.text) in words


def fold_identifier(name: str) -> str:
    """The form SQLite compares identifiers in (ASCII case-insensitive)."""
    return fold(name)


#: SQLite: ASCII letters, underscore and every non-ASCII character start a word;
#: digits and ``$`` may follow.
_WORD = re.compile("[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
#: A numeric literal (hex, decimal, exponent, ``_`` separators) and any word
#: characters glued to it, which SQLite swallows into one (bad) token too.
_NUMBER = re.compile("(?:[0-9]|\\.[0-9])(?:[A-Za-z0-9_$.\x80-\U0010ffff]|(?<=[eE])[+-])*")
_SPACE = re.compile(r"\s+")


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
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"query is not valid text (undecodable byte at character {exc.start}); "
            "nothing was submitted"
        ) from None
    index, length = 0, len(sql)
    while index < length:
        char = sql[index]
        if char.isspace():
            index = _SPACE.match(sql, index).end()  # type: ignore[union-attr]
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
        elif "0" <= char <= "9" or (char == "." and "0" <= sql[index + 1 : index + 2] <= "9"):
            end = _NUMBER.match(sql, index).end()  # type: ignore[union-attr]
            yield Token(TokenKind.OTHER, sql[index:end], index)
            index = end
        elif char.isalpha() or char == "_" or not char.isascii():
            end = _WORD.match(sql, index).end()  # type: ignore[union-attr]
            yield Token(TokenKind.IDENTIFIER, sql[index:end], index)
            index = end
        else:
            yield Token(TokenKind.OTHER, char, index)
            index += 1


def named_identifiers(sql: str) -> set[str]:
    """Every identifier the SQL names (folded), outside literals and comments."""
    return {
        fold(token.text)
        for token in tokenize(sql)
        if token.kind in (TokenKind.IDENTIFIER, TokenKind.QUOTED_IDENTIFIER)
    }


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Statement:
    """One statement of the SQL, EXPLAIN prefix removed, with its tokens."""

    text: str
    tokens: tuple[Token, ...]


def split_statements(sql: str) -> list[Statement]:
    """The statements of ``sql`` where SQLite ends them (``;`` outside literals,
    comments and trigger bodies); empty ones dropped, a leading
    ``EXPLAIN [QUERY PLAN]`` removed (the inner statement is what gets checked)."""
    tokens = list(tokenize(sql))
    pieces: list[tuple[int, int]] = []
    start = 0
    for token in tokens:
        if token.text == ";" and token.kind is TokenKind.OTHER:
            end = token.offset + 1
            if sqlite3.complete_statement(sql[start:end]):
                pieces.append((start, end))
                start = end
    pieces.append((start, len(sql)))
    statements: list[Statement] = []
    for begin, end in pieces:
        own = [t for t in tokens if begin <= t.offset < end]
        while own and own[0].is_keyword("explain"):
            own = own[1:]
            if len(own) >= 2 and own[0].is_keyword("query") and own[1].is_keyword("plan"):
                own = own[2:]
        if any(t.text != ";" or t.kind is not TokenKind.OTHER for t in own):
            statements.append(Statement(sql[own[0].offset : end], tuple(own)))
    return statements
