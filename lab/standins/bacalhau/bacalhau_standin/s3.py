"""The ``s3`` publisher: key templates and S3 PUT signed with AWS SigV4 (stdlib only).

Credentials come from the compute node's environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``); without them the
node does not advertise ``s3``. Requests are path-style against ``Endpoint``
(``https://s3.<region>.amazonaws.com`` when none is given).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit


class PublishError(Exception):
    """The upload failed; the execution fails with this message."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Credentials | None:
        key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            return None
        return cls(key, secret, environ.get("AWS_SESSION_TOKEN", ""))


def resolve_key(template: str, job_id: str, execution_id: str, node_id: str) -> str:
    """Fill ``{jobID} {executionID} {nodeID} {date} {time}`` (node-local clock)."""
    now = time.localtime()
    return (
        template.replace("{jobID}", job_id)
        .replace("{executionID}", execution_id)
        .replace("{nodeID}", node_id)
        .replace("{date}", time.strftime("%Y%m%d", now))
        .replace("{time}", time.strftime("%H%M%S", now))
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signed_put_headers(
    creds: Credentials, region: str, host: str, uri: str, body: bytes, when: datetime
) -> dict[str, str]:
    """Headers for a SigV4-signed ``PUT uri`` with ``body`` (service ``s3``)."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = when.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    if creds.session_token:
        headers["x-amz-security-token"] = creds.session_token
    names = sorted(headers)
    canonical = "\n".join(
        [
            "PUT",
            uri,
            "",
            "".join(f"{n}:{headers[n].strip()}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + creds.secret_access_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


def put_object(
    creds: Credentials, endpoint: str, region: str, bucket: str, key: str, body: bytes
) -> None:
    split = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    base_path = split.path.rstrip("/")
    uri = f"{base_path}/{quote(bucket, safe='')}/{quote(key, safe='/-_.~')}"
    headers = signed_put_headers(creds, region, split.netloc, uri, body, datetime.now(tz=UTC))
    headers["Content-Length"] = str(len(body))
    conn_class = (
        http.client.HTTPSConnection if split.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_class(split.netloc, timeout=30)
    try:
        conn.request("PUT", uri, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
    except OSError as exc:
        raise PublishError(f"failed to upload s3://{bucket}/{key} to {endpoint}: {exc}") from exc
    finally:
        conn.close()
    if response.status >= 300:
        raise PublishError(
            f"failed to upload s3://{bucket}/{key}: HTTP {response.status} "
            f"{answer[:300].decode('utf-8', 'replace')}"
        )


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mtime = int(time.time())
            member.mode = 0o644
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def publish(
    params: Mapping[str, Any],
    files: dict[str, bytes],
    ids: tuple[str, str, str],
    creds: Credentials,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """Upload ``stdout``/``stderr``/``exitCode``; returns the ``PublishedResult``."""
    bucket = str(params.get("Bucket") or "")
    template = str(params.get("Key") or "")
    if not bucket or not template:
        raise PublishError("invalid s3 publisher params: Bucket and Key are required")
    region = str(
        params.get("Region")
        or environ.get("AWS_REGION")
        or environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    endpoint = str(params.get("Endpoint") or f"https://s3.{region}.amazonaws.com")
    encoding = str(params.get("Encoding") or "gzip").lower()
    job_id, execution_id, node_id = ids
    key = resolve_key(template, job_id, execution_id, node_id)
    if encoding == "plain":
        key = key if key.endswith("/") else key + "/"
        for name, data in files.items():
            put_object(creds, endpoint, region, bucket, key + name, data)
    elif encoding == "gzip":
        key = key if key.endswith(".tar.gz") else key + ".tar.gz"
        put_object(creds, endpoint, region, bucket, key, _tarball(files))
    else:
        raise PublishError(f"invalid s3 publisher params: unknown Encoding {encoding!r}")
    return {
        "Type": "s3",
        "Params": {
            "Bucket": bucket,
            "Key": key,
            "Region": region,
            "Endpoint": str(params.get("Endpoint") or ""),
            "VersionID": "",
            "ChecksumSHA256": "",
            "Filter": "",
        },
    }
