"""The command line: Invoke tasks, kept thin.

One collection serves ``invoke <task>`` (through ``tasks.py``) and the
``fleetkit`` console script. The tasks live by noun (:mod:`.fleet`,
:mod:`.asking`, :mod:`.memory`, :mod:`.packs`); what they share (the one
error-to-exit-code mapping, the runtime, the flags) lives in :mod:`.base`.
"""

from __future__ import annotations

import sys

from invoke.collection import Collection
from invoke.program import Program

from fleetkit import __version__
from fleetkit.cli.asking import hunt, policy, quarantine, query
from fleetkit.cli.base import RUNTIME_CONFIG_KEY, run_command
from fleetkit.cli.fleet import nodes, onboard, provision, verify
from fleetkit.cli.memory import diff, history, report, show
from fleetkit.cli.packs import packs_check, packs_import, packs_list, watch

__all__ = ["RUNTIME_CONFIG_KEY", "main", "namespace", "run_command", "spaced_subcommands"]

namespace = Collection(
    provision,
    query,
    verify,
    onboard,
    nodes,
    policy,
    hunt,
    quarantine,
    history,
    show,
    diff,
    watch,
    report,
)
#: ``invoke packs.list`` / ``packs.check`` / ``packs.import FILE``; the console script
#: also takes the spaced form (``fleetkit packs import FILE``, see :func:`main`).
_packs = Collection("packs")
_packs.add_task(packs_list, "list")
_packs.add_task(packs_check, "check")
_packs.add_task(packs_import, "import")
namespace.add_collection(_packs)


def main() -> None:
    """The ``fleetkit`` console script (works outside the repository checkout).

    SIGPIPE keeps Python's default (ignored, so a closed stdout is an EPIPE
    error that fleetkit reports and survives): ``fleetkit query ... | head``
    behaves like ``invoke query ... | head``, summary and exit status included.
    """
    program = Program(namespace=namespace, name="fleetkit", binary="fleetkit", version=__version__)
    program.run(spaced_subcommands(sys.argv))


def spaced_subcommands(argv: list[str]) -> list[str]:
    """``fleetkit packs import FILE`` as Invoke spells it (``packs.import``).

    Invoke names a collection's tasks with a dot; people type a space, as the
    issue and most CLIs do. Only the console script can offer both; ``invoke``
    users type the dot.
    """
    if len(argv) >= 3 and argv[1] in namespace.collections:
        name = f"{argv[1]}.{argv[2]}"
        if name in namespace.task_names:
            return [argv[0], name, *argv[3:]]
    return argv
