"""The ``watch:`` settings section: defaults, and every bad value named by file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.watch_settings import RetryPolicy, WatchSettings

FILE = "/etc/fleetkit/fleetkit.yaml"
BASE = "/etc/fleetkit"
TOKEN_URL = "https://hooks.example.org/services/T000/B000/SECRETPATHTOKEN"


def hook(**fields: Any) -> dict[str, Any]:
    return {"webhook": {"url": TOKEN_URL, "secret_env": "S", **fields}}


def read(data: Any, environ: dict[str, str] | None = None) -> WatchSettings:
    return WatchSettings.from_mapping(data, file=FILE, base_dir=BASE, environ=environ or {})


def test_no_section_means_the_defaults_and_a_disabled_watch() -> None:
    settings = read(None)
    assert settings == WatchSettings(status_file=f"{BASE}/.fleetkit/watch-status.json")
    assert not settings.enabled and settings.webhook is None and settings.missing_after == 3


def test_a_full_section(tmp_path: Path) -> None:
    secret = tmp_path / "webhook.secret"
    secret.write_text("s3cr3t-value\n")
    settings = WatchSettings.from_mapping(
        {
            "enabled": True,
            "packs": ["ssh-keys", "packs/extra", "/opt/packs/iocs.yaml"],
            "missing_after": 2,
            "query_timeout": 30,
            "run_timeout": 300,
            "max_events_per_run": 50,
            "log_events": False,
            "status_file": "/var/lib/fleetkit/watch.json",
            "heartbeat": 10,
            "stop_grace": 0,
            "webhook": {
                "url": TOKEN_URL,
                "secret_file": "webhook.secret",
                "timeout": 5,
                "queue_size": 10,
                "retry": {"attempts": 3, "backoff": 0.5, "backoff_max": 4},
            },
        },
        file=FILE,
        base_dir=tmp_path,
        environ={},
    )
    assert settings.packs == ("ssh-keys", f"{tmp_path}/packs/extra", "/opt/packs/iocs.yaml")
    assert (settings.missing_after, settings.query_timeout, settings.run_timeout) == (2, 30, 300)
    assert settings.status_file == "/var/lib/fleetkit/watch.json"
    assert (settings.heartbeat, settings.stop_grace, settings.log_events) == (10, 0, False)
    webhook = settings.webhook
    assert webhook is not None and webhook.url == TOKEN_URL
    assert webhook.retry == RetryPolicy(attempts=3, first_delay=0.5, max_delay=4)
    assert webhook.secret.reveal() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)


def test_the_secret_may_come_from_the_environment() -> None:
    settings = read(
        {"webhook": {"url": TOKEN_URL, "secret_env": "HOOK_SECRET"}}, {"HOOK_SECRET": "abcd1234"}
    )
    assert settings.webhook is not None and settings.webhook.secret.reveal() == "abcd1234"


def test_a_missing_secret_is_an_error_when_revealed_naming_where_it_was_expected() -> None:
    settings = read({"webhook": {"url": TOKEN_URL, "secret_env": "HOOK_SECRET"}})
    assert settings.webhook is not None
    with pytest.raises(ConfigError, match="environment variable HOOK_SECRET") as caught:
        settings.webhook.secret.reveal()
    assert caught.value.key == "watch.webhook.secret"


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ([], "watch", "expected a mapping"),
        ({"enable": True}, "watch.enable", "unknown key"),
        ({"enabled": "yes"}, "watch.enabled", "true or false"),
        ({"packs": "ssh-keys"}, "watch.packs", "list of strings"),
        ({"packs": ["bad name!"]}, "watch.packs", "neither a pack name nor a path"),
        ({"packs": ["a", "a"]}, "watch.packs", "listed twice"),
        ({"missing_after": 0}, "watch.missing_after", "integer 1-1000"),
        ({"query_timeout": 100, "run_timeout": 50}, "watch.run_timeout", "shorter than"),
        ({"max_events_per_run": 1}, "watch.max_events_per_run", "integer 2-100000"),
        ({"heartbeat": 0.5}, "watch.heartbeat", "1 to 3600 seconds"),
        ({"heartbeat": float("nan")}, "watch.heartbeat", "1 to 3600 seconds"),
        ({"webhook": {"url": TOKEN_URL}}, "watch.webhook", "secret_file (a path) or secret_env"),
        (hook(secret_env="1X"), "watch.webhook.secret_env", "variable name"),
        (hook(secret="inline"), "watch.webhook.secret", "unknown key"),
        (hook(url="ftp://h/x"), "watch.webhook.url", "http:// or https://"),
        (hook(url="https://u:p@h/x"), "watch.webhook.url", "credentials"),
        (hook(url="https://h/x#frag"), "watch.webhook.url", "fragment"),
        (hook(url="https://h:99999/x"), "watch.webhook.url", "not a valid URL"),
        (hook(url="https://h/\x1b[2J"), "watch.webhook.url", "printable"),
        (hook(queue_size=0), "watch.webhook.queue_size", "integer"),
        (hook(retry={"attempts": 0}), "watch.webhook.retry.attempts", "integer"),
        (hook(retry={"backoff": 10, "backoff_max": 1}), "watch.webhook.retry.backoff_max",
         "shorter than backoff"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_file_and_key(data: Any, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read({"watch": data}["watch"])
    assert caught.value.file == FILE
    assert caught.value.key == key
    assert message in str(caught.value)
    assert "SECRETPATHTOKEN" not in str(caught.value)
