"""The ``query:`` section of fleetkit.yaml: the query image, its timeout, where
node answers are published (RunOutput only, or an S3 bucket) and which
columns are redacted.

Environment override (read once, here): ``FLEETKIT_QUERY_TIMEOUT``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.settings_reader import Reader, endpoint, osquery_names, secret
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.validate import IMAGE, S3_BUCKET, S3_KEY_TEMPLATE, S3_REGION


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    region: str = "us-east-1"
    endpoint: str | None = None
    key_template: str = "fleetkit/{jobID}/{nodeID}/{executionID}"
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    parallelism: int = 16


@dataclass(frozen=True)
class QuerySettings:
    image: str = "osquery/osquery:5.23.1-ubuntu22.04"
    timeout: float = 120.0
    #: none (RunOutput only) or s3
    publisher: str = "none"
    s3: S3Settings | None = None
    redact_columns: tuple[str, ...] = ()


def read_query(top: Reader, base: Path, environ: Mapping[str, str]) -> QuerySettings:
    r = top.child("query", {"image", "timeout", "publisher", "s3", "redact_columns"})
    timeout = r.number("timeout", 120.0)
    if "FLEETKIT_QUERY_TIMEOUT" in environ:
        try:
            timeout = float(environ["FLEETKIT_QUERY_TIMEOUT"])
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigError(
                "expected a number of seconds > 0", key="FLEETKIT_QUERY_TIMEOUT"
            ) from None
    publisher = r.text("publisher", "none", choices=("none", "s3"))
    s3 = None
    if r.has("s3"):
        s = r.child(
            "s3",
            {
                "bucket",
                "region",
                "endpoint",
                "key_template",
                "access_key_id",
                "secret_access_key",
                "parallelism",
            },
        )
        template = s.matching(
            "key_template",
            "fleetkit/{jobID}/{nodeID}/{executionID}",
            S3_KEY_TEMPLATE,
            "letters, digits, _ . / = - and {placeholders}",
        )
        for placeholder in ("{jobID}", "{nodeID}", "{executionID}"):
            if placeholder not in template:
                raise s.err("key_template", f"must contain {placeholder} so results never collide")
        s3 = S3Settings(
            bucket=s.matching("bucket", None, S3_BUCKET, "an S3 bucket name"),
            region=s.matching("region", "us-east-1", S3_REGION, "an S3 region such as eu-west-1"),
            endpoint=endpoint(s),
            key_template=template,
            access_key_id=secret(s, "access_key_id", base, environ),
            secret_access_key=secret(s, "secret_access_key", base, environ),
            parallelism=s.integer("parallelism", 16, high=256),
        )
    if publisher == "s3" and s3 is None:
        raise r.err("s3", "publisher is s3 but no s3 section (bucket, region, endpoint)")
    return QuerySettings(
        image=r.matching(
            "image",
            "osquery/osquery:5.23.1-ubuntu22.04",
            IMAGE,
            "a container image such as osquery/osquery:5.23.1-ubuntu22.04",
        ),
        timeout=timeout,
        publisher=publisher,
        s3=s3,
        redact_columns=osquery_names(r, "redact_columns", (), "column"),
    )
