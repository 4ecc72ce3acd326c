"""The Datadog source against a Datadog-shaped HTTP server on loopback.

Every request the source sends is checked against Datadog's published OpenAPI specification (the trimmed
subset in tests/data/vendor/datadog/, see its README): request bodies with jsonschema (references resolved,
and no property the schema does not define: Datadog ignores unknown keys silently, so a misspelled one would
pass unnoticed), query parameters by name, location and type, and the credential headers by the names of
the spec's security schemes. Answers are Datadog's own recorded responses (responses/, from the cassettes
of DataDog/datadog-api-client-python) or, where no recording exists, the spec's examples.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jsonschema import Draft202012Validator, ValidationError

from obsmcp.sources import datadog
from obsmcp.sources.base import (
    LogQuery,
    LogSource,
    MetricQuery,
    MetricSource,
    SourceError,
    TraceQuery,
    TraceSource,
    UnsupportedQuery,
)
from obsmcp.sources.config import DATADOG_SITES, BackendConfig, backends_from_env
from obsmcp.sources.registry import build_source
from tests.faulty_backend import FaultyBackend, Reply, Seen

VENDOR = Path(__file__).parent / "data" / "vendor" / "datadog"
SPECS = [json.loads((VENDOR / f"openapi-{v}.json").read_text()) for v in ("v1", "v2")]
API_KEY = "dd-api-key-0123456789abcdef"
APP_KEY = "dd-app-key-fedcba9876543210fedcba98"
T0 = 1_688_032_252_000 * 10**6  # 2023-06-29T09:50:52Z, where the recorded spans are
T1 = T0 + 15 * 60 * 10**9
_names = itertools.count()
T = TypeVar("T")


def recorded(name: str) -> Any:
    return json.loads((VENDOR / "responses" / name).read_text())


def spec_example(path: str, method: str = "get") -> Any:
    for spec in SPECS:
        if path in spec["paths"]:
            content = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
            return copy.deepcopy(content["examples"]["default"]["value"])
    raise KeyError(path)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# -- the spec as a checker ---------------------------------------------------------------------------------


def _json_schema(node: Any, *, strict: bool) -> Any:
    """OpenAPI 3.0 schemas as JSON Schema (`nullable: true` becomes a "null" type); with `strict`, also
    additionalProperties: false wherever an object lists its properties."""
    if isinstance(node, dict):
        out = {k: _json_schema(v, strict=strict) for k, v in node.items()}
        if out.pop("nullable", False) and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if strict and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_json_schema(v, strict=strict) for v in node]
    return node


def _strict(node: Any) -> Any:
    return _json_schema(node, strict=True)


def _operation(method: str, path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(spec, operation, path parameters) of a request; fails when the spec has no such operation."""
    for spec in SPECS:
        for template, ops in spec["paths"].items():
            pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            m = re.match(pattern, path)
            if m and method.lower() in ops:
                return spec, ops[method.lower()], m.groupdict()
    raise AssertionError(f"{method} {path} is not an operation of Datadog's published API")


def _check_value(name: str, value: str, schema: dict[str, Any], spec: dict[str, Any]) -> None:
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    parsed: Any = value
    if kind == "integer":
        assert re.fullmatch(r"-?\d+", value), f"parameter {name}={value!r} must be an integer"
        parsed = int(value)
    elif kind == "boolean":
        assert value in ("true", "false"), f"parameter {name}={value!r} must be true or false"
        parsed = value == "true"
    Draft202012Validator(schema).validate(parsed)


