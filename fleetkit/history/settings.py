"""The ``history`` section of ``fleetkit.yaml``.

Parsed here (not in ``foundation/settings.py``) so the history layer owns its
own keys; the settings loader hands the raw mapping to :meth:`from_mapping`
and keeps the result as ``Settings.history``. Strict like the rest of the
file: unknown keys, wrong types and out-of-range values are a
:class:`~fleetkit.foundation.status.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.yamlfile import expect_mapping, reject_unknown_keys

SECTION = "history"
DEFAULT_PATH = ".fleetkit/history.db"
STORES = ("sqlite", "s3")
_KEYS = {"path", "keep_days", "store", "s3_prefix", "lock_timeout"}
# An S3 key prefix: path segments of safe characters, ending with "/".
_PREFIX_RE = re.compile(r"^(?:[A-Za-z0-9._=-]+/)*$")


@dataclass(frozen=True)
class HistorySettings:
    """Where runs are recorded and for how long."""

    #: The SQLite file (absolute); relative settings are resolved beside fleetkit.yaml.
    path: str
    #: Runs older than this many days are pruned after each recording; None keeps all.
    keep_days: int | None = 90
    #: ``sqlite``: the local file only. ``s3``: the local file (which history, show and
    #: diff read) and the same records in the results bucket (``query.s3``), in the
    #: Hive-partitioned layout of ``fleetkit.history.s3layout``.
    store: str = "sqlite"
    #: Key prefix of the layout in the results bucket.
    s3_prefix: str = "history/"
    #: Seconds to wait for another fleetkit process holding the history's write lock.
    lock_timeout: float = 10.0

    @classmethod
    def default(cls, base_dir: str | Path) -> HistorySettings:
        return cls(path=str((Path(base_dir) / DEFAULT_PATH).resolve()))

    @classmethod
    def from_mapping(cls, data: Any, *, file: str, base_dir: str | Path) -> HistorySettings:
        """The ``history:`` mapping (None or absent = defaults) of the settings ``file``."""
        section = expect_mapping(data, file=file, key=SECTION)
        reject_unknown_keys(section, _KEYS, file=file, key=SECTION)
        field = _Fields(section, file)
        raw_path = field.text("path", DEFAULT_PATH)
        prefix = field.text("s3_prefix", "history/")
        if not prefix.endswith("/"):
            prefix += "/"
        if prefix.startswith("/") or not _PREFIX_RE.match(prefix) or "//" in prefix:
            raise field.error("s3_prefix", f"expected a key prefix like history/, got {prefix!r}")
        return cls(
            path=str((Path(base_dir) / Path(raw_path).expanduser()).resolve()),
            keep_days=field.keep_days(),
            store=field.text("store", "sqlite", choices=STORES),
            s3_prefix=prefix,
            lock_timeout=field.seconds("lock_timeout", 10.0),
        )


class _Fields:
    """Typed reads of the section with errors naming ``history.KEY``."""

    def __init__(self, section: Mapping[str, Any], file: str) -> None:
        self.section = section
        self.file = file

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=f"{SECTION}.{name}")

    def text(self, name: str, default: str, *, choices: tuple[str, ...] = ()) -> str:
        value = self.section.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def keep_days(self) -> int | None:
        value = self.section.get("keep_days", 90)
        if value is None or value == 0:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 36500:
            raise self.error(
                "keep_days", f"expected whole days 1-36500 (0 or null keeps all), got {value!r}"
            )
        return value

    def seconds(self, name: str, default: float) -> float:
        value = self.section.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            raise self.error(name, f"expected seconds > 0 and <= 3600, got {value!r}")
        return float(value)
