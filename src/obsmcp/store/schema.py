"""The store's tables: the OpenTelemetry Collector ClickHouse exporter's names, in DuckDB types.

One definition serves three purposes: the DuckDB DDL, the Arrow schema that the OTLP decoder must produce
(so a decoded batch inserts with a plain ``INSERT INTO t SELECT * FROM batch``), and the column list the
query layer may rely on. Column names and meanings follow the exporter (see shared/reference/storage.md):
``SpanKind`` is ``Server``/``Client``/..., ``StatusCode`` is ``Ok``/``Error``/``Unset``, ``Duration`` is in
nanoseconds, ``Events.*``/``Links.*``/``Exemplars.*`` are parallel arrays (ClickHouse ``Nested``).

Time columns are ``TIMESTAMP_NS`` holding UTC (DuckDB has no zone on it; everything inside obsmcp is UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 2

_STR = pa.string()
_TS = pa.timestamp("ns")

# Attribute maps (the exporter's Map(LowCardinality(String), String)) are stored as a list of (key, value)
# structs: the physical layout of a DuckDB MAP without the key-uniqueness check MAP runs on insert, which
# limited inserts of 12-key resource maps to ~100k rows/s against ~1M rows/s for the list (measured with
# demo spans). The decoder already keeps one value per key. Read one with the dialect's `attr()` (a DuckDB
# macro of the same name exists for query_sql: attr("SpanAttributes", 'http.route')).
ATTRIBUTES_SQL = "STRUCT(key VARCHAR, value VARCHAR)[]"
ATTRIBUTES = pa.list_(pa.struct([pa.field("key", _STR), pa.field("value", _STR)]))
_MAP = ATTRIBUTES


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    arrow_type: pa.DataType


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    # Column used for retention and time pruning.
    time_column: str

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ",\n    ".join(f'"{c.name}" {c.sql_type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {cols}\n)"


def _c(name: str, sql_type: str, arrow_type: pa.DataType) -> Column:
    return Column(name, sql_type, arrow_type)


def _s(name: str) -> Column:
    return Column(name, "VARCHAR", _STR)


def _m(name: str) -> Column:
    return Column(name, ATTRIBUTES_SQL, ATTRIBUTES)


def _ts(name: str) -> Column:
    return Column(name, "TIMESTAMP_NS", _TS)


LOGS = Table(
    "otel_logs",
    (
        _ts("Timestamp"),
        _s("TraceId"),
        _s("SpanId"),
        _c("TraceFlags", "UTINYINT", pa.uint8()),
        _s("SeverityText"),
        _c("SeverityNumber", "UTINYINT", pa.uint8()),
        _s("ServiceName"),
        _s("Body"),
        _s("ResourceSchemaUrl"),
        _m("ResourceAttributes"),
        _s("ScopeSchemaUrl"),
        _s("ScopeName"),
        _s("ScopeVersion"),
        _m("ScopeAttributes"),
        _m("LogAttributes"),
        _s("EventName"),
    ),
    "Timestamp",
)

TRACES = Table(
    "otel_traces",
    (
        _ts("Timestamp"),
        _s("TraceId"),
        _s("SpanId"),
        _s("ParentSpanId"),
        _s("TraceState"),
        _s("SpanName"),
        _s("SpanKind"),
        _s("ServiceName"),
        _m("ResourceAttributes"),
        _s("ScopeName"),
        _s("ScopeVersion"),
        _m("SpanAttributes"),
        _c("Duration", "UBIGINT", pa.uint64()),
        _s("StatusCode"),
        _s("StatusMessage"),
        _c("Events.Timestamp", "TIMESTAMP_NS[]", pa.list_(_TS)),
        _c("Events.Name", "VARCHAR[]", pa.list_(_STR)),
        _c("Events.Attributes", ATTRIBUTES_SQL + "[]", pa.list_(_MAP)),
        _c("Links.TraceId", "VARCHAR[]", pa.list_(_STR)),
        _c("Links.SpanId", "VARCHAR[]", pa.list_(_STR)),
        _c("Links.TraceState", "VARCHAR[]", pa.list_(_STR)),
        _c("Links.Attributes", ATTRIBUTES_SQL + "[]", pa.list_(_MAP)),
    ),
    "Timestamp",
)

# Trace-id lookup table, like the exporter's otel_traces_trace_id_ts: one small row per (trace, batch) so
# get_trace finds a trace's time range without scanning every span, then reads otel_traces pruned by time.
TRACE_ID_TS = Table(
    "otel_traces_trace_id_ts",
    (_s("TraceId"), _ts("Start"), _ts("End")),
    "Start",
)

_METRIC_COMMON = (
    _m("ResourceAttributes"),
    _s("ResourceSchemaUrl"),
    _s("ScopeName"),
    _s("ScopeVersion"),
    _m("ScopeAttributes"),
    _c("ScopeDroppedAttrCount", "UINTEGER", pa.uint32()),
    _s("ScopeSchemaUrl"),
    _s("ServiceName"),
    _s("MetricName"),
    _s("MetricDescription"),
    _s("MetricUnit"),
    _m("Attributes"),
    _ts("StartTimeUnix"),
    _ts("TimeUnix"),
)

_EXEMPLARS = (
    _c("Exemplars.FilteredAttributes", ATTRIBUTES_SQL + "[]", pa.list_(_MAP)),
    _c("Exemplars.TimeUnix", "TIMESTAMP_NS[]", pa.list_(_TS)),
    _c("Exemplars.Value", "DOUBLE[]", pa.list_(pa.float64())),
    _c("Exemplars.SpanId", "VARCHAR[]", pa.list_(_STR)),
    _c("Exemplars.TraceId", "VARCHAR[]", pa.list_(_STR)),
)

_FLAGS = _c("Flags", "UINTEGER", pa.uint32())
_TEMPORALITY = _c("AggregationTemporality", "INTEGER", pa.int32())
_COUNT = _c("Count", "UBIGINT", pa.uint64())
_SUM = _c("Sum", "DOUBLE", pa.float64())
_MIN = _c("Min", "DOUBLE", pa.float64())
_MAX = _c("Max", "DOUBLE", pa.float64())

METRICS_GAUGE = Table(
    "otel_metrics_gauge",
    (*_METRIC_COMMON, _c("Value", "DOUBLE", pa.float64()), _FLAGS, *_EXEMPLARS),
    "TimeUnix",
)

METRICS_SUM = Table(
    "otel_metrics_sum",
    (
        *_METRIC_COMMON,
        _c("Value", "DOUBLE", pa.float64()),
        _FLAGS,
        *_EXEMPLARS,
        _TEMPORALITY,
        _c("IsMonotonic", "BOOLEAN", pa.bool_()),
    ),
    "TimeUnix",
)

METRICS_HISTOGRAM = Table(
    "otel_metrics_histogram",
    (
        *_METRIC_COMMON,
        _COUNT,
        _SUM,
        _c("BucketCounts", "UBIGINT[]", pa.list_(pa.uint64())),
        _c("ExplicitBounds", "DOUBLE[]", pa.list_(pa.float64())),
        *_EXEMPLARS,
        _FLAGS,
        _MIN,
        _MAX,
        _TEMPORALITY,
    ),
    "TimeUnix",
)

METRICS_EXP_HISTOGRAM = Table(
    "otel_metrics_exponential_histogram",
    (
        *_METRIC_COMMON,
        _COUNT,
        _SUM,
        _c("Scale", "INTEGER", pa.int32()),
        _c("ZeroCount", "UBIGINT", pa.uint64()),
        _c("PositiveOffset", "INTEGER", pa.int32()),
        _c("PositiveBucketCounts", "UBIGINT[]", pa.list_(pa.uint64())),
        _c("NegativeOffset", "INTEGER", pa.int32()),
        _c("NegativeBucketCounts", "UBIGINT[]", pa.list_(pa.uint64())),
        *_EXEMPLARS,
        _FLAGS,
        _MIN,
        _MAX,
        _TEMPORALITY,
    ),
    "TimeUnix",
)

METRICS_SUMMARY = Table(
    "otel_metrics_summary",
    (
        *_METRIC_COMMON,
        _COUNT,
        _SUM,
        _c("ValueAtQuantiles.Quantile", "DOUBLE[]", pa.list_(pa.float64())),
        _c("ValueAtQuantiles.Value", "DOUBLE[]", pa.list_(pa.float64())),
        _FLAGS,
    ),
    "TimeUnix",
)

METRIC_TABLES: dict[str, Table] = {
    "gauge": METRICS_GAUGE,
    "sum": METRICS_SUM,
    "histogram": METRICS_HISTOGRAM,
    "exponential_histogram": METRICS_EXP_HISTOGRAM,
    "summary": METRICS_SUMMARY,
}

# Tables that hold telemetry (retention applies to all of them), in a stable order.
TELEMETRY_TABLES: tuple[Table, ...] = (LOGS, TRACES, TRACE_ID_TS, *METRIC_TABLES.values())
TABLES: dict[str, Table] = {t.name: t for t in TELEMETRY_TABLES}

META_DDL = "CREATE TABLE IF NOT EXISTS obsmcp_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"

# attr(attributes, key) -> the value or NULL; attr_keys(attributes) -> the keys.
MACROS_DDL = (
    "CREATE OR REPLACE MACRO attr(m, k) AS list_filter(m, lambda x: x.key = k)[1].value",
    "CREATE OR REPLACE MACRO attr_keys(m) AS list_transform(m, lambda x: x.key)",
)


def attributes_dict(raw: object) -> dict[str, str]:
    """A stored attribute list (as DuckDB returns it: [{'key': .., 'value': ..}]) as a dict."""
    if not raw:
        return {}
    if isinstance(raw, dict):  # ClickHouse returns Map columns as dicts
        return {str(k): str(v) for k, v in raw.items()}
    return {str(kv["key"]): str(kv["value"]) for kv in raw}  # type: ignore[attr-defined]
