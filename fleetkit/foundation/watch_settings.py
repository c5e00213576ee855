"""The ``watch:`` section of fleetkit.yaml, read strictly (file and key in every error).

::

    watch:
      enabled: true                 # provisioning installs the watch service
      packs: [ssh-keys, packs/extra]   # pack names, or files/directories of packs; [] = all
      missing_after: 3              # "node missing" after N consecutive runs without an answer
      query_timeout: 60             # seconds per statement inside a pack's job
      run_timeout: 600              # seconds per pack run (the job's total timeout)
      max_events_per_run: 1000
      log_events: true              # one log line per event
      status_file: .fleetkit/watch-status.json
      heartbeat: 30                 # seconds between status file updates while idle
      stop_grace: 10                # seconds to deliver queued notifications when stopping
      webhook:
        url: https://hooks.example.org/fleetkit
        secret_file: /etc/fleetkit/webhook.secret    # or secret_env: NAME (either, or both)
        timeout: 10
        queue_size: 1000
        retry: {attempts: 6, backoff: 1, backoff_max: 300}

The webhook URL may carry a token in its path (many services work that
way), so it is treated like a secret in messages: only scheme, host and port
are ever shown (``fleetkit.watch.notify.display_url``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleetkit.foundation.inventory import NAME_RE
from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.settings_reader import Reader
from fleetkit.foundation.validate import excerpt, matches

KEYS = {
    "enabled",
    "packs",
    "missing_after",
    "query_timeout",
    "run_timeout",
    "max_events_per_run",
    "log_events",
    "status_file",
    "heartbeat",
    "stop_grace",
    "webhook",
}
WEBHOOK_KEYS = {"url", "secret_file", "secret_env", "timeout", "queue_size", "retry"}
RETRY_KEYS = {"attempts", "backoff", "backoff_max"}
DEFAULT_STATUS_FILE = ".fleetkit/watch-status.json"
MAX_URL_CHARS = 2048
_ENV_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_URL_UNSAFE_RE = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class RetryPolicy:
    """How a webhook delivery is retried (the notifier's worker applies it)."""

    #: Tries in all (the first one included).
    attempts: int = 6
    #: Wait before the second try; doubled each time, at most ``max_delay``.
    first_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, failed_attempts: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (failed_attempts - 1)))


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: Secret
    timeout: float = 10.0
    queue_size: int = 1000
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class WatchSettings:
    enabled: bool = False
    #: Pack names, or absolute paths of pack files/directories; () = every pack found.
    packs: tuple[str, ...] = ()
    missing_after: int = 3
    query_timeout: int = 60
    run_timeout: int = 600
    max_events_per_run: int = 1000
    log_events: bool = True
    #: Absolute path of the status file (``invoke verify`` reads it).
    status_file: str = DEFAULT_STATUS_FILE
    heartbeat: float = 30.0
    stop_grace: float = 10.0
    webhook: WebhookSettings | None = None

    @classmethod
    def from_mapping(
        cls,
        data: Any,
        *,
        file: str,
        base_dir: str | Path,
        environ: Mapping[str, str],
        key: str = "watch",
    ) -> WatchSettings:
        """Validate the ``watch`` mapping (None/absent = the defaults, watch disabled)."""
        base = Path(base_dir)
        r = Reader(data, file=file, key=key, allowed=KEYS)
        query_timeout = r.integer("query_timeout", 60, low=1, high=86400)
        run_timeout = r.integer("run_timeout", 600, low=1, high=86400)
        if run_timeout < query_timeout:
            raise r.err(
                "run_timeout",
                f"{run_timeout}s is shorter than query_timeout ({query_timeout}s)",
            )
        return cls(
            enabled=r.boolean("enabled", False),
            packs=_packs(r, base),
            missing_after=r.integer("missing_after", 3, low=1, high=1000),
            query_timeout=query_timeout,
            run_timeout=run_timeout,
            max_events_per_run=r.integer("max_events_per_run", 1000, low=2, high=100_000),
            log_events=r.boolean("log_events", True),
            status_file=r.path("status_file", base, DEFAULT_STATUS_FILE),
            heartbeat=_seconds(r, "heartbeat", 30.0, low=1.0, high=3600.0),
            stop_grace=_seconds(r, "stop_grace", 10.0, low=0.0, high=600.0),
            webhook=_webhook(r, base, environ) if r.has("webhook") else None,
        )


def _packs(r: Reader, base: Path) -> tuple[str, ...]:
    """Names stay names; anything with a ``/`` or a YAML suffix is a path, made absolute."""
    out = []
    for item in r.str_list("packs", ()):
        if "/" in item or item.endswith((".yaml", ".yml")):
            out.append(str((base / Path(item).expanduser()).resolve()))
        elif NAME_RE.fullmatch(item):
            out.append(item)
        else:
            raise r.err("packs", f"{item[:80]!r} is neither a pack name nor a path")
    if len(set(out)) != len(out):
        raise r.err("packs", "a pack is listed twice")
    return tuple(out)


def _seconds(r: Reader, name: str, default: float, *, low: float, high: float) -> float:
    value = r.data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise r.err(name, f"expected {low:g} to {high:g} seconds, got {excerpt(value)}")
    return float(value)


def _webhook(r: Reader, base: Path, environ: Mapping[str, str]) -> WebhookSettings:
    w = r.child("webhook", WEBHOOK_KEYS)
    url = _url(w)
    env = w.opt_str("secret_env")
    if env is not None and not matches(_ENV_NAME_RE, env):
        raise w.err("secret_env", "expected an environment variable name")
    secret_file = w.path("secret_file", base) if w.has("secret_file") else None
    if env is None and secret_file is None:
        raise r.err("webhook", "the webhook needs secret_file (a path) or secret_env (a name)")
    retry = w.child("retry", RETRY_KEYS)
    first = _seconds(retry, "backoff", 1.0, low=0.01, high=3600.0)
    most = _seconds(retry, "backoff_max", 300.0, low=0.01, high=86400.0)
    if most < first:
        raise retry.err("backoff_max", f"{most:g}s is shorter than backoff ({first:g}s)")
    return WebhookSettings(
        url=url,
        secret=Secret(
            name=f"{w.key}.secret",
            env=env,
            file=secret_file,
            settings_file=w.file,
            _environ=environ,
        ),
        timeout=_seconds(w, "timeout", 10.0, low=0.1, high=300.0),
        queue_size=w.integer("queue_size", 1000, low=1, high=100_000),
        retry=RetryPolicy(
            attempts=retry.integer("attempts", 6, low=1, high=50),
            first_delay=first,
            max_delay=most,
        ),
    )


def _url(w: Reader) -> str:
    """http(s), a host, no credentials (they belong in the secret), nothing unprintable.

    Messages about a bad URL never quote it: its path may be a token.
    """
    url = w.text("url")
    if len(url) > MAX_URL_CHARS or _URL_UNSAFE_RE.search(url):
        raise w.err("url", f"expected a URL of at most {MAX_URL_CHARS} printable characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise w.err("url", "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise w.err("url", "expected an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise w.err("url", "credentials do not belong in the URL: the secret signs each request")
    if parts.fragment:
        raise w.err("url", "a URL fragment is never sent: remove it")
    return url
