"""Logging to stderr, in the real node's two modes (``default`` text, ``json``)."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

_LEVELS = {"trace": 0, "debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "fatal": 50}
_SHORT = {0: "TRC", 10: "DBG", 20: "INF", 30: "WRN", 40: "ERR", 50: "FTL"}
_LONG = {0: "trace", 10: "debug", 20: "info", 30: "warn", 40: "error", 50: "fatal"}


class Log:
    """A tiny structured logger; one line per event, thread-safe."""

    def __init__(self, level: str = "info", mode: str = "default", stream: TextIO | None = None):
        self.threshold = _LEVELS.get(level.lower(), 20)
        self.as_json = mode.lower() == "json"
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def _emit(self, level: int, text: str, fields: dict[str, Any]) -> None:
        if level < self.threshold:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.as_json:
            record = {"level": _LONG[level], "time": now, "message": text, **fields}
            line = json.dumps(record, default=str)
        else:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{now} {_SHORT[level]} {text}" + (f" {extra}" if extra else "")
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def debug(self, text: str, /, **fields: Any) -> None:
        self._emit(10, text, fields)

    def info(self, text: str, /, **fields: Any) -> None:
        self._emit(20, text, fields)

    def warn(self, text: str, /, **fields: Any) -> None:
        self._emit(30, text, fields)

    def error(self, text: str, /, **fields: Any) -> None:
        self._emit(40, text, fields)
