"""SLOs and alert rules as Prometheus recording and alerting rules, as Sloth and Pyrra generate them.

Per SLO: recording rules of its error ratio (bad / all requests) over the burn-rate windows (5m, 30m, 1h, 2h, 6h,
1d, 3d, plus any a rule asks for), its objective and error budget; then, per burn-rate rule that covers it, a
multiwindow, multi-burn-rate alerting rule (SRE workbook: 1h & 5m at 14.4x and 6h & 30m at 6x page, 3d & 6h at 1x
opens a ticket). Threshold rules become alerting rules with `for`. Log rules (log_pattern, log_rate) have no PromQL
form: they are listed as skipped, with the reason, in the output and on stderr; nothing is dropped silently.

Which Prometheus metric an SLO counts from (obsmcp reads no backend here; override with ExportOptions):
- availability and latency SLOs, whether obsmcp counts them from spans or from a Prometheus backend (backend=):
  the HTTP server histogram `http_server_request_duration_seconds` (OpenTelemetry's http.server.request.duration
  as Prometheus names it; what `PrometheusSource.slo_events` and the OTel Collector's Prometheus exporter give),
  the service in `job`, the status in `http_response_status_code`; a request is bad when 5xx (availability) or
  slower than threshold_ms (latency: the `le` bucket at the threshold, which must be a bucket boundary).
- error_rate SLOs from spans: the OTel Collector spanmetrics connector's `traces_span_metrics_calls_total` (every
  span, by `service_name`; bad when `status_code="STATUS_CODE_ERROR"`).
- source = "metric" SLOs: their own counters (good_metric / total_metric) or histogram, named as the OTel
  Collector's Prometheus exporter names OTel metrics (dots become underscores, counters end in _total).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from obsmcp import __version__
from obsmcp.alerting.model import AlertRule, duration_s
from obsmcp.alerting.rules import DEFAULT_SLO_NAMES, PAGE_WINDOWS, TICKET_WINDOWS
from obsmcp.config import SLOConfig, default_slos
from obsmcp.sources.prometheus import RED_HISTOGRAMS, STATUS_LABELS, promql_string

BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
DEFAULT_WINDOWS: list[tuple[str, str, float]] = PAGE_WINDOWS + TICKET_WINDOWS
RATIO = "obsmcp_slo:sli_error:ratio_rate"  # + window: the recorded error ratio of an SLO
SPANMETRICS_CALLS = "traces_span_metrics_calls_total"
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_OTEL_HISTOGRAMS = {  # OTel semantic-convention histograms and the names the Prometheus exporter gives them
    "http.server.request.duration": "http_server_request_duration_seconds",
    "http.server.duration": "http_server_duration_milliseconds",
}
_METHOD_ROUTE = re.compile(r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|CONNECT|TRACE)\s+(/\S*)$")
_QUANTILE = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}
_OVER_TIME = {"avg": "avg_over_time", "min": "min_over_time", "max": "max_over_time", "sum": "avg_over_time"}


class ExportError(ValueError):
    """Nothing exportable, or options that cannot work; the message says what to do."""


@dataclass(frozen=True)
class ExportOptions:
    histogram: str = RED_HISTOGRAMS[0]  # http_server_request_duration_seconds
    status_label: str = STATUS_LABELS[0]  # http_response_status_code
    service_label: str = "job"  # the OTel Collector's Prometheus exporter puts service.name in job
    default_slo_services: tuple[str, ...] = ()  # services that get obsmcp's default SLOs in the export
    interval: str | None = None  # rule group evaluation interval (None: Prometheus' global one)


@dataclass
class Skipped:
    what: str
    reason: str

    def line(self) -> str:
        return f"skipped {self.what}: {self.reason}"


@dataclass
class Export:
    groups: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def recording_rules(self) -> int:
        return sum(1 for g in self.groups for r in g["rules"] if "record" in r)

    @property
    def alerting_rules(self) -> int:
        return sum(1 for g in self.groups for r in g["rules"] if "alert" in r)

    def yaml(self) -> str:
        return render_yaml(self)


# -- PromQL pieces ----------------------------------------------------------------------------------------------


def _selector(metric: str, matchers: Sequence[str]) -> str:
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


def _num(v: float) -> str:
    return f"{v:.10g}"


def prom_name(otel_name: str) -> str:
    """An OTel metric name as Prometheus stores it: characters other than [a-zA-Z0-9_:] become '_'."""
    name = _NOT_NAME.sub("_", otel_name)
    return name if not name[:1].isdigit() else f"_{name}"


def _counter(otel_name: str) -> str:
    name = prom_name(otel_name)
    return name if name.endswith("_total") else f"{name}_total"


def _le_matcher(threshold: float) -> str:
    """`le` at a bucket boundary, however the exporter formats it ("0.25", "2", "2.0", "2.5e-01" aside)."""
    text = _num(threshold)
    if "e" in text:
        return f"le={promql_string(text)}"
    body = re.escape(text)
    return "le=~" + promql_string(body + "0*" if "." in text else body + "(\\.0*)?")


@dataclass(frozen=True)
class SLOQuery:
    """How to count one SLO in Prometheus: the error ratio over a window, and where it comes from."""

    slo: SLOConfig
    source: str  # one line for the output's comments
    bad: str  # PromQL with {window} placeholders
    total: str
    latency_ratio: bool = False  # bad is "good" (latency buckets): ratio = 1 - good/total

    def error_ratio(self, window: str) -> str:
        bad, total = self.bad.replace("{window}", window), self.total.replace("{window}", window)
        if self.latency_ratio:
            return f"1 - ({bad} / {total})"
        return f"({bad} or vector(0)) / {total}"


def slo_query(slo: SLOConfig, opts: ExportOptions) -> SLOQuery:
    """The PromQL that counts an SLO's bad and total events. Raises ExportError when it has none."""
    svc = f"{opts.service_label}={promql_string(slo.service)}"
    if slo.source == "metric":
        if slo.good_metric and slo.total_metric:
            good, total = _counter(slo.good_metric), _counter(slo.total_metric)
            return SLOQuery(
                slo,
                f"counters {good} / {total}",
                f"sum(rate({_selector(good, [svc])}[{{window}}]))",
                f"sum(rate({_selector(total, [svc])}[{{window}}]))",
                latency_ratio=True,
            )
        assert slo.metric is not None
        return _histogram_query(slo, _OTEL_HISTOGRAMS.get(slo.metric, prom_name(slo.metric)), [svc], opts)
    if slo.sli == "error_rate":
        sel = [f"service_name={promql_string(slo.service)}"]
        if slo.operation is not None:
            sel.append(f"span_name={promql_string(slo.operation)}")
        err = _selector(SPANMETRICS_CALLS, [*sel, 'status_code="STATUS_CODE_ERROR"'])
        return SLOQuery(
            slo,
            f"{SPANMETRICS_CALLS} (OTel Collector spanmetrics: every span of the service)",
            f"sum(rate({err}[{{window}}]))",
            f"sum(rate({_selector(SPANMETRICS_CALLS, sel)}[{{window}}]))",
        )
    sel = [svc]
    if slo.operation is not None:
        m = _METHOD_ROUTE.match(slo.operation.strip())
        if m is None:
            raise ExportError(
                f"operation {slo.operation!r} is not 'METHOD /route': the HTTP server histogram has "
                "http_request_method and http_route, not span names"
            )
        sel += [f"http_request_method={promql_string(m.group(1))}", f"http_route={promql_string(m.group(2))}"]
    return _histogram_query(slo, opts.histogram, sel, opts)


