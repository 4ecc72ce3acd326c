"""Prometheus (and the servers that speak its HTTP API: VictoriaMetrics, Thanos, Mimir) as a metric source.

list_metrics: names from /api/v1/label/__name__/values, types and help from /api/v1/metadata (or, for series
without metadata such as backfilled or remote-written ones, from the classic suffixes: a `_bucket` series with
`le` is a histogram, `_total` a counter), services and label keys from /api/v1/series over the last hour.
query_metrics: a MetricQuery becomes PromQL (`query_for`) run by /api/v1/query_range; `raw` runs PromQL as is.
Services are the values of the `job` and `service` labels. Alert rules and firing alerts come from
/api/v1/rules and /api/v1/alerts.

Every call goes through the backend's `BackendClient`: names, labels and metadata are cached for the
metadata TTL (with time ranges rounded to 5 minutes so that the cache can hit), query results for the
query TTL.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from obsmcp.http import (
    BackendClient,
    BackendHTTPError,
    JsonResult,
    backend_client,
)
from obsmcp.sources import remote
from obsmcp.sources.base import MetricQuery, MetricsList, SeriesPage, SourceError, UnsupportedQuery
from obsmcp.sources.config import BackendConfig
from obsmcp.timerange import format_ns
from obsmcp.tools.metrics import MetricInfo, Series, summarize_series

SERVICE_LABELS = ("service", "job")  # `service` first: when both exist, it is the more specific name
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
# An empty MetricQuery.aggregation: what the metric's type is usually asked for.
DEFAULT_AGGREGATION = {"counter": "rate", "histogram": "p95", "summary": "avg", "gauge": "avg", "unknown": "avg"}
LABEL_DISCOVERY_MAX = 40  # metrics whose services and labels list_metrics looks up in one /api/v1/series call
_ROUND_S = 300  # metadata time ranges are rounded to this, so that repeated calls hit the cache
_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_MAX_POINTS = 11_000  # Prometheus refuses a range query with more points per series


@dataclass(frozen=True)
class AlertRule:
    name: str
    group: str
    expr: str
    state: str  # inactive | pending | firing
    duration_s: float
    labels: dict[str, str]
    annotations: dict[str, str]
    health: str
    last_error: str | None


@dataclass(frozen=True)
class Alert:
    name: str
    state: str  # pending | firing
    labels: dict[str, str]
    annotations: dict[str, str]
    active_at: str | None
    value: str | None


@dataclass(frozen=True)
class RedFigures:
    """Request rate, error share and latency percentiles of one service from its HTTP server histogram."""

    service: str
    metric: str
    rate_per_s: float
    error_rate: float | None  # share of requests answered 5xx; None when the histogram has no status label
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


# Standard HTTP server duration histograms (OTel semantic conventions as exported to Prometheus, then the
# Prometheus client libraries' usual names), and the labels that carry the response status.
RED_HISTOGRAMS = (
    "http_server_request_duration_seconds",
    "http_server_duration_milliseconds",
    "http_request_duration_seconds",
)
STATUS_LABELS = ("http_response_status_code", "http_status_code", "status_code", "status", "code")


def from_config(cfg: BackendConfig) -> PrometheusSource:
    return PrometheusSource(cfg)


class PrometheusSource:
    """MetricSource over the Prometheus HTTP API (/api/v1)."""

    signals: tuple[str, ...]

    def __init__(self, cfg: BackendConfig, client: BackendClient | None = None) -> None:
        self.name = cfg.name
        self.kind = "prometheus"
        self.signals = cfg.routed_signals
        self.config = cfg
        self.client = client or backend_client(remote.client_config(cfg))
        self._service_label: dict[str, str] = {}  # service value -> the label it came from (job | service)

    def __repr__(self) -> str:
        return f"<PrometheusSource {self.name} {self.client.config.display_url}>"

    # -- plumbing ----------------------------------------------------------------------------------------

    async def _get(self, path: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None, cache: Any) -> JsonResult:
        try:
            result = await self.client.get_json(path, params, cache=cache, headers=remote.call_headers(self.config))
        except BackendHTTPError as e:
            raise self._http_error(e, path) from None
        body = result.data
        if not isinstance(body, dict) or body.get("status") != "success":
            raise SourceError(
                f"backend {self.name} answered {path} with something that is not a Prometheus API answer "
                f"({str(body)[:200]}): check that its url is the Prometheus base URL (without /api/v1)"
            )
        return result

    def _http_error(self, e: BackendHTTPError, path: str) -> SourceError:
        reason = _prometheus_error(e.excerpt)
        if e.status in (400, 422):
            return SourceError(
                f"backend {self.name} (Prometheus) rejected the query: {reason or e.excerpt}. Fix the PromQL "
                "(syntax: https://prometheus.io/docs/prometheus/latest/querying/basics/), or use list_metrics "
                "to check metric and label names"
            )
        if e.status in (401, 403):
            return SourceError(
                f"backend {self.name} (Prometheus) answered {e.status} to {path}: "
                + (
                    "check the token/token_file or username/password in its [[backends]] table"
                    if e.status == 401
                    else "the configured credentials may not read this API; ask for read access to /api/v1"
                )
            )
        if e.status == 404:
            return SourceError(
                f"backend {self.name} answered 404 to {path}: its url must be the Prometheus base URL "
                "(e.g. http://prometheus:9090, with any path prefix, without /api/v1)"
            )
        if e.status == 503 and reason:
            return SourceError(f"backend {self.name} (Prometheus) could not run the query: {reason}; retry later")
        return SourceError(e.message)

    # -- Source ------------------------------------------------------------------------------------------

    async def check(self) -> None:
        await self._get("/api/v1/status/buildinfo", None, None)

    async def services(self, start_ns: int, end_ns: int) -> list[str]:
        start, end = _rounded(start_ns, end_ns)
        found: dict[str, str] = {}
        for label in reversed(SERVICE_LABELS):  # `service` last: it wins when a value is in both
            res = await self._get(f"/api/v1/label/{label}/values", {"start": start, "end": end}, "metadata")
            for value in res.data.get("data") or []:
                found[str(value)] = label
        self._service_label.update(found)
        return sorted(found)

    def service_matcher(self, service: str) -> str:
        label = self._service_label.get(service, "job")
        return f"{label}={promql_string(service)}"

    # -- MetricSource ------------------------------------------------------------------------------------

    async def list_metrics(self, filter: str | None, service: str | None) -> MetricsList:
        end_ns = time.time_ns()
        start, end = _rounded(end_ns - 3600 * 10**9, end_ns)
        params: list[tuple[str, Any]] = [("start", start), ("end", end)]
        if service:
            params.append(("match[]", "{" + self.service_matcher(service) + "}"))
        names_res = await self._get("/api/v1/label/__name__/values", params, "metadata")
        names = [str(n) for n in names_res.data.get("data") or []]
        if filter and filter.strip():
            needle = filter.strip().lower()
            names = [n for n in names if needle in n.lower()]
        meta = await self._metadata()
        families = _families(names, meta)
        notes: list[str] = []
        # Services and label keys: one /api/v1/series call for the first families (by name).
        shown = sorted(families)[:LABEL_DISCOVERY_MAX]
        labels: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
        if shown:
            svc = self.service_matcher(service) if service else None
            matches = [("match[]", _selector(families[f].series_name, [svc] if svc else [])) for f in shown]
            series = await self._get("/api/v1/series", [*params, *matches], "metadata")
            for s in series.data.get("data") or []:
                family = _family_of(str(s.get("__name__", "")), families)
                if family is None:
                    continue
                services, keys = labels[family]
                for k, v in s.items():
                    if k in SERVICE_LABELS:
                        services.add(str(v))
                    elif k not in ("__name__", "le", "quantile"):
                        keys.add(k)
        if len(families) > len(shown):
            notes.append(
                f"services and labels shown for the first {len(shown)} of {len(families)} metrics: narrow with filter="
            )
        infos = [
            MetricInfo(
                name=f,
                type=families[f].type,
                unit=families[f].unit,
                description=families[f].help,
                services=sorted(labels[f][0])[:20] if f in labels else [],
                attribute_keys=sorted(labels[f][1])[:20] if f in labels else [],
            )
            for f in sorted(families)
        ]
        freshness = names_res.freshness
        return MetricsList(total=len(infos), metrics=infos, notes=notes, freshness=freshness)

    async def _metadata(self) -> dict[str, dict[str, str]]:
        res = await self._get("/api/v1/metadata", None, "metadata")
        out: dict[str, dict[str, str]] = {}
        for name, entries in (res.data.get("data") or {}).items():
            if entries:
                first = entries[0]
                out[str(name)] = {k: str(first.get(k) or "") for k in ("type", "help", "unit")}
        return out

    async def metric_type(self, name: str) -> str:
        """counter | gauge | histogram | summary | unknown, from metadata, else from the series names."""
        meta = await self._metadata()
        if name in meta and meta[name]["type"]:
            return meta[name]["type"]
        end_ns = time.time_ns()
        start, end = _rounded(end_ns - 6 * 3600 * 10**9, end_ns)
        res = await self._get(
            "/api/v1/label/__name__/values",
            [("start", start), ("end", end), ("match[]", f'{{__name__=~"{re.escape(name)}(_bucket|_count|_sum)?"}}')],
            "metadata",
        )
        present = {str(n) for n in res.data.get("data") or []}
        if f"{name}_bucket" in present:
            return "histogram"
        if name in present:
            return "counter" if name.endswith(("_total", "_count", "_sum", "_bucket")) else "gauge"
        if f"{name}_count" in present and f"{name}_sum" in present:
            return "summary"
        every = await self._get("/api/v1/label/__name__/values", [("start", start), ("end", end)], "metadata")
        names = [str(n) for n in every.data.get("data") or []]
        close = [n for n in names if name.lower() in n.lower()][:3] + difflib.get_close_matches(name, names, 3, 0.5)
        hint = ", ".join(dict.fromkeys(close)) or "none similar"
        raise SourceError(
            f"backend {self.name} has no metric named {name!r} in the last 6 h: did you mean {hint}? "
            f"list_metrics(backend={self.name!r}) shows them"
        )

    async def query_metrics(self, q: MetricQuery) -> SeriesPage:
        start_s, end_s = q.start_ns / 1e9, q.end_ns / 1e9
        step_s = max(1, q.step_s)
        notes: list[str] = []
        if (end_s - start_s) / step_s > _MAX_POINTS:
            step_s = math.ceil((end_s - start_s) / _MAX_POINTS)
            notes.append(f"step raised to {step_s}s: Prometheus answers at most {_MAX_POINTS} points per series")
        if q.raw is not None:
            promql = q.raw.strip()
            if not promql:
                raise UnsupportedQuery("promql is empty: give a PromQL expression, or metric= instead")
        else:
            if not q.name:
                raise UnsupportedQuery("query_metrics needs metric= (or promql= for a PromQL expression)")
            mtype = await self.metric_type(q.name)
            matchers = [self.service_matcher(q.service)] if q.service else []
            matchers += [f"{_label_name(k)}={promql_string(str(v))}" for k, v in q.attributes.items()]
            group = [self._group_label(g) for g in q.group_by]
            agg = q.aggregation.strip().lower() or DEFAULT_AGGREGATION.get(mtype, "avg")
            promql = query_for(q.name, mtype, agg, matchers, group, step_s)
        res = await self._get(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}", "step": step_s},
            "query",
        )
        data = res.data.get("data") or {}
        for w in res.data.get("warnings") or []:
            notes.append(f"Prometheus warning: {w}")
        if data.get("resultType") != "matrix":
            raise UnsupportedQuery(
                f"the PromQL gave a {data.get('resultType')}, not a range vector of series: query an expression "
                "that yields series (e.g. rate(x[5m]), not a string)"
            )
        times = [start_s + i * step_s for i in range(int((end_s - start_s) // step_s) + 1)]
        series = [_series(r, times, step_s) for r in data.get("result") or []]
        series.sort(key=lambda s: sorted(s.labels.items()))
        return SeriesPage(
            series=series, query=promql, step_s=step_s, total=len(series), notes=notes, freshness=res.freshness
        )

    def _group_label(self, key: str) -> str:
        if key in ("service", "service.name"):
            values = set(self._service_label.values())
            return "service" if values == {"service"} else "job"
        return _label_name(key)

    # -- RED from the standard HTTP server histograms ------------------------------------------------------

    async def red(self, start_ns: int, end_ns: int, service: str | None = None) -> list[RedFigures]:
        """Per service (`job` label): requests/s, 5xx share and p50/p95/p99 over the range, from the first of
        RED_HISTOGRAMS the backend has. Instant queries at the range end over a window of the whole range."""
        end_s = end_ns / 1e9
        window = f"[{max(60, round((end_ns - start_ns) / 1e9))}s]"
        metric, status = await self._red_histogram(start_ns, end_ns)
        if metric is None:
            return []
        sel = [self.service_matcher(service)] if service else []
        to_ms = 1000.0 if metric.endswith("_seconds") else 1.0

        async def instant(promql: str) -> dict[str, float]:
            res = await self._get("/api/v1/query", {"query": promql, "time": f"{end_s:.3f}"}, "query")
            out: dict[str, float] = {}
            for r in (res.data.get("data") or {}).get("result") or []:
                value = float(r["value"][1])
                if not (math.isnan(value) or math.isinf(value)):
                    out[str(r["metric"].get("job", ""))] = value
            return out

        rates = await instant(f"sum by (job) (rate({_selector(metric + '_count', sel)}{window}))")
        errors: dict[str, float] = {}
        if status:
            failed = _selector(metric + "_count", [*sel, status + '=~"5.."'])
            errors = await instant(f"sum by (job) (rate({failed}{window}))")
        quantiles = {
            q: await instant(
                f"histogram_quantile({QUANTILES[q]}, sum by (job, le) (rate({_selector(metric + '_bucket', sel)}"
                f"{window})))"
            )
            for q in ("p50", "p95", "p99")
        }
        out = []
        for job, rate in sorted(rates.items()):
            ms = {q: (v[job] * to_ms if job in v else None) for q, v in quantiles.items()}
            out.append(
                RedFigures(
                    service=job,
                    metric=metric,
                    rate_per_s=rate,
                    error_rate=(errors.get(job, 0.0) / rate if rate > 0 else 0.0) if status else None,
                    p50_ms=ms["p50"],
                    p95_ms=ms["p95"],
                    p99_ms=ms["p99"],
                )
            )
        return out

    async def slo_events(
        self, service: str, sli: str, start_ns: int, end_ns: int, threshold_ms: float | None = None
    ) -> tuple[float, float]:
        """(good, total) requests of `service` over the range from its HTTP server histogram, for an SLO:
        availability (good = not 5xx) or latency (good = at most threshold_ms, interpolated linearly inside
        the bucket that holds it, as histogram_quantile does)."""
        metric, status = await self._red_histogram(start_ns, end_ns)
        if metric is None:
            raise UnsupportedQuery(
                f"backend {self.name} has none of the standard HTTP server histograms ({', '.join(RED_HISTOGRAMS)})"
            )
        sel = [self.service_matcher(service)]
        window = f"[{max(60, round((end_ns - start_ns) / 1e9))}s]"
        at = f"{end_ns / 1e9:.3f}"

        async def instant(promql: str) -> list[dict[str, Any]]:
            res = await self._get("/api/v1/query", {"query": promql, "time": at}, "query")
            return list((res.data.get("data") or {}).get("result") or [])

        def scalar(result: list[dict[str, Any]]) -> float:
            return sum(float(r["value"][1]) for r in result)

        total = scalar(await instant(f"sum(increase({_selector(metric + '_count', sel)}{window}))"))
        if sli == "availability":
            if status is None:
                raise UnsupportedQuery(f"{metric} has no status label ({', '.join(STATUS_LABELS)}): no availability")
            failed = _selector(metric + "_count", [*sel, status + '=~"5.."'])
            return total - scalar(await instant(f"sum(increase({failed}{window}))")), total
        if sli != "latency" or threshold_ms is None:
            raise UnsupportedQuery(f"sli {sli!r}: Prometheus histograms give availability or latency (threshold_ms)")
        unit = 1000.0 if metric.endswith("_seconds") else 1.0
        buckets = sorted(
            (float(r["metric"]["le"]), float(r["value"][1]))
            for r in await instant(f"sum by (le) (increase({_selector(metric + '_bucket', sel)}{window}))")
        )
        return _count_at_most(buckets, threshold_ms / unit), total

    async def _red_histogram(self, start_ns: int, end_ns: int) -> tuple[str | None, str | None]:
        start, end = _rounded(start_ns, end_ns)
        params: list[tuple[str, Any]] = [("start", start), ("end", end)]
        names_res = await self._get("/api/v1/label/__name__/values", params, "metadata")
        names = {str(n) for n in names_res.data.get("data") or []}
        metric = next((m for m in RED_HISTOGRAMS if f"{m}_bucket" in names), None)
        if metric is None:
            return None, None
        labels = await self._get("/api/v1/labels", [*params, ("match[]", f"{metric}_count")], "metadata")
        present = {str(n) for n in labels.data.get("data") or []}
        return metric, next((label for label in STATUS_LABELS if label in present), None)

    # -- alerts ----------------------------------------------------------------------------------------

    async def alert_rules(self) -> list[AlertRule]:
        res = await self._get("/api/v1/rules", {"type": "alert"}, "query")
        out: list[AlertRule] = []
        for group in (res.data.get("data") or {}).get("groups") or []:
            for r in group.get("rules") or []:
                if r.get("type") != "alerting":
                    continue
                out.append(
                    AlertRule(
                        name=str(r.get("name", "")),
                        group=str(group.get("name", "")),
                        expr=str(r.get("query", "")),
                        state=str(r.get("state", "inactive")),
                        duration_s=float(r.get("duration") or 0),
                        labels={str(k): str(v) for k, v in (r.get("labels") or {}).items()},
                        annotations={str(k): str(v) for k, v in (r.get("annotations") or {}).items()},
                        health=str(r.get("health", "unknown")),
                        last_error=str(r["lastError"]) if r.get("lastError") else None,
                    )
                )
        return out

    async def alerts(self) -> list[Alert]:
        res = await self._get("/api/v1/alerts", None, "query")
        out: list[Alert] = []
        for a in (res.data.get("data") or {}).get("alerts") or []:
            labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
            out.append(
                Alert(
                    name=labels.get("alertname", ""),
                    state=str(a.get("state", "")),
                    labels=labels,
                    annotations={str(k): str(v) for k, v in (a.get("annotations") or {}).items()},
                    active_at=str(a["activeAt"]) if a.get("activeAt") else None,
                    value=str(a["value"]) if a.get("value") is not None else None,
                )
            )
        return out


# -- PromQL ------------------------------------------------------------------------------------------------


def query_for(name: str, mtype: str, aggregation: str, matchers: list[str], group: list[str], step_s: int) -> str:
    """The PromQL of one metric query. Range windows are max(step, 1m): one step's worth of samples, and
    at least four at the common 15 s scrape interval so that rate() always has two."""
    agg = aggregation.strip().lower()
    window = f"[{max(step_s, 60)}s]"
    by = f" by ({', '.join(group)})" if group else ""
    if mtype == "summary" and agg in QUANTILES:
        return f"max{by} ({_selector(name, [*matchers, f'quantile={promql_string(str(QUANTILES[agg]))}'])})"
    if mtype in ("histogram", "summary"):
        if agg in QUANTILES:
            le_by = f" by ({', '.join(['le', *group])})"
            inner = f"sum{le_by} (rate({_selector(name + '_bucket', matchers)}{window}))"
            return f"histogram_quantile({QUANTILES[agg]}, {inner})"
        if agg == "avg":
            return (
                f"sum{by} (rate({_selector(name + '_sum', matchers)}{window})) / "
                f"sum{by} (rate({_selector(name + '_count', matchers)}{window}))"
            )
        if agg in ("rate", "increase"):
            return f"sum{by} ({agg}({_selector(name + '_count', matchers)}{window}))"
        if agg in ("count", "sum"):
            part = "_count" if agg == "count" else "_sum"
            return f"sum{by} (increase({_selector(name + part, matchers)}{window}))"
        raise UnsupportedQuery(f"{agg} does not apply to {mtype} {name}: use p50|p90|p95|p99, avg, rate, count")
    if agg in QUANTILES:
        raise UnsupportedQuery(f"{agg} needs a histogram; {name} is a {mtype}: use avg, min, max, sum or rate")
    sel = _selector(name, matchers)
    if agg in ("rate", "increase"):
        if mtype == "gauge":
            raise UnsupportedQuery(f"{agg} applies to counters; {name} is a gauge: use avg, min, max or sum")
        return f"sum{by} ({agg}({sel}{window}))"
    if agg in ("avg", "sum", "min", "max", "count"):
        return f"{agg}{by} ({sel})"
    raise UnsupportedQuery(f"aggregation {aggregation!r} is unknown: use avg|sum|min|max|rate|increase|count|p50..p99")


def _selector(name: str, matchers: list[str]) -> str:
    return name + ("{" + ", ".join(matchers) + "}" if matchers else "")


def promql_string(value: str) -> str:
    """A PromQL string literal. PromQL takes Go escapes; JSON's are a compatible subset."""
    return json.dumps(value)


