"""Several MCP clients on one store: the first obsmcp on a data directory owns it; a later stdio `serve`
(what Claude Desktop or an IDE spawns) bridges to the owner instead of failing on DuckDB's file lock.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.conftest import (
    DEFAULT_TOOL_NAMES,
    OBSMCP,
    ServerProcess,
    call_tool,
    call_tool_error,
    clean_env,
    free_port,
    otlp_logs_protobuf,
)

pytestmark = pytest.mark.slow


def stdio_server(data_dir: Path, *extra: str) -> StdioServerParameters:
    # stdio_client passes only a minimal default environment, so no OBSMCP_* setting leaks in.
    return StdioServerParameters(command=str(OBSMCP), args=["serve", "--data-dir", str(data_dir), *extra])


def send_logs(otlp_url: str, service: str, bodies: list[str]) -> None:
    r = httpx.post(
        f"{otlp_url}/v1/logs",
        content=otlp_logs_protobuf(service, bodies),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


@pytest.mark.anyio
async def test_stdio_serve_bridges_to_the_http_owner(server: ServerProcess) -> None:
    send_logs(server.otlp_url, "bridge-svc", ["bridged-marker-1 sent to the owner", "bridged-marker-2"])
    async with Client(stdio_server(server.data_dir)) as a, Client(stdio_server(server.data_dir)) as b:
        tools = (await a.list_tools()).tools
        assert {t.name for t in tools} == DEFAULT_TOOL_NAMES
        r = await call_tool(a, "search_logs", {"query": "bridged-marker", "service": "bridge"})
        assert r.structured_content["total"] == 2, r.content[0].text
        assert {log["service"] for log in r.structured_content["logs"]} == {"bridge-svc"}
        # Data that arrives at the owner later is visible through the bridge at once (one store).
        send_logs(server.otlp_url, "bridge-svc", ["bridged-marker-3 arrived later"])
        r = await call_tool(b, "search_logs", {"query": "bridged-marker"})
        assert r.structured_content["total"] == 3
        # Tool errors pass through the bridge as errors with their explanation.
        err = await call_tool_error(b, "get_trace", {"trace_id": "nope"})
        assert "32 hex" in err
    assert server.healthy(), "the owner must keep running when bridged clients go away"
    assert server.owner()["pid"] == server.proc.pid  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_first_stdio_serve_owns_the_store_and_a_second_bridges(tmp_path: Path) -> None:
    data = tmp_path / "data"
    otlp_port = free_port()
    async with Client(stdio_server(data, "--otlp-port", str(otlp_port))) as owner:
        info = json.loads((data / "owner.json").read_text())
        assert info["otlp_http"] == f"http://127.0.0.1:{otlp_port}"
        assert info["mcp_url"].startswith("http://127.0.0.1:")
        send_logs(info["otlp_http"], "desktop-svc", ["stdio-owner-marker"])
        r = await call_tool(owner, "search_logs", {"query": "stdio-owner-marker"})
        assert r.structured_content["total"] == 1
        async with Client(stdio_server(data, "--otlp-port", str(otlp_port))) as second:
            r = await call_tool(second, "search_logs", {"query": "stdio-owner-marker"})
            assert r.structured_content["total"] == 1
            r = await call_tool(second, "list_services")
            assert [s["service"] for s in r.structured_content["services"]] == ["desktop-svc"]
    assert not (data / "owner.json").exists(), "a stopped owner must remove owner.json"


@pytest.mark.anyio
async def test_a_dead_owner_does_not_block_the_next_server(server_factory: Any) -> None:
    srv: ServerProcess = server_factory()
    send_logs(srv.otlp_url, "survivor", ["written-before-the-crash"])
    srv.kill()  # owner.json still names the dead process
    assert (srv.data_dir / "owner.json").exists()
    async with Client(stdio_server(srv.data_dir, "--otlp-port", "0")) as client:
        r = await call_tool(client, "search_logs", {"query": "written-before-the-crash"})
        assert r.structured_content["total"] == 1


@pytest.mark.parametrize("role", ["bridge", "owner"])
def test_stdio_serve_exits_when_the_client_closes_stdin(server_factory: Any, tmp_path: Path, role: str) -> None:
    """MCP clients end a stdio server by closing its stdin; it must exit by itself, not linger."""
    data = server_factory().data_dir if role == "bridge" else tmp_path / "own"
    proc = subprocess.Popen(
        [str(OBSMCP), "serve", "--data-dir", str(data), "--otlp-port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        }
        proc.stdin.write((json.dumps(init) + "\n").encode())
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
        assert reply["result"]["serverInfo"]["name"] == "obsmcp", reply
        proc.stdin.close()
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`obsmcp serve` ({role}) kept running after its stdin was closed")
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.anyio
async def test_bridge_reports_a_lost_owner_instead_of_hanging(server_factory: Any) -> None:
    """If the owner dies under a bridged client, the client's next call fails (connection closed); it
    must not wait forever for an answer that cannot come."""
    srv: ServerProcess = server_factory()
    async with Client(stdio_server(srv.data_dir)) as client:
        await call_tool(client, "list_services")
        srv.kill()
        with anyio.move_on_after(30) as waited:
            try:
                r = await client.call_tool("list_services", {})
            except Exception:  # the transport closed: what an MCP client shows as "server disconnected"
                return
        if waited.cancelled_caught:
            pytest.fail("a tool call through the stdio bridge hung after the owning server died")
        assert r.is_error, "a call through a bridge whose owner is gone cannot succeed"
