"""history.store: s3 -- the Hive layout in the results bucket, read back with DuckDB."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.settings import S3Settings
from fleetkit.history import History, HistoryError, open_history
from fleetkit.history.s3layout import manifest_key, open_mirror, partition_value, read_manifest
from lab.s3 import S3Server
from tests.unit.history_helpers import Clock, Node, record, settings

BUCKET = "fleet-results"
KEY_ID = "AKIDHISTORYTEST"
SECRET_KEY = "history-test-secret-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = S3Server(
        directory=tmp_path_factory.mktemp("moto"),
        bucket=BUCKET,
        access_key_id=KEY_ID,
        secret_access_key=SECRET_KEY,
    ).start()
    try:
        yield s3
    finally:
        s3.stop()


def s3_settings(server: S3Server, bucket: str = BUCKET) -> S3Settings:
    environ = {"HK_ID": KEY_ID, "HK_SECRET": SECRET_KEY}
    return S3Settings(
        bucket=bucket,
        endpoint=server.endpoint,
        access_key_id=Secret(name="query.s3.access_key_id", env="HK_ID", _environ=environ),
        secret_access_key=Secret(
            name="query.s3.secret_access_key", env="HK_SECRET", _environ=environ
        ),
        parallelism=4,
    )


def s3_history(directory: Path, server: S3Server, clock: Clock, prefix: str) -> History:
    config = settings(directory, store="s3", s3_prefix=prefix)
    mirror = open_mirror(config, s3_settings(server), {})
    return open_history(config, mirror=mirror, now=clock)


def duckdb_rows(server: S3Server, prefix: str) -> list[dict[str, Any]]:
    """Every row of the layout, as DuckDB reads it from the S3 server (httpfs)."""
    duckdb = pytest.importorskip("duckdb")
    extensions = pytest.importorskip("duckdb_ext")
    connection = duckdb.connect()
    connection.execute(
        "SET extension_directory = ?", [os.path.join(next(iter(extensions.__path__)), "extensions")]
    )
    connection.execute("LOAD httpfs")
    host = server.endpoint.removeprefix("http://")
    connection.execute(
        f"CREATE SECRET history_s3 (TYPE s3, KEY_ID '{KEY_ID}', SECRET '{SECRET_KEY}', "
        f"REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
    )
    result = connection.execute(
        f"""
        SELECT kind, date, run, node, nodeID, hostname, late, columns
        FROM read_json('s3://{BUCKET}/{prefix}*/*/*/*/*.ndjson.gz', hive_partitioning = true,
            format = 'newline_delimited',
            columns = {{nodeID: 'VARCHAR', hostname: 'VARCHAR', late: 'BOOLEAN',
                        columns: 'MAP(VARCHAR, VARCHAR)'}})
        """
    )
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def sqlite_rows(history: History) -> list[dict[str, Any]]:
    """The same rows through the SQLite store's read API."""
    out = []
    for run in history.list_runs():
        for entry, block in history.node_blocks(run.run_id):
            for line in block.lines():
                out.append(
                    {
                        "kind": run.kind,
                        "date": run.started_at[:10],
                        "run": run.run_id,
                        "node": entry.node_id,
                        "nodeID": entry.node_id,
                        "hostname": entry.hostname,
                        "late": entry.late,
                        "columns": json.loads(line),
                    }
                )
    return out


def _canon(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True, default=str) for r in rows)


def test_the_s3_layout_read_by_duckdb_equals_the_sqlite_read(
    tmp_path: Path, server: S3Server
) -> None:
    clock = Clock()
    prefix = "equal/history/"
    with s3_history(tmp_path, server, clock, prefix) as history:
        query = record(
            history,
            [
                Node("node-1", [{"name": "sshd", "pid": "1"}, {"name": "cron", "pid": "2"}]),
                Node("node-2", [{"name": "sshd", "pid": "1"}], hostname="web-2"),
                Node("node-3", [], hostname="empty"),
                Node("node-4", status="missing", error="DISCONNECTED"),
            ],
            started_at=clock(),
        )
        assert query.complete, query.note
        clock.advance(days=1, minutes=3)
        hunt = record(
            history,
            [Node("node-1", [{"path": "/tmp/x", "sha256": "ab" * 32, "quote": 'a"b\\c é'}])],
            kind="hunt",
            started_at=clock(),
        )
        assert hunt.complete, hunt.note
        with history.resume_run(query.run_id) as late:
            late.add_node(node_id="node-4", hostname="node-4", status="ok", rows=[{"n": "4"}])
        assert late.finish().complete
        expected = sqlite_rows(history)
        summary = history.get_run(query.run_id)
        entries = history.entries(query.run_id)

    got = duckdb_rows(server, prefix)
    for row in got:
        row["columns"] = dict(row["columns"])
        row["date"] = str(row["date"])
    assert len(expected) == 5
    assert _canon(got) == _canon(expected)
    assert any(r["late"] and r["nodeID"] == "node-4" for r in got)

    client = server.client()
    document = read_manifest(client, BUCKET, manifest_key(prefix, summary))
    assert document["run"] == summary.as_dict()
    assert [n["nodeID"] for n in document["nodes"]] == [e.node_id for e in entries]
    assert document["nodes"][2]["part"] is None  # an empty answer has no part
    keys = sorted(server.keys(prefix))
    assert f"{prefix}kind=query/date=2026-11-01/run={query.run_id}/manifest.json" in keys
    part = f"{prefix}kind=query/date=2026-11-01/run={query.run_id}/node=node-1/part-0.ndjson.gz"
    body = gzip.decompress(client.get_object(Bucket=BUCKET, Key=part)["Body"].read())
    assert body.splitlines()[0] == (
        b'{"nodeID":"node-1","hostname":"node-1","late":false,"columns":{"name":"sshd","pid":"1"}}'
    )


