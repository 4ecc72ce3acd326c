"""render_chart: a PNG of a metric's series, a service's RED panel or its latency histogram.

Anomalies (from detect_anomalies' analysis of the same data) are shaded, SLO latency thresholds drawn as
dashed lines. The answer is MCP image content plus a short text saying what is drawn, with the key numbers,
so an agent that cannot see images still learns what the chart shows.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from mcp.types import CallToolResult, ImageContent
from pydantic import BaseModel, Field

from obsmcp.analysis.anomalies import Anomaly, Series, detect, rank
from obsmcp.analysis.charts import Line, Panel, Shade, Threshold, render_histogram, render_panels
from obsmcp.config import Settings
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_duration, format_ns, resolve_range
from obsmcp.tools import slo as slo_tool
from obsmcp.tools.anomalies import (
    ENTRY,
    SIGNAL_LABEL,
    choose_step,
    format_value,
    metric_inputs,
    red_inputs,
)
from obsmcp.tools.context import ToolContext, ToolInputError

KINDS = ("series", "red", "latency_histogram")
# The default latency SLOs, until the SLO engine (obsmcp.analysis.slo) answers for a service.
DEFAULT_THRESHOLDS = (("SLO p95 < 2s", 2000.0), ("SLO p99 < 5s", 5000.0))
MAX_LINES = 8  # metric series drawn; more would be an unreadable tangle
MAX_SHADES = 5  # anomalies shaded on a multi-series chart (highest score first)
BINS_PER_OCTAVE = 4  # latency histogram: bins 19% wide on a log axis
TIME_UNITS_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001, "ns": 1e-6}


class ChartResult(BaseModel):
    kind: str
    service: str | None = None
    metric: str | None = None
    range: str
    step_s: int | None = Field(None, description="bucket width of the time series")
    width_px: int
    height_px: int
    png_bytes: int
    anomalies: int = Field(0, description="anomalies shaded")
    thresholds: list[str] = Field(default_factory=list, description="SLO threshold lines drawn")
    notes: list[str] = Field(default_factory=list)


def latency_thresholds(settings: Settings, service: str | None) -> list[tuple[str, float]]:
    """(label, ms) lines to draw: the service's latency SLOs (configured, or the defaults)."""
    if service is None:
        return list(DEFAULT_THRESHOLDS)
    return slo_tool.latency_thresholds(settings, service)


def render_chart(
    ctx: ToolContext,
    metric: str | None = None,
    service: str | None = None,
    kind: str = "series",
    start: str | None = None,
    end: str | None = None,
) -> tuple[ChartResult, str, bytes]:
    """(structured description, text, PNG bytes)."""
    kind = (kind or "series").strip().lower()
    if kind not in KINDS:
        raise ToolInputError(f"kind={kind!r} is unknown: use series (a metric), red or latency_histogram (a service)")
    metric = metric.strip() if metric and metric.strip() else None
    if kind == "series" and not metric:
        raise ToolInputError(
            "kind=series draws a metric: pass metric= (see list_metrics), or kind=red / latency_histogram "
            "with service= for a service's requests"
        )
    svc = ctx.resolve(service)
    if kind in ("red", "latency_histogram") and not svc:
        raise ToolInputError(f"kind={kind} draws one service's entry spans: pass service= (see list_services)")
    tr = resolve_range(start, end)
    if kind == "red":
        assert svc is not None
        return _red(ctx, svc, tr)
    if kind == "latency_histogram":
        assert svc is not None
        return _histogram(ctx, svc, tr)
    assert metric is not None
    return _series(ctx, metric, svc, tr)


def image_result(result: CallToolResult, png: bytes) -> CallToolResult:
    """The tool's answer with the PNG appended as MCP image content (the text stays first)."""
    image = ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png")
    return CallToolResult(
        content=[*result.content, image],
        structured_content=result.structured_content,
        is_error=result.is_error,
    )


# -- kinds ----------------------------------------------------------------------------------------------


