"""find_bottlenecks: critical paths of slow requests aggregated across traces, compared with a baseline,
N+1 calls and serial calls; exact figures on small hand-built traces, and the demo's injected incident."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from obsmcp.analysis.bottlenecks import statement_shape
from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from obsmcp.tools.bottlenecks import compute_bottlenecks, find_bottlenecks, resolve_baseline
from obsmcp.tools.context import ToolInputError
from tests.factories import MS, span, traces_request

T0 = 1_763_683_200_000_000_000  # 2025-11-21T00:00:00Z
MIN = 60 * 10**9
# The current window is [T0, T0 + 30 min); the default baseline is the 30 minutes before it.
WINDOW = {"start": format_ns(T0), "end": format_ns(T0 + 30 * MIN)}
SERVER, CLIENT = 2, 3
PG = {"db.system": "postgresql", "db.name": "shop"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _page_trace(rng: random.Random, t: int, select_ms: float) -> dict[str, list[Any]]:
    """frontend GET /page -> api GET /data -> SELECT items: the SELECT dominates the critical path.

    Timeline (ms): page [0, 40 + select]; client GET [5, 35 + select]; api server [10, 30 + select];
    SELECT [20, 20 + select]. Critical path: page 10, client 10, api 20, SELECT select_ms."""
    tid = rng.randbytes(16)
    root, call, server, query = (rng.randbytes(8) for _ in range(4))
    return {
        "frontend": [
            span(tid, root, b"", "GET /page", t, 40 + select_ms, kind=SERVER),
            span(tid, call, root, "GET", t + 5 * MS, 30 + select_ms, kind=CLIENT, attrs={"server.address": "api"}),
        ],
        "api": [
            span(tid, server, call, "GET /data", t + 10 * MS, 20 + select_ms, kind=SERVER),
            span(
                tid,
                query,
                server,
                "SELECT items",
                t + 20 * MS,
                select_ms,
                kind=CLIENT,
                attrs={**PG, "db.statement": "SELECT * FROM items WHERE id = 1"},
            ),
        ],
    }


def _n_plus_one_trace(rng: random.Random, t: int) -> dict[str, list[Any]]:
    """orders-service GET /orders runs 30 identical SELECTs one after another (1 ms each, 0.2 ms apart)."""
    tid = rng.randbytes(16)
    root = rng.randbytes(8)
    spans = [span(tid, root, b"", "GET /orders", t, 40, kind=SERVER)]
    for i in range(30):
        spans.append(
            span(
                tid,
                rng.randbytes(8),
                root,
                "SELECT orders",
                t + 2 * MS + int(i * 1.2 * MS),
                1.0,
                kind=CLIENT,
                attrs={**PG, "db.statement": f"SELECT * FROM orders WHERE id = {1000 + i}"},
            )
        )
    return {"orders-service": spans}


def _serial_trace(rng: random.Random, t: int) -> dict[str, list[Any]]:
    """checkout POST /checkout [0, 100] calls cart [5, 45], then payment [50, 95]: independent calls in series."""
    tid = rng.randbytes(16)
    root, c1, s1, c2, s2 = (rng.randbytes(8) for _ in range(5))
    return {
        "checkout": [
            span(tid, root, b"", "POST /checkout", t, 100, kind=SERVER),
            span(tid, c1, root, "GET", t + 5 * MS, 40, kind=CLIENT),
            span(tid, c2, root, "POST", t + 50 * MS, 45, kind=CLIENT),
        ],
        "cart": [span(tid, s1, c1, "GET /cart", t + 6 * MS, 38, kind=SERVER)],
        "payment": [span(tid, s2, c2, "POST /payments", t + 51 * MS, 43, kind=SERVER)],
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime.open(Settings(data_dir=tmp_path, retention_days=36500), in_memory=True)
    rng = random.Random(11)
    batches: dict[str, list[Any]] = {}

    def add(parts: dict[str, list[Any]]) -> None:
        for svc, spans in parts.items():
            batches.setdefault(svc, []).extend(spans)

    for i in range(10):
        add(_page_trace(rng, T0 - 20 * MIN + i * 10**9, select_ms=10))  # baseline: SELECT takes 10 ms
        add(_page_trace(rng, T0 + 5 * MIN + i * 10**9, select_ms=60))  # now: 60 ms
        add(_n_plus_one_trace(rng, T0 + 6 * MIN + i * 10**9))
        add(_serial_trace(rng, T0 + 7 * MIN + i * 10**9))
    await rt.receiver.ingest("traces", traces_request(batches), "protobuf")
    yield rt
    rt.close()


@pytest.mark.anyio
async def test_the_dominant_child_ranks_first_with_exact_shares_and_its_change_against_the_baseline(
    store: Runtime,
) -> None:
    rep = compute_bottlenecks(store.ctx, service="frontend", **WINDOW)
    assert rep.current.requests == 10 and rep.analysis.requests == 10
    assert rep.analysis.ms_per_request == pytest.approx(100.0)  # 40 + 60 ms per request
    top = rep.analysis.contributors
    assert [(c.service, c.operation) for c in top] == [
        ("api", "SELECT items"),
        ("api", "GET /data"),
        ("frontend", "GET -> api"),  # a generic client span is named after its callee
        ("frontend", "GET /page"),
    ]
    assert [round(c.share, 3) for c in top] == [0.6, 0.2, 0.1, 0.1]
    assert top[0].ms_per_request == pytest.approx(60.0) and top[0].requests == 10
    # Baseline: the same requests 20 minutes earlier, when the SELECT took 10 ms: +500%.
    assert rep.baseline is not None and rep.baseline.requests == 10
    assert top[0].baseline_ms_per_request == pytest.approx(10.0)
    assert top[0].change_pct == pytest.approx(500.0)
    assert top[1].change_pct == pytest.approx(0.0)


@pytest.mark.anyio
async def test_n_plus_one_reports_the_repeated_call_its_count_and_statement_shape(store: Runtime) -> None:
    res, text = find_bottlenecks(store.ctx, service="orders", **WINDOW)
    assert len(res.n_plus_one) == 1
    f = res.n_plus_one[0]
    assert (f.parent_service, f.parent_operation, f.service, f.operation) == (
        "orders-service",
        "GET /orders",
        "orders-service",
        "SELECT orders",
    )
    assert f.requests == 10 and f.mean_calls == 30 and f.max_calls == 30
    assert f.ms_per_occurrence == pytest.approx(30.0)
    assert f.share_of_parent == pytest.approx(0.75)
    assert f.statement == "SELECT * FROM orders WHERE id = ?"
    assert "30x (max 30) orders-service SELECT orders" in text
    assert "SELECT * FROM orders WHERE id = ?" in text


@pytest.mark.anyio
async def test_serial_calls_to_different_downstreams_are_found_with_the_time_they_would_save(store: Runtime) -> None:
    res, text = find_bottlenecks(store.ctx, service="checkout", **WINDOW)
    assert len(res.serial_calls) == 1
    s = res.serial_calls[0]
    assert s.parent_operation == "POST /checkout"
    assert s.calls == ["GET -> cart", "POST -> payment"]
    assert s.requests == 10
    assert s.mean_total_ms == pytest.approx(85.0)
    assert s.mean_saving_ms == pytest.approx(40.0)  # 85 ms in series, 45 ms concurrently
    assert "~40.0ms to save" in text
    assert not res.n_plus_one


@pytest.mark.anyio
async def test_without_a_service_the_system_entry_requests_are_analysed(store: Runtime) -> None:
    res, _ = find_bottlenecks(store.ctx, **WINDOW)
    assert res.entry.startswith("entry requests (root server spans")
    assert res.requests == 30  # page, orders and checkout roots in the window
    # p90 of 10x100 ms, 10x40 ms, 10x100 ms is 100 ms: the page and checkout requests are the slow ones.
    assert res.p90_ms == pytest.approx(100.0)
    assert res.slow_requests == 20


@pytest.mark.anyio
async def test_budget_degrades_to_fewer_items_and_says_so(store: Runtime) -> None:
    res, text = find_bottlenecks(store.ctx, service="frontend", max_tokens=270, **WINDOW)
    assert len(text) / 4 <= 270
    assert res.truncated is True
    assert any("not shown" in n for n in res.notes)
    assert len(res.contributors) < res.total  # type: ignore[operator]


def test_baseline_accepts_a_length_an_explicit_window_or_none() -> None:
    from obsmcp.timerange import TimeRange

    tr = TimeRange(T0, T0 + 30 * MIN)
    assert resolve_baseline(None, tr, default_on=True) == TimeRange(T0 - 30 * MIN, T0)
    assert resolve_baseline("2h", tr, default_on=True) == TimeRange(T0 - 120 * MIN, T0)
    explicit = resolve_baseline(f"{format_ns(T0 - 60 * MIN)}/{format_ns(T0 - 50 * MIN)}", tr, default_on=True)
    assert explicit == TimeRange(T0 - 60 * MIN, T0 - 50 * MIN)
    assert resolve_baseline("none", tr, default_on=True) is None
    with pytest.raises(ToolInputError, match="not a window"):
        resolve_baseline("yesterday", tr, default_on=True)


def test_statement_shape_replaces_literals() -> None:
    assert statement_shape("SELECT * FROM t WHERE a = 'x''y' AND b IN (1, 2, 3) AND c = 4.5") == (
        "SELECT * FROM t WHERE a = ? AND b IN (?...) AND c = ?"
    )
    assert statement_shape("SELECT v2 FROM t1 WHERE id = $1") == "SELECT v2 FROM t1 WHERE id = $1"


def test_demo_dependency_latency_puts_payment_service_first_under_checkout(demo_store: Any) -> None:
    ds = demo_store("dependency-latency")
    # The incident window; the default baseline is the same length just before it.
    rep = compute_bottlenecks(ds.ctx, service="checkout", **ds.window())
    top = rep.analysis.contributors
    assert top[0].service == "payment-service"
    payment_db = [c for c in top[:3] if c.service == "payment-service" and "payments" in c.operation]
    assert payment_db, [(c.service, c.operation) for c in top[:5]]
    assert payment_db[0].change_pct is not None and payment_db[0].change_pct > 1000
    assert sum(c.share for c in top if c.service == "payment-service") > 0.5


@pytest.mark.anyio
async def test_find_bottlenecks_through_the_mcp_client(store: Runtime) -> None:
    async with Client(store.mcp) as client:
        r = await client.call_tool("find_bottlenecks", {"service": "frontend", **WINDOW})
    text = r.content[0].text  # type: ignore[union-attr]
    assert not r.is_error, text
    assert r.structured_content is not None
    assert r.structured_content["contributors"][0]["operation"] == "SELECT items"
    assert "api SELECT items: 60.0% | 60.0ms | 10/10 | baseline 10.0ms -> +500%" in text
    assert len(text) / 4 <= 2000


@pytest.mark.anyio
async def test_no_matching_requests_says_what_to_try_and_unknown_services_fail_with_suggestions(
    store: Runtime,
) -> None:
    res, text = find_bottlenecks(store.ctx, service="frontend", operation="no-such-route", **WINDOW)
    assert res.requests == 0 and res.contributors == []
    assert "no such requests in range" in text
    async with Client(store.mcp) as client:
        r = await client.call_tool("find_bottlenecks", {"service": "frontnd", **WINDOW})
    assert r.is_error
    assert "did you mean frontend" in r.content[0].text  # type: ignore[union-attr]


def test_busy_windows_sample_from_evenly_spaced_slices_and_fall_back_when_they_hold_too_few(
    demo_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from obsmcp.timerange import resolve_range
    from obsmcp.tools import bottlenecks

    ds = demo_store("dependency-latency")
    tr = resolve_range(**ds.window(before_incident_s=2400))  # the whole hour, ~360 slow requests
    entries = bottlenecks.entry_filters(ds.ctx, None, tr)
    monkeypatch.setattr(bottlenecks, "SLICE_OVERSAMPLE", 1)
    sel = bottlenecks.select_slow(ds.ctx, entries, None, tr, limit=50)
    assert len(sel.slices) == 12 and sel.slow_estimated
    assert 25 <= len(sel.sampled) <= 50
    assert all(any(lo <= t0 < hi for lo, hi in sel.slices) for _, _, t0, _ in sel.sampled)
    assert len(bottlenecks.load_requests(ds.ctx, sel).requests) == len(sel.sampled)
    # Slices expected to hold too few slow requests: the whole range is sampled instead, and counted exactly.
    monkeypatch.setattr(bottlenecks, "SLICE_OVERSAMPLE", 0.1)
    sel = bottlenecks.select_slow(ds.ctx, entries, None, tr, limit=200)
    assert sel.slices == [(tr.start_ns, tr.end_ns)] and not sel.slow_estimated
    assert len(sel.sampled) == 200 and sel.slow > 200
