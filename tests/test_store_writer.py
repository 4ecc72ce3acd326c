"""The store writer: group commit, acknowledgement after commit, backpressure, all-or-nothing requests."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pyarrow as pa
import pytest

from obsmcp.ingest.otlp import decode
from obsmcp.store import schema
from obsmcp.store.database import Database
from obsmcp.store.writer import QueueFullError, StoreWriter
from tests.factories import logs_request, span, traces_request

T0 = 1_763_683_200_000_000_000


def _logs(n: int, tag: str) -> dict[str, pa.Table]:
    rec = [(T0 + i, 9, f"{tag} record {i}", b"") for i in range(n)]
    return decode("logs", logs_request("svc", rec), "protobuf").tables


def test_many_concurrent_requests_are_group_committed(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    writer = StoreWriter(db, batch_rows=10_000, flush_ms=100)
    futures = [writer.submit(_logs(100, f"r{i}")) for i in range(50)]
    for f in futures:
        f.result(timeout=30)
    assert db.table_stats()["otel_logs"] == 5000
    assert writer.stats.commits < 50  # requests shared transactions
    writer.close()
    db.close()


def test_a_bad_request_fails_alone_and_leaves_nothing_behind(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    # Break the trace-id lookup table: a traces request then fails after its spans were inserted, inside the
    # transaction, while log requests in the same group are fine.
    db.raw_connection().execute("ALTER TABLE otel_traces_trace_id_ts RENAME TO lookup_moved_away")
    writer = StoreWriter(db, batch_rows=10_000, flush_ms=300)
    good = writer.submit(_logs(10, "good"))
    spans = decode(
        "traces", traces_request({"svc": [span(b"\x01" * 16, b"\x02" * 8, b"", "op", T0, 5)]}), "protobuf"
    ).tables
    bad = writer.submit({**spans, **_logs(5, "bad")})
    also_good = writer.submit(_logs(7, "later"))
    good.result(timeout=30)
    also_good.result(timeout=30)
    with pytest.raises(Exception, match="otel_traces_trace_id_ts"):
        bad.result(timeout=30)
    _, counts = db.query("SELECT (SELECT count(*) FROM otel_logs), (SELECT count(*) FROM otel_traces)")
    assert counts == [(17, 0)]  # both good requests, which shared a group with the bad one; nothing of it
    writer.close()
    db.close()


def test_schema_mismatch_is_refused_before_queueing(tmp_path: Path) -> None:
    db = Database(None)
    writer = StoreWriter(db)
    with pytest.raises(ValueError, match="does not match"):
        writer.submit({"otel_logs": pa.table({"x": [1]})})
    writer.close()


def test_full_queue_pushes_back_with_retry_after(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    writer = StoreWriter(db, batch_rows=1_000_000, flush_ms=2000, max_pending_rows=1500)
    first = writer.submit(_logs(1000, "a"))
    with pytest.raises(QueueFullError) as e:
        writer.submit(_logs(1000, "b"))
    assert e.value.retry_after_s >= 1
    first.result(timeout=30)
    writer.submit(_logs(1000, "c")).result(timeout=30)  # accepted again once drained
    assert db.table_stats()["otel_logs"] == 2000
    writer.close()
    db.close()


def test_retention_deletes_old_telemetry(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    now = time.time_ns()
    old = decode("logs", logs_request("svc", [(now - 10 * 86400 * 10**9, 9, "old", b"")]), "protobuf").tables
    new = decode("logs", logs_request("svc", [(now, 9, "new", b"")]), "protobuf").tables
    writer = StoreWriter(db, retention_days=7, retention_interval_s=0.2)
    writer.write(old)
    writer.write(new)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, rows = db.query('SELECT "Body" FROM otel_logs ORDER BY 1')
        if rows == [("new",)]:
            break
        time.sleep(0.2)
    assert rows == [("new",)]
    writer.close()
    db.close()


def test_store_records_its_schema_version_and_refuses_newer_ones(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    db = Database(path)
    db.raw_connection().execute("UPDATE obsmcp_meta SET value = '999' WHERE key = 'schema_version'")
    db.close()
    from obsmcp.store.database import StoreError

    with pytest.raises(StoreError, match="upgrade obsmcp"):
        Database(path)
    assert schema.SCHEMA_VERSION >= 1


def test_trace_lookup_table_is_filled_by_the_writer(tmp_path: Path) -> None:
    db = Database(None)
    writer = StoreWriter(db)
    rng = random.Random(1)
    tid = rng.randbytes(16)
    req = traces_request(
        {
            "a": [
                span(tid, rng.randbytes(8), b"", "root", T0, 100),
                span(tid, rng.randbytes(8), b"", "other", T0 + 10**9, 5),
            ]
        }
    )
    writer.write(decode("traces", req, "protobuf").tables)
    _, rows = db.query(
        'SELECT epoch_ns("Start"), epoch_ns("End") FROM otel_traces_trace_id_ts WHERE "TraceId" = ?', [tid.hex()]
    )
    assert rows == [(T0, T0 + 10**9)]
    writer.close()
