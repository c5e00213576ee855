"""ResultStore against a real local S3 server (``moto_server`` in a subprocess).

Hostile S3 answers (floods, drips, redirects) are in ``test_s3_limits.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from fleetkit.clients.s3 import ResultFetchError, ResultStore
from fleetkit.foundation.secrets import Secret, redact
from fleetkit.foundation.settings import S3Settings
from fleetkit.foundation.status import ConfigError
from lab.hosts import free_ports
from lab.s3 import S3Server

BUCKET = "fleet-results"
KEY_ID = "AKIDFLEETKITTEST"
SECRET_KEY = "fleetkit-test-secret-key-0123456789"


def free_port() -> int:
    """A free port below the ephemeral range (no outgoing connection can take it)."""
    return free_ports(1, "127.0.0.1")[0]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = S3Server(directory=tmp_path_factory.mktemp("moto"), bucket=BUCKET).start()
    try:
        yield server.endpoint
    finally:
        server.stop()


def settings(endpoint: str, **overrides: Any) -> S3Settings:
    environ = {"FK_KEY_ID": KEY_ID, "FK_SECRET": SECRET_KEY}
    values: dict[str, Any] = {
        "bucket": BUCKET,
        "region": "us-east-1",
        "endpoint": endpoint,
        "access_key_id": Secret(name="query.s3.access_key_id", env="FK_KEY_ID", _environ=environ),
        "secret_access_key": Secret(
            name="query.s3.secret_access_key", env="FK_SECRET", _environ=environ
        ),
        "parallelism": 8,
    }
    values.update(overrides)
    return S3Settings(**values)


@pytest.fixture(scope="module")
def objects(endpoint: str) -> dict[str, bytes]:
    """Result objects as a node publishes them: ``<key template>/stdout``."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET_KEY,
    )
    stored = {}
    for i in range(40):
        key = f"fleetkit/j-1/node-{i}/e-{i}/stdout"
        body = (f'[\n  {{"hostname":"node-{i}","n":"{i}","s":"\u00e9\u4e2d"}}\n]\n').encode()
        body += b" " * (i * 997)  # sizes from tens of bytes to ~40 KB
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        stored[key] = body
    return stored


def read_all(results: dict[str, Any]) -> dict[str, Any]:
    """Each spooled file's bytes (closed), errors as they are."""
    out: dict[str, Any] = {}
    for item_id, value in results.items():
        if isinstance(value, ResultFetchError):
            out[item_id] = value
        else:
            out[item_id] = value.read()
            value.close()
    return out


def test_spool_many_returns_each_object_under_its_execution(
    endpoint: str, objects: dict[str, bytes]
) -> None:
    store = ResultStore.from_settings(settings(endpoint), {})
    items = [(f"e-{i}", BUCKET, f"fleetkit/j-1/node-{i}/e-{i}/stdout") for i in range(40)]
    results = read_all(store.spool_many(items, parallelism=8))
    assert list(results) == [item_id for item_id, _, _ in items]
    for item_id, _, key in items:
        assert results[item_id] == objects[key]


def test_spool_many_puts_each_object_in_its_own_nameless_file(
    endpoint: str, objects: dict[str, bytes]
) -> None:
    store = ResultStore.from_settings(settings(endpoint), {})
    items = [(f"e-{i}", BUCKET, f"fleetkit/j-1/node-{i}/e-{i}/stdout") for i in range(40)]
    items.append(("e-gone", BUCKET, "fleetkit/j-1/node-x/e-gone/stdout"))
    results = store.spool_many(items, parallelism=8)
    gone = results.pop("e-gone")
    assert isinstance(gone, ResultFetchError) and "not found" in str(gone)
    for item_id, _, key in items[:-1]:
        handle = results[item_id]
        assert not isinstance(handle, ResultFetchError)
        assert handle.read() == objects[key]
        handle.close()