def validate_request(seen: Seen) -> None:
    """Assert that one request the source sent is a valid call of Datadog's API as its spec defines it."""
    spec, op, path_params = _operation(seen.method, seen.path)
    declared = {(p["name"], p["in"]): p for p in op.get("parameters", [])}
    for name, value in path_params.items():
        assert (name, "path") in declared, f"{seen.path}: no path parameter {name}"
        _check_value(name, value, declared[(name, "path")]["schema"], spec)
    sent = dict(seen.query)
    assert len(sent) == len(seen.query), f"{seen.path}: a query parameter was sent twice"
    for name, value in sent.items():
        assert (name, "query") in declared, f"{seen.method} {seen.path}: {name!r} is not a query parameter of it"
        _check_value(name, value, declared[(name, "query")]["schema"], spec)
    for (name, where), p in declared.items():
        if where == "query" and p.get("required"):
            assert name in sent, f"{seen.path}: required query parameter {name!r} missing"
    schemes = spec["components"]["securitySchemes"]
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert headers.get(schemes["apiKeyAuth"]["name"].lower()) == API_KEY
    if seen.path != "/api/v1/validate":  # the only operation that takes the API key alone
        assert headers.get(schemes["appKeyAuth"]["name"].lower()) == APP_KEY
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        root = {"components": _strict(spec["components"]), **_strict(schema)}
        Draft202012Validator(root).validate(json.loads(seen.body))
    else:
        assert not seen.body, f"{seen.method} {seen.path} takes no body"


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FaultyBackend]:
    with FaultyBackend() as backend:
        yield backend
        for seen in backend.seen():  # whatever a test did, every request must be a valid API call
            validate_request(seen)


@pytest.fixture
def source(server: FaultyBackend) -> Iterator[datadog.DatadogSource]:
    cfg = BackendConfig(
        name=f"datadog-test-{next(_names)}", kind="datadog", url=server.url, api_key=API_KEY, app_key=APP_KEY
    )
    src = datadog.from_config(cfg)
    yield src
    src.client.close()


def body_of(seen: Seen) -> Any:
    return json.loads(seen.body)


# -- logs ----------------------------------------------------------------------------------------------------


