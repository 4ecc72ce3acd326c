"""The OTLP receiver core shared by HTTP and gRPC: decompress with limits, decode, write, acknowledge.

Rules from the OTLP specification (storage.md 5.3): a body cap that also applies after decompression
(413), 400 for malformed data (never retried), 429/503 with Retry-After for backpressure, partial success
reported in a 200, and the response in the request's encoding. A request is acknowledged only after its
rows are committed.
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

from obsmcp.ingest.otlp import DecodedBatch, OTLPDecodeError, decode
from obsmcp.store.writer import QueueFullError, StoreWriter

Signal = Literal["traces", "logs", "metrics"]
Encoding = Literal["protobuf", "json"]


class IngestError(Exception):
    """A request the receiver refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


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


def gunzip_capped(body: bytes, cap: int) -> bytes:
    """Decompress gzip, refusing output larger than cap (a gzip bomb stops at cap+1 bytes of work)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, cap + 1)
    except zlib.error as e:
        raise IngestError(400, f"the body is not valid gzip ({e}): send it uncompressed or fix the encoder") from None
    if len(out) > cap or d.unconsumed_tail:
        raise IngestError(413, f"the body is larger than {cap} bytes after decompression: send smaller batches")
    if not d.eof:
        raise IngestError(400, "the gzip body is truncated: resend the whole request")
    return out


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

    def __init__(self, writer: StoreWriter, max_body_bytes: int) -> None:
        self.writer = writer
        self.max_body_bytes = max_body_bytes
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

    def _decode_in_thread(self, signal: Signal, body: bytes, encoding: Encoding) -> DecodedBatch:
        with self._decode_lock:
            return decode(signal, body, encoding)

    async def ingest(self, signal: Signal, body: bytes, encoding: Encoding, content_encoding: str = "") -> DecodedBatch:
        """Decode and commit one export request. Raises IngestError."""
        ce = content_encoding.strip().lower()
        if ce == "gzip":
            body = gunzip_capped(body, self.max_body_bytes)
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
            future = self.writer.submit(batch.tables)
        except QueueFullError as e:
            self.stats.requests_throttled += 1
            raise IngestError(429, str(e), retry_after_s=e.retry_after_s) from None
        try:
            await asyncio.wrap_future(future)
        except Exception as e:
            self.stats.requests_failed += 1
            raise IngestError(503, f"the store could not commit this batch ({e}); retry later", 5) from None
        self.stats.accepted[signal] += batch.accepted
        self.stats.rejected[signal] += batch.rejected
        return batch