def test_missing_object_is_a_per_item_error(endpoint: str, objects: dict[str, bytes]) -> None:
    store = ResultStore.from_settings(settings(endpoint), {})
    results = read_all(
        store.spool_many(
            [
                ("e-0", BUCKET, "fleetkit/j-1/node-0/e-0/stdout"),
                ("e-gone", BUCKET, "fleetkit/j-1/node-x/e-gone/stdout"),
                ("e-1", BUCKET, "fleetkit/j-1/node-1/e-1/stdout"),
                ("e-nobucket", "no-such-bucket", "k/stdout"),
            ]
        )
    )
    assert results["e-0"] == objects["fleetkit/j-1/node-0/e-0/stdout"]
    assert results["e-1"] == objects["fleetkit/j-1/node-1/e-1/stdout"]
    gone = results["e-gone"]
    assert isinstance(gone, ResultFetchError)
    assert str(gone) == f"result object s3://{BUCKET}/fleetkit/j-1/node-x/e-gone/stdout not found"
    assert (gone.bucket, gone.key) == (BUCKET, "fleetkit/j-1/node-x/e-gone/stdout")
    assert str(results["e-nobucket"]) == "result bucket s3://no-such-bucket/k/stdout not found"


def test_spool_raises_for_one_missing_object(endpoint: str, objects: dict[str, bytes]) -> None:
    store = ResultStore.from_settings(settings(endpoint), {})
    with pytest.raises(ResultFetchError, match="not found"):
        store.spool(BUCKET, "nope/stdout")


def test_credentials_fall_back_to_the_environment(endpoint: str, objects: dict[str, bytes]) -> None:
    environ = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    store = ResultStore.from_settings(
        settings(endpoint, access_key_id=None, secret_access_key=None), environ
    )
    key = "fleetkit/j-1/node-3/e-3/stdout"
    with store.spool(BUCKET, key) as handle:
        assert handle.read() == objects[key]
    credentials = store.client._request_signer._credentials
    assert credentials.access_key == KEY_ID


def test_secrets_are_registered_for_redaction(endpoint: str) -> None:
    ResultStore.from_settings(settings(endpoint), {})
    assert redact(f"leaked {SECRET_KEY}") == "leaked <redacted>"


def test_half_configured_credentials_are_bad_input(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="both access_key_id and secret_access_key"):
        ResultStore.from_settings(settings(endpoint, secret_access_key=None), {})


def test_unknown_aws_profile_is_bad_input(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="AWS profile 'fleetkit-no-such-profile' not found"):
        ResultStore.from_settings(
            settings(endpoint, access_key_id=None, secret_access_key=None),
            {"AWS_PROFILE": "fleetkit-no-such-profile"},
        )


def test_unreachable_endpoint_is_a_per_item_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = ResultStore.from_settings(settings(dead), {})
    results = store.spool_many([("e-1", BUCKET, "k/stdout"), ("e-2", BUCKET, "k2/stdout")])
    for item_id in ("e-1", "e-2"):
        error = results[item_id]
        assert isinstance(error, ResultFetchError)
        assert str(error).startswith(f"cannot fetch result object s3://{BUCKET}/")
        assert dead in str(error)


class GatedHttp:
    """Wraps the store's HTTP; counts concurrent downloads and proves overlap with a barrier."""

    def __init__(self, http: Any, gate: int) -> None:
        self.http = http
        self.limits = http.limits
        self.barrier = threading.Barrier(gate, timeout=10)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.peak = max(self.peak, self.in_flight)
            first = self.calls <= self.barrier.parties
        try:
            if first:
                # Only passes once `gate` downloads are running at the same time.
                self.barrier.wait()
            return self.http.request(*args, **kwargs)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_downloads_overlap_but_stay_within_the_bound(
    endpoint: str, objects: dict[str, bytes]
) -> None:
    real = ResultStore.from_settings(settings(endpoint), {})
    gated = GatedHttp(real.http, gate=4)
    store = ResultStore(real.client, parallelism=4, http=gated)  # type: ignore[arg-type]
    items = [(f"e-{i}", BUCKET, f"fleetkit/j-1/node-{i}/e-{i}/stdout") for i in range(40)]
    results = read_all(store.spool_many(items))
    assert all(isinstance(v, bytes) for v in results.values())
    assert gated.peak == 4


def test_no_items_no_work(endpoint: str) -> None:
    assert ResultStore.from_settings(settings(endpoint), {}).spool_many([]) == {}
