"""Evaluate one alert rule once: the label sets whose condition holds now, each with its value and a one-line cause.

Each kind reuses what the tools compute: burn rates from `slo_report`'s counting (one scan per round for every
SLO, Prometheus-backed SLOs included), metric values from `query_metrics`' series code, remote metrics and raw
PromQL through the configured backend, RED figures from entry spans as `list_services` counts them, and new log
patterns with the template miner of `log_patterns`. A `Round` computes the shared parts once for all rules.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from obsmcp.alerting.model import AlertRule, duration_s
from obsmcp.alerting.rules import RuleError
from obsmcp.analysis.patterns import PREMASK_RE2, TemplateMiner
from obsmcp.analysis.slo import ALERT_RULES
from obsmcp.analysis.slo import AlertRule as WorkbookRule
from obsmcp.resolve import AmbiguousServiceError, ServiceNotFoundError
from obsmcp.sources.base import MetricQuery, MetricSource
from obsmcp.store.where import Where, col
from obsmcp.timerange import NS_PER_S, TimeRange, format_duration, format_ns, parse_instant
from obsmcp.tools import metrics as metrics_tool
from obsmcp.tools.context import ToolContext, severity_floor
from obsmcp.tools.slo import SLOReport, SLOStatus, compute_slo_report

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
ENTRY = "(\"SpanKind\" = 'Server' OR \"ParentSpanId\" = '')"
PATTERN_BODY_CHARS = 500


@dataclass
class Sample:
    """One label set whose condition holds: its value and what a person reads about it."""

    labels: dict[str, str]
    value: float | None
    cause: str
    threshold: float | None = None


@dataclass
class Round:
    """One evaluation round at `now_ns`: shared computations, done once for all the rules that need them."""

    ctx: ToolContext
    now_ns: int
    _slo: SLOReport | None = None
    _red: dict[int, dict[str, tuple[int, int, float | None, float | None, float | None]]] = field(default_factory=dict)

    def slo_report(self) -> SLOReport:
        if self._slo is None:
            self._slo = compute_slo_report(self.ctx, None, "1h", format_ns(self.now_ns))
        return self._slo

    def red(self, window_ns: int) -> dict[str, tuple[int, int, float | None, float | None, float | None]]:
        """service -> (requests, errors, p50, p95, p99 in ns) of entry spans over the window ending now."""
        if window_ns not in self._red:
            d = self.ctx.dialect
            w = Where(d).time("Timestamp", self.now_ns - window_ns, self.now_ns).add(ENTRY)
            _, rows = self.ctx.db.query(
                'SELECT "ServiceName", count(*), count(*) FILTER (WHERE "StatusCode" = \'Error\'), '
                f"{d.quantiles(col('Duration'), (0.5, 0.95, 0.99))} FROM otel_traces WHERE {w.sql()} GROUP BY 1",
                w.params,
            )
            out = {}
            for svc, n, errs, qs in rows:
                p50, p95, p99 = qs if qs else (None, None, None)
                out[str(svc)] = (int(n), int(errs), p50, p95, p99)
            self._red[window_ns] = out
        return self._red[window_ns]


def evaluate_rule(rule: AlertRule, rnd: Round) -> list[Sample]:
    """The label sets of `rule` whose condition holds at rnd.now_ns. Raises on failure (the engine counts it)."""
    if rule.kind == "burn_rate":
        return _burn_rate(rule, rnd)
    if rule.kind == "log_pattern":
        return _log_pattern(rule, rnd)
    if rule.kind == "log_rate":
        return _log_rate(rule, rnd)
    if rule.promql is not None:
        return _promql(rule, rnd)
    if rule.signal is not None:
        return _red_signal(rule, rnd)
    if rule.backend is not None and rule.backend != "store":
        return _remote_metric(rule, rnd)
    return _store_metric(rule, rnd)


def _service(rnd: Round, name: str | None) -> str | None:
    """The store's spelling of a rule's service ("checkout" -> "checkout-service"); a service the store has not
    seen (yet) keeps its name, and has no data. A name that matches several services is a RuleError."""
    if name is None or not name.strip():
        return None
    try:
        return rnd.ctx.resolve_fresh(name)
    except AmbiguousServiceError as e:
        raise RuleError(f"service: {e}") from None
    except ServiceNotFoundError:
        return name


def _holds(rule: AlertRule, value: float | None) -> bool:
    return value is not None and rule.threshold is not None and OPS[rule.op](value, rule.threshold)


def _num(v: float) -> str:
    return f"{v:.4g}"


def _window_ns(rule: AlertRule) -> int:
    return int(duration_s(rule.window) * NS_PER_S)


# -- threshold: RED series of services -------------------------------------------------------------------------

_SIGNAL_TEXT = {
    "error_rate": "error rate",
    "request_rate": "request rate",
    "latency_p50": "p50 latency",
    "latency_p95": "p95 latency",
    "latency_p99": "p99 latency",
}


def _red_signal(rule: AlertRule, rnd: Round) -> list[Sample]:
    window_ns = _window_ns(rule)
    figures = rnd.red(window_ns)
    services = [_service(rnd, rule.service) or ""] if rule.service else sorted(figures)
    if rule.signal == "request_rate" and not rule.service:
        # A service that stopped receiving requests has no row: it is at 0, which a `<` rule is about.
        services = sorted(set(services) | set(rnd.ctx.known_services()))
    out: list[Sample] = []
    for svc in services:
        row = figures.get(svc)
        value = _red_value(rule, row, window_ns)
        if not _holds(rule, value):
            continue
        assert value is not None and rule.threshold is not None
        shown, limit = _red_text(rule, value), _red_text(rule, rule.threshold)
        out.append(
            Sample(
                {"service": svc},
                value,
                f"{svc} {_SIGNAL_TEXT[rule.signal or '']} {shown} {rule.op} {limit} over {rule.window}",
                rule.threshold,
            )
        )
    return out


def _red_value(
    rule: AlertRule, row: tuple[int, int, float | None, float | None, float | None] | None, window_ns: int
) -> float | None:
    if rule.signal == "request_rate":
        return (row[0] if row else 0) / (window_ns / NS_PER_S)
    if row is None or row[0] == 0:
        return None  # no requests: no error rate, no latency (not 0)
    n, errs, p50, p95, p99 = row
    if rule.signal == "error_rate":
        return errs / n
    q = {"latency_p50": p50, "latency_p95": p95, "latency_p99": p99}[rule.signal or ""]
    return None if q is None else float(q) / 1e6  # ms


def _red_text(rule: AlertRule, v: float) -> str:
    if rule.signal == "error_rate":
        return f"{v * 100:.3g}%"
    if rule.signal == "request_rate":
        return f"{v:.3g}/s"
    return f"{v:.4g} ms"


# -- threshold: a metric in the store, on a remote backend, or raw PromQL ---------------------------------------


def _store_metric(rule: AlertRule, rnd: Round) -> list[Sample]:
    assert rule.metric is not None
    ctx = rnd.ctx
    svc = _service(rnd, rule.service)
    mtype, unit = metrics_tool._find_metric(ctx, rule.metric, svc)
    agg = rule.aggregation if "aggregation" in rule.model_fields_set else metrics_tool._default_agg(mtype)
    window_ns = _window_ns(rule)
    tr = TimeRange(rnd.now_ns - window_ns, rnd.now_ns)
    step_s = max(1, window_ns // NS_PER_S)
    series, _ = metrics_tool.metric_series(
        ctx, rule.metric, mtype, agg, svc, rule.filters, list(rule.group_by), tr, int(step_s)
    )
    out: list[Sample] = []
    for labels, buckets in series:
        values = [v for _, v in sorted(buckets.items()) if v is not None]
        value = values[-1] if values else None
        if not _holds(rule, value):
            continue
        assert value is not None
        lab = dict(labels)
        if svc:
            lab.setdefault("service", svc)
        where = f" {{{', '.join(f'{k}={v}' for k, v in sorted(lab.items()))}}}" if lab else ""
        u = f" {unit}" if unit else ""
        out.append(
            Sample(
                lab,
                value,
                f"{rule.metric}{where} {agg} {_num(value)}{u} {rule.op} {_num(rule.threshold or 0)} over {rule.window}",
                rule.threshold,
            )
        )
    return out


def _remote_source(rnd: Round, backend: str) -> MetricSource:
    source = rnd.ctx.sources.get(backend)
    if not isinstance(source, MetricSource):
        raise RuleError(f"backend {backend!r} ({source.kind}) cannot answer metric queries")
    return source


def _remote_metric(rule: AlertRule, rnd: Round) -> list[Sample]:
    assert rule.metric is not None and rule.backend is not None
    source = _remote_source(rnd, rule.backend)
    window_ns = _window_ns(rule)
    query = MetricQuery(
        start_ns=rnd.now_ns - window_ns,
        end_ns=rnd.now_ns,
        name=rule.metric,
        service=rule.service,
        aggregation=rule.aggregation if "aggregation" in rule.model_fields_set else "",
        step_s=max(15, int(window_ns // NS_PER_S) // 4),
        group_by=tuple(rule.group_by),
        attributes=dict(rule.filters),
    )
    return _series_samples(rule, rnd, source, query, f"{rule.metric} ({rule.backend})")


def _promql(rule: AlertRule, rnd: Round) -> list[Sample]:
    assert rule.promql is not None and rule.backend is not None
    source = _remote_source(rnd, rule.backend)
    # The expression carries its own windows: its latest point is the value now.
    query = MetricQuery(start_ns=rnd.now_ns - 60 * NS_PER_S, end_ns=rnd.now_ns, raw=rule.promql, step_s=15)
    return _series_samples(
        rule, rnd, source, query, rule.promql if len(rule.promql) <= 80 else rule.promql[:77] + "..."
    )


def _series_samples(rule: AlertRule, rnd: Round, source: MetricSource, query: MetricQuery, what: str) -> list[Sample]:
    sources = rnd.ctx.sources
    page = sources.call(source.query_metrics(query), sources.timeout_for(source))
    out: list[Sample] = []
    for s in page.series:
        value = s.last
        if not _holds(rule, value):
            continue
        assert value is not None
        where = f" {{{', '.join(f'{k}={v}' for k, v in sorted(s.labels.items()))}}}" if s.labels else ""
        out.append(
            Sample(
                dict(s.labels),
                value,
                f"{what}{where} = {_num(value)} {rule.op} {_num(rule.threshold or 0)}",
                rule.threshold,
            )
        )
    return out


# -- burn rate: multiwindow, multi-burn-rate over SLOs ---------------------------------------------------------


def _slo_statuses(ref: str, report: SLOReport) -> list[SLOStatus]:
    every = [s for group in report.services for s in group.slos]
    if ref == "*":
        return every
    named = [s for s in every if s.name == ref and s.defined_in == "config"]
    if named:
        return named
    service, _, name = ref.partition("/")
    return [s for s in every if s.service == service and s.name == name]


def _burn_rate(rule: AlertRule, rnd: Round) -> list[Sample]:
    assert rule.slo is not None
    report = rnd.slo_report()
    windows = rule.windows or [(r.long_window, r.short_window, r.burn) for r in ALERT_RULES]
    workbook = {(r.long_window, r.short_window, r.burn): r for r in ALERT_RULES}
    ladder = sorted({duration_s(w) for w, _, _ in [*windows, *workbook]})
    out: list[Sample] = []
    for status in _slo_statuses(rule.slo, report):
        covered_s = _covered_s(status, rnd.now_ns)
        for long_w, short_w, burn in windows:
            # A page needs data that supports its window: a slower pair pages once the data is longer than the
            # next faster pair's long window. Before that it measures the same few minutes as the faster pair,
            # only against a lower threshold (6x over a "6h" holding 20 minutes of data is a 20-minute alert at
            # 6x, which the workbook never meant, and which a service's usual rare errors reach). Tickets and
            # other severities evaluate as soon as there is data: they wake nobody.
            faster = [w for w in ladder if w < duration_s(long_w)]
            if rule.severity == "critical" and faster and covered_s <= faster[-1]:
                continue
            hit = _burning(status, workbook.get((long_w, short_w, burn)), long_w, short_w, burn)
            if hit is None:
                continue
            lo, sh = hit
            thin = duration_s(long_w) > covered_s
            data = f" (the SLO has {format_duration(covered_s * NS_PER_S)} of data)" if thin else ""
            exhaustion = (
                f"; budget gone in {format_duration(status.time_to_exhaustion_s * NS_PER_S)}"
                if status.time_to_exhaustion_s
                else ""
            )
            out.append(
                Sample(
                    {"service": status.service, "slo": status.name, "window": f"{long_w}/{short_w}"},
                    lo,
                    f"{status.service} {status.name} SLO ({status.objective_pct:g}%) burns its error budget "
                    f"{lo:.3g}x over {long_w} and {sh:.3g}x over {short_w} (> {burn:g}x){data}{exhaustion}",
                    burn,
                )
            )
            break  # the first (fastest) window pair that burns is the alert's window
    return out


def _covered_s(status: SLOStatus, now_ns: int) -> float:
    """Seconds of data behind the SLO's figures (from its first event in the SLO window)."""
    if status.data_since is None:
        return 0.0
    return max(0.0, (now_ns - parse_instant(status.data_since, now=now_ns)) / NS_PER_S)


