"""What a fact is: one shell command that looks at a host, and a pure parser.

A fact never changes the host. Its command prints what it saw; its parser
turns that output (exit code, stdout, stderr: bytes from a host, so hostile)
into a typed value and never raises, whatever the host printed. Facts are
frozen dataclasses: two steps (or a step and a verify check) asking for the
same fact get it from one read, and a host's facts are all read in one probe
(:mod:`fleetkit.hostfacts.probe`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Characters of a host's line kept in evidence and messages.
SAID_LIMIT = 200


@dataclass(frozen=True)
class Raw:
    """What one command printed on a host."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def said(self) -> str:
        """The most telling line the command printed (stderr first), cut for evidence."""
        for text in (self.error_text, self.text):
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1][:SAID_LIMIT]
        return f"exit {self.exit_code}, no output"


class Fact(ABC, Generic[T]):
    """A look at a host: :meth:`command` prints, :meth:`parse` reads (pure, total)."""

    @abstractmethod
    def command(self) -> str:
        """A POSIX shell snippet; run as root, stdin empty; must not change the host."""

    @abstractmethod
    def parse(self, raw: Raw) -> T:
        """The typed value from what :meth:`command` printed; never raises."""


class MissingFact(LookupError):
    """A fact was not read (the probe stopped early, or nobody asked for it)."""


class FactView:
    """The facts of one host, by fact: ``view[FileLook(path)]`` is a FileState."""

    def __init__(self, values: Mapping[Fact[Any], Any] | None = None) -> None:
        self._values: dict[Fact[Any], Any] = dict(values or {})

    @classmethod
    def parsed(cls, results: Mapping[Fact[Any], Raw]) -> FactView:
        return cls({fact: fact.parse(raw) for fact, raw in results.items()})

    def __getitem__(self, fact: Fact[T]) -> T:
        try:
            value: T = self._values[fact]
        except KeyError:
            raise MissingFact(fact) from None
        return value

    def __contains__(self, fact: object) -> bool:
        return fact in self._values

    def has_all(self, facts: Iterable[Fact[Any]]) -> bool:
        return all(f in self._values for f in facts)


def present_if(test: str) -> str:
    """A command printing ``present`` when the shell ``test`` holds, else ``absent``."""
    return f"if {test}; then echo present; else echo absent; fi"


def is_present(raw: Raw) -> bool:
    """What a :func:`present_if` command printed (anything else counts as absent)."""
    return raw.ok and raw.stdout.strip() == b"present"


def unique(facts: Iterable[Fact[Any]]) -> list[Fact[Any]]:
    """Facts in first-asked order, each once."""
    return list(dict.fromkeys(facts))
