"""Reading published query results from S3, bounded.

When a node's osqueryi output is over 2 KB, Bacalhau's ``RunOutput`` holds
only its start; the whole ``stdout`` is an object in the bucket (publisher
``s3``, encoding ``plain``). A query over a large fleet may need hundreds of
these, so :meth:`ResultStore.spool_many` downloads them in a bounded thread
pool, each into its own nameless temporary file.

The S3 endpoint is as untrusted as the orchestrator (and the object names
come from the orchestrator), so boto3 only *signs* each GET (a presigned URL,
computed locally) and the download goes through the same bounded HTTP as the
orchestrator client: a deadline per object, a size cap, redirects refused
(botocore would follow a region redirect), nothing decompressed. The
presigned URL carries a signature and is never shown: messages name
``s3://bucket/key`` and the endpoint.

A missing or unreadable object is that node's error, returned in place of its
file: one bad node never costs the others their results.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import boto3
import botocore.config
import botocore.exceptions

from fleetkit.clients.http import (
    BoundedHttp,
    DeadlinePassed,
    HttpFailure,
    Limits,
    ReadTimedOut,
    Redirected,
    Reply,
    TooLarge,
    Unreachable,
    quoted,
)
from fleetkit.foundation.secrets import redact, remember_secret
from fleetkit.foundation.settings import S3Settings
from fleetkit.foundation.status import ConfigError, FleetkitError

#: Per object: 10 s to connect and for each read, 120 s in all, at most 256 MiB
#: (one node's answer to one query; a result that large is itself suspect).
RESULT_LIMITS = Limits(timeout=10.0, deadline=120.0, max_bytes=256 * 1024 * 1024)
#: How long a signed GET stays valid; it is used at once.
_PRESIGN_SECONDS = 900
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "NoSuchBucket"})
_XML_FIELD = re.compile(rb"<(Code|Message)>([^<]{0,300})</\1>")


class ResultFetchError(FleetkitError):
    """One result object could not be fetched; names ``s3://bucket/key``."""

    def __init__(self, bucket: str, key: str, message: str) -> None:
        self.bucket = bucket
        self.key = key
        super().__init__(redact(message))


class ResultStore:
    """Reads result objects: boto3 signs, :class:`BoundedHttp` downloads."""

    def __init__(
        self,
        client: Any,
        *,
        parallelism: int = 16,
        http: BoundedHttp | None = None,
        limits: Limits = RESULT_LIMITS,
    ) -> None:
        self.client = client
        self.parallelism = max(1, parallelism)
        self.http = http or BoundedHttp(limits=limits, retries=2, pool_size=self.parallelism)

    @classmethod
    def from_settings(
        cls, s3: S3Settings, environ: Mapping[str, str], *, limits: Limits = RESULT_LIMITS
    ) -> ResultStore:
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
            signature_version="s3v4",
            # A custom endpoint (MinIO, a local server) rarely does virtual hosts.
            s3={"addressing_style": "path"} if s3.endpoint else None,
        )
        try:
            client = session.client("s3", endpoint_url=s3.endpoint, config=config)
        except (botocore.exceptions.BotoCoreError, ValueError) as exc:
            raise ConfigError(
                f"cannot use this S3 configuration: {quoted(exc)}", key="query.s3"
            ) from None
        return cls(client, parallelism=s3.parallelism, limits=limits)

    def spool(self, bucket: str, key: str) -> IO[bytes]:
        """One object streamed into an anonymous temporary file (rewound).

        The file has no name on disk and vanishes when closed or collected, so
        a query that gathers many large results holds them on disk, not in
        memory; raises :class:`ResultFetchError`.
        """
        url = self._signed_get(bucket, key)
        handle = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, owned by the caller
        try:
            reply = self.http.request("GET", url, sink=handle)
        except HttpFailure as failed:
            handle.close()
            raise self._failure(bucket, key, failed) from None
        except BaseException:
            handle.close()
            raise
        if not reply.ok:
            handle.close()
            raise self._refusal(bucket, key, reply)
        handle.seek(0)
        return handle

    def spool_many(
        self, items: Sequence[tuple[str, str, str]], parallelism: int | None = None
    ) -> dict[str, IO[bytes] | FleetkitError]:
        """``{item_id: file or error}`` for ``(item_id, bucket, key)`` items (item_id =
        execution ID), downloaded by at most ``parallelism`` threads at once (see :meth:`spool`).
        """

        def one(bucket: str, key: str) -> IO[bytes] | FleetkitError:
            try:
                return self.spool(bucket, key)
            except FleetkitError as exc:
                return exc

        workers = min(parallelism or self.parallelism, len(items))
        if workers <= 1:
            return {item_id: one(b, k) for item_id, b, k in items}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-fetch") as pool:
            futures = {item_id: pool.submit(one, bucket, key) for item_id, bucket, key in items}
            return {item_id: future.result() for item_id, future in futures.items()}

    # ---- errors

    def _signed_get(self, bucket: str, key: str) -> str:
        """A presigned GET URL (computed locally; no request is sent)."""
        try:
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=_PRESIGN_SECONDS
            )
        except botocore.exceptions.NoCredentialsError:
            raise ResultFetchError(
                bucket,
                key,
                f"cannot fetch result object {_where(bucket, key)}: no AWS credentials (set "
                "query.s3.access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID)",
            ) from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise ResultFetchError(
                bucket,
                key,
                f"cannot fetch result object {_where(bucket, key)}: "
                f"{quoted(f'{type(exc).__name__}: {exc}')}",
            ) from None
        return str(url)

    def _failure(self, bucket: str, key: str, failed: HttpFailure) -> ResultFetchError:
        endpoint = quoted(getattr(self.client.meta, "endpoint_url", None) or "the S3 endpoint")
        limits = self.http.limits
        if isinstance(failed, Unreachable):
            why = f"cannot reach {endpoint} ({failed.reason})"
        elif isinstance(failed, DeadlinePassed):
            why = f"{endpoint} did not finish sending it within {limits.deadline:g}s"
        elif isinstance(failed, ReadTimedOut):
            why = f"{endpoint} sent nothing for {limits.timeout:g}s"
        elif isinstance(failed, TooLarge):
            why = f"{failed.reason}; stopped reading"
        elif isinstance(failed, Redirected):
            why = (
                f"{endpoint} answered with a {failed.reason}; redirects are not followed "
                "(check query.s3.region and query.s3.endpoint)"
            )
        else:
            why = f"{endpoint}: {failed.reason}"
        return ResultFetchError(
            bucket, key, f"cannot fetch result object {_where(bucket, key)}: {why}"
        )

    def _refusal(self, bucket: str, key: str, reply: Reply) -> ResultFetchError:
        fields = {name.decode(): value for name, value in _XML_FIELD.findall(reply.body)}
        code = fields.get("Code", b"").decode("utf-8", "replace")
        where = _where(bucket, key)
        if code in _NOT_FOUND_CODES or (reply.status == 404 and not code):
            what = "bucket" if code == "NoSuchBucket" else "object"
            return ResultFetchError(bucket, key, f"result {what} {where} not found")
        message = fields.get("Message", b"").decode("utf-8", "replace") or reply.reason
        return ResultFetchError(
            bucket,
            key,
            f"cannot fetch result object {where}: {reply.status} {quoted(code)} {quoted(message)}",
        )


def _where(bucket: str, key: str) -> str:
    return quoted(f"s3://{bucket}/{key}", limit=300)