def test_partition_values_are_escaped_like_hive() -> None:
    assert partition_value("node-1.a_b") == "node-1.a_b"
    assert partition_value("a/b=c d") == "a%2Fb%3Dc%20d"
    assert partition_value("é") == "%C3%A9"


def test_a_missing_bucket_or_no_results_bucket_is_refused_at_open(
    tmp_path: Path, server: S3Server
) -> None:
    config = settings(tmp_path, store="s3")
    with pytest.raises(HistoryError, match=r"s3://no-such-bucket/history/") as caught:
        open_mirror(config, s3_settings(server, bucket="no-such-bucket"), {})
    assert caught.value.exit_status == 2
    with pytest.raises(HistoryError, match=r"query\.s3") as missing:
        open_mirror(config, None, {})
    assert missing.value.key == "history.store"
    assert open_mirror(settings(tmp_path), None, {}) is None  # store: sqlite


def test_a_bucket_that_goes_away_after_open_marks_the_run_incomplete_keeping_local_rows(
    tmp_path: Path, server: S3Server
) -> None:
    client = server.client()
    client.create_bucket(Bucket="short-lived")
    config = settings(tmp_path, store="s3", s3_prefix="gone/")
    mirror = open_mirror(config, s3_settings(server, bucket="short-lived"), {})
    client.delete_bucket(Bucket="short-lived")  # after the check at open
    with open_history(config, mirror=mirror) as history:
        outcome = record(history, [Node("n1", [{"a": "1"}]), Node("n2", [{"a": "2"}])])
        local = [e.node_id for e, _ in history.node_blocks(outcome.run_id)]
        run = history.get_run(outcome.run_id)
    assert not outcome.complete
    assert "s3://short-lived/gone/" in (outcome.note or "")
    assert run.note == outcome.note
    assert local == ["n1", "n2"]


def test_a_query_recorded_with_store_s3_reads_back_with_duckdb_as_show_prints_it(
    tmp_path: Path, server: S3Server
) -> None:
    """The command path: ``history.store: s3`` beside the results bucket of ``query.s3``."""
    from tests.unit.test_history_commands import SSHD, Fleet, client_for

    prefix = "cmd/history/"
    fleet = Fleet(
        tmp_path,
        history={"store": "s3", "s3_prefix": prefix},
        query={
            "timeout": 30,
            "s3": {
                "bucket": BUCKET,
                "endpoint": server.endpoint,
                "access_key_id": {"env": "HK_ID"},
                "secret_access_key": {"env": "HK_SECRET"},
            },
        },
        environ={"HK_ID": KEY_ID, "HK_SECRET": SECRET_KEY},
    )
    answers = {"node-1": [SSHD, {"name": "cron", "pid": "2"}], "node-2": [SSHD], "node-3": []}
    assert fleet.query(client_for(fleet, answers)) == 0, fleet.err
    run_id = fleet.last_run()
    assert fleet.show(run_id, "ndjson") == 0
    shown = [json.loads(line) for line in fleet.out.splitlines()]
    expected = [
        {
            "nodeID": row.pop("nodeID"),
            "hostname": row.pop("hostname"),
            "late": False,
            "columns": row,
        }
        for row in shown
    ]
    got = [
        {k: (dict(v) if k == "columns" else v) for k, v in row.items() if k in expected[0]}
        for row in duckdb_rows(server, prefix)
    ]
    assert len(got) == 3
    assert _canon(got) == _canon(expected)
