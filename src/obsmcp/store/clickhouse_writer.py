"""Batched Arrow inserts into ClickHouse, with the interface the OTLP receiver uses (`StoreWriter`'s).

The decoder produces obsmcp's Arrow schema (`store/schema.py`); ClickHouse's exporter tables differ in two
ways this module bridges: attribute columns are `Map(String, String)` (obsmcp's Arrow holds the same
key/value lists, so the conversion reuses the buffers), and a table may lack columns or compute some itself
(`TimestampTime DEFAULT`, `MATERIALIZED` k8s columns): only columns the table accepts are sent. The trace-id
lookup table is filled by the exporter's materialized view, not by obsmcp.

One thread drains the queue and inserts what is waiting, up to `batch_rows` or `flush_ms`, one INSERT per
table; futures resolve after ClickHouse has acknowledged the insert, so an acknowledged OTLP request is
stored. A failed group is retried request by request so one bad request cannot sink the others. ClickHouse
applies each INSERT atomically per partition (day): a batch spanning midnight that fails half-way may leave
the first day's rows, and the request is reported failed (the OTLP client retries, so it may store those
rows twice). Retention on ClickHouse is the tables' TTL: obsmcp deletes nothing there.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field

import pyarrow as pa
import structlog

from obsmcp.config import Settings
from obsmcp.store import schema
from obsmcp.store.clickhouse import ClickHouseDatabase
from obsmcp.store.url import parse_store_url
from obsmcp.store.writer import QueueFullError, WriterStats

log = structlog.get_logger("obsmcp.store.clickhouse_writer")


@dataclass
class _Request:
    tables: dict[str, pa.Table]
    rows: int
    future: Future[None] = field(default_factory=Future)


def _is_attributes(t: pa.DataType) -> bool:
    return bool(t == schema.ATTRIBUTES)


def _to_map(arr: pa.Array) -> pa.Array:
    """list<struct<key, value>> -> map<string, string> over the same buffers."""
    if isinstance(arr, pa.ChunkedArray):
        return pa.chunked_array([_to_map(c) for c in arr.chunks], type=pa.map_(pa.string(), pa.string()))
    lists: pa.ListArray = arr
    entries = lists.values
    return pa.MapArray.from_arrays(lists.offsets, entries.field("key"), entries.field("value"))


def _to_map_list(arr: pa.Array) -> pa.Array:
    """list<list<struct<key, value>>> (Events.Attributes) -> list<map<string, string>>."""
    if isinstance(arr, pa.ChunkedArray):
        chunks = [_to_map_list(c) for c in arr.chunks]
        return pa.chunked_array(chunks, type=pa.list_(pa.map_(pa.string(), pa.string())))
    outer: pa.ListArray = arr
    return pa.ListArray.from_arrays(outer.offsets, _to_map(outer.values))


def clickhouse_shape(batch: pa.Table, insertable: list[str]) -> pa.Table:
    """The batch with only the columns the table accepts, attribute lists turned into Maps."""
    allowed = set(insertable)
    cols, names = [], []
    for name, column in zip(batch.column_names, batch.columns, strict=True):
        if name not in allowed:
            continue
        t = column.type
        if _is_attributes(t):
            column = _to_map(column.combine_chunks())
        elif pa.types.is_list(t) and _is_attributes(t.value_type):
            column = _to_map_list(column.combine_chunks())
        cols.append(column)
        names.append(name)
    return pa.Table.from_arrays(cols, names=names)


class ClickHouseWriter:
    """`StoreWriter`'s interface (submit/write/close/pending_rows/stats) over a `ClickHouseDatabase`."""

    def __init__(
        self,
        db: ClickHouseDatabase,
        *,
        batch_rows: int = 50_000,
        flush_ms: int = 200,
        max_pending_rows: int = 500_000,
    ) -> None:
        self.db = db
        self.batch_rows = batch_rows
        self.flush_s = flush_ms / 1000
        self.max_pending_rows = max_pending_rows
        self.stats = WriterStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="obsmcp-clickhouse-writer", daemon=True)
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def submit(self, tables: dict[str, pa.Table]) -> Future[None]:
        """Queue tables for insertion; the future resolves once ClickHouse has them."""
        for name, tbl in tables.items():
            if not tbl.schema.equals(schema.TABLES[name].arrow_schema):
                raise ValueError(f"batch for {name} does not match the store schema")
        if self._stopped:
            raise RuntimeError("the store writer is stopped")
        rows = sum(t.num_rows for t in tables.values())
        req = _Request(tables, rows)
        if rows == 0:
            req.future.set_result(None)
            return req.future
        with self._pending_lock:
            if self._pending_rows > 0 and self._pending_rows + rows > self.max_pending_rows:
                self.stats.rejected_full += 1
                raise QueueFullError(self._pending_rows, max(1, round(self._pending_rows / 100_000)))
            self._pending_rows += rows
        self._queue.put(req)
        return req.future

    def write(self, tables: dict[str, pa.Table], timeout: float | None = None) -> None:
        """Blocking submit: returns once stored."""
        self.submit(tables).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Insert what is queued, then stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    # -- writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._drain()
                return
            group, stop = self._gather(first)
            self._commit(group)
            if stop:
                self._drain()
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        group, rows = [first], first.rows
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

    def _drain(self) -> None:
        rest: list[_Request] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        if rest:
            self._commit(rest)

    def _commit(self, group: list[_Request]) -> None:
        try:
            self._insert(group)
        except Exception as e:  # any failure fails the requests; their futures carry the error to the receiver
            if len(group) == 1:
                self._finish(group, e)
                return
            log.warning("group_insert_failed_retrying_alone", requests=len(group), error=str(e))
            for req in group:
                try:
                    self._insert([req])
                except Exception as e1:  # as above, per request
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

    def _insert(self, group: list[_Request]) -> None:
        by_table: dict[str, list[pa.Table]] = defaultdict(list)
        for req in group:
            for name, tbl in req.tables.items():
                if tbl.num_rows and name != schema.TRACE_ID_TS.name:
                    by_table[name].append(tbl)
        for name, parts in by_table.items():
            batch = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
            self.db.insert_arrow(name, clickhouse_shape(batch, self.db.insertable[name]))
        self.stats.commits += 1


def open_clickhouse_store(url: str, settings: Settings) -> tuple[ClickHouseDatabase, ClickHouseWriter]:
    """The ClickHouse store and its writer for `store=url`. Tables are created when missing only for chDB
    (obsmcp's own embedded database) or with ?create_tables=1: obsmcp does not run DDL on a server it was
    only pointed at."""
    parsed = parse_store_url(url)
    db = ClickHouseDatabase(parsed, query_timeout_s=settings.query_timeout_s, create_tables=parsed.kind == "chdb")
    writer = ClickHouseWriter(
        db,
        batch_rows=settings.ingest_batch_rows,
        flush_ms=settings.ingest_flush_ms,
        max_pending_rows=settings.ingest_queue_max_rows,
    )
    return db, writer
