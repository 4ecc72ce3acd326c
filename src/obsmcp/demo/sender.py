"""Deliver generated OTLP requests to an OTLP/HTTP receiver (protobuf encoding), with bounded concurrency
and retries when the receiver pushes back."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from gzip import compress as gzip_compress

import httpx

from obsmcp.demo.generator import OTLPRequest

_RETRYABLE = (429, 503)
_FIRST_BACKOFF_S = 0.25
_MAX_BACKOFF_S = 8.0
_MAX_RETRY_AFTER_S = 60.0
# Generating the next requests overlaps with sending; this many may wait in between.
_QUEUE_PER_WORKER = 2


class SendError(RuntimeError):
    """The receiver refused a request, or kept pushing back or being unreachable after every retry."""


@dataclass
class SendStats:
    requests: int = 0
    items: dict[str, int] = field(default_factory=lambda: {"traces": 0, "logs": 0, "metrics": 0})
    bytes_sent: int = 0  # request bodies as sent (compressed when gzip is on)
    retries: int = 0
    elapsed_s: float = 0.0

    def __str__(self) -> str:
        per_signal = ", ".join(f"{n:,} {signal}" for signal, n in self.items.items())
        rate = sum(self.items.values()) / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"{self.requests:,} requests ({per_signal}), {self.bytes_sent / 1e6:.1f} MB in {self.elapsed_s:.1f} s "
            f"({rate:,.0f} items/s), {self.retries} retries"
        )


async def send(
    requests: Iterable[OTLPRequest],
    endpoint: str = "http://127.0.0.1:4318",
    *,
    concurrency: int = 4,
    gzip: bool = True,
    on_sent: Callable[[OTLPRequest], None] | None = None,
    headers: dict[str, str] | None = None,
    max_attempts: int = 6,
    timeout_s: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SendStats:
    """POST every request to ``{endpoint}/v1/{signal}``; raises ``SendError`` on the first one that fails.

    429 and 503 answers (and connection failures) are retried after the ``Retry-After`` the receiver asked
    for, or with exponential backoff, up to ``max_attempts`` tries per request. ``transport`` replaces the
    network (tests, in-process receivers).
    """
    if concurrency < 1 or max_attempts < 1:
        raise ValueError("concurrency and max_attempts must be at least 1")
    stats = SendStats()
    started = time.perf_counter()
    queue: asyncio.Queue[OTLPRequest | None] = asyncio.Queue(maxsize=concurrency * _QUEUE_PER_WORKER)
    base = endpoint.rstrip("/")
    common = {"Content-Type": "application/x-protobuf", **(headers or {})}
    if gzip:
        common["Content-Encoding"] = "gzip"

    async def produce() -> None:
        iterator = iter(requests)
        try:
            # Generation is CPU-bound: run it off the event loop so uploads proceed meanwhile.
            while (request := await asyncio.to_thread(next, iterator, None)) is not None:
                await queue.put(request)
        finally:
            for _ in range(concurrency):
                await queue.put(None)

    async def consume(client: httpx.AsyncClient) -> None:
        while (request := await queue.get()) is not None:
            body = await asyncio.to_thread(gzip_compress, request.payload, 1) if gzip else request.payload
            await _post(client, f"{base}/v1/{request.signal}", body, max_attempts, stats)
            stats.requests += 1
            stats.items[request.signal] += request.items
            stats.bytes_sent += len(body)
            if on_sent is not None:
                on_sent(request)

    async with httpx.AsyncClient(timeout=timeout_s, headers=common, transport=transport) as client:
        producer = asyncio.create_task(produce())
        workers = [asyncio.create_task(consume(client)) for _ in range(concurrency)]
        try:
            await asyncio.gather(*workers)
            await producer
        except BaseException:
            for task in (producer, *workers):
                task.cancel()
            await asyncio.gather(producer, *workers, return_exceptions=True)
            raise
    stats.elapsed_s = time.perf_counter() - started
    return stats


async def _post(client: httpx.AsyncClient, url: str, body: bytes, max_attempts: int, stats: SendStats) -> None:
    backoff = _FIRST_BACKOFF_S
    for attempt in range(1, max_attempts + 1):
        try:
            response = await client.post(url, content=body)
        except httpx.TransportError as e:
            if attempt == max_attempts:
                raise SendError(f"POST {url} failed after {attempt} attempts: {e!r}") from e
            wait = backoff
        else:
            status = response.status_code
            if 200 <= status < 300:
                return
            text = response.text[:500]
            if status not in _RETRYABLE:
                raise SendError(f"POST {url} was refused with HTTP {status}: {text}")
            if attempt == max_attempts:
                raise SendError(f"POST {url} still answered HTTP {status} after {attempt} attempts: {text}")
            asked = _retry_after(response)
            wait = backoff if asked is None else asked
        stats.retries += 1
        await asyncio.sleep(wait)
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


def _retry_after(response: httpx.Response) -> float | None:
    """The wait the receiver asked for, in seconds (delta-seconds or an HTTP date), capped."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)
