"""slo_report: SLO compliance, error budget, burn rates and burn-rate alerts, per service.

Counts of good and bad events come from the store; the arithmetic is `obsmcp.analysis.slo`.

Every window (the report range, each SLO window, the burn-rate windows 5m..3d) ends at `end`, so the windows
are nested: one scan of the longest window puts each span into the innermost window holding it (a "ring") and
counts good/bad per (service, ring) with FILTER clauses; each window is then a prefix sum of rings. That is one
pass over the data with a handful of aggregates, rather than one aggregate per window and SLI.

An SLO with `backend = "<prometheus backend>"` is counted by that Prometheus from its standard HTTP server
histogram instead (`PrometheusSource.slo_events`, one instant query set per window, all windows at once). A
service named in the call that the store has no spans for, and no SLO in the config, gets the default
availability and latency SLOs from the first Prometheus backend that knows it: its HTTP server histogram
measures what entry spans measure (did the request fail on the server, how long did it take), so the
defaults mean the same thing there; without it the report would only say "no data" for a service whose
requests Prometheus sees. The default error_rate SLO counts every span, which a histogram cannot: it stays
"no data" with a note.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from obsmcp.analysis.slo import (
    ALERT_RULES,
    BURN_WINDOWS,
    AlertStatus,
    Compliance,
    EventCounts,
    SLOEvaluation,
    evaluate,
)
from obsmcp.config import Settings, SLOConfig, default_slos
from obsmcp.http import BackendError
from obsmcp.resolve import resolve_service
from obsmcp.result import ListResult, estimate_tokens
from obsmcp.sources.base import SourceError
from obsmcp.sources.prometheus import PrometheusSource
from obsmcp.sources.registry import match_service
from obsmcp.store.where import Where, col
from obsmcp.timerange import NS_PER_S, format_duration, format_ns, resolve_range
from obsmcp.tools.context import ToolContext

TS = col("Timestamp")
SERVER = "\"SpanKind\" = 'Server'"
# Span status only: OTel HTTP instrumentation marks server spans Error for 5xx and client spans for 4xx/5xx.
# Reading http.response.status_code instead would read SpanAttributes for every span (measured 1-10 s at 10M).
ERROR = "\"StatusCode\" = 'Error'"
_ALERT_RANK = {"page": 0, "ticket": 1, "ok": 2, "no data": 3}
_COMPLIANCE_RANK = {"violated": 0, "at risk": 1, "met": 2, "no data": 3}
_UNIT_PER_MS = {"s": 1e-3, "ms": 1.0, "us": 1e3, "µs": 1e3, "ns": 1e6}

TOOL_DESCRIPTION = (
    "SLO status per service, worst first: SLI over the range and the SLO window, compliance (met / at risk / "
    "violated), error budget spent and left, burn rates 5m..3d ending at `end`, SRE Workbook burn-rate alerts "
    "and time until the budget is gone. SLOs: the config's [[slos]], else availability 99.9%, p95 < 2s, "
    "p99 < 5s, error rate < 0.1%, 30d. availability and latency count requests; error_rate counts all the "
    "service's spans, so failing downstream calls count too."
)


# -- which SLOs apply --------------------------------------------------------------------------------------


def slos_for(settings: Settings, service: str) -> list[SLOConfig]:
    """The SLOs of a service: those in the config, or the defaults when the config defines none for it."""
    own = [s for s in settings.slos if s.service == service]
    return own or default_slos(service)


def latency_thresholds(settings: Settings, service: str) -> list[tuple[str, float]]:
    """(label, threshold in ms) of the service's latency SLOs, for drawing on latency charts."""
    return [
        (f"{s.name}: {s.objective:g}% < {format_duration(s.threshold_ms * 1e6)}", s.threshold_ms)
        for s in slos_for(settings, service)
        if s.sli == "latency" and s.threshold_ms is not None
    ]


# -- result models -----------------------------------------------------------------------------------------


