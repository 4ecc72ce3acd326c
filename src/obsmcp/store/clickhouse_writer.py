"""Batched Arrow inserts into ClickHouse, through the write queue both stores share.

The decoder produces obsmcp's Arrow schema (`store/schema.py`); ClickHouse's exporter tables differ in two
ways this module bridges: attribute columns are `Map(String, String)` (obsmcp's Arrow holds the same
key/value lists, so the conversion reuses the buffers), and a table may lack columns or compute some itself
(`TimestampTime DEFAULT`, `MATERIALIZED` k8s columns): only columns the table accepts are sent. The trace-id
lookup table is filled by the exporter's materialized view, not by obsmcp.

The queue is `batching.BatchingWriter`'s: one INSERT per table and group; futures resolve after ClickHouse
has acknowledged the insert, so an acknowledged OTLP request is stored. ClickHouse
applies each INSERT atomically per partition (day): a batch spanning midnight that fails half-way may leave
the first day's rows, and the request is reported failed (the OTLP client retries, so it may store those
rows twice). Retention on ClickHouse is the tables' TTL: obsmcp deletes nothing there.
"""

from __future__ import annotations

import pyarrow as pa

from obsmcp.config import Settings
from obsmcp.store import schema
from obsmcp.store.batching import BatchingWriter, Request, tables_of
from obsmcp.store.clickhouse import ClickHouseDatabase
from obsmcp.store.url import parse_store_url


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


class ClickHouseWriter(BatchingWriter):
    """The ClickHouse store's writer: one INSERT per table and group (the queue is `BatchingWriter`'s)."""

    thread_name = "obsmcp-clickhouse-writer"

    def __init__(
        self,
        db: ClickHouseDatabase,
        *,
        batch_rows: int = 50_000,
        flush_ms: int = 200,
        max_pending_rows: int = 500_000,
    ) -> None:
        super().__init__(batch_rows=batch_rows, flush_ms=flush_ms, max_pending_rows=max_pending_rows)
        self.db = db
        self._start()

    def _insert(self, group: list[Request]) -> None:
        # The trace-id lookup table is the exporter's materialized view's to fill.
        for name, batch in tables_of(group, skip=(schema.TRACE_ID_TS.name,)).items():
            self.db.insert_arrow(name, clickhouse_shape(batch, self.db.insertable[name]))


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
