"""list_services: every service seen in any signal, with its RED figures, and what each remote backend calls it.

With backends configured, each backend's own service names (Prometheus job/service labels, Loki
service_name/app, Sentry projects, Datadog service, ...: `Source.services()`) are grouped with the store's
under one canonical name (the store's when it has the service), so one row says that auth-service is
hub-ca-auth in Prometheus and auth in Sentry. A backend that does not answer is named in the notes and the
answer is marked partial; the others still answer. With `service`, the one resolver runs over the store and
every backend at once ("auth" -> auth-service here, hub-ca-auth there) and only the matching rows are shown.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from obsmcp.resolve import ServiceNotFoundError, resolve_service
from obsmcp.result import ListResult, estimate_tokens, within_budget
from obsmcp.sources.registry import STORE, BackendServices, match_service
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
    backends: dict[str, str] = Field(
        default_factory=dict, description="the service's name in each remote backend that knows it"
    )
    red_from: str | None = Field(None, description="where the RED figures come from when not the store's spans")


class ListServicesResult(ListResult):
    range: str
    services: list[ServiceInfo] = Field(default_factory=list)
    resolved: dict[str, str] = Field(
        default_factory=dict, description='with service: its name in the store ("store") and in each backend'
    )
    partial: bool = Field(False, description="true when a backend did not answer (the notes say which and why)")


def list_services(
    ctx: ToolContext,
    start: str | None = None,
    end: str | None = None,
    max_tokens: int | None = None,
    service: str | None = None,
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

    notes: list[str] = []
    store_names = list(by)
    listed = ctx.sources.services_by_backend(tr.start_ns, tr.end_ns) if ctx.sources else []
    for b in listed:
        if b.error is not None:
            notes.append(f"{b.backend} did not answer, its services are missing: {b.error}")
        else:
            _group(by, b)
    notes += _red_from_prometheus(ctx, by, listed, tr.start_ns, tr.end_ns)
    services = sorted(by.values(), key=lambda s: (-s.error_rate, -s.requests, s.service))
    resolved: dict[str, str] = {}
    query = (service or "").strip()
    if query:
        resolved, misses = _resolve_everywhere(query, store_names, listed)
        services = [s for s in services if _matches(s, resolved)]
        notes += misses
    budget = ctx.budget(max_tokens)
    kept = within_budget(services, lambda s: estimate_tokens(_line(s)), budget, 120)
    if len(kept) < len(services):
        notes.append(f"{len(services) - len(kept)} services not shown to fit ~{budget} tokens")
    partial = any(b.error is not None for b in listed)
    res = ListServicesResult(
        range=tr.describe(),
        total=len(services),
        returned=len(kept),
        truncated=len(kept) < len(services),
        notes=notes,
        services=kept,
        resolved=resolved,
        partial=partial,
    )
    where = f" and {len(listed)} backend{'s' if len(listed) > 1 else ''}" if listed else ""
    head = [
        f"list_services: {len(services)} services with telemetry in {tr.describe()} from the store{where}"
        + (" (PARTIAL: a backend did not answer, see the notes)" if partial else "")
        + " (highest error rate first)",
        "service: requests (rate) errors% p50/p95/p99 | error logs | signals | versions | last seen"
        + (" | name in each backend" if listed else ""),
    ]
    if resolved:
        head.append(f"{query!r} is " + ", ".join(f"{n} in {w}" for w, n in resolved.items()))
    if not services:
        head.append("no telemetry in range: widen start (e.g. start='24h'), or send OTLP to the receiver")
    return res, "\n".join(head + [_line(s) for s in kept] + notes)


def _red_from_prometheus(
    ctx: ToolContext, by: dict[str, ServiceInfo], listed: list[BackendServices], start_ns: int, end_ns: int
) -> list[str]:
    """RED figures for services without server spans in the store, from the standard HTTP server histograms of
    each Prometheus backend that knows them (rate, 5xx share, p50/p95/p99); the first backend that has them
    wins. Returns notes for backends that failed."""
    from obsmcp.sources.prometheus import PrometheusSource

    notes: list[str] = []
    answered = {b.backend for b in listed if b.error is None}
    for name in answered:
        source = ctx.sources.get(name)
        if not isinstance(source, PrometheusSource):
            continue
        wanted = {info.backends[name]: info for info in by.values() if info.requests == 0 and name in info.backends}
        if not wanted:
            continue
        try:
            figures = ctx.sources.call(source.red(start_ns, end_ns), ctx.sources.timeout_for(source))
        except Exception as e:  # a failing backend must not take the store's answer down: said in the notes
            notes.append(f"{name}: no RED figures ({str(e).splitlines()[0][:200]})")
            continue
        seconds = max(1e-9, (end_ns - start_ns) / 1e9)
        for red in figures:
            info = wanted.get(red.service)
            if info is None or info.red_from is not None:
                continue
            info.request_rate_per_s = round(red.rate_per_s, 3)
            info.requests = round(red.rate_per_s * seconds)
            info.error_rate = round(red.error_rate or 0.0, 4)
            info.p50_ms, info.p95_ms, info.p99_ms = red.p50_ms, red.p95_ms, red.p99_ms
            info.red_from = f"{name} ({red.metric})"
    return notes


def _group(by: dict[str, ServiceInfo], listed: BackendServices) -> None:
    """Put one backend's names under the canonical services they match (each name under at most one: two
    services claiming it keep it only for the one whose name it is, ignoring case); the rest become rows."""
    claims: dict[str, list[str]] = {}
    for canonical in sorted(by):
        name = match_service(canonical, listed.names)
        if name is not None:
            claims.setdefault(name, []).append(canonical)
    for name, claimants in claims.items():
        owners = claimants if len(claimants) == 1 else [c for c in claimants if c.lower() == name.lower()]
        if len(owners) == 1:
            by[owners[0]].backends[listed.backend] = name
    placed = {n for info in by.values() for b, n in info.backends.items() if b == listed.backend}
    for name in listed.names:
        if name not in placed:
            by[name] = by.get(name) or ServiceInfo(service=name, signals=[])
            by[name].backends[listed.backend] = name


def _resolve_everywhere(
    service: str, store_names: list[str], listed: list[BackendServices]
) -> tuple[dict[str, str], list[str]]:
    """The one resolver, run over the store's services and each backend's: {where: name}, and a note for
    each place that does not know the service. None at all is the caller's error (it lists what exists)."""
    resolved: dict[str, str] = {}
    misses: list[str] = []
    places = [(STORE, store_names)] + [(b.backend, b.names) for b in listed if b.error is None]
    for where, names in places:
        try:
            resolved[where] = resolve_service(service, names)
        except LookupError as e:  # unknown or ambiguous in this place: said in the notes, others still answer
            misses.append(f"{where}: {e}")
    if not resolved:
        raise ServiceNotFoundError(f"no service matches {service!r} in the store or any backend: " + "; ".join(misses))
    return resolved, misses


def _matches(info: ServiceInfo, resolved: dict[str, str]) -> bool:
    if resolved.get(STORE) == info.service and info.signals:
        return True
    return any(info.backends.get(where) == name for where, name in resolved.items() if where != STORE)


def _ms(v: float | None) -> str:
    return "-" if v is None else format_duration(v * 1e6)


def _line(s: ServiceInfo) -> str:
    red = (
        f"{s.requests} req ({s.request_rate_per_s:g}/s) {s.error_rate * 100:.2f}% err "
        f"{_ms(s.p50_ms)}/{_ms(s.p95_ms)}/{_ms(s.p99_ms)}"
        if s.requests
        else "no server spans"
    )
    if s.red_from:
        red += f" from {s.red_from}"
    if not s.signals:
        red = f"{red}, not in obsmcp's store" if s.red_from else "not in obsmcp's store"
    versions = ",".join(s.versions) or "-"
    line = (
        f"{s.service}: {red} | {s.error_logs} error logs | {'+'.join(s.signals) or '-'} | v {versions} | "
        f"{s.last_seen or '-'}"
    )
    if s.backends:
        line += " | " + ", ".join(f"{b}: {n}" for b, n in s.backends.items())
    return line