class SLOStatus(BaseModel):
    name: str
    service: str
    sli: str = Field(description="availability | latency | error_rate")
    objective_pct: float
    window: str
    threshold_ms: float | None = None
    operation: str | None = None
    source: str = Field(description="spans, or the metric(s) counted")
    defined_in: Literal["config", "default"]
    sli_range_pct: float | None = Field(description="SLI over the report range; null = no events")
    events_range: int
    bad_range: int
    sli_window_pct: float | None = Field(description="SLI over the SLO window as far as data covers it")
    events_window: int
    bad_window: int
    window_coverage_pct: float = Field(description="share of the SLO window that has data")
    data_since: str | None = Field(None, description="first event inside the SLO window")
    compliance: Compliance
    budget_consumed_pct: float | None = Field(description="of the window's error budget; may exceed 100")
    budget_remaining_pct: float | None
    burn_rates: dict[str, float | None] = Field(description="5m..3d, ending at `end`; null = no data")
    alert: AlertStatus = Field(description="SRE Workbook multiwindow multi-burn-rate status")
    firing: list[str] = Field(default_factory=list)
    time_to_exhaustion_s: float | None = Field(None, description="at the 1h burn rate; null = not burning")
    notes: list[str] = Field(default_factory=list)


class ServiceSLOs(BaseModel):
    service: str
    alert: AlertStatus
    compliance: Compliance
    slos: list[SLOStatus]


class SLOReport(ListResult):
    range: str
    end: str
    alert_rules: list[str] = Field(default_factory=lambda: [r.describe() for r in ALERT_RULES])
    services: list[ServiceSLOs] = Field(default_factory=list)


# -- counting ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rings:
    """Counts per ring for one service and one SLO: rings[i] holds events between edges[i-1] and edges[i]."""

    totals: list[float]
    bads: list[float]
    first_ns: int | None


class _Plan:
    """The nested windows of one report: their edges (seconds before `end`) and the ring CASE expression."""

    def __init__(self, ctx: ToolContext, end_ns: int, windows_s: Sequence[float]) -> None:
        self.end_ns = end_ns
        self.edges = sorted({float(w) for w in windows_s})
        self.lo_ns = end_ns - int(self.edges[-1] * NS_PER_S)
        p = ctx.dialect.ts_param()
        self._p = p

    def ring_sql(self, ts: str) -> tuple[str, list[Any]]:
        whens = [f"WHEN {ts} >= {self._p} THEN {i}" for i in range(len(self.edges) - 1)]
        params = [self.end_ns - int(e * NS_PER_S) for e in self.edges[:-1]]
        return f"CASE {' '.join(whens)} ELSE {len(self.edges) - 1} END", params

    def empty(self) -> _Rings:
        return _Rings([0.0] * len(self.edges), [0.0] * len(self.edges), None)

    def window(self, rings: _Rings, window_s: float) -> EventCounts:
        """Counts over the window of `window_s` seconds ending at `end`, with the seconds of it holding data."""
        n = self.edges.index(float(window_s)) + 1
        total, bad = sum(rings.totals[:n]), sum(rings.bads[:n])
        covered = 0.0
        if rings.first_ns is not None and total > 0:
            since = max(self.end_ns - int(window_s * NS_PER_S), rings.first_ns)
            covered = (self.end_ns - since) / NS_PER_S
        return EventCounts(total=total, bad=bad, covered_s=covered)


@dataclass(frozen=True)
class _Count:
    """One count(*) FILTER column: a condition over spans, over entry spans only when `entry`."""

    cond: str
    params: tuple[Any, ...]
    entry: bool


TRAFFIC = _Count("TRUE", (), False)


def _span_counts(slo: SLOConfig) -> tuple[_Count, _Count]:
    """(total, bad) counts of a span-based SLO."""
    op: str = ""
    op_params: tuple[Any, ...] = ()
    if slo.operation:
        op, op_params = ' AND "SpanName" = ?', (slo.operation,)
    if slo.sli == "error_rate":
        return _Count(f"TRUE{op}", op_params, False), _Count(f"{ERROR}{op}", op_params, False)
    total = _Count(f"TRUE{op}", op_params, True)
    if slo.sli == "availability":
        return total, _Count(f"{ERROR}{op}", op_params, True)
    assert slo.threshold_ms is not None
    # Duration is integer nanoseconds: a request exactly at the threshold is good.
    return total, _Count(f'"Duration" > {int(slo.threshold_ms * 1e6)}{op}', op_params, True)


