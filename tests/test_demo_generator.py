"""The demo generator: valid, correlated OTLP that shows each injected incident, and the sender."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import statistics
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

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
    Scenario,
    SendError,
    estimate_items,
    generate,
    scenario_targets,
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


# --- targets and the newer faults, checked with SQL over a store filled by the in-process loader ------------

NEW_FAULTS = ("cache-collapse", "n-plus-one", "failing-downstream")


def test_every_fault_can_hit_at_least_four_services_and_the_truth_names_the_target() -> None:
    assert set(NEW_FAULTS) <= set(SCENARIO_NAMES)
    assert scenario_targets("none") == ()
    for name in SCENARIO_NAMES:
        if name == "none":
            continue
        targets = scenario_targets(name)
        assert len(targets) >= 4, name
        assert set(targets) <= SERVICE_NAMES
        assert scenario_truth(_cfg(name)).root_cause_service in targets, "the default is a valid target"
        for target in targets:
            truth = scenario_truth(_cfg(name, target=target))
            assert truth.root_cause_service == target and target in truth.description
            assert truth.affected_services[0] == target
    assert "frontend" not in scenario_targets("failing-downstream"), "the entry service has no callers"
    # The original scenarios keep their services when no target is given.
    defaults = {n: scenario_truth(_cfg(n)).root_cause_service for n in SCENARIO_NAMES}
    assert defaults["dependency-latency"] == "payment-service"
    assert defaults["deploy-errors"] == "catalog-service"
    assert defaults["resource-exhaustion"] == "inventory-service"


def test_an_invalid_target_is_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        DemoConfig(scenario="cache-collapse", target="frontend")
    message = str(err.value)
    assert "frontend" in message and all(t in message for t in scenario_targets("cache-collapse"))
    with pytest.raises(ValueError, match="no fault"):
        DemoConfig(scenario="none", target="cart-service")


def test_targeted_faults_are_deterministic() -> None:
    cfg = _cfg("failing-downstream", duration_s=90.0, incident_start_before_end_s=60.0, target="payment-service")
    first = [(r.signal, r.payload) for r in generate(cfg)]
    assert first == [(r.signal, r.payload) for r in generate(cfg)]
    other = _cfg("failing-downstream", duration_s=90.0, incident_start_before_end_s=60.0, target="cart-service")
    assert first != [(r.signal, r.payload) for r in generate(other)]


class _Store:
    def __init__(self, rt: Any, truth: Scenario) -> None:
        self.rt = rt
        self.truth = truth

    def rows(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        return self.rt.ctx.db.query(sql, params)[1]  # type: ignore[no-any-return]

    def split(self, sql: str, *params: object) -> tuple[Any, Any]:
        """``sql`` (with ``{during}`` standing for "the row is inside the incident") before and during it."""
        during = f"(epoch_ns(Timestamp) >= {self.truth.start_ns})"
        got = dict(self.rows(f"SELECT {during} AS d, * FROM ({sql.format(during=during)}) GROUP BY ALL", list(params)))
        return got.get(False), got.get(True)


@pytest.fixture(scope="module")
def fault_store() -> Iterator[Any]:
    """fault_store(scenario, target) -> _Store: 8 minutes at 3 requests/s, the incident in the last 4."""
    from obsmcp.config import Settings
    from obsmcp.demo.loader import load
    from obsmcp.runtime import Runtime

    made: dict[tuple[str, str], _Store] = {}

    def get(scenario: str, target: str) -> _Store:
        if (scenario, target) not in made:
            cfg = _cfg(scenario, rate=3.0, target=target, seed=3)
            rt = Runtime.open(Settings(data_dir=tempfile.mkdtemp(), retention_days=36500), in_memory=True)
            load(rt, cfg)
            made[(scenario, target)] = _Store(rt, scenario_truth(cfg))
        return made[(scenario, target)]

    yield get
    for store in made.values():
        store.rt.close()


def _server_stats(store: _Store, service: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(requests, error rate, median ms, versions) of ``service``'s SERVER spans, before and during."""
    sql = (
        "SELECT {during} AS d, count(*), avg((StatusCode = 'Error')::INT), median(Duration) / 1e6, "
        "list(DISTINCT ResourceAttributes['service.version'][1]) FROM otel_traces "
        "WHERE ServiceName = ? AND SpanKind = 'Server' GROUP BY ALL"
    )
    sql = sql.replace("ResourceAttributes['service.version'][1]", "attr(ResourceAttributes, 'service.version')")
    during = f"(epoch_ns(Timestamp) >= {store.truth.start_ns})"
    got = {r[0]: r[1:] for r in store.rows(sql.format(during=during), [service])}
    return got[False], got[True]


def _per_request(store: _Store, service: str, where: str) -> tuple[float, float]:
    """Spans of ``service`` matching ``where`` per SERVER span of it, before and during the incident."""
    during = f"(epoch_ns(Timestamp) >= {store.truth.start_ns})"
    sql = (
        f"SELECT {during}, count(*) FILTER (WHERE {where}) / count(*) FILTER (WHERE SpanKind = 'Server') "
        "FROM otel_traces WHERE ServiceName = ? GROUP BY ALL"
    )
    got = dict(store.rows(sql, [service]))
    return float(got[False]), float(got[True])


