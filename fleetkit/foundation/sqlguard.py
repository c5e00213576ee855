"""SQL safety: refuse denied tables and redaction bypasses before submission; safe literals.

Why here and not in each command: query, policy and hunt all send operator or
pack SQL to the fleet, and hunt builds SQL from user input. One place decides,
by SQLite's grammar (osquery's SQL is SQLite's), what a statement reads.

**Denied tables** (:func:`refuse_denied_tables`). Each statement is compiled by
SQLite itself on an in-memory model of the schema (:mod:`fleetkit.foundation.sqlmodel`):
whatever token kind SQLite accepts in table position (bare, "double-quoted",
[bracketed], `backticked`, 'string literal'), schema-qualified (``main.x``,
``temp.x``), any case, comments anywhere, in subqueries, CTEs, joins (``USING``
and ``NATURAL`` too), compound selects or ``x(...)`` calls: if SQLite resolves a
name to a denied table, the SQL is refused (exit 2, naming the table). A CTE or
alias that merely shares a denied name is not a read and passes. Views,
triggers and virtual tables cannot be created (they could read a denied table
later, out of sight), nor can databases be attached. When SQLite cannot compile
a statement even after modelling unknown tables, columns and functions (a newer
syntax, a typo), the guard falls back to a conservative check: the statement is
refused if any name, quoted name or string literal in it equals a denied table
(SQLite cannot name a table any other way); otherwise it is sent and the node
answers with its own error. The node-side ``--disable_tables`` flag stays the
second wall.

**Redaction** (:func:`refuse_redaction_bypass`): see its docstring for the rule.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import product
from typing import NoReturn

from fleetkit.foundation.sqlmodel import (
    CALLED_AS_FUNCTION,
    OPENED,
    Analysis,
    Model,
    analyze,
    fold,
    result_names,
)
from fleetkit.foundation.sqltokens import (
    Statement,
    Token,
    TokenKind,
    fold_identifier,
    named_identifiers,
    split_statements,
    tokenize,
)
from fleetkit.foundation.status import UsageError
from fleetkit.foundation.validate import excerpt

__all__ = [
    "Statement",
    "Token",
    "TokenKind",
    "fold_identifier",
    "named_identifiers",
    "refuse_denied_tables",
    "refuse_redaction_bypass",
    "split_statements",
    "sql_string_literal",
    "tokenize",
]

_DENIED_SETTING = "(settings osquery.disabled_tables); nothing was submitted"
_REDACTED_SETTING = "(settings query.redact_columns); nothing was submitted"

#: Authorizer actions whose first argument is the table acted on.
_TABLE_ACTIONS = {
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_UPDATE,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_DROP_TABLE,
    sqlite3.SQLITE_DROP_TEMP_TABLE,
    OPENED,
    CALLED_AS_FUNCTION,
}
#: Schema objects that could read a denied table later, where the guard cannot see it.
_HIDING_ACTIONS = {
    sqlite3.SQLITE_CREATE_VIEW: "creates a view",
    sqlite3.SQLITE_CREATE_TEMP_VIEW: "creates a view",
    sqlite3.SQLITE_CREATE_TRIGGER: "creates a trigger",
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "creates a trigger",
    sqlite3.SQLITE_CREATE_VTABLE: "creates a virtual table",
    sqlite3.SQLITE_ALTER_TABLE: "alters a table",
    sqlite3.SQLITE_ATTACH: "attaches a database",
    sqlite3.SQLITE_DETACH: "detaches a database",
}


# --------------------------------------------------------------------------- denied tables


def refuse_denied_tables(sql: str, denied: Iterable[str]) -> None:
    """Raise UsageError (exit 2) when the SQL would read a denied table; call before submitting.

    The message names the first denied table found.
    """
    denied_folded = {fold(name) for name in denied}
    statements = split_statements(sql)  # unterminated literals and NULs: refused either way
    if not denied_folded:
        return
    for statement in statements:
        analysis = analyze(statement.text, Model(seed_tables=sorted(denied_folded)))
        _refuse_denied_accesses(analysis, denied_folded)
        if not analysis.compiled:
            _refuse_denied_names(statement, analysis, denied_folded)


def _refuse_denied_accesses(analysis: Analysis, denied: set[str]) -> None:
    for access in (*analysis.earlier, *analysis.accesses):
        if access.action in _HIDING_ACTIONS:
            raise UsageError(
                f"query {_HIDING_ACTIONS[access.action]}, which could read a denied table "
                f"out of fleetkit's sight {_DENIED_SETTING}"
            )
        if access.action in _TABLE_ACTIONS and fold(access.table) in denied:
            raise UsageError(f"query reads denied table '{fold(access.table)}' {_DENIED_SETTING}")


def _refuse_denied_names(statement: Statement, analysis: Analysis, denied: set[str]) -> None:
    """SQLite could not compile it here: refuse if any token could name a denied table."""
    for token in statement.tokens:
        if token.is_name and fold(token.text) in denied:
            raise UsageError(
                f"query may read denied table '{fold(token.text)}': it names it, and SQLite "
                f"could not compile the query here to tell ({_short(analysis.error)}) "
                f"{_DENIED_SETTING}"
            )


def _short(text: str | None, limit: int = 120) -> str:
    return excerpt(text or "", limit=limit, quoted=False)


# --------------------------------------------------------------------------- redaction

#: Words that may follow an ORDER BY / GROUP BY term without making it a column reference.
_TERM_MODIFIERS = {"asc", "desc", "nulls", "first", "last", "collate"}
_CLAUSE_ENDS = {"limit", "having", "window", "order", "group", "offset"}
_VARIANTS_TRIED = 4096


def refuse_redaction_bypass(sql: str, redacted: Iterable[str]) -> None:
    """Raise UsageError (exit 2) when a redacted column could leave the node unredacted.

    ``settings query.redact_columns`` blanks result columns *by name*; a query
    must not move a redacted column's values under another name. The rule,
    decided on SQLite's own resolution of the statement:

    A column whose name is redacted (any table, any case) may only be read as a
    **plain result column under its own name**: ``SELECT cmdline FROM processes``,
    ``SELECT p.CMDLINE FROM processes p`` or ``SELECT *`` (osquery names such a
    result column after the table's column, so it is redacted). Every other
    read is refused: an alias (even ``AS cmdline``), an expression
    (``upper(cmdline)``), a condition (``WHERE``, ``ON``, ``HAVING``, ``USING``), a
    subquery, CTE or compound select reading it, a statement other than a
    SELECT, and whatever shapes the result by its values: ``SELECT DISTINCT``,
    ``ORDER BY``/``GROUP BY`` by position, ``NATURAL`` joins. When SQLite cannot
    compile the statement here, any mention of a redacted name is refused.
    """
    hidden = {fold(name) for name in redacted}
    statements = split_statements(sql)
    if not hidden:
        return
    for statement in statements:
        _check_redaction(statement, hidden)


def _check_redaction(statement: Statement, hidden: set[str]) -> None:
    if any(t.is_keyword("natural") for t in statement.tokens):
        _refuse_redacted("a NATURAL join may compare redacted columns; join with ON instead")
    declare = _unseen_spellings(statement.text, hidden)
    model = Model(declare=declare)
    quoted = [t.text for t in statement.tokens if t.kind is TokenKind.QUOTED_IDENTIFIER]
    analysis = analyze(statement.text, model, quoted=quoted)
    if not analysis.compiled:
        named = sorted({fold(t.text) for t in statement.tokens if t.is_name} & hidden)
        if named:
            _refuse_redacted(
                f"query names redacted column '{named[0]}' and SQLite could not compile it "
                f"here to check how ({_short(analysis.error)})"
            )
        return
    reads: dict[str, int] = {}
    for access in analysis.accesses:
        if access.action == sqlite3.SQLITE_READ and fold(access.column) in hidden:
            reads[fold(access.column)] = reads.get(fold(access.column), 0) + 1
    using = _using_columns(statement)
    for column in sorted(hidden & using):
        _refuse_redacted(f"query joins USING redacted column '{column}'")
    if not reads:
        return
    first = sorted(reads)[0]
    _require_plain_select(statement, first)
    names = result_names(statement.text, model)
    if names is None:
        _refuse_redacted(
            f"query reads redacted column '{first}'; fleetkit could not name its result"
        )
    for column, count in sorted(reads.items()):
        spelling = declare.get(column)
        plain = sum(1 for name in names if spelling is not None and name == spelling)
        if count != plain:
            _refuse_redacted(
                f"query reads redacted column '{column}' other than as a plain result column "
                "under its own name (an alias, an expression or a condition would carry its "
                "values out unredacted)"
            )


def _require_plain_select(statement: Statement, column: str) -> None:
    tokens = statement.tokens
    why = ""
    selects = [t for t in tokens if t.is_keyword("select")]
    if not tokens[0].is_keyword("select"):
        why = "only a SELECT may read it"
    elif len(selects) > 1:
        why = "a subquery, CTE or compound select may not read it"
    elif len(tokens) > 1 and tokens[1].is_keyword("distinct"):
        why = "SELECT DISTINCT would shape the result by its values"
    elif _positional_terms(tokens):
        why = "ORDER BY / GROUP BY by position would shape the result by its values"
    if why:
        _refuse_redacted(f"query reads redacted column '{column}': {why}")


def _positional_terms(tokens: tuple[Token, ...]) -> bool:
    """True when a top-level ORDER BY / GROUP BY term has no name in it (maybe a position)."""
    depth = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        depth += {"(": 1, ")": -1}.get(token.text, 0) if token.kind is TokenKind.OTHER else 0
        if (
            depth == 0
            and token.is_keyword("order", "group")
            and index + 1 < len(tokens)
            and tokens[index + 1].is_keyword("by")
        ):
            terms, index = _clause_terms(tokens, index + 2)
            if any(not _names_something(term) for term in terms):
                return True
            continue
        index += 1
    return False


def _clause_terms(tokens: tuple[Token, ...], start: int) -> tuple[list[list[Token]], int]:
    terms: list[list[Token]] = [[]]
    depth = 0
    index = start
    while index < len(tokens):
        token = tokens[index]
        if token.kind is TokenKind.OTHER and token.text in "()":
            depth += 1 if token.text == "(" else -1
        if depth == 0 and (token.is_keyword(*_CLAUSE_ENDS) or token.text == ";"):
            break
        if depth == 0 and token.kind is TokenKind.OTHER and token.text == ",":
            terms.append([])
        else:
            terms[-1].append(token)
        index += 1
    return terms, index


def _names_something(term: list[Token]) -> bool:
    after_collate = False
    for token in term:
        if after_collate:
            after_collate = False
            continue
        if token.is_keyword("collate"):
            after_collate = True
            continue
        if token.kind is TokenKind.QUOTED_IDENTIFIER or (
            token.kind is TokenKind.IDENTIFIER and fold(token.text) not in _TERM_MODIFIERS
        ):
            return True
    return False


def _using_columns(statement: Statement) -> set[str]:
    names: set[str] = set()
    tokens = statement.tokens
    for index, token in enumerate(tokens):
        if token.is_keyword("using"):
            for inner in tokens[index + 1 :]:
                if inner.text == ")" and inner.kind is TokenKind.OTHER:
                    break
                if inner.is_name:
                    names.add(fold(inner.text))
    return names


def _unseen_spellings(sql: str, columns: set[str]) -> dict[str, str]:
    """For each column, a case spelling that appears nowhere in ``sql``.

    A result column can only bear such a name if SQLite took it from the
    table's declaration, i.e. if it is a plain reference: an alias or an
    expression is named by its text in the SQL. Columns without letters (or
    whose every spelling appears) get none, so any read of them is refused.
    """
    out: dict[str, str] = {}
    for column in columns:
        letters = [i for i, c in enumerate(column) if c.isascii() and c.isalpha()]
        for count, flips in enumerate(product((False, True), repeat=len(letters))):
            if count >= _VARIANTS_TRIED:
                break
            if not any(flips):
                continue  # the spelling as configured is the likeliest to be typed
            chars = list(column)
            for index, flip in zip(letters, flips, strict=True):
                if flip:
                    chars[index] = chars[index].upper()
            spelling = "".join(chars)
            if spelling not in sql:
                out[column] = spelling
                break
    return out


def _refuse_redacted(message: str) -> NoReturn:
    raise UsageError(f"{message} {_REDACTED_SETTING}")


# --------------------------------------------------------------------------- literals


def sql_string_literal(value: str) -> str:
    """Quote a value as an SQLite string literal: single quotes, embedded quotes doubled.

    NUL is refused because SQLite would end the statement text there.
    """
    if "\x00" in value:
        raise UsageError("value contains a NUL character and cannot be sent as SQL")
    return "'" + value.replace("'", "''") + "'"
