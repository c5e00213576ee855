"""The S3 result reader against a hostile endpoint: bounded in size and time, no redirects.

The endpoint is the hostile test server (``tests/hostile_server.py``); boto3
signs the GET locally, so no real S3 server is needed. Every failure is that
one object's :class:`ResultFetchError`, naming ``s3://bucket/key``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from fleetkit.clients.http import Limits
from fleetkit.clients.s3 import ResultFetchError, ResultStore
from fleetkit.foundation.settings import S3Settings
from tests.hostile_server import Act, HostileServer, hostile

__all__ = ["hostile"]

BUCKET = "fleet-results"
KEY = "fleetkit/j-1/node-1/e-1/stdout"
PATH = f"/{BUCKET}/{KEY}"
WHERE = f"s3://{BUCKET}/{KEY}"
DEADLINE = 1.5
SLACK = 15.0
CAP = 256 * 1024
ENVIRON: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "AKIDHOSTILETEST",
    "AWS_SECRET_ACCESS_KEY": "hostile-test-secret-0123456789",
}


def store_for(server: HostileServer) -> ResultStore:
    settings = S3Settings(bucket=BUCKET, endpoint=server.url, parallelism=4)
    limits = Limits(timeout=5.0, deadline=DEADLINE, max_bytes=CAP)
    return ResultStore.from_settings(settings, ENVIRON, limits=limits)


def fetch_error(server: HostileServer) -> tuple[ResultFetchError, float]:
    started = time.monotonic()
    with pytest.raises(ResultFetchError) as caught:
        store_for(server).spool(BUCKET, KEY)
    return caught.value, time.monotonic() - started


def test_an_object_within_the_cap_is_read_whole(hostile: HostileServer) -> None:
    hostile.on(PATH, Act(body=b"[\n]\n" + b" " * (CAP - 4)))
    with store_for(hostile).spool(BUCKET, KEY) as handle:
        assert len(handle.read()) == CAP
    assert hostile.seen[0].path == PATH  # boto3 signed, the bounded client fetched


def test_a_flood_stops_at_the_cap(hostile: HostileServer) -> None:
    hostile.on(PATH, Act(body=b"[", flood=100 * 1024 * 1024))
    error, elapsed = fetch_error(hostile)
    assert str(error) == (
        f"cannot fetch result object {WHERE}: the answer is larger than the {CAP}-byte cap; "
        "stopped reading"
    )
    assert elapsed < SLACK


def test_an_announced_huge_object_is_refused_unread(hostile: HostileServer) -> None:
    hostile.on(PATH, Act(body=b"[]", claim=50 * 1024**3))
    error, _ = fetch_error(hostile)
    assert "announces 53687091200 bytes" in str(error)


def test_a_trickle_ends_at_the_deadline(hostile: HostileServer) -> None:
    hostile.on(PATH, Act(body=b"[" + b" " * 200 + b"]", drip=0.2))
    error, elapsed = fetch_error(hostile)
    assert str(error) == (
        f"cannot fetch result object {WHERE}: {hostile.url} did not finish sending it within "
        f"{DEADLINE:g}s"
    )
    assert elapsed < DEADLINE + SLACK


def test_a_redirect_is_refused_not_followed(hostile: HostileServer) -> None:
    location = "http://elsewhere.example/\x1b[2Jstolen"
    hostile.on(PATH, Act(307, b"[]", headers={"Location": location}))
    error, _ = fetch_error(hostile)
    message = str(error)
    assert "answered with a redirect (307) to http://elsewhere.example/\\x1b[2Jstolen" in message
    assert "\x1b" not in message and "redirects are not followed" in message
    assert [s.path for s in hostile.seen] == [PATH]


def test_s3_error_text_is_escaped_and_cut_and_the_signature_never_shown(
    hostile: HostileServer,
) -> None:
    xml = (
        "<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
        f"<Message>\x1b]0;owned\x07{'m' * 250}</Message></Error>"
    )
    hostile.on(PATH, Act(403, xml))
    error, _ = fetch_error(hostile)
    message = str(error)
    assert message.startswith(f"cannot fetch result object {WHERE}: 403 AccessDenied \\x1b]0;")
    assert "\x1b" not in message and "\x07" not in message
    assert "m" * 250 not in message
    assert "X-Amz-Signature" not in message and "AKIDHOSTILETEST" not in message


def test_missing_object_is_not_found(hostile: HostileServer) -> None:
    xml = (
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
    )
    hostile.on(PATH, Act(404, xml))
    error, _ = fetch_error(hostile)
    assert str(error) == f"result object {WHERE} not found"
