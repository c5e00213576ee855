"""The version this stand-in claims to be, stamped in by ``build.py``."""

from __future__ import annotations

import json
import platform
from importlib import resources
from typing import Any

_FALLBACK = {
    "GitVersion": "v1.9.3",
    "GitCommit": "standin",
    "BuildDate": "2025-01-01T00:00:00Z",
    "GOARCH": "",
}


def _stamp() -> dict[str, str]:
    try:
        text = resources.files(__package__).joinpath("build.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        return dict(_FALLBACK)
    data = json.loads(text)
    return {k: str(data.get(k, v)) for k, v in _FALLBACK.items()}


def go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def version_info() -> dict[str, Any]:
    """``models.BuildVersionInfo``: what ``/api/v1/agent/version`` returns."""
    stamp = _stamp()
    numbers = stamp["GitVersion"].lstrip("v").split(".")
    return {
        "Major": numbers[0] if numbers else "0",
        "Minor": numbers[1] if len(numbers) > 1 else "0",
        "GitVersion": stamp["GitVersion"],
        "GitCommit": stamp["GitCommit"],
        "BuildDate": stamp["BuildDate"],
        "GOOS": "linux",
        "GOARCH": stamp["GOARCH"] or go_arch(),
    }