def _count_spans(
    ctx: ToolContext, plan: _Plan, service: str | None, wanted: Sequence[_Count]
) -> tuple[dict[str, dict[_Count, list[float]]], dict[str, int]]:
    """Per service, counts per ring of each wanted condition and of all spans (TRAFFIC), and the first span's
    time, in one statement.

    Entry spans are server spans or roots. Testing `ParentSpanId = ''` on every span costs more than the rest
    of the scan together (span ids are long, incompressible strings: measured 0.6 s at 10M spans), so the
    statement has two parts: every span, with entry = server span; and the roots that are not server spans,
    which DuckDB finds cheaply by filtering on the kind first. Entry counts add up across the two parts.
    """
    counts: dict[_Count, int] = {TRAFFIC: 0}
    for c in wanted:
        counts.setdefault(c, len(counts))
    ring, ring_params = plan.ring_sql(TS)
    first = ctx.dialect.epoch_ns("min(" + TS + ")")
    parts: list[str] = []
    params: list[Any] = []
    for entry, only in ((SERVER, None), ("TRUE", f"NOT {SERVER} AND \"ParentSpanId\" = ''")):
        select: list[str] = []
        select_params: list[Any] = []
        for c in counts:
            if not c.entry and only:
                select.append("0")  # all-span counts come from the first part only
                continue
            cond = " AND ".join(x for x in (entry if c.entry else "TRUE", c.cond) if x != "TRUE")
            select.append(f"count(*) FILTER (WHERE {cond})" if cond else "count(*)")
            select_params.extend(c.params)
        where = Where(ctx.dialect).time("Timestamp", plan.lo_ns, plan.end_ns)
        if service:
            where.add('"ServiceName" = ?', service)
        if only:
            where.add(only)
        parts.append(
            f'SELECT "ServiceName", {ring} AS ring, {first}, {", ".join(select)} '
            f"FROM otel_traces WHERE {where.sql()} GROUP BY 1, 2"
        )
        params += [*ring_params, *select_params, *where.params]
    _, rows = ctx.db.query(" UNION ALL ".join(parts), params)
    n = len(plan.edges)
    raw: dict[str, tuple[list[list[float]], list[int]]] = {}
    for svc, r, first_ns, *values in rows:
        per, firsts = raw.setdefault(str(svc), ([[0.0] * n for _ in counts], []))
        for i, v in enumerate(values):
            per[i][int(r)] += float(v)
        firsts.append(int(first_ns))
    per_service = {svc: dict(zip(counts, per, strict=True)) for svc, (per, _) in raw.items()}
    first_seen = {svc: min(firsts) for svc, (_, firsts) in raw.items() if firsts}
    return per_service, first_seen


