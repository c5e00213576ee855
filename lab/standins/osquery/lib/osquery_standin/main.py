"""osquery STAND-IN entry point: ``osqueryi`` or ``osqueryd`` by argv[0], like the real binary.

Flags follow gflags: ``--name=value`` or ``--name value``, booleans as
``--name``/``--noname``/``--name=false``. An unknown flag on the command line
is an error; unknown flags inside a ``--flagfile`` are ignored (osquery.md
corrections). Without ``--flagfile``, ``/etc/osquery/osquery.flags.default`` is
read when present.

``osqueryi`` contract kept (osquery.md §3): SQL as the last positional
argument or on stdin; ``--json`` framing; ``--connect`` prints the banner on
stdout first and runs the query in the daemon; errors are ``Error: <message>``
on stderr with a non-zero exit, and in ``--json`` mode without ``--connect``
the empty array is still printed.
"""

from __future__ import annotations

import os
import sys

from osquery_standin import render
from osquery_standin.engine import Engine, QueryError, Result
from osquery_standin.facts import VERSION

BOOLEAN_FLAGS = {
    "json",
    "json_pretty",
    "line",
    "list",
    "csv",
    "header",
    "disable_events",
    "disable_database",
    "disable_extensions",
    "disable_watchdog",
    "disable_logging",
    "disable_distributed",
    "disable_carver",
    "carver_disable_function",
    "daemonize",
    "config_check",
    "verbose",
    "ephemeral",
    "logger_rotate",
    "enable_file_events",
    "audit_allow_config",
    "disable_audit",
    "S",
    "D",
    "version",
    "help",
}
VALUE_FLAGS = {
    "connect",
    "flagfile",
    "config_path",
    "config_plugin",
    "logger_plugin",
    "logger_path",
    "logger_mode",
    "logger_min_status",
    "extensions_socket",
    "extensions_autoload",
    "extensions_timeout",
    "extensions_interval",
    "database_path",
    "disable_tables",
    "enable_tables",
    "pidfile",
    "watchdog_level",
    "watchdog_memory_limit",
    "watchdog_utilization_limit",
    "host_identifier",
    "specified_identifier",
    "schedule_splay_percent",
    "nullvalue",
    "separator",
    "read_max",
    "hash_delay",
    "thrift_timeout",
    "distributed_interval",
    "config_refresh",
    "query",
    "query_file",
}
DEFAULT_FLAGFILE = "/etc/osquery/osquery.flags.default"


class FlagError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(flags, positionals) from the command line; unknown flags raise :class:`FlagError`."""
    flags: dict[str, str] = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in VALUE_FLAGS:
            if not has_value:
                if i >= len(argv):
                    raise FlagError(f"flag '{name}' is missing its argument")
                value = argv[i]
                i += 1
            flags[name] = value
        elif name in BOOLEAN_FLAGS:
            flags[name] = _boolean(name, value if has_value else "true")
        elif name.startswith("no") and name[2:] in BOOLEAN_FLAGS and not has_value:
            flags[name[2:]] = "false"
        else:
            raise FlagError(f"unknown command line flag '{name}'")
    return flags, positionals


def _boolean(name: str, value: str) -> str:
    if value.lower() in ("true", "1", "yes", "t", "y"):
        return "true"
    if value.lower() in ("false", "0", "no", "f", "n"):
        return "false"
    raise FlagError(f"illegal value '{value}' specified for bool flag '{name}'")


def read_flagfile(path: str) -> dict[str, str]:
    """``--flag=value`` per line; comments and unknown flags are ignored (gflags)."""
    flags: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if not text.startswith("--"):
                continue
            try:
                flags.update(parse_args([text])[0])
            except FlagError:
                continue
    return flags


def effective_flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    cli, positionals = parse_args(argv)
    flagfile = cli.get("flagfile") or (
        DEFAULT_FLAGFILE if os.path.isfile(DEFAULT_FLAGFILE) else None
    )
    from_file: dict[str, str] = {}
    if flagfile:
        try:
            from_file = read_flagfile(flagfile)
        except OSError as exc:
            raise FlagError(f"could not read flagfile {flagfile}: {exc.strerror}") from None
    return {**from_file, **cli}, positionals


def _out(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.flush()


def _err(text: str) -> None:
    sys.stderr.buffer.write(text.encode("utf-8", "surrogateescape"))
    sys.stderr.buffer.flush()


def _format(flags: dict[str, str], results: list[Result]) -> str:
    if flags.get("json") == "true":
        return render.json_text(results)
    if flags.get("json_pretty") == "true":
        return render.json_pretty_text(results)
    if flags.get("line") == "true":
        return render.line_text(results)
    if flags.get("list") == "true" or flags.get("csv") == "true":
        return render.list_text(
            results, flags.get("separator", "|"), flags.get("header", "true") == "true"
        )
    return render.pretty_text(results)


def _empty(flags: dict[str, str]) -> str:
    return render.json_text([]) if flags.get("json") == "true" else ""


def shell(flags: dict[str, str], positionals: list[str]) -> int:
    if flags.get("version") == "true":
        _out(f"osqueryi version {VERSION}\n")
        return 0
    sql = positionals[-1] if positionals else flags.get("query")
    if sql is None:
        sql = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    connect = flags.get("connect")
    if connect:
        return _shell_connected(flags, connect, sql)
    disabled = flags.get("disable_tables", "").split(",")
    engine = Engine(disabled)
    try:
        results = engine.run(sql)
    except QueryError as exc:
        _out(_empty(flags))
        _err(f"Error: {exc.message}\n")
        return exc.code
    finally:
        engine.close()
    _out(_format(flags, results))
    return 0


def _shell_connected(flags: dict[str, str], path: str, sql: str) -> int:
    from osquery_standin.daemon import query_socket  # only the --connect path needs it

    try:
        reply = query_socket(path, sql)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        _err(f"Error: Could not connect to extension socket {path}: {reason}\n")
        return 1
    _out(f"Connected to extension socket {path} for debugging\n")
    if reply.get("status") != 0:
        _err(f"Error: {reply.get('message', 'query failed')}\n")
        return int(reply.get("status") or 1)
    results = [Result(r["columns"], r["rows"]) for r in reply.get("results", [])]
    _out(_format(flags, results))
    return 0


def main(argv: list[str]) -> int:
    mode = os.path.basename(argv[0]) if argv else "osqueryi"
    try:
        flags, positionals = effective_flags(argv[1:])
    except FlagError as exc:
        _err(f"ERROR: {exc}\n")
        return 1
    if flags.get("S") == "true":
        mode = "osqueryi"
    elif flags.get("D") == "true":
        mode = "osqueryd"
    if mode == "osqueryd":
        if flags.get("version") == "true":
            _out(f"osqueryd version {VERSION}\n")
            return 0
        from osquery_standin.daemon import serve

        return serve(flags)
    return shell(flags, positionals)