def _histogram_query(slo: SLOConfig, histogram: str, sel: list[str], opts: ExportOptions) -> SLOQuery:
    count = f"sum(rate({_selector(histogram + '_count', sel)}[{{window}}]))"
    if slo.sli == "latency":
        assert slo.threshold_ms is not None
        le = slo.threshold_ms if histogram.endswith("_milliseconds") else slo.threshold_ms / 1000
        good = f"sum(rate({_selector(histogram + '_bucket', [*sel, _le_matcher(le)])}[{{window}}]))"
        return SLOQuery(slo, f"{histogram} (le={_num(le)})", good, count, latency_ratio=True)
    if slo.sli == "error_rate":
        raise ExportError("a histogram gives availability or latency; error_rate needs counters (good/total_metric)")
    failed = _selector(histogram + "_count", [*sel, opts.status_label + '=~"5.."'])
    bad = f"sum(rate({failed}[{{window}}]))"
    return SLOQuery(slo, f"{histogram} ({opts.status_label} 5xx)", bad, count)


# -- building -------------------------------------------------------------------------------------------------


def _slo_ref_matches(ref: str, slo: SLOConfig, configured: bool) -> bool:
    if ref == "*":
        return True
    if configured:
        return ref == slo.name
    service, _, name = ref.partition("/")
    return service == slo.service and name == slo.name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def build_export(slos: Sequence[SLOConfig], rules: Iterable[AlertRule], opts: ExportOptions | None = None) -> Export:
    """Prometheus rule groups for these SLOs (plus default SLOs of opts.default_slo_services) and rules."""
    opts = opts or ExportOptions()
    out = Export()
    rules = list(rules)
    all_slos: list[tuple[SLOConfig, bool]] = [(s, True) for s in slos]
    for service in opts.default_slo_services:
        if any(s.service == service for s in slos):
            out.notes.append(f"{service} has SLOs in the config: its default SLOs are not added")
            continue
        all_slos += [(s, False) for s in default_slos(service)]

    burn_rules = [r for r in rules if r.kind == "burn_rate"]
    covered: dict[int, list[AlertRule]] = {}
    for i, (slo, configured) in enumerate(all_slos):
        covered[i] = [r for r in burn_rules if r.slo is not None and _slo_ref_matches(r.slo, slo, configured)]
    for r in burn_rules:
        if not any(r in c for c in covered.values()):
            hint = (
                "add `--default-slos SERVICE` to export default SLOs"
                if r.slo == "*" or (r.slo or "").partition("/")[2] in DEFAULT_SLO_NAMES
                else "no such SLO in the config"
            )
            out.skipped.append(Skipped(f"rule {r.name!r} (burn_rate, slo = {r.slo!r})", f"no SLO to alert on: {hint}"))

    for i, (slo, _configured) in enumerate(all_slos):
        try:
            query = slo_query(slo, opts)
        except ExportError as e:
            out.skipped.append(Skipped(f"SLO {slo.name!r} of {slo.service}", str(e)))
            continue
        out.groups.append(_slo_group(query, covered[i], opts))

    threshold: list[dict[str, Any]] = []
    for r in rules:
        if r.kind == "burn_rate":
            continue
        if r.kind in ("log_pattern", "log_rate"):
            out.skipped.append(
                Skipped(
                    f"rule {r.name!r} ({r.kind})",
                    "log rules count log records in obsmcp's store, which Prometheus has not: obsmcp evaluates "
                    "them (`obsmcp serve`)",
                )
            )
            continue
        try:
            threshold.append(_threshold_rule(r, opts))
        except ExportError as e:
            out.skipped.append(Skipped(f"rule {r.name!r} (threshold)", str(e)))
    if threshold:
        out.groups.append(_group("obsmcp-alerts", threshold, opts))
    if not out.groups:
        raise ExportError(
            "nothing to export: the config has no [[slos]] and no threshold [[alerts]] with a PromQL form"
            + (
                f" ({len(out.skipped)} skipped: " + "; ".join(s.line() for s in out.skipped) + ")"
                if out.skipped
                else ""
            )
            + "; add SLOs or rules, or export the default SLOs of a service with --default-slos SERVICE"
        )
    return out