def _count_metric(ctx: ToolContext, plan: _Plan, slo: SLOConfig) -> tuple[_Rings, list[str]]:
    """Rings of a metric-based SLO: increases of cumulative (or sums of delta) histogram or counter points."""
    d = ctx.dialect
    notes: list[str] = []
    lo, end = plan.lo_ns, plan.end_ns
    p = d.ts_param()
    if slo.metric is not None:
        table = "otel_metrics_histogram"
        names = [slo.metric]
        _, meta = ctx.db.query(
            f"SELECT {d.any_value(col('MetricUnit'))}, {d.any_value(col('ExplicitBounds'))} FROM {table} "
            'WHERE "MetricName" = ? AND "ServiceName" = ?',
            [slo.metric, slo.service],
        )
        unit, bounds = (meta[0] if meta else (None, None)) or (None, None)
        if unit is None and bounds is None:
            return plan.empty(), [f"no histogram {slo.metric!r} for {slo.service}: list_metrics shows what exists"]
        if slo.sli == "latency":
            assert slo.threshold_ms is not None
            scale = _UNIT_PER_MS.get(str(unit or "s"), 1e-3)
            threshold = slo.threshold_ms * scale
            below = [b for b in (bounds or []) if b <= threshold * (1 + 1e-9)]
            if not below or abs(below[-1] - threshold) > threshold * 1e-9:
                at = f"{below[-1] / scale:g} ms" if below else "no bound"
                notes.append(
                    f"{slo.threshold_ms:g} ms is not a bucket bound of {slo.metric}: good = requests at or below "
                    f"{at} (the next lower bound), so the SLI is a lower bound"
                )
            # Buckets whose upper bound is at or below the threshold hold only good requests.
            good = d.buckets_at_or_below(col("BucketCounts"), col("ExplicitBounds"))
            sources = [(slo.metric, "total", '"Count"', []), (slo.metric, "good", good, [threshold * (1 + 1e-9)])]
        else:
            status = d.attr(col("Attributes"), "'http.response.status_code'")
            bad = f'CASE WHEN {d.try_int(status)} >= 500 THEN "Count" ELSE 0 END'
            sources = [(slo.metric, "total", '"Count"', []), (slo.metric, "bad", bad, [])]
    else:
        assert slo.good_metric is not None and slo.total_metric is not None
        table = "otel_metrics_sum"
        names = [slo.total_metric, slo.good_metric]
        sources = [(slo.total_metric, "total", '"Value"', []), (slo.good_metric, "good", '"Value"', [])]
    ring, ring_params = plan.ring_sql("t")
    unions: list[str] = []
    params: list[Any] = []
    for name, kind, value, value_params in sources:
        unions.append(
            f'SELECT \'{kind}\' AS kind, "ResourceAttributes" AS ra, "Attributes" AS a, "TimeUnix" AS t, '
            f'"StartTimeUnix" AS st, "AggregationTemporality" AS temporality, CAST({value} AS DOUBLE) AS v '
            f'FROM {table} WHERE "MetricName" = ? AND "ServiceName" = ? AND "TimeUnix" >= {p} AND "TimeUnix" < {p}'
        )
        params += [*value_params, name, slo.service, lo, end]
    # Cumulative points: the increase since the previous point of the same series (a drop or a new start
    # time is a reset: the new value is the increase). A series' first point counts in full when the series
    # started inside the scan, otherwise it only anchors the next one. Delta points (temporality 1) are
    # increases already.
    step = (
        f"CASE WHEN temporality = 1 THEN v WHEN prev IS NULL THEN (CASE WHEN st >= {p} THEN v ELSE 0 END) "
        "WHEN v < prev OR st <> prev_st THEN v ELSE v - prev END"
    )
    sql = (
        f"WITH pts AS ({' UNION ALL '.join(unions)}), "
        f"lagged AS (SELECT *, {d.lag('v')} OVER w AS prev, {d.lag('st')} OVER w AS prev_st "
        "FROM pts WINDOW w AS "
        "(PARTITION BY kind, ra, a ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)), "
        f"steps AS (SELECT kind, t, {step} AS inc FROM lagged) "
        f"SELECT {ring} AS ring, coalesce(sum(inc) FILTER (WHERE kind = 'total'), 0), "
        "coalesce(sum(inc) FILTER (WHERE kind = 'bad'), 0), coalesce(sum(inc) FILTER (WHERE kind = 'good'), 0), "
        f"{d.epoch_ns('min(t)')} FROM steps GROUP BY 1"
    )
    _, rows = ctx.db.query(sql, [*params, lo, *ring_params])
    n = len(plan.edges)
    totals, bads = [0.0] * n, [0.0] * n
    firsts: list[int] = []
    for r, total, bad_sum, good_sum, first in rows:
        totals[int(r)] = float(total)
        # Histograms count bad requests directly (availability) or good ones (latency); counters count good.
        bads[int(r)] = float(bad_sum) if kinds_bad(sources) else max(0.0, float(total) - float(good_sum))
        firsts.append(int(first))
    if not rows:
        notes.append(f"no points of {', '.join(names)} for {slo.service} in the SLO window")
    return _Rings(totals, bads, min(firsts) if firsts else None), notes


def kinds_bad(sources: Sequence[tuple[str, str, str, list[Any]]]) -> bool:
    return any(kind == "bad" for _, kind, _, _ in sources)


# -- the report --------------------------------------------------------------------------------------------


