"""Fifty MCP clients at once over streamable HTTP while OTLP ingest runs: no errors, nothing lost, memory bounded.

A real `obsmcp serve --http`; 50 MCP SDK clients (each its own session) call a mix of tools concurrently
while two senders push log and span batches over OTLP/HTTP. Every tool call must succeed, every
acknowledged record must be stored (no more: refused requests store nothing), and the server's memory must
stay within a generous bound that a leak or an unbounded queue would pass. Latency figures (p50/p99 per
tool at full size) come from bench/load.py, not from here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.conftest import ServerProcess, call_tool, otlp_logs_protobuf
from tests.test_overload import RssSampler, tree_rss_mb

pytestmark = pytest.mark.slow

CLIENTS = 50
CALLS_PER_CLIENT = 6
LOG_RECORDS = 200
SPANS_PER_TRACE = 10
TRACES_PER_REQUEST = 10
RSS_GROWTH_LIMIT_MB = 500
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def spans_protobuf(service: str, trace_ids: list[bytes]) -> bytes:
    """An ExportTraceServiceRequest: per trace id, one server root span and SPANS_PER_TRACE - 1 children."""
    now = time.time_ns()
    spans = []
    for t, tid in enumerate(trace_ids):
        root = (t + 1).to_bytes(8, "big")
        for i in range(SPANS_PER_TRACE):
            sid = root if i == 0 else (1000 * (t + 1) + i).to_bytes(8, "big")
            spans.append(
                trace_pb2.Span(
                    trace_id=tid,
                    span_id=sid,
                    parent_span_id=b"" if i == 0 else root,
                    name="GET /load" if i == 0 else f"SELECT load {i}",
                    kind=2 if i == 0 else 3,
                    start_time_unix_nano=now + i * 1000,
                    end_time_unix_nano=now + 5_000_000 - i * 1000,
                )
            )
    resource = resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]
    )
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
    )
    return req.SerializeToString()


class Ingest:
    """Two senders (logs, spans) that run until stopped; counts what was acknowledged."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.acked = Counter[str]()  # signal -> records acknowledged
        self.codes = Counter[str]()
        self.first_trace: str | None = None
        self.stop = asyncio.Event()

    async def logs(self, http: httpx.AsyncClient) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            body = otlp_logs_protobuf("load-logs", [f"load batch {n} record {i}" for i in range(LOG_RECORDS)])
            await self._post(http, "/v1/logs", body, "logs", LOG_RECORDS)

    async def spans(self, http: httpx.AsyncClient) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            tids = [(n * 1000 + t).to_bytes(16, "big") for t in range(TRACES_PER_REQUEST)]
            ok = await self._post(
                http, "/v1/traces", spans_protobuf("load-api", tids), "traces", TRACES_PER_REQUEST * SPANS_PER_TRACE
            )
            if ok and self.first_trace is None:
                self.first_trace = tids[0].hex()

    async def _post(self, http: httpx.AsyncClient, path: str, body: bytes, signal: str, records: int) -> bool:
        r = await http.post(f"{self.srv.otlp_url}{path}", content=body, headers=PROTOBUF)
        self.codes[str(r.status_code)] += 1
        if r.status_code == 200:
            self.acked[signal] += records
            return True
        assert r.status_code in (429, 503) and int(r.headers["Retry-After"]) >= 1, (r.status_code, r.text[:300])
        await asyncio.sleep(int(r.headers["Retry-After"]))
        return False


async def _session(srv: ServerProcess, ingest: Ingest, n: int, errors: list[str], calls: Counter[str]) -> None:
    """One MCP client: its own session, a mix of cheap and heavier tools."""
    mix: list[tuple[str, dict[str, Any]]] = [
        ("list_services", {}),
        ("search_logs", {"query": f"record {n % LOG_RECORDS}", "service": "load-logs", "limit": 5}),
        ("search_traces", {"service": "load-api", "limit": 5}),
        ("get_trace", {"trace_id": ingest.first_trace or ""}),
        ("list_metrics", {}),
        ("find_errors", {}),
        ("query_sql", {"sql": 'SELECT "ServiceName", count(*) FROM otel_logs GROUP BY 1'}),
    ]
    async with Client(srv.mcp_url) as client:
        for i in range(CALLS_PER_CLIENT):
            name, args = mix[(n + i) % len(mix)]
            try:
                r = await client.call_tool(name, args)
            except Exception as e:  # the test reports every failure kind, not just the first
                errors.append(f"{name}: {type(e).__name__}: {e}")
                continue
            calls[name] += 1
            if r.is_error:
                errors.append(f"{name}({args}): {r.content[0].text[:300] if r.content else ''}")


async def _run(srv: ServerProcess) -> tuple[Ingest, list[str], Counter[str]]:
    ingest = Ingest(srv)
    errors: list[str] = []
    calls: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=60) as http:
        senders = [asyncio.create_task(ingest.logs(http)), asyncio.create_task(ingest.spans(http))]
        while ingest.first_trace is None:  # the tools have something to read
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in senders), [t.exception() for t in senders if t.done()]
        await asyncio.gather(*(_session(srv, ingest, n, errors, calls) for n in range(CLIENTS)))
        ingest.stop.set()
        await asyncio.gather(*senders)
    return ingest, errors, calls


async def _stored(srv: ServerProcess) -> dict[str, int]:
    async with Client(srv.mcp_url) as client:
        r = await call_tool(
            client,
            "query_sql",
            {
                "sql": "SELECT 'logs', count(*) FROM otel_logs WHERE \"ServiceName\" = 'load-logs' "
                "UNION ALL SELECT 'traces', count(*) FROM otel_traces WHERE \"ServiceName\" = 'load-api'"
            },
        )
        return {row[0]: int(row[1]) for row in r.structured_content["rows"]}


def test_fifty_mcp_clients_during_ingest_get_answers_and_nothing_is_lost(server_factory: Any) -> None:
    srv: ServerProcess = server_factory(env={"OBSMCP_RATE_LIMIT_PER_CLIENT": "0"})
    assert srv.proc is not None
    idle_rss = tree_rss_mb(srv.proc.pid)

    with RssSampler(srv.proc.pid) as rss:
        ingest, errors, calls = anyio.run(_run, srv)

    assert not errors, f"{len(errors)} of {CLIENTS * CALLS_PER_CLIENT} tool calls failed, e.g. {errors[:5]}"
    assert sum(calls.values()) == CLIENTS * CALLS_PER_CLIENT
    assert ingest.acked["logs"] > 0 and ingest.acked["traces"] > 0, dict(ingest.codes)
    assert anyio.run(_stored, srv) == {"logs": ingest.acked["logs"], "traces": ingest.acked["traces"]}, (
        "stored records differ from the acknowledged ones"
    )
    assert rss.peak - idle_rss < RSS_GROWTH_LIMIT_MB, f"the server grew from {idle_rss:.0f} to {rss.peak:.0f} MB"
    assert srv.healthy()
