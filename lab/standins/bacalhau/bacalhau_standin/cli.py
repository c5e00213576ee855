"""Command line of the stand-in: ``serve``, ``version``, ``help`` (cobra-like errors)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import TextIO

from .buildinfo import version_info
from .config import ConfigProblem, build_config

HELP = """\
LAB STAND-IN for Bacalhau (not the real Bacalhau): a small Python program that
reads the v1.9 config keys, serves the v1.9 REST shapes used by fleetkit, lets
compute nodes join with the shared token and runs ops tasks directly on the host.

Usage:
  bacalhau [command]

Available Commands:
  serve       Start a bacalhau node (--orchestrator and/or --compute)
  version     Get the client and server version

Flags:
  -c, --config stringArray   config file(s) (.yaml) or Key=Value overrides
      --api-host string      API.Host
      --api-port int         API.Port
      --data-dir string      DataDir
      --log-level string     Logging.Level
  -h, --help                 help for bacalhau
"""

_VALUE_FLAGS = {
    "-c",
    "--config",
    "--api-host",
    "--api-port",
    "--data-dir",
    "--log-level",
    "--name",
    "--output",
    "-o",
}
_BOOL_FLAGS = {"--orchestrator", "--compute", "--client", "--no-style", "-h", "--help"}
_FLAG_KEYS = {
    "--api-host": "API.Host",
    "--api-port": "API.Port",
    "--data-dir": "DataDir",
    "--log-level": "Logging.Level",
}


class UsageProblem(Exception):
    """Bad command line; printed as ``Error: ...`` with exit 1 (like cobra)."""


@dataclass
class Invocation:
    command: str = ""
    configs: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    switches: set[str] = field(default_factory=set)


def parse(argv: list[str]) -> Invocation:
    inv = Invocation()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name in _BOOL_FLAGS and not eq:
                inv.switches.add(name)
                continue
            if name not in _VALUE_FLAGS:
                raise UsageProblem(f"unknown flag: {name}")
            if not eq:
                if i >= len(argv):
                    raise UsageProblem(f"flag needs an argument: {name}")
                value = argv[i]
                i += 1
            if name in ("-c", "--config"):
                inv.configs.append(value)
            else:
                inv.options[name.lstrip("-")] = value
            continue
        if inv.command:
            raise UsageProblem(f'unknown command "{arg}" for "bacalhau {inv.command}"')
        inv.command = arg
    return inv


def _version_payload(output: str, client: dict[str, str], server: dict[str, str] | None) -> str:
    if output in ("json", "yaml"):
        data: dict[str, object] = {"clientVersion": client}
        if server is not None:
            data["serverVersion"] = server
        if output == "json":
            return json.dumps(data)
        import yaml  # imported here: `version --client` runs on every verify, keep it light

        return str(yaml.safe_dump(data, sort_keys=False)).rstrip()
    if server is None:
        return f" CLIENT \n {client['GitVersion']} "
    width = max(len(client["GitVersion"]), len("CLIENT"))
    return (
        f" {'CLIENT':<{width}}  SERVER \n {client['GitVersion']:<{width}}  {server['GitVersion']} "
    )


def _server_version(inv: Invocation) -> dict[str, str]:
    import urllib.request

    config = build_config([], inv.configs)
    host = inv.options.get("api-host") or os.environ.get("BACALHAU_API_HOST") or "127.0.0.1"
    host = "127.0.0.1" if host == "0.0.0.0" else host
    port = inv.options.get("api-port") or os.environ.get("BACALHAU_API_PORT")
    port = port or str(config.integer("API.Port"))
    with urllib.request.urlopen(f"http://{host}:{port}/api/v1/agent/version", timeout=5) as r:
        return dict(json.loads(r.read()))


def version(inv: Invocation, out: TextIO) -> int:
    output = inv.options.get("output") or inv.options.get("o") or "table"
    if output not in ("table", "json", "yaml"):
        raise UsageProblem(f'invalid argument "{output}" for "--output" flag')
    client = version_info()
    server = None
    if "--client" not in inv.switches:
        try:
            server = _server_version(inv)
        except (OSError, ValueError) as exc:
            raise UsageProblem(f"failed to get server version: {exc}") from exc
    out.write(_version_payload(output, client, server) + "\n")
    return 0


def serve(inv: Invocation) -> int:
    from .logs import Log
    from .node import serve as run_node

    flags = list(inv.configs)
    for option, key in _FLAG_KEYS.items():
        if option.lstrip("-") in inv.options:
            flags.append(f"{key}={inv.options[option.lstrip('-')]}")
    if "--orchestrator" in inv.switches:
        flags.append("Orchestrator.Enabled=true")
    if "--compute" in inv.switches:
        flags.append("Compute.Enabled=true")
    config = build_config([], flags)
    log = Log(config.text("Logging.Level", "info"), config.text("Logging.Mode", "default"))
    return run_node(config, log, inv.options.get("name", ""))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        inv = parse(args)
        if "-h" in inv.switches or "--help" in inv.switches or inv.command in ("", "help"):
            sys.stdout.write(HELP)
            return 0
        if inv.command == "version":
            return version(inv, sys.stdout)
        if inv.command == "serve":
            return serve(inv)
        raise UsageProblem(f'unknown command "{inv.command}" for "bacalhau"')
    except (UsageProblem, ConfigProblem) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    except OSError as exc:  # e.g. an unwritable DataDir
        sys.stderr.write(f"Error: {exc}\n")
        return 1
