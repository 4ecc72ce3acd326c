"""service_map: who calls whom, how often, how often it fails and how long it takes (from traces).

One query joins client/producer spans to their server/consumer children (a join restricted to the span
kinds that can form an edge, within the window). Over large windows it runs on the traces whose id ends
in "0" (or "00", ...): trace ids are random, so that is a uniform sample of whole traces, and counts are
scaled up and labelled as estimates. Calls without a child span (databases, caches, third parties) are
named from the attributes of a few example spans per (caller, span name), fetched by row id, because
reading attribute maps for every span of the window would cost seconds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from obsmcp.analysis.service_map import (
    BUCKETS_PER_OCTAVE,
    Edge,
    EdgeAccumulator,
    build_edges,
    call_target,
    compare_edges,
    touching,
)
from obsmcp.result import UNTRUSTED_NOTE, Fence, ListResult, estimate_tokens, within_budget
from obsmcp.store.where import Where
from obsmcp.timerange import TimeRange, format_duration, resolve_range
from obsmcp.tools.bottlenecks import fetch_attributes, resolve_baseline
from obsmcp.tools.context import ToolContext

# Client spans joined exactly up to this many; above it, a 1/16^k sample of traces.
EXACT_MAX_CALLS = 300_000
# A callee's server span starts after its caller's client span, possibly after the window ends.
CALLEE_SLACK_NS = 60 * 1_000_000_000
LEAF_EXAMPLES = 5


@dataclass
class ServiceMapReport:
    range: TimeRange
    service: str | None
    edges: list[Edge]  # with service: only edges touching it
    sample_every: int  # 1: every trace; 16: traces whose id ends in "0"; ...
    calls_in_window: int  # client/producer spans in the window
    baseline_range: TimeRange | None = None
    notes: list[str] = field(default_factory=list)


def _suffix(every: int) -> str:
    """Trace-id suffix selecting 1/every of traces (every is a power of 16)."""
    zeros = 0
    while every > 1:
        every //= 16
        zeros += 1
    return "0" * zeros


def _window_edges(ctx: ToolContext, tr: TimeRange) -> tuple[list[Edge], int, int, list[str]]:
    """(edges, sample_every, client spans in window, notes) for one window."""
    d = ctx.dialect
    calls_where = Where(d).time("Timestamp", tr.start_ns, tr.end_ns).add("\"SpanKind\" IN ('Client', 'Producer')")
    _, rows = ctx.db.query(f"SELECT count(*) FROM otel_traces WHERE {calls_where.sql()}", calls_where.params)
    calls = int(rows[0][0]) if rows else 0
    every = 1
    while calls / every > EXACT_MAX_CALLS:
        every *= 16
    suffix = _suffix(every)
    callee_where = (
        Where(d)
        .time("Timestamp", tr.start_ns, tr.end_ns + CALLEE_SLACK_NS)
        .add("\"SpanKind\" IN ('Server', 'Consumer')")
    )
    if suffix:
        calls_where.add('"TraceId" LIKE ?', "%" + suffix)
        callee_where.add('"TraceId" LIKE ?', "%" + suffix)
    bucket = f"CAST(floor(log2(greatest(c.dur, 1)) * {BUCKETS_PER_OCTAVE}) AS INTEGER)"
    # No ParentSpanId <> '' filter on the callee side: the join key already excludes roots, and that filter
    # costs more than it saves on a high-cardinality string column.
    _, rows = ctx.db.query(
        'WITH c AS (SELECT "TraceId" AS tid, "SpanId" AS sid, "ServiceName" AS svc, "SpanName" AS name, '
        f'"Duration" AS dur, "StatusCode" AS st, {d.row_id()} AS rid FROM otel_traces WHERE {calls_where.sql()}), '
        's AS (SELECT "TraceId" AS tid, "ParentSpanId" AS pid, "ServiceName" AS svc, "StatusCode" AS st '
        f"FROM otel_traces WHERE {callee_where.sql()}) "
        f"SELECT c.svc, s.svc, CASE WHEN s.svc IS NULL THEN c.name END, {bucket}, count(*), "
        "count(*) FILTER (WHERE c.st = 'Error' OR s.st = 'Error'), min(c.rid) "
        "FROM c LEFT JOIN s ON c.tid = s.tid AND c.sid = s.pid GROUP BY 1, 2, 3, 4",
        [*calls_where.params, *callee_where.params],
    )
    acc: dict[tuple[str, str], EdgeAccumulator] = {}
    leaves: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)  # -> (bucket, n, errors)
    examples: dict[tuple[str, str], list[int]] = defaultdict(list)
    for caller, callee, leaf, b, n, errs, rid in rows:
        if callee is not None:
            key = (str(caller), str(callee))
            acc.setdefault(key, EdgeAccumulator("service")).add(int(b), int(n) * every, int(errs) * every)
        else:
            lkey = (str(caller), str(leaf))
            leaves[lkey].append((int(b), int(n), int(errs)))
            examples[lkey].append(int(rid))
    notes: list[str] = []
    # Examples from different latency buckets, so a slow minority target is not missed.
    picked = {k: sorted(v)[:: max(1, len(v) // LEAF_EXAMPLES)][:LEAF_EXAMPLES] for k, v in examples.items()}
    fetched = fetch_attributes(ctx, [r for rids in picked.values() for r in rids])
    mixed = []
    for (caller, name), buckets in leaves.items():
        found = Counter(call_target(fetched[r][1], name) for r in picked[(caller, name)] if r in fetched)
        if not found:
            found = Counter({(name, "external"): 1})
        if len(found) > 1:
            mixed.append(f"{caller} {name!r}")
        total = sum(found.values())
        for (target, kind), k in found.items():
            a = acc.setdefault((caller, target), EdgeAccumulator(kind))
            for b, n, errs in buckets:
                a.add(b, n * every * k / total, errs * every * k / total, name)
    if mixed:
        notes.append(
            f"calls {', '.join(mixed[:3])} reach several targets: split between them by {LEAF_EXAMPLES} examples"
        )
    return build_edges(acc, tr.duration_ns / 1e9), every, calls, notes


def compute_service_map(
    ctx: ToolContext,
    service: str | None = None,
    start: str | None = None,
    end: str | None = None,
    baseline: str | None = None,
) -> ServiceMapReport:
    """The plain analysis behind service_map (investigate reuses it): edges with rate, error rate and p95,
    and, when `baseline` is given ("1h", "START/END"), the same figures from that window on each edge."""
    tr = resolve_range(start, end)
    svc = ctx.resolve(service)
    edges, every, calls, notes = _window_edges(ctx, tr)
    base_tr = resolve_baseline(baseline, tr, default_on=False)
    if base_tr is not None:
        before, _, _, _ = _window_edges(ctx, base_tr)
        compare_edges(edges, before)
    if svc:
        up, down = touching(edges, svc)
        edges = up + [e for e in down if e not in up]
    report = ServiceMapReport(tr, svc, edges, every, calls, base_tr, notes)
    if every > 1:
        report.notes.insert(
            0,
            f"{calls:,} calls in range: figures come from the 1/{every} of traces whose id ends in "
            f"{_suffix(every)!r}, scaled up (estimates)",
        )
    return report


# -- the tool --------------------------------------------------------------------------------------------


class EdgeOut(BaseModel):
    caller: str
    callee: str
    kind: str = Field(description="service | database | cache | queue | external")
    direction: str | None = Field(None, description="with a service: upstream (calls it) or downstream")
    rate_per_s: float
    calls: int = Field(description="calls in range (estimated when sampled)")
    error_rate: float = Field(description="share of calls failing on either side (0-1)")
    p95_ms: float | None = Field(description="caller-observed p95 latency (log-bucket estimate, ±2.2%)")
    operations: list[str] = Field(default_factory=list, description="span names of calls to non-services")
    baseline_rate_per_s: float | None = None
    baseline_error_rate: float | None = None
    baseline_p95_ms: float | None = None


class ServiceMapResult(ListResult):
    range: str
    service: str | None = None
    sampled: str | None = Field(None, description="trace sample the figures come from, when not all traces")
    baseline_range: str | None = None
    edges: list[EdgeOut] = Field(default_factory=list)


def service_map(
    ctx: ToolContext,
    service: str | None = None,
    start: str | None = None,
    end: str | None = None,
    baseline: str | None = None,
    max_tokens: int | None = None,
) -> tuple[ServiceMapResult, str]:
    rep = compute_service_map(ctx, service, start, end, baseline)
    outs = []
    for e in rep.edges:
        direction = None
        if rep.service:
            direction = "upstream" if e.callee == rep.service else "downstream"
        outs.append(
            EdgeOut(
                caller=e.caller,
                callee=e.callee,
                kind=e.kind,
                direction=direction,
                rate_per_s=round(e.rate_per_s, 3),
                calls=round(e.calls),
                error_rate=round(e.error_rate, 4),
                p95_ms=None if e.p95_ms is None else round(e.p95_ms, 2),
                operations=e.operations[:10],
                baseline_rate_per_s=None if e.baseline_rate_per_s is None else round(e.baseline_rate_per_s, 3),
                baseline_error_rate=None if e.baseline_error_rate is None else round(e.baseline_error_rate, 4),
                baseline_p95_ms=None if e.baseline_p95_ms is None else round(e.baseline_p95_ms, 2),
            )
        )
    budget = ctx.budget(max_tokens)
    res = ServiceMapResult(
        range=rep.range.describe(),
        service=rep.service,
        sampled=f"1/{rep.sample_every} of traces" if rep.sample_every > 1 else None,
        baseline_range=rep.baseline_range.describe() if rep.baseline_range else None,
        total=len(outs),
        notes=list(rep.notes),
    )
    # The fixed part (header, notes, the note a cut adds) first; then as many edges as fit, busiest first.
    cut_note = (
        f"{len(outs)} edges in range, the quieter ones not shown to stay within ~{budget} tokens; "
        "pass service= for one service's callers and callees"
    )
    fixed = 0
    if outs:
        probe = res.model_copy(update={"notes": [*res.notes, cut_note], "edges": outs[:1]}, deep=True)
        fixed = estimate_tokens(_render(probe)) - estimate_tokens(_line(outs[0]))
    kept = within_budget(outs, lambda e: estimate_tokens(_line(e)) + 1, budget, fixed)
    res.edges, res.returned, res.truncated = kept, len(kept), len(kept) < len(outs)
    if res.truncated:
        res.notes.append(cut_note)
    return res, _render(res)


def _line(e: EdgeOut) -> str:
    kind = "" if e.kind == "service" else f" [{e.kind}]"
    p95 = format_duration(e.p95_ms * 1e6) if e.p95_ms is not None else "-"
    line = f"{e.caller} -> {e.callee}{kind}: {e.rate_per_s:.3g}/s, {e.error_rate * 100:.2f}% err, p95 {p95}"
    if e.baseline_rate_per_s is not None:
        if e.baseline_error_rate is None:
            line += " (new: not in the baseline)"
        else:
            bp95 = format_duration(e.baseline_p95_ms * 1e6) if e.baseline_p95_ms is not None else "-"
            line += f" (before: {e.baseline_rate_per_s:.3g}/s, {e.baseline_error_rate * 100:.2f}% err, p95 {bp95})"
    if e.kind != "service" and e.operations:
        more = f" +{len(e.operations) - 3}" if len(e.operations) > 3 else ""
        line += f" ops: {', '.join(e.operations[:3])}{more}"
    return line


def _render(res: ServiceMapResult) -> str:
    who = f" around {res.service}" if res.service else ""
    head = [
        f"service_map{who}: {res.total} edges in {res.range}"
        + (f", from {res.sampled} (estimates)" if res.sampled else ""),
        "caller -> callee [kind]: calls/s, error % (either side), p95 as the caller sees it"
        + (f"; before = baseline {res.baseline_range}" if res.baseline_range else ""),
    ]
    if not res.edges:
        head.append("no calls between services in range: widen start, or check that services propagate trace context")
        return "\n".join(head + res.notes)
    fence = Fence()
    lines: list[str] = []
    if res.service:
        for direction, title in (("upstream", f"callers of {res.service}:"), ("downstream", f"{res.service} calls:")):
            group = [e for e in res.edges if e.direction == direction]
            if group:
                lines.append(title)
                lines.extend(_line(e) for e in group)
    else:
        lines.extend(_line(e) for e in res.edges)
    tail = [*res.notes, "next: find_bottlenecks(service) for where a slow caller spends its time", UNTRUSTED_NOTE]
    return "\n".join([*head, fence.wrap(lines), *tail])
