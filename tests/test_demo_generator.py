"""The demo generator: valid, correlated OTLP that shows each injected incident, and the sender."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from obsmcp.demo import (
    SCENARIO_NAMES,
    DemoConfig,
    OTLPRequest,
    SendError,
    estimate_items,
    generate,
    scenario_truth,
    send,
)
from obsmcp.demo.scenarios import POOL_TIMEOUT_ERROR, PRICE_FORMAT_ERROR
from obsmcp.demo.topology import (
    CONTEXT_KEYS,
    ROUTES,
    SERVICES,
    CacheGet,
    CacheOp,
    ErrorKind,
    External,
    LogSpec,
    Step,
    Work,
)

END_NS = 1_700_000_000 * 10**9
SERVICE_NAMES = {s.name for s in SERVICES}


def _value(kv: KeyValue) -> object:
    which = kv.value.WhichOneof("value")
    return getattr(kv.value, which) if which else None


def _attrs(kvs: object) -> dict[str, object]:
    return {kv.key: _value(kv) for kv in kvs}  # type: ignore[attr-defined]


@dataclass
class SpanRow:
    service: str
    version: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    name: str
    kind: int
    start: int
    end: int
    error: bool
    attrs: dict[str, object]
    exception: dict[str, object] | None

    @property
    def ms(self) -> float:
        return (self.end - self.start) / 1e6


@dataclass
class LogRow:
    service: str
    trace_id: bytes
    span_id: bytes
    severity: str
    body: str
    attrs: dict[str, object]
    t: int


@dataclass
class Dataset:
    requests: list[OTLPRequest]
    spans: list[SpanRow] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)
    # (service, metric name) -> [(time, host, point attributes, data point message)]
    points: dict[tuple[str, str], list[tuple[int, str, dict[str, object], object]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    metric_types: dict[str, str] = field(default_factory=dict)


def _decode(requests: list[OTLPRequest]) -> Dataset:
    data = Dataset(requests)
    for req in requests:
        if req.signal == "traces":
            for rs in ExportTraceServiceRequest.FromString(req.payload).resource_spans:
                res = _attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        exc = next((_attrs(e.attributes) for e in s.events if e.name == "exception"), None)
                        data.spans.append(
                            SpanRow(
                                str(res["service.name"]),
                                str(res["service.version"]),
                                s.trace_id,
                                s.span_id,
                                s.parent_span_id,
                                s.name,
                                s.kind,
                                s.start_time_unix_nano,
                                s.end_time_unix_nano,
                                s.status.code == Status.STATUS_CODE_ERROR,
                                _attrs(s.attributes),
                                exc,
                            )
                        )
        elif req.signal == "logs":
            for rl in ExportLogsServiceRequest.FromString(req.payload).resource_logs:
                service = str(_attrs(rl.resource.attributes)["service.name"])
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        data.logs.append(
                            LogRow(
                                service,
                                r.trace_id,
                                r.span_id,
                                r.severity_text,
                                r.body.string_value,
                                _attrs(r.attributes),
                                r.time_unix_nano,
                            )
                        )
        else:
            for rm in ExportMetricsServiceRequest.FromString(req.payload).resource_metrics:
                res = _attrs(rm.resource.attributes)
                service, host = str(res["service.name"]), str(res["host.name"])
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data") or ""
                        data.metric_types[m.name] = kind
                        for p in getattr(m, kind).data_points:
                            data.points[(service, m.name)].append((p.time_unix_nano, host, _attrs(p.attributes), p))
    return data


@cache
def dataset(cfg: DemoConfig) -> Dataset:
    return _decode(list(generate(cfg)))


def _cfg(scenario: str = "none", **kw: object) -> DemoConfig:
    base: dict[str, object] = {
        "duration_s": 480.0,
        "rate": 5.0,
        "scenario": scenario,
        "seed": 7,
        "end_ns": END_NS,
        "incident_start_before_end_s": 240.0,
    }
    base.update(kw)
    return DemoConfig(**base)  # type: ignore[arg-type]


BASELINE = _cfg(duration_s=300.0, rate=6.0)


def _server(spans: list[SpanRow], service: str) -> list[SpanRow]:
    return [s for s in spans if s.service == service and s.kind == Span.SPAN_KIND_SERVER]


def _error_rate(spans: list[SpanRow]) -> float:
    return sum(s.error for s in spans) / len(spans)


# --- the modelled system --------------------------------------------------------------------------------------


def _templates(step: Step) -> list[str]:
    if isinstance(step, CacheGet):
        return [step.key] + [t for inner in step.on_miss for t in _templates(inner)]
    if isinstance(step, CacheOp):
        return [step.key]
    if isinstance(step, Work):
        return [log.template for log in step.logs]
    if isinstance(step, External):
        return [r.log.template for r in step.rejections]
    return []


def test_every_template_formats_with_the_request_context() -> None:
    ctx = dict.fromkeys(CONTEXT_KEYS, "x")
    kinds: list[ErrorKind] = [PRICE_FORMAT_ERROR, POOL_TIMEOUT_ERROR]
    templates: list[str] = []
    for route in ROUTES:
        kinds += [kind for kind, _ in route.errors]
        logs: list[LogSpec] = [*route.logs, *(r.log for r in route.rejections)]
        templates += [route.path, *(log.template for log in logs)]
        templates += [t for step in route.steps for t in _templates(step)]
    templates += [t for kind in kinds for t in (kind.message, kind.log)]
    for template in templates:
        template.format_map(ctx)


# --- determinism and shape -------------------------------------------------------------------------------------


def test_same_seed_gives_identical_payloads_and_another_seed_does_not() -> None:
    cfg = _cfg(duration_s=60.0, rate=5.0)
    first = [(r.signal, r.payload) for r in generate(cfg)]
    assert first == [(r.signal, r.payload) for r in generate(cfg)]
    other = [(r.signal, r.payload) for r in generate(_cfg(duration_s=60.0, rate=5.0, seed=8))]
    assert first != other


def test_requests_come_in_time_order_with_accurate_counts() -> None:
    data = dataset(BASELINE)
    ends = [r.end_ns for r in data.requests]
    assert ends == sorted(ends)
    assert {r.signal for r in data.requests} == {"traces", "logs", "metrics"}
    items = Counter[str]()
    for r in data.requests:
        items[r.signal] += r.items
    assert items["traces"] == len(data.spans)
    assert items["logs"] == len(data.logs)
    assert items["metrics"] == sum(len(v) for v in data.points.values())
    window_start = END_NS - int(BASELINE.duration_s * 1e9)
    assert all(window_start <= s.start < END_NS + 30 * 10**9 for s in data.spans)


def test_batches_hold_about_batch_spans_spans() -> None:
    requests = list(generate(_cfg(duration_s=120.0, rate=8.0), batch_spans=1000))
    spans = [r.items for r in requests if r.signal == "traces"]
    assert len(spans) >= 5
    # A batch closes after the trace that crosses the limit.
    assert all(1000 <= n < 1200 for n in spans[:-1])


# --- traces ----------------------------------------------------------------------------------------------------


def test_trace_structure_is_valid() -> None:
    spans = dataset(BASELINE).spans
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    assert len(by_id) == len(spans), "span ids are unique"
    roots = Counter[bytes]()
    for s in spans:
        assert len(s.trace_id) == 16 and len(s.span_id) == 8
        assert s.end >= s.start
        if not s.parent_id:
            roots[s.trace_id] += 1
            assert s.service == "frontend" and s.kind == Span.SPAN_KIND_SERVER
            continue
        parent = by_id.get((s.trace_id, s.parent_id))
        assert parent is not None, f"{s.service} {s.name} has a parent outside its trace"
        if s.kind == Span.SPAN_KIND_SERVER:
            # The callee's SERVER span hangs off the caller's CLIENT span, in another service.
            assert parent.kind == Span.SPAN_KIND_CLIENT
            assert parent.service != s.service
            assert parent.attrs["server.address"] == s.service
            assert parent.start <= s.start
        else:
            assert parent.service == s.service
    assert set(roots.values()) == {1}, "one root per trace"
    assert len(roots) == len({s.trace_id for s in spans})


def test_spans_follow_semantic_conventions() -> None:
    spans = dataset(BASELINE).spans
    kinds = Counter(s.kind for s in spans)
    assert kinds[Span.SPAN_KIND_SERVER] and kinds[Span.SPAN_KIND_CLIENT] and kinds[Span.SPAN_KIND_INTERNAL]
    for s in spans:
        if s.kind == Span.SPAN_KIND_SERVER:
            assert {"http.request.method", "http.route", "http.response.status_code", "url.path"} <= s.attrs.keys()
            assert s.name == f"{s.attrs['http.request.method']} {s.attrs['http.route']}"
    db = [s for s in spans if "db.system" in s.attrs]
    assert {s.attrs["db.system"] for s in db} == {"postgresql", "redis"}
    assert all({"db.statement", "server.address"} <= s.attrs.keys() for s in db)
    assert all(s.kind == Span.SPAN_KIND_CLIENT for s in db)
    assert {s.attrs["server.address"] for s in db} == {"postgres", "redis"}


def test_catalog_fans_out_to_the_database() -> None:
    spans = dataset(BASELINE).spans
    queries = Counter(
        (s.trace_id, s.parent_id) for s in spans if s.service == "catalog-service" and s.attrs.get("db.system")
    )
    assert max(queries.values()) >= 5


def test_latency_differs_by_route_and_has_outliers() -> None:
    spans = dataset(BASELINE).spans
    by_route: dict[str, list[float]] = defaultdict(list)
    for s in spans:
        if s.kind == Span.SPAN_KIND_SERVER:
            by_route[f"{s.service} {s.name}"].append(s.ms)
    medians = {k: statistics.median(v) for k, v in by_route.items()}
    assert medians["auth-service POST /auth/login"] > 5 * medians["auth-service GET /auth/validate"]
    search = sorted(by_route["catalog-service GET /search"])
    assert search[-1] > 3 * statistics.median(search), "a long tail"


def test_baseline_has_rare_errors_with_stack_traces() -> None:
    spans = dataset(BASELINE).spans
    roots = [s for s in spans if not s.parent_id]
    assert 0.001 <= _error_rate(roots) <= 0.02
    failed = [s for s in spans if s.error and s.kind == Span.SPAN_KIND_SERVER]
    assert failed
    for s in failed:
        assert s.exception is not None
        assert {"exception.type", "exception.message", "exception.stacktrace"} <= s.exception.keys()
        assert str(s.exception["exception.stacktrace"]).count("\n") >= 2
        assert s.attrs["http.response.status_code"] >= 500  # type: ignore[operator]
    assert len({s.exception["exception.type"] for s in failed if s.exception}) >= 3


# --- logs ------------------------------------------------------------------------------------------------------


def test_logs_are_correlated_with_existing_spans() -> None:
    data = dataset(BASELINE)
    span_ids = {(s.trace_id, s.span_id) for s in data.spans}
    traced = [log for log in data.logs if log.trace_id]
    assert len(traced) > 0.95 * len(data.logs)
    assert all((log.trace_id, log.span_id) in span_ids for log in traced)
    assert 0.8 <= len(data.logs) / len(data.spans) <= 3.0


def test_logs_have_realistic_severities_and_templates() -> None:
    logs = dataset(BASELINE).logs
    severities = Counter(log.severity for log in logs)
    assert severities["INFO"] > severities["DEBUG"] > severities["ERROR"] > 0
    assert severities["WARN"] + severities["WARNING"] > 0
    bodies = [log.body for log in logs]
    assert any(b.startswith("Cache miss for key product:") for b in bodies)
    assert any(b.startswith("User u-") and " logged in from " in b for b in bodies)
    assert any(b.startswith("Payment authorized for order o-") for b in bodies)


def test_failed_requests_log_their_exception() -> None:
    data = dataset(BASELINE)
    logged = {
        (log.trace_id, log.span_id)
        for log in data.logs
        if log.severity == "ERROR" and str(log.attrs.get("exception.stacktrace", "")).count("\n") >= 2
    }
    failed = [s for s in data.spans if s.error and s.kind == Span.SPAN_KIND_SERVER]
    assert failed and all((s.trace_id, s.span_id) in logged for s in failed)


# --- metrics ---------------------------------------------------------------------------------------------------


def test_every_service_appears_in_every_signal() -> None:
    data = dataset(BASELINE)
    assert {s.service for s in data.spans} == SERVICE_NAMES
    assert {log.service for log in data.logs} == SERVICE_NAMES
    assert {service for service, _ in data.points} == SERVICE_NAMES


def test_all_five_metric_types_and_the_expected_metrics_appear() -> None:
    data = dataset(BASELINE)
    assert set(data.metric_types.values()) == {"gauge", "sum", "histogram", "exponential_histogram", "summary"}
    expected = {
        "http.server.request.duration": "histogram",
        "http.server.requests": "sum",
        "process.cpu.utilization": "gauge",
        "process.memory.usage": "gauge",
        "cache.hits": "sum",
        "cache.misses": "sum",
        "db.client.connections.usage": "gauge",
        "db.client.connections.max": "gauge",
    }
    assert expected.items() <= data.metric_types.items()
    assert ("catalog-service", "cache.hits") in data.points and ("cart-service", "cache.misses") in data.points
    duration = data.points[("checkout-service", "http.server.request.duration")]
    assert {"http.request.method", "http.route", "http.response.status_code"} <= duration[0][2].keys()


def test_metrics_are_cumulative_every_15_seconds() -> None:
    points = dataset(BASELINE).points[("api-gateway", "http.server.requests")]
    series: dict[tuple[object, ...], list[tuple[int, int]]] = defaultdict(list)
    for t, host, attrs, p in points:
        series[(host, *sorted(attrs.items()))].append((t, p.as_int))  # type: ignore[attr-defined]
    longest = max(series.values(), key=len)
    times = [t for t, _ in longest]
    assert {b - a for a, b in itertools.pairwise(times)} == {15 * 10**9}
    values = [v for _, v in longest]
    assert values == sorted(values) and values[-1] > values[0]


# --- scenarios -------------------------------------------------------------------------------------------------


def test_unknown_scenario_is_rejected_with_the_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        list(generate(DemoConfig(scenario="meteor-strike")))
    for name in SCENARIO_NAMES:
        assert name in str(err.value)


def test_scenario_truth_matches_the_config() -> None:
    assert {"none", "dependency-latency", "deploy-errors", "resource-exhaustion"} <= set(SCENARIO_NAMES)
    for name in SCENARIO_NAMES:
        truth = scenario_truth(_cfg(name))
        assert truth.name == name and truth.description
        if name == "none":
            assert truth.root_cause_service == "" and truth.start_ns == truth.end_ns
        else:
            assert truth.root_cause_service in SERVICE_NAMES
            assert (truth.start_ns, truth.end_ns) == (END_NS - 240 * 10**9, END_NS)
    short = scenario_truth(_cfg("deploy-errors", incident_duration_s=60.0))
    assert short.end_ns - short.start_ns == 60 * 10**9
    assert DemoConfig().end_ns is not None, "now is pinned once, so truth and data agree"


def test_deploy_errors_new_version_fails_often_with_a_new_exception() -> None:
    cfg = _cfg("deploy-errors")
    truth = scenario_truth(cfg)
    data = dataset(cfg)
    service = _server(data.spans, truth.root_cause_service)
    before = [s for s in service if s.start < truth.start_ns]
    after = [s for s in service if s.start >= truth.start_ns]
    assert {s.version for s in before} == {"2.14.0"}
    assert {s.version for s in after} == {"2.15.0"}
    assert _error_rate(after) > 5 * max(_error_rate(before), 0.005)
    new_types = {s.exception["exception.type"] for s in after if s.exception} - {
        s.exception["exception.type"] for s in before if s.exception
    }
    assert "AttributeError" in new_types
    price_logs = [log for log in data.logs if log.body.startswith("Failed to render price")]
    assert price_logs and all(log.t >= truth.start_ns for log in price_logs)
    assert {log.service for log in price_logs} == {"catalog-service"}


def test_dependency_latency_slows_the_culprit_and_its_callers() -> None:
    cfg = _cfg("dependency-latency")
    truth = scenario_truth(cfg)
    spans = dataset(cfg).spans

    def median_ms(rows: list[SpanRow], during: bool) -> float:
        return statistics.median(s.ms for s in rows if (s.start >= truth.start_ns) == during)

    culprit = _server(spans, truth.root_cause_service)
    assert median_ms(culprit, True) > 2 * median_ms(culprit, False)
    queries = [s for s in spans if s.service == truth.root_cause_service and s.attrs.get("db.system") == "postgresql"]
    assert median_ms(queries, True) > 20 * median_ms(queries, False)
    caller = _server(spans, "checkout-service")
    assert median_ms(caller, True) > 1.5 * median_ms(caller, False)
    unrelated = _server(spans, "inventory-service")
    assert median_ms(unrelated, True) < 1.5 * median_ms(unrelated, False)
    timeouts = [s for s in spans if s.service == "checkout-service" and s.error and s.kind == Span.SPAN_KIND_CLIENT]
    assert timeouts and all(s.start >= truth.start_ns - 10**10 for s in timeouts if s.exception)


def test_resource_exhaustion_saturates_the_pool_then_fails() -> None:
    cfg = _cfg("resource-exhaustion")
    truth = scenario_truth(cfg)
    data = dataset(cfg)
    service = truth.root_cause_service

    def gauge(name: str, state: str | None = None) -> list[tuple[int, float]]:
        return [
            (t, p.as_double or p.as_int)  # type: ignore[attr-defined]
            for t, _, attrs, p in data.points[(service, name)]
            if state is None or attrs.get("state") == state
        ]

    size = gauge("db.client.connections.max")[0][1]
    used = gauge("db.client.connections.usage", "used")
    assert max(v for t, v in used if t < truth.start_ns) < 0.8 * size
    assert max(v for t, v in used if t >= truth.start_ns) == size
    memory = gauge("process.memory.usage")
    assert memory[-1][1] > 1.5 * max(v for t, v in memory if t < truth.start_ns)
    cpu = gauge("process.cpu.utilization")
    assert cpu[-1][1] > 2 * statistics.median(v for t, v in cpu if t < truth.start_ns)
    server = _server(data.spans, service)
    late = [s for s in server if s.start >= truth.start_ns + (truth.end_ns - truth.start_ns) // 2]
    assert _error_rate(late) > 0.2
    assert any(s.exception and "JdbcConnection" in str(s.exception["exception.type"]) for s in late)
    assert any(log.body.startswith("Connection pool exhausted (active=") for log in data.logs)


def test_estimate_items_is_close_to_what_is_generated() -> None:
    data = dataset(BASELINE)
    estimate = estimate_items(BASELINE)
    actual = {
        "traces": len(data.spans),
        "logs": len(data.logs),
        "metrics": sum(len(v) for v in data.points.values()),
    }
    for signal, n in actual.items():
        assert 0.7 * n <= estimate[signal] <= 1.3 * n, signal


# --- sender ----------------------------------------------------------------------------------------------------


def _requests() -> list[OTLPRequest]:
    return [
        OTLPRequest("traces", b"spans", 3, 1),
        OTLPRequest("logs", b"logs", 5, 2),
        OTLPRequest("metrics", b"points", 7, 3),
    ]


def test_send_posts_gzipped_protobuf_to_each_signal_path() -> None:
    received: list[tuple[str, str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(
            (
                request.url.path,
                request.headers["content-type"],
                request.headers["content-encoding"],
                gzip.decompress(request.content),
            )
        )
        return httpx.Response(200)

    sent: list[OTLPRequest] = []
    stats = asyncio.run(
        send(_requests(), "http://otel:4318/", transport=httpx.MockTransport(handler), on_sent=sent.append)
    )
    assert sorted(received) == [
        ("/v1/logs", "application/x-protobuf", "gzip", b"logs"),
        ("/v1/metrics", "application/x-protobuf", "gzip", b"points"),
        ("/v1/traces", "application/x-protobuf", "gzip", b"spans"),
    ]
    assert len(sent) == 3
    assert stats.requests == 3 and stats.items == {"traces": 3, "logs": 5, "metrics": 7}


def test_send_waits_and_retries_when_the_receiver_pushes_back() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(503), httpx.Response(200)])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    stats = asyncio.run(send(_requests()[:1], transport=httpx.MockTransport(handler), gzip=False))
    assert stats.retries == 2 and stats.requests == 1


def test_send_gives_up_after_bounded_attempts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "0"}, text="overloaded")

    with pytest.raises(SendError, match=r"503.*overloaded"):
        asyncio.run(send(_requests()[:1], transport=httpx.MockTransport(handler), max_attempts=3))


def test_send_reports_other_errors_with_status_and_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="unsupported content type")

    with pytest.raises(SendError, match=r"400.*unsupported content type"):
        asyncio.run(send(_requests(), transport=httpx.MockTransport(handler)))
