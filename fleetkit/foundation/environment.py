"""The injected environment: streams, process environment, clock.

Modelled on httpie's ``Environment``: commands receive one of these instead of
reaching for ``sys.stdout`` or ``os.environ``, so tests pass a fake with
``io.StringIO`` streams and a plain dict, and need no terminal and no
monkeypatching.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Environment:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    #: Where relative paths (fleetkit.yaml, inventory/) are resolved.
    cwd: str = field(default_factory=os.getcwd)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def stderr_isatty(self) -> bool:
        return bool(getattr(self.stderr, "isatty", lambda: False)())

    @property
    def stdin_isatty(self) -> bool:
        return bool(getattr(self.stdin, "isatty", lambda: False)())

    def say(self, message: str) -> None:
        """One line of human output on stderr (thread-safe: hosts finish in parallel)."""
        with self._lock:
            self.stderr.write(message + "\n")
            self.stderr.flush()

    def progress(self, message: str) -> None:
        """A progress line: redrawn in place on a terminal, one line per update otherwise."""
        with self._lock:
            if self.stderr_isatty:
                self.stderr.write("\r\x1b[2K" + message)
            else:
                self.stderr.write(message + "\n")
            self.stderr.flush()

    def end_progress(self) -> None:
        if self.stderr_isatty:
            with self._lock:
                self.stderr.write("\n")
                self.stderr.flush()

    def ask(self, prompt: str) -> str:
        """Ask the user a question on stderr; empty answer when stdin is not a terminal."""
        with self._lock:
            self.stderr.write(prompt)
            self.stderr.flush()
        if not self.stdin_isatty:
            return ""
        return self.stdin.readline().strip()
