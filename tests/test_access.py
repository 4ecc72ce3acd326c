"""What a caller may do: tool selection (--tools, --disable-tools, --enable-writes), the per-client rate limit,
the MCP request body cap and the audit log, against real `obsmcp serve` processes and the MCP SDK client."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from obsmcp.access import CATEGORIES, AuditLog, RateLimiter, retry_in, select_tools
from obsmcp.config import ConfigError, Settings
from obsmcp.runtime import Runtime
from tests.conftest import DEFAULT_TOOL_NAMES, OBSMCP, TOOL_NAMES, ServerProcess, run_cli

ALICE = "alice:Zr8Kd2Lq9Vx4Pm7Tn3Wb6Yc"
BOB = "bob:Hs5Gf1Jk8Qw2Ez6Ru9Ti4Op"
FAST = {"OBSMCP_INGEST_DECODE_PROCESSES": "0"}  # no decode worker processes: these tests send no OTLP
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def secret(token: str) -> str:
    return token.split(":", 1)[1]


# -- tool selection ----------------------------------------------------------------------------------------------


def agent_tools(tmp_path: Path, **settings: Any) -> list[str]:
    rt = Runtime.open(Settings(data_dir=tmp_path, **settings), in_memory=True, for_agents=True)
    try:
        return [t.name for t in rt.mcp._tool_manager.list_tools()]
    finally:
        rt.close()


def test_agents_get_the_default_categories_and_can_choose_by_name_and_category(tmp_path: Path) -> None:
    default = set(agent_tools(tmp_path))
    assert default == DEFAULT_TOOL_NAMES  # within the definitions budget
    assert set(agent_tools(tmp_path, tools=["all"])) == TOOL_NAMES
    core = set(agent_tools(tmp_path, tools=["core"]))
    assert core == set(CATEGORIES["core"])
    assert set(agent_tools(tmp_path, tools=["core", "slo_report"])) == core | {"slo_report"}
    chosen = agent_tools(tmp_path, tools=["analysis", "render_chart"], disable_tools=["log_patterns"])
    assert set(chosen) == {"slo_report", "service_map", "detect_anomalies", "render_chart"}
    assert set(agent_tools(tmp_path, disable_tools=["core"])) == DEFAULT_TOOL_NAMES - core
    # In-process users (obsmcp tool, tests, benchmarks) keep every read-only tool.
    rt = Runtime.open(Settings(data_dir=tmp_path, tools=["charts"]), in_memory=True)
    try:
        assert {t.name for t in rt.mcp._tool_manager.list_tools()} == TOOL_NAMES
    finally:
        rt.close()


def test_unknown_tool_names_fail_with_the_valid_names_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        agent_tools(tmp_path, tools=["search_log"])
    msg = str(err.value)
    assert "'search_log' is neither a tool nor a category" in msg
    assert "search_logs" in msg and "core" in msg and "--tools" in msg
    with pytest.raises(ConfigError, match="--disable-tools"):
        agent_tools(tmp_path, disable_tools=["nope"])


@pytest.mark.anyio
async def test_write_tools_are_served_only_with_enable_writes(tmp_path: Path) -> None:
    def server() -> MCPServer[Any]:
        mcp: MCPServer[Any] = MCPServer("t")

        @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
        def read_things() -> str:
            return "read"

        @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
        def push_alert_rule() -> str:
            return "pushed"

        @mcp.tool()  # no annotations: treated as changing something
        def unlabelled() -> str:
            return "?"

        return mcp

    async def listed(mcp: MCPServer[Any]) -> set[str]:
        async with Client(mcp) as client:
            return {t.name for t in (await client.list_tools()).tools}

    base = {"data_dir": tmp_path, "tools": ["all"]}
    mcp = server()
    select_tools(mcp, Settings(**base), for_agents=True)
    assert await listed(mcp) == {"read_things"}
    mcp = server()
    select_tools(mcp, Settings(**base, enable_writes=True), for_agents=True)
    assert await listed(mcp) == {"read_things", "push_alert_rule", "unlabelled"}
    with pytest.raises(ConfigError, match=r"push_alert_rule.*--enable-writes"):
        select_tools(server(), Settings(data_dir=tmp_path, tools=["push_alert_rule"]), for_agents=True)
    mcp = server()
    select_tools(mcp, Settings(data_dir=tmp_path), for_agents=False)  # in-process too: read-only by default
    assert await listed(mcp) == {"read_things"}


@pytest.mark.slow
@pytest.mark.anyio
async def test_serve_flags_change_the_tool_list_and_unknown_names_stop_the_start(tmp_path: Path) -> None:
    def stdio(*flags: str) -> StdioServerParameters:
        args = ["serve", "--data-dir", str(tmp_path / "data"), "--otlp-port", "0", *flags]
        return StdioServerParameters(command=str(OBSMCP), args=args)

    async with Client(stdio("--tools", "charts,slo_report")) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"render_chart", "slo_report"}
    async with Client(stdio("--disable-tools", "core,analysis,charts,alerts")) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"investigate", "find_bottlenecks"}
    r = run_cli("serve", "--tools", "core,bogus", "--otlp-port", "0", "--data-dir", str(tmp_path / "other"))
    assert r.returncode != 0
    assert "'bogus' is neither a tool nor a category" in r.stderr and "find_errors" in r.stderr, r.stderr


# -- rate limit, body cap and audit log over HTTP ----------------------------------------------------------------


def test_rate_limiter_allows_bursts_refills_at_the_rate_and_keeps_clients_apart() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.acquire("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a", now=0.0) == pytest.approx(0.5)  # one call back after 1/rate seconds
    assert limiter.acquire("b", now=0.0) == 0.0
    assert limiter.acquire("a", now=0.5) == 0.0
    assert limiter.acquire("a", now=100.0) == 0.0  # refilled, but never above the burst
    assert [limiter.acquire("a", now=100.0) for _ in range(3)][-1] > 0
    assert RateLimiter(rate=0, burst=1).acquire("a") == 0.0  # 0 disables
    # The advice "retry in N s" is rounded up: a wait rounded down would be refused again.
    assert [retry_in(w) for w in (0.0, 0.1, 0.14, 0.5, 1.96)] == [0.1, 0.1, 0.2, 0.5, 2.0]


def test_audit_log_is_private_and_bounded_by_rotation(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit" / "audit.jsonl", max_bytes=4096)
    for i in range(100):
        log.write({"identity": "alice", "tool": "search_logs", "i": i})
    log.close()
    current, previous = tmp_path / "audit" / "audit.jsonl", tmp_path / "audit" / "audit.jsonl.1"
    assert stat.S_IMODE(os.stat(current).st_mode) == 0o600
    assert current.stat().st_size <= 4096 and previous.stat().st_size <= 4096
    last = json.loads(current.read_text().splitlines()[-1])
    assert last["i"] == 99


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with two callers (alice, bob), one tool call per 2 s with bursts of 3, and a 4 KiB body cap."""
    tmp = tmp_path_factory.mktemp("limited")
    tokens = tmp / "tokens"
    tokens.write_text(f"{ALICE}\n{BOB}\n")
    (tmp / "logs").mkdir()
    env = {
        **FAST,
        "OBSMCP_AUTH_TOKEN_FILE": str(tokens),
        "OBSMCP_RATE_LIMIT_PER_CLIENT": "0.5",
        "OBSMCP_RATE_LIMIT_BURST": "3",
        "OBSMCP_MCP_MAX_BODY_BYTES": "4096",
    }
    srv = ServerProcess(tmp / "data", tmp / "logs", env).start()
    yield srv
    srv.stop()


