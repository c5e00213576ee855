"""``python -m lab up|down|status|show``: the lab tasks without ``invoke``'s task discovery."""

from __future__ import annotations

import sys

from invoke.program import Program

from lab.tasks import namespace


def main(argv: list[str] | None = None) -> None:
    program = Program(namespace=namespace, binary="python -m lab", name="fleetkit lab")
    program.run(["python -m lab", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
