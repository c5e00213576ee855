"""Layered node configuration, read the way Bacalhau v1.9 reads it.

Layers, highest first: ``-c Key=Value`` flags, YAML files (later files win),
defaults. Keys are case-insensitive. Unknown keys are kept and ignored, like
the real decoder (it has no ``ErrorUnused``). Values of maps such as
``Labels`` keep the case of their own keys.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "NameProvider": "puuid",
    "DataDir": "",
    "Labels": {},
    "API": {"Host": "0.0.0.0", "Port": 1234, "Auth": {"Users": []}},
    "Orchestrator": {
        "Enabled": False,
        "Host": "0.0.0.0",
        "Port": 4222,
        "Auth": {"Token": ""},
        "NodeManager": {"DisconnectTimeout": "1m", "ManualApproval": False},
    },
    "Compute": {
        "Enabled": False,
        "Orchestrators": ["nats://127.0.0.1:4222"],
        "Auth": {"Token": ""},
        "AllowListedLocalPaths": [],
        "Heartbeat": {"Interval": "15s", "InfoUpdateInterval": "1m"},
        "Env": {"AllowList": []},
    },
    "Logging": {"Level": "info", "Mode": "default"},
    "DisableAnalytics": False,
    "Publishers": {
        "Disabled": [],
        "Types": {"Local": {"Address": "127.0.0.1", "Port": 6001}},
    },
}

#: How a ``-c Key=Value`` string is typed, by lower-cased key.
_LIST_KEYS = {
    "compute.orchestrators",
    "compute.allowlistedlocalpaths",
    "compute.env.allowlist",
    "publishers.disabled",
    "engines.disabled",
    "inputsources.disabled",
}
_MAP_KEYS = {"labels"}
_INT_KEYS = {"api.port", "orchestrator.port", "publishers.types.local.port"}
_BOOL_KEYS = {
    "orchestrator.enabled",
    "compute.enabled",
    "orchestrator.nodemanager.manualapproval",
    "disableanalytics",
    "strictversionmatch",
}

#: Keys whose values never leave the node (``/api/v1/agent/config`` redacts them).
SECRET_KEYS = {"token", "apikey", "password", "secretaccesskey"}

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class ConfigProblem(Exception):
    """A configuration the stand-in refuses, with the key that is wrong."""


def parse_duration(value: Any, key: str) -> float:
    """Go ``time.ParseDuration`` semantics, in seconds (``1m30s``, ``500ms``)."""
    text = str(value).strip()
    if text in ("0", ""):
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    total = 0.0
    pos = 0
    for match in _DURATION_RE.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body) or not body:
        if re.fullmatch(r"[\d.]+", body):
            raise ConfigProblem(f'{key}: time: missing unit in duration "{text}"')
        raise ConfigProblem(f'{key}: time: invalid duration "{text}"')
    return sign * total


def _parse_bool(text: str, key: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off", ""):
        return False
    raise ConfigProblem(f"{key}: invalid boolean {text!r}")


def _split_list(text: str) -> list[str]:
    return [item for item in (part.strip() for part in text.split(",")) if item]


def _parse_map(text: str, key: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in _split_list(text):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigProblem(f"{key}: expected key=value pairs, got {item!r}")
        result[name.strip()] = value.strip()
    return result


def typed_flag_value(key: str, text: str) -> Any:
    """Turn the string of ``-c Key=Value`` into the type the key holds."""
    lowered = key.lower()
    if lowered in _LIST_KEYS:
        return _split_list(text)
    if lowered in _MAP_KEYS:
        return _parse_map(text, key)
    if lowered in _INT_KEYS:
        try:
            return int(text)
        except ValueError as exc:
            raise ConfigProblem(f"{key}: invalid integer {text!r}") from exc
    if lowered in _BOOL_KEYS or lowered.endswith(".enabled"):
        return _parse_bool(text, key)
    return text


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    parts = dotted.split(".")
    layer: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        layer = {part: layer}
    return layer


def _lookup(node: Any, parts: list[str]) -> tuple[bool, Any]:
    """Walk one layer case-insensitively; (found, value)."""
    for part in parts:
        if not isinstance(node, dict):
            return False, None
        wanted = part.lower()
        for name, child in node.items():
            if str(name).lower() == wanted:
                node = child
                break
        else:
            return False, None
    return True, node


def field_of(item: Any, name: str, default: Any = None) -> Any:
    """Case-insensitive field of a mapping from YAML (e.g. an API user)."""
    found, value = _lookup(item, [name])
    return value if found else default


@dataclass
class Config:
    """The merged view of every layer; ``get("Compute.Auth.Token")``."""

    layers: list[dict[str, Any]] = field(default_factory=list)  # highest precedence first

    def get(self, dotted: str, default: Any = None) -> Any:
        parts = dotted.split(".")
        for layer in self.layers:
            found, value = _lookup(layer, parts)
            if found and value is not None:
                return value
        return default

    def set(self, dotted: str, value: Any) -> None:
        """Set a value above every layer (used for serve flags)."""
        self.layers.insert(0, _nest(dotted, value))

    def text(self, dotted: str, default: str = "") -> str:
        value = self.get(dotted, default)
        return "" if value is None else str(value)

    def flag(self, dotted: str) -> bool:
        value = self.get(dotted, False)
        if isinstance(value, str):
            return _parse_bool(value, dotted)
        return bool(value)

    def integer(self, dotted: str) -> int:
        value = self.get(dotted)
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigProblem(f"{dotted}: invalid integer {value!r}") from exc

    def duration(self, dotted: str) -> float:
        return parse_duration(self.get(dotted, "0"), dotted)

    def strings(self, dotted: str) -> list[str]:
        value = self.get(dotted, [])
        if isinstance(value, str):
            return _split_list(value)
        if not isinstance(value, list):
            raise ConfigProblem(f"{dotted}: expected a list, got {value!r}")
        return [str(item) for item in value]

    def mapping(self, dotted: str) -> dict[str, str]:
        value = self.get(dotted, {})
        if isinstance(value, str):
            return _parse_map(value, dotted)
        if not isinstance(value, dict):
            raise ConfigProblem(f"{dotted}: expected a map, got {value!r}")
        return {str(k): _label_text(v) for k, v in value.items()}

    def merged(self) -> dict[str, Any]:
        """One nested dict of all layers (for ``/api/v1/agent/config``)."""
        result: dict[str, Any] = {}
        for layer in reversed(self.layers):
            _merge_into(result, layer)
        return result


def _label_text(value: Any) -> str:
    """A YAML scalar as Go would print it into a string map (``true``, not ``True``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _merge_into(target: dict[str, Any], layer: dict[str, Any]) -> None:
    for name, value in layer.items():
        existing = next((k for k in target if k.lower() == str(name).lower()), None)
        if isinstance(value, dict) and existing is not None and isinstance(target[existing], dict):
            _merge_into(target[existing], value)
            continue
        if existing is not None:
            del target[existing]
        target[str(name) if existing is None else existing] = (
            _copy(value) if not isinstance(value, dict) else _merge_copy(value)
        )


def _merge_copy(value: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = {}
    _merge_into(copy, value)
    return copy


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def redact(tree: Any) -> Any:
    """A copy of a config tree with secret values replaced by ``****``."""
    if isinstance(tree, dict):
        return {
            k: ("****" if str(k).lower() in SECRET_KEYS and v else redact(v))
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [redact(item) for item in tree]
    return tree


def load_yaml_layer(path: str) -> dict[str, Any]:
    """One YAML config file; it must be a mapping (an empty file is fine)."""
    if not path.endswith((".yaml", ".yml")):
        raise ConfigProblem(f"config file {path} must end in .yaml or .yml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigProblem(f"reading config file {path}: {exc.strerror}") from exc
    import yaml  # only when a file is read: `version --client` stays light

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigProblem(f"parsing config file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigProblem(f"config file {path}: top level must be a mapping")
    return data


def default_data_dir(environ: dict[str, str]) -> str:
    """``$BACALHAU_DIR`` or ``~/.bacalhau`` (the real default)."""
    if environ.get("BACALHAU_DIR"):
        return environ["BACALHAU_DIR"]
    return str(Path(environ.get("HOME", "/root")) / ".bacalhau")


def build_config(
    files: list[str], flags: list[str], environ: dict[str, str] | None = None
) -> Config:
    """Defaults < YAML files (in order) < ``-c`` flags; ``-c x.yaml`` is a file."""
    env = dict(os.environ if environ is None else environ)
    file_layers: list[dict[str, Any]] = []
    flag_layers: list[dict[str, Any]] = []
    for path in files:
        file_layers.append(load_yaml_layer(path))
    for item in flags:
        if item.endswith((".yaml", ".yml")) and "=" not in item:
            file_layers.append(load_yaml_layer(item))
            continue
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigProblem(f"invalid config flag {item!r}")
        flag_layers.append(_nest(key, typed_flag_value(key, value) if sep else True))
    defaults = dict(DEFAULTS)
    defaults["DataDir"] = default_data_dir(env)
    config = Config(layers=[*reversed(flag_layers), *reversed(file_layers), defaults])
    if not files and not any(i.endswith((".yaml", ".yml")) for i in flags):
        implicit = Path(config.text("DataDir")) / "config.yaml"
        if implicit.is_file():
            config.layers.insert(len(flag_layers), load_yaml_layer(str(implicit)))
    return config
