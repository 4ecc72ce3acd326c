"""The OTLP receiver core shared by HTTP and gRPC: decompress with limits, decode, write, acknowledge.

Rules from the OTLP specification (storage.md 5.3): a body cap that also applies after decompression
(413), 400 for malformed data (never retried), 429/503 with Retry-After for backpressure, partial success
reported in a 200, and the response in the request's encoding. A request is acknowledged only after its
rows are committed.

Memory is bounded twice: the writer refuses more than `ingest_queue_max_rows` queued rows, and every
request holds a reservation of its bytes (the body as read, the body after gunzip, then its decoded Arrow
tables until they are committed) against one `MemoryBudget`. A request that does not fit is answered 429
with Retry-After before it costs more memory, so a flood of senders is pushed back instead of growing the
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Gauge

from obsmcp import metrics
from obsmcp.ingest.otlp import DecodedBatch, OTLPDecodeError, decode
from obsmcp.store.batching import BatchingWriter, QueueFullError

Signal = Literal["traces", "logs", "metrics"]
Encoding = Literal["protobuf", "json"]

_GUNZIP_CHUNK = 1024 * 1024  # bytes decompressed (and reserved) per step

INGEST_MEMORY = Gauge(
    "obsmcp_ingest_memory_bytes",
    "bytes held by OTLP requests in progress: bodies, gunzipped bodies, decoded rows waiting for their commit",
    registry=metrics.REGISTRY,
)
INGEST_MEMORY_PEAK = Gauge(
    "obsmcp_ingest_memory_peak_bytes",
    "the highest obsmcp_ingest_memory_bytes since the start",
    registry=metrics.REGISTRY,
)


class IngestError(Exception):
    """A request the receiver refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class MemoryBudget:
    """Bytes held by OTLP requests in progress (read, decompressed, decoded, queued), under one limit.

    A reservation that would pass the limit is refused, except when nothing else is held: one request larger
    than the whole budget still goes through alone (the body cap bounds it), so a small budget never blocks
    a client forever.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.peak_bytes = 0
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used

    def try_reserve(self, n: int, already_held: int = 0) -> bool:
        with self._lock:
            others = self._used - already_held
            if others > 0 and self._used + n > self.limit_bytes:
                return False
            self._used += n
            if self._used > self.peak_bytes:
                self.peak_bytes = self._used
                INGEST_MEMORY_PEAK.set(self._used)
        INGEST_MEMORY.inc(n)
        return True

    def release(self, n: int) -> None:
        with self._lock:
            self._used -= n
        INGEST_MEMORY.dec(n)


class Reservation:
    """What one request holds against the budget; `release_all` when the request is answered."""

    def __init__(self, budget: MemoryBudget, retry_after_s: int = 1) -> None:
        self.budget = budget
        self.held = 0
        self.retry_after_s = retry_after_s

    def grow(self, n: int) -> None:
        """Hold n more bytes, or raise IngestError 429 (nothing more is held then)."""
        if n <= 0:
            return
        if not self.budget.try_reserve(n, self.held):
            raise IngestError(
                429,
                f"the receiver holds {self.budget.used_bytes} bytes of requests in progress (limit "
                f"{self.budget.limit_bytes}, setting ingest_memory_max_mb); retry after {self.retry_after_s}s",
                retry_after_s=self.retry_after_s,
            )
        self.held += n

    def shrink(self, n: int) -> None:
        n = min(n, self.held)
        self.budget.release(n)
        self.held -= n

    def release_all(self) -> None:
        self.shrink(self.held)


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: a worker must not outlive its server, even one killed with SIGKILL.

    Ctrl-C in a terminal signals the whole process group; the server stops its workers itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="obsmcp-parent-watch", daemon=True).start()


def _warm_up() -> None:
    """Runs in each worker once, so the first real request does not pay for imports."""
    decode("logs", b"", "protobuf")


def gunzip_capped(body: bytes, cap: int, reservation: Reservation | None = None) -> bytes:
    """Decompress gzip, refusing output larger than cap (a gzip bomb stops at cap+1 bytes of work).

    With a reservation, the output is reserved step by step as it grows, so a request that does not fit the
    memory budget is refused (429) before it is decompressed whole.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    size = 0
    data = body
    try:
        while True:
            chunk = d.decompress(data, min(_GUNZIP_CHUNK, cap + 1 - size))
            data = d.unconsumed_tail
            size += len(chunk)
            if size > cap:
                raise IngestError(413, f"the body is larger than {cap} bytes after decompression: send smaller batches")
            if reservation is not None:
                reservation.grow(len(chunk))
            parts.append(chunk)
            if d.eof or not chunk:
                break
    except zlib.error as e:
        raise IngestError(400, f"the body is not valid gzip ({e}): send it uncompressed or fix the encoder") from None
    if not d.eof:
        raise IngestError(400, "the gzip body is truncated: resend the whole request")
    return b"".join(parts)


def table_bytes(batch: DecodedBatch) -> int:
    return sum(t.nbytes for t in batch.tables.values())


@dataclass
class IngestStats:
    accepted: dict[str, int]
    rejected: dict[str, int]
    requests_failed: int = 0
    requests_throttled: int = 0