def _label_name(key: str) -> str:
    """An attribute key as a Prometheus label name (OTel's `http.route` is exported as `http_route`)."""
    name = _LABEL.sub("_", key.strip())
    return name if name and not name[0].isdigit() else f"_{name}"


# -- answers -----------------------------------------------------------------------------------------------


@dataclass
class _Family:
    series_name: str  # the name to match series with (histograms: <name>_bucket)
    type: str
    help: str
    unit: str


def _families(names: list[str], meta: dict[str, dict[str, str]]) -> dict[str, _Family]:
    """Series names folded into metric families: a histogram's _bucket/_sum/_count are one metric."""
    present = set(names)
    out: dict[str, _Family] = {}
    for n in names:
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if base != n and (f"{base}_bucket" in present or meta.get(base, {}).get("type") in ("histogram", "summary")):
            m = meta.get(base, {})
            kind = m.get("type") or "histogram"
            out[base] = _Family(f"{base}_bucket" if kind == "histogram" else f"{base}_count", kind, m.get("help", ""),
                                m.get("unit", ""))  # fmt: skip
            continue
        m = meta.get(n, {})
        kind = m.get("type") or ("counter" if n.endswith("_total") else "unknown")
        out[n] = _Family(n, kind, m.get("help", ""), m.get("unit", ""))
    # A summary's base name may be listed itself (its quantile series): keep the folded family.
    return out


