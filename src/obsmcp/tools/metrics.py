"""list_metrics and query_metrics over the five OTLP metric tables."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field

from obsmcp.result import ListResult, estimate_tokens, within_budget
from obsmcp.sources.base import MetricQuery, MetricSource
from obsmcp.store.schema import METRIC_TABLES, attributes_dict
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_ns, parse_duration, resolve_range
from obsmcp.tools.context import ToolContext, ToolInputError

AGGREGATIONS = ("avg", "sum", "min", "max", "rate", "increase", "p50", "p90", "p95", "p99", "count")
_STEPS_S = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


class MetricInfo(BaseModel):
    name: str
    type: str
    unit: str
    description: str
    services: list[str]
    attribute_keys: list[str]


class ListMetricsResult(ListResult):
    metrics: list[MetricInfo] = Field(default_factory=list)


def list_metrics(
    ctx: ToolContext,
    filter: str | None = None,
    service: str | None = None,
    max_tokens: int | None = None,
    backend: str | None = None,
) -> tuple[ListMetricsResult, str]:
    source, routing = metric_source(ctx, backend)
    if source is not None:
        return _remote_list_metrics(ctx, source, routing, filter, service, max_tokens)
    svc = ctx.resolve(service)
    infos: list[MetricInfo] = []
    d = ctx.dialect
    for mtype, table in METRIC_TABLES.items():
        where = Where(d)
        if svc:
            where.add('"ServiceName" = ?', svc)
        if filter and filter.strip():
            where.contains("MetricName", filter.strip())
        _, rows = ctx.db.query(
            f'SELECT "MetricName", {d.any_value(col("MetricUnit"))}, '
            f"{d.any_value(col('MetricDescription'))}, "
            f"{d.list_distinct_agg(col('ServiceName'), 20)}, "
            f"{d.distinct_keys_agg(col('Attributes'), 20)} "
            f"FROM {table.name} WHERE {where.sql()} GROUP BY 1 ORDER BY 1",
            where.params,
        )
        for name, unit, desc, services, keys in rows:
            infos.append(
                MetricInfo(
                    name=str(name),
                    type=mtype,
                    unit=str(unit or ""),
                    description=str(desc or ""),
                    services=[str(s) for s in services],
                    attribute_keys=[str(k) for k in keys],
                )
            )
    infos.sort(key=lambda m: m.name)
    budget = ctx.budget(max_tokens)
    kept = within_budget(infos, lambda m: estimate_tokens(_metric_line(m)), budget, 60)
    notes = []
    if len(kept) < len(infos):
        notes.append(f"{len(infos) - len(kept)} more metrics not shown: narrow with filter= or service=")
    res = ListMetricsResult(
        total=len(infos), returned=len(kept), truncated=len(kept) < len(infos), notes=notes, metrics=kept
    )
    head = (
        f"list_metrics: {len(infos)} metrics"
        + (f" for {svc}" if svc else "")
        + (f" matching {filter!r}" if filter else "")
    )
    lines = [_metric_line(m) for m in kept]
    if not infos:
        lines.append("no metrics recorded" + (": loosen the filter" if filter or svc else " yet"))
    return res, "\n".join([head, *lines, *notes])


# -- remote metric sources (obsmcp.sources): the same answers, fetched from a backend ---------------------


def metric_source(ctx: ToolContext, backend: str | None) -> tuple[MetricSource | None, list[str]]:
    """The remote source that answers metrics (None: the store) and notes on the routing.

    Routing is configuration: `backend` names one (or "store"); without it the first backend configured for
    metrics answers (obsmcp.sources.registry), and the store when none is."""
    sources = ctx.sources.for_signal("metrics", backend)
    if not sources:
        return None, []
    source = sources[0]
    if not isinstance(source, MetricSource):
        raise ToolInputError(f"backend {source.name!r} ({source.kind}) cannot answer metric queries")
    notes = [f"answered by backend {source.name} ({source.kind})"]
    others = [s.name for s in sources[1:]]
    if others and not backend:
        notes[0] += f"; also serving metrics: {', '.join(others)}, 'store' (pass backend= to ask one)"
    return source, notes


def _remote_list_metrics(
    ctx: ToolContext,
    source: MetricSource,
    routing: list[str],
    filter: str | None,
    service: str | None,
    max_tokens: int | None,
) -> tuple[ListMetricsResult, str]:
    tr = resolve_range(None, None)
    svc = ctx.sources.resolve(source, service, tr.start_ns, tr.end_ns)
    page = ctx.sources.call(source.list_metrics(filter, svc), ctx.sources.timeout_for(source))
    infos = page.metrics
    budget = ctx.budget(max_tokens)
    kept = within_budget(infos, lambda m: estimate_tokens(_metric_line(m)), budget, 60)
    notes = [*routing, *page.notes]
    if page.freshness:
        notes.append(page.freshness)
    if len(kept) < len(infos):
        notes.append(f"{len(infos) - len(kept)} more metrics not shown: narrow with filter= or service=")
    res = ListMetricsResult(
        total=len(infos), returned=len(kept), truncated=len(kept) < len(infos), notes=notes, metrics=kept
    )
    head = (
        f"list_metrics: {len(infos)} metrics from backend {source.name}"
        + (f" for {svc}" if svc else "")
        + (f" matching {filter!r}" if filter else "")
    )
    lines = [_metric_line(m) for m in kept]
    if not infos:
        lines.append("no metrics found" + (": loosen the filter" if filter or svc else ""))
    return res, "\n".join([head, *lines, *notes])


def _remote_query_metrics(
    ctx: ToolContext,
    source: MetricSource,
    routing: list[str],
    metric: str | None,
    promql: str | None,
    service: str | None,
    attributes: dict[str, str] | None,
    aggregation: str | None,
    group_by: list[str] | None,
    tr: TimeRange,
    step_s: int,
    max_tokens: int | None,
) -> tuple[QueryMetricsResult, str]:
    agg = (aggregation or "").strip().lower()
    if agg and agg not in AGGREGATIONS:
        raise ToolInputError(f"aggregation={aggregation!r} is unknown: use one of {', '.join(AGGREGATIONS)}")
    if promql and promql.strip():
        svc, query = None, MetricQuery(tr.start_ns, tr.end_ns, raw=promql, step_s=step_s)
    elif metric and metric.strip():
        svc = ctx.sources.resolve(source, service, tr.start_ns, tr.end_ns)
        query = MetricQuery(
            tr.start_ns,
            tr.end_ns,
            name=metric.strip(),
            service=svc,
            # No aggregation: Prometheus picks by the metric's type (counter rate, histogram p95, gauge avg);
            # MetricQuery's documented default, avg, for the others.
            aggregation=agg or ("" if source.kind == "prometheus" else "avg"),
            step_s=step_s,
            group_by=tuple(g.strip() for g in (group_by or []) if g.strip()),
            attributes=dict(attributes or {}),
        )
    else:
        raise ToolInputError("query_metrics needs metric= (a name from list_metrics) or promql=")
    page = ctx.sources.call(source.query_metrics(query), ctx.sources.timeout_for(source))
    label = metric.strip() if metric and not (promql and promql.strip()) else "promql"
    notes = [*routing]
    if page.query:
        notes.append(f"query: {page.query}")
    notes.extend(page.notes)
    if page.freshness:
        notes.append(page.freshness)
    return _budgeted_series(
        ctx,
        label,
        f"backend {source.name}",
        "",
        agg or "default",
        page.step_s or step_s,
        tr,
        page.series,
        notes,
        max_tokens,
    )


def _metric_line(m: MetricInfo) -> str:
    unit = f" [{m.unit}]" if m.unit else ""
    return f"{m.name} ({m.type}){unit} services={','.join(m.services)} attrs={','.join(m.attribute_keys)}"


# -- query_metrics -----------------------------------------------------------------------------------


class SeriesPoint(BaseModel):
    t: str
    v: float | None


class Series(BaseModel):
    labels: dict[str, str]
    points: list[SeriesPoint]
    min: float | None
    max: float | None
    last: float | None
    trend: str


def summarize_series(labels: dict[str, str], times: list[str], values: list[float | None]) -> Series:
    """One series from its per-step values (None = no data): rounded points, min/max/last and the trend."""
    points = [SeriesPoint(t=t, v=_round(v)) for t, v in zip(times, values, strict=True)]
    vals = [p.v for p in points if p.v is not None]
    return Series(
        labels=labels,
        points=points,
        min=min(vals) if vals else None,
        max=max(vals) if vals else None,
        last=vals[-1] if vals else None,
        trend=_trend(vals),
    )


class QueryMetricsResult(ListResult):
    metric: str
    type: str
    unit: str
    aggregation: str
    step_s: int
    range: str
    series: list[Series] = Field(default_factory=list)


def query_metrics(
    ctx: ToolContext,
    metric: str | None,
    service: str | None = None,
    attributes: dict[str, str] | None = None,
    aggregation: str | None = None,
    group_by: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    step: str | None = None,
    max_tokens: int | None = None,
    backend: str | None = None,
    promql: str | None = None,
) -> tuple[QueryMetricsResult, str]:
    source, routing = metric_source(ctx, backend)
    if source is None and promql:
        raise ToolInputError(
            "promql needs a Prometheus backend: pass backend= (one of "
            f"{', '.join(ctx.sources.names()) or 'none configured'}); for the store, use metric="
        )
    if source is not None:
        tr = resolve_range(start, end)
        return _remote_query_metrics(
            ctx, source, routing, metric, promql, service, attributes, aggregation, group_by, tr,
            _step_seconds(step, tr), max_tokens,
        )  # fmt: skip
    if not metric or not metric.strip():
        raise ToolInputError("query_metrics needs metric=: a name from list_metrics")
    svc = ctx.resolve(service)
    tr = resolve_range(start, end)
    mtype, unit = _find_metric(ctx, metric, svc)
    agg = (aggregation or _default_agg(mtype)).strip().lower()
    if agg not in AGGREGATIONS:
        raise ToolInputError(f"aggregation={aggregation!r} is unknown: use one of {', '.join(AGGREGATIONS)}")
    if agg.startswith("p") and mtype not in ("histogram", "exponential_histogram", "summary"):
        raise ToolInputError(
            f"{agg} needs a histogram; {metric} is a {mtype}: use avg, min, max"
            + (", rate or increase" if mtype == "sum" else "")
        )
    if agg in ("rate", "increase") and mtype not in ("sum", "histogram", "exponential_histogram", "summary"):
        raise ToolInputError(f"{agg} applies to counters; {metric} is a {mtype}: use avg, min or max")

    group_keys = [g.strip() for g in (group_by or []) if g.strip()]
    step_s = _step_seconds(step, tr)
    n_buckets = math.ceil(tr.duration_ns / 10**9 / step_s)
    notes: list[str] = []
    if n_buckets > 2000:
        raise ToolInputError(f"step={step} gives {n_buckets} points: use a larger step or a shorter range")

    buckets_by_labels, read_notes = metric_series(ctx, metric, mtype, agg, svc, attributes, group_keys, tr, step_s)
    notes.extend(read_notes)
    series: list[Series] = []
    for labels, buckets in buckets_by_labels:
        points = [
            SeriesPoint(t=format_ns(tr.start_ns + b * step_s * 10**9), v=_round(buckets.get(b)))
            for b in range(n_buckets)
        ]
        vals = [p.v for p in points if p.v is not None]
        series.append(
            Series(
                labels=dict(labels),
                points=points,
                min=min(vals) if vals else None,
                max=max(vals) if vals else None,
                last=vals[-1] if vals else None,
                trend=_trend(vals),
            )
        )

    return _budgeted_series(ctx, metric, mtype, unit, agg, step_s, tr, series, notes, max_tokens)


def _step_seconds(step: str | None, tr: TimeRange) -> int:
    if step:
        return max(1, parse_duration(step) // 10**9)
    # About 60 points per series, on a round step.
    wanted = tr.duration_ns / 10**9 / 60
    return next((s for s in _STEPS_S if s >= wanted), _STEPS_S[-1])


def _budgeted_series(
    ctx: ToolContext,
    metric: str,
    mtype: str,
    unit: str,
    agg: str,
    step_s: int,
    tr: TimeRange,
    series: list[Series],
    notes: list[str],
    max_tokens: int | None,
) -> tuple[QueryMetricsResult, str]:
    # Budget: degrade points -> summaries only -> fewer series.
    budget = ctx.budget(max_tokens)
    total_series = len(series)
    text = _render_metrics(metric, mtype, unit, agg, step_s, tr.describe(), series, with_points=True)
    if estimate_tokens(text) > budget:
        notes.append(
            "per-step points omitted to fit the budget: min/max/last/trend per series remain; "
            "narrow with attributes/group_by or a larger step for points"
        )
        for s in series:
            s.points = []
        text = _render_metrics(metric, mtype, unit, agg, step_s, tr.describe(), series, with_points=False)
    while estimate_tokens(text) > budget and len(series) > 1:
        series = series[: max(1, len(series) // 2)]
        text = _render_metrics(metric, mtype, unit, agg, step_s, tr.describe(), series, with_points=False)
    if len(series) < total_series:
        notes.append(f"{total_series - len(series)} of {total_series} series not shown: filter or group_by less")
    res = QueryMetricsResult(
        metric=metric,
        type=mtype,
        unit=unit,
        aggregation=agg,
        step_s=step_s,
        range=tr.describe(),
        total=total_series,
        returned=len(series),
        truncated=len(series) < total_series,
        notes=notes,
        series=series,
    )
    if not series:
        text += "\nno data points in range: widen the range (start='6h') or check attributes"
    return res, "\n".join([text, *notes])


def metric_series(
    ctx: ToolContext,
    metric: str,
    mtype: str,
    agg: str,
    svc: str | None,
    attributes: dict[str, str] | None,
    group_keys: list[str],
    tr: TimeRange,
    step_s: int,
) -> tuple[list[tuple[tuple[tuple[str, str], ...], dict[int, float | None]]], list[str]]:
    """A metric as data: per output series (group_by labels, sorted), the aggregated value of each step-second
    bucket from tr.start (bucket index -> value; absent = no data), and notes on what was cut.
    Counters become deltas/rates (resets handled), histograms percentiles from their buckets."""
    notes: list[str] = []
    table = METRIC_TABLES[mtype].name
    where = Where(ctx.dialect).time("TimeUnix", tr.start_ns, tr.end_ns).add('"MetricName" = ?', metric)
    if svc:
        where.add('"ServiceName" = ?', svc)
    for k, v in (attributes or {}).items():
        where.attribute(("Attributes", "ResourceAttributes"), k, str(v))
    value_cols = {
        "gauge": '"Value"',
        "sum": '"Value", "AggregationTemporality", "IsMonotonic"',
        "histogram": '"Count", "Sum", "BucketCounts", "ExplicitBounds", "AggregationTemporality"',
        "exponential_histogram": '"Count", "Sum", "AggregationTemporality"',
        "summary": '"Count", "Sum", "ValueAtQuantiles.Quantile", "ValueAtQuantiles.Value"',
    }[mtype]
    _, rows = ctx.db.query(
        f'SELECT "ServiceName", "Attributes", {ctx.dialect.epoch_ns(col("TimeUnix"))}, '
        f'{value_cols} FROM {table} WHERE {where.sql()} ORDER BY "TimeUnix" LIMIT 2000000',
        where.params,
    )
    if len(rows) >= 2_000_000:
        notes.append("only the first 2,000,000 points were read: narrow the range or filters")

    # Raw series identity = service + all attributes; output series = the group_by projection.
    raw: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        attrs = attributes_dict(r[1])
        raw[(r[0], tuple(sorted(attrs.items())))].append(r)
    grouped: dict[tuple[tuple[str, str], ...], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    hist_acc: dict[tuple[tuple[str, str], ...], dict[int, list[Any]]] = defaultdict(dict)
    for (svc_name, attr_items), pts in raw.items():
        labels = _labels(str(svc_name), dict(attr_items), group_keys)
        for bucket, value in _series_values(mtype, agg, pts, tr.start_ns, step_s, hist_acc, labels):
            grouped[labels][bucket].append(value)

    out: list[tuple[tuple[tuple[str, str], ...], dict[int, float | None]]] = []
    label_sets = set(grouped) | set(hist_acc)
    for labels in sorted(label_sets):
        buckets: dict[int, float | None] = {}
        if mtype in ("histogram", "exponential_histogram", "summary") and (agg.startswith("p") or agg == "avg"):
            for b, acc in hist_acc[labels].items():
                buckets[b] = _hist_stat(acc, agg)
        else:
            for b, vals in grouped[labels].items():
                buckets[b] = _combine(vals, agg, step_s)
        out.append((labels, buckets))
    return out, notes


def _find_metric(ctx: ToolContext, metric: str, svc: str | None) -> tuple[str, str]:
    for mtype, table in METRIC_TABLES.items():
        _, rows = ctx.db.query(
            f'SELECT {ctx.dialect.any_value(col("MetricUnit"))} FROM {table.name} WHERE "MetricName" = ? '
            "HAVING count(*) > 0",
            [metric],
        )
        if rows:
            return mtype, str(rows[0][0] or "")
    import difflib

    names: list[str] = []
    for table in METRIC_TABLES.values():
        _, rows = ctx.db.query(f'SELECT DISTINCT "MetricName" FROM {table.name}')
        names.extend(str(r[0]) for r in rows)
    close = difflib.get_close_matches(metric, names, n=3, cutoff=0.4)
    sub = [n for n in names if metric.lower() in n.lower()][:3]
    hint = ", ".join(dict.fromkeys(sub + close)) or "none similar"
    raise ToolInputError(f"no metric named {metric!r}: did you mean {hint}? list_metrics shows all")


def _default_agg(mtype: str) -> str:
    return {
        "gauge": "avg",
        "sum": "rate",
        "histogram": "p95",
        "exponential_histogram": "rate",
        "summary": "avg",
    }[mtype]


def _labels(service: str, attrs: dict[str, str], keys: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for k in keys:
        if k in ("service", "service.name"):
            out.append(("service", service))
        else:
            out.append((k, str(attrs.get(k, ""))))
    return tuple(out)


def _series_values(
    mtype: str,
    agg: str,
    pts: list[tuple[Any, ...]],
    start_ns: int,
    step_s: int,
    hist_acc: dict[tuple[tuple[str, str], ...], dict[int, list[Any]]],
    labels: tuple[tuple[str, str], ...],
) -> list[tuple[int, float]]:
    """Per raw series: (bucket index, value) pairs ready to combine across series."""
    step_ns = step_s * 10**9
    out: list[tuple[int, float]] = []
    if mtype == "gauge":
        return [((int(p[2]) - start_ns) // step_ns, float(p[3])) for p in pts]
    if mtype == "sum":
        cumulative = int(pts[0][4]) == 2 if pts else True
        if agg in ("rate", "increase", "sum") and cumulative and (pts[0][5] if pts else True):
            prev = None
            for p in pts:
                v = float(p[3])
                if prev is not None:
                    delta = v - prev if v >= prev else v  # counter reset
                    out.append(((int(p[2]) - start_ns) // step_ns, delta))
                prev = v
            return out
        return [((int(p[2]) - start_ns) // step_ns, float(p[3])) for p in pts]
    # Histograms and summaries: count deltas (rate/increase/count), or bucket deltas for quantiles.
    prev_row: tuple[Any, ...] | None = None
    for p in pts:
        b = (int(p[2]) - start_ns) // step_ns
        count, total = float(p[3]), float(p[4])
        cumulative = mtype == "summary" or int(p[-1] if mtype != "summary" else 2) == 2
        if mtype == "histogram":
            counts = [float(c) for c in p[5]]
            bounds = [float(x) for x in p[6]]
        else:
            counts, bounds = [], []
        if cumulative and prev_row is not None:
            pc, ps, pcounts = prev_row
            if count >= pc:
                d_count, d_sum = count - pc, total - ps
                d_counts = (
                    [c - q for c, q in zip(counts, pcounts, strict=False)] if len(pcounts) == len(counts) else counts
                )
            else:
                d_count, d_sum, d_counts = count, total, counts
        elif cumulative:
            prev_row = (count, total, counts)
            continue
        else:
            d_count, d_sum, d_counts = count, total, counts
        prev_row = (count, total, counts)
        if agg in ("rate", "increase", "count", "sum"):
            out.append((b, d_count if agg != "sum" else d_sum))
        acc = hist_acc[labels].setdefault(b, [0.0, 0.0, [0.0] * len(d_counts), bounds, []])
        acc[0] += d_count
        acc[1] += d_sum
        if len(acc[2]) == len(d_counts):
            acc[2] = [a + c for a, c in zip(acc[2], d_counts, strict=False)]
        if mtype == "summary":
            acc[4].append(dict(zip(p[5], p[6], strict=False)))
    return out


def _hist_stat(acc: list[Any], agg: str) -> float | None:
    count, total, counts, bounds, summaries = acc
    if agg == "avg":
        return total / count if count > 0 else None
    q = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}[agg]
    if summaries:
        vals = [s.get(q) for s in summaries if q in s]
        return max(vals) if vals else None
    if count <= 0 or not counts or not bounds:
        return None
    return histogram_quantile(q, bounds, counts)


def histogram_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """Linear interpolation inside the bucket holding the q-th observation (as Prometheus does)."""
    total = sum(counts)
    rank = q * total
    cum = 0.0
    cumulative = []
    for c in counts:
        cum += c
        cumulative.append(cum)
    i = bisect.bisect_left(cumulative, rank)
    i = min(i, len(counts) - 1)
    if i >= len(bounds):  # the +Inf bucket: the best we can say is the last finite bound
        return bounds[-1] if bounds else 0.0
    lower = bounds[i - 1] if i > 0 else 0.0
    upper = bounds[i]
    below = cumulative[i - 1] if i > 0 else 0.0
    in_bucket = counts[i]
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def _combine(vals: list[float], agg: str, step_s: int) -> float | None:
    if not vals:
        return None
    if agg in ("avg",):
        return sum(vals) / len(vals)
    if agg == "min":
        return min(vals)
    if agg == "max":
        return max(vals)
    if agg == "rate":
        return sum(vals) / step_s
    return sum(vals)  # sum, increase, count


def _round(v: float | None) -> float | None:
    if v is None or math.isnan(v):
        return None
    return float(f"{v:.4g}")


def _trend(vals: list[float]) -> str:
    if len(vals) < 3:
        return "too few points"
    third = max(1, len(vals) // 3)
    a = sum(vals[:third]) / third
    b = sum(vals[-third:]) / third
    if a == 0 and b == 0:
        return "flat at 0"
    change = (b - a) / abs(a) if a else float("inf")
    if abs(change) < 0.1:
        return "flat"
    pct = "∞" if math.isinf(change) else f"{change * 100:+.0f}%"
    return f"{'rising' if change > 0 else 'falling'} ({pct}, last third vs first third)"


def _render_metrics(
    metric: str,
    mtype: str,
    unit: str,
    agg: str,
    step_s: int,
    rng: str,
    series: list[Series],
    with_points: bool,
) -> str:
    u = f" {unit}" if unit else ""
    out = [f"query_metrics: {agg} of {metric} ({mtype}{u}) per {step_s}s over {rng}; {len(series)} series"]
    for s in series:
        label = ", ".join(f"{k}={v}" for k, v in s.labels.items()) or "all"
        out.append(f"[{label}] min={s.min} max={s.max} last={s.last} trend: {s.trend}")
        if with_points:
            out.append("  " + " ".join("-" if p.v is None else f"{p.v:g}" for p in s.points))
    if with_points and series:
        out.append(f"points: one per {step_s}s step from the range start, '-' = no data")
    return "\n".join(out)
