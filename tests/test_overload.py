"""Ingest far beyond capacity: senders are pushed back with 429 + Retry-After, memory stays under the
configured bound, and everything acknowledged is stored (and nothing that was refused).

A real `obsmcp serve --http` gets 120 concurrent senders that never wait (they ignore Retry-After and send
again at once), each request 3,000 log records (~250 KB). The receiver's memory budget
(`ingest_memory_max_mb`) is set to 24 MB and the writer's row limit high, so the budget is what holds the
flood back. The bench (bench/load.py) measures the same against a measured capacity (3x); here the point is
the behaviour, not the figure.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from tests.conftest import ServerProcess, call_tool, otlp_logs_protobuf

pytestmark = pytest.mark.slow

SENDERS = 120
RECORDS = 3000
SECONDS = 6.0
MEMORY_MB = 24
# The server's resident memory may grow by this much above its idle size: DuckDB caches the rows it stores,
# Python keeps freed arenas. Without the budget, 120 requests in flight hold several times the budget.
RSS_GROWTH_LIMIT_MB = 600
PLACEHOLDER = b"ovl-000000"


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def tree_rss_mb(pid: int) -> float:
    """The server and its decode worker processes."""
    total = rss_mb(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += rss_mb(int(child))
            except OSError:
                continue
    return total


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, tree_rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _flood(srv: ServerProcess, template: bytes) -> tuple[list[str], Counter[str], list[str]]:
    """-> (markers acknowledged, status counts, problems with refusals)."""
    acked: list[str] = []
    codes: Counter[str] = Counter()
    problems: list[str] = []
    seq = iter(range(1, 10**6))
    deadline = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    async with httpx.AsyncClient(base_url=srv.otlp_url, limits=limits, timeout=120) as http:

        async def sender() -> None:
            while time.monotonic() < deadline:
                marker = f"ovl-{next(seq):06d}"
                body = template.replace(PLACEHOLDER, marker.encode())
                try:
                    r = await http.post("/v1/logs", content=body, headers={"Content-Type": "application/x-protobuf"})
                except httpx.HTTPError as e:
                    codes[type(e).__name__] += 1
                    continue
                codes[str(r.status_code)] += 1
                if r.status_code == 200:
                    acked.append(marker)
                elif r.status_code in (429, 503):
                    retry = r.headers.get("Retry-After", "")
                    if not retry.isdigit() or int(retry) < 1:
                        problems.append(f"{r.status_code} without a usable Retry-After ({retry!r})")
                else:
                    problems.append(f"{r.status_code}: {r.text[:200]}")

        await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return acked, codes, problems


async def _stored(mcp_url: str, acked: list[str]) -> tuple[int, list[str], list[Any]]:
    """-> (records stored by the flood, acknowledged markers missing, markers stored in part)."""
    async with Client(mcp_url) as client:
        r = await call_tool(
            client, "query_sql", {"sql": "SELECT count(*) FROM otel_logs WHERE \"ServiceName\" LIKE 'ovl-%'"}
        )
        stored = int(r.structured_content["rows"][0][0])
        values = ", ".join(f"('{m}')" for m in acked)
        r = await call_tool(
            client,
            "query_sql",
            {
                "sql": f"SELECT m FROM (VALUES {values}) AS t(m) "
                'EXCEPT SELECT DISTINCT "ServiceName" FROM otel_logs WHERE "ServiceName" LIKE \'ovl-%\''
            },
        )
        missing = [row[0] for row in r.structured_content["rows"]]
        r = await call_tool(
            client,
            "query_sql",
            {
                "sql": 'SELECT "ServiceName", count(*) FROM otel_logs WHERE "ServiceName" LIKE \'ovl-%\' '
                f"GROUP BY 1 HAVING count(*) <> {RECORDS}"
            },
        )
        partial = r.structured_content["rows"]
    return stored, missing, partial


def _gauge(srv: ServerProcess, name: str) -> float:
    text = httpx.get(f"{srv.base_url}/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} is not on /metrics"
    return float(m.group(1))


def test_flood_is_pushed_back_within_the_memory_bound_and_loses_nothing_acknowledged(server_factory: Any) -> None:
    srv: ServerProcess = server_factory(
        env={
            "OBSMCP_INGEST_MEMORY_MAX_MB": str(MEMORY_MB),
            "OBSMCP_INGEST_QUEUE_MAX_ROWS": "10000000",
            "OBSMCP_RATE_LIMIT_PER_CLIENT": "0",
        }
    )
    assert srv.proc is not None
    template = otlp_logs_protobuf(PLACEHOLDER.decode(), [f"overload record {i} " + "x" * 40 for i in range(RECORDS)])
    warm = httpx.post(
        f"{srv.otlp_url}/v1/logs",
        content=otlp_logs_protobuf("warm-up", ["first"]),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert warm.status_code == 200
    idle_rss = tree_rss_mb(srv.proc.pid)

    with RssSampler(srv.proc.pid) as rss:
        acked, codes, problems = anyio.run(_flood, srv, template)

    assert not problems, f"refusals must be 429/503 with Retry-After; got {problems[:5]} ({dict(codes)})"
    assert set(codes) <= {"200", "429", "503"}, f"every request gets an answer, 200 or 429/503: {dict(codes)}"
    assert codes["200"] > 0, dict(codes)
    assert codes["429"] + codes["503"] > 0, f"the flood was never pushed back: {dict(codes)}"

    peak_held = _gauge(srv, "obsmcp_ingest_memory_peak_bytes")
    assert 0 < peak_held <= MEMORY_MB * 1024**2, f"requests held {peak_held / 1024**2:.1f} MB, above the bound"
    assert rss.peak - idle_rss < RSS_GROWTH_LIMIT_MB, (
        f"the server grew from {idle_rss:.0f} MB to {rss.peak:.0f} MB under the flood"
    )

    stored, missing, partial = anyio.run(_stored, srv.mcp_url, acked)
    assert not missing, f"{len(missing)} acknowledged requests are not stored, e.g. {missing[:5]}"
    assert not partial, f"requests stored in part: {partial[:5]}"
    assert stored == len(acked) * RECORDS, "a refused request was stored, or an acknowledged one in part"

    assert srv.healthy()
    assert _gauge(srv, "obsmcp_ingest_memory_bytes") == 0, "every request released what it held"
