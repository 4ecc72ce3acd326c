"""service_map: caller -> callee edges from traces, with rate, error rate and p95; calls to databases and
third parties named from their attributes; one service's upstream and downstream; sampled estimates."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from obsmcp.tools import service_map as service_map_tool
from obsmcp.tools.service_map import compute_service_map, service_map
from tests.factories import MS, span, traces_request

T0 = 1_763_683_200_000_000_000  # 2025-11-21T00:00:00Z
WINDOW = {"start": format_ns(T0), "end": format_ns(T0 + 600 * 10**9)}  # 10 minutes
SERVER, CLIENT = 2, 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Runtime]:
    """60 requests: web -> api (every 10th fails in api), api -> postgres (leaf), api -> api.stripe.com (leaf).

    The web -> api client spans last 10, 11, ..., 69 ms, so their p95 is known exactly."""
    rt = Runtime.open(Settings(data_dir=tmp_path, retention_days=36500), in_memory=True)
    rng = random.Random(5)
    by: dict[str, list[Any]] = {"web": [], "api": []}
    for i in range(60):
        t = T0 + i * 10**9
        tid = rng.randbytes(16)
        root, call, server, query, pay = (rng.randbytes(8) for _ in range(5))
        dur = 10 + i
        by["web"] += [
            span(tid, root, b"", "GET /", t, dur + 2, kind=SERVER),
            span(tid, call, root, "GET", t + MS, dur, kind=CLIENT, attrs={"server.address": "api"}),
        ]
        by["api"] += [
            span(tid, server, call, "GET /items", t + MS, dur - 1, kind=SERVER, error="boom" if i % 10 == 0 else None),
            span(
                tid,
                query,
                server,
                "SELECT items",
                t + 2 * MS,
                3,
                kind=CLIENT,
                attrs={"db.system": "postgresql", "db.name": "shop", "server.address": "pg"},
            ),
            span(
                tid,
                pay,
                server,
                "POST",
                t + 6 * MS,
                2,
                kind=CLIENT,
                attrs={"server.address": "api.stripe.com", "url.full": "https://api.stripe.com/v1/charges"},
            ),
        ]
    await rt.receiver.ingest("traces", traces_request(by), "protobuf")
    yield rt
    rt.close()


def _edges(rep: Any) -> dict[tuple[str, str], Any]:
    return {(e.caller, e.callee): e for e in rep.edges}


@pytest.mark.anyio
async def test_edges_between_services_and_to_databases_and_third_parties(store: Runtime) -> None:
    rep = compute_service_map(store.ctx, **WINDOW)
    edges = _edges(rep)
    assert set(edges) == {("web", "api"), ("api", "postgresql/shop"), ("api", "api.stripe.com")}
    web_api = edges[("web", "api")]
    assert web_api.kind == "service" and web_api.calls == 60
    assert web_api.rate_per_s == pytest.approx(0.1)
    assert web_api.error_rate == pytest.approx(0.1)  # the callee's error counts for the edge
    # 95th of 10..69 ms is 67 ms (rank 57 of 60); histogram buckets are within ±2.2%.
    assert web_api.p95_ms == pytest.approx(67.0, rel=0.045)
    db = edges[("api", "postgresql/shop")]
    assert (db.kind, db.calls, db.error_rate, db.operations) == ("database", 60, 0.0, ["SELECT items"])
    assert db.p95_ms == pytest.approx(3.0, rel=0.045)
    stripe = edges[("api", "api.stripe.com")]
    assert (stripe.kind, stripe.calls, stripe.operations) == ("external", 60, ["POST"])
    assert rep.sample_every == 1 and not rep.notes


@pytest.mark.anyio
async def test_with_a_service_only_its_callers_and_callees_are_shown(store: Runtime) -> None:
    res, text = service_map(store.ctx, service="web", **WINDOW)
    assert [(e.caller, e.callee, e.direction) for e in res.edges] == [("web", "api", "downstream")]
    res, text = service_map(store.ctx, service="api", **WINDOW)
    assert {(e.caller, e.callee, e.direction) for e in res.edges} == {
        ("web", "api", "upstream"),
        ("api", "postgresql/shop", "downstream"),
        ("api", "api.stripe.com", "downstream"),
    }
    assert "callers of api:" in text and "api calls:" in text
    assert "web -> api: 0.1/s, 10.00% err, p95" in text


@pytest.mark.anyio
async def test_budget_cuts_quiet_edges_and_says_so(store: Runtime) -> None:
    res, text = service_map(store.ctx, max_tokens=200, **WINDOW)
    assert len(text) / 4 <= 200
    assert res.truncated is True and res.returned < res.total  # type: ignore[operator]
    assert any("not shown" in n for n in res.notes)


@pytest.mark.anyio
async def test_service_map_through_the_mcp_client(store: Runtime) -> None:
    async with Client(store.mcp) as client:
        r = await client.call_tool("service_map", WINDOW)
    text = r.content[0].text  # type: ignore[union-attr]
    assert not r.is_error, text
    assert r.structured_content is not None
    assert {(e["caller"], e["callee"]) for e in r.structured_content["edges"]} == {
        ("web", "api"),
        ("api", "postgresql/shop"),
        ("api", "api.stripe.com"),
    }
    assert "api -> postgresql/shop [database]" in text


def test_demo_map_shows_the_checkout_chain_and_the_payment_database_slowdown(demo_store: Any) -> None:
    ds = demo_store("dependency-latency")
    rep = compute_service_map(ds.ctx, **ds.window(), baseline="20m")
    edges = _edges(rep)
    for caller, callee in [
        ("frontend", "api-gateway"),
        ("api-gateway", "checkout-service"),
        ("checkout-service", "payment-service"),
    ]:
        e = edges[(caller, callee)]
        assert e.kind == "service" and e.rate_per_s > 0 and e.p95_ms is not None
    # The slow payment database drives checkout's calls into timeouts: errors up against the baseline.
    pay = edges[("checkout-service", "payment-service")]
    assert pay.error_rate > 0 and pay.baseline_error_rate is not None and pay.error_rate > pay.baseline_error_rate
    db = edges[("payment-service", "postgresql/payments")]
    assert db.kind == "database"
    assert db.p95_ms is not None and db.baseline_p95_ms is not None and db.p95_ms > 20 * db.baseline_p95_ms


def test_large_windows_are_sampled_by_trace_id_and_labelled_as_estimates(
    demo_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = demo_store("dependency-latency")
    exact = _edges(compute_service_map(ds.ctx, **ds.window(before_incident_s=2400)))
    monkeypatch.setattr(service_map_tool, "EXACT_MAX_CALLS", 5000)  # 28k calls: 1/16
    rep = compute_service_map(ds.ctx, **ds.window(before_incident_s=2400))
    assert rep.sample_every == 16
    assert rep.notes and "estimates" in rep.notes[0]
    sampled = _edges(rep)
    busy = exact[("frontend", "api-gateway")]
    assert sampled[("frontend", "api-gateway")].calls == pytest.approx(busy.calls, rel=0.25)
    res, text = service_map(ds.ctx, **ds.window(before_incident_s=2400))
    assert res.sampled == "1/16 of traces" and "(estimates)" in text
