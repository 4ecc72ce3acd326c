"""Batched columnar writes with group commit, backpressure and retention.

Receivers hand decoded Arrow tables to `StoreWriter.submit`, which returns a future. One writer thread
drains the queue, concatenates what is waiting into one batch per table (up to `batch_rows` or `flush_ms`),
inserts it in one transaction and only then resolves the futures: an OTLP request is acknowledged after
its rows are committed, so a crash loses nothing that was acknowledged. If a group fails, each request is
retried alone so one bad request cannot sink the others, and a failed request leaves nothing behind.

Memory is bounded by `max_pending_rows`: past it, `submit` raises `QueueFullError` and the receiver answers
429/503 with Retry-After (the OTLP spec's backpressure signal).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import structlog

from obsmcp.store import schema
from obsmcp.store.database import Database

log = structlog.get_logger("obsmcp.store.writer")

NS_PER_DAY = 86400 * 1_000_000_000


class QueueFullError(RuntimeError):
    """The write queue is at its limit; retry after `retry_after_s`."""

    def __init__(self, pending_rows: int, retry_after_s: int) -> None:
        super().__init__(f"ingest queue full ({pending_rows} rows waiting); retry after {retry_after_s}s")
        self.pending_rows = pending_rows
        self.retry_after_s = retry_after_s


@dataclass
class _Request:
    tables: dict[str, pa.Table]
    rows: int
    future: Future[None] = field(default_factory=Future)


@dataclass
class WriterStats:
    committed_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    commits: int = 0
    failed_requests: int = 0
    rejected_full: int = 0


class StoreWriter:
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
        self.db = db
        self.batch_rows = batch_rows
        self.flush_s = flush_ms / 1000
        self.max_pending_rows = max_pending_rows
        self.retention_days = retention_days
        self.retention_max_bytes = retention_max_bytes
        self.retention_interval_s = retention_interval_s
        self.stats = WriterStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="obsmcp-store-writer", daemon=True)
        self._stopped = False
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def submit(self, tables: dict[str, pa.Table]) -> Future[None]:
        """Queue tables for insertion; the future resolves once they are committed."""
        for name, tbl in tables.items():
            expected = schema.TABLES[name].arrow_schema
            if not tbl.schema.equals(expected):
                raise ValueError(f"batch for {name} does not match the store schema")
        rows = sum(t.num_rows for t in tables.values())
        if self._stopped:
            raise RuntimeError("the store writer is stopped")
        with self._pending_lock:
            if self._pending_rows > 0 and self._pending_rows + rows > self.max_pending_rows:
                self.stats.rejected_full += 1
                # Roughly how long the backlog takes to drain at a conservative 100k rows/s.
                raise QueueFullError(self._pending_rows, max(1, round(self._pending_rows / 100_000)))
            self._pending_rows += rows
        req = _Request(tables, rows)
        if rows == 0:
            with self._pending_lock:
                self._pending_rows -= rows
            req.future.set_result(None)
            return req.future
        self._queue.put(req)
        return req.future

    def write(self, tables: dict[str, pa.Table], timeout: float | None = None) -> None:
        """Blocking submit: returns once committed."""
        self.submit(tables).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    # -- writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        cur = self.db.cursor()
        next_retention = time.monotonic() + self.retention_interval_s
        while True:
            try:
                first = self._queue.get(timeout=max(0.05, next_retention - time.monotonic()))
            except queue.Empty:
                first = _IDLE
            if first is _IDLE or time.monotonic() >= next_retention:
                self._retention(cur)
                next_retention = time.monotonic() + self.retention_interval_s
                if first is _IDLE:
                    continue
            if first is None:
                self._drain_and_stop(cur)
                return
            assert isinstance(first, _Request)
            group, stop = self._gather(first)
            self._commit_group(cur, group)
            if stop:
                self._drain_and_stop(cur)
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        group = [first]
        rows = first.rows
        deadline = time.monotonic() + self.flush_s
        while rows < self.batch_rows:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                nxt = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if nxt is None:
                return group, True
            group.append(nxt)
            rows += nxt.rows
        return group, False

    def _drain_and_stop(self, cur: duckdb.DuckDBPyConnection) -> None:
        rest: list[_Request] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        if rest:
            self._commit_group(cur, rest)

    def _commit_group(self, cur: duckdb.DuckDBPyConnection, group: list[_Request]) -> None:
        try:
            self._insert(cur, group)
        except Exception as e:
            if len(group) == 1:
                self._finish(group, e)
                return
            log.warning("group_commit_failed_retrying_alone", requests=len(group), error=str(e))
            for req in group:
                try:
                    self._insert(cur, [req])
                except Exception as e1:
                    self._finish([req], e1)
                else:
                    self._finish([req], None)
            return
        self._finish(group, None)

    def _finish(self, group: list[_Request], error: BaseException | None) -> None:
        with self._pending_lock:
            self._pending_rows -= sum(r.rows for r in group)
        for req in group:
            if error is None:
                for name, tbl in req.tables.items():
                    self.stats.committed_rows[name] += tbl.num_rows
                req.future.set_result(None)
            else:
                self.stats.failed_requests += 1
                req.future.set_exception(error)

    def _insert(self, cur: duckdb.DuckDBPyConnection, group: list[_Request]) -> None:
        by_table: dict[str, list[pa.Table]] = defaultdict(list)
        for req in group:
            for name, tbl in req.tables.items():
                if tbl.num_rows:
                    by_table[name].append(tbl)
        views: list[str] = []
        try:
            cur.execute("BEGIN TRANSACTION")
            for i, (name, parts) in enumerate(by_table.items()):
                batch = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
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
        self.stats.commits += 1

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


_IDLE = _Request({}, 0)
