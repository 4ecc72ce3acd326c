"""The result contract through the MCP SDK client: truncation is signalled, pages do not overlap, budgets hold,
huge traces fold with counts, and metrics arithmetic is right."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from tests.conftest import TOOL_NAMES
from tests.factories import MS, logs_request, resource, span, traces_request

T0 = 1_763_683_200_000_000_000  # 2025-11-21T00:00:00Z
RANGE = {"start": format_ns(T0 - 3600 * 10**9), "end": format_ns(T0 + 3 * 3600 * 10**9)}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime.open(Settings(data_dir=tmp_path), in_memory=True)
    rng = random.Random(7)
    # 1,000 logs: 1 in 10 mention "timeout", 1 in 50 is an ERROR.
    records = [
        (T0 + i * 10**9, 17 if i % 50 == 0 else 9, f"request {i} {'timeout' if i % 10 == 0 else 'ok'}", b"")
        for i in range(1000)
    ]
    await rt.receiver.ingest("logs", logs_request("checkout-service", records), "protobuf")
    # One huge trace: a root with 500 identical DB calls (an N+1), one of them failing.
    tid = rng.randbytes(16)
    root = rng.randbytes(8)
    spans = [span(tid, root, b"", "GET /orders", T0, 600, kind=2)]
    for i in range(500):
        spans.append(
            span(
                tid,
                rng.randbytes(8),
                root,
                "SELECT orders",
                T0 + i * MS,
                1.0,
                kind=3,
                error="db timeout after 1000ms" if i == 250 else None,
            )
        )
    await rt.receiver.ingest("traces", traces_request({"orders-service": spans}), "protobuf")
    await rt.receiver.ingest("metrics", _metrics(), "protobuf")
    rt.ctx.huge_trace_id = tid.hex()  # type: ignore[attr-defined]
    yield rt
    rt.close()


def _metrics() -> bytes:
    """A cumulative counter growing 10/s and a cumulative histogram, sampled every 60 s for 10 minutes."""
    counter_points, hist_points = [], []
    for i in range(11):
        t = T0 + i * 60 * 10**9
        counter_points.append(metrics_pb2.NumberDataPoint(start_time_unix_nano=T0, time_unix_nano=t, as_int=600 * i))
        # Each minute adds 100 observations: 90 in (0, 0.1], 10 in (0.1, 1].
        hist_points.append(
            metrics_pb2.HistogramDataPoint(
                start_time_unix_nano=T0,
                time_unix_nano=t,
                count=100 * i,
                sum=14.5 * i,
                bucket_counts=[90 * i, 10 * i, 0],
                explicit_bounds=[0.1, 1.0],
            )
        )
    req = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource("checkout-service"),
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        metrics=[
                            metrics_pb2.Metric(
                                name="http.server.requests",
                                unit="1",
                                sum=metrics_pb2.Sum(
                                    data_points=counter_points, aggregation_temporality=2, is_monotonic=True
                                ),
                            ),
                            metrics_pb2.Metric(
                                name="http.server.request.duration",
                                unit="s",
                                histogram=metrics_pb2.Histogram(data_points=hist_points, aggregation_temporality=2),
                            ),
                        ]
                    )
                ],
            )
        ]
    )
    return bytes(req.SerializeToString())


async def _call(rt: Runtime, tool: str, **args: Any) -> tuple[str, dict[str, Any]]:
    async with Client(rt.mcp) as client:
        r = await client.call_tool(tool, args)
    text = r.content[0].text  # type: ignore[union-attr]
    assert not r.is_error, text
    assert r.structured_content is not None
    return text, r.structured_content


@pytest.mark.anyio
async def test_search_logs_reports_truncation_when_limit_is_hit_and_pages_do_not_overlap(store: Runtime) -> None:
    text, first = await _call(store, "search_logs", query="timeout", limit=40, **RANGE)
    assert first["total"] == 100 and first["returned"] == 40 and first["truncated"] is True
    assert first["next_cursor"] and "cursor=" in text
    assert first["by_severity"] == {"ERROR": 20, "INFO": 80}  # over the whole match, not the page
    seen = [rec["body"] for rec in first["logs"]]
    cursor = first["next_cursor"]
    while cursor:
        _, page = await _call(store, "search_logs", query="timeout", limit=40, cursor=cursor, **RANGE)
        seen += [rec["body"] for rec in page["logs"]]
        cursor = page["next_cursor"]
    assert len(seen) == 100 and len(set(seen)) == 100  # every match exactly once
    assert seen[0] == "request 990 timeout"  # newest first


@pytest.mark.anyio
async def test_answers_stay_within_the_token_budget_and_say_what_was_cut(store: Runtime) -> None:
    text, res = await _call(store, "search_logs", limit=500, max_tokens=600, **RANGE)
    assert len(text) / 4 <= 600 * 1.2
    assert res["truncated"] is True and res["returned"] < 500
    assert any("to stay within" in n for n in res["notes"])


@pytest.mark.anyio
async def test_huge_trace_folds_repeated_siblings_with_counts(store: Runtime) -> None:
    tid = store.ctx.huge_trace_id  # type: ignore[attr-defined]
    text, res = await _call(store, "get_trace", trace_id=tid)
    assert res["span_count"] == 501
    assert res["truncated"] is True
    folded = [s for s in res["spans"] if s["collapsed"]]
    assert folded and "more orders-service 'SELECT orders' siblings folded" in folded[0]["collapsed"]
    assert res["error_count"] == 1 and res["errors"][0]["type"] == "TimeoutError"
    assert any(s["error"] for s in res["spans"] if not s["collapsed"])  # the failing call stays visible
    assert len(text) / 4 <= 2000 * 1.2


@pytest.mark.anyio
async def test_query_metrics_computes_counter_rates_and_histogram_percentiles(store: Runtime) -> None:
    _, rate = await _call(
        store,
        "query_metrics",
        metric="http.server.requests",
        aggregation="rate",
        step="1m",
        start=format_ns(T0),
        end=format_ns(T0 + 600 * 10**9),
    )
    values = [p["v"] for p in rate["series"][0]["points"] if p["v"] is not None]
    assert values and all(v == pytest.approx(10.0) for v in values)
    _, p95 = await _call(
        store,
        "query_metrics",
        metric="http.server.request.duration",
        aggregation="p95",
        step="5m",
        start=format_ns(T0),
        end=format_ns(T0 + 600 * 10**9),
    )
    vals = [p["v"] for p in p95["series"][0]["points"] if p["v"] is not None]
    # 95th of 100 observations falls in (0.1, 1] at rank 95: 0.1 + 0.9 * (95 - 90) / 10 = 0.55
    assert vals and all(v == pytest.approx(0.55) for v in vals)


@pytest.mark.anyio
async def test_structured_content_matches_the_published_output_schema(store: Runtime) -> None:
    import jsonschema

    async with Client(store.mcp) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOL_NAMES
        for name, args in [
            ("list_services", RANGE),
            ("search_logs", RANGE),
            ("find_errors", RANGE),
            ("list_metrics", {}),
            ("search_traces", RANGE),
            ("investigate", RANGE),
            ("slo_report", RANGE),
            ("find_bottlenecks", RANGE),
            ("service_map", RANGE),
            ("log_patterns", RANGE),
            ("detect_anomalies", RANGE),
        ]:
            t = tools[name]
            assert t.annotations is not None and t.annotations.read_only_hint is True
            assert t.output_schema is not None
            r = await client.call_tool(name, args)
            assert not r.is_error, (name, r.content)
            jsonschema.validate(r.structured_content, t.output_schema)
            json.dumps(r.structured_content)