def _group(name: str, rules: list[dict[str, Any]], opts: ExportOptions) -> dict[str, Any]:
    group: dict[str, Any] = {"name": name}
    if opts.interval:
        group["interval"] = opts.interval
    group["rules"] = rules
    return group


def _slo_group(q: SLOQuery, rules: list[AlertRule], opts: ExportOptions) -> dict[str, Any]:
    slo = q.slo
    labels = {"slo": slo.name, "service": slo.service}
    windows = list(BURN_WINDOWS)
    for r in rules:
        for long, short, _ in r.windows or DEFAULT_WINDOWS:
            for w in (long, short):
                if w not in windows:
                    windows.append(w)
    budget = 1 - slo.target
    out: list[dict[str, Any]] = [
        {"record": f"{RATIO}{w}", "expr": q.error_ratio(w), "labels": dict(labels)}
        for w in sorted(windows, key=duration_s)
    ]
    out.append({"record": "obsmcp_slo:objective:ratio", "expr": f"vector({_num(slo.target)})", "labels": labels})
    out.append({"record": "obsmcp_slo:error_budget:ratio", "expr": f"vector({_num(budget)})", "labels": labels})
    sel = f"{{slo={promql_string(slo.name)},service={promql_string(slo.service)}}}"
    for r in rules:
        terms = [
            f"({RATIO}{long}{sel} > {_num(factor * budget)} and {RATIO}{short}{sel} > {_num(factor * budget)})"
            for long, short, factor in r.windows or DEFAULT_WINDOWS
        ]
        wins = ", ".join(f"{long} & {short} over {_num(f)}x" for long, short, f in r.windows or DEFAULT_WINDOWS)
        out.append(
            _for(
                {
                    "alert": r.name,
                    "expr": " or ".join(terms),
                    "for": r.for_,
                    "labels": {**r.labels, **labels, "severity": r.severity},
                    "annotations": {
                        "summary": r.summary or f"{slo.service} {slo.name}: error budget burning ({wins})",
                        "description": f"SLO {slo.name} ({_num(slo.objective)}% over {slo.window}) of "
                        f"{slo.service}: the error ratio is above the budget ({_num(budget)}) times the burn "
                        f"factor over both windows ({wins}). Counted from {q.source}.",
                    },
                }
            )
        )
    return _group(f"obsmcp-slo-{_slug(slo.service)}-{_slug(slo.name)}", out, opts)