def compute_slo_report(
    ctx: ToolContext, service: str | None = None, start: str | None = None, end: str | None = None
) -> SLOReport:
    """Every SLO of the service (None: of every service with traffic in the range), worst first, unbudgeted.

    For the `investigate` tool: each SLOStatus carries its burn rates, alert status and compliance.
    """
    tr = resolve_range(start, end)
    svc, remote = _resolve(ctx, service, tr.start_ns, tr.end_ns)
    range_s = tr.duration_ns / NS_PER_S
    settings = ctx.settings
    # One scan counts every condition any SLO may need (the defaults' and the configured ones) for every
    # service, so the services with traffic come out of the same scan.
    every = [*default_slos("*"), *settings.slos]
    windows = [range_s, *(w for _, w in BURN_WINDOWS), *(slo.window_s for slo in every)]
    plan = _Plan(ctx, tr.end_ns, windows)
    wanted = [c for slo in every if slo.source == "spans" and slo.backend is None for c in _span_counts(slo)]
    per_service, first_seen = _count_spans(ctx, plan, svc, wanted)
    n_range = plan.edges.index(float(range_s)) + 1
    with_spans = {name for name, per in per_service.items() if sum(per[TRAFFIC][:n_range]) > 0}
    remote_slos = {s.service for s in settings.slos if s.source == "metric" or s.backend is not None}
    services = [svc] if svc else sorted(with_spans | remote_slos)

    out: list[ServiceSLOs] = []
    for name in services:
        statuses: list[SLOStatus] = []
        slos = slos_for(settings, name)
        defined = [s for s in settings.slos if s.service == name]
        if not defined and remote is None and name not in per_service and svc:
            remote = _prometheus_knowing(ctx, name, tr.start_ns, tr.end_ns)
        if not defined and remote is not None:
            # Defaults from Prometheus (see the module docstring): availability and latency only.
            slos = [s.model_copy(update={"backend": remote}) if s.sli != "error_rate" else s for s in slos]
        for slo in slos:
            notes: list[str] = []
            if slo.backend is not None:
                statuses.append(_prometheus_status(ctx, plan, slo, range_s, slo in settings.slos))
                continue
            if slo.source == "spans" and name in per_service:
                total, bad = _span_counts(slo)
                per = per_service[name]
                rings = _Rings(per[total], per[bad], first_seen.get(name))
            elif slo.source == "spans":
                rings = plan.empty()
                if remote is not None:
                    notes.append(
                        f"error_rate counts every span of {name}; the store has none and {remote}'s HTTP histogram "
                        "counts requests only: send traces to obsmcp, or configure an availability SLO"
                    )
            else:
                rings, notes = _count_metric(ctx, plan, slo)
            statuses.append(
                _status(plan, slo, rings, range_s, notes, slo in settings.slos, settings.slo_alert_min_bad_events)
            )
        if not svc and name not in with_spans and not any(s.events_range for s in statuses):
            continue  # a configured metric SLO without data in range: not "a service with traffic"
        statuses.sort(key=_severity)
        out.append(ServiceSLOs(service=name, alert=statuses[0].alert, compliance=statuses[0].compliance, slos=statuses))
    out.sort(key=lambda s: (_severity(s.slos[0]), s.service))
    notes = []
    if svc and all(s.events_range == 0 for g in out for s in g.slos):
        notes.append(f"{svc} has no events in {tr.describe()}: widen start, or check the service name")
    return SLOReport(
        range=tr.describe(),
        end=format_ns(tr.end_ns),
        total=len(out),
        returned=len(out),
        notes=notes,
        services=out,
    )


# -- SLOs counted by Prometheus ------------------------------------------------------------------------------


def _prometheus_sources(ctx: ToolContext) -> list[PrometheusSource]:
    """The Prometheus backends that answer metrics by default, in configuration order."""
    return [s for s in ctx.sources.for_signal("metrics") if isinstance(s, PrometheusSource)]


def _resolve(ctx: ToolContext, service: str | None, start_ns: int, end_ns: int) -> tuple[str | None, str | None]:
    """(service, Prometheus backend): the store's spelling of a named service; when the store does not know
    it, the spelling of the first Prometheus backend that does, and that backend's name."""
    try:
        return ctx.resolve(service), None
    except LookupError as e:
        assert service is not None  # None resolves to None
        configured = sorted({s.service for s in ctx.settings.slos})
        try:
            # A service with SLOs in the config is known even when the store has nothing of it.
            return resolve_service(service, configured), None
        except LookupError:
            pass  # not one of them either: ask the Prometheus backends
        for source in _prometheus_sources(ctx):
            try:
                name = ctx.sources.resolve(source, service, start_ns, end_ns)
            except (LookupError, BackendError, SourceError):
                continue  # not there (or that backend is down): the store's own error says what exists
            if name is not None:
                return name, source.name
        raise e from None


def _prometheus_knowing(ctx: ToolContext, service: str, start_ns: int, end_ns: int) -> str | None:
    """The first Prometheus backend with `service` among its services (None: none, or none answered)."""
    for source in _prometheus_sources(ctx):
        try:
            known = ctx.sources.call(source.services(start_ns, end_ns), ctx.sources.timeout_for(source))
        except (BackendError, SourceError):
            continue  # the store's "no data" stands; backend_status says why that backend is down
        if match_service(service, known) is not None:
            return source.name
    return None


