"""The resilient HTTP client's fast paths, beside their baselines, in one run: ``python -m bench.http_client``.

Against a local backend on loopback (tests/faulty_backend.py, in its own process), measured from the main
thread's event loop
(as a source awaiting the client from the server's loop; the client's own I/O runs on its loop thread):

- ``cache_hit``: ``await client.get_json(PATH, cache="metadata")`` answered from the TTL cache (fingerprint,
  lock, metrics, the debug event filtered out at the server's default level). Beside it: ``direct_httpx_get``,
  a pooled ``httpx.AsyncClient`` GET of the same path plus ``json.loads`` (what a hit saves), and
  ``dict_lookup``, a bare dict lookup (the floor).
- ``open_circuit_fast_fail``: ``await client.get_json(...)`` on a backend whose circuit is open, raising
  ``BackendUnavailable``. Beside it: ``raise_and_catch``, raising and catching an exception in a coroutine
  (the floor), and ``refused_connect_via_httpx``, a direct request to a loopback port nothing listens on
  (the cheapest way to fail without the breaker; a dead remote host costs up to the connect timeout).
- ``uncached_get_via_client``: the same GET as ``direct_httpx_get`` through the client with no cache
  (fingerprint, the hop to the client loop, single-flight, breaker, metrics): the client's cost on a miss.

Targets (issue 3): a cache hit <= 0.2 ms, an open-circuit fast-fail <= 1 ms. Writes
bench/results/http_client.json (p50/p99/mean per case, in microseconds, and whether the targets are met).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.faulty_backend import unused_port

from bench.sysmon import CpuWatch
from obsmcp.http import (
    BackendClientConfig,
    BackendHTTPError,
    BackendUnavailable,
    BreakerPolicy,
    RetryPolicy,
    backend_client,
    close_all,
)
from obsmcp.telemetry import configure_logging

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "http_client.json"
PATH = "/api/v1/label/__name__/values"
TARGET_CACHE_HIT_MS = 0.2
TARGET_OPEN_CIRCUIT_MS = 1.0
PAYLOAD = {"status": "success", "data": [f"metric_{i}" for i in range(200)]}


def summarize(samples_ns: list[int]) -> dict[str, Any]:
    s = sorted(samples_ns)
    n = len(s)

    def pct(q: float) -> float:
        return s[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1000  # nearest rank, in microseconds

    return {
        "n": n,
        "p50_us": round(statistics.median(s) / 1000, 2),
        "p99_us": round(pct(0.99), 2),
        "mean_us": round(statistics.fmean(s) / 1000, 2),
    }


async def timed(fn: Callable[[], Awaitable[Any]], n: int, warmup: int) -> list[int]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - t0)
    return samples


async def run(url: str, fast_n: int, network_n: int, rounds: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {}
    client = backend_client(BackendClientConfig(name="bench-prometheus", base_url=url, rate_limit=None))
    broken = backend_client(
        BackendClientConfig(
            name="bench-broken",
            base_url=url,
            rate_limit=None,
            retry=RetryPolicy(max_attempts=1),
            breaker=BreakerPolicy(failure_threshold=5, open_s=3600),
        )
    )
    for _ in range(5):  # open its circuit: five 500s in a row
        with contextlib.suppress(BackendHTTPError):
            await broken.get_json("/fail")
    if broken.state().circuit != "open":
        raise RuntimeError("the benchmark backend's circuit did not open after five 500s: see the client's log")
    table = {PATH: PAYLOAD}

    async def cache_hit() -> None:
        await client.get_json(PATH, cache="metadata")

    async def dict_lookup() -> None:
        table.get(PATH)

    async def open_circuit() -> None:
        with contextlib.suppress(BackendUnavailable):
            await broken.get_json(PATH)

    async def raise_and_catch() -> None:
        with contextlib.suppress(BackendUnavailable):
            raise BackendUnavailable("x", backend="b", retry_in_s=1.0)

    async def uncached() -> None:
        await client.get_json(PATH)

    dead = f"http://127.0.0.1:{unused_port()}"
    async with httpx.AsyncClient(base_url=url) as direct, httpx.AsyncClient(base_url=dead) as refused:

        async def direct_get() -> None:
            json.loads((await direct.get(PATH)).content)

        async def refused_connect() -> None:
            with contextlib.suppress(httpx.ConnectError):
                await refused.get(PATH)

        cases: list[tuple[str, Callable[[], Awaitable[Any]], int]] = [
            ("cache_hit", cache_hit, fast_n),
            ("dict_lookup", dict_lookup, fast_n),
            ("direct_httpx_get", direct_get, network_n),
            ("open_circuit_fast_fail", open_circuit, fast_n),
            ("raise_and_catch", raise_and_catch, fast_n),
            ("refused_connect_via_httpx", refused_connect, network_n),
            ("uncached_get_via_client", uncached, network_n),
        ]
        # Rounds interleave the cases, so a burst of load elsewhere on the machine hits all of them alike.
        for _ in range(rounds):
            for name, fn, n in cases:
                samples.setdefault(name, []).extend(await timed(fn, n, warmup=max(5, n // 20)))
    return samples


# The server runs in its own process: in this one it would compete for the GIL with the client it serves.
_SERVER = f"""
import sys
from tests.faulty_backend import FaultyBackend, Reply
with FaultyBackend() as server:
    server.script({PATH!r}, then=Reply(200, {PAYLOAD!r}))
    server.script("/fail", then=Reply(500, {{"error": "down"}}))
    print(server.url, flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""


@contextlib.contextmanager
def backend_process() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the benchmark's backend did not start (exit code {proc.poll()})")
        yield url, proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast-n", type=int, default=4000, help="iterations per round of the in-memory cases")
    parser.add_argument("--network-n", type=int, default=400, help="iterations per round of the network cases")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(level="info")  # the server's default: per-request debug events are filtered out
    with backend_process() as (url, server_pid), CpuWatch(pids=(server_pid,)) as watch:
        try:
            samples = asyncio.run(run(url, args.fast_n, args.network_n, args.rounds))
        finally:
            close_all()
    cases = {name: summarize(s) for name, s in samples.items()}
    hit, fast_fail = cases["cache_hit"], cases["open_circuit_fast_fail"]
    result = {
        "benchmark": "http_client",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": watch.stop(),
        "targets_ms": {"cache_hit": TARGET_CACHE_HIT_MS, "open_circuit_fast_fail": TARGET_OPEN_CIRCUIT_MS},
        "met": {
            "cache_hit_p50": hit["p50_us"] <= TARGET_CACHE_HIT_MS * 1000,
            "cache_hit_p99": hit["p99_us"] <= TARGET_CACHE_HIT_MS * 1000,
            "open_circuit_fast_fail_p50": fast_fail["p50_us"] <= TARGET_OPEN_CIRCUIT_MS * 1000,
            "open_circuit_fast_fail_p99": fast_fail["p99_us"] <= TARGET_OPEN_CIRCUIT_MS * 1000,
        },
        "cases_us": cases,
        "notes": [
            "cache_hit vs direct_httpx_get: what a hit saves against a local server (remote backends: more)",
            "open_circuit_fast_fail vs refused_connect_via_httpx: failing fast vs the cheapest failing request",
            "uncached_get_via_client vs direct_httpx_get: the client's cost on a miss (hop to its loop thread)",
            "machine.other_cores: CPU used by other processes during the run (a shared 2-core machine)",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(n) for n in cases)
    for name, c in cases.items():
        print(f"{name:<{width}}  p50 {c['p50_us']:>9.1f} us   p99 {c['p99_us']:>9.1f} us   n={c['n']}")
    print(f"targets met: {result['met']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
