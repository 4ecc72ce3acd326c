"""detect_anomalies: spikes, dips and level shifts in each service's RED series and in a named metric.

RED series come from entry spans (server spans, or roots) in one SQL scan per window: requests, errors and
the exact p95 per service and time bucket. The analysis itself is `obsmcp.analysis.anomalies` (pure).
Other tools reuse `red_series` (the data) and `compute_anomalies` (the ranked result, not rendered).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from obsmcp.analysis.anomalies import (
    BASELINE_PRECEDING,
    BASELINE_RANGE,
    BASELINE_YESTERDAY,
    MAJOR_SCORE,
    Anomaly,
    Series,
    Verdict,
    detect,
    rank,
)
from obsmcp.result import ListResult, estimate_tokens, within_budget
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_duration, format_ns, resolve_range
from obsmcp.tools.context import ToolContext
from obsmcp.tools.metrics import _default_agg, _find_metric, metric_series

NS = 1_000_000_000
DAY_NS = 86400 * NS
ENTRY = "(\"SpanKind\" = 'Server' OR \"ParentSpanId\" = '')"
# Bucket widths: the smallest giving at most ~90 buckets, never under a minute (a p95 needs requests).
STEPS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BUCKETS = 90
BEFORE_MAX_NS = 1800 * NS  # the preceding baseline window: as long as the range, at most 30 minutes
MIN_P95_REQUESTS = 5  # fewer requests in a bucket and its p95 is noise: not judged
P95_REQUESTS = 20  # a p95 should cover about this many requests (see red_series)
P95_MAX_WINDOW = 10  # buckets
RAW_LIMIT = 500_000  # raw entry spans read for low-traffic p95s (they are low traffic: far fewer)
SCORING = (
    "score = min(|z|,30) × (1+log2(ratio)) × √buckets (≤30); z = (value-baseline)/(1.4826·MAD), "
    "ratio = value/baseline as a factor ≥ 1, capped at 100"
)
SIGNAL_LABEL = {"rate": "rate", "error_rate": "error rate", "p95": "p95"}


def choose_step(tr: TimeRange) -> int:
    wanted = tr.duration_ns / NS / MAX_BUCKETS
    return next((s for s in STEPS_S if s >= wanted), STEPS_S[-1])


@dataclass
class RedSeries:
    """Entry-span RED figures of one service per bucket; bucket i covers [start_ns + i·step_ns, + step_ns)."""

    service: str
    start_ns: int
    step_ns: int
    requests: list[int]
    errors: list[int]
    p95_ms: list[float | None]
    seconds: list[float]  # seconds of the bucket inside the range and inside the data (0: no data there)
    p95_window: int = 1  # buckets each p95 covers (trailing), more than 1 for low-traffic services

    def rate(self) -> list[float | None]:
        # Buckets less than half covered (range edges, the newest bucket still filling) give no rate.
        return [n / s if s >= self.step_ns / NS / 2 else None for n, s in zip(self.requests, self.seconds, strict=True)]

    def error_rate(self) -> list[float | None]:
        return [e / n if n else None for e, n in zip(self.errors, self.requests, strict=True)]

    def times(self) -> list[int]:
        return [self.start_ns + i * self.step_ns for i in range(len(self.requests))]


def red_series(ctx: ToolContext, service: str | None, tr: TimeRange, step_s: int) -> dict[str, RedSeries]:
    """RED per service (or the one given, canonical name) and step-second bucket, buckets aligned to multiples
    of the step: request count, error count, exact p95 (None under 5 requests). One scan of the entry spans.

    A p95 of a handful of requests is the slowest one, so for services with under 20 requests in a typical
    bucket the p95 covers a trailing window of several buckets (enough for ~20 requests, at most 10 buckets),
    computed from their raw durations (a second, small read: only those services' entry spans)."""
    d = ctx.dialect
    step_ns = step_s * NS
    first = tr.start_ns // step_ns * step_ns
    n = max(1, math.ceil((tr.end_ns - first) / step_ns))
    w = Where(d).time("Timestamp", tr.start_ns, tr.end_ns).add(ENTRY)
    if service:
        w.add('"ServiceName" = ?', service)
    _, rows = ctx.db.query(
        f'SELECT "ServiceName", {d.time_bucket(col("Timestamp"), step_s)} AS b, count(*), '
        f"count(*) FILTER (WHERE \"StatusCode\" = 'Error'), {d.quantile(col('Duration'), 0.95)}, "
        f"{d.epoch_ns('min(' + col('Timestamp') + ')')}, {d.epoch_ns('max(' + col('Timestamp') + ')')} "
        f"FROM otel_traces WHERE {w.sql()} GROUP BY 1, 2",
        w.params,
    )
    if not rows:
        return {}
    # Before the first and after the last span of any service there is no data, not zero traffic.
    data_start = max(tr.start_ns, min(int(r[5]) for r in rows))
    data_end = min(tr.end_ns, max(int(r[6]) for r in rows) + 1)
    seconds = [
        max(0, min(first + (i + 1) * step_ns, data_end) - max(first + i * step_ns, data_start)) / NS for i in range(n)
    ]
    out: dict[str, RedSeries] = {}
    for svc, b, count, errs, p95, _, _ in rows:
        i = (int(b) - first) // step_ns
        if not 0 <= i < n:
            continue
        s = out.get(str(svc))
        if s is None:
            s = out[str(svc)] = RedSeries(str(svc), first, step_ns, [0] * n, [0] * n, [None] * n, list(seconds))
        s.requests[i] = int(count)
        s.errors[i] = int(errs)
        s.p95_ms[i] = float(p95) / 1e6 if p95 is not None and count >= MIN_P95_REQUESTS else None
    low = {}
    for name, s in out.items():
        busy = sorted(r for r, sec in zip(s.requests, s.seconds, strict=True) if sec > 0)
        typical = busy[len(busy) // 2] if busy else 0
        if typical < P95_REQUESTS:
            low[name] = min(P95_MAX_WINDOW, math.ceil(P95_REQUESTS / max(typical, 1)))
    if low:
        _trailing_p95(ctx, out, low, tr)
    return out


def _trailing_p95(ctx: ToolContext, out: dict[str, RedSeries], windows: dict[str, int], tr: TimeRange) -> None:
    """p95 per bucket over a trailing window of buckets, from the raw durations of low-traffic services."""
    d = ctx.dialect
    names = sorted(windows)
    w = Where(d).time("Timestamp", tr.start_ns, tr.end_ns).add(ENTRY)
    w.add(f'"ServiceName" IN ({", ".join("?" for _ in names)})', *names)
    _, rows = ctx.db.query(
        f'SELECT "ServiceName", {d.epoch_ns(col("Timestamp"))} AS t, "Duration" FROM otel_traces '
        f"WHERE {w.sql()} ORDER BY 1, 2 LIMIT {RAW_LIMIT}",
        w.params,
    )
    by: dict[str, list[tuple[int, int]]] = {}
    for svc, t, dur in rows:
        by.setdefault(str(svc), []).append((int(t), int(dur)))
    for name, pts in by.items():
        s, m = out[name], windows[name]
        times = np.array([p[0] for p in pts], dtype=np.int64)
        durs = np.array([p[1] for p in pts], dtype=np.float64)
        s.p95_window = m
        for i in range(len(s.requests)):
            end = s.start_ns + (i + 1) * s.step_ns
            lo, hi = np.searchsorted(times, [end - m * s.step_ns, end])
            s.p95_ms[i] = float(np.quantile(durs[lo:hi], 0.95)) / 1e6 if hi - lo >= P95_REQUESTS // 2 else None


# -- the analysis, not rendered ---------------------------------------------------------------------------


@dataclass
class AnomalyReport:
    """compute_anomalies' answer: every series checked, and their anomalies ranked by score."""

    range: TimeRange
    step_s: int
    verdicts: list[Verdict]
    anomalies: list[Anomaly]  # highest score first
    notes: list[str] = field(default_factory=list)

    def baselines(self) -> dict[str, int]:
        return dict(Counter(v.baseline.kind for v in self.verdicts if v.baseline is not None))

    def earliest(self, min_score: float = 0.0) -> Anomaly | None:
        """The first anomaly to start (at least min_score): where an incident began."""
        found = [a for a in self.anomalies if a.score >= min_score]
        return min(found, key=lambda a: (a.start_ns, -a.score)) if found else None


def compute_anomalies(
    ctx: ToolContext,
    service: str | None = None,
    metric: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> AnomalyReport:
    """Anomalies in the RED series of `service` (every service when None) and, when named, in `metric`."""
    svc = ctx.resolve(service)
    tr = resolve_range(start, end)
    step_s = choose_step(tr)
    notes: list[str] = []
    series = red_inputs(ctx, svc, tr, step_s)
    if metric and metric.strip():
        series.extend(metric_inputs(ctx, metric.strip(), svc, tr, step_s, notes))
    verdicts = [detect(s) for s in series]
    report = AnomalyReport(tr, step_s, verdicts, rank(verdicts), notes)
    if report.baselines().get(BASELINE_RANGE):
        notes.append(
            "no data before the range or 24 h earlier for some series: their baseline is the range's own median, "
            "so an anomaly lasting more than half the range would look normal; start earlier to include normal time"
        )
    return report


def _grid(tr: TimeRange, step_s: int) -> tuple[int, int, int]:
    """(first bucket start, buckets in the range, buckets of the preceding baseline window)."""
    step_ns = step_s * NS
    first = tr.start_ns // step_ns * step_ns
    n = max(1, math.ceil((tr.end_ns - first) / step_ns))
    before = max(1, min(tr.duration_ns, BEFORE_MAX_NS) // step_ns)
    return first, n, before


def _has_entry_spans(ctx: ToolContext, svc: str | None, tr: TimeRange) -> bool:
    w = Where(ctx.dialect).time("Timestamp", tr.start_ns, tr.end_ns).add(ENTRY)
    if svc:
        w.add('"ServiceName" = ?', svc)
    _, rows = ctx.db.query(f"SELECT 1 FROM otel_traces WHERE {w.sql()} LIMIT 1", w.params)
    return bool(rows)


def red_inputs(ctx: ToolContext, svc: str | None, tr: TimeRange, step_s: int) -> list[Series]:
    """Rate, error rate and p95 series per service, each with its baseline data: the same buckets 24 h earlier
    when there are entry spans then (one more scan), else the preceding window (read in the same scan)."""
    step_ns = step_s * NS
    first, n, n_before = _grid(tr, step_s)
    day_before = TimeRange(first - DAY_NS, tr.end_ns - DAY_NS)
    yesterday: dict[str, RedSeries] | None = None
    if _has_entry_spans(ctx, svc, day_before):
        yesterday = red_series(ctx, svc, day_before, step_s)
        window = TimeRange(first, tr.end_ns)
        k = 0
    else:
        window = TimeRange(first - n_before * step_ns, tr.end_ns)
        k = n_before
    out: list[Series] = []
    for name, red in sorted(red_series(ctx, svc, window, step_s).items()):
        old = yesterday.get(name) if yesterday is not None else None
        columns: dict[str, tuple[list[float | None], list[float | None] | None]] = {
            "rate": (red.rate(), old.rate() if old else None),
            "error_rate": (red.error_rate(), old.error_rate() if old else None),
            "p95": (list(red.p95_ms), list(old.p95_ms) if old else None),
        }
        units = {"rate": "req/s", "error_rate": "ratio", "p95": "ms"}
        for signal, (values, past) in columns.items():
            out.append(
                Series(
                    service=name,
                    signal=signal,
                    unit=units[signal],
                    start_ns=first,
                    step_ns=step_ns,
                    values=values[k : k + n],
                    before=values[:k],
                    yesterday=_fit(past, n),
                    events=[float(r) for r in red.requests[k : k + n]] if signal == "error_rate" else None,
                    before_events=[float(r) for r in red.requests[:k]] if signal == "error_rate" else (),
                    window=red.p95_window if signal == "p95" else 1,
                )
            )
    return out


def metric_inputs(
    ctx: ToolContext, metric: str, svc: str | None, tr: TimeRange, step_s: int, notes: list[str]
) -> list[Series]:
    """The metric's default aggregation (gauge avg, counter rate, histogram p95) per service, through the
    same code as query_metrics, with the preceding window and the same buckets 24 h earlier."""
    mtype, unit = _find_metric(ctx, metric, svc)
    agg = _default_agg(mtype)
    step_ns = step_s * NS
    first, n, n_before = _grid(tr, step_s)
    window = TimeRange(first - n_before * step_ns, tr.end_ns)
    now, read_notes = metric_series(ctx, metric, mtype, agg, svc, None, ["service"], window, step_s)
    past, _ = metric_series(
        ctx, metric, mtype, agg, svc, None, ["service"], TimeRange(first - DAY_NS, tr.end_ns - DAY_NS), step_s
    )
    notes.extend(read_notes)
    past_by = {labels: buckets for labels, buckets in past}
    out: list[Series] = []
    for labels, buckets in now:
        values = [buckets.get(i) for i in range(n_before + n)]
        old = past_by.get(labels)
        out.append(
            Series(
                service=dict(labels).get("service", ""),
                signal=metric,
                unit=f"{unit} ({agg})" if unit else agg,
                start_ns=first,
                step_ns=step_ns,
                values=values[n_before:],
                before=values[:n_before],
                yesterday=[old.get(i) for i in range(n)] if old else None,
            )
        )
    return out


def _fit(values: Sequence[float | None] | None, n: int) -> list[float | None] | None:
    if values is None:
        return None
    out = list(values[:n])
    return out + [None] * (n - len(out))


# -- the tool -------------------------------------------------------------------------------------------


class AnomalyItem(BaseModel):
    rank: int
    service: str
    signal: str = Field(description="rate | error_rate | p95 (entry spans) | a metric name")
    kind: str = Field(description="spike | dip | level_shift")
    start: str
    end: str
    ongoing: bool = Field(description="still anomalous in the last bucket of the range")
    duration_s: int
    value: float = Field(description="peak (spike/dip) or median (level shift) value")
    baseline: float = Field(description="the normal value it breaks")
    unit: str
    ratio: float | None = Field(description="value / baseline; null when the baseline is 0")
    z: float = Field(description="robust z: (value - baseline) / (1.4826 × MAD)")
    score: float
    baseline_kind: str = Field(description=f"{BASELINE_YESTERDAY} | {BASELINE_PRECEDING} | {BASELINE_RANGE}")


class DetectAnomaliesResult(ListResult):
    range: str
    step_s: int
    series_checked: int
    major: int = Field(0, description=f"anomalies scoring at least {MAJOR_SCORE:g}: incident-sized")
    series_without_data: int = Field(description="series with fewer than 5 buckets of data: not judged")
    baselines: dict[str, int] = Field(description="series per baseline kind")
    scoring: str
    anomalies: list[AnomalyItem] = Field(default_factory=list)


def detect_anomalies(
    ctx: ToolContext,
    service: str | None = None,
    metric: str | None = None,
    start: str | None = None,
    end: str | None = None,
    max_tokens: int | None = None,
) -> tuple[DetectAnomaliesResult, str]:
    report = compute_anomalies(ctx, service, metric, start, end)
    items = [_item(i + 1, a) for i, a in enumerate(report.anomalies)]
    judged = [v for v in report.verdicts if v.baseline is not None]
    major = sum(1 for a in report.anomalies if a.score >= MAJOR_SCORE)
    services = sorted({v.series.service for v in report.verdicts})
    head = [
        f"detect_anomalies: {len(items)} anomalies ({major} major, score ≥ {MAJOR_SCORE:g}) in {len(judged)} series "
        f"({len(services)} services: entry-span rate, error rate, p95"
        + (f"; metric {metric}" if metric else "")
        + f") over {report.range.describe()}, {report.step_s}s buckets, highest score first",
        "baselines: "
        + (", ".join(f"{kind} for {n} series" for kind, n in sorted(report.baselines().items())) or "none"),
        SCORING,
    ]
    budget = ctx.budget(max_tokens)
    overhead = estimate_tokens("\n".join(head + report.notes)) + 40
    kept = within_budget(items, lambda it: estimate_tokens(_line(it)), budget, overhead)
    notes = list(report.notes)
    if len(kept) < len(items):
        notes.append(
            f"{len(items) - len(kept)} lower-ranked anomalies not shown to fit ~{budget} tokens: "
            "narrow with service= or a shorter range"
        )
    res = DetectAnomaliesResult(
        range=report.range.describe(),
        step_s=report.step_s,
        series_checked=len(judged),
        major=major,
        series_without_data=len(report.verdicts) - len(judged),
        baselines=report.baselines(),
        scoring=SCORING,
        total=len(items),
        returned=len(kept),
        truncated=len(kept) < len(items),
        notes=notes,
        anomalies=kept,
    )
    lines = [_line(it) for it in kept]
    if not report.verdicts:
        lines.append(
            "no entry spans"
            + (f" of {ctx.resolve(service)}" if service else "")
            + " in range: widen start (e.g. start='6h') or check list_services"
        )
    elif not items:
        lines.append(f"no anomalies: {len(judged)} series within their normal range")
    return res, "\n".join(head + lines + notes)


def _item(rank_: int, a: Anomaly) -> AnomalyItem:
    return AnomalyItem(
        rank=rank_,
        service=a.service,
        signal=a.signal,
        kind=a.kind,
        start=format_ns(a.start_ns),
        end=format_ns(a.end_ns),
        ongoing=a.ongoing,
        duration_s=(a.end_ns - a.start_ns) // NS,
        value=_round(a.value),
        baseline=_round(a.baseline),
        unit=a.unit,
        ratio=a.ratio,
        z=a.z,
        score=a.score,
        baseline_kind=a.baseline_kind,
    )


def _round(v: float) -> float:
    return float(f"{v:.4g}")


def format_value(v: float, unit: str) -> str:
    if unit == "ms":
        return format_duration(v * 1e6)
    if unit == "ratio":
        return f"{v * 100:.2f}%"
    if unit == "req/s":
        return f"{v:.3g}/s"
    return f"{v:.4g}"


def _line(it: AnomalyItem) -> str:
    ratio = "" if it.ratio is None else (f"x{it.ratio:.3g}, " if it.ratio >= 1 else f"÷{1 / it.ratio:.3g}, ")
    when = f"since {it.start} (ongoing)" if it.ongoing else f"{it.start} .. {it.end}"
    unit = "" if it.unit in ("ms", "ratio", "req/s") else f" {it.unit}"
    return (
        f"{it.rank}. {it.service or 'all'} {SIGNAL_LABEL.get(it.signal, it.signal)} {it.kind} {when} "
        f"({format_duration(it.duration_s * NS)}): {format_value(it.value, it.unit)} vs "
        f"{format_value(it.baseline, it.unit)}{unit} ({ratio}z={it.z:g}; {it.baseline_kind}) score {it.score:g}"
    )