def client(srv: ServerProcess, http: httpx2.AsyncClient) -> Client:
    return Client(streamable_http_client(srv.mcp_url, http_client=http))


@pytest.mark.slow
@pytest.mark.anyio
async def test_rate_limit_bites_per_client_says_when_to_retry_and_recovers(limited: ServerProcess) -> None:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret(ALICE)}"}, timeout=30) as a_http,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret(BOB)}"}, timeout=30) as b_http,
        client(limited, a_http) as alice,
        client(limited, b_http) as bob,
    ):
        # Ten calls in a row: however slow this machine, at most 3 + one per 2 s go through.
        results = [await alice.call_tool("list_metrics", {}) for _ in range(10)]
        refused = [r for r in results if r.is_error]
        assert refused and not results[0].is_error
        text = refused[0].content[0].text  # type: ignore[union-attr]
        assert "rate limit: alice may make 0.5 tool calls per second (bursts of 3)" in text
        wait = float(re.search(r"retry in ([\d.]+) s", text).group(1))  # type: ignore[union-attr]
        assert not (await bob.call_tool("list_metrics", {})).is_error  # bob has his own bucket
        time.sleep(wait)
        assert not (await alice.call_tool("list_metrics", {})).is_error
    lines = [json.loads(line) for line in (limited.data_dir / "audit.jsonl").read_text().splitlines()]
    outcomes = [(e["identity"], e["outcome"]) for e in lines]
    assert ("alice", "rate_limited") in outcomes and ("bob", "ok") in outcomes
    assert all(e["client"] == "127.0.0.1" and e["tool"] == "list_metrics" for e in lines)


@pytest.mark.slow
def test_request_body_over_the_cap_is_refused_with_413(limited: ServerProcess) -> None:
    headers = {**ACCEPT, "Authorization": f"Bearer {secret(ALICE)}"}
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "query_sql", "arguments": {}}}
    big["params"]["arguments"] = {"sql": "SELECT 1 -- " + "x" * 8000}  # type: ignore[index]
    r = httpx.post(limited.mcp_url, json=big, headers=headers, timeout=10)
    assert r.status_code == 413 and "OBSMCP_MCP_MAX_BODY_BYTES" in r.json()["error_description"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies to what arrives
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    r = httpx.post(limited.mcp_url, content=chunks(), headers=headers, timeout=10)
    assert r.status_code == 413
    assert secret(ALICE) not in limited.log_text()
