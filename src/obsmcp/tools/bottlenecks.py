"""find_bottlenecks: where slow requests spend their time, compared with a baseline window.

Pipeline, per window (a few queries; ~0.3 s for an hour of 5M spans on two cores):
1. the requests (entry_filters: a service's server spans, or the system's root server spans) and their
   exact p90;
2. a deterministic sample of <= 200 requests at or above the p90: the lowest trace ids (trace ids are
   random, so this is uniform and repeats exactly for the same data). Over long, busy windows they are
   drawn from evenly spaced time slices holding ~4x the sample, so that step 3 reads a few percent of
   the window instead of all of it;
3. the sample's spans, light columns only, each trace within its entry span's time range. Attribute maps
   are the heaviest column (reading them for an hour of spans costs seconds), so they are read afterwards
   by row id for a few example spans: call targets ("GET" -> redis) and SQL statements;
4. pure analysis (analysis/bottlenecks.py); then the same for the baseline, and the comparison.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from obsmcp.analysis.bottlenecks import (
    BottleneckAnalysis,
    Key,
    SlowRequest,
    analyse,
    compare,
    is_generic_call,
    statement_shape,
    subtree,
)
from obsmcp.analysis.critical_path import build_tree
from obsmcp.analysis.service_map import call_target
from obsmcp.model import Span
from obsmcp.result import UNTRUSTED_NOTE, Fence, ListResult, estimate_tokens, redactor_for, scrub
from obsmcp.store.schema import attributes_dict
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_duration, parse_duration, resolve_range
from obsmcp.tools.context import ToolContext, ToolInputError

SAMPLE_REQUESTS = 200
# Spans of a request may start a little outside its entry span (clock skew between hosts).
SKEW_NS = 1_000_000_000
ENTRY_KINDS = "\"SpanKind\" IN ('Server', 'Consumer')"
ROOT = "\"ParentSpanId\" = ''"
TARGET_EXAMPLES = 3
# Time-stratified sampling over long windows: slices spaced at most this far apart (so an episode of a few
# minutes is never missed), together holding ~SLICE_OVERSAMPLE x the sample size of slow requests.
SLICE_SPACING_NS = 300 * 1_000_000_000
MAX_SLICES = 12
SLICE_OVERSAMPLE = 4
# The stretch at the end of the range probed for the services whose server spans start traces.
PROBE_NS = 60 * 1_000_000_000
MAX_CONTRIBUTORS = 12
MAX_FINDINGS = 5


# -- shared with service_map ---------------------------------------------------------------------------


def resolve_baseline(baseline: str | None, tr: TimeRange, *, default_on: bool) -> TimeRange | None:
    """The comparison window: "1h" (that long, just before the range), "START/END", "none", or the default:
    the range's own length just before it (when default_on)."""
    text = (baseline or "").strip()
    if not text:
        return TimeRange(tr.start_ns - tr.duration_ns, tr.start_ns) if default_on else None
    if text.lower() in ("none", "off", "no", "false"):
        return None
    if "/" in text:
        lo, _, hi = text.partition("/")
        return resolve_range(lo.strip(), hi.strip())
    try:
        length = parse_duration(text)
    except ValueError:
        raise ToolInputError(
            f"baseline={baseline!r} is not a window: give a length before start (e.g. '1h'), "
            "'START/END' (ISO-8601 or relative, e.g. 'now-3h/now-2h'), or 'none'"
        ) from None
    return TimeRange(tr.start_ns - length, tr.start_ns)


def fetch_attributes(ctx: ToolContext, rowids: list[int]) -> dict[int, tuple[str, dict[str, str]]]:
    """rowid -> (span id, attributes) for a few spans. A point lookup by row id reads only the blocks that
    hold them (~10 ms for 20 rows at 10M spans), where filtering by trace or span id would scan the window."""
    if not rowids:
        return {}
    _, rows = ctx.db.query(ctx.dialect.rows_by_id('"SpanId", "SpanAttributes"', rowids))
    return {int(r): (str(sid), attributes_dict(attrs)) for r, sid, attrs in rows}


