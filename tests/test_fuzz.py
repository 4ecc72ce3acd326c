"""Property-based fuzzing of every tool's arguments and of OTLP payloads: bad input never breaks the server.

Tools: arguments are generated from each tool's published input schema (as an MCP client reads it), with
adversarial strings (quotes, SQL fragments, regex metacharacters, control characters, unicode, huge and
non-finite numbers, wrong types), and sent through the MCP SDK's in-memory client to a real in-memory
store. An answer may be an error, but never an internal error (a bug: the server logs
`tool_internal_error`) and never Python traceback text; the store's row counts never change, and a
service filter never lets another service's rows through, whatever else the arguments hold.

OTLP: random bytes, mutated valid protobuf, OTLP/JSON with wrong types, and gzip of those (whole and
truncated) go over real HTTP to a running `obsmcp serve --http`. Every answer is 2xx or 4xx (5xx only as
429/503 with Retry-After), and the server stays healthy and keeps storing good requests.

Hypothesis runs derandomized with a fixed number of examples, so a run is reproducible and CI stays fast.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from tests.conftest import TELEMETRY_TABLES, TOOL_NAMES, ServerProcess, otlp_logs_protobuf

FUZZ = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NASTY = [
    "'",
    '"',
    "\\",
    "'; DROP TABLE otel_logs; --",
    "' OR '1'='1",
    'x\' UNION SELECT "Body" FROM otel_logs --',
    '") OR 1=1 --',
    "1; DELETE FROM otel_traces",
    "*/ SELECT 1 /*",
    "%",
    "_",
    "%' OR \"ServiceName\" LIKE '%",
    ".*",
    "(",
    "[",
    "(a+)+$",
    "a{100000}",
    "\\d{",
    "?",
    "$1",
    "\x00",
    "\n",
    "\r\n",
    "\u202e",
    "💥",
    "Ω≈ç√",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "NaN",
    "null",
    "-1",
    "1e309",
    "9" * 400,
    "x" * 5000,
    "now-100000000d",
    "now-1h",
    "15m",
    "0m",
    "2018-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "0123456789abcdef0123456789abcdef",
    "5b8efff798038103d269b633813fc60c",
    "checkout-service",
    "checkout",
    "service",
    "otel_logs",
    "SELECT 1",
    "SELECT * FROM otel_logs",
    "WITH x AS (SELECT 1) SELECT * FROM x",
]

TEXT = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=8)),
)
INTEGERS = st.one_of(
    st.integers(-5, 3000),
    st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 10**30]),
)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), INTEGERS, st.sampled_from([math.nan, math.inf, -math.inf, 1e308])
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _types(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type")
    if isinstance(t, list):
        return [str(x) for x in t]
    if isinstance(t, str):
        return [t]
    return [x for sub in schema.get("anyOf", []) for x in _types(sub)]


def value_strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the schema's type(s), biased to adversarial ones."""
    options: list[st.SearchStrategy[Any]] = []
    for t in _types(schema):
        if t == "string":
            options.append(TEXT)
        elif t == "integer":
            options.append(INTEGERS)
        elif t == "number":
            options.append(NUMBERS)
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "null":
            options.append(st.none())
        elif t == "object":
            options.append(st.dictionaries(TEXT, TEXT, max_size=3))
        elif t == "array":
            options.append(st.lists(value_strategy(schema.get("items", {"type": "string"})), max_size=3))
    return st.one_of(options) if options else JSON_VALUES