async def _events_per_window(
    source: PrometheusSource, service: str, slo: SLOConfig, end_ns: int, windows_s: Sequence[float]
) -> list[tuple[float, float]]:
    """(good, total) per window ending at `end_ns`, one slo_events call each, all at once."""
    return list(
        await asyncio.gather(
            *(
                source.slo_events(service, slo.sli, end_ns - int(w * NS_PER_S), end_ns, slo.threshold_ms)
                for w in windows_s
            )
        )
    )


def _covered_s(counts: dict[float, EventCounts], window_s: float, notes: list[str]) -> float:
    """Seconds of the SLO window that hold data, which Prometheus does not say (it counts requests, not since
    when), estimated from the nested windows, all ending at `end`.

    A burn window holding fewer requests than the SLO window is wholly covered (data goes back further), so
    the longest such window gives a whole-window request rate, and the data span is the SLO window's requests
    at that rate: the budget spent is then the bad requests against those a whole window at that rate allows.
    When every burn window holds them all, the data lies within the shortest of those windows: its length is
    taken (an upper bound, so the budget spent is not understated).
    """
    win = counts[window_s]
    if win.total <= 0:
        return 0.0
    burn_windows = [float(w) for _, w in BURN_WINDOWS if w <= window_s]
    full = [w for w in burn_windows if 0 < counts[w].total < win.total * (1 - 1e-9)]
    if full:
        w = full[-1]
        covered = min(window_s, win.total / (counts[w].total / w))
        if covered < window_s:
            notes.append(
                f"data span ~{format_duration(covered * 1e9)} (Prometheus gives no start: estimated at the "
                f"{format_duration(w * 1e9)} request rate)"
            )
        return covered
    holding = [w for w in burn_windows if counts[w].total >= win.total * (1 - 1e-9)]
    if holding and holding[0] < window_s:
        notes.append(
            f"data span taken as {format_duration(holding[0] * 1e9)}: all of the window's requests are in it "
            "(an upper bound: the budget spent may be overstated)"
        )
        return holding[0]
    return window_s


def _prometheus_status(ctx: ToolContext, plan: _Plan, slo: SLOConfig, range_s: float, defined: bool) -> SLOStatus:
    """One SLO counted by its Prometheus backend; a backend failure is this SLO's "no data" with the reason."""
    assert slo.backend is not None
    label = f"backend {slo.backend} (Prometheus HTTP server histogram)"
    windows = sorted({float(range_s), float(slo.window_s), *(float(w) for _, w in BURN_WINDOWS)})
    counts = {w: EventCounts() for w in windows}
    notes: list[str] = []
    try:
        source = ctx.sources.get(slo.backend)
        if not isinstance(source, PrometheusSource):
            raise SourceError(f"backend {slo.backend} is a {source.kind} backend: name a Prometheus backend")
        known = ctx.sources.call(source.services(plan.lo_ns, plan.end_ns), ctx.sources.timeout_for(source))
        # The SLO names the service as obsmcp does ("checkout"); Prometheus may say "checkout-service".
        service = match_service(slo.service, known) or slo.service
        answers = ctx.sources.call(
            _events_per_window(source, service, slo, plan.end_ns, windows), ctx.sources.timeout_for(source)
        )
    except (BackendError, SourceError, LookupError) as e:
        notes.append(f"{label} failed: {e}")
    else:
        for w, (good, total) in zip(windows, answers, strict=True):
            # Interpolated latency counts are fractional; a total of 0 is "no data", never an SLI of 100%.
            counts[w] = EventCounts(total=total, bad=max(0.0, total - good))
        # Freshness: slo_events queries at `end`; the client may answer a repeated query from its cache.
        cache = source.config.query_cache_ttl_s
        notes.append(f"{slo.backend}: live" + (f", answers cached up to {cache:g} s" if cache else ""))
        empty = [lbl for lbl, w in BURN_WINDOWS if counts[float(w)].total <= 0]
        if empty:
            notes.append(f"no data from {slo.backend} in the {', '.join(empty)} burn windows (not 0: unknown)")
    win = counts[float(slo.window_s)]
    covered = _covered_s(counts, float(slo.window_s), notes)
    counts[float(slo.window_s)] = EventCounts(total=win.total, bad=win.bad, covered_s=covered)
    since = int(plan.end_ns - covered * NS_PER_S) if covered > 0 else None
    burns = {lbl: counts[float(w)] for lbl, w in BURN_WINDOWS}
    return _evaluated(
        slo,
        counts[float(range_s)],
        counts[float(slo.window_s)],
        burns,
        since,
        notes,
        defined,
        ctx.settings.slo_alert_min_bad_events,
        label,
    )