# -- selection and loading -----------------------------------------------------------------------------


@dataclass
class Selection:
    """The slow requests of one window."""

    range: TimeRange
    entry: str  # which spans count as requests, in words
    requests: int = 0
    p90_ns: float | None = None
    slow: int = 0
    sampled: list[tuple[str, str, int, int]] = field(default_factory=list)  # trace, span, start ns, duration
    slices: list[tuple[int, int]] = field(default_factory=list)  # time ranges the sample was drawn from
    slow_estimated: bool = False


def _slices(tr: TimeRange, slow: int, limit: int) -> list[tuple[int, int]]:
    """Evenly spaced time slices expected to hold ~SLICE_OVERSAMPLE x limit slow requests, or the whole range
    when it holds few. The sample then reads a few percent of the window's spans instead of all of them."""
    want = SLICE_OVERSAMPLE * limit
    if slow <= 2 * want:
        return [(tr.start_ns, tr.end_ns)]
    k = int(max(1, min(MAX_SLICES, tr.duration_ns // SLICE_SPACING_NS)))
    step = tr.duration_ns // k
    width = max(1, int(tr.duration_ns * (want / slow) / k))
    return [
        (tr.start_ns + i * step + (step - width) // 2, tr.start_ns + i * step + (step + width) // 2) for i in range(k)
    ]


@dataclass(frozen=True)
class EntryFilter:
    """Which spans count as requests: a SQL condition, its parameters, and the words for it."""

    clause: str
    params: tuple[str, ...]
    description: str


def entry_filters(ctx: ToolContext, service: str | None, tr: TimeRange) -> list[EntryFilter]:
    """Candidate definitions of "a request", best first; the first that matches anything is used.

    A service's requests are its server/consumer spans (its roots when it has none). The system's requests
    are root spans. Roots are found by an empty ParentSpanId, a high-cardinality column that costs ~5x
    more to filter an hour on than SpanKind and ServiceName; so the last minute of the range is probed for
    the services whose server spans start traces, and only those seen also as callees are checked for roots.
    """
    if service:
        svc = (service,)
        return [
            EntryFilter(f'{ENTRY_KINDS} AND "ServiceName" = ?', svc, f"{service} server spans"),
            EntryFilter(f'{ROOT} AND "ServiceName" = ?', svc, f"{service} root spans"),
        ]
    probe = Where(ctx.dialect).time("Timestamp", max(tr.start_ns, tr.end_ns - PROBE_NS), tr.end_ns).add(ENTRY_KINDS)
    _, rows = ctx.db.query(
        f'SELECT "ServiceName", count(*) FILTER (WHERE {ROOT}), count(*) FROM otel_traces WHERE {probe.sql()} '
        "GROUP BY 1 ORDER BY 1",
        probe.params,
    )
    only_roots = tuple(str(svc) for svc, roots, n in rows if roots and roots == n)
    also_callees = tuple(str(svc) for svc, roots, n in rows if roots and roots < n)
    out = []
    if only_roots or also_callees:
        parts = []
        if only_roots:
            parts.append(f'"ServiceName" IN ({", ".join("?" for _ in only_roots)})')
        if also_callees:
            parts.append(f'("ServiceName" IN ({", ".join("?" for _ in also_callees)}) AND {ROOT})')
        names = ", ".join(only_roots + also_callees)
        out.append(
            EntryFilter(
                f"{ENTRY_KINDS} AND ({' OR '.join(parts)})",
                only_roots + also_callees,
                f"entry requests (root server spans of {names})",
            )
        )
    out.append(EntryFilter(f"{ENTRY_KINDS} AND {ROOT}", (), "entry requests (root server spans)"))
    out.append(EntryFilter(ROOT, (), "entry requests (root spans)"))
    return out


def select_slow(
    ctx: ToolContext,
    entries: list[EntryFilter],
    operation: str | None,
    tr: TimeRange,
    limit: int = SAMPLE_REQUESTS,
) -> Selection:
    d = ctx.dialect
    where = Where(d)
    entry = entries[0].description
    count, p90 = 0, None
    for ef in entries:
        where = Where(d).add(ef.clause, *ef.params)
        if operation:
            where.contains("SpanName", operation)
        full = where.copy().time("Timestamp", tr.start_ns, tr.end_ns)
        _, rows = ctx.db.query(
            f"SELECT count(*), {d.quantile(col('Duration'), 0.9)} FROM otel_traces WHERE {full.sql()}", full.params
        )
        count = int(rows[0][0]) if rows else 0
        entry = ef.description + (f" matching {operation!r}" if operation else "")
        if count:
            p90 = float(rows[0][1])
            break
    sel = Selection(tr, entry, count, p90)
    if not count or p90 is None:
        return sel
    # "At or above" the p90, so a window of identical durations still yields requests to look at.
    where.add('"Duration" >= ?', p90)
    # ~10% of the requests are at or above the p90 (exactly, for distinct durations).
    estimate = math.ceil(count * 0.1)
    sel.slices = _slices(tr, estimate, limit)
    rows = _sample(ctx, where, sel.slices, limit)
    if len(sel.slices) > 1 and len(rows) < limit // 2:
        # Traffic bunched between the slices (a burst, a gap): sample the whole range after all.
        sel.slices = [(tr.start_ns, tr.end_ns)]
        rows = _sample(ctx, where, sel.slices, limit)
    sel.sampled = [(str(t), str(s), int(t0), int(dur)) for t, s, t0, dur, _ in rows]
    if len(sel.slices) == 1:
        sel.slow = int(rows[0][4]) if rows else 0
    else:
        # Counting exactly would scan the window once more for a figure the p90 already implies.
        sel.slow, sel.slow_estimated = estimate, True
    return sel


def _sample(ctx: ToolContext, where: Where, slices: list[tuple[int, int]], limit: int) -> list[tuple[Any, ...]]:
    """(trace id, span id, start ns, duration, matches) of the first `limit` matches by trace id."""
    d = ctx.dialect
    parts, params = [], []
    for lo, hi in slices:
        w = where.copy().time("Timestamp", lo, hi)
        parts.append(
            f'SELECT "TraceId" AS tid, "SpanId" AS sid, {d.epoch_ns(col("Timestamp"))} AS t0, "Duration" AS dur '
            f"FROM otel_traces WHERE {w.sql()}"
        )
        params.extend(w.params)
    # Trace ids are random: the lowest ones are a uniform sample that repeats exactly for the same data.
    _, rows = ctx.db.query(
        f"SELECT tid, sid, t0, dur, count(*) OVER () FROM ({' UNION ALL '.join(parts)}) ORDER BY tid, sid LIMIT ?",
        [*params, limit],
    )
    return rows


@dataclass
class Loaded:
    requests: list[SlowRequest]
    rowid: dict[tuple[str, str], int]  # (trace id, span id) -> rowid


def load_requests(ctx: ToolContext, sel: Selection) -> Loaded:
    """The sampled requests' spans (light columns), one tree per trace. Each time slice is read on its own,
    so the engine skips the blocks between slices."""
    if not sel.sampled:
        return Loaded([], {})
    d = ctx.dialect
    by_slice: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for tid, _, t0, dur in sel.sampled:
        i = next((j for j, (lo, hi) in enumerate(sel.slices) if lo <= t0 < hi), 0)
        lo, hi = by_slice[i].get(tid, (t0, t0 + dur))
        by_slice[i][tid] = (min(lo, t0), max(hi, t0 + dur))
    ts = d.epoch_ns('t."Timestamp"')
    p = d.ts_param()
    parts, params = [], []
    for bounds in by_slice.values():
        tids = sorted(bounds)
        los = [bounds[t][0] - SKEW_NS for t in tids]
        his = [bounds[t][1] + SKEW_NS for t in tids]
        parts.append(
            f'SELECT t."TraceId", t."SpanId", t."ParentSpanId", t."ServiceName", t."SpanName", t."SpanKind", {ts}, '
            f't."Duration", t."StatusCode", {d.row_id("t")} FROM otel_traces t '
            f"JOIN {d.values_relation([('tid', 'VARCHAR'), ('lo', 'BIGINT'), ('hi', 'BIGINT')])} s "
            f'ON t."TraceId" = s.tid WHERE {ts} >= s.lo AND {ts} < s.hi '
            f'AND t."Timestamp" >= {p} AND t."Timestamp" < {p}'
        )
        params.extend([tids, los, his, min(los), max(his)])
    _, rows = ctx.db.query(" UNION ALL ".join(parts), params)
    spans: dict[str, dict[str, Span]] = defaultdict(dict)
    rowid: dict[tuple[str, str], int] = {}
    for tid, sid, pid, svc, name, kind, t0, dur, status, rid in rows:
        # A trace whose requests fell in two slices is read twice: keep one copy of each span.
        spans[str(tid)][str(sid)] = Span(
            str(tid), str(sid), str(pid or ""), str(svc), str(name), str(kind), int(t0), int(dur), str(status)
        )
        rowid[(str(tid), str(sid))] = int(rid)
    trees = {tid: build_tree(list(s.values())) for tid, s in spans.items()}
    requests = [
        SlowRequest(trees[tid], sid) for tid, sid, _, _ in sel.sampled if tid in trees and sid in trees[tid].spans
    ]
    return Loaded(requests, rowid)


def call_details(ctx: ToolContext, loaded: Loaded) -> tuple[dict[Key, str], dict[Key, str]]:
    """(targets, statements) per (service, span name) of calls with no span behind them, from the
    attributes of a few example spans: targets name generic calls ("GET" -> redis), statements show N+1s."""
    examples: dict[Key, list[int]] = defaultdict(list)
    for req in loaded.requests:
        tree = req.tree
        for sid in subtree(tree, req.entry_id):
            span = tree.spans[sid]
            if span.kind not in ("Client", "Producer") or tree.children.get(sid):
                continue
            want = TARGET_EXAMPLES if is_generic_call(span) else 1
            key = (span.service, span.name)
            rid = loaded.rowid.get((span.trace_id, sid))
            if rid is not None and len(examples[key]) < want:
                examples[key].append(rid)
    fetched = fetch_attributes(ctx, [r for rids in examples.values() for r in rids])
    targets: dict[Key, str] = {}
    statements: dict[Key, str] = {}
    for key, rids in examples.items():
        found = [fetched[r][1] for r in rids if r in fetched]
        names = sorted({call_target(a)[0] for a in found if call_target(a)[0] != "unknown"})
        if names:
            # Several targets behind one generic name: list them, the label must not claim just one.
            targets[key] = "|".join(names[:3])
        stmt = next((a.get("db.query.text") or a.get("db.statement") for a in found), None)
        if stmt:
            statements[key] = statement_shape(stmt)
    return targets, statements


# -- the analysis, for find_bottlenecks and investigate --------------------------------------------------


@dataclass
class BottleneckReport:
    range: TimeRange
    service: str | None
    operation: str | None
    current: Selection
    analysis: BottleneckAnalysis
    baseline: Selection | None = None
    baseline_analysis: BottleneckAnalysis | None = None
    notes: list[str] = field(default_factory=list)


def _analyse_window(
    ctx: ToolContext, entries: list[EntryFilter], operation: str | None, tr: TimeRange
) -> tuple[Selection, BottleneckAnalysis]:
    sel = select_slow(ctx, entries, operation, tr)
    loaded = load_requests(ctx, sel)
    targets, statements = call_details(ctx, loaded)
    result = analyse(loaded.requests, targets)
    for f in result.n_plus_one:
        f.statement = statements.get((f.service, f.operation.split(" -> ")[0]))
    return sel, result


def compute_bottlenecks(
    ctx: ToolContext,
    service: str | None = None,
    operation: str | None = None,
    start: str | None = None,
    end: str | None = None,
    baseline: str | None = None,
) -> BottleneckReport:
    """The plain analysis behind find_bottlenecks (investigate reuses it): ranked critical-path
    contributors of slow requests with their change against the baseline window, N+1 and serial calls."""
    tr = resolve_range(start, end)
    svc = ctx.resolve(service)
    op = operation.strip() if operation and operation.strip() else None
    base_tr = resolve_baseline(baseline, tr, default_on=True)
    # One definition of "request" for both windows, so they compare like with like.
    entries = entry_filters(ctx, svc, tr)
    sel, result = _analyse_window(ctx, entries, op, tr)
    report = BottleneckReport(tr, svc, op, sel, result)
    if len(sel.sampled) < sel.slow:
        where = (
            f" within {len(sel.slices)} evenly spaced time slices"
            f" ({sum(hi - lo for lo, hi in sel.slices) / tr.duration_ns:.1%} of the range)"
            if len(sel.slices) > 1
            else ""
        )
        report.notes.append(
            f"analysed {len(sel.sampled)} of {'~' if sel.slow_estimated else ''}{sel.slow:,} slow requests: "
            f"those with the lowest trace ids{where} "
            "(a uniform, repeatable sample); shares and ms per request are sample estimates"
        )
    if base_tr is not None and sel.requests:
        used = next((e for e in entries if sel.entry.startswith(e.description)), entries[0])
        bsel, bres = _analyse_window(ctx, [used], op, base_tr)
        report.baseline, report.baseline_analysis = bsel, bres
        compare(result, bres)
        if not bsel.requests:
            report.notes.append("the baseline window has no such requests: nothing to compare with")
    return report


# -- the tool --------------------------------------------------------------------------------------------


class ContributorOut(BaseModel):
    service: str
    operation: str
    share: float = Field(description="share of the sampled slow requests' critical-path time (0-1)")
    ms_per_request: float = Field(description="critical-path ms per slow request")
    requests: int = Field(description="sampled slow requests whose critical path it is on")
    baseline_ms_per_request: float | None = None
    change_pct: float | None = Field(None, description="change of ms per slow request against the baseline")
    new: bool = Field(False, description="on the critical path now, absent from the baseline sample")
    example_trace_id: str | None = Field(None, description="a sampled trace where it weighs most (get_trace)")


class NPlusOneOut(BaseModel):
    parent_service: str
    parent_operation: str
    service: str
    operation: str
    statement: str | None = Field(None, description="untrusted: db.statement shape")
    requests: int = Field(description="sampled slow requests where it happens")
    mean_calls: float
    max_calls: int
    ms_per_occurrence: float
    share_of_parent: float
    baseline_mean_calls: float | None = None


class SerialCallsOut(BaseModel):
    parent_service: str
    parent_operation: str
    calls: list[str]
    requests: int
    mean_total_ms: float
    mean_saving_ms: float = Field(description="time saved per occurrence if the calls ran concurrently")
    share_of_parent: float


class FindBottlenecksResult(ListResult):
    range: str
    entry: str = Field(description="which spans count as requests")
    requests: int = Field(description="entry requests in the range")
    p90_ms: float | None
    slow_requests: int = Field(description="requests at or above the p90")
    slow_estimated: bool = Field(False, description="slow_requests is ~10% of requests, not counted")
    sampled: int = Field(description="slow requests analysed")
    critical_path_ms: float = Field(description="mean critical path (latency) of the analysed slow requests")
    baseline_range: str | None = None
    baseline_p90_ms: float | None = None
    baseline_sampled: int = 0
    baseline_critical_path_ms: float | None = None
    contributors: list[ContributorOut] = Field(default_factory=list)
    n_plus_one: list[NPlusOneOut] = Field(default_factory=list)
    serial_calls: list[SerialCallsOut] = Field(default_factory=list)


def find_bottlenecks(
    ctx: ToolContext,
    service: str | None = None,
    operation: str | None = None,
    start: str | None = None,
    end: str | None = None,
    baseline: str | None = None,
    max_tokens: int | None = None,
) -> tuple[FindBottlenecksResult, str]:
    rep = compute_bottlenecks(ctx, service, operation, start, end, baseline)
    sel, res = rep.current, rep.analysis
    redact = redactor_for(ctx.settings)
    contributors = [
        ContributorOut(
            service=c.service,
            operation=c.operation,
            share=round(c.share, 4),
            ms_per_request=round(c.ms_per_request, 3),
            requests=c.requests,
            baseline_ms_per_request=None if c.baseline_ms_per_request is None else round(c.baseline_ms_per_request, 3),
            change_pct=None if c.change_pct is None else round(c.change_pct, 1),
            new=c.new,
            example_trace_id=c.example_trace_id or None,
        )
        for c in res.contributors
        if c.share >= 0.001
    ]
    n1 = [
        NPlusOneOut(
            parent_service=f.parent_service,
            parent_operation=f.parent_operation,
            service=f.service,
            operation=f.operation,
            statement=scrub(f.statement, redact_secrets=redact, max_chars=200) if f.statement else None,
            requests=f.requests,
            mean_calls=round(f.mean_calls, 1),
            max_calls=f.max_calls,
            ms_per_occurrence=round(f.ms_per_occurrence, 3),
            share_of_parent=round(f.share_of_parent, 3),
            baseline_mean_calls=None if f.baseline_mean_calls is None else round(f.baseline_mean_calls, 1),
        )
        for f in res.n_plus_one
    ]
    serial = [
        SerialCallsOut(
            parent_service=f.parent_service,
            parent_operation=f.parent_operation,
            calls=list(f.calls),
            requests=f.requests,
            mean_total_ms=round(f.mean_total_ms, 3),
            mean_saving_ms=round(f.mean_saving_ms, 3),
            share_of_parent=round(f.share_of_parent, 3),
        )
        for f in res.serial
    ]
    base, bres = rep.baseline, rep.baseline_analysis
    out = FindBottlenecksResult(
        range=rep.range.describe(),
        entry=sel.entry,
        requests=sel.requests,
        p90_ms=None if sel.p90_ns is None else round(sel.p90_ns / 1e6, 3),
        slow_requests=sel.slow,
        slow_estimated=sel.slow_estimated,
        sampled=res.requests,
        critical_path_ms=round(res.ms_per_request, 3),
        baseline_range=base.range.describe() if base else None,
        baseline_p90_ms=None if not base or base.p90_ns is None else round(base.p90_ns / 1e6, 3),
        baseline_sampled=bres.requests if bres else 0,
        baseline_critical_path_ms=round(bres.ms_per_request, 3) if bres and bres.requests else None,
        total=len(contributors),
        notes=list(rep.notes),
    )
    budget = ctx.budget(max_tokens)
    caps = [min(MAX_CONTRIBUTORS, len(contributors)), min(MAX_FINDINGS, len(n1)), min(MAX_FINDINGS, len(serial))]
    with_statements = True
    base_notes = list(out.notes)
    # Degrade step by step until the text (with the note saying what was cut) fits: fewer contributors
    # (down to 3), fewer findings, no statements, then fewer contributors still.
    while True:
        out.contributors, out.n_plus_one, out.serial_calls = contributors[: caps[0]], n1[: caps[1]], serial[: caps[2]]
        cut = []
        if caps[0] < len(contributors):
            cut.append(f"{len(contributors) - caps[0]} smaller contributors")
        if caps[1] < len(n1):
            cut.append(f"{len(n1) - caps[1]} N+1 findings")
        if caps[2] < len(serial):
            cut.append(f"{len(serial) - caps[2]} serial-call findings")
        if not with_statements:
            cut.append("SQL statements")
        out.notes = base_notes + (
            [
                f"not shown: {', '.join(cut)} (to stay within ~{budget} tokens; raise max_tokens, "
                "or narrow with service/operation)"
            ]
            if cut
            else []
        )
        out.truncated = bool(cut)
        text = _render(out, with_statements)
        if estimate_tokens(text) <= budget:
            break
        if caps[0] > 3:
            caps[0] -= 1
        elif caps[2] > 0:
            caps[2] -= 1
        elif caps[1] > 1:
            caps[1] -= 1
        elif with_statements and any(f.statement for f in out.n_plus_one):
            with_statements = False
        elif caps[0] > 1:
            caps[0] -= 1
        elif caps[1] > 0:
            caps[1] -= 1
        else:
            break
    if not with_statements:
        for f in out.n_plus_one:
            f.statement = None
    out.returned = len(out.contributors)
    return out, text


def _ms(v: float | None) -> str:
    return "-" if v is None else format_duration(v * 1e6)


def _change(c: ContributorOut) -> str:
    if c.new:
        return " | new (absent from the baseline)"
    if c.change_pct is None or c.baseline_ms_per_request is None:
        return ""
    sign = "+" if c.change_pct >= 0 else ""
    return f" | baseline {_ms(c.baseline_ms_per_request)} -> {sign}{c.change_pct:,.0f}%"


def _render(res: FindBottlenecksResult, with_statements: bool) -> str:
    head = [f"find_bottlenecks: {res.entry} in {res.range}"]
    if not res.requests:
        head.append(
            "no such requests in range: widen start, check the service/operation with list_services, "
            "or omit them for the whole system"
        )
        return "\n".join(head + res.notes)
    about = "~" if res.slow_estimated else ""
    head.append(
        f"{res.requests:,} requests, p90 {_ms(res.p90_ms)}; {about}{res.slow_requests:,} at or above it, "
        f"{res.sampled} analysed: critical path {_ms(res.critical_path_ms)} per slow request"
    )
    if res.baseline_range:
        head.append(
            f"baseline {res.baseline_range}: p90 {_ms(res.baseline_p90_ms)}, {res.baseline_sampled} slow requests "
            f"analysed, critical path {_ms(res.baseline_critical_path_ms)} per slow request"
        )
    fence = Fence()
    lines = [
        "critical path by service and operation: share of slow-request time | ms per slow request | "
        f"on how many of the {res.sampled} | vs baseline"
    ]
    for i, c in enumerate(res.contributors, 1):
        lines.append(
            f"{i:>2}. {c.service} {c.operation}: {c.share * 100:.1f}% | {_ms(c.ms_per_request)} | "
            f"{c.requests}/{res.sampled}{_change(c)}"
        )
    if res.n_plus_one:
        lines.append("N+1: one parent making the same call again and again, one after another:")
        for f in res.n_plus_one:
            base = f"; baseline {f.baseline_mean_calls:g}x" if f.baseline_mean_calls is not None else ""
            lines.append(
                f"- {f.parent_service} {f.parent_operation} -> {f.mean_calls:g}x (max {f.max_calls}) {f.service} "
                f"{f.operation}: {_ms(f.ms_per_occurrence)} ({f.share_of_parent * 100:.0f}% of the parent) in "
                f"{f.requests}/{res.sampled} slow requests{base}"
            )
            if with_statements and f.statement:
                lines.append(f"  statement: {f.statement}")
    if res.serial_calls:
        lines.append("serial calls to different downstreams (concurrently they would take only the longest):")
        for s in res.serial_calls:
            lines.append(
                f"- {s.parent_service} {s.parent_operation}: {', '.join(s.calls)} one after another in "
                f"{s.requests}/{res.sampled}: {_ms(s.mean_total_ms)} ({s.share_of_parent * 100:.0f}% of the "
                f"parent), ~{_ms(s.mean_saving_ms)} to save if independent"
            )
    tail = list(res.notes)
    top = res.contributors[0] if res.contributors else None
    if top and top.example_trace_id:
        tail.append(f"next: get_trace({top.example_trace_id!r}) shows a slow request where {top.service} weighs most")
    tail.append(UNTRUSTED_NOTE)
    return "\n".join([*head, fence.wrap(lines), *tail])
