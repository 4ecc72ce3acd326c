"""The token cost of the tool definitions an agent loads (issue 4: <= 5,000 tokens for the default set, measured
as characters/4 of the JSON tool list), and the compacted definitions still telling the truth: every tool's
real answer validates against its published output schema, and real arguments against its input schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import Client

from obsmcp.access import CATEGORIES, TOOL_DEFINITIONS_BUDGET, definitions_tokens
from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from tests.conftest import DEFAULT_TOOL_NAMES, TOOL_NAMES, WRITE_TOOL_NAMES, call_tool


async def listed_tools(tmp_path: Path, **settings: Any) -> list[Any]:
    rt = Runtime.open(Settings(data_dir=tmp_path, **settings), in_memory=True, for_agents=True)
    try:
        async with Client(rt.mcp) as client:
            return list((await client.list_tools()).tools)
    finally:
        rt.close()


@pytest.mark.anyio
async def test_default_tool_set_definitions_fit_the_token_budget(tmp_path: Path) -> None:
    default = await listed_tools(tmp_path)
    every = await listed_tools(tmp_path, tools=["all"])
    cost, cost_all = definitions_tokens(default), definitions_tokens(every)
    print(
        f"\ntool definitions (chars/4 of the JSON tool list): default set {len(default)} tools = {cost} tokens "
        f"(budget {TOOL_DEFINITIONS_BUDGET}); all {len(every)} tools = {cost_all} tokens"
    )
    assert cost <= TOOL_DEFINITIONS_BUDGET, (
        f"the default tool definitions cost {cost} tokens, over the {TOOL_DEFINITIONS_BUDGET} budget: shorten "
        "descriptions, or move a tool out of the default categories (obsmcp.access.DEFAULT_CATEGORIES)"
    )
    assert {t.name for t in default} == DEFAULT_TOOL_NAMES
    assert {t.name for t in every} == TOOL_NAMES


@pytest.mark.anyio
async def test_definitions_fit_the_budget_with_a_backend_of_every_signal_configured(tmp_path: Path) -> None:
    # Backends publish `backend` (and `promql`) arguments and the backend_status tool: still within budget.
    backends = [
        {"name": "dd", "kind": "datadog", "api_key": "a" * 32, "app_key": "b" * 40},
        {"name": "sentry", "kind": "sentry", "org": "acme", "token": "t" * 24},
        {"name": "prom", "kind": "prometheus", "url": "http://127.0.0.1:9"},
    ]
    tools = await listed_tools(tmp_path, backends=backends)
    cost = definitions_tokens(tools)
    print(f"\ntool definitions with datadog + sentry + prometheus configured: {len(tools)} tools = {cost} tokens")
    assert "backend_status" in {t.name for t in tools}
    assert cost <= TOOL_DEFINITIONS_BUDGET


def test_every_tool_belongs_to_a_category() -> None:
    categorized = [name for names in CATEGORIES.values() for name in names]
    assert sorted(categorized) == sorted(set(categorized)), "a tool is in two categories"
    assert set(categorized) == TOOL_NAMES | WRITE_TOOL_NAMES, "add new tools to obsmcp.access.CATEGORIES"


@pytest.mark.slow
def test_every_answer_validates_against_the_published_compacted_schemas(demo_store: Any) -> None:
    demo = demo_store("deploy-errors")  # generated with asyncio.run: outside the test's event loop
    anyio.run(answers_validate, demo)


async def answers_validate(demo: Any) -> None:
    async with Client(demo.runtime.mcp) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOL_NAMES

        async def answer(name: str, args: dict[str, Any]) -> dict[str, Any]:
            schema = tools[name].input_schema
            jsonschema.Draft202012Validator.check_schema(schema)
            jsonschema.validate(args, schema)
            r = await call_tool(client, name, args)
            output = tools[name].output_schema
            assert output is not None, name
            jsonschema.Draft202012Validator.check_schema(output)
            jsonschema.validate(r.structured_content, output)
            assert r.structured_content is not None
            return dict(r.structured_content)

        window = demo.window(2400)
        service = (await answer("list_services", window))["services"][0]["service"]
        trace_id = (await answer("search_traces", {**window, "status": "error"}))["traces"][0]["trace_id"]
        await answer("get_trace", {"trace_id": trace_id})
        metric = (await answer("list_metrics", {}))["metrics"][0]["name"]
        await answer("query_metrics", {**window, "metric": metric})
        error_id = (await answer("find_errors", window))["groups"][0]["error_id"]
        await answer("get_error_details", {"error_id": error_id, **window})
        await answer("search_logs", {**window, "service": service, "min_severity": "warn"})
        await answer("query_sql", {"sql": "SELECT count(*) AS n FROM otel_traces"})
        for name in ("investigate", "slo_report", "log_patterns", "find_bottlenecks", "service_map"):
            await answer(name, window)
        await answer("detect_anomalies", window)
        await answer("render_chart", {**window, "service": service, "kind": "red"})
