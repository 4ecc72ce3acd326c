"""Backpressure over real OTLP/HTTP, stateless MCP over HTTP, the schema resource, and / and /health."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import pytest
from mcp import Client

from tests.conftest import otlp_logs_protobuf, sql_scalar


def test_full_write_queue_answers_429_with_retry_after_and_loses_nothing(server_factory: Any) -> None:
    # A tiny queue and a slow flush: while one request waits for its commit, others are pushed back.
    srv = server_factory(
        env={
            "OBSMCP_INGEST_QUEUE_MAX_ROWS": "1000",
            "OBSMCP_INGEST_FLUSH_MS": "1500",
            "OBSMCP_INGEST_BATCH_ROWS": "1000000",
        }
    )
    body = otlp_logs_protobuf("load-service", [f"burst {i}" for i in range(600)])

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{srv.otlp_url}/v1/logs", content=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    codes = [r.status_code for r in responses]
    assert 200 in codes and 429 in codes, codes
    throttled = next(r for r in responses if r.status_code == 429)
    assert int(throttled.headers["Retry-After"]) >= 1
    accepted = codes.count(200)
    import anyio

    async def count() -> Any:
        async with Client(srv.mcp_url) as client:
            return await sql_scalar(client, "SELECT count(*) FROM otel_logs WHERE \"ServiceName\" = 'load-service'")

    assert anyio.run(count) == 600 * accepted  # every acknowledged record, and no throttled one


@pytest.mark.anyio
async def test_stateless_http_mode_serves_tools_without_sessions(server_factory: Any) -> None:
    srv = server_factory(env={"OBSMCP_STATELESS_HTTP": "true"})
    # A raw JSON-RPC POST with no session id gets a plain JSON answer.
    r = httpx.post(
        srv.mcp_url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        headers={"Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert "mcp-session-id" not in {k.lower() for k in r.headers}
    async with Client(srv.mcp_url) as client:
        result = await client.call_tool("list_services", {})
        assert not result.is_error


@pytest.mark.anyio
async def test_schema_resource_and_index_describe_what_is_served(server: Any) -> None:
    async with Client(server.mcp_url) as client:
        res = await client.read_resource("obsmcp://schema")
        text = res.contents[0].text  # type: ignore[union-attr]
        assert "CREATE TABLE IF NOT EXISTS otel_logs" in text and '"Events.Name"' in text
    index = httpx.get(server.base_url + "/", timeout=10).json()
    assert index["mcp"].startswith("/mcp") and "search_logs" in index["tools"]
    health = httpx.get(server.base_url + "/health", timeout=10).json()
    assert health["status"] == "healthy" and {c["name"] for c in health["checks"]} >= {"store", "ingest_queue"}


def test_dns_rebinding_is_refused_on_localhost(server: Any) -> None:
    r = httpx.post(
        server.mcp_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Host": "evil.example", "Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert r.status_code == 421