def _burning(
    status: SLOStatus, workbook: WorkbookRule | None, long_w: str, short_w: str, burn: float
) -> tuple[float, float] | None:
    lo, sh = status.burn_rates.get(long_w), status.burn_rates.get(short_w)
    if lo is None or sh is None:
        return None
    if workbook is not None:
        # slo_report's verdict, with its low-traffic guard (slo_alert_min_bad_events in the long window).
        return (lo, sh) if workbook.describe() in status.firing else None
    return (lo, sh) if lo > burn and sh > burn else None


# -- logs: error-log rate and new patterns ---------------------------------------------------------------------


def _log_where(rule: AlertRule, rnd: Round, lo: int, hi: int) -> Where:
    w = Where(rnd.ctx.dialect).log_time(lo, hi)
    svc = _service(rnd, rule.service)
    if svc:
        w.add('"ServiceName" = ?', svc)
    floor = severity_floor(rule.min_severity)
    if floor is not None:
        w.add('"SeverityNumber" >= ?', floor)
    return w


def _log_rate(rule: AlertRule, rnd: Round) -> list[Sample]:
    window_ns = _window_ns(rule)
    w = _log_where(rule, rnd, rnd.now_ns - window_ns, rnd.now_ns)
    _, rows = rnd.ctx.db.query(f'SELECT "ServiceName", count(*) FROM otel_logs WHERE {w.sql()} GROUP BY 1', w.params)
    minutes = window_ns / NS_PER_S / 60
    out: list[Sample] = []
    for svc, n in rows:
        value = int(n) / minutes
        if not _holds(rule, value):
            continue
        out.append(
            Sample(
                {"service": str(svc)},
                value,
                f"{svc}: {value:.3g} {rule.min_severity}+ log records/min over {rule.window} {rule.op} "
                f"{_num(rule.threshold or 0)}",
                rule.threshold,
            )
        )
    return out