def _family_of(series_name: str, families: dict[str, _Family]) -> str | None:
    if series_name in families:
        return series_name
    base = re.sub(r"_(bucket|sum|count)$", "", series_name)
    return base if base in families else None


def _series(result: Mapping[str, Any], times: list[float], step_s: int) -> Series:
    labels = {str(k): str(v) for k, v in (result.get("metric") or {}).items() if k != "__name__"}
    by_time: dict[int, float | None] = {}
    for t, v in result.get("values") or []:
        value = float(v)
        by_time[round(float(t) * 1000)] = None if math.isnan(value) or math.isinf(value) else value
    values = [by_time.get(round(t * 1000)) for t in times]
    return summarize_series(labels, [format_ns(int(t * 1e9)) for t in times], values)


def _count_at_most(buckets: list[tuple[float, float]], threshold: float) -> float:
    """Observations <= threshold from cumulative (le, count) buckets, linear inside the bucket holding it."""
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if threshold <= le:
            if math.isinf(le):
                return below
            return below + (count - below) * (threshold - lower) / (le - lower) if le > lower else count
        lower, below = le, count
    return below


def _prometheus_error(excerpt: str) -> str | None:
    """`errorType: error` from a Prometheus error body; None when the body is not one."""
    try:
        body = json.loads(excerpt)
    except ValueError:
        # An excerpt cut short is not JSON any more: take the error text as far as it goes.
        m = re.search(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)', excerpt)
        return m.group(1) if m else None
    if isinstance(body, dict) and body.get("error"):
        return f"{body.get('errorType', 'error')}: {body['error']}"
    return None


def _rounded(start_ns: int, end_ns: int) -> tuple[int, int]:
    """The range widened to whole _ROUND_S periods: metadata calls with these bounds share cache entries."""
    start = int(start_ns // 10**9) // _ROUND_S * _ROUND_S
    end = -(-int(end_ns // 10**9) // _ROUND_S) * _ROUND_S
    return start, end
