"""The history in the results bucket: a Hive-partitioned layout for fleet-wide analysis.

With ``history.store: s3`` every run is written, as it is recorded, to the
bucket of ``query.s3`` (the local SQLite file is still written: it is what
``history``, ``show``, ``diff`` and policy state read on this machine)::

    {prefix}kind={kind}/date={YYYY-MM-DD}/run={run_id}/node={node_id}/part-0.ndjson.gz
    {prefix}kind={kind}/date={YYYY-MM-DD}/run={run_id}/manifest.json

- ``prefix``: ``history.s3_prefix`` (default ``history/``); ``date``: the run's
  start, UTC; partition values outside ``[A-Za-z0-9._-]`` are %XX-escaped as
  Hive does.
- A part holds one node's rows in recorded order, one JSON object per line:
  ``{"nodeID": ..., "hostname": ..., "late": false, "columns": {...}}`` with
  the row's osquery columns (all strings) under ``columns`` (so any
  question's rows share one schema: ``columns`` is a string-to-string map).
  Nodes without rows have no part.
- The manifest is the run (id, kind, question, pack, scope, transport, job
  id, start, end, status, coverage) and every node with its status, error,
  row count, late flag and part key. It is written last: a run without a
  manifest is being recorded (or its recording died). Late answers
  (``--retry-missing``) rewrite the node's part and the manifest.

DuckDB, for example (httpfs, with an S3 secret for the bucket)::

    SELECT kind, date, run, nodeID, hostname, columns['name'] AS name
    FROM read_json('s3://BUCKET/history/*/*/*/*/*.ndjson.gz', hive_partitioning = true,
                   columns = {nodeID: 'VARCHAR', hostname: 'VARCHAR', late: 'BOOLEAN',
                              columns: 'MAP(VARCHAR, VARCHAR)'})
    WHERE kind = 'query' AND date >= '2026-11-01';
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import botocore.exceptions

from fleetkit.clients.s3 import ResultStore
from fleetkit.foundation.history_settings import HistorySettings
from fleetkit.foundation.settings import S3Settings
from fleetkit.history.errors import HistoryError
from fleetkit.history.model import NodeEntry, RunSummary
from fleetkit.history.reader import RunReader
from fleetkit.history.rows import SEPARATOR, RowBlock

FORMAT = "fleetkit-history/1"
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


class MirrorError(Exception):
    """An S3 write failed; names the object."""


def partition_value(text: str) -> str:
    """Hive's escaping: every character outside ``[A-Za-z0-9._-]`` as %XX of its UTF-8."""
    return "".join(
        ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text
    )


def run_prefix(prefix: str, run: RunSummary) -> str:
    date = run.started_at[:10]
    return (
        f"{prefix}kind={partition_value(run.kind)}/date={date}/run={partition_value(run.run_id)}/"
    )


def node_key(prefix: str, run: RunSummary, node_id: str) -> str:
    return f"{run_prefix(prefix, run)}node={partition_value(node_id)}/part-0.ndjson.gz"


def manifest_key(prefix: str, run: RunSummary) -> str:
    return f"{run_prefix(prefix, run)}manifest.json"


def node_part(entry: NodeEntry, block: RowBlock) -> bytes:
    """A node's rows as gzipped NDJSON lines (built with two replaces, no per-row work)."""
    head = (
        json.dumps(
            {"nodeID": entry.node_id, "hostname": entry.hostname, "late": entry.late},
            ensure_ascii=False,
            separators=(",", ":"),
        )[:-1]
        + ',"columns":'
    ).encode("utf-8", "backslashreplace")
    lines = head + block.raw().replace(SEPARATOR, b"}\n" + head) + b"}\n"
    return gzip.compress(lines, compresslevel=6, mtime=0)


def manifest(run: RunSummary, entries: list[NodeEntry], prefix: str) -> bytes:
    nodes = []
    for entry in entries:
        record: dict[str, Any] = entry.as_dict()
        record["part"] = node_key(prefix, run, entry.node_id) if entry.row_count else None
        nodes.append(record)
    document = {"format": FORMAT, "run": run.as_dict(), "nodes": nodes}
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8", "backslashreplace")


class S3Mirror:
    """Writes each recorded node's part as it comes, then the run's manifest."""

    def __init__(self, client: Any, bucket: str, prefix: str, *, parallelism: int = 8) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.reader: RunReader | None = None
        self._pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="history-s3")
        self._slots = threading.BoundedSemaphore(parallelism * 2)
        self._pending: list[Future[None]] = []
        self._runs: dict[str, RunSummary] = {}

    def bind(self, reader: RunReader) -> None:
        self.reader = reader

    def put_node(self, run_id: str, entry: NodeEntry, block: RowBlock) -> None:
        """Upload the node's part (nothing for a node without rows) in the background."""
        if not block.data:
            return
        self._raise_failed()
        run = self._run(run_id)
        key = node_key(self.prefix, run, entry.node_id)
        body = node_part(entry, block)
        self._slots.acquire()
        future = self._pool.submit(self._put, key, body, "application/x-ndjson")
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append(future)

    def finish(self, run_id: str) -> None:
        """Wait for the parts, then write the manifest (re-read: coverage is final now)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        assert self.reader is not None
        run = self.reader.get_run(run_id)
        body = manifest(run, self.reader.entries(run.run_id), self.prefix)
        self._put(manifest_key(self.prefix, run), body, "application/json")
        self._runs.pop(run_id, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _run(self, run_id: str) -> RunSummary:
        if run_id not in self._runs:
            assert self.reader is not None, "S3Mirror.bind(reader) first"
            self._runs[run_id] = self.reader.get_run(run_id)
        return self._runs[run_id]

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        where = f"s3://{self.bucket}/{key}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise MirrorError(
                f"cannot write {where}: {error.get('Code', '')} {error.get('Message', '')}".strip()
            ) from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise MirrorError(f"cannot write {where}: {exc}") from None


def open_mirror(
    settings: HistorySettings, s3: S3Settings | None, environ: Mapping[str, str]
) -> S3Mirror | None:
    """The S3 copy for ``history.store: s3`` (None for ``sqlite``), checked now.

    The bucket is the results bucket (``query.s3``); it must exist and be
    reachable with the configured credentials, or HistoryError (exit 2)
    names it before anything is submitted.
    """
    if settings.store != "s3":
        return None
    if s3 is None:
        raise HistoryError(
            "history.store is s3 but query.s3 (the results bucket) is not configured",
            key="history.store",
        )
    client = ResultStore.from_settings(s3, environ).client
    where = f"s3://{s3.bucket}/{settings.s3_prefix}"
    try:
        client.head_bucket(Bucket=s3.bucket)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise HistoryError(f"history store {where} cannot be used (bucket: {code})") from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise HistoryError(f"history store {where} cannot be reached: {exc}") from None
    return S3Mirror(client, s3.bucket, settings.s3_prefix, parallelism=min(8, s3.parallelism))


def read_manifest(client: Any, bucket: str, key: str) -> dict[str, Any]:
    """A run's manifest from the bucket (for other machines and tests)."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise HistoryError(f"s3://{bucket}/{key} is not a fleetkit history manifest")
    return document