def _masked_body_sql(rnd: Round) -> str:
    d = rnd.ctx.dialect
    out = d.left(d.first_line(col("Body")), PATTERN_BODY_CHARS)
    for pattern, repl in PREMASK_RE2:
        out = d.regex_replace_all(out, pattern, repl)
    return out


def _log_pattern(rule: AlertRule, rnd: Round) -> list[Sample]:
    """Templates with at least min_count records in the window and none in the baseline before it, for services
    that logged anything in the baseline (a service seen for the first time is not a new pattern)."""
    window_ns = _window_ns(rule)
    base_ns = int(duration_s(rule.baseline) * NS_PER_S)
    cur_start = rnd.now_ns - window_ns
    w = _log_where(rule, rnd, cur_start - base_ns, rnd.now_ns)
    d = rnd.ctx.dialect
    _, rows = rnd.ctx.db.query(
        f'SELECT {_masked_body_sql(rnd)} AS mb, "ServiceName", "Timestamp" >= {d.ts_param()} AS cur, count(*), '
        f'min("Body") FROM otel_logs WHERE {w.sql()} GROUP BY ALL ORDER BY 1, 2, 3',
        [cur_start, *w.params],
    )
    bw = Where(d).log_time(cur_start - base_ns, cur_start)
    _, seen_rows = rnd.ctx.db.query(f'SELECT DISTINCT "ServiceName" FROM otel_logs WHERE {bw.sql()}', bw.params)
    observed = {str(r[0]) for r in seen_rows}
    miner = TemplateMiner()
    grouped = [(miner.add(str(mb), int(n)), str(s), bool(cur), int(n), str(ex)) for mb, s, cur, n, ex in rows]
    counts: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, 0, "", ""])
    for g, s, cur, n, ex in grouped:
        t = miner.template_of(g)
        acc = counts[(s, t.id)]
        acc[0 if cur else 1] += n
        acc[2] = t.template
        acc[3] = acc[3] or ex
    out: list[Sample] = []
    for (svc, tid), (cur_n, base_n, template, _) in sorted(counts.items()):
        if cur_n < rule.min_count or base_n > 0 or svc not in observed:
            continue
        shown = template if len(template) <= 120 else template[:117] + "..."
        out.append(
            Sample(
                {"service": svc, "pattern": tid},
                float(cur_n),
                f"new {rule.min_severity}+ log pattern in {svc}, {cur_n}x in {rule.window}, not seen in the "
                f"{rule.baseline} before: {shown}",
                float(rule.min_count),
            )
        )
    return out
