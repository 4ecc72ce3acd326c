"""The write queue both stores share: group commit, backpressure, per-request retry.

Receivers hand decoded Arrow tables to `submit`, which returns a future. One writer thread drains the queue,
gathers what is waiting into one group (up to `batch_rows` or `flush_ms`), has the store insert it
(`_insert`, store-specific) and only then resolves the futures: an OTLP request is acknowledged after its rows
are stored. If a group fails, each request is retried alone so one bad request cannot sink the others.

Memory is bounded by `max_pending_rows`: past it, `submit` raises `QueueFullError` and the receiver answers
429/503 with Retry-After (the OTLP spec's backpressure signal).
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

from obsmcp.store import schema

log = structlog.get_logger("obsmcp.store.writer")


class QueueFullError(RuntimeError):
    """The write queue is at its limit; retry after `retry_after_s`."""

    def __init__(self, pending_rows: int, retry_after_s: int) -> None:
        super().__init__(f"ingest queue full ({pending_rows} rows waiting); retry after {retry_after_s}s")
        self.pending_rows = pending_rows
        self.retry_after_s = retry_after_s


@dataclass
class WriterStats:
    committed_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    commits: int = 0
    failed_requests: int = 0
    rejected_full: int = 0


@dataclass
class Request:
    tables: dict[str, pa.Table]
    rows: int
    future: Future[None] = field(default_factory=Future)


_IDLE = Request({}, 0)


class BatchingWriter:
    """The queue and its thread; subclasses implement `_insert(group)` and may use the thread hooks."""

    thread_name = "obsmcp-store-writer"
    # Seconds between `_on_idle` calls on the writer thread (None: never), e.g. retention.
    idle_interval_s: float | None = None

    def __init__(self, *, batch_rows: int, flush_ms: int, max_pending_rows: int) -> None:
        self.batch_rows = batch_rows
        self.flush_s = flush_ms / 1000
        self.max_pending_rows = max_pending_rows
        self.stats = WriterStats()
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def _start(self) -> None:
        """Subclasses call this at the end of __init__, once their own state is set."""
        self._thread.start()

    # -- store-specific ------------------------------------------------------------------------------

    def _on_thread_start(self) -> None:
        """Runs first on the writer thread (e.g. open a cursor)."""

    def _insert(self, group: list[Request]) -> None:
        raise NotImplementedError

    def _on_idle(self) -> None:
        """Runs on the writer thread every `idle_interval_s`."""

    # -- the interface -------------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def submit(self, tables: dict[str, pa.Table]) -> Future[None]:
        """Queue tables for insertion; the future resolves once they are stored."""
        for name, tbl in tables.items():
            if not tbl.schema.equals(schema.TABLES[name].arrow_schema):
                raise ValueError(f"batch for {name} does not match the store schema")
        if self._stopped:
            raise RuntimeError("the store writer is stopped")
        rows = sum(t.num_rows for t in tables.values())
        req = Request(tables, rows)
        if rows == 0:
            req.future.set_result(None)
            return req.future
        with self._pending_lock:
            if self._pending_rows > 0 and self._pending_rows + rows > self.max_pending_rows:
                self.stats.rejected_full += 1
                # Roughly how long the backlog takes to drain at a conservative 100k rows/s.
                raise QueueFullError(self._pending_rows, max(1, round(self._pending_rows / 100_000)))
            self._pending_rows += rows
        self._queue.put(req)
        return req.future

    def write(self, tables: dict[str, pa.Table], timeout: float | None = None) -> None:
        """Blocking submit: returns once stored."""
        self.submit(tables).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Store what is queued, then stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    # -- writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        self._on_thread_start()
        interval = self.idle_interval_s
        next_idle = time.monotonic() + interval if interval is not None else None
        while True:
            try:
                wait = None if next_idle is None else max(0.05, next_idle - time.monotonic())
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                first = _IDLE
            if interval is not None and next_idle is not None and (first is _IDLE or time.monotonic() >= next_idle):
                self._on_idle()
                next_idle = time.monotonic() + interval
            if first is _IDLE:
                continue
            if first is None:
                self._drain()
                return
            group, stop = self._gather(first)
            self._commit(group)
            if stop:
                self._drain()
                return

    def _gather(self, first: Request) -> tuple[list[Request], bool]:
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
        rest: list[Request] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        if rest:
            self._commit(rest)

    def _commit(self, group: list[Request]) -> None:
        try:
            self._insert(group)
        except Exception as e:  # any failure fails the requests; their futures carry the error to the receiver
            if len(group) == 1:
                self._finish(group, e)
                return
            log.warning("group_commit_failed_retrying_alone", requests=len(group), error=str(e))
            for req in group:
                try:
                    self._insert([req])
                except Exception as e1:  # as above, per request
                    self._finish([req], e1)
                else:
                    self._finish([req], None)
            return
        self._finish(group, None)

    def _finish(self, group: list[Request], error: BaseException | None) -> None:
        with self._pending_lock:
            self._pending_rows -= sum(r.rows for r in group)
        if error is None:
            self.stats.commits += 1
        for req in group:
            if error is None:
                for name, tbl in req.tables.items():
                    self.stats.committed_rows[name] += tbl.num_rows
                req.future.set_result(None)
            else:
                self.stats.failed_requests += 1
                req.future.set_exception(error)


def tables_of(group: list[Request], *, skip: tuple[str, ...] = ()) -> dict[str, pa.Table]:
    """The group's rows, one table per store table (empty and skipped tables left out)."""
    by_table: dict[str, list[pa.Table]] = defaultdict(list)
    for req in group:
        for name, tbl in req.tables.items():
            if tbl.num_rows and name not in skip:
                by_table[name].append(tbl)
    return {name: parts[0] if len(parts) == 1 else pa.concat_tables(parts) for name, parts in by_table.items()}
