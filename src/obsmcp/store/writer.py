"""The DuckDB store's writer: group commit in one transaction per group, and retention.

The queue, backpressure and per-request retry are `batching.BatchingWriter`'s. Each group is inserted in one
transaction and only then are its futures resolved: an OTLP request is acknowledged after its rows are
committed, so a crash loses nothing that was acknowledged, and a failed request leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import time

import duckdb
import pyarrow as pa
import structlog

from obsmcp.store import schema
from obsmcp.store.batching import BatchingWriter, QueueFullError, Request, WriterStats, tables_of
from obsmcp.store.database import Database

log = structlog.get_logger("obsmcp.store.writer")

NS_PER_DAY = 86400 * 1_000_000_000

__all__ = ["QueueFullError", "StoreWriter", "WriterStats"]


class StoreWriter(BatchingWriter):
    """The DuckDB store's writer: one transaction per group; retention on the writer thread when idle."""

    thread_name = "obsmcp-store-writer"

    def __init__(
        self,
        db: Database,
        *,
        batch_rows: int = 50_000,
        flush_ms: int = 200,
        max_pending_rows: int = 500_000,
        retention_days: float = 7.0,
        retention_max_bytes: int = 10 * 1024**3,
        retention_interval_s: float = 60.0,
    ) -> None:
        super().__init__(batch_rows=batch_rows, flush_ms=flush_ms, max_pending_rows=max_pending_rows)
        self.db = db
        self.retention_days = retention_days
        self.retention_max_bytes = retention_max_bytes
        self.idle_interval_s = retention_interval_s
        self._cur: duckdb.DuckDBPyConnection | None = None
        self._start()

    def _on_thread_start(self) -> None:
        self._cur = self.db.cursor()

    def _on_idle(self) -> None:
        assert self._cur is not None
        self._retention(self._cur)

    def _insert(self, group: list[Request]) -> None:
        assert self._cur is not None
        self._insert_tables(self._cur, tables_of(group))

    def _insert_tables(self, cur: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> None:
        views: list[str] = []
        try:
            cur.execute("BEGIN TRANSACTION")
            for i, (name, batch) in enumerate(tables.items()):
                view = f"_obsmcp_batch_{i}"
                cur.register(view, batch)
                views.append(view)
                cols = ", ".join(f'"{c}"' for c in batch.column_names)
                cur.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {view}")
                if name == schema.TRACES.name:
                    cur.execute(
                        f"INSERT INTO {schema.TRACE_ID_TS.name} "
                        f'SELECT "TraceId", min("Timestamp"), max("Timestamp") FROM {view} '
                        'WHERE "TraceId" <> \'\' GROUP BY "TraceId"'
                    )
            cur.execute("COMMIT")
        except Exception:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise
        finally:
            # After COMMIT/ROLLBACK: inside an aborted transaction unregister itself fails and would mask
            # the original error.
            for view in views:
                with contextlib.suppress(duckdb.Error):
                    cur.unregister(view)

    def _retention(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Delete telemetry older than the age limit, then the oldest data while over the size limit."""
        try:
            cutoff = time.time_ns() - int(self.retention_days * NS_PER_DAY)
            deleted = self._delete_before(cur, cutoff)
            size = self.db.size_bytes()
            if size > self.retention_max_bytes:
                # Drop the oldest tenth of the stored time span; freed blocks are reused by later writes.
                row = cur.execute(
                    f'SELECT epoch_ns(min("Timestamp")), epoch_ns(max("Timestamp")) FROM {schema.TRACES.name}'
                ).fetchone()
                lrow = cur.execute(
                    f'SELECT epoch_ns(min("Timestamp")), epoch_ns(max("Timestamp")) FROM {schema.LOGS.name}'
                ).fetchone()
                lows = [r[0] for r in (row, lrow) if r and r[0] is not None]
                highs = [r[1] for r in (row, lrow) if r and r[1] is not None]
                if lows and highs:
                    lo, hi = min(lows), max(highs)
                    deleted += self._delete_before(cur, lo + max(1, (hi - lo) // 10))
                    log.info("retention_size", size_bytes=size, limit_bytes=self.retention_max_bytes)
            if deleted:
                cur.execute("CHECKPOINT")
                log.info("retention_deleted", rows=deleted)
        except Exception as e:
            log.warning("retention_failed", error=str(e))

    def _delete_before(self, cur: duckdb.DuckDBPyConnection, cutoff_ns: int) -> int:
        total = 0
        for table in schema.TELEMETRY_TABLES:
            res = cur.execute(
                f'DELETE FROM {table.name} WHERE "{table.time_column}" < make_timestamp_ns(?)', [cutoff_ns]
            ).fetchone()
            total += int(res[0]) if res else 0
        return total
