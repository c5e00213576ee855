"""The ``history:`` section of fleetkit.yaml: where runs are recorded and for how long.

It lives in the foundation (not in :mod:`fleetkit.history`) because the
settings loader reads it with every other section, before anything runs;
the history layer only consumes the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetkit.foundation.settings_reader import Reader
from fleetkit.foundation.validate import excerpt, matches

SECTION = "history"
DEFAULT_PATH = ".fleetkit/history.db"
STORES = ("sqlite", "s3")
KEYS = {"path", "keep_days", "store", "s3_prefix", "lock_timeout"}
# An S3 key prefix: path segments of safe characters, ending with "/".
_PREFIX = re.compile(r"(?:[A-Za-z0-9._=-]+/)*")
_MAX_KEEP_DAYS = 36500


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
        return read_history(Reader(data, file=file, key=SECTION, allowed=KEYS), Path(base_dir))


def read_history(r: Reader, base: Path) -> HistorySettings:
    """The section through the settings' typed reader (errors name ``history.KEY``)."""
    prefix = r.text("s3_prefix", "history/")
    if not prefix.endswith("/"):
        prefix += "/"
    if prefix.startswith("/") or "//" in prefix or not matches(_PREFIX, prefix):
        raise r.err("s3_prefix", f"expected a key prefix like history/, got {excerpt(prefix)}")
    return HistorySettings(
        path=r.path("path", base, DEFAULT_PATH),
        keep_days=_keep_days(r),
        store=r.text("store", "sqlite", choices=STORES),
        s3_prefix=prefix,
        lock_timeout=_lock_timeout(r),
    )


def _keep_days(r: Reader) -> int | None:
    value = r.data.get("keep_days", 90)
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_KEEP_DAYS:
        raise r.err(
            "keep_days",
            f"expected whole days 1-{_MAX_KEEP_DAYS} (0 or null keeps all), got {excerpt(value)}",
        )
    return value


def _lock_timeout(r: Reader) -> float:
    value = r.data.get("lock_timeout", 10.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise r.err("lock_timeout", f"expected seconds > 0 and <= 3600, got {excerpt(value)}")
    return float(value)