@pytest.mark.parametrize("target", ["inventory-service", "checkout-service"])
def test_n_plus_one_rollout_multiplies_queries_per_request(fault_store: Any, target: str) -> None:
    store = fault_store("n-plus-one", target)
    before, during = _server_stats(store, target)
    assert len(before[3]) == 1 and len(during[3]) == 1 and before[3] != during[3], "a new service.version"
    queries_before, queries_during = _per_request(store, target, "attr(SpanAttributes, 'db.system') = 'postgresql'")
    assert queries_during > 5 * queries_before
    assert during[2] > 1.15 * before[2], "slower"
    assert during[1] < 0.15, "no error burst (checkout sees a few baseline errors in a small sample)"
    # The repeated statement is one identical query per item, in sequence under the same parent.
    (repeats,) = store.rows(
        "SELECT max(n) FROM (SELECT ParentSpanId, count(*) n FROM otel_traces WHERE ServiceName = ? "
        "AND epoch_ns(Timestamp) >= ? AND attr(SpanAttributes, 'db.system') = 'postgresql' "
        "GROUP BY ParentSpanId, attr(SpanAttributes, 'db.statement'))",
        [target, store.truth.start_ns],
    )[0]
    assert repeats >= 10


def _cache_counts(store: _Store, service: str) -> dict[tuple[str, bool], float]:
    """Cache lookups of ``service`` (metric name, during the incident) -> increase of the cumulative counters."""
    sql = (
        "SELECT MetricName, d, sum(hi - lo) FROM (SELECT MetricName, epoch_ns(TimeUnix) >= ? AS d, "
        "ResourceAttributes, Attributes, max(Value) hi, min(Value) lo FROM otel_metrics_sum "
        "WHERE ServiceName = ? AND MetricName IN ('cache.hits', 'cache.misses') GROUP BY ALL) GROUP BY ALL"
    )
    return {(name, d): float(n) for name, d, n in store.rows(sql, [store.truth.start_ns, service])}


@pytest.mark.parametrize("target", ["catalog-service", "auth-service"])
def test_cache_collapse_drops_the_hit_ratio_and_sends_requests_to_the_database(fault_store: Any, target: str) -> None:
    store = fault_store("cache-collapse", target)
    counts = _cache_counts(store, target)

    def ratio(d: bool) -> float:
        return counts[("cache.hits", d)] / (counts[("cache.hits", d)] + counts[("cache.misses", d)])

    assert ratio(False) > 0.75 and ratio(True) < 0.2
    queries_before, queries_during = _per_request(store, target, "attr(SpanAttributes, 'db.system') = 'postgresql'")
    assert queries_during > 1.8 * queries_before
    before, during = _server_stats(store, target)
    assert during[2] > 1.5 * before[2], "slower"
    assert before[3] == during[3], "no deploy"
    misses = store.rows(
        "SELECT count(*) FROM otel_logs WHERE ServiceName = ? AND Body LIKE 'Cache miss for key %' "
        "AND epoch_ns(Timestamp) >= ?",
        [target, store.truth.start_ns],
    )[0][0]
    assert misses > during[0] / 2


@pytest.mark.parametrize(
    ("target", "caller"), [("cart-service", "api-gateway"), ("payment-service", "checkout-service")]
)
def test_failing_downstream_crash_loops_and_callers_see_refused_connections(
    fault_store: Any, target: str, caller: str
) -> None:
    store = fault_store("failing-downstream", target)
    before, during = _server_stats(store, target)
    assert during[1] > 0.08 and during[1] > 5 * max(before[1], 0.005), "the target's own error rate jumps"
    assert before[3] == during[3], "no deploy"
    start = store.truth.start_ns
    refused = store.rows(
        "SELECT count(*), count(DISTINCT TraceId), min(epoch_ns(Timestamp)) FROM otel_traces "
        "WHERE ServiceName = ? AND SpanKind = 'Client' AND StatusCode = 'Error' "
        "AND attr(SpanAttributes, 'server.address') = ? "
        "AND list_contains(\"Events.Name\", 'exception') AND attr(SpanAttributes, 'error.type') LIKE '%Connect%' "
        "OR (ServiceName = ? AND attr(SpanAttributes, 'error.type') = '*url.Error' AND SpanKind = 'Client' "
        "AND attr(SpanAttributes, 'server.address') = ? AND \"Events.Attributes\"::VARCHAR LIKE '%refused%')",
        [caller, target, caller, target],
    )[0]
    assert refused[0] > 10 and refused[2] >= start, "refused connections, only during the incident"
    assert refused[0] > refused[1], "callers retry"
    caller_before, caller_during = _server_stats(store, caller)
    assert caller_during[1] > 3 * max(caller_before[1], 0.005), "callers fail too"
    logs = [
        body
        for (body,) in store.rows(
            "SELECT Body FROM otel_logs WHERE ServiceName = ? AND TraceId = '' AND epoch_ns(Timestamp) >= ?",
            [target, start],
        )
    ]
    assert sum("OutOfMemoryError" in b or "out of memory" in b for b in logs) >= 2, "repeated crashes"
    assert sum(b.startswith("Started ") for b in logs) >= 2, "and restarts"


@pytest.mark.parametrize(
    ("scenario", "target", "exception"),
    [("deploy-errors", "payment-service", "ArithmeticException"), ("resource-exhaustion", "catalog-service", "Pool")],
)
def test_original_faults_follow_their_target(fault_store: Any, scenario: str, target: str, exception: str) -> None:
    store = fault_store(scenario, target)
    before, during = _server_stats(store, target)
    assert during[1] > 3 * max(before[1], 0.01)
    failed = store.rows(
        "SELECT DISTINCT ServiceName FROM otel_traces WHERE SpanKind = 'Server' AND epoch_ns(Timestamp) >= ? "
        "AND StatusCode = 'Error' AND \"Events.Attributes\"::VARCHAR LIKE ?",
        [store.truth.start_ns, f"%{exception}%"],
    )
    assert [r[0] for r in failed] == [target]


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
