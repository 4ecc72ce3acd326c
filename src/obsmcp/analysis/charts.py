"""Charts as PNG bytes: time series panels (with anomalies shaded and thresholds drawn) and latency histograms.

Pure: typed values in, PNG bytes out. matplotlib's object API with the Agg canvas, never pyplot, so no
display is needed and concurrent tool calls share no global figure state. matplotlib is imported on first
use: it costs about a second, which a server that never draws a chart should not pay at startup.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WIDTH_PX = 900
HEIGHT_PX = 600
DPI = 100
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
SHADE = "#d62728"
THRESHOLD = "#d62728"
MARKER = "#555555"


@dataclass
class Line:
    label: str
    times_ns: Sequence[int]
    values: Sequence[float | None]  # None: a gap in the line


@dataclass
class Shade:
    """A time interval drawn as a band: an anomaly."""

    start_ns: int
    end_ns: int
    label: str = ""


@dataclass
class Threshold:
    """A horizontal (series) or vertical (histogram) line at a value: an SLO threshold or a quantile."""

    label: str
    value: float


@dataclass
class Panel:
    title: str
    unit: str
    lines: list[Line] = field(default_factory=list)
    shades: list[Shade] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    log_y: bool = False


def render_panels(title: str, panels: Sequence[Panel], width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> bytes:
    """Stacked time series panels sharing one UTC time axis, as PNG bytes."""
    fig, canvas = _figure(width_px, height_px)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    import matplotlib.dates as mdates

    for ax, panel in zip(axes, panels, strict=True):
        for i, line in enumerate(panel.lines):
            xs = [_dt(t) for t in line.times_ns]
            ys = [float("nan") if v is None else v for v in line.values]
            ax.plot(xs, ys, color=COLORS[i % len(COLORS)], linewidth=1.4, label=line.label)
        for j, shade in enumerate(panel.shades):
            ax.axvspan(
                _dt(shade.start_ns), _dt(shade.end_ns), color=SHADE, alpha=0.15, label="anomaly" if j == 0 else None
            )
        for th in panel.thresholds:
            ax.axhline(th.value, color=THRESHOLD, linestyle="--", linewidth=1.0, label=th.label)
        if panel.log_y:
            ax.set_yscale("log")
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.set_ylabel(panel.unit, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if len(panel.lines) > 1 or panel.shades or panel.thresholds:
            ax.legend(fontsize=7, loc="upper left", framealpha=0.8, ncol=min(4, len(panel.lines) + 2))
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return _png(fig, canvas)


def render_histogram(
    title: str,
    edges: Sequence[float],
    counts: Sequence[int],
    unit: str,
    markers: Sequence[Threshold] = (),
    thresholds: Sequence[Threshold] = (),
    width_px: int = WIDTH_PX,
    height_px: int = HEIGHT_PX,
) -> bytes:
    """A histogram over log-spaced bins (len(edges) == len(counts) + 1) with quantile markers and thresholds."""
    fig, canvas = _figure(width_px, height_px)
    ax = fig.subplots()
    widths = [hi - lo for lo, hi in itertools.pairwise(edges)]
    ax.bar(list(edges[:-1]), list(counts), width=widths, align="edge", color=COLORS[0], edgecolor="white")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    # Plain numbers (250, 1000, 4000) read faster than 10^2-style labels on a latency axis.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    for m in markers:
        ax.axvline(m.value, color=MARKER, linestyle=":", linewidth=1.2, label=m.label)
    for th in thresholds:
        ax.axvline(th.value, color=THRESHOLD, linestyle="--", linewidth=1.2, label=th.label)
    ax.set_xlabel(unit, fontsize=9)
    ax.set_ylabel("requests", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    if markers or thresholds:
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=11)
    return _png(fig, canvas)


def _figure(width_px: int, height_px: int) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    return fig, FigureCanvasAgg(fig)


def _png(fig: Any, canvas: Any) -> bytes:
    """PNG of the figure, quantized to a 64-colour palette: a chart has few colours, and antialiased RGBA
    would make it 3-4 times larger (agents pay for image bytes too)."""
    from PIL import Image

    canvas.draw()
    width, height = canvas.get_width_height()
    rgb = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba()).convert("RGB")
    buf = io.BytesIO()
    rgb.quantize(colors=64).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)