def _threshold_rule(r: AlertRule, opts: ExportOptions) -> dict[str, Any]:
    if r.threshold is None:
        raise ExportError("no threshold: set threshold = <number>")
    expr = f"{_threshold_expr(r, opts)} {r.op} {_num(r.threshold)}"
    labels = {**r.labels, "severity": r.severity}
    if r.service:
        labels.setdefault("service", r.service)
    return _for(
        {
            "alert": r.name,
            "expr": expr,
            "for": r.for_,
            "labels": labels,
            "annotations": {"summary": r.summary or f"{r.name}: value {r.op} {_num(r.threshold)} over {r.window}"},
        }
    )


def _for(rule: dict[str, Any]) -> dict[str, Any]:
    """No `for` when it is zero (Prometheus' default): the short window of a burn-rate pair already debounces."""
    if duration_s(rule["for"]) == 0:
        del rule["for"]
    return rule


def _threshold_expr(r: AlertRule, opts: ExportOptions) -> str:
    w = r.window
    if r.promql is not None:
        return f"({r.promql})"
    by = list(r.group_by)
    svc = [f"{opts.service_label}={promql_string(r.service)}"] if r.service else []
    if r.signal is not None:
        keys = ", ".join(by if r.service else [opts.service_label, *by])
        agg = f"sum by ({keys})" if keys else "sum"
        h = opts.histogram
        count = f"{agg} (rate({_selector(h + '_count', svc)}[{w}]))"
        if r.signal == "request_rate":
            # A service that stopped receiving requests has no series; obsmcp counts it as 0 (for `<` rules).
            return f"({count} or vector(0))" if r.service and not by else count
        if r.signal == "error_rate":
            failed = _selector(h + "_count", [*svc, opts.status_label + '=~"5.."'])
            bad = f"{agg} (rate({failed}[{w}]))"
            return f"(({bad}) / ({count}))"
        keys_le = ", ".join(["le", *([] if r.service else [opts.service_label]), *by])
        scale = " * 1000" if h.endswith("_seconds") else ""  # obsmcp's latency thresholds are in ms
        return (
            f"(histogram_quantile({_QUANTILE[r.signal]}, sum by ({keys_le}) "
            f"(rate({_selector(h + '_bucket', svc)}[{w}]))){scale})"
        )
    if r.metric is None:
        raise ExportError("neither promql, signal nor metric: nothing to express in PromQL")
    matchers = svc + [f"{prom_name(k)}={promql_string(v)}" for k, v in sorted(r.filters.items())]
    by_text = f" by ({', '.join(prom_name(k) for k in by)})" if by else ""
    agg = r.aggregation
    if r.backend not in (None, "store"):
        # A metric of a Prometheus backend already has its Prometheus name: no OTel translation.
        name = prom_name(r.metric)
        if agg in _QUANTILE:
            keys_le = ", ".join(["le", *(prom_name(k) for k in by)])
            buckets = _selector(name.removesuffix("_bucket") + "_bucket", matchers)
            return f"histogram_quantile({_QUANTILE[agg]}, sum by ({keys_le}) (rate({buckets}[{w}])))"
        if agg == "rate":
            return f"sum{by_text} (rate({_selector(name, matchers)}[{w}]))"
        return f"{agg}{by_text} ({_OVER_TIME[agg]}({_selector(name, matchers)}[{w}]))"
    if agg in _QUANTILE:
        base = _OTEL_HISTOGRAMS.get(r.metric, prom_name(r.metric))
        keys_le = ", ".join(["le", *(prom_name(k) for k in by)])
        buckets = _selector(base + "_bucket", matchers)
        return f"histogram_quantile({_QUANTILE[agg]}, sum by ({keys_le}) (rate({buckets}[{w}])))"
    if agg == "rate":
        return f"sum{by_text} (rate({_selector(_counter(r.metric), matchers)}[{w}]))"
    outer = "sum" if agg == "sum" else agg
    return f"{outer}{by_text} ({_OVER_TIME[agg]}({_selector(prom_name(r.metric), matchers)}[{w}]))"


