"""list_services: every service seen in any signal, with its RED figures."""

from __future__ import annotations

from pydantic import BaseModel, Field

from obsmcp.result import ListResult, estimate_tokens, within_budget
from obsmcp.store.schema import METRIC_TABLES
from obsmcp.store.where import Where, col
from obsmcp.timerange import format_duration, format_ns, resolve_range
from obsmcp.tools.context import ToolContext

TS = '"Timestamp"'
VERSION_KEY = "'service.version'"


class ServiceInfo(BaseModel):
    service: str
    signals: list[str] = Field(description="traces, logs, metrics")
    requests: int = Field(0, description="server (entry) spans in range")
    request_rate_per_s: float = 0.0
    error_rate: float = Field(0.0, description="share of server spans with error status")
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_logs: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    versions: list[str] = Field(default_factory=list)


class ListServicesResult(ListResult):
    range: str
    services: list[ServiceInfo] = Field(default_factory=list)


def list_services(
    ctx: ToolContext, start: str | None = None, end: str | None = None, max_tokens: int | None = None
) -> tuple[ListServicesResult, str]:
    tr = resolve_range(start, end)
    d = ctx.dialect
    seconds = tr.duration_ns / 1e9
    by: dict[str, ServiceInfo] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}

    def seen(svc: str, signal: str, lo: int | None, hi: int | None) -> ServiceInfo:
        info = by.setdefault(svc, ServiceInfo(service=svc, signals=[]))
        if signal not in info.signals:
            info.signals.append(signal)
        if lo is not None:
            first[svc] = min(first.get(svc, lo), lo)
        if hi is not None:
            last[svc] = max(last.get(svc, hi), hi)
        return info

    w = Where(d).time("Timestamp", tr.start_ns, tr.end_ns)
    lw = Where(d).log_time(tr.start_ns, tr.end_ns)
    # RED figures from entry spans (server spans, or roots): filtering in WHERE keeps the quantile and the
    # version lookup to those rows; first/last seen come from every span in a second, cheap pass.
    entry = w.copy().add("(\"SpanKind\" = 'Server' OR \"ParentSpanId\" = '')")
    _, rows = ctx.db.query(
        'SELECT "ServiceName", count(*), count(*) FILTER (WHERE "StatusCode" = \'Error\'), '
        f"{d.quantiles(col('Duration'), (0.5, 0.95, 0.99))}, "
        f"{d.list_distinct_agg(d.attr(col('ResourceAttributes'), VERSION_KEY), 5)} "
        f"FROM otel_traces WHERE {entry.sql()} GROUP BY 1",
        entry.params,
    )
    for svc, n, errs, qs, versions in rows:
        info = seen(str(svc), "traces", None, None)
        p50, p95, p99 = qs if qs else (None, None, None)
        info.requests = int(n)
        info.request_rate_per_s = round(int(n) / seconds, 3) if seconds else 0.0
        info.error_rate = round(int(errs) / int(n), 4) if n else 0.0
        info.p50_ms = round(p50 / 1e6, 2) if p50 is not None else None
        info.p95_ms = round(p95 / 1e6, 2) if p95 is not None else None
        info.p99_ms = round(p99 / 1e6, 2) if p99 is not None else None
        info.versions = [str(v) for v in versions if v]
    _, rows = ctx.db.query(
        f'SELECT "ServiceName", {d.epoch_ns("min(" + TS + ")")}, {d.epoch_ns("max(" + TS + ")")} '
        f"FROM otel_traces WHERE {w.sql()} GROUP BY 1",
        w.params,
    )
    for svc, lo, hi in rows:
        seen(str(svc), "traces", int(lo), int(hi))
    _, rows = ctx.db.query(
        'SELECT "ServiceName", count(*) FILTER (WHERE "SeverityNumber" >= 17), '
        f"{d.epoch_ns('min(' + TS + ')')}, {d.epoch_ns('max(' + TS + ')')} "
        f"FROM otel_logs WHERE {lw.sql()} GROUP BY 1",
        lw.params,
    )
    for svc, errs, lo, hi in rows:
        seen(str(svc), "logs", int(lo), int(hi)).error_logs = int(errs)
    mw = Where(d).time("TimeUnix", tr.start_ns, tr.end_ns)
    union = " UNION ALL ".join(
        f'SELECT "ServiceName", {d.epoch_ns("min(" + col("TimeUnix") + ")")} AS lo, '
        f"{d.epoch_ns('max(' + col('TimeUnix') + ')')} AS hi FROM {t.name} "
        f"WHERE {mw.sql()} GROUP BY 1"
        for t in METRIC_TABLES.values()
    )
    _, rows = ctx.db.query(union, mw.params * len(METRIC_TABLES))
    for svc, lo, hi in rows:
        seen(str(svc), "metrics", int(lo), int(hi))
    for svc, info in by.items():
        info.first_seen = format_ns(first[svc]) if svc in first else None
        info.last_seen = format_ns(last[svc]) if svc in last else None

    services = sorted(by.values(), key=lambda s: (-s.error_rate, -s.requests, s.service))
    budget = ctx.budget(max_tokens)
    kept = within_budget(services, lambda s: estimate_tokens(_line(s)), budget, 120)
    notes = []
    if len(kept) < len(services):
        notes.append(f"{len(services) - len(kept)} services not shown to fit ~{budget} tokens")
    res = ListServicesResult(
        range=tr.describe(),
        total=len(services),
        returned=len(kept),
        truncated=len(kept) < len(services),
        notes=notes,
        services=kept,
    )
    head = [
        f"list_services: {len(services)} services with telemetry in {tr.describe()} (highest error rate first)",
        "service: requests (rate) errors% p50/p95/p99 | error logs | signals | versions | last seen",
    ]
    if not services:
        head.append("no telemetry in range: widen start (e.g. start='24h'), or send OTLP to the receiver")
    return res, "\n".join(head + [_line(s) for s in kept] + notes)


def _ms(v: float | None) -> str:
    return "-" if v is None else format_duration(v * 1e6)


def _line(s: ServiceInfo) -> str:
    red = (
        f"{s.requests} req ({s.request_rate_per_s:g}/s) {s.error_rate * 100:.2f}% err "
        f"{_ms(s.p50_ms)}/{_ms(s.p95_ms)}/{_ms(s.p99_ms)}"
        if s.requests
        else "no server spans"
    )
    versions = ",".join(s.versions) or "-"
    return (
        f"{s.service}: {red} | {s.error_logs} error logs | {'+'.join(s.signals)} | v {versions} | {s.last_seen or '-'}"
    )