# Values that get a call past the first check, so the adversarial ones in the other arguments reach SQL.
PLAUSIBLE: dict[str, list[Any]] = {
    "start": ["2018-01-01T00:00:00Z", "now-1h", "15m", "30d", "1546300800"],
    "end": ["now", "2030-01-01T00:00:00Z", "now-1m"],
    "service": ["checkout-service", "payment", "my.service"],
    "trace_id": ["5b8efff798038103d269b633813fc60c", "5B8EFFF798038103D269B633813FC60C"],
    "metric": ["my.counter", "my.gauge", "my.histogram"],
    "sql": [
        "SELECT count(*) FROM otel_logs",
        'SELECT "Body" FROM otel_logs WHERE "Body" LIKE \'%\' LIMIT 3',
        'WITH t AS (SELECT * FROM otel_traces) SELECT "SpanName" FROM t',
    ],
    "kind": ["series", "red", "latency_histogram"],
    "aggregation": ["avg", "p95", "rate", "count"],
    "status": ["error", "ok", "unset"],
    "sort": ["count", "recent", "new"],
    "min_severity": ["info", "error", "17"],
    "baseline": ["previous", "none", "1d", "1h"],
    "step": ["1m", "1h"],
    "group_by": [["service"], ["http.route"]],
    "attributes": [{"http.route": "/cart"}],
}