def _severity(s: SLOStatus) -> tuple[int, int, float]:
    burn = s.burn_rates.get("1h")
    return _ALERT_RANK[s.alert], _COMPLIANCE_RANK[s.compliance], -(burn or 0.0)


def _status(
    plan: _Plan, slo: SLOConfig, rings: _Rings, range_s: float, notes: list[str], defined: bool, min_bad: float
) -> SLOStatus:
    rng = plan.window(rings, range_s)
    win = plan.window(rings, slo.window_s)
    burns = {label: plan.window(rings, w) for label, w in BURN_WINDOWS}
    since = None
    if rings.first_ns is not None and win.total > 0:
        since = max(plan.end_ns - int(slo.window_s * NS_PER_S), rings.first_ns)
    source = "spans" if slo.source == "spans" else slo.metric or f"{slo.good_metric} / {slo.total_metric}"
    return _evaluated(slo, rng, win, burns, since, notes, defined, min_bad, source)


def _evaluated(
    slo: SLOConfig,
    rng: EventCounts,
    win: EventCounts,
    burns: dict[str, EventCounts],
    since_ns: int | None,
    notes: list[str],
    defined: bool,
    min_bad: float,
    source: str,
) -> SLOStatus:
    """The status of one SLO from its counts over the range, the SLO window and each burn window."""
    ev: SLOEvaluation = evaluate(slo.objective, slo.window_s, rng, win, burns, min_bad_events=min_bad)
    if ev.held:
        rules = ", ".join(f"{r.severity} {r.long_window}/{r.short_window}" for r in ev.held)
        notes.append(f"held back ({rules}): fewer than {min_bad:g} bad events in the long window")
    return SLOStatus(
        name=slo.name,
        service=slo.service,
        sli=slo.sli,
        objective_pct=slo.objective,
        window=slo.window,
        threshold_ms=slo.threshold_ms,
        operation=slo.operation,
        source=source,
        defined_in="config" if defined else "default",
        sli_range_pct=_pct(ev.range_sli),
        events_range=round(rng.total),
        bad_range=round(rng.bad),
        sli_window_pct=_pct(ev.window_sli),
        events_window=round(win.total),
        bad_window=round(win.bad),
        window_coverage_pct=round(ev.coverage * 100, 4),
        data_since=None if since_ns is None else format_ns(since_ns),
        compliance=ev.compliance,
        budget_consumed_pct=_pct(ev.budget_consumed),
        budget_remaining_pct=_pct(ev.budget_remaining),
        burn_rates={k: None if v is None else round(v, 4) for k, v in ev.burn_rates.items()},
        alert=ev.alert,
        firing=[r.describe() for r in ev.firing],
        time_to_exhaustion_s=None if ev.exhaustion_s is None else round(ev.exhaustion_s, 3),
        notes=notes,
    )


def _pct(share: float | None) -> float | None:
    return None if share is None else round(share * 100, 4)


