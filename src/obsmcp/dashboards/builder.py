"""Grafana dashboards for a service, an SLO, or a list of metric queries, over the configured data sources.

Which data source serves each signal:

- requests (RED) and SLOs: obsmcp's store as a ClickHouse data source (SQL over the OpenTelemetry Collector
  exporter tables, which obsmcp's schema copies); a service the store has no spans of, but a configured
  Prometheus knows, and SLOs with `backend = "<prometheus>"`, from Prometheus' HTTP server histogram (PromQL);
- logs: Loki when one is configured, else the store's `otel_logs`;
- traces: Tempo or Jaeger when configured, else the store's slowest requests with their trace ids.

Why ClickHouse SQL even over the embedded DuckDB store: Grafana cannot read obsmcp's DuckDB file (one process
owns it, and no maintained Grafana data source reads DuckDB files), while the same SQL runs unchanged against the
exporter's tables in ClickHouse, which is obsmcp's own scale-out store (`--store clickhouse://...`) and what an
OpenTelemetry Collector writes with its clickhouse exporter. A dashboard is for people to keep: it should point
at the durable place the telemetry lives, and the answer says so when that is not yet the case.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from obsmcp.analysis.slo import ALERT_RULES, BURN_WINDOWS
from obsmcp.config import SLOConfig, default_slos
from obsmcp.dashboards import panels as P
from obsmcp.dashboards import queries as Q
from obsmcp.http import BackendError
from obsmcp.resolve import resolve_service
from obsmcp.sources.base import SourceError
from obsmcp.sources.prometheus import RED_HISTOGRAMS, STATUS_LABELS, PrometheusSource
from obsmcp.timerange import NS_PER_S
from obsmcp.tools.context import ToolContext, ToolInputError

UID_MAX = 40  # Grafana's limit on dashboard uids
_UNSAFE = re.compile(r"[^a-z0-9]+")
# What Prometheus' HTTP server histogram is assumed to be when the backend cannot be asked which it has.
_DEFAULT_HISTOGRAM = (RED_HISTOGRAMS[0], STATUS_LABELS[0])
_LOOKBACK_S = 6 * 3600  # how far back the backends are asked what they know (the dashboard's default range)


def slug(text: str, limit: int = UID_MAX) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")[:limit].strip("-") or "dashboard"


@dataclass
class Generated:
    """A dashboard JSON model and what an agent should know about it."""

    model: dict[str, Any]
    kind: str  # service | slo | queries
    sources: dict[str, str] = field(default_factory=dict)  # signal -> data source kind
    notes: list[str] = field(default_factory=list)

    @property
    def panel_count(self) -> int:
        return sum(1 for p in self.model["panels"] if p["type"] != "row")


@dataclass
class _Prometheus:
    """A Prometheus backend that counts a service's requests: its histogram and the service's label matcher."""

    backend: str
    histogram: str
    status_label: str | None
    matcher: str
    buckets: frozenset[float] | None = None  # the histogram's `le` boundaries (None: not known)


@dataclass
class _Sources:
    logs: str = "clickhouse"
    traces: str = "clickhouse"
    used: list[str] = field(default_factory=list)

    def use(self, kind: str) -> str:
        if kind not in self.used:
            self.used.append(kind)
        return kind


def _remote_kinds(ctx: ToolContext) -> _Sources:
    kinds = [(cfg.kind, cfg.routed_signals) for cfg in ctx.settings.backends]
    logs = next((k for k, signals in kinds if k == "loki" and "logs" in signals), "clickhouse")
    traces = next((k for k, signals in kinds if k in ("tempo", "jaeger") and "traces" in signals), "clickhouse")
    return _Sources(logs=logs, traces=traces)


def _window_ns() -> tuple[int, int]:
    end = time.time_ns()
    return end - _LOOKBACK_S * NS_PER_S, end


def _prometheus(ctx: ToolContext, service: str, backend: str | None, notes: list[str]) -> _Prometheus | None:
    """The Prometheus backend that knows `service` (or the one named), with its HTTP server histogram."""
    start_ns, end_ns = _window_ns()
    sources = [s for s in ctx.sources.all() if isinstance(s, PrometheusSource)]
    if backend is not None:
        sources = [s for s in sources if s.name == backend]
    for source in sources:
        try:
            name = ctx.sources.resolve(source, service, start_ns, end_ns) or service
            histogram, status = ctx.sources.call(
                source._red_histogram(start_ns, end_ns), ctx.sources.timeout_for(source)
            )
        except LookupError:
            continue
        except (BackendError, SourceError) as e:
            if backend is None:
                continue
            notes.append(f"{source.name} did not answer ({e}); assumed the OpenTelemetry histogram names")
            histogram, status = _DEFAULT_HISTOGRAM
            name = service
        if histogram is None:
            notes.append(f"{source.name} has none of {', '.join(RED_HISTOGRAMS)}: no Prometheus panels from it")
            continue
        return _Prometheus(
            source.name, histogram, status, source.service_matcher(name), _buckets(ctx, source, histogram)
        )
    return None


def _buckets(ctx: ToolContext, source: PrometheusSource, histogram: str) -> frozenset[float] | None:
    """The `le` boundaries of a histogram: a latency SLO's PromQL counts the bucket at its threshold."""
    start_ns, end_ns = _window_ns()
    params = [
        ("match[]", f"{histogram}_bucket"),
        ("start", str(start_ns // NS_PER_S)),
        ("end", str(end_ns // NS_PER_S)),
    ]
    try:
        answer = ctx.sources.call(source._get("/api/v1/label/le/values", params, "metadata"), 30.0)
        return frozenset(float(v) for v in answer.data.get("data") or [])
    except (BackendError, SourceError, ValueError, AttributeError):
        return None


def _resolve(ctx: ToolContext, service: str, notes: list[str]) -> tuple[str, _Prometheus | None]:
    """The service's name in the store, or, when the store has none of it, in the first Prometheus that does."""
    try:
        name = ctx.resolve(service)
        assert name is not None
        return name, None
    except LookupError as e:
        configured = sorted({s.service for s in ctx.settings.slos})
        try:
            # A service with SLOs in the config, which the store has no spans of: its requests from a
            # Prometheus that knows it, if one does.
            name = resolve_service(service, configured)
            return name, _prometheus(ctx, name, None, notes)
        except LookupError:
            pass
        prom = _prometheus(ctx, service, None, notes)
        if prom is None:
            raise e from None
        return service, prom


def slos_of(ctx: ToolContext, service: str) -> tuple[list[SLOConfig], str]:
    own = [s for s in ctx.settings.slos if s.service == service]
    return (own, "config") if own else (default_slos(service), "default")


# -- panels per part --------------------------------------------------------------------------------------------


def _red_panels(service: str, prom: _Prometheus | None, used: _Sources, latency_lines: list[float]) -> list[P.Panel]:
    lines = [(ms, "red") for ms in latency_lines]
    if prom is None:
        ds = used.use("clickhouse")
        return [
            P.timeseries(
                "Request rate", ds, [P.clickhouse_target("A", Q.sql_request_rate(service), "timeseries")], "reqps"
            ),
            P.timeseries(
                "Error rate",
                ds,
                [P.clickhouse_target("A", Q.sql_error_rate(service), "timeseries")],
                "percentunit",
                "share of requests (server or root spans) with span status Error",
            ),
            P.timeseries(
                "Latency p50 / p95 / p99",
                ds,
                [P.clickhouse_target("A", Q.sql_latency(service), "timeseries")],
                "ms",
                "duration of requests (server or root spans); dashed: latency SLO thresholds",
                threshold_lines=lines,
            ),
        ]
    ds = used.use("prometheus")
    red = Q.promql_red(prom.histogram, prom.status_label, prom.matcher)
    unit = "s" if prom.histogram.endswith("_seconds") else "ms"
    scale = 1000.0 if unit == "s" else 1.0
    out = [P.timeseries("Request rate", ds, [P.prometheus_target("A", red["rate"], "requests/s")], "reqps")]
    if "errors" in red:
        out.append(
            P.timeseries("Error rate (5xx)", ds, [P.prometheus_target("A", red["errors"], "5xx share")], "percentunit")
        )
    quantiles = [P.prometheus_target(chr(65 + i), red[q], q) for i, q in enumerate(Q.QUANTILES)]
    out.append(
        P.timeseries(
            "Latency p50 / p95 / p99",
            ds,
            quantiles,
            unit,
            f"{prom.histogram} on {prom.backend}; dashed: latency SLO thresholds",
            threshold_lines=[(ms / scale, color) for ms, color in lines],
        )
    )
    return out


def _budget_steps() -> list[tuple[float | None, str]]:
    return [(None, "red"), (0.0, "orange"), (0.25, "yellow"), (0.5, "green")]


def _burn_steps() -> list[tuple[float | None, str]]:
    ticket = min(r.burn for r in ALERT_RULES if r.severity == "ticket")
    page = min(r.burn for r in ALERT_RULES if r.severity == "page")
    return [(None, "green"), (ticket, "yellow"), (page, "orange"), (max(r.burn for r in ALERT_RULES), "red")]


def _slo_title(slo: SLOConfig) -> str:
    what = f"{slo.objective:g}%"
    if slo.sli == "latency" and slo.threshold_ms is not None:
        what += f" < {slo.threshold_ms:g} ms"
    return f"{slo.name} ({slo.sli} {what}{', ' + slo.operation if slo.operation else ''})"


def _slo_panels(
    ctx: ToolContext, slo: SLOConfig, prom: _Prometheus | None, used: _Sources, notes: list[str]
) -> list[P.Panel]:
    """SLI over the range, error budget left over the SLO window, burn rate per window, burn rate over time."""
    title = _slo_title(slo)
    sli_steps: list[tuple[float | None, str]] = [(None, "red"), (slo.target, "green")]
    if slo.backend is not None:
        prom = _prometheus(ctx, slo.service, slo.backend, notes)
        if prom is None:
            notes.append(f"SLO {slo.name}: backend {slo.backend} knows no {slo.service} with an HTTP server histogram")
            return []
    elif slo.source == "metric":
        notes.append(f"SLO {slo.name} counts metric {slo.metric or slo.total_metric}: not drawn (slo_report has it)")
        return []
    if prom is not None:
        return _prometheus_slo_panels(slo, prom, used, title, sli_steps, notes)
    ds = used.use("clickhouse")
    burn_help = "burn rate = bad share / (1 - objective); " + "; ".join(r.describe() for r in ALERT_RULES)
    return [
        P.row(f"SLO {title}"),
        P.stat(
            "SLI (dashboard range)",
            ds,
            [P.clickhouse_target("A", Q.sql_sli(slo), "table")],
            "percentunit",
            sli_steps,
            decimals=3,
        ),
        P.stat(
            f"Error budget left ({slo.window})",
            ds,
            [P.clickhouse_target("A", Q.sql_budget_remaining(slo), "table")],
            "percentunit",
            _budget_steps(),
            f"share of the error budget not yet spent over the last {slo.window}",
            time_from=slo.window,
            decimals=1,
        ),
        P.bargauge(
            "Burn rate per window",
            ds,
            [P.clickhouse_target("A", Q.sql_burn_rates(slo, BURN_WINDOWS), "table")],
            "x",
            _burn_steps(),
            burn_help,
        ),
        P.timeseries(
            "Burn rate over time",
            ds,
            [P.clickhouse_target("A", Q.sql_burn_rate_series(slo), "timeseries")],
            "x",
            burn_help,
            threshold_lines=[(r.burn, "red" if r.severity == "page" else "yellow") for r in ALERT_RULES],
        ),
    ]


def _prometheus_slo_panels(
    slo: SLOConfig,
    prom: _Prometheus,
    used: _Sources,
    title: str,
    sli_steps: list[tuple[float | None, str]],
    notes: list[str],
) -> list[P.Panel]:
    bad_range = Q.promql_slo_bad_ratio(slo, prom.histogram, prom.status_label, prom.matcher, "$__range")
    if bad_range is None:
        notes.append(f"SLO {slo.name}: {prom.histogram} on {prom.backend} cannot count {slo.sli}: no panels")
        return []
    if slo.sli == "latency" and slo.threshold_ms is not None and prom.buckets is not None:
        le = slo.threshold_ms / 1000 if prom.histogram.endswith("_seconds") else slo.threshold_ms
        if le not in prom.buckets:
            near = ", ".join(f"{b:g}" for b in sorted(prom.buckets) if b != float("inf"))
            notes.append(
                f"SLO {slo.name}: {prom.histogram} on {prom.backend} has no bucket at le={le:g} (its boundaries: "
                f"{near}), so requests under the threshold cannot be counted: not drawn; set threshold_ms to one"
            )
            return []
    ds = used.use("prometheus")
    allowed = 1 - slo.target

    def bad(window: str) -> str:
        expr = Q.promql_slo_bad_ratio(slo, prom.histogram, prom.status_label, prom.matcher, window)
        assert expr is not None
        return expr

    burn = [
        P.prometheus_target(chr(65 + i), f"({bad(label)}) / {allowed:.10g}", label, instant=True)
        for i, (label, _) in enumerate(BURN_WINDOWS)
    ]
    if slo.sli == "latency":
        assert slo.threshold_ms is not None
        le = slo.threshold_ms / 1000 if prom.histogram.endswith("_seconds") else slo.threshold_ms
        notes.append(
            f'SLO {slo.name}: good requests are those in the le="{le:g}" bucket of {prom.histogram} '
            "(the histogram needs a bucket boundary at the threshold)"
        )
    return [
        P.row(f"SLO {title} ({prom.backend})"),
        P.stat(
            "SLI (dashboard range)",
            ds,
            [P.prometheus_target("A", f"1 - ({bad_range})", "SLI", instant=True)],
            "percentunit",
            sli_steps,
            decimals=3,
        ),
        P.stat(
            f"Error budget left ({slo.window})",
            ds,
            [P.prometheus_target("A", f"1 - ({bad(slo.window)}) / {allowed:.10g}", "budget left", instant=True)],
            "percentunit",
            _budget_steps(),
            decimals=1,
        ),
        P.bargauge("Burn rate per window", ds, burn, "x", _burn_steps()),
        P.timeseries(
            "Burn rate (1h window)",
            ds,
            [P.prometheus_target("A", f"({bad('1h')}) / {allowed:.10g}", "burn 1h")],
            "x",
            threshold_lines=[(r.burn, "red" if r.severity == "page" else "yellow") for r in ALERT_RULES],
        ),
    ]


def _logs_panel(service: str, used: _Sources) -> P.Panel:
    if used.logs == "loki":
        label = "service_name"
        return P.logs(f"Logs: {service}", used.use("loki"), [P.loki_target("A", Q.logql_service(label, service))])
    return P.logs(f"Logs: {service}", used.use("clickhouse"), [P.clickhouse_target("A", Q.sql_logs(service), "logs")])


def _traces_panel(service: str, used: _Sources) -> P.Panel:
    if used.traces == "tempo":
        return P.table(f"Traces: {service}", used.use("tempo"), [P.tempo_target("A", Q.traceql_service(service))])
    if used.traces == "jaeger":
        return P.table(f"Traces: {service}", used.use("jaeger"), [P.jaeger_target("A", service)])
    return P.table(
        f"Slowest requests: {service}",
        used.use("clickhouse"),
        [P.clickhouse_target("A", Q.sql_slowest_traces(service), "table")],
        "the 50 longest requests in the range, with their trace ids (get_trace in obsmcp)",
    )


# -- dashboards -------------------------------------------------------------------------------------------------


def service_dashboard(ctx: ToolContext, service: str, uid: str | None = None, title: str | None = None) -> Generated:
    notes: list[str] = []
    name, prom = _resolve(ctx, service, notes)
    used = _remote_kinds(ctx)
    slos, defined = slos_of(ctx, name)
    lines = [s.threshold_ms for s in slos if s.sli == "latency" and s.threshold_ms is not None]
    parts: list[P.Panel] = [P.row(f"Requests: {name}"), *_red_panels(name, prom, used, lines)]
    for slo in slos:
        parts += _slo_panels(ctx, slo, prom if slo.source == "spans" else None, used, notes)
    parts += [P.row("Logs and traces"), _logs_panel(name, used), _traces_panel(name, used)]
    if defined == "default":
        notes.append("SLOs: obsmcp's defaults (none in the config for this service)")
    model = P.dashboard(
        uid or f"obsmcp-{slug(name, UID_MAX - 7)}",
        title or f"{name}: requests, SLOs, logs, traces",
        f"Generated by obsmcp for service {name}: RED, SLOs and burn rates, logs, traces.",
        ["obsmcp", "service", slug(name)],
        used.used,
        parts,
    )
    signals = {"requests": "prometheus" if prom else "clickhouse", "logs": used.logs, "traces": used.traces}
    return Generated(model, "service", signals, notes + _store_notes(ctx, used))


def slo_dashboard(
    ctx: ToolContext, slo_name: str, service: str | None, uid: str | None = None, title: str | None = None
) -> Generated:
    notes: list[str] = []
    candidates = list(ctx.settings.slos)
    name: str | None = None
    prom: _Prometheus | None = None
    if service is not None:
        name, prom = _resolve(ctx, service, notes)
        candidates = [s for s in candidates if s.service == name] or default_slos(name)
    matches = [s for s in candidates if s.name == slo_name]
    if not matches:
        known = ", ".join(sorted({f"{s.name} ({s.service})" for s in candidates})) or "none in the config"
        hint = "" if service else "; for a service's default SLOs pass service= too"
        raise ToolInputError(f"no SLO named {slo_name!r}: known SLOs: {known}{hint}")
    if len(matches) > 1:
        raise ToolInputError(
            f"SLO {slo_name!r} exists for {', '.join(s.service for s in matches)}: pass service= to pick one"
        )
    slo = matches[0]
    used = _remote_kinds(ctx)
    parts = _slo_panels(ctx, slo, prom if slo.source == "spans" else None, used, notes)
    if not parts:
        raise ToolInputError(f"SLO {slo.name} cannot be drawn: {'; '.join(notes)}")
    model = P.dashboard(
        uid or f"obsmcp-slo-{slug(slo.service + '-' + slo.name, UID_MAX - 11)}",
        title or f"SLO {slo.name}: {slo.service}",
        f"Generated by obsmcp for SLO {slo.name} of {slo.service}: SLI, error budget, burn rates.",
        ["obsmcp", "slo", slug(slo.service)],
        used.used,
        parts,
    )
    return Generated(model, "slo", {"slo": used.used[0]}, notes + _store_notes(ctx, used))


def queries_dashboard(
    ctx: ToolContext, queries: list[str], uid: str | None = None, title: str | None = None
) -> Generated:
    """One timeseries panel per query: a store metric's name (SQL by its type), or PromQL."""
    if not queries or any(not q.strip() for q in queries):
        raise ToolInputError("queries needs one or more metric names (list_metrics) or PromQL expressions")
    if len(queries) > 24:
        raise ToolInputError(f"{len(queries)} queries: a dashboard takes at most 24; split them")
    notes: list[str] = []
    used = _Sources()
    metric_tables = _store_metric_tables(ctx, [q.strip() for q in queries])
    parts: list[P.Panel] = []
    has_prometheus = any(cfg.kind == "prometheus" for cfg in ctx.settings.backends)
    for q in (q.strip() for q in queries):
        found = metric_tables.get(q)
        if found is not None:
            table, cumulative = found
            parts.append(
                P.timeseries(
                    q,
                    used.use("clickhouse"),
                    [P.clickhouse_target("A", Q.sql_metric(q, table, cumulative), "timeseries")],
                    "short",
                    f"{q} per service ({table.removeprefix('otel_metrics_')})",
                    width=12,
                )
            )
        else:
            if not has_prometheus:
                notes.append(f"{q!r} is no metric in the store: drawn as PromQL (no Prometheus backend is configured)")
            parts.append(
                P.timeseries(q[:80], used.use("prometheus"), [P.prometheus_target("A", q, "")], "short", width=12)
            )
    model = P.dashboard(
        uid or f"obsmcp-q-{slug('-'.join(queries), UID_MAX - 9)}",
        title or "obsmcp: " + ", ".join(q[:30] for q in queries[:3]) + ("..." if len(queries) > 3 else ""),
        "Generated by obsmcp from metric queries.",
        ["obsmcp", "metrics"],
        used.used,
        parts,
    )
    return Generated(model, "queries", {"metrics": ", ".join(used.used)}, notes + _store_notes(ctx, used))


def _store_metric_tables(ctx: ToolContext, names: list[str]) -> dict[str, tuple[str, bool]]:
    """name -> (table, monotonic cumulative sum?) for the names the store has."""
    out: dict[str, tuple[str, bool]] = {}
    for table in ("otel_metrics_gauge", "otel_metrics_sum", "otel_metrics_histogram"):
        marks = ", ".join("?" for _ in names)
        extra = ', max("IsMonotonic" AND "AggregationTemporality" = 2)' if table == "otel_metrics_sum" else ", FALSE"
        _, rows = ctx.db.query(
            f'SELECT "MetricName"{extra} FROM {table} WHERE "MetricName" IN ({marks}) GROUP BY "MetricName"', names
        )
        for name, cumulative in rows:
            out.setdefault(str(name), (table, bool(cumulative)))
    return out


def _store_notes(ctx: ToolContext, used: _Sources) -> list[str]:
    if "clickhouse" not in used.used:
        return []
    if ctx.dialect.name == "duckdb":
        return [
            "store panels are ClickHouse SQL over the OpenTelemetry exporter tables: Grafana cannot read obsmcp's "
            "DuckDB file; point ds_clickhouse at a ClickHouse holding them (obsmcp --store clickhouse://..., or the "
            "Collector's clickhouse exporter)"
        ]
    return ["store panels: pick obsmcp's ClickHouse as ds_clickhouse (grafana-clickhouse-datasource plugin)"]
