"""slo_report: the SRE Workbook's burn-rate arithmetic exactly, SLIs counted from spans and metrics, SLOs as
code in the config file, and what an on-call engineer sees during a demo incident."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from obsmcp.analysis.slo import (
    EventCounts,
    alert_status,
    budget_consumed,
    burn_rate,
    evaluate,
    time_to_exhaustion_s,
)
from obsmcp.config import ConfigError, Settings, load_settings
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from obsmcp.tools.slo import compute_slo_report, latency_thresholds, slo_report
from tests.factories import resource, span, traces_request

DAY = 86400
WINDOW_30D = 30 * DAY
END = 1_763_683_200_000_000_000  # 2025-11-21T00:00:00Z
S = 10**9


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the workbook's arithmetic -----------------------------------------------------------------------------


def test_one_error_in_a_thousand_requests_burns_a_999_slo_at_exactly_one() -> None:
    # 99.9% over 1000 requests allows 1 error: that one error spends the whole budget, no more.
    ev = evaluate(99.9, WINDOW_30D, EventCounts(1000, 1), EventCounts(1000, 1, WINDOW_30D), {})
    assert burn_rate(EventCounts(1000, 1), 99.9) == 1.0
    assert ev.budget_consumed == 1.0 and ev.budget_remaining == 0.0
    assert ev.window_sli == 0.999 and ev.compliance == "met"
    over = evaluate(99.9, WINDOW_30D, EventCounts(1000, 2), EventCounts(1000, 2, WINDOW_30D), {})
    assert over.budget_consumed == 2.0 and over.compliance == "violated"


def test_workbook_budget_consumption_of_each_alert_window_over_30_days() -> None:
    assert budget_consumed(14.4, 3600, WINDOW_30D) == 0.02  # page: 1 h at 14.4 spends 2%
    assert budget_consumed(6, 6 * 3600, WINDOW_30D) == 0.05  # page: 6 h at 6 spends 5%
    assert budget_consumed(1, 3 * DAY, WINDOW_30D) == 0.10  # ticket: 3 d at 1 spends 10%


def test_time_to_exhaustion_is_30_days_at_burn_1_and_50_hours_at_14_4() -> None:
    assert time_to_exhaustion_s(1.0, 1.0, WINDOW_30D) == 30 * DAY
    assert time_to_exhaustion_s(1.0, 14.4, WINDOW_30D) == 50 * 3600
    assert time_to_exhaustion_s(1.0, 0.0, WINDOW_30D) is None  # not burning: never
    assert time_to_exhaustion_s(0.0, 2.0, WINDOW_30D) == 0.0  # already spent


def test_burn_rate_of_a_window_without_traffic_is_no_data_not_zero() -> None:
    assert burn_rate(EventCounts(0, 0), 99.9) is None
    assert burn_rate(EventCounts(500, 0), 99.9) == 0.0


@pytest.mark.parametrize(
    ("burns", "status", "fired"),
    [
        ({"1h": 15.0, "5m": 15.0}, "page", ["page: 1h and 5m burn > 14.4"]),
        ({"1h": 15.0, "5m": 10.0}, "ok", []),  # the short window has recovered: no page
        ({"1h": 10.0, "5m": 15.0}, "ok", []),  # a short spike alone does not page
        ({"1h": 14.4, "5m": 14.4}, "ok", []),  # the threshold itself does not fire (burn must exceed it)
        ({"6h": 6.5, "30m": 7.0}, "page", ["page: 6h and 30m burn > 6"]),
        ({"3d": 1.5, "6h": 1.2}, "ticket", ["ticket: 3d and 6h burn > 1"]),
        ({"3d": 1.5, "6h": 0.9}, "ok", []),
        ({}, "no data", []),
    ],
)
def test_multiwindow_multi_burn_rate_alert_table(burns: dict[str, float], status: str, fired: list[str]) -> None:
    got, firing, _ = alert_status(burns)
    assert got == status
    assert [r.describe() for r in firing] == fired


def test_a_few_bad_events_at_low_traffic_do_not_page() -> None:
    # 3 failures in 100 requests burn at 30x, but 3 events are below the low-traffic guard.
    burns = {"1h": 30.0, "5m": 30.0}
    status, firing, held = alert_status(burns, bad_events={"1h": 3}, min_bad_events=10)
    assert status == "ok" and not firing and [r.long_window for r in held] == ["1h"]


# -- counted from spans ------------------------------------------------------------------------------------


def _requests(
    rng: random.Random, times_ns: list[int], errors: set[int], slow: set[int], name: str = "POST /checkout"
) -> list[Any]:
    out = []
    for i, t in enumerate(times_ns):
        tid, sid = rng.randbytes(16), rng.randbytes(8)
        out.append(span(tid, sid, b"", name, t, 3000 if i in slow else 20, error="boom" if i in errors else None))
    return out


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Runtime]:
    """checkout-service: 1,000 requests in the hour before END, 15 failed (2 of 100 in the last 5 minutes),
    50 slower than 2 s; quiet-service: 20 requests two hours before END, none since."""
    rt = Runtime.open(Settings(data_dir=tmp_path), in_memory=True)
    rng = random.Random(3)
    older = _requests(rng, [END - 3600 * S + 3 * S * i for i in range(900)], set(range(13)), set(range(100, 150)))
    recent = _requests(rng, [END - 300 * S + 3 * S * i for i in range(100)], {0, 1}, set())
    quiet = _requests(rng, [END - 7200 * S + S * i for i in range(20)], set(), set(), "GET /")
    await rt.receiver.ingest(
        "traces", traces_request({"checkout-service": older + recent, "quiet-service": quiet}), "protobuf"
    )
    yield rt
    rt.close()


def _slo(report: Any, service: str, name: str) -> Any:
    svc = next(s for s in report.services if s.service == service)
    return next(s for s in svc.slos if s.name == name)


@pytest.mark.anyio
async def test_slo_report_counts_good_and_bad_requests_per_window_exactly(shop: Runtime) -> None:
    report = compute_slo_report(shop.ctx, None, "1h", format_ns(END))
    avail = _slo(report, "checkout-service", "availability")
    assert (avail.events_range, avail.bad_range, avail.sli_range_pct) == (1000, 15, 98.5)
    assert avail.burn_rates["5m"] == 20.0  # 2 of 100 = 2% against a 0.1% budget
    assert avail.burn_rates["1h"] == 15.0  # 15 of 1000
    assert avail.alert == "page" and avail.firing[0] == "page: 1h and 5m burn > 14.4"
    # One hour of data in a 30-day window at burn 15 spends 15/720 of the budget.
    assert avail.window_coverage_pct == round(100 / 720, 4)
    assert avail.budget_consumed_pct == round(100 * 15 / 720, 4)
    assert avail.time_to_exhaustion_s == (1 - 15 / 720) * WINDOW_30D / 15
    assert avail.compliance == "at risk"
    p95 = _slo(report, "checkout-service", "latency-p95")
    assert (p95.bad_range, p95.burn_rates["1h"], p95.burn_rates["5m"]) == (50, 1.0, 0.0)
    assert report.services[0].service == "checkout-service"  # worst first


@pytest.mark.anyio
async def test_a_service_without_traffic_in_a_window_has_no_burn_rate_there(shop: Runtime) -> None:
    report = compute_slo_report(shop.ctx, "quiet", "3h", format_ns(END))
    avail = _slo(report, "quiet-service", "availability")
    assert avail.burn_rates["5m"] is None and avail.burn_rates["1h"] is None
    assert avail.burn_rates["6h"] == 0.0 and avail.events_window == 20
    assert avail.time_to_exhaustion_s is None
    _, text = slo_report(shop.ctx, "quiet", "3h", format_ns(END))
    assert "burn 5m - 30m - 1h - 6h 0" in text


@pytest.mark.anyio
async def test_slo_report_through_the_mcp_client(shop: Runtime) -> None:
    async with Client(shop.mcp) as client:
        r = await client.call_tool("slo_report", {"service": "checkout", "start": "1h", "end": format_ns(END)})
        tools = {t.name: t for t in (await client.list_tools()).tools}
    text = r.content[0].text  # type: ignore[union-attr]
    assert not r.is_error, text
    assert r.structured_content is not None
    svc = r.structured_content["services"][0]
    assert svc["service"] == "checkout-service" and svc["alert"] == "page"
    assert "PAGE checkout-service" in text and "burn 5m 20 30m" in text
    assert "error_rate counts all the service's spans" in (tools["slo_report"].description or "")


# -- counted from metrics ----------------------------------------------------------------------------------


def _metric_request() -> bytes:
    """Cumulative, every minute for 10 minutes before END: a latency histogram (100 requests a minute, 90 at
    most 0.1 s) and a counter pair (100 requests, 99 good a minute)."""
    hist, total, good = [], [], []
    t0 = END - 600 * S
    for i in range(11):
        t = t0 + i * 60 * S
        hist.append(
            metrics_pb2.HistogramDataPoint(
                start_time_unix_nano=t0,
                time_unix_nano=t,
                count=100 * i,
                sum=14.5 * i,
                bucket_counts=[90 * i, 10 * i, 0],
                explicit_bounds=[0.1, 1.0],
            )
        )
        total.append(metrics_pb2.NumberDataPoint(start_time_unix_nano=t0, time_unix_nano=t, as_int=100 * i))
        good.append(metrics_pb2.NumberDataPoint(start_time_unix_nano=t0, time_unix_nano=t, as_int=99 * i))

    def counter(name: str, points: list[Any]) -> metrics_pb2.Metric:
        return metrics_pb2.Metric(
            name=name, sum=metrics_pb2.Sum(data_points=points, aggregation_temporality=2, is_monotonic=True)
        )

    metrics = [
        metrics_pb2.Metric(
            name="http.server.request.duration",
            unit="s",
            histogram=metrics_pb2.Histogram(data_points=hist, aggregation_temporality=2),
        ),
        counter("orders.total", total),
        counter("orders.good", good),
    ]
    req = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource("orders-service"), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=metrics)]
            )
        ]
    )
    return bytes(req.SerializeToString())


SLO_TOML = """
[[slos]]
name = "orders-fast"
service = "orders-service"
sli = "latency"
objective = 95
threshold_ms = 100
source = "metric"
metric = "http.server.request.duration"

