"""Fetching published query results from S3.

When a node's osqueryi output is over 2 KB, Bacalhau's ``RunOutput`` holds
only its start; the whole ``stdout`` is an object in the bucket (publisher
``s3``, encoding ``plain``). A query over a large fleet may need hundreds of
these, so :meth:`ResultStore.fetch_many` downloads them in a bounded thread
pool on one shared boto3 client (boto3 clients are thread-safe; sessions are
not, which is why the client is built once, up front).

A missing or unreadable object is that node's error, returned in place of its
bytes: one bad node never costs the others their results.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from fleetkit.foundation.secrets import redact, remember_secret
from fleetkit.foundation.settings import S3Settings
from fleetkit.foundation.status import ConfigError, FleetkitError

T = TypeVar("T")

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})


class ResultFetchError(FleetkitError):
    """One result object could not be fetched; names ``s3://bucket/key``."""

    def __init__(self, bucket: str, key: str, message: str) -> None:
        self.bucket = bucket
        self.key = key
        super().__init__(redact(message))


class ResultStore:
    """Reads result objects through one boto3 S3 client."""

    def __init__(self, client: Any, *, parallelism: int = 16) -> None:
        self.client = client
        self.parallelism = max(1, parallelism)

    @classmethod
    def from_settings(cls, s3: S3Settings, environ: Mapping[str, str]) -> ResultStore:
        """A store for ``query.s3``: endpoint and region from settings, credentials from
        its secrets, else ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in ``environ``,
        else boto3's default chain (profile, instance role).
        """
        key_id = s3.access_key_id.reveal() if s3.access_key_id else None
        secret = s3.secret_access_key.reveal() if s3.secret_access_key else None
        token = None
        if (key_id is None) != (secret is None):
            raise ConfigError(
                "set both access_key_id and secret_access_key, or neither (default AWS chain)",
                key="query.s3",
            )
        if key_id is None:
            key_id = environ.get("AWS_ACCESS_KEY_ID") or None
            secret = environ.get("AWS_SECRET_ACCESS_KEY") or None
            token = environ.get("AWS_SESSION_TOKEN") or None
            if key_id is None or secret is None:
                key_id = secret = token = None
        for value in (secret, token):
            if value:
                remember_secret(value)
        profile = None if key_id else (environ.get("AWS_PROFILE") or None)
        try:
            session = boto3.session.Session(
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                aws_session_token=token,
                region_name=s3.region,
                profile_name=profile,
            )
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(
                f"AWS profile {profile!r} not found (no credentials in query.s3)",
                key="AWS_PROFILE",
            ) from None
        config = botocore.config.Config(
            # One pooled connection per worker, or urllib3 drops and reopens them.
            max_pool_connections=max(10, s3.parallelism),
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # A custom endpoint (MinIO, a local server) rarely does virtual hosts.
            s3={"addressing_style": "path"} if s3.endpoint else None,
        )
        try:
            client = session.client("s3", endpoint_url=s3.endpoint, config=config)
        except (botocore.exceptions.BotoCoreError, ValueError) as exc:
            raise ConfigError(f"cannot use this S3 configuration: {exc}", key="query.s3") from None
        return cls(client, parallelism=s3.parallelism)

    def fetch(self, bucket: str, key: str) -> bytes:
        """One object's bytes; raises :class:`ResultFetchError`."""
        return self._guarded(
            bucket,
            key,
            lambda: bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read()),
        )

    def spool(self, bucket: str, key: str) -> IO[bytes]:
        """One object streamed into an anonymous temporary file (rewound).

        The file has no name on disk and vanishes when closed or collected, so
        a query that gathers many large results holds them on disk, not in
        memory; raises :class:`ResultFetchError`.
        """
        handle = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, owned by the caller
        try:

            def copy() -> None:
                body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                for chunk in body.iter_chunks(1 << 20):
                    handle.write(chunk)

            self._guarded(bucket, key, copy)
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        return handle

    def _guarded(self, bucket: str, key: str, action: Callable[[], T]) -> T:
        """Run one S3 read; every failure becomes a :class:`ResultFetchError` naming it."""
        where = f"s3://{bucket}/{key}"
        try:
            return action()
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND_CODES:
                what = "bucket" if code == "NoSuchBucket" else "object"
                raise ResultFetchError(bucket, key, f"result {what} {where} not found") from None
            message = error.get("Message") or str(exc)
            raise ResultFetchError(
                bucket, key, f"cannot fetch result object {where}: {code} {message}"
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise ResultFetchError(
                bucket,
                key,
                f"cannot fetch result object {where}: no AWS credentials (set "
                "query.s3.access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID)",
            ) from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise ResultFetchError(
                bucket,
                key,
                f"cannot fetch result object {where}: cannot reach "
                f"{exc.kwargs.get('endpoint_url', 'the S3 endpoint')}",
            ) from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise ResultFetchError(
                bucket, key, f"cannot fetch result object {where}: {type(exc).__name__}: {exc}"
            ) from None

    def fetch_many(
        self, items: Sequence[tuple[str, str, str]], parallelism: int | None = None
    ) -> dict[str, bytes | FleetkitError]:
        """``{item_id: bytes or error}`` for ``(item_id, bucket, key)`` items (item_id =
        execution ID), downloaded by at most ``parallelism`` threads at once.
        """
        return self._in_pool(items, parallelism, self.fetch)

    def spool_many(
        self, items: Sequence[tuple[str, str, str]], parallelism: int | None = None
    ) -> dict[str, IO[bytes] | FleetkitError]:
        """Like :meth:`fetch_many`, each object into its own temporary file (see :meth:`spool`)."""
        return self._in_pool(items, parallelism, self.spool)

    def _in_pool(
        self,
        items: Sequence[tuple[str, str, str]],
        parallelism: int | None,
        get: Callable[[str, str], T],
    ) -> dict[str, T | FleetkitError]:
        def one(bucket: str, key: str) -> T | FleetkitError:
            try:
                return get(bucket, key)
            except FleetkitError as exc:
                return exc

        workers = min(parallelism or self.parallelism, self._pool_size(), len(items))
        if workers <= 1:
            return {item_id: one(b, k) for item_id, b, k in items}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-fetch") as pool:
            futures = {item_id: pool.submit(one, bucket, key) for item_id, bucket, key in items}
            return {item_id: future.result() for item_id, future in futures.items()}

    def _pool_size(self) -> int:
        """Connections the client keeps; more threads than that would only queue for one."""
        config = getattr(getattr(self.client, "meta", None), "config", None)
        size = getattr(config, "max_pool_connections", None)
        return size if isinstance(size, int) and size > 0 else self.parallelism