@st.composite
def arguments_strategy(draw: st.DrawFn, input_schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments the schema allows, half the time plausible per argument; one call in eight also gets one
    argument of a wrong type (most calls must pass the SDK's validation to reach the tool)."""
    props: dict[str, Any] = input_schema.get("properties", {})
    required = set(input_schema.get("required", []))

    def values(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        if name in PLAUSIBLE:
            return st.one_of(st.sampled_from(PLAUSIBLE[name]), value_strategy(schema))
        return value_strategy(schema)

    args = draw(
        st.fixed_dictionaries(
            {k: values(k, v) for k, v in props.items() if k in required},
            optional={k: values(k, v) for k, v in props.items() if k not in required},
        )
    )
    if props and draw(st.integers(0, 7)) == 0:
        args[draw(st.sampled_from(sorted(props)))] = draw(JSON_VALUES)
    return args


# -- tool arguments (in-process) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory, otlp_examples: Path) -> Iterator[Runtime]:
    """An in-memory store with the OTLP examples and two services' logs; every tool is served."""
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("fuzz-tools"), ingest_flush_ms=5, tools=["all"])
    runtime = Runtime.open(settings_, in_memory=True)

    async def load() -> None:
        for name, signal in (("trace.json", "traces"), ("logs.json", "logs"), ("metrics.json", "metrics")):
            await runtime.receiver.ingest(signal, (otlp_examples / name).read_bytes(), "json")
        for service in ("checkout-service", "payment-service"):
            bodies = [f"{service} says hello {i} ' \" % _ .* (" for i in range(20)]
            await runtime.receiver.ingest("logs", otlp_logs_protobuf(service, bodies), "protobuf")

    try:
        asyncio.run(load())
        yield runtime
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def tool_schemas(rt: Runtime) -> dict[str, dict[str, Any]]:
    async def schemas() -> dict[str, dict[str, Any]]:
        async with Client(rt.mcp) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    return anyio.run(schemas)


def row_counts(runtime: Runtime) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TELEMETRY_TABLES)
    return {str(name): int(n) for name, n in runtime.db.query(sql)[1]}


async def _call(runtime: Runtime, name: str, args: dict[str, Any]) -> tuple[bool, str, Any]:
    async with Client(runtime.mcp) as client:
        r = await client.call_tool(name, args)
    text = "\n".join(getattr(c, "text", "") for c in r.content)
    return r.is_error, text, r.structured_content


def assert_no_internal_error(name: str, args: dict[str, Any], is_error: bool, text: str) -> None:
    where = f"{name}({json.dumps(args, default=str)[:400]})"
    assert "internal error" not in text, f"{where} hit a bug: {text[:500]}"
    if name != "query_sql":  # there the SQL is the caller's, and DuckDB's own errors are the answer
        assert "reading the store" not in text, f"{where} sent SQL the store refused: {text[:500]}"
    assert "Traceback" not in text and 'File "' not in text, f"{where} leaked a traceback: {text[:500]}"
    if is_error:
        assert text.strip(), f"{where} failed without saying why"


def test_every_tool_is_fuzzed(tool_schemas: dict[str, dict[str, Any]]) -> None:
    # The parametrized test below covers these names; a new tool must be added there too.
    assert set(tool_schemas) <= set(TOOLS), f"tools not fuzzed: {sorted(set(tool_schemas) - set(TOOLS))}"


# Every tool the server has (conftest.TOOL_NAMES, which the tool-list tests keep complete), in a stable order.
TOOLS = sorted(TOOL_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("tool", TOOLS)
@FUZZ
@given(data=st.data())
def test_tool_arguments_never_break_the_tool(
    rt: Runtime, tool_schemas: dict[str, dict[str, Any]], tool: str, data: st.DataObject
) -> None:
    if tool not in tool_schemas:
        pytest.skip(f"{tool} is not registered")
    args = data.draw(arguments_strategy(tool_schemas[tool]), label="arguments")
    before = row_counts(rt)
    is_error, text, _ = anyio.run(_call, rt, tool, args)
    assert_no_internal_error(tool, args, is_error, text)
    assert row_counts(rt) == before, f"{tool}({args}) changed the store"


@pytest.mark.slow
@FUZZ
@given(query=TEXT, regex=st.booleans(), attributes=st.none() | st.dictionaries(TEXT, TEXT, max_size=2))
def test_a_service_filter_never_lets_other_services_through(
    rt: Runtime, query: str, regex: bool, attributes: dict[str, str] | None
) -> None:
    args = {"service": "checkout-service", "query": query, "regex": regex, "start": "2018-01-01T00:00:00Z"}
    if attributes is not None:
        args["attributes"] = attributes  # type: ignore[assignment]
    is_error, text, structured = anyio.run(_call, rt, "search_logs", args)
    assert_no_internal_error("search_logs", args, is_error, text)
    if not is_error:
        services = {log["service"] for log in structured["logs"]}
        assert services <= {"checkout-service"}, f"search_logs({args}) returned other services: {services}"
    args = {"service": "checkout-service", "operation": query, "start": "2018-01-01T00:00:00Z"}
    is_error, text, structured = anyio.run(_call, rt, "search_traces", args)
    assert_no_internal_error("search_traces", args, is_error, text)
    if not is_error:
        for trace in structured["traces"]:
            assert "checkout-service" in trace["services"], f"search_traces({args}) returned {trace}"


# -- OTLP payloads over HTTP -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def otlp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz-otlp")
    srv = ServerProcess(tmp / "data", tmp, env={"OBSMCP_OTLP_MAX_BODY_BYTES": "1048576"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def _valid_protobuf() -> dict[str, bytes]:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    resource = resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="fuzz"))]
    )
    span = trace_pb2.Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="GET /fuzz",
        kind=2,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_000_100_000,
        attributes=[common_pb2.KeyValue(key="http.route", value=common_pb2.AnyValue(string_value="/fuzz"))],
        events=[trace_pb2.Span.Event(name="exception", time_unix_nano=1_700_000_000_000_000_001)],
    )
    traces = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )
    point = metrics_pb2.NumberDataPoint(time_unix_nano=1_700_000_000_000_000_000, as_double=1.5)
    hist = metrics_pb2.HistogramDataPoint(
        time_unix_nano=1_700_000_000_000_000_000, count=3, sum=1.0, bucket_counts=[1, 2], explicit_bounds=[0.5]
    )
    metric_req = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource,
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        metrics=[
                            metrics_pb2.Metric(name="fuzz.gauge", gauge=metrics_pb2.Gauge(data_points=[point])),
                            metrics_pb2.Metric(name="fuzz.hist", histogram=metrics_pb2.Histogram(data_points=[hist])),
                        ]
                    )
                ],
            )
        ]
    )
    return {
        "traces": traces.SerializeToString(),
        "logs": otlp_logs_protobuf("fuzz", ["fuzz record one", "fuzz record two"]),
        "metrics": metric_req.SerializeToString(),
    }