[[slos]]
name = "orders-good"
service = "orders-service"
sli = "availability"
objective = 99.9
window = "7d"
source = "metric"
good_metric = "orders.good"
total_metric = "orders.total"

[[slos]]
name = "checkout-latency"
service = "checkout-service"
sli = "latency"
objective = 99
threshold_ms = 2500
operation = "POST /checkout"
"""


@pytest.mark.anyio
async def test_slos_from_the_config_file_replace_the_defaults_and_read_metrics(tmp_path: Path) -> None:
    config = tmp_path / "obsmcp.toml"
    config.write_text(SLO_TOML)
    settings = load_settings(config, data_dir=str(tmp_path / "data"))
    rt = Runtime.open(settings, in_memory=True)
    try:
        await rt.receiver.ingest("metrics", _metric_request(), "protobuf")
        report = compute_slo_report(rt.ctx, "orders", "1h", format_ns(END + S))
        fast = _slo(report, "orders-service", "orders-fast")
        # 1,000 requests, 100 slower than 100 ms: 10% bad against a 5% budget.
        assert (fast.events_range, fast.bad_range, fast.burn_rates["1h"]) == (1000, 100, 2.0)
        assert fast.defined_in == "config" and fast.source == "http.server.request.duration"
        good = _slo(report, "orders-service", "orders-good")
        assert (good.events_range, good.bad_range, good.burn_rates["1h"]) == (1000, 10, 10.0)
        assert good.window == "7d"
        assert [s.name for s in report.services[0].slos] != []  # no defaults mixed in:
        assert {s.name for s in report.services[0].slos} == {"orders-fast", "orders-good"}
        assert latency_thresholds(settings, "checkout-service") == [("checkout-latency: 99% < 2.50s", 2500.0)]
        assert latency_thresholds(settings, "other") == [
            ("latency-p95: 95% < 2.00s", 2000.0),
            ("latency-p99: 99% < 5.00s", 5000.0),
        ]
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('objective = 100.5\nsli = "availability"', ["SLO 'bad'", "objective", "above 0 and below 100"]),
        ('objective = 99\nsli = "speed"', ["SLO 'bad'", "sli", "'availability', 'latency' or 'error_rate'"]),
        ('objective = 99\nsli = "latency"', ["SLO 'bad'", "threshold_ms is required"]),
        ('objective = 99\nsli = "availability"\nwindow = "a month"', ["SLO 'bad'", "window", "e.g. '30d'"]),
        ('objective = 99\nsli = "availability"\nsource = "metric"', ["SLO 'bad'", "metric"]),
        ('objective = 99\nsli = "availability"\ncolour = "red"', ["SLO 'bad'", "unknown field 'colour'"]),
    ],
)
def test_an_invalid_slo_definition_names_the_slo_the_field_and_what_is_allowed(
    tmp_path: Path, entry: str, expected: list[str]
) -> None:
    config = tmp_path / "obsmcp.toml"
    config.write_text(f'[[slos]]\nname = "bad"\nservice = "checkout-service"\n{entry}\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config, data_dir=str(tmp_path))
    for part in expected:
        assert part in str(err.value)


def test_slos_can_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "OBSMCP_SLOS", '[{"name": "x", "service": "a", "sli": "latency", "objective": 99, "threshold_ms": 300}]'
    )
    settings = load_settings(None, data_dir=str(tmp_path))
    assert latency_thresholds(settings, "a") == [("x: 99% < 300ms", 300.0)]


# -- the demo shop -----------------------------------------------------------------------------------------


def test_latency_slos_burn_during_a_slow_database_incident(demo_store: Any) -> None:
    store = demo_store("dependency-latency")
    report = compute_slo_report(store.ctx)
    for service in ("payment-service", "checkout-service"):
        p95 = _slo(report, service, "latency-p95")
        assert p95.alert in ("page", "ticket"), p95
        assert p95.burn_rates["30m"] is not None and p95.burn_rates["30m"] > 1


def test_latency_slos_do_not_alert_without_an_incident(demo_store: Any) -> None:
    report = compute_slo_report(demo_store("none").ctx)
    assert report.services
    for svc in report.services:
        for slo in svc.slos:
            assert "1h and 5m" not in " ".join(slo.firing), slo  # nothing fast-burning
            if slo.sli == "latency":
                assert slo.alert == "ok", slo


def test_slo_report_fits_a_small_budget_and_says_what_it_left_out(demo_store: Any) -> None:
    store = demo_store("dependency-latency")
    res, text = slo_report(store.ctx, max_tokens=400)
    assert len(text) / 4 <= 400 * 1.2
    assert res.notes and res.returned >= 1
    assert res.truncated == (res.returned < res.total)
