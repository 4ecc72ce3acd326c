"""The query text of dashboard panels, per data source: ClickHouse SQL over the OpenTelemetry Collector exporter
tables (obsmcp's store schema), PromQL over a Prometheus HTTP server histogram, LogQL, TraceQL.

Pure functions: names in, query text out. Every value that comes from the user (a service, an operation, a
metric name) is quoted for the language it lands in, never pasted.

SQL uses the Grafana ClickHouse data source's macros (grafana/clickhouse-datasource `pkg/macros/macros.go`):
`$__timeFilter(col)` (the dashboard range), `$__timeInterval(col)` (a bucket of the panel's interval),
`$__interval_s` (that interval in seconds), `$__toTime` (the range end). Entry spans (what "a request" means)
are server spans or trace roots, as in obsmcp's own RED figures and SLOs.
"""

from __future__ import annotations

from obsmcp.config import SLOConfig

# A request, as obsmcp counts it (tools/slo.py, tools/services.py): a server span or a root span.
ENTRY = "(SpanKind = 'Server' OR ParentSpanId = '')"
ERROR = "StatusCode = 'Error'"
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def sql_string(value: str) -> str:
    """A ClickHouse string literal: backslash and quote escaped (ClickHouse reads C-style escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def label_value(value: str) -> str:
    """A PromQL / LogQL / TraceQL double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# -- ClickHouse SQL (store) -------------------------------------------------------------------------------------


def _requests_where(service: str, operation: str | None = None) -> str:
    where = f"$__timeFilter(Timestamp) AND ServiceName = {sql_string(service)} AND {ENTRY}"
    if operation:
        where += f" AND SpanName = {sql_string(operation)}"
    return where


def sql_request_rate(service: str) -> str:
    return (
        "SELECT $__timeInterval(Timestamp) AS time, count() / $__interval_s AS requests_per_s\n"
        f"FROM otel_traces\nWHERE {_requests_where(service)}\nGROUP BY time\nORDER BY time"
    )


def sql_error_rate(service: str) -> str:
    return (
        f"SELECT $__timeInterval(Timestamp) AS time, countIf({ERROR}) / count() AS error_ratio\n"
        f"FROM otel_traces\nWHERE {_requests_where(service)}\nGROUP BY time\nORDER BY time"
    )


def sql_latency(service: str) -> str:
    cols = ", ".join(f"quantile({q})(Duration) / 1e6 AS {name}_ms" for name, q in QUANTILES.items())
    return (
        f"SELECT $__timeInterval(Timestamp) AS time, {cols}\n"
        f"FROM otel_traces\nWHERE {_requests_where(service)}\nGROUP BY time\nORDER BY time"
    )


def _slo_counts(slo: SLOConfig) -> tuple[str, str]:
    """(table filter, bad-event condition) of a span-based SLO, as obsmcp's slo_report counts it."""
    if slo.sli == "error_rate":
        where = f"ServiceName = {sql_string(slo.service)}"
        if slo.operation:
            where += f" AND SpanName = {sql_string(slo.operation)}"
        return where, ERROR
    where = f"ServiceName = {sql_string(slo.service)} AND {ENTRY}"
    if slo.operation:
        where += f" AND SpanName = {sql_string(slo.operation)}"
    if slo.sli == "availability":
        return where, ERROR
    assert slo.threshold_ms is not None  # validated by SLOConfig
    return where, f"Duration > {int(slo.threshold_ms * 1e6)}"


def sql_sli(slo: SLOConfig) -> str:
    """The SLI (share of good events) over the dashboard range, or over the SLO window when the panel's time
    range is overridden with it (Grafana's panel `timeFrom`), which is how the error budget panel uses it."""
    where, bad = _slo_counts(slo)
    return f"SELECT 1 - countIf({bad}) / count() AS sli\nFROM otel_traces\nWHERE $__timeFilter(Timestamp) AND {where}"


def sql_budget_remaining(slo: SLOConfig) -> str:
    """Share of the error budget left over the panel's range (the SLO window): 1 - bad share / allowed share."""
    where, bad = _slo_counts(slo)
    allowed = 1 - slo.target
    return (
        f"SELECT 1 - (countIf({bad}) / count()) / {allowed:.10g} AS budget_remaining\n"
        f"FROM otel_traces\nWHERE $__timeFilter(Timestamp) AND {where}"
    )


def sql_burn_rates(slo: SLOConfig, windows: tuple[tuple[str, int], ...]) -> str:
    """One row: the burn rate over each window ending at the range end (bad share / allowed share)."""
    where, bad = _slo_counts(slo)
    allowed = 1 - slo.target
    longest = max(s for _, s in windows)
    cols = ",\n  ".join(
        f"(countIf({bad} AND Timestamp > $__toTime - INTERVAL {s} SECOND)"
        f" / countIf(Timestamp > $__toTime - INTERVAL {s} SECOND)) / {allowed:.10g} AS `{label}`"
        for label, s in windows
    )
    return (
        f"SELECT\n  {cols}\nFROM otel_traces\n"
        f"WHERE Timestamp > $__toTime - INTERVAL {longest} SECOND AND Timestamp <= $__toTime AND {where}"
    )


def sql_burn_rate_series(slo: SLOConfig) -> str:
    """Burn rate per interval over the dashboard range (each bucket's bad share / allowed share)."""
    where, bad = _slo_counts(slo)
    allowed = 1 - slo.target
    return (
        f"SELECT $__timeInterval(Timestamp) AS time, (countIf({bad}) / count()) / {allowed:.10g} AS burn_rate\n"
        f"FROM otel_traces\nWHERE $__timeFilter(Timestamp) AND {where}\nGROUP BY time\nORDER BY time"
    )


