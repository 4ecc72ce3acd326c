"""Load demo telemetry straight into an open runtime (no HTTP): for evaluations, tests and benchmarks.

The payloads take the same path as an OTLP request after the HTTP layer (decode -> group commit), so what is
stored is exactly what `obsmcp demo` would store through the receiver.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from obsmcp.demo.generator import DemoConfig, generate

if TYPE_CHECKING:
    from obsmcp.runtime import Runtime

_IN_FLIGHT = 4  # requests decoded and committed concurrently; enough to keep group commits full


async def load_async(rt: Runtime, cfg: DemoConfig) -> dict[str, int]:
    """Ingest every request ``generate(cfg)`` yields; -> items stored per signal."""
    counts = {"traces": 0, "logs": 0, "metrics": 0}
    pending: set[asyncio.Task[object]] = set()
    for req in generate(cfg):
        if len(pending) >= _IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        pending.add(asyncio.create_task(rt.receiver.ingest(req.signal, req.payload, "protobuf")))
        counts[req.signal] += req.items
    if pending:
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
    return counts


def load(rt: Runtime, cfg: DemoConfig) -> dict[str, int]:
    """Synchronous `load_async`, for callers without an event loop."""
    return asyncio.run(load_async(rt, cfg))