VALID_PB = _valid_protobuf()
SIGNALS = st.sampled_from(["traces", "logs", "metrics"])


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """A valid body with a few bytes flipped, inserted, deleted, or the tail cut."""
    out = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            out[i] = draw(st.integers(0, 255))
        elif op == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del out[i : i + draw(st.integers(1, 6))]
        else:
            del out[i:]
    return bytes(out)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


@st.composite
def wrong_json(draw: st.DrawFn, examples: dict[str, Any], signal: str) -> bytes:
    """An OTLP/JSON example with one to three values (anywhere in the tree) replaced by random JSON."""
    doc = copy.deepcopy(examples[signal])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _leaves(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def json_examples(otlp_examples: Path) -> dict[str, Any]:
    return {
        "traces": json.loads((otlp_examples / "trace.json").read_text()),
        "logs": json.loads((otlp_examples / "logs.json").read_text()),
        "metrics": json.loads((otlp_examples / "metrics.json").read_text()),
    }


def _post_and_check(srv: ServerProcess, http: httpx.Client, signal: str, body: bytes, ctype: str, gz: str) -> None:
    headers = {"Content-Type": ctype}
    if gz == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    elif gz == "truncated-gzip":
        whole = gzip.compress(body)
        body = whole[: max(1, len(whole) // 2)]
        headers["Content-Encoding"] = "gzip"
    r = http.post(f"{srv.otlp_url}/v1/{signal}", content=body, headers=headers)
    assert r.status_code < 500 or (r.status_code in (429, 503) and r.headers.get("Retry-After")), (
        f"{signal} {ctype} {gz}: {r.status_code} {r.text[:300]}"
    )
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text[:500]
    if gz == "truncated-gzip":
        assert r.status_code == 400, f"a truncated gzip body was answered {r.status_code}"


ENCODINGS = st.sampled_from(["identity", "gzip", "truncated-gzip"])
FUZZ_HTTP = settings(FUZZ, max_examples=60)


@pytest.mark.slow
@FUZZ_HTTP
@given(signal=SIGNALS, body=st.binary(max_size=2048), ctype_json=st.booleans(), gz=ENCODINGS)
def test_random_bytes_are_refused_cleanly(
    otlp_server: ServerProcess, http: httpx.Client, signal: str, body: bytes, ctype_json: bool, gz: str
) -> None:
    ctype = "application/json" if ctype_json else "application/x-protobuf"
    _post_and_check(otlp_server, http, signal, body, ctype, gz)


@pytest.mark.slow
@FUZZ_HTTP
@given(data=st.data(), signal=SIGNALS, gz=ENCODINGS)
def test_mutated_protobuf_is_refused_or_stored_cleanly(
    otlp_server: ServerProcess, http: httpx.Client, data: st.DataObject, signal: str, gz: str
) -> None:
    body = data.draw(mutated(VALID_PB[signal]), label="body")
    _post_and_check(otlp_server, http, signal, body, "application/x-protobuf", gz)


@pytest.mark.slow
@FUZZ_HTTP
@given(data=st.data(), signal=SIGNALS, gz=ENCODINGS)
def test_json_with_wrong_types_is_refused_or_stored_cleanly(
    otlp_server: ServerProcess,
    http: httpx.Client,
    json_examples: dict[str, Any],
    data: st.DataObject,
    signal: str,
    gz: str,
) -> None:
    body = data.draw(wrong_json(json_examples, signal), label="body")
    _post_and_check(otlp_server, http, signal, body, "application/json", gz)


@pytest.mark.slow
def test_server_is_healthy_after_the_fuzzing(otlp_server: ServerProcess, http: httpx.Client) -> None:
    """Runs after the OTLP fuzz tests (same module server): still healthy, still storing, no unhandled error."""
    r = http.post(
        f"{otlp_server.otlp_url}/v1/logs",
        content=otlp_logs_protobuf("after-fuzz", ["still here"]),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200, r.text
    assert otlp_server.healthy()
    log = otlp_server.log_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
