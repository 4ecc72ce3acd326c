"""What obsmcp adds on top of a remote backend's own response time: ``python -m bench.remote_overhead``.

One real Prometheus on loopback (Debian's package, via tests/prometheus.py) with the standard HTTP server
histogram and counter backfilled for the last 90 minutes (tests/test_prometheus_source.py's data). Cases,
interleaved call by call in one run so that machine load falls on all of them alike:

- ``direct_http``: the baseline, a pooled ``httpx.Client`` GET of /api/v1/query_range with the same PromQL,
  start, end and step the tool sends, plus ``json`` parsing: what any client pays.
- ``tool_function``: ``obsmcp.tools.metrics.query_metrics(ctx, promql=..., backend=...)`` called from a worker
  thread as the server does: the hop to the HTTP client's loop, the resilient client (fingerprint, breaker,
  rate limit, metrics), series summaries, budgeting and the text rendering. Query cache off (TTL 0), so every
  call reaches Prometheus, and the per-backend rate limit off (at its default 20/s it would pace the loop).
- ``mcp_call``: the same through the MCP SDK client (in memory) and the server: argument validation, the
  worker thread, redaction of the answer, the structured content and JSON-RPC serialization.
- ``mcp_call_metric``: ``query_metrics(metric=..., service=..., aggregation="p95", group_by=["route"])``: the
  same plus PromQL translation and the (cached) metadata and service-name lookups.

Target (issue 3): tool overhead over the backend's own response time <= 10 ms p50. Overhead is each case's p50
minus direct_http's p50 (same run). Writes bench/results/remote_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client
from tests.prometheus import require_binaries, start_prometheus
from tests.test_prometheus_source import backfill

from bench.sysmon import CpuWatch
from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from obsmcp.telemetry import configure_logging
from obsmcp.tools import metrics as metrics_tool

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "remote_overhead.json"
TARGET_OVERHEAD_P50_MS = 10.0
PROMQL = "sum by (route) (rate(http_server_requests_total[5m]))"


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def _measure(n: int, warmup: int, cases: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, list[float]]:
    for _ in range(warmup):
        for run in cases.values():
            await run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(n):
        for name, run in cases.items():
            t0 = time.perf_counter()
            await run()
            times[name].append(time.perf_counter() - t0)
    return times


async def _bench(prom_url: str, n: int, warmup: int, data_dir: Path, now: int) -> dict[str, list[float]]:
    end = (now - 120) // 60 * 60
    start = end - 3600
    # The per-backend token bucket (20 requests/s by default) is a policy, not overhead: three tool calls per
    # round would wait on it. Off here; the cache too, so that every call reaches Prometheus.
    backend = {
        "name": "bench-prom",
        "kind": "prometheus",
        "url": prom_url,
        "query_cache_ttl_s": 0,
        "rate_limit_per_s": 0,
    }
    rt = Runtime.open(Settings(data_dir=data_dir, backends=[backend], otlp_port=0), in_memory=True, for_agents=True)
    direct = httpx.Client(base_url=prom_url, timeout=30)
    params: dict[str, str | int] = {"query": PROMQL, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": 300}
    args = {"backend": "bench-prom", "start": _iso(start), "end": _iso(end), "step": "5m"}

    async def direct_http() -> None:
        def get() -> None:
            r = direct.get("/api/v1/query_range", params=params)
            assert json.loads(r.content)["status"] == "success"

        # In a worker thread like the tool, so both pay the same thread hop.
        await anyio.to_thread.run_sync(get)

    async def tool_function() -> None:
        await anyio.to_thread.run_sync(
            lambda: metrics_tool.query_metrics(
                rt.ctx, None, start=args["start"], end=args["end"], step="5m", backend="bench-prom", promql=PROMQL
            )
        )

    try:
        async with Client(rt.mcp) as client:

            async def mcp_call() -> None:
                r = await client.call_tool("query_metrics", {**args, "promql": PROMQL})
                assert not r.is_error, r.content

            async def mcp_call_metric() -> None:
                r = await client.call_tool(
                    "query_metrics",
                    {
                        **args,
                        "metric": "http_server_request_duration_seconds",
                        "service": "checkout",
                        "aggregation": "p95",
                        "group_by": ["route"],
                    },
                )
                assert not r.is_error, r.content

            return await _measure(
                n,
                warmup,
                {
                    "direct_http": direct_http,
                    "tool_function": tool_function,
                    "mcp_call": mcp_call,
                    "mcp_call_metric": mcp_call_metric,
                },
            )
    finally:
        direct.close()
        rt.ctx.sources.close()
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="calls per case")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    configure_logging("console", "warning")
    bins = require_binaries()
    now = int(time.time())
    with tempfile.TemporaryDirectory() as tmp:
        prom = start_prometheus(bins, Path(tmp) / "prom", [], backfill=backfill(now))
        try:
            with CpuWatch((prom.proc.pid,) if prom.proc else ()) as watch:
                times = asyncio.run(_bench(prom.url, args.n, args.warmup, Path(tmp) / "data", now))
            machine = watch.stop()
        finally:
            prom.stop()
    cases = {name: _stats(samples) for name, samples in times.items()}
    base = cases["direct_http"]
    overhead = {
        name: {
            "p50_ms": round(c["p50_ms"] - base["p50_ms"], 3),
            "p99_ms": round(c["p99_ms"] - base["p99_ms"], 3),
        }
        for name, c in cases.items()
        if name != "direct_http"
    }
    result = {
        "benchmark": "remote_overhead",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "python": platform.python_version(),
        "prometheus": bins.version(),
        "machine": machine,
        "promql": PROMQL,
        "target_overhead_p50_ms": TARGET_OVERHEAD_P50_MS,
        "met": {name: o["p50_ms"] <= TARGET_OVERHEAD_P50_MS for name, o in overhead.items()},
        "cases": cases,
        "overhead_over_direct_http": overhead,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
