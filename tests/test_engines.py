"""The same tools over DuckDB and over ClickHouse (chDB) give the same answers, on the exporter's own tables.

One demo incident is decoded once and written, through each store's writer, into three stores: the embedded
DuckDB, and two ClickHouse databases created here with the OpenTelemetry Collector clickhouseexporter's own
DDL (shared/reference/storage.md section 1), not obsmcp's: `otel_current` has the current `otel_logs` (no
TimestampTime, materialized k8s columns) and v0.160 metric tables (DateTime time columns), `otel_previous`
the previous `otel_logs` (TimestampTime in the sort key) and the pre-v0.160 metric tables (DateTime64(9)).
Every tool then runs on each and the structured answers are compared.

chDB hosts one engine per process; both ClickHouse databases live in one in-memory engine.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import clickhouse_connect
import pytest
from pydantic import BaseModel

from obsmcp.config import Settings
from obsmcp.demo import DemoConfig, scenario_truth
from obsmcp.demo.generator import generate
from obsmcp.ingest.otlp import decode
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from obsmcp.tools import (
    anomalies,
    bottlenecks,
    charts,
    errors,
    investigate,
    logs,
    metrics,
    patterns,
    service_map,
    services,
    slo,
    sql,
    traces,
)

CHDB = "chdb://memory"
MIN_NS = 60 * 10**9

# -- the exporter's DDL (storage.md 1.1-1.5), rendered for one node with MergeTree() and no TTL ------------------

LOGS_CURRENT = """
CREATE TABLE IF NOT EXISTS {db}.otel_logs (
    `Timestamp` DateTime64(9) COMMENT 'Event timestamp with nanosecond precision' CODEC(Delta(8), ZSTD(1)),
    `TraceId` String COMMENT 'W3C trace identifier' CODEC(ZSTD(1)),
    `SpanId` String COMMENT 'W3C span identifier' CODEC(ZSTD(1)),
    `TraceFlags` UInt8 COMMENT 'W3C trace flags',
    `SeverityText` LowCardinality(String) COMMENT 'Log severity as text' CODEC(ZSTD(1)),
    `SeverityNumber` UInt8 COMMENT 'Log severity as number (1-24)',
    `ServiceName` LowCardinality(String) COMMENT 'Service that emitted the log' CODEC(ZSTD(1)),
    `Body` String COMMENT 'Log message body' CODEC(ZSTD(1)),
    `ResourceSchemaUrl` LowCardinality(String) COMMENT 'Schema URL for the resource' CODEC(ZSTD(1)),
    `ResourceAttributes` Map(LowCardinality(String), String) COMMENT 'Resource attributes' CODEC(ZSTD(1)),
    `ScopeSchemaUrl` LowCardinality(String) COMMENT 'Schema URL for the instrumentation scope' CODEC(ZSTD(1)),
    `ScopeName` String COMMENT 'Instrumentation scope name' CODEC(ZSTD(1)),
    `ScopeVersion` LowCardinality(String) COMMENT 'Instrumentation scope version' CODEC(ZSTD(1)),
    `ScopeAttributes` Map(LowCardinality(String), String) COMMENT 'Instrumentation scope attributes' CODEC(ZSTD(1)),
    `LogAttributes` Map(LowCardinality(String), String) COMMENT 'Log record attributes' CODEC(ZSTD(1)),
    `EventName` String COMMENT 'Event name for log records representing events' CODEC(ZSTD(1)),
    `__otel_materialized_k8s.pod.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.pod.name'],
    `__otel_materialized_k8s.namespace.name` LowCardinality(String)
        MATERIALIZED ResourceAttributes['k8s.namespace.name'],
    `__otel_materialized_deployment.environment.name` LowCardinality(String)
        MATERIALIZED ResourceAttributes['deployment.environment.name'] CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE text(tokenizer = 'array'),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE text(tokenizer = 'array'),
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE text(tokenizer = 'array'),
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE text(tokenizer = 'array'),
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE text(tokenizer = 'array'),
    INDEX idx_lower_body lower(Body) TYPE text(tokenizer = 'splitByNonAlpha')
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

LOGS_PREVIOUS = """
CREATE TABLE IF NOT EXISTS {db}.otel_logs (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

TRACES = """
CREATE TABLE IF NOT EXISTS {db}.otel_traces (
    Timestamp DateTime64(9) COMMENT 'Span start timestamp with nanosecond precision' CODEC(Delta, ZSTD(1)),
    TraceId String COMMENT 'W3C trace identifier' CODEC(ZSTD(1)),
    SpanId String COMMENT 'Unique span identifier within the trace' CODEC(ZSTD(1)),
    ParentSpanId String COMMENT 'Span identifier of the parent span' CODEC(ZSTD(1)),
    TraceState String COMMENT 'W3C tracestate header value' CODEC(ZSTD(1)),
    SpanName LowCardinality(String) COMMENT 'Logical name of the span operation' CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) COMMENT 'Span kind (CLIENT, SERVER, PRODUCER, CONSUMER, INTERNAL)' CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) COMMENT 'Service that emitted the span' CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) COMMENT 'Resource attributes' CODEC(ZSTD(1)),
    ScopeName String COMMENT 'Instrumentation scope name (e.g. library name)' CODEC(ZSTD(1)),
    ScopeVersion String COMMENT 'Instrumentation scope version' CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) COMMENT 'Span attributes as key-value pairs' CODEC(ZSTD(1)),
    Duration UInt64 COMMENT 'Span duration in nanoseconds' CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) COMMENT 'Span status code (UNSET, OK, ERROR)' CODEC(ZSTD(1)),
    StatusMessage String COMMENT 'Human-readable status message for errors' CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity=8192, ttl_only_drop_parts = 1
"""

TRACE_LOOKUP = """
CREATE TABLE IF NOT EXISTS {db}.otel_traces_trace_id_ts (
    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta, ZSTD(1)),
    End DateTime CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree()
    PARTITION BY toDate(Start)
    ORDER BY (TraceId, Start)
    SETTINGS index_granularity=8192, ttl_only_drop_parts = 1
"""

TRACE_LOOKUP_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.otel_traces_trace_id_ts_mv
TO {db}.otel_traces_trace_id_ts
AS SELECT TraceId, min(Timestamp) as Start, max(Timestamp) as End
   FROM {db}.otel_traces WHERE TraceId != '' GROUP BY TraceId
"""


def _metric_common(time_type: str, name_type: str) -> str:
    return f"""
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl String CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    MetricName {name_type} CODEC(ZSTD(1)),
    MetricDescription String CODEC(ZSTD(1)),
    MetricUnit String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix {time_type} CODEC(Delta, ZSTD(1)),
    TimeUnix {time_type} CODEC(Delta, ZSTD(1)),"""


def _exemplars(time_type: str) -> str:
    return f"""
    Exemplars Nested (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix {time_type},
        Value Float64,
        SpanId String,
        TraceId String
    ) CODEC(ZSTD(1)),"""


_INDEXES = """
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1"""


def metric_tables(current: bool) -> list[str]:
    """v0.160+ (DateTime, LowCardinality MetricName, minmax index, new ORDER BY) or the previous tables."""
    t = "DateTime" if current else "DateTime64(9)"
    common = _metric_common(t, "LowCardinality(String)" if current else "String")
    ex = _exemplars(t)
    if current:
        tail = (
            _INDEXES + ",\n    INDEX idx_time_minmax TimeUnix TYPE minmax GRANULARITY 1\n) ENGINE = MergeTree()\n"
            "PARTITION BY toDate(TimeUnix)\n"
            "ORDER BY (ServiceName, MetricName, toStartOfHour(TimeUnix), cityHash64(Attributes), TimeUnix)\n"
            "SETTINGS index_granularity=8192, ttl_only_drop_parts = 1"
        )
    else:
        tail = (
            _INDEXES + "\n) ENGINE = MergeTree()\nPARTITION BY toDate(TimeUnix)\n"
            "ORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))\n"
            "SETTINGS index_granularity=8192, ttl_only_drop_parts = 1"
        )
    value = "\n    Value Float64 CODEC(ZSTD(1)),\n    Flags UInt32 CODEC(ZSTD(1)),"
    hist_tail = (
        "\n    Flags UInt32 CODEC(ZSTD(1)),\n    Min Float64 CODEC(ZSTD(1)),\n    Max Float64 CODEC(ZSTD(1)),"
        "\n    AggregationTemporality Int32 CODEC(ZSTD(1)),"
    )
    bodies = {
        "otel_metrics_gauge": value + ex,
        "otel_metrics_sum": value
        + ex
        + "\n    AggregationTemporality Int32 CODEC(ZSTD(1)),\n    IsMonotonic Boolean CODEC(Delta, ZSTD(1)),",
        "otel_metrics_histogram": "\n    Count UInt64 CODEC(Delta, ZSTD(1)),\n    Sum Float64 CODEC(ZSTD(1)),"
        "\n    BucketCounts Array(UInt64) CODEC(ZSTD(1)),\n    ExplicitBounds Array(Float64) CODEC(ZSTD(1)),"
        + ex
        + hist_tail,
        "otel_metrics_exponential_histogram": "\n    Count UInt64 CODEC(Delta, ZSTD(1)),"
        "\n    Sum Float64 CODEC(ZSTD(1)),\n    Scale Int32 CODEC(ZSTD(1)),\n    ZeroCount UInt64 CODEC(ZSTD(1)),"
        "\n    PositiveOffset Int32 CODEC(ZSTD(1)),\n    PositiveBucketCounts Array(UInt64) CODEC(ZSTD(1)),"
        "\n    NegativeOffset Int32 CODEC(ZSTD(1)),\n    NegativeBucketCounts Array(UInt64) CODEC(ZSTD(1)),"
        + ex
        + hist_tail,
        "otel_metrics_summary": "\n    Count UInt64 CODEC(Delta, ZSTD(1)),\n    Sum Float64 CODEC(ZSTD(1)),"
        "\n    ValueAtQuantiles Nested(\n        Quantile Float64,\n        Value Float64\n    ) CODEC(ZSTD(1)),"
        "\n    Flags UInt32 CODEC(ZSTD(1)),",
    }
    return [f"CREATE TABLE IF NOT EXISTS {{db}}.{name} ({common}{body}{tail}" for name, body in bodies.items()]


def create_exporter_tables(client: Any, db: str, *, current: bool) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    ddl = [LOGS_CURRENT if current else LOGS_PREVIOUS, TRACES, TRACE_LOOKUP, TRACE_LOOKUP_MV]
    for statement in ddl + metric_tables(current):
        client.command(statement.format(db=db))


# -- the three stores, loaded with one incident ---------------------------------------------------------------


class Stores:
    def __init__(self, runtimes: dict[str, Runtime], cfg: DemoConfig) -> None:
        self.runtimes = runtimes
        self.cfg = cfg
        self.truth = scenario_truth(cfg)
        assert cfg.end_ns is not None
        self.start = format_ns(cfg.end_ns - int(cfg.duration_s * 1e9))
        self.end = format_ns(cfg.end_ns + 10**9)
        self.window = {"start": self.start, "end": self.end}

    def run(self, fn: Callable[..., tuple[Any, ...]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """fn(ctx, ...) on every store -> engine name -> structured answer (a dict)."""
        out = {}
        for name, rt in self.runtimes.items():
            res = fn(rt.ctx, *args, **kwargs)[0]
            out[name] = res.model_dump() if isinstance(res, BaseModel) else res
        return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    # The clock ends on a whole minute so that every time bucket lines up the same way on all stores.
    end_ns = (time.time_ns() // MIN_NS - 1) * MIN_NS
    cfg = DemoConfig(
        scenario="deploy-errors", seed=7, duration_s=1800.0, rate=1.0, incident_start_before_end_s=720.0, end_ns=end_ns
    )
    # An in-memory chDB engine lives while any handle is open: this one stays open until the end.
    admin = clickhouse_connect.get_client(interface="chdb", path=":memory:")
    create_exporter_tables(admin, "otel_current", current=True)
    create_exporter_tables(admin, "otel_previous", current=False)

    def settings(store: str | None) -> Settings:
        return Settings(data_dir=tmp_path_factory.mktemp("engines"), retention_days=36500, store=store)

    runtimes = {"duckdb": Runtime.open(settings(None), in_memory=True)}
    for db in ("otel_current", "otel_previous"):
        runtimes[db] = Runtime.open(settings(f"{CHDB}?database={db}&create_tables=0"))
    try:
        futures = []
        for req in generate(cfg):
            batch = decode(req.signal, req.payload, "protobuf")
            futures += [rt.writer.submit(batch.tables) for rt in runtimes.values()]
        for f in futures:
            f.result(60)
        yield Stores(runtimes, cfg)
    finally:
        for rt in runtimes.values():
            rt.close()
        admin.close()


# -- comparing answers ------------------------------------------------------------------------------------------


FENCE = re.compile(r"(<<<(?:end )?[a-z]+ )[0-9a-f]{8}")


def rounded(value: Any, digits: int = 9) -> Any:
    """Floats to `digits` significant digits (sums of floats differ in the last bits between engines), and the
    random fence ids in text replaced."""
    if isinstance(value, str):
        return FENCE.sub(r"\1-", value)
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return value
        return round(value, digits - 1 - math.floor(math.log10(abs(value))))
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def assert_same(answers: dict[str, Any], *, drop: tuple[str, ...] = (), drop_current: tuple[str, ...] = ()) -> Any:
    """Every store answered the same as DuckDB (apart from the keys in `drop`, and on otel_current those in
    `drop_current`: figures its whole-second metric times change); returns DuckDB's answer."""

    def clean(v: Any, keys: tuple[str, ...]) -> Any:
        if isinstance(v, dict):
            return {k: clean(x, keys) for k, x in v.items() if k not in keys}
        if isinstance(v, list):
            return [clean(x, keys) for x in v]
        return v

    for name, answer in answers.items():
        keys = drop + (drop_current if name == "otel_current" else ())
        got, base = rounded(clean(answer, keys)), rounded(clean(answers["duckdb"], keys))
        assert got == base, f"{name} differs from duckdb at {first_difference(got, base)}"
    return answers["duckdb"]


def first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {a!r:.300} != {b!r:.300}"


# -- the tests --------------------------------------------------------------------------------------------------


def test_the_stores_hold_the_same_rows(stores: Stores) -> None:
    stats = {name: rt.db.table_stats() for name, rt in stores.runtimes.items()}
    for name in ("otel_logs", "otel_traces", "otel_metrics_sum", "otel_metrics_histogram"):
        assert stats["duckdb"][name] > 0
        assert stats["otel_current"][name] == stats["duckdb"][name] == stats["otel_previous"][name], name


def test_previous_logs_schema_is_detected_and_filtered_by_its_sort_key(stores: Stores) -> None:
    assert stores.runtimes["otel_previous"].db.dialect.log_time_key == "TimestampTime"
    assert stores.runtimes["otel_current"].db.dialect.log_time_key is None


def test_the_schema_resource_shows_the_tables_as_the_store_has_them(stores: Stores) -> None:
    from obsmcp.tools.sql import schema_text

    previous = schema_text(stores.runtimes["otel_previous"].ctx)
    current = schema_text(stores.runtimes["otel_current"].ctx)
    assert "CREATE TABLE otel_previous.otel_logs" in previous and "TimestampTime" in previous
    assert "CREATE TABLE otel_current.otel_traces" in current and "TimestampTime" not in current
    assert "attr(" in schema_text(stores.runtimes["duckdb"].ctx)  # DuckDB's own DDL and macros


def test_list_services_is_the_same_on_every_engine(stores: Stores) -> None:
    res = assert_same(stores.run(services.list_services, **stores.window), drop_current=("first_seen", "last_seen"))
    assert len(res["services"]) >= 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"query": "error"},
        {"query": "50%_"},
        {"min_severity": "error"},
        {"service": "payment", "limit": 5},
        {"query": r"status[ =]5\d\d", "regex": True},
    ],
    ids=["all", "text", "literal-wildcards", "errors", "service-page", "regex"],
)
def test_search_logs_is_the_same_on_every_engine(stores: Stores, kwargs: dict[str, Any]) -> None:
    assert_same(stores.run(logs.search_logs, **kwargs, **stores.window))


def test_search_logs_by_attribute_and_trace_id(stores: Stores) -> None:
    first = stores.run(logs.search_logs, min_severity="error", limit=1, **stores.window)["duckdb"]["logs"][0]
    if first["trace_id"]:
        assert_same(stores.run(logs.search_logs, trace_id=first["trace_id"], **stores.window))
    key, value = next(iter(first["attributes"].items()))
    res = assert_same(stores.run(logs.search_logs, attributes={key: value}, **stores.window))
    assert res["total"] >= 1


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"status": "error"}, {"min_duration_ms": 200}, {"service": "checkout", "operation": "POST"}],
    ids=["all", "errors", "slow", "service-operation"],
)
def test_search_traces_is_the_same_on_every_engine(stores: Stores, kwargs: dict[str, Any]) -> None:
    assert_same(stores.run(traces.search_traces, **kwargs, **stores.window))


def test_get_trace_is_the_same_on_every_engine(stores: Stores) -> None:
    found = stores.run(traces.search_traces, status="error", limit=3, **stores.window)["duckdb"]["traces"]
    assert found
    for t in found:
        res = assert_same(stores.run(traces.get_trace, t["trace_id"]))
        assert res["span_count"] == t["spans"]


def test_list_metrics_is_the_same_on_every_engine(stores: Stores) -> None:
    res = assert_same(stores.run(metrics.list_metrics))
    assert {m["type"] for m in res["metrics"]} >= {"gauge", "sum", "histogram"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metric": "http.server.request.duration", "aggregation": "p95", "group_by": ["service"]},
        {"metric": "http.server.request.duration", "aggregation": "rate"},
        {"metric": "db.client.connections.usage", "aggregation": "max", "group_by": ["state"]},
    ],
    ids=["histogram-p95", "histogram-rate", "gauge"],
)
def test_query_metrics_is_the_same_on_every_engine(stores: Stores, kwargs: dict[str, Any]) -> None:
    # Only the previous metric tables keep nanoseconds: v0.160+ stores whole seconds (DateTime), which moves
    # points across step boundaries and changes rates; there the series must still be the same ones.
    answers = stores.run(metrics.query_metrics, **kwargs, step="1m", **stores.window)
    current = answers.pop("otel_current")
    res = assert_same(answers)
    assert [s["labels"] for s in current["series"]] == [s["labels"] for s in res["series"]]
    assert any(p["v"] is not None for s in res["series"] for p in s["points"])


def test_find_errors_and_details_are_the_same_on_every_engine(stores: Stores) -> None:
    res = assert_same(stores.run(errors.find_errors, **stores.window))
    assert res["groups"]
    for group in res["groups"][:3]:
        assert_same(stores.run(errors.get_error_details, group["error_id"], **stores.window))


@pytest.mark.parametrize(
    "query",
    [
        'SELECT "ServiceName", count(*) AS n FROM otel_traces GROUP BY 1 ORDER BY 2 DESC, 1',
        'SELECT "SeverityText", count(*) AS n FROM otel_logs WHERE "Body" ILIKE \'%error%\' GROUP BY 1 ORDER BY 1',
        'SELECT "Timestamp", "ServiceName" FROM otel_logs ORDER BY "Timestamp", "ServiceName", "Body" LIMIT 3',
    ],
)
def test_query_sql_portable_sql_is_the_same_on_every_engine(stores: Stores, query: str) -> None:
    assert_same(stores.run(sql.query_sql, query))


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
        "SELECT * FROM (SELECT 1) JOIN python('settings') ON 1",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "INSERT INTO otel_logs (Body) VALUES ('x')",
        "DROP TABLE otel_logs",
        "SELECT 1; DROP TABLE otel_logs",
        "SELECT count() FROM otel_logs SETTINGS readonly = 0",
        "SELECT count() FROM otel_logs SETTINGS max_execution_time = 3600",
    ],
    ids=["file", "url", "python-objects", "remote", "insert", "drop", "two-statements", "readonly-off", "timeout-off"],
)
def test_query_sql_refuses_writes_files_and_settings_on_clickhouse(stores: Stores, query: str) -> None:
    from obsmcp.tools.context import ToolInputError

    rt = stores.runtimes["otel_current"]
    with pytest.raises(ToolInputError):
        sql.query_sql(rt.ctx, query)
    assert rt.db.table_stats()["otel_logs"] == stores.runtimes["duckdb"].db.table_stats()["otel_logs"]


def test_query_timeout_stops_a_long_clickhouse_query(stores: Stores) -> None:
    from obsmcp.store.database import QueryTimeoutError

    with pytest.raises(QueryTimeoutError, match="longer than 1s"):
        stores.runtimes["otel_current"].db.query("SELECT count() FROM numbers(100000000000)", timeout_s=1)


def test_search_logs_counts_with_a_low_exact_count_cap_on_every_engine(stores: Stores) -> None:
    # Above exact_count_max_rows DuckDB may estimate from a TABLESAMPLE; ClickHouse cannot sample the exporter's
    # tables (no SAMPLE BY key) and counts exactly. Under SAMPLE_ROWS records in range both count exactly (a
    # cap below that used to ask DuckDB for a sample of over 100 %, a parser error).
    from obsmcp.tools.context import ToolContext

    answers = {}
    for name, rt in stores.runtimes.items():
        ctx = ToolContext(rt.db, rt.ctx.settings.model_copy(update={"exact_count_max_rows": 1000}))
        answers[name] = logs.search_logs(ctx, query="request", limit=5, **stores.window)[0].model_dump()
    res = assert_same(answers)
    assert not res["counts_estimated"] and res["total"] > 1000


def test_an_invalid_regex_is_the_callers_mistake_on_every_engine(stores: Stores) -> None:
    from obsmcp.tools.context import ToolInputError

    for rt in stores.runtimes.values():
        with pytest.raises(ToolInputError, match="RE2"):
            logs.search_logs(rt.ctx, query="status=(5", regex=True, **stores.window)


# -- analysis tools --------------------------------------------------------------------------------------------


def test_slo_report_is_the_same_on_every_engine(stores: Stores) -> None:
    assert_same(stores.run(slo.slo_report, end=stores.end))


def test_metric_based_slos_are_the_same_on_every_engine(stores: Stores) -> None:
    from obsmcp.config import SLOConfig
    from obsmcp.tools.context import ToolContext

    svc = stores.truth.root_cause_service
    histogram = "http.server.request.duration"
    slos = [
        SLOConfig(
            name="lat", service=svc, sli="latency", objective=95, threshold_ms=250, source="metric", metric=histogram
        ),
        SLOConfig(name="avail", service=svc, sli="availability", objective=99, source="metric", metric=histogram),
    ]
    answers = {}
    for name, rt in stores.runtimes.items():
        ctx = ToolContext(rt.db, rt.ctx.settings.model_copy(update={"slos": slos}))
        answers[name] = slo.slo_report(ctx, service=svc, end=stores.end)[0].model_dump()
    # Whole-second metric times (v0.160+) can reorder a series' points within a second: compare the others.
    current = answers.pop("otel_current")
    res = assert_same(answers)
    assert [s["name"] for s in current["services"][0]["slos"]] == [s["name"] for s in res["services"][0]["slos"]]
    assert all(s["events_range"] for s in res["services"][0]["slos"])


def test_log_patterns_are_the_same_on_every_engine(stores: Stores) -> None:
    assert_same(stores.run(patterns.log_patterns, **stores.window))


def test_find_bottlenecks_is_the_same_on_every_engine(stores: Stores) -> None:
    assert_same(stores.run(bottlenecks.find_bottlenecks, **stores.window))


def test_service_map_is_the_same_on_every_engine(stores: Stores) -> None:
    res = assert_same(stores.run(service_map.service_map, **stores.window))
    assert res["edges"]


def test_detect_anomalies_is_the_same_on_every_engine(stores: Stores) -> None:
    assert_same(stores.run(anomalies.detect_anomalies, **stores.window))


def test_render_chart_is_the_same_on_every_engine(stores: Stores) -> None:
    svc = stores.truth.root_cause_service
    for kind in ("red", "latency_histogram"):
        answers = {
            name: charts.render_chart(rt.ctx, kind=kind, service=svc, **stores.window)[0].model_dump()
            for name, rt in stores.runtimes.items()
        }
        assert_same(answers)


def test_investigate_names_the_same_suspects_on_every_engine(stores: Stores) -> None:
    answers = stores.run(investigate.investigate, **stores.window)
    res = assert_same(answers)
    assert res["status"] == "incident"
    assert res["suspects"][0]["service"] == stores.truth.root_cause_service


# -- ingest into ClickHouse and `serve --store` ------------------------------------------------------------------


@pytest.mark.slow
def test_serve_with_a_chdb_store_commits_every_acknowledged_otlp_request(server_factory: Any, tmp_path: Any) -> None:
    """`obsmcp serve --store chdb:///DIR` (its own process: chDB hosts one engine per process) receives OTLP/HTTP
    into the exporter's tables it creates, answers tools from them, and keeps them across a restart."""
    import anyio
    import httpx
    from mcp import Client

    from tests.conftest import call_tool, otlp_logs_protobuf, sql_scalar

    env = {"OBSMCP_STORE": f"chdb://{tmp_path / 'clickhouse'}"}
    srv = server_factory(env=env)
    for i in range(3):
        body = otlp_logs_protobuf("ingest-service", [f"order {i}-{n} failed: card declined" for n in range(200)], 17)
        r = httpx.post(f"{srv.otlp_url}/v1/logs", content=body, headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200, r.text
    count_sql = "SELECT count() FROM otel_logs WHERE ServiceName = 'ingest-service'"

    async def answers() -> tuple[Any, Any]:
        async with Client(srv.mcp_url) as client:
            n = await sql_scalar(client, count_sql)
            found = await call_tool(client, "search_logs", {"query": "card declined", "min_severity": "error"})
            return n, found.structured_content

    n, found = anyio.run(answers)
    assert n == 600  # acknowledged means stored: counted right after the 200s, with no wait
    assert found["total"] == 600 and found["logs"][0]["service"] == "ingest-service"
    srv.stop()
    srv.start()
    assert anyio.run(answers)[0] == 600


@pytest.mark.slow
def test_serve_store_url_mistakes_fail_at_start_naming_the_setting_without_the_password(tmp_path: Any) -> None:
    from tests.conftest import run_cli

    bad = run_cli("serve", "--store", "mysql://admin:s3cr3t-pw@db:3306/otel", "--data-dir", str(tmp_path))
    assert bad.returncode != 0
    assert "--store" in bad.stderr and "clickhouse://" in bad.stderr
    assert "s3cr3t-pw" not in bad.stdout + bad.stderr
    # A well-formed URL of a server that is not there: a clear failure at start, not at the first tool call.
    down = run_cli("serve", "--store", "clickhouse://admin:s3cr3t-pw@127.0.0.1:9/otel", "--data-dir", str(tmp_path))
    assert down.returncode != 0
    assert "could not open the ClickHouse store clickhouse://admin:***@127.0.0.1:9/otel" in down.stderr
    assert "s3cr3t-pw" not in down.stdout + down.stderr