class Receiver:
    """Decodes export requests and hands them to the writer.

    Decoding is CPU-bound Python (about 50-100k spans/s per core), so a running server decodes in worker
    processes (`start_decode_workers`): threads would share one core through the GIL. Inserting releases
    the GIL, so the server process keeps a core for HTTP and the writer.
    """

    def __init__(self, writer: BatchingWriter, max_body_bytes: int, max_memory_bytes: int = 256 * 1024**2) -> None:
        self.writer = writer
        self.max_body_bytes = max_body_bytes
        self.memory = MemoryBudget(max_memory_bytes)
        self._pool: ProcessPoolExecutor | None = None
        # Without worker processes, requests are decoded in threads one at a time: protobuf's upb extension
        # crashed (SIGSEGV in _message.abi3.so) with several threads parsing through the raw-attribute
        # message classes at once, seen under the in-process demo loader's concurrent requests.
        self._decode_lock = threading.Lock()
        self.stats = IngestStats(
            accepted={"traces": 0, "logs": 0, "metrics": 0}, rejected={"traces": 0, "logs": 0, "metrics": 0}
        )

    async def start_decode_workers(self, processes: int) -> None:
        """Decode in `processes` worker processes from now on (0: in this process).

        Called on the event loop's thread, which lives as long as the server: the workers are started from
        the thread that submits to them, and Linux ties PR_SET_PDEATHSIG to the thread that started a child.
        """
        if processes <= 0 or self._pool is not None:
            return
        # spawn, not fork: the server already runs threads (DuckDB, the writer), which fork does not copy.
        self._pool = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        await asyncio.gather(*(asyncio.wrap_future(self._pool.submit(_warm_up)) for _ in range(processes)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def reservation(self) -> Reservation:
        """A new request's hold on the memory budget; Retry-After from how long the write backlog takes."""
        return Reservation(self.memory, max(1, round(self.writer.pending_rows / 100_000)))

    def _decode_in_thread(self, signal: Signal, body: bytes, encoding: Encoding) -> DecodedBatch:
        with self._decode_lock:
            return decode(signal, body, encoding)

    async def ingest(
        self,
        signal: Signal,
        body: bytes,
        encoding: Encoding,
        content_encoding: str = "",
        reservation: Reservation | None = None,
    ) -> DecodedBatch:
        """Decode and commit one export request. Raises IngestError.

        `reservation` holds the body's bytes when the caller reserved them while reading it (HTTP);
        otherwise the body is reserved here. Everything held is released when this returns.
        """
        res = reservation if reservation is not None else self.reservation()
        try:
            if reservation is None:
                res.grow(len(body))
            return await self._ingest(signal, body, encoding, content_encoding, res)
        finally:
            res.release_all()

    async def _ingest(
        self, signal: Signal, body: bytes, encoding: Encoding, content_encoding: str, res: Reservation
    ) -> DecodedBatch:
        ce = content_encoding.strip().lower()
        if ce == "gzip":
            # The compressed body stays reserved too: the caller holds it until the request is answered.
            body = gunzip_capped(body, self.max_body_bytes, res)
        elif ce not in ("", "identity"):
            raise IngestError(415, f"Content-Encoding {content_encoding!r} is not supported: use gzip or none")
        if len(body) > self.max_body_bytes:
            raise IngestError(413, f"the body is larger than {self.max_body_bytes} bytes: send smaller batches")
        try:
            if self._pool is not None:
                loop = asyncio.get_running_loop()
                batch = await loop.run_in_executor(self._pool, decode, signal, body, encoding)
            else:
                batch = await asyncio.to_thread(self._decode_in_thread, signal, body, encoding)
        except OTLPDecodeError as e:
            self.stats.requests_failed += 1
            raise IngestError(400, f"malformed OTLP {signal} ({encoding}): {e}") from None
        try:
            # The decoded tables are held until they are committed (the body stays reserved: the caller's
            # frames still reference it), so the budget over-counts rather than under-counts.
            res.grow(table_bytes(batch))
            future = self.writer.submit(batch.tables)
        except IngestError:
            self._refused(signal, batch)
            self.stats.requests_throttled += 1
            raise
        except QueueFullError as e:
            self._refused(signal, batch)
            self.stats.requests_throttled += 1
            raise IngestError(429, str(e), retry_after_s=e.retry_after_s) from None
        try:
            await asyncio.wrap_future(future)
        except Exception as e:
            self._refused(signal, batch)
            self.stats.requests_failed += 1
            raise IngestError(503, f"the store could not commit this batch ({e}); retry later", 5) from None
        self.stats.accepted[signal] += batch.accepted
        self.stats.rejected[signal] += batch.rejected
        metrics.INGEST_RECORDS.labels(signal, "accepted").inc(batch.accepted)
        if batch.rejected:
            metrics.INGEST_RECORDS.labels(signal, "rejected").inc(batch.rejected)
        return batch

    def _refused(self, signal: Signal, batch: DecodedBatch) -> None:
        """Records decoded but not stored (backpressure or a failed commit) count as rejected."""
        n = batch.accepted + batch.rejected
        self.stats.rejected[signal] += n
        if n:
            metrics.INGEST_RECORDS.labels(signal, "rejected").inc(n)