def _red(ctx: ToolContext, svc: str, tr: TimeRange) -> tuple[ChartResult, str, bytes]:
    step_s = choose_step(tr)
    series = {s.signal: s for s in red_inputs(ctx, svc, tr, step_s) if s.service == svc}
    if not series:
        raise ToolInputError(f"no entry spans of {svc} in {tr.describe()}: widen start (e.g. start='6h')")
    found = rank([detect(s) for s in series.values()])
    thresholds = latency_thresholds(ctx.settings, svc)
    panels = []
    for signal, unit, factor in (("rate", "req/s", 1.0), ("error_rate", "%", 100.0), ("p95", "ms", 1.0)):
        s = series[signal]
        shades = [Shade(a.start_ns, a.end_ns, a.kind) for a in found if a.signal == signal]
        panels.append(
            Panel(
                title=f"{SIGNAL_LABEL[signal]} ({len(shades)} anomalies)" if shades else SIGNAL_LABEL[signal],
                unit=unit,
                lines=[Line(svc, _times(s), [None if v is None else v * factor for v in s.values])],
                shades=shades,
                thresholds=[Threshold(label, ms) for label, ms in thresholds] if signal == "p95" else [],
            )
        )
    png = render_panels(f"{svc}: RED of entry spans, {tr.describe()}", panels)
    lines = [
        f"render_chart: RED panel of {svc} (entry spans) over {tr.describe()}, {step_s}s buckets: "
        "request rate, error rate, p95 (3 stacked axes); anomalies shaded red, SLO thresholds dashed",
        *(_summary(series[sig]) for sig in ("rate", "error_rate", "p95")),
        "thresholds: " + ", ".join(label for label, _ in thresholds),
        *_anomaly_lines(found),
    ]
    res = ChartResult(
        kind="red",
        service=svc,
        range=tr.describe(),
        step_s=step_s,
        width_px=900,
        height_px=600,
        png_bytes=len(png),
        anomalies=len(found),
        thresholds=[label for label, _ in thresholds],
    )
    return res, "\n".join(lines), png


def _series(ctx: ToolContext, metric: str, svc: str | None, tr: TimeRange) -> tuple[ChartResult, str, bytes]:
    step_s = choose_step(tr)
    notes: list[str] = []
    series = metric_inputs(ctx, metric, svc, tr, step_s, notes)
    if not series:
        raise ToolInputError(
            f"no points of {metric}" + (f" for {svc}" if svc else "") + f" in {tr.describe()}: widen start"
        )
    found = rank([detect(s) for s in series])
    # The busiest series first: with many services, the top MAX_LINES by peak value are drawn.
    series.sort(key=lambda s: -max((v for v in s.values if v is not None), default=0.0))
    drawn = series[:MAX_LINES]
    if len(series) > MAX_LINES:
        notes.append(f"{len(series) - MAX_LINES} more series not drawn (the {MAX_LINES} highest are): pass service=")
    unit = drawn[0].unit
    base_unit = unit.split(" ")[0]
    thresholds: list[tuple[str, float]] = []
    if base_unit in TIME_UNITS_MS:
        thresholds = [(label, ms / TIME_UNITS_MS[base_unit]) for label, ms in latency_thresholds(ctx.settings, svc)]
        top = max((v for s in drawn for v in s.values if v is not None), default=0.0)
        # A threshold far above every point would squash the lines flat: draw those within reach only.
        thresholds = [(label, v) for label, v in thresholds if v <= 3 * top]
    names = {s.service for s in drawn}
    # Every service's anomalies shaded at once hide the lines: the top ones by score are, and the text says so.
    shaded = [a for a in found if a.service in names][:MAX_SHADES]
    panel = Panel(
        title=f"{metric} [{unit}]",
        unit=unit,
        lines=[Line(s.service or "all", _times(s), list(s.values)) for s in drawn],
        shades=[Shade(a.start_ns, a.end_ns, a.kind) for a in shaded],
        thresholds=[Threshold(label, v) for label, v in thresholds],
    )
    png = render_panels(f"{metric}" + (f" of {svc}" if svc else "") + f", {tr.describe()}", [panel])
    lines = [
        f"render_chart: {metric} ({unit}) per {step_s}s over {tr.describe()}, one line per service "
        f"({len(drawn)} drawn); the top {MAX_SHADES} anomalies by score shaded red"
        + (", SLO thresholds dashed" if thresholds else ""),
        *(_summary(s, label=s.service or "all") for s in drawn),
        *_anomaly_lines([a for a in found if a.service in names], limit=MAX_SHADES),
        *notes,
    ]
    res = ChartResult(
        kind="series",
        service=svc,
        metric=metric,
        range=tr.describe(),
        step_s=step_s,
        width_px=900,
        height_px=600,
        png_bytes=len(png),
        anomalies=len(panel.shades),
        thresholds=[label for label, _ in thresholds],
        notes=notes,
    )
    return res, "\n".join(lines), png


