"""One SSH command per look and per batch of changes: the scripts and their answers.

Latency multiplies round trips, so fleetkit never asks a host one question
at a time. A *probe* runs every fact's command in one shell script; a *batch*
runs a list of changes in order, stopping at the first that fails. Each
command leaves ``<key>.rc``, ``<key>.out`` and ``<key>.err`` in a private
temp dir, and the script ends by writing that dir as one tar stream on
stdout, so any output (binary, multi-line, a NUL) comes back unambiguously
and is matched to its fact or change by key, never by parsing prose.

Stdin of a batch is the concatenation of its changes' inputs (files,
packages); the script first copies each input to its own file with
``head -c`` (GNU coreutils reads exactly that many bytes from a pipe, so the
next input starts where the last ended) and checks its length. Inputs never
travel on a command line, where other users of the host could read them.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetkit.hostfacts.changes import Change
from fleetkit.hostfacts.facts import Fact, Raw, unique

#: Exit code of a batch whose stdin ended before all its inputs arrived.
SHORT_INPUT_EXIT = 71

_PRELUDE = r"""set +e
umask 077
fk_dir=$(mktemp -d /var/tmp/fleetkit.XXXXXX 2>/dev/null || mktemp -d 2>/dev/null) || {
  echo "fleetkit: cannot create a temporary directory" >&2; exit 70; }
trap 'rm -rf "$fk_dir"' EXIT
fk() {
  ( eval "$2" ) >"$fk_dir/$1.out" 2>"$fk_dir/$1.err" <"${3:-/dev/null}"
  fk_rc=$?; echo $fk_rc >"$fk_dir/$1.rc"; return $fk_rc
}
fk_take() {
  head -c "$2" >"$fk_dir/$1" && [ "$(wc -c <"$fk_dir/$1")" -eq "$2" ]
}
fk_done() { cd "$fk_dir" && tar -cf - -- *.rc *.out *.err 2>/dev/null; }
"""

_MEMBER = re.compile(r"(?:\./)?([a-z][a-z0-9]*)\.(rc|out|err)")


def shell_command(script: str) -> str:
    """The one SSH command that runs ``script``."""
    return f"sh -c {shlex.quote(script)}"


@dataclass(frozen=True)
class Probe:
    """A script reading every fact once, and which key holds which fact."""

    script: str
    keys: Mapping[str, Fact[Any]]

    def results(self, output: bytes) -> dict[Fact[Any], Raw]:
        """The facts the script read (a fact it never reached is absent)."""
        found = read_results(output)
        return {fact: found[key] for key, fact in self.keys.items() if key in found}


def build_probe(facts: Sequence[Fact[Any]]) -> Probe:
    keys = {f"f{index}": fact for index, fact in enumerate(unique(facts))}
    lines = ["# fleetkit probe: reads, changes nothing", _PRELUDE]
    lines += [f"fk {key} {shlex.quote(fact.command())}" for key, fact in keys.items()]
    lines.append("fk_done")
    return Probe("\n".join(lines) + "\n", keys)


@dataclass(frozen=True)
class Batch:
    """A script running changes in order until one fails, and its stdin."""

    script: str
    stdin: bytes | None
    keys: tuple[str, ...]

    def results(self, output: bytes) -> list[Raw]:
        """One result per change that ran, in order (the failing one last)."""
        found = read_results(output)
        ran: list[Raw] = []
        for key in self.keys:
            if key not in found:
                break
            ran.append(found[key])
        return ran


def build_batch(changes: Sequence[Change]) -> Batch:
    lines = ["# fleetkit batch: changes in order, stop at the first failure", _PRELUDE]
    inputs: list[bytes] = []
    runs: list[str] = []
    keys = tuple(f"c{index}" for index in range(len(changes)))
    for key, change in zip(keys, changes, strict=True):
        stdin = ""
        if change.stdin is not None:
            name = f"in{len(inputs)}"
            inputs.append(change.stdin)
            lines.append(
                f"fk_take {name} {len(change.stdin)} || {{ echo 'fleetkit: the upload ended "
                f"early' >&2; exit {SHORT_INPUT_EXIT}; }}"
            )
            stdin = f' "$fk_dir/{name}"'
        runs.append(f"fk {key} {shlex.quote(change.command)}{stdin} || {{ fk_done; exit 0; }}")
    lines += runs
    lines.append("fk_done")
    data = b"".join(inputs) if inputs else None
    return Batch("\n".join(lines) + "\n", data, keys)


def read_results(output: bytes) -> dict[str, Raw]:
    """The tar stream a probe or batch printed, by key; anything malformed is left out.

    The stream came from a host: members other than ``<key>.rc|out|err`` are
    ignored, and a damaged archive yields what could be read before the damage.
    """
    texts: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(output), mode="r:") as archive:
            for member in archive:
                match = _MEMBER.fullmatch(member.name)
                if not member.isfile() or not match:
                    continue
                handle = archive.extractfile(member)
                if handle is not None:
                    texts.setdefault(match.group(1), {})[match.group(2)] = handle.read()
    except (tarfile.TarError, OSError, EOFError, ValueError):
        pass
    results: dict[str, Raw] = {}
    for key, parts in texts.items():
        code = parts.get("rc", b"").strip()
        if not re.fullmatch(rb"-?[0-9]{1,5}", code):
            continue
        results[key] = Raw(int(code), parts.get("out", b""), parts.get("err", b""))
    return results