def sql_logs(service: str) -> str:
    return (
        "SELECT Timestamp AS timestamp, SeverityText AS level, Body AS body, TraceId AS trace_id\n"
        f"FROM otel_logs\nWHERE $__timeFilter(Timestamp) AND ServiceName = {sql_string(service)}\n"
        "ORDER BY Timestamp DESC\nLIMIT 500"
    )


def sql_slowest_traces(service: str) -> str:
    return (
        "SELECT Timestamp AS time, TraceId AS trace_id, SpanName AS operation, Duration / 1e6 AS duration_ms, "
        "StatusCode AS status\n"
        f"FROM otel_traces\nWHERE {_requests_where(service)}\nORDER BY Duration DESC\nLIMIT 50"
    )


def sql_metric(name: str, table: str, monotonic_cumulative: bool) -> str:
    """A store metric per service: gauges averaged; counters as a per-second rate (cumulative: the increase of
    each series between buckets, resets counted from zero; delta: the sum per bucket); histograms as the mean
    (sum of Sum / sum of Count per bucket)."""
    m = sql_string(name)
    if table == "otel_metrics_gauge":
        return (
            "SELECT $__timeInterval(TimeUnix) AS time, ServiceName, avg(Value) AS value\n"
            f"FROM otel_metrics_gauge\nWHERE $__timeFilter(TimeUnix) AND MetricName = {m}\n"
            "GROUP BY time, ServiceName\nORDER BY time"
        )
    if table == "otel_metrics_histogram":
        return (
            "SELECT $__timeInterval(TimeUnix) AS time, ServiceName, sum(Sum) / nullIf(sum(Count), 0) AS mean\n"
            f"FROM otel_metrics_histogram\nWHERE $__timeFilter(TimeUnix) AND MetricName = {m}\n"
            "GROUP BY time, ServiceName\nORDER BY time"
        )
    if not monotonic_cumulative:
        return (
            "SELECT $__timeInterval(TimeUnix) AS time, ServiceName, sum(Value) / $__interval_s AS per_s\n"
            f"FROM otel_metrics_sum\nWHERE $__timeFilter(TimeUnix) AND MetricName = {m}\n"
            "GROUP BY time, ServiceName\nORDER BY time"
        )
    series = "ServiceName, ResourceAttributes, Attributes"
    return (
        "SELECT time, ServiceName, sum(increase) / $__interval_s AS per_s\nFROM (\n"
        f"  SELECT time, {series}, if(v >= prev, v - prev, v) AS increase\n  FROM (\n"
        f"    SELECT time, {series}, v,\n"
        f"      lagInFrame(v, 1, v) OVER (PARTITION BY {series} ORDER BY time "
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev\n"
        f"    FROM (\n      SELECT $__timeInterval(TimeUnix) AS time, {series}, max(Value) AS v\n"
        f"      FROM otel_metrics_sum\n      WHERE $__timeFilter(TimeUnix) AND MetricName = {m}\n"
        f"      GROUP BY time, {series}\n    )\n  )\n)\nGROUP BY time, ServiceName\nORDER BY time"
    )


# -- PromQL (a Prometheus HTTP server histogram) -----------------------------------------------------------------


def _selector(name: str, matchers: list[str]) -> str:
    return f"{name}{{{', '.join(matchers)}}}" if matchers else name


def promql_red(histogram: str, status_label: str | None, service_matcher: str) -> dict[str, str]:
    """Request rate, error ratio (5xx) and p50/p95/p99 from an HTTP server histogram, `$__rate_interval` wide."""
    count = _selector(f"{histogram}_count", [service_matcher])
    out = {"rate": f"sum(rate({count}[$__rate_interval]))"}
    if status_label:
        failed = _selector(f"{histogram}_count", [service_matcher, f'{status_label}=~"5.."'])
        out["errors"] = f"sum(rate({failed}[$__rate_interval])) / sum(rate({count}[$__rate_interval]))"
    bucket = _selector(f"{histogram}_bucket", [service_matcher])
    for name, q in QUANTILES.items():
        out[name] = f"histogram_quantile({q}, sum by (le) (rate({bucket}[$__rate_interval])))"
    return out


def promql_slo_bad_ratio(
    slo: SLOConfig, histogram: str, status_label: str | None, service_matcher: str, window: str
) -> str | None:
    """The bad share of requests over `window` (a PromQL duration or `$__range`) for an SLO counted from a
    Prometheus HTTP server histogram; None when the histogram cannot count it (no status label)."""
    count = _selector(f"{histogram}_count", [service_matcher])
    total = f"sum(increase({count}[{window}]))"
    if slo.sli == "availability":
        if not status_label:
            return None
        failed = _selector(f"{histogram}_count", [service_matcher, f'{status_label}=~"5.."'])
        return f"sum(increase({failed}[{window}])) / {total}"
    if slo.sli == "latency" and slo.threshold_ms is not None:
        le = slo.threshold_ms / 1000 if histogram.endswith("_seconds") else slo.threshold_ms
        good = _selector(f"{histogram}_bucket", [service_matcher, f'le="{le:g}"'])
        return f"1 - sum(increase({good}[{window}])) / {total}"
    return None


# -- logs and traces backends ---------------------------------------------------------------------------------


def logql_service(label: str, service: str) -> str:
    return f"{{{label}={label_value(service)}}}"


def traceql_service(service: str) -> str:
    return f"{{resource.service.name={label_value(service)}}}"