def _histogram(ctx: ToolContext, svc: str, tr: TimeRange) -> tuple[ChartResult, str, bytes]:
    d = ctx.dialect
    w = Where(d).time("Timestamp", tr.start_ns, tr.end_ns).add(ENTRY).add('"ServiceName" = ?', svc)
    # Log-spaced bins (4 per doubling) counted in SQL; exact quantiles in the same scan.
    _, rows = ctx.db.query(
        f"SELECT CAST(floor(log2(greatest({col('Duration')}, 1)) * {BINS_PER_OCTAVE}) AS INTEGER) AS k, count(*) "
        f"FROM otel_traces WHERE {w.sql()} GROUP BY 1 ORDER BY 1",
        w.params,
    )
    if not rows:
        raise ToolInputError(f"no entry spans of {svc} in {tr.describe()}: widen start (e.g. start='6h')")
    _, qrows = ctx.db.query(
        f"SELECT count(*), {d.quantiles(col('Duration'), (0.5, 0.95, 0.99))} FROM otel_traces WHERE {w.sql()}",
        w.params,
    )
    total, qs = int(qrows[0][0]), [float(q) / 1e6 for q in qrows[0][1]]
    lo, hi = int(rows[0][0]), int(rows[-1][0])
    by = {int(k): int(n) for k, n in rows}
    edges = [2 ** (k / BINS_PER_OCTAVE) / 1e6 for k in range(lo, hi + 2)]
    counts = [by.get(k, 0) for k in range(lo, hi + 1)]
    markers = [Threshold(f"p{q} {format_duration(v * 1e6)}", v) for q, v in zip((50, 95, 99), qs, strict=True)]
    thresholds = latency_thresholds(ctx.settings, svc)
    over = {label: sum(n for k, n in by.items() if 2 ** (k / BINS_PER_OCTAVE) / 1e6 >= ms) for label, ms in thresholds}
    png = render_histogram(
        f"{svc}: entry-span latency ({total} requests)\n{tr.describe()}",
        edges,
        counts,
        "latency (ms, log scale)",
        markers,
        [Threshold(label, ms) for label, ms in thresholds],
    )
    lines = [
        f"render_chart: latency histogram of {svc} entry spans over {tr.describe()}: {total} requests in "
        f"{len(counts)} log-spaced bins (4 per doubling); quantiles dotted, SLO thresholds dashed",
        "p50 {} | p95 {} | p99 {} | max bin {}".format(
            *(format_duration(v * 1e6) for v in qs), format_duration(edges[-1] * 1e6)
        ),
        "at or above each threshold (by bin, approximate): "
        + ", ".join(f"{label}: {n} ({n / total:.1%})" for label, n in over.items()),
    ]
    res = ChartResult(
        kind="latency_histogram",
        service=svc,
        range=tr.describe(),
        width_px=900,
        height_px=600,
        png_bytes=len(png),
        thresholds=[label for label, _ in thresholds],
    )
    return res, "\n".join(lines), png


# -- text -----------------------------------------------------------------------------------------------


def _times(s: Series) -> list[int]:
    # Points sit at the middle of their bucket, so shaded anomaly spans line up with the points inside.
    return [s.start_ns + i * s.step_ns + s.step_ns // 2 for i in range(len(s.values))]


def _summary(s: Series, label: str | None = None) -> str:
    vals = [v for v in s.values if v is not None]
    name = label or SIGNAL_LABEL.get(s.signal, s.signal)
    if not vals:
        return f"{name}: no data"
    ordered = sorted(vals)
    return (
        f"{name}: median {format_value(ordered[len(ordered) // 2], s.unit)}, min {format_value(ordered[0], s.unit)}, "
        f"max {format_value(ordered[-1], s.unit)}, last {format_value(vals[-1], s.unit)}"
    )


def _anomaly_lines(found: Sequence[Anomaly], limit: int = 5) -> list[str]:
    if not found:
        return ["anomalies: none"]
    out = [f"anomalies ({len(found)}, top {min(limit, len(found))} by score):"]
    for a in found[:limit]:
        span = "ongoing" if a.ongoing else format_duration(a.end_ns - a.start_ns)
        out.append(
            f"  {a.service or 'all'} {SIGNAL_LABEL.get(a.signal, a.signal)} {a.kind} from "
            f"{_hhmm(a.start_ns)} ({span}): {format_value(a.value, a.unit)} vs {format_value(a.baseline, a.unit)}"
            + ("" if a.unit in ("ms", "ratio", "req/s") else f" {a.unit}")
        )
    return out


def _hhmm(ns: int) -> str:
    return format_ns(ns)[:19] + "Z"
