"""A local S3-compatible server for the lab: moto's server in a subprocess.

moto does not check credentials (reference/lab.md §4), so tests that need a
signature check must use a real server; for result publishing and collection
moto is faithful enough and is ready in well under a second. It runs
detached (new session) so a lab started by ``invoke lab.up`` keeps it, and
its pid is recorded in the lab's state file.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import processes
from lab.hosts import LabError, free_ports

DEFAULT_BUCKET = "fleetkit-results"
_MARKER = b"moto.server"
REGION = "us-east-1"


@dataclass
class S3Server:
    """One moto server on ``host:port`` with the lab's bucket created."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    bucket: str = DEFAULT_BUCKET
    access_key_id: str = "lab-access-key"
    secret_access_key: str = "lab-secret-key"
    pid: int | None = None
    detach: bool = True  # as LabHost.detach
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20) -> S3Server:
        if not self.port:
            self.port = free_ports(1, self.host)[0]
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = processes.spawn(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            self.directory / "moto.log",
            detach=self.detach,
            cwd=self.directory,
        )
        self.pid = self._process.pid
        self._wait_ready(timeout)
        self.create_bucket(self.bucket)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise LabError(f"moto server exited at start; see {self.directory / 'moto.log'}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=0.5):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer means it is serving
            except OSError:
                time.sleep(0.05)
        raise LabError(f"moto server not answering on {self.endpoint}")

    def client(self) -> Any:
        """A boto3 S3 client for this server (for tests and the lab's own setup)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the lab bucket (for test assertions)."""
        paginator = self.client().get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found += [item["Key"] for item in page.get("Contents", [])]
        return found

    def stop(self) -> None:
        processes.stop(self.pid, self._process, _MARKER)
        self._process = None
        self.pid = None

    def to_state(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "host": self.host,
            "port": self.port,
            "bucket": self.bucket,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "pid": self.pid,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> S3Server:
        return cls(
            directory=Path(data["directory"]),
            host=data["host"],
            port=int(data["port"]),
            bucket=data["bucket"],
            access_key_id=data["access_key_id"],
            secret_access_key=data["secret_access_key"],
            pid=data.get("pid"),
        )