def slo_report(
    ctx: ToolContext,
    service: str | None = None,
    start: str | None = None,
    end: str | None = None,
    max_tokens: int | None = None,
) -> tuple[SLOReport, str]:
    report = compute_slo_report(ctx, service, start, end)
    budget = ctx.budget(max_tokens)
    total_slos = sum(len(s.slos) for s in report.services)
    head = [
        f"slo_report: {len(report.services)} services, {total_slos} SLOs; range {report.range}; burn windows "
        f"end at {report.end}; worst first",
        "alerts (SRE Workbook): " + "; ".join(report.alert_rules) + ". burn = bad share / (1 - objective)",
    ]
    if not report.services:
        head.append("no service with traffic in range: widen start (e.g. start='24h') or send telemetry")
    # Degrade step by step: every SLO in full -> healthy SLOs folded into one line per service -> services
    # without a problem folded into one line -> fewer services. Each step is said in notes.
    blocks = [_render_service(s, full=True) for s in report.services]
    text = _join(head, blocks, report.notes)
    kept = list(report.services)
    if estimate_tokens(text) > budget:
        report.notes.append("SLOs that are met and not alerting are listed by name only, to fit the budget")
        blocks = [_render_service(s, full=False) for s in kept]
        text = _join(head, blocks, report.notes)
    if estimate_tokens(text) > budget:
        calm = [s for s in kept if s.alert in ("ok", "no data") and s.compliance in ("met", "no data")]
        if calm:
            kept = [s for s in kept if s not in calm]
            report.notes.append(
                f"{len(calm)} services met every SLO without alerts: {', '.join(s.service for s in calm)}"
            )
            blocks = [_render_service(s, full=False) for s in kept]
            text = _join(head, blocks, report.notes)
    if estimate_tokens(text) > budget:
        report.notes.append("one short line per SLO (budget, burn 5m/1h/6h): ask with service= for the details")
        blocks = [_render_service(s, full=False, compact=True) for s in kept]
        text = _join(head, blocks, report.notes)
    shown = len(kept)
    cut = ""
    while estimate_tokens(text) > budget and shown > 1:
        shown -= 1
        cut = f"{len(kept) - shown} more services with problems not shown to fit ~{budget} tokens: ask with service="
        text = _join(head, blocks[:shown], [*report.notes, cut])
    if cut:
        report.notes.append(cut)
        kept = kept[:shown]
    report.truncated = len(kept) < len(report.services)
    report.services = kept
    report.returned = len(kept)
    return report, text


def _join(head: list[str], blocks: list[str], notes: list[str]) -> str:
    return "\n".join([*head, *blocks, *notes])


def _render_service(s: ServiceSLOs, full: bool, compact: bool = False) -> str:
    lines = [f"{s.alert.upper()} {s.service} ({s.compliance})"]
    folded: list[str] = []
    for slo in s.slos:
        healthy = slo.alert in ("ok", "no data") and slo.compliance in ("met", "no data")
        if not full and healthy:
            folded.append(f"{slo.name} {_fmt_pct(slo.sli_window_pct)}")
            continue
        lines.append("  " + (_render_compact(slo) if compact else _render_slo(slo)))
    if folded:
        lines.append("  met: " + ", ".join(folded))
    return "\n".join(lines)


def _fmt_pct(v: float | None) -> str:
    return "no data" if v is None else f"{v:.3f}%".replace(".000%", "%")


def _render_compact(s: SLOStatus) -> str:
    burns = "/".join("-" if s.burn_rates.get(w) is None else f"{s.burn_rates[w]:.3g}" for w in ("5m", "1h", "6h"))
    spent = "-" if s.budget_consumed_pct is None else f"{s.budget_consumed_pct:.3g}%"
    return (
        f"{s.name} [{s.compliance}, {s.alert}] SLI {_fmt_pct(s.sli_range_pct)}, budget spent {spent}, "
        f"burn 5m/1h/6h {burns}"
    )


def _render_slo(s: SLOStatus) -> str:
    what = {"availability": "availability", "error_rate": "no-error spans", "latency": "requests"}[s.sli]
    if s.threshold_ms is not None:
        what += f" <= {format_duration(s.threshold_ms * 1e6)}"
    if s.operation:
        what += f" of {s.operation!r}"
    src = "" if s.source == "spans" else f" from {s.source}"
    burns = " ".join(f"{k} {'-' if v is None else f'{v:.3g}'}" for k, v in s.burn_rates.items())
    parts = [
        f"{s.name} [{s.compliance}, {s.alert}]: {what}{src} >= {s.objective_pct:g}% / {s.window}",
        f"SLI range {_fmt_pct(s.sli_range_pct)} ({s.bad_range}/{s.events_range} bad), "
        f"window {_fmt_pct(s.sli_window_pct)} (data {s.window_coverage_pct:.3g}% of {s.window})",
    ]
    if s.budget_consumed_pct is not None:
        parts.append(f"budget {s.budget_consumed_pct:.3g}% spent, {s.budget_remaining_pct:.3g}% left")
    parts.append(f"burn {burns}")
    if s.firing:
        parts.append("firing " + " | ".join(s.firing))
    if s.time_to_exhaustion_s is not None:
        parts.append(f"budget gone in {format_duration(s.time_to_exhaustion_s * 1e9)} at the 1h burn")
    return "; ".join(parts + s.notes)