# -- YAML ---------------------------------------------------------------------------------------------------------


def _scalar(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a YAML double-quoted scalar
    return json.dumps(v)


def render_yaml(export: Export, source: str = "") -> str:
    """The rule file: a header (what it counts from, what was skipped and why) and the groups, in block YAML."""
    lines = [
        f"# Prometheus rules generated by obsmcp {__version__} (`obsmcp alerts export`){source}. Re-generate, do "
        "not edit.",
        "# SLO error ratios are counted from:",
        "#  - availability and latency SLOs (from spans or a Prometheus backend): the HTTP server histogram",
        "#    (OTel http.server.request.duration as exported to Prometheus; bad = 5xx, or slower than the",
        "#    SLO's threshold_ms bucket)",
        f"#  - error_rate SLOs from spans: the OTel Collector spanmetrics connector's {SPANMETRICS_CALLS}",
        "#  - source = 'metric' SLOs: their own counters or histogram, with Prometheus names",
    ]
    lines += [f"# note: {n}" for n in export.notes]
    lines += [f"# {s.line()}" for s in export.skipped]
    lines.append("groups:")
    for g in export.groups:
        lines.append(f"  - name: {_scalar(g['name'])}")
        if "interval" in g:
            lines.append(f"    interval: {_scalar(g['interval'])}")
        lines.append("    rules:")
        for rule in g["rules"]:
            first = True
            for key in ("record", "alert", "expr", "for", "labels", "annotations"):
                if key not in rule:
                    continue
                lead = "      - " if first else "        "
                first = False
                value = rule[key]
                if isinstance(value, dict):
                    lines.append(f"{lead}{key}:")
                    lines += [f"          {k}: {_scalar(v)}" for k, v in value.items()]
                else:
                    lines.append(f"{lead}{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"