def test_search_logs_sends_a_valid_search_and_maps_the_recorded_page(
    server: FaultyBackend, source: datadog.DatadogSource
) -> None:
    server.script(datadog.LOGS_SEARCH, Reply(200, recorded("logs_search_page1.json")))
    page = run(
        source.search_logs(
            LogQuery(
                T0, T1, service="checkout", min_severity=13, text='timeout "db"', attributes={"http.method": "GET"}
            )
        )
    )
    [seen] = server.seen(datadog.LOGS_SEARCH)
    sent = body_of(seen)
    assert sent["filter"] == {
        "query": "service:checkout status:(emergency OR alert OR critical OR error OR warn) @http.method:GET "
        '"timeout \\"db\\""',
        "from": str(T0 // 10**6),
        "to": str(T1 // 10**6),
    }
    assert sent["sort"] == "-timestamp" and sent["page"] == {"limit": 50}
    first, second = page.records
    assert (first.time, first.severity, first.attributes["host"]) == (
        "2022-04-11T16:29:47.000Z", "INFO", "05f9b9df-ae45-4c8b-66bf-e24c"
    )  # fmt: skip
    assert first.body.startswith("169.254.0.1 - - [11/Apr/2022:16:29:47 +0000]")
    assert first.attributes["http.status_code"] == "200" and first.attributes["http.method"] == "GET"
    assert second.severity == "INFO" and "Index page hit" in second.body
    assert page.next_cursor == recorded("logs_search_page1.json")["meta"]["page"]["after"]


def test_search_logs_pages_with_datadogs_cursor_until_the_last_page(
    server: FaultyBackend, source: datadog.DatadogSource
) -> None:
    server.script(
        datadog.LOGS_SEARCH,
        Reply(200, recorded("logs_search_page2.json")),
        then=Reply(200, recorded("logs_search_last.json")),
    )
    cursor = recorded("logs_search_page1.json")["meta"]["page"]["after"]
    second = run(source.search_logs(LogQuery(T0, T1, limit=2, cursor=cursor)))
    last = run(source.search_logs(LogQuery(T0, T1, limit=2, cursor=second.next_cursor)))
    sent = [body_of(s)["page"] for s in server.seen(datadog.LOGS_SEARCH)]
    assert sent == [{"limit": 2, "cursor": cursor}, {"limit": 2, "cursor": second.next_cursor}]
    assert len(second.records) == 1 and second.next_cursor and second.next_cursor != cursor
    assert last.records == [] and last.next_cursor is None
    assert body_of(server.seen(datadog.LOGS_SEARCH)[0])["filter"]["query"] == "*"


def test_log_trace_ids_come_from_the_injected_attribute(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    answer = recorded("logs_search_page2.json")
    answer["data"][0]["attributes"]["attributes"] = {"dd": {"trace_id": "6252933144469107600", "span_id": "42"}}
    server.script(datadog.LOGS_SEARCH, Reply(200, answer))
    page = run(source.search_logs(LogQuery(T0, T1, trace_id="6252933144469107600")))
    assert body_of(server.seen()[0])["filter"]["query"] == "@dd.trace_id:6252933144469107600"
    assert (page.records[0].trace_id, page.records[0].span_id) == ("6252933144469107600", "42")
    otel = "0af7651916cd43dd8448eb211c80319c"
    assert datadog.log_query(LogQuery(T0, T1, trace_id=otel)) == (
        f"(@otel.trace_id:{otel} OR @dd.trace_id:{int(otel[16:], 16)})"
    )


def test_log_query_escapes_datadogs_special_characters() -> None:
    q = LogQuery(T0, T1, service="web store", attributes={"url": "/a?b=c&d", "user": 'x"y\\z'}, text="a:b")
    assert datadog.log_query(q) == 'service:"web store" @url:"/a?b=c&d" @user:"x\\"y\\\\z" "a:b"'
    assert datadog.log_query(LogQuery(T0, T1, min_severity=17)) == "status:(emergency OR alert OR critical OR error)"
    assert datadog.log_query(LogQuery(T0, T1, min_severity=23)) == "status:(emergency OR alert OR critical)"
    assert datadog.log_query(LogQuery(T0, T1, min_severity=5)) == "*"  # debug and up: everything
    with pytest.raises(UnsupportedQuery, match="no regular expressions"):
        datadog.log_query(LogQuery(T0, T1, text="a.*b", regex=True))
    with pytest.raises(UnsupportedQuery, match="cannot be searched"):
        datadog.log_query(LogQuery(T0, T1, attributes={"a b": "c"}))


# -- traces --------------------------------------------------------------------------------------------------


def test_search_traces_groups_recorded_spans_into_traces(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    spans = recorded("spans_search.json")
    server.script(datadog.SPANS_SEARCH, Reply(200, spans), Reply(200, spans))
    page = run(source.search_traces(TraceQuery(T0, T1, limit=4)))
    first, summaries = (body_of(s)["data"] for s in server.seen(datadog.SPANS_SEARCH))
    assert first["type"] == "search_request"
    assert first["attributes"] == {
        "filter": {"query": "*", "from": str(T0 // 10**6), "to": str(T1 // 10**6)},
        "sort": "-timestamp",
        "page": {"limit": 50},
    }
    ids = ["3740652481065462946", "6671111812380197518", "6252933144469107600", "7006943107639417989"]
    assert summaries["attributes"]["filter"]["query"] == f"trace_id:({' OR '.join(ids)})"
    assert [t.trace_id for t in page.traces] == ids
    java = page.traces[2]
    # Two spans; the root (parent_id 0) names the trace and its custom.duration (ns) is the trace's.
    assert (java.root, java.spans, java.duration_ms, java.errors) == (
        "java-sample-app-spartancrimson GET /", 2, 1.406, 0
    )  # fmt: skip
    assert java.start == "2023-06-29T09:50:53.833Z" and java.services == ["java-sample-app-spartancrimson"]
    assert page.next_cursor == spans["meta"]["page"]["after"]
    assert any("3 more traces matched" in n for n in page.notes)


def test_search_traces_filters_translate_to_span_search(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    server.script(datadog.SPANS_SEARCH, Reply(200, {"data": []}))
    q = TraceQuery(T0, T1, service="checkout", operation="GET /cart", min_duration_ms=250, status="error",
                   attributes={"http.status_code": "500"}, cursor="abc")  # fmt: skip
    page = run(source.search_traces(q))
    [seen] = server.seen()
    attrs = body_of(seen)["data"]["attributes"]
    assert attrs["filter"]["query"] == (
        'service:checkout resource_name:"GET /cart" @duration:>=250000000 status:error @http.status_code:500'
    )
    assert attrs["page"] == {"limit": 200, "cursor": "abc"}  # 10 spans per trace asked for
    assert page.traces == [] and page.next_cursor is None
    with pytest.raises(UnsupportedQuery, match="no unset status"):
        datadog.span_query(TraceQuery(T0, T1, status="unset"))


def test_get_trace_by_decimal_id_returns_every_span(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    server.script(datadog.SPANS_SEARCH, Reply(200, recorded("spans_search.json")), then=Reply(200, {"data": []}))
    spans = run(source.get_trace("6252933144469107600"))
    sent = [body_of(s)["data"]["attributes"] for s in server.seen()]
    assert sent[0]["filter"] == {"query": "trace_id:6252933144469107600", "from": "now-15d", "to": "now"}
    assert sent[1]["page"]["cursor"] == recorded("spans_search.json")["meta"]["page"]["after"]  # paged on
    # The recorded page holds spans of several traces: only the asked one's are kept.
    assert len(spans) == 2 and {s.trace_id for s in spans} == {"6252933144469107600"}
    root = next(s for s in spans if not s.parent_id)
    child = next(s for s in spans if s.parent_id)
    assert child.parent_id == root.span_id == "5407116910258794847"
    assert (root.service, root.name, root.kind, root.duration_ns, root.status) == (
        "java-sample-app-spartancrimson", "GET /", "Server", 1406493, "Unset"
    )  # fmt: skip
    assert root.attributes["http.status_code"] == "200"


def test_get_trace_by_otel_id_searches_the_lower_half_and_checks_the_upper(
    server: FaultyBackend, source: datadog.DatadogSource
) -> None:
    high = "64f5b0e400000000"
    otel = high + f"{6252933144469107600:016x}"
    answer = recorded("spans_search.json")
    del answer["meta"]
    java = [i for i in answer["data"] if i["attributes"]["trace_id"] == "6252933144469107600"]
    java[0]["attributes"]["custom"]["_dd"] = {"p": {"tid": high}}
    java[1]["attributes"]["custom"]["_dd"] = {"p": {"tid": "0000000000000001"}}  # another 128-bit trace
    server.script(datadog.SPANS_SEARCH, Reply(200, {"data": java}))
    spans = run(source.get_trace(otel.upper()))
    assert body_of(server.seen()[0])["data"]["attributes"]["filter"]["query"] == "trace_id:6252933144469107600"
    assert [s.trace_id for s in spans] == [otel]
    with pytest.raises(SourceError, match="not a trace id"):
        run(source.get_trace("xyz"))


def test_recorded_error_span_counts_as_error(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    answer = recorded("spans_search.json")
    item = answer["data"][0]
    item["attributes"]["custom"]["error"] = {"type": "TimeoutError", "message": "db timed out"}
    server.script(datadog.SPANS_SEARCH, Reply(200, {"data": [item]}))
    [span] = run(source.get_trace(item["attributes"]["trace_id"]))
    assert (span.status, span.status_message) == ("Error", "db timed out")


# -- metrics -------------------------------------------------------------------------------------------------


def test_query_metrics_builds_a_datadog_query_and_maps_the_recorded_series(
    server: FaultyBackend, source: datadog.DatadogSource
) -> None:
    server.script(datadog.QUERY, Reply(200, recorded("query_timeseries.json")))
    q = MetricQuery(T0, T1, name="system.cpu.idle", service="web", attributes={"env": "prod"}, group_by=("host",))
    page = run(source.query_metrics(q))
    [seen] = server.seen(datadog.QUERY)
    assert dict(seen.query) == {
        "from": str(T0 // 10**9),
        "to": str(T1 // 10**9),
        "query": "avg:system.cpu.idle{service:web,env:prod} by {host}.rollup(avg, 60)",
    }
    [series] = page.series
    assert page.step_s == 300 and page.query == dict(seen.query)["query"]
    assert [p.t for p in series.points[:2]] == ["2022-01-05T00:55:00.000Z", "2022-01-05T01:00:00.000Z"]
    assert series.points[0].v == pytest.approx(91.4583840476142)
    assert series.last == series.points[-1].v and series.labels == {}


def test_percentiles_need_a_distribution_metric(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    meta = spec_example("/api/v1/metrics/{metric_name}")  # its type is "count"
    server.script("/api/v1/metrics/http.requests", Reply(200, meta))
    server.script("/api/v1/metrics/http.latency", Reply(200, {**meta, "type": "distribution"}))
    server.script(datadog.QUERY, Reply(200, {"status": "ok", "series": []}))
    with pytest.raises(UnsupportedQuery, match=r"p95 needs a distribution metric.*http.requests is a count"):
        run(source.query_metrics(MetricQuery(T0, T1, name="http.requests", aggregation="p95")))
    page = run(source.query_metrics(MetricQuery(T0, T1, name="http.latency", service="web", aggregation="p95")))
    assert page.query == "p95:http.latency{service:web}"
    assert server.count(datadog.QUERY) == 1  # the refused query never reached Datadog


def test_rate_and_increase_use_as_rate_and_as_count(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    server.script("/api/v1/metrics/http.requests", then=Reply(200, spec_example("/api/v1/metrics/{metric_name}")))
    server.script("/api/v1/metrics/system.load.1", then=Reply(200, {"type": "gauge"}))
    server.script(datadog.QUERY, then=Reply(200, {"status": "ok", "series": []}))
    rate = run(source.query_metrics(MetricQuery(T0, T1, name="http.requests", aggregation="rate", step_s=30)))
    increase = run(source.query_metrics(MetricQuery(T0, T1, name="http.requests", aggregation="increase")))
    assert rate.query == "sum:http.requests{*}.as_rate().rollup(avg, 30)"
    assert increase.query == "sum:http.requests{*}.as_count().rollup(sum, 60)"
    with pytest.raises(UnsupportedQuery, match=r"system.load.1 is a gauge"):
        run(source.query_metrics(MetricQuery(T0, T1, name="system.load.1", aggregation="rate")))


def test_metric_queries_datadog_cannot_express_are_refused(
    server: FaultyBackend, source: datadog.DatadogSource
) -> None:
    server.script("/api/v1/metrics/no.such.metric", Reply(404, {"errors": ["Metric not found"]}))
    with pytest.raises(SourceError, match=r"no metric named 'no.such.metric'"):
        run(source.query_metrics(MetricQuery(T0, T1, name="no.such.metric", aggregation="p99")))
    with pytest.raises(UnsupportedQuery, match="cannot be a Datadog tag value"):
        run(source.query_metrics(MetricQuery(T0, T1, name="m", attributes={"route": "/a b"})))
    with pytest.raises(UnsupportedQuery, match="not a Datadog metric name"):
        run(source.query_metrics(MetricQuery(T0, T1, name="rate(x[5m])")))
    raw = "sum:trace.http.request.hits{env:prod}.as_count()"
    server.script(datadog.QUERY, Reply(200, {"status": "ok", "series": []}))
    assert run(source.query_metrics(MetricQuery(T0, T1, raw=raw))).query == raw


def test_list_metrics_filters_active_metrics_and_describes_them(
    server: FaultyBackend, source: datadog.DatadogSource
) -> None:
    server.script(datadog.ACTIVE_METRICS, then=Reply(200, spec_example("/api/v1/metrics")))
    server.script("/api/v1/metrics/system.cpu.idle", Reply(200, {"type": "gauge", "unit": "percent",
                                                                  "description": "CPU idle"}))  # fmt: skip
    listing = run(source.list_metrics("cpu", "web"))
    seen = server.seen(datadog.ACTIVE_METRICS)[0]
    assert dict(seen.query)["tag_filter"] == "service:web"
    [metric] = listing.metrics
    assert (metric.name, metric.type, metric.unit, metric.services) == ("system.cpu.idle", "gauge", "percent", ["web"])
    assert server.count("/api/v1/metrics/system.load.1") == 0  # filtered out before any metadata call
    # Without a filter both are listed; one without metadata (404) shows an unknown type, not an error.
    server.script("/api/v1/metrics/system.load.1", Reply(404, {"errors": ["Metric not found"]}))
    everything = run(source.list_metrics(None, None))
    assert [(m.name, m.type) for m in everything.metrics] == [
        ("system.cpu.idle", "gauge"),
        ("system.load.1", "unknown"),
    ]
    assert "tag_filter" not in dict(server.seen(datadog.ACTIVE_METRICS)[1].query)


def test_services_come_from_the_apm_service_list(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    # No recording exists: the shape is the spec's ServiceList schema (data.attributes.services).
    listing = {"data": {"type": "services_list", "id": "x", "attributes": {"services": ["web", "checkout"]}}}
    server.script(datadog.SERVICES, Reply(200, listing))
    assert run(source.services(T0, T1)) == ["checkout", "web"]
    assert dict(server.seen()[0].query) == {"filter[env]": "*"}


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "call", "permission"),
    [
        (datadog.LOGS_SEARCH, lambda s: s.search_logs(LogQuery(T0, T1)), "logs_read_data"),
        (datadog.SPANS_SEARCH, lambda s: s.search_traces(TraceQuery(T0, T1)), "apm_read"),
        (datadog.SPANS_SEARCH, lambda s: s.get_trace("1"), "apm_read"),
        (datadog.SERVICES, lambda s: s.services(T0, T1), "apm_read"),
        (datadog.ACTIVE_METRICS, lambda s: s.list_metrics(None, None), "metrics_read"),
        (datadog.QUERY, lambda s: s.query_metrics(MetricQuery(T0, T1, name="m")), "timeseries_query"),
    ],
)
def test_403_names_the_missing_permission(
    server: FaultyBackend, source: datadog.DatadogSource, path: str, call: Any, permission: str
) -> None:
    server.script(path, Reply(403, {"errors": ["Forbidden"]}))
    with pytest.raises(SourceError) as info:
        run(call(source))
    message = str(info.value)
    assert f"`{permission}`" in message and "Datadog said: Forbidden" in message and source.name in message
    # The spec agrees on the permission this operation needs.
    _, op, _ = _operation(server.seen()[0].method, path)
    assert permission in op.get("x-permission", {}).get("permissions", []) or permission in op["security"][1]["AuthZ"]


def test_400_and_422_quote_datadogs_errors(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    server.script(datadog.LOGS_SEARCH, Reply(400, {"errors": ["Invalid query: unexpected token ')'"]}))
    with pytest.raises(SourceError, match=r"rejected search_logs \(400\).*Invalid query: unexpected token"):
        run(source.search_logs(LogQuery(T0, T1, service="web")))
    server.script(datadog.SPANS_SEARCH, Reply(422, recorded("spans_search_422.json")))
    with pytest.raises(SourceError, match=r"\(422\).*Generic Error: invalid_argument\(Field 'filter.from,to'"):
        run(source.search_traces(TraceQuery(T0, T1)))


def test_a_rejected_key_is_explained_and_never_echoed(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    server.script(datadog.VALIDATE, Reply(403, recorded("validate_403.json")))
    with pytest.raises(
        SourceError, match=r"refused the API key \(403\).*API key required.*DATADOG_API_KEY and DD_SITE"
    ) as info:
        run(source.check())
    server.script(datadog.LOGS_SEARCH, Reply(403, {"errors": [f"key {API_KEY} / {APP_KEY} is not allowed"]}))
    with pytest.raises(SourceError) as echoed:
        run(source.search_logs(LogQuery(T0, T1)))
    for text in (str(info.value), str(echoed.value)):
        assert API_KEY not in text and APP_KEY not in text


def test_429_is_retried_by_the_client_then_reported(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    # Datadog's 429 carries X-RateLimit-* headers (docs.datadoghq.com/api/latest/rate-limits), no Retry-After:
    # the client backs off with jitter and retries the search (an idempotent read).
    limited = Reply(429, {"errors": ["Too many requests"]}, headers={"X-RateLimit-Reset": "1"})
    server.script(datadog.LOGS_SEARCH, limited, Reply(200, recorded("logs_search_last.json")))
    assert run(source.search_logs(LogQuery(T0, T1, service="a"))).records == []
    assert server.count(datadog.LOGS_SEARCH) == 2
    server.script(datadog.LOGS_SEARCH, then=limited)
    with pytest.raises(SourceError, match=r"rate-limited search_logs \(429\).*Too many requests"):
        run(source.search_logs(LogQuery(T0, T1, service="b")))
    assert server.count(datadog.LOGS_SEARCH) == 2 + 3  # the policy's 3 attempts


def test_the_spec_checker_rejects_what_datadog_does_not_define() -> None:
    """The checker these tests rest on must fail on a misspelled key, a wrong enum or type, an unknown
    parameter and a missing credential."""
    headers = {"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY}
    good = {"filter": {"query": "*", "from": "1", "to": "2"}, "sort": "-timestamp", "page": {"limit": 10}}
    validate_request(Seen("POST", datadog.LOGS_SEARCH, [], headers, json.dumps(good).encode(), 0.0, 0))
    for bad in (
        {**good, "sorting": "-timestamp"},
        {**good, "sort": "newest"},
        {**good, "page": {"limit": 1001}},
        {**good, "filter": {"query": "*", "form": "1"}},
    ):
        with pytest.raises(ValidationError):
            validate_request(Seen("POST", datadog.LOGS_SEARCH, [], headers, json.dumps(bad).encode(), 0.0, 0))
    with pytest.raises(AssertionError, match="not a query parameter"):
        validate_request(Seen("GET", datadog.QUERY, [("from", "1"), ("to", "2"), ("query", "m"), ("step", "60")],
                              headers, b"", 0.0, 0))  # fmt: skip
    with pytest.raises(AssertionError, match="must be an integer"):
        validate_request(
            Seen("GET", datadog.QUERY, [("from", "now-1h"), ("to", "2"), ("query", "m")], headers, b"", 0, 0)
        )
    with pytest.raises(AssertionError):
        validate_request(Seen("GET", datadog.QUERY, [("from", "1"), ("to", "2"), ("query", "m")], {}, b"", 0.0, 0))


def test_check_passes_on_a_valid_key(server: FaultyBackend, source: datadog.DatadogSource) -> None:
    server.script(datadog.VALIDATE, Reply(200, spec_example("/api/v1/validate")))
    run(source.check())
    assert server.count(datadog.VALIDATE) == 1


# -- configuration -------------------------------------------------------------------------------------------


def test_site_selects_the_api_host_of_that_site() -> None:
    spec_sites = set()
    for spec in SPECS:
        spec_sites |= set(spec["servers"][0]["variables"]["site"]["enum"])
    for i, site in enumerate(DATADOG_SITES):
        assert site in spec_sites, f"{site} is not a site of Datadog's published API"
        cfg = BackendConfig(name=f"dd-site-{i}", kind="datadog", site=site, api_key=API_KEY, app_key=APP_KEY)
        client = datadog.client_config(cfg)
        assert client.base_url == f"https://api.{site}"
        assert client.headers["DD-API-KEY"] == API_KEY and API_KEY not in repr(client)
    env = {"DATADOG_API_KEY": API_KEY, "DATADOG_APP_KEY": APP_KEY, "DD_SITE": "datadoghq.eu"}
    [entry] = backends_from_env(env)
    source = build_source(BackendConfig.model_validate(entry))  # as the registry builds it
    assert isinstance(source, datadog.DatadogSource)
    try:
        assert isinstance(source, LogSource) and isinstance(source, TraceSource) and isinstance(source, MetricSource)
        assert source.base_url == "https://api.datadoghq.eu" and source.signals == ("logs", "traces", "metrics")
    finally:
        source.client.close()
    default = BackendConfig(name="dd-default", kind="datadog", api_key=API_KEY, app_key=APP_KEY)
    assert datadog.client_config(default).base_url == "https://api.datadoghq.com"


def test_recorded_responses_match_the_spec() -> None:
    """The recordings are what the spec's response schemas describe (so the mapping tests rest on them)."""
    for name, path, method in [
        ("logs_search_page1.json", "/api/v2/logs/events/search", "post"),
        ("spans_search.json", "/api/v2/spans/events/search", "post"),
        ("query_timeseries.json", "/api/v1/query", "get"),
    ]:
        spec, op, _ = _operation(method, path)
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        Draft202012Validator(_json_schema({"components": spec["components"], **schema}, strict=False)).validate(
            recorded(name)
        )
