"""End to end with real components: the OpenTelemetry Python SDK exports over OTLP/HTTP to a running
`obsmcp serve --http`, and every MCP tool reads the telemetry back through the MCP SDK client.

The scenario is a small shop: `checkout-service` takes POST /checkout (SERVER) and calls `payment-service`
(CLIENT -> SERVER, trace context propagated through W3C headers) and `GET /inventory` in parallel. Four
checkouts; the last one fails: payment raises CardDeclinedError (recorded exception, ERROR status), logs an
ERROR, and the failure propagates up to the root. Metrics: a counter, a histogram and an observable gauge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from opentelemetry import propagate
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from tests.conftest import DEFAULT_TOOL_NAMES, ServerProcess, call_tool, call_tool_error

pytestmark = pytest.mark.slow

MS = 1_000_000
CHECKOUT = "checkout-service"
PAYMENT = "payment-service"
ERROR_LOG = "payment declined for order 8812: card expired"


class CardDeclinedError(RuntimeError):
    pass


def charge_card(order_id: str) -> None:
    raise CardDeclinedError(f"card expired for order {order_id}")


@dataclass
class Emitted:
    """What the SDK sent, to compare with what the tools give back."""

    server: ServerProcess
    failed_trace_id: str = ""
    ok_trace_ids: list[str] = field(default_factory=list)
    span_ids: dict[str, str] = field(default_factory=dict)


def _providers(service: str, version: str, otlp: str) -> tuple[TracerProvider, LoggerProvider, MeterProvider]:
    resource = Resource.create({"service.name": service, "service.version": version, "deployment.environment": "test"})
    tp = TracerProvider(resource=resource)
    # Traces go gzip-compressed, logs and metrics plain: both paths of the receiver are exercised.
    tp.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/v1/traces", compression=Compression.Gzip))
    )
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{otlp}/v1/logs")))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otlp}/v1/metrics"), export_interval_millis=3_600_000
    )
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    return tp, lp, mp


def _emit(server: ServerProcess) -> Emitted:
    out = Emitted(server)
    otlp = server.otlp_url
    c_tp, c_lp, c_mp = _providers(CHECKOUT, "1.4.2", otlp)
    p_tp, p_lp, p_mp = _providers(PAYMENT, "2.0.1", otlp)
    c_tracer, p_tracer = c_tp.get_tracer("shop.checkout"), p_tp.get_tracer("shop.payment")
    c_log, p_log = c_lp.get_logger("shop.checkout"), p_lp.get_logger("shop.payment")
    meter = c_mp.get_meter("shop.checkout")
    orders = meter.create_counter("shop.orders", unit="{order}", description="orders placed")
    latency = meter.create_histogram("shop.checkout.duration", unit="ms", description="checkout latency")

    def queue_depth(_options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(7, {"queue": "payments"})

    meter.create_observable_gauge("shop.queue.depth", callbacks=[queue_depth], unit="{job}")

    base = time.time_ns() - 120_000 * MS  # two minutes ago: well inside every tool's default hour
    for i, order in enumerate(("8809", "8810", "8811", "8812")):
        fail = order == "8812"
        t0 = base + i * 5_000 * MS
        root = c_tracer.start_span(
            "POST /checkout",
            kind=SpanKind.SERVER,
            start_time=t0,
            attributes={"http.route": "/checkout", "order.id": order},
        )
        root_ctx = set_span_in_context(root)
        c_log.emit(
            body=f"checkout started for order {order}",
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            context=root_ctx,
            attributes={"order.id": order},
        )
        # Payment call: CLIENT in checkout, SERVER in payment, context carried in W3C headers.
        client = c_tracer.start_span("POST /charge", kind=SpanKind.CLIENT, context=root_ctx, start_time=t0 + 10 * MS)
        headers: dict[str, str] = {}
        propagate.inject(headers, context=set_span_in_context(client))
        assert "traceparent" in headers
        remote_ctx = propagate.extract(headers)
        pay = p_tracer.start_span(
            "POST /charge",
            kind=SpanKind.SERVER,
            context=remote_ctx,
            start_time=t0 + 15 * MS,
            attributes={"http.route": "/charge"},
        )
        # Inventory runs in parallel with the payment call and ends long before it: not critical.
        inv = c_tracer.start_span("GET /inventory", kind=SpanKind.CLIENT, context=root_ctx, start_time=t0 + 20 * MS)
        inv.end(end_time=t0 + 60 * MS)
        if fail:
            try:
                charge_card(order)
            except CardDeclinedError as e:
                pay.record_exception(e)
                pay.set_status(Status(StatusCode.ERROR, str(e)))
            p_log.emit(
                body=ERROR_LOG,
                severity_number=SeverityNumber.ERROR,
                severity_text="ERROR",
                context=set_span_in_context(pay),
                timestamp=t0 + 200 * MS,
                attributes={"order.id": order},
            )
            client.set_status(Status(StatusCode.ERROR, "payment failed: 402"))
            root.set_status(Status(StatusCode.ERROR, "checkout failed"))
        else:
            p_log.emit(
                body=f"payment authorized for order {order}",
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                context=set_span_in_context(pay),
            )
        pay.end(end_time=t0 + 245 * MS)
        client.end(end_time=t0 + 250 * MS)
        root.end(end_time=t0 + 300 * MS)
        tid = format(root.get_span_context().trace_id, "032x")
        if fail:
            out.failed_trace_id = tid
            for name, span in (("root", root), ("client", client), ("pay", pay), ("inventory", inv)):
                out.span_ids[name] = format(span.get_span_context().span_id, "016x")
        else:
            out.ok_trace_ids.append(tid)
        orders.add(1, {"outcome": "error" if fail else "ok"})
        latency.record(150 + i)

    # Two metric exports: cumulative counters and histograms need two points to give a rate or a
    # percentile of what happened in between.
    assert c_mp.force_flush(10_000)
    orders.add(30, {"outcome": "ok"})
    for _ in range(40):
        latency.record(180.0)
    for provider in (c_tp, p_tp, c_lp, p_lp):
        assert provider.force_flush(10_000), f"{provider} did not flush"
    assert c_mp.force_flush(10_000)
    for provider in (c_tp, p_tp, c_lp, p_lp, c_mp, p_mp):
        provider.shutdown()
    return out


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emitted]:
    tmp = tmp_path_factory.mktemp("e2e")
    srv = ServerProcess(tmp / "data", tmp)
    srv.start()
    try:
        yield _emit(srv)
    finally:
        srv.stop()


@pytest.fixture
async def client(shop: Emitted) -> Any:
    async with Client(shop.server.mcp_url) as c:
        yield c


def _by_service(result: Any) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in result.structured_content["services"]}


@pytest.mark.anyio
async def test_tools_are_read_only_and_publish_output_schemas(client: Any) -> None:
    tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == DEFAULT_TOOL_NAMES
    for t in tools:
        assert t.annotations is not None and t.annotations.read_only_hint is True, f"{t.name} not read-only"
        # MCP: destructiveHint only means something when readOnlyHint is false; it is left out to save tokens.
        assert t.annotations.destructive_hint is not True, t.name
        assert t.output_schema and t.output_schema.get("properties"), f"{t.name} has no output schema"
        assert t.description, t.name


@pytest.mark.anyio
async def test_list_services_shows_both_services_with_red_figures(client: Any) -> None:
    r = await call_tool(client, "list_services")
    services = _by_service(r)
    assert {CHECKOUT, PAYMENT} <= set(services), r.content[0].text
    for name in (CHECKOUT, PAYMENT):
        s = services[name]
        assert s["requests"] == 4, s  # four entry (SERVER) spans each
        assert s["error_rate"] == pytest.approx(0.25), s
        assert set(s["signals"]) >= {"traces", "logs"}, s
        assert s["p95_ms"] is not None and s["p95_ms"] > 200, s
    assert services[CHECKOUT]["versions"] == ["1.4.2"]
    assert "metrics" in services[CHECKOUT]["signals"]
    assert services[PAYMENT]["error_logs"] == 1
    text = r.content[0].text
    assert CHECKOUT in text and PAYMENT in text and "25.00% err" in text


@pytest.mark.anyio
async def test_search_logs_by_substring_regex_severity_and_trace(client: Any, shop: Emitted) -> None:
    r = await call_tool(client, "search_logs", {"query": "DECLINED for order"})  # case-insensitive substring
    sc = r.structured_content
    assert sc["total"] == 1 and sc["logs"][0]["body"] == ERROR_LOG, sc
    assert sc["logs"][0]["service"] == PAYMENT
    assert sc["logs"][0]["trace_id"] == shop.failed_trace_id
    assert sc["logs"][0]["span_id"] == shop.span_ids["pay"]
    assert ERROR_LOG in r.content[0].text

    r = await call_tool(client, "search_logs", {"query": r"order 88(09|10) *$", "regex": True})
    bodies = sorted(log["body"] for log in r.structured_content["logs"])
    assert bodies == [
        "checkout started for order 8809",
        "checkout started for order 8810",
        "payment authorized for order 8809",
        "payment authorized for order 8810",
    ], bodies

    r = await call_tool(client, "search_logs", {"query": "order"})
    by_sev = r.structured_content["by_severity"]
    assert by_sev.get("ERROR") == 1 and by_sev.get("INFO") == 7, by_sev
    assert r.structured_content["total"] == 8

    # LIKE wildcards in the query are literal characters: "881_" matches nothing here.
    r = await call_tool(client, "search_logs", {"query": "order 881_"})
    assert r.structured_content["total"] == 0, r.structured_content

    r = await call_tool(client, "search_logs", {"min_severity": "error"})
    assert [log["body"] for log in r.structured_content["logs"]] == [ERROR_LOG]

    r = await call_tool(client, "search_logs", {"trace_id": shop.failed_trace_id.upper()})
    bodies = sorted(log["body"] for log in r.structured_content["logs"])
    assert bodies == ["checkout started for order 8812", ERROR_LOG], bodies

    r = await call_tool(client, "search_logs", {"service": "payment", "query": "order"})  # partial name
    assert {log["service"] for log in r.structured_content["logs"]} == {PAYMENT}
    assert r.structured_content["total"] == 4


@pytest.mark.anyio
async def test_search_traces_by_service_operation_and_status(client: Any, shop: Emitted) -> None:
    r = await call_tool(client, "search_traces", {"service": PAYMENT, "operation": "charge"})
    ids = {t["trace_id"] for t in r.structured_content["traces"]}
    assert ids == {shop.failed_trace_id, *shop.ok_trace_ids}, r.content[0].text

    r = await call_tool(client, "search_traces", {"status": "error"})
    sc = r.structured_content
    assert sc["total"] == 1 and [t["trace_id"] for t in sc["traces"]] == [shop.failed_trace_id], sc
    t = sc["traces"][0]
    assert t["root"] == f"{CHECKOUT} POST /checkout"
    assert t["spans"] == 4 and t["errors"] == 3, t
    assert set(t["services"]) == {CHECKOUT, PAYMENT}
    assert t["duration_ms"] == pytest.approx(300, abs=1)
    assert shop.failed_trace_id in r.content[0].text

    r = await call_tool(client, "search_traces", {"min_duration_ms": 290, "operation": "/checkout"})
    assert r.structured_content["total"] == 4
    r = await call_tool(client, "search_traces", {"operation": "no-such-operation"})
    assert r.structured_content["total"] == 0 and r.structured_content["traces"] == []


@pytest.mark.anyio
async def test_get_trace_shows_tree_critical_path_and_exception(client: Any, shop: Emitted) -> None:
    r = await call_tool(client, "get_trace", {"trace_id": shop.failed_trace_id})
    sc = r.structured_content
    assert sc["span_count"] == 4 and sc["error_count"] == 3
    assert set(sc["services"]) == {CHECKOUT, PAYMENT}
    spans = {s["span_id"]: s for s in sc["spans"]}
    root, cl, pay, inv = (spans[shop.span_ids[k]] for k in ("root", "client", "pay", "inventory"))
    # The tree: payment's SERVER span hangs under checkout's CLIENT span, across services.
    assert (root["depth"], cl["depth"], pay["depth"], inv["depth"]) == (0, 1, 2, 1)
    assert pay["parent_id"] == shop.span_ids["client"] and cl["parent_id"] == shop.span_ids["root"]
    assert pay["service"] == PAYMENT and pay["kind"].lower() == "server"
    # Critical path: root -> charge -> payment; the parallel inventory call is not on it.
    assert root["critical"] and cl["critical"] and pay["critical"]
    assert not inv["critical"]
    assert "CardDeclinedError" in (pay["error"] or "")
    errors = sc["errors"]
    assert len(errors) == 1 and errors[0]["type"].endswith("CardDeclinedError"), errors
    assert "card expired for order 8812" in errors[0]["message"]
    assert "charge_card" in errors[0]["stacktrace"]
    text = r.content[0].text
    charge_line = next(line for line in text.splitlines() if f"{PAYMENT} POST /charge" in line)
    assert charge_line.startswith("*"), text
    inv_line = next(line for line in text.splitlines() if "GET /inventory" in line)
    assert not inv_line.startswith("*"), text
    assert "CardDeclinedError" in text


@pytest.mark.anyio
async def test_list_metrics_shows_types(client: Any) -> None:
    r = await call_tool(client, "list_metrics", {"filter": "shop."})
    metrics = {m["name"]: m for m in r.structured_content["metrics"]}
    assert metrics["shop.orders"]["type"] == "sum"
    assert metrics["shop.checkout.duration"]["type"] == "histogram"
    assert metrics["shop.queue.depth"]["type"] == "gauge"
    assert metrics["shop.checkout.duration"]["unit"] == "ms"
    assert metrics["shop.orders"]["services"] == [CHECKOUT]
    assert "outcome" in metrics["shop.orders"]["attribute_keys"]
    text = r.content[0].text
    assert "shop.orders (sum)" in text and "shop.checkout.duration (histogram)" in text


def _values(result: Any) -> list[float]:
    return [p["v"] for s in result.structured_content["series"] for p in s["points"] if p["v"] is not None]


@pytest.mark.anyio
async def test_query_metrics_rate_p95_and_avg(client: Any) -> None:
    r = await call_tool(client, "query_metrics", {"metric": "shop.orders", "service": "checkout"})
    sc = r.structured_content
    assert sc["type"] == "sum" and sc["aggregation"] == "rate", sc
    assert sc["series"], r.content[0].text
    # 30 orders were counted between the two exports: rate x step adds back up to 30.
    assert sum(_values(r)) * sc["step_s"] == pytest.approx(30), r.content[0].text

    r = await call_tool(
        client, "query_metrics", {"metric": "shop.orders", "group_by": ["outcome"], "aggregation": "increase"}
    )
    by_outcome = {s["labels"]["outcome"]: s for s in r.structured_content["series"]}
    assert sum(p["v"] or 0 for p in by_outcome["ok"]["points"]) == pytest.approx(30)

    r = await call_tool(client, "query_metrics", {"metric": "shop.checkout.duration"})
    sc = r.structured_content
    assert sc["type"] == "histogram" and sc["aggregation"] == "p95", sc
    vals = _values(r)
    assert vals, r.content[0].text
    # 40 observations of 180 ms fall in the default (100, 250] bucket.
    assert all(100 < v <= 250 for v in vals), vals

    r = await call_tool(client, "query_metrics", {"metric": "shop.queue.depth"})
    sc = r.structured_content
    assert sc["type"] == "gauge" and sc["aggregation"] == "avg", sc
    assert _values(r) and all(v == 7 for v in _values(r)), r.content[0].text

    err = await call_tool_error(client, "query_metrics", {"metric": "shop.queue.depth", "aggregation": "p95"})
    assert "histogram" in err


@pytest.mark.anyio
async def test_find_errors_and_get_error_details(client: Any, shop: Emitted) -> None:
    r = await call_tool(client, "find_errors", {"service": "payment"})
    groups = r.structured_content["groups"]
    exc = [g for g in groups if g["kind"] == "exception"]
    assert len(exc) == 1, groups
    g = exc[0]
    assert g["type"].endswith("CardDeclinedError") and g["count"] == 1
    assert g["services"] == [PAYMENT]
    assert g["sample_trace_ids"] == [shop.failed_trace_id]
    assert "charge_card" in g["top_frame"], g
    assert "CardDeclinedError" in r.content[0].text
    logs = [g for g in groups if g["kind"] == "log"]
    assert len(logs) == 1 and logs[0]["count"] == 1, groups

    r = await call_tool(client, "get_error_details", {"error_id": g["error_id"]})
    d = r.structured_content
    assert d["type"].endswith("CardDeclinedError") and d["count"] == 1
    assert "Traceback" in d["stacktrace"] and "charge_card" in d["stacktrace"], d["stacktrace"]
    assert "card expired for order 8812" in d["stacktrace"]
    assert d["samples"][0]["trace_id"] == shop.failed_trace_id
    assert d["attributes"].get("service.version") == {"2.0.1": 1}, d["attributes"]
    assert "charge_card" in r.content[0].text


@pytest.mark.anyio
async def test_query_sql_reads_rows_and_refuses_writes(client: Any, shop: Emitted) -> None:
    r = await call_tool(
        client, "query_sql", {"sql": 'SELECT "ServiceName", count(*) AS spans FROM otel_traces GROUP BY 1 ORDER BY 1'}
    )
    sc = r.structured_content
    assert sc["columns"] == ["ServiceName", "spans"]
    assert sc["rows"] == [[CHECKOUT, 12], [PAYMENT, 4]], sc["rows"]
    err = await call_tool_error(client, "query_sql", {"sql": "DELETE FROM otel_traces"})
    assert "read-only" in err
    r = await call_tool(client, "query_sql", {"sql": "SELECT count(*) FROM otel_traces"})
    assert r.structured_content["rows"] == [[16]], "a refused DELETE must leave every span in place"


@pytest.mark.anyio
async def test_fuzzy_service_names_resolve(client: Any) -> None:
    r = await call_tool(client, "search_traces", {"service": "checkout"})
    assert r.structured_content["total"] == 4
    r = await call_tool(client, "find_errors", {"service": "PAYMENT"})
    assert r.structured_content["groups"] and all(g["services"] == [PAYMENT] for g in r.structured_content["groups"])
    r = await call_tool(client, "list_metrics", {"service": "checkout-svc"})
    assert {m["name"] for m in r.structured_content["metrics"]} >= {"shop.orders", "shop.queue.depth"}
    err = await call_tool_error(client, "search_logs", {"service": "chekout"})
    assert "did you mean" in err and CHECKOUT in err


def test_owner_file_names_the_endpoints(shop: Emitted) -> None:
    owner = shop.server.owner()
    assert owner["mcp_url"] == shop.server.mcp_url
    assert owner["otlp_http"] == shop.server.otlp_url
    assert owner["pid"] == shop.server.proc.pid  # type: ignore[union-attr]
    assert Path(shop.server.data_dir / "obsmcp.duckdb").is_file()
