"""search_traces (one row per trace) and get_trace (a compact tree with the critical path)."""

from __future__ import annotations

import re
from collections import defaultdict

from pydantic import BaseModel, Field

from obsmcp.analysis.critical_path import build_tree, critical_path, self_times
from obsmcp.model import Span, SpanEvent
from obsmcp.redaction import Redactor
from obsmcp.result import (
    UNTRUSTED_NOTE,
    Fence,
    ListResult,
    encode_cursor,
    estimate_tokens,
    fingerprint,
    page_start,
    redactor_for,
    scrub,
    within_budget,
)
from obsmcp.sources.base import Source, TracePage, TraceQuery, TraceSource
from obsmcp.store.schema import attributes_dict
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_duration, format_ns
from obsmcp.tools.context import ToolContext, ToolInputError
from obsmcp.tools.remote import (
    answer_notes,
    encode_remote_cursor,
    next_page,
    remote_cursor_backend,
    remote_page_start,
    source_for,
)

MAX_LIMIT = 200
TS = '"Timestamp"'
LOOKUP_MIN = 'min("Start")'
LOOKUP_MAX = 'max("End")'


class TraceSummary(BaseModel):
    trace_id: str
    start: str
    root: str = Field(description="root service and operation")
    duration_ms: float
    spans: int
    errors: int
    services: list[str]


class SearchTracesResult(ListResult):
    range: str
    traces: list[TraceSummary] = Field(default_factory=list)


_STATUS = {"error": "Error", "ok": "Ok", "unset": "Unset"}


def search_traces(
    ctx: ToolContext,
    service: str | None = None,
    operation: str | None = None,
    min_duration_ms: float | None = None,
    max_duration_ms: float | None = None,
    status: str | None = None,
    attributes: dict[str, str] | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
    max_tokens: int | None = None,
    backend: str | None = None,
) -> tuple[SearchTracesResult, str]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ToolInputError(f"limit={limit} is out of range: use 1..{MAX_LIMIT}, and next_cursor for more")
    if status is not None and status.strip() and status.strip().lower() not in _STATUS:
        raise ToolInputError(f"status={status!r} is not a span status: use error, ok or unset")
    if min_duration_ms is not None and max_duration_ms is not None and min_duration_ms > max_duration_ms:
        raise ToolInputError("min_duration_ms is larger than max_duration_ms: swap them or drop one")
    source, routing = source_for(ctx, "traces", backend)
    if source is not None:
        return _remote_search_traces(
            ctx, source, routing, service, operation, min_duration_ms, max_duration_ms, status, attributes, start,
            end, limit, cursor, max_tokens,
        )  # fmt: skip
    if (came_from := remote_cursor_backend(cursor)) is not None:
        raise ToolInputError(f"the cursor came from backend {came_from}: pass backend={came_from!r} with it")
    svc = ctx.resolve(service)
    fp = fingerprint(
        "search_traces",
        svc,
        operation,
        min_duration_ms,
        max_duration_ms,
        status,
        attributes,
        start,
        end,
        limit,
    )
    offset, tr = page_start(cursor, fp, start, end)

    where = Where(ctx.dialect).time("Timestamp", tr.start_ns, tr.end_ns)
    if svc:
        where.add('"ServiceName" = ?', svc)
    if operation and operation.strip():
        where.contains("SpanName", operation.strip())
    if min_duration_ms is not None:
        where.add('"Duration" >= ?', int(min_duration_ms * 1e6))
    if max_duration_ms is not None:
        where.add('"Duration" <= ?', int(max_duration_ms * 1e6))
    if status and status.strip():
        where.add('"StatusCode" = ?', _STATUS[status.strip().lower()])
    for k, v in (attributes or {}).items():
        where.attribute(("SpanAttributes", "ResourceAttributes"), k, str(v))

    _, total_row = ctx.db.query(f'SELECT count(DISTINCT "TraceId") FROM otel_traces WHERE {where.sql()}', where.params)
    total = int(total_row[0][0]) if total_row else 0
    _, id_rows = ctx.db.query(
        f'SELECT "TraceId", max({TS}) AS t FROM otel_traces WHERE {where.sql()} '
        'GROUP BY "TraceId" ORDER BY t DESC, "TraceId" LIMIT ? OFFSET ?',
        [*where.params, limit, offset],
    )
    ids = [str(r[0]) for r in id_rows]
    redact = redactor_for(ctx.settings)
    summaries = [_scrubbed_summary(s, redact) for s in _summaries(ctx, ids, tr)]

    budget = ctx.budget(max_tokens)
    kept = within_budget(summaries, lambda s: estimate_tokens(_trace_line(s)) + 10, budget, 80)
    notes = []
    if len(kept) < len(summaries):
        notes.append(f"cut to {len(kept)} of {len(summaries)} traces to fit ~{budget} tokens; use next_cursor")
    next_offset = offset + len(kept)
    more = next_offset < total
    res = SearchTracesResult(
        range=tr.describe(),
        total=total,
        returned=len(kept),
        truncated=more,
        next_cursor=encode_cursor(next_offset, tr.start_ns, tr.end_ns, fp) if more else None,
        notes=notes,
        traces=kept,
    )
    head = f"search_traces: {total} matching traces in {res.range}; showing {len(kept)}, newest first."
    return res, _render_traces(res, head)


def _render_traces(res: SearchTracesResult, head: str) -> str:
    out = [head]
    if not res.traces:
        out.append("no traces match: widen the time range or loosen the filters")
    else:
        # Root operations and service names are observed text: fenced like every other tool's.
        out.append(Fence().wrap([_trace_line(s) for s in res.traces]))
    if res.next_cursor:
        out.append(f"more: pass cursor={res.next_cursor!r}")
    out += res.notes
    if res.traces:
        out += ["next: get_trace(trace_id) for the span tree and critical path", UNTRUSTED_NOTE]
    return "\n".join(out)


# -- remote trace sources (obsmcp.sources): the same answers, fetched from a backend ------------------------


def _remote_search_traces(
    ctx: ToolContext,
    source: Source,
    routing: list[str],
    service: str | None,
    operation: str | None,
    min_duration_ms: float | None,
    max_duration_ms: float | None,
    status: str | None,
    attributes: dict[str, str] | None,
    start: str | None,
    end: str | None,
    limit: int,
    cursor: str | None,
    max_tokens: int | None,
) -> tuple[SearchTracesResult, str]:
    if not isinstance(source, TraceSource):
        raise ToolInputError(f"backend {source.name!r} ({source.kind}) cannot search traces")
    fp = fingerprint(
        "search_traces", source.name, service, operation, min_duration_ms, max_duration_ms, status, attributes,
        start, end, limit,
    )  # fmt: skip
    here = remote_page_start(source.name, cursor, fp, start, end)
    tr = here.range
    q = TraceQuery(
        tr.start_ns,
        tr.end_ns,
        service=ctx.sources.resolve(source, service, tr.start_ns, tr.end_ns),
        operation=operation.strip() if operation and operation.strip() else None,
        min_duration_ms=min_duration_ms,
        max_duration_ms=max_duration_ms,
        status=status.strip().lower() if status and status.strip() else None,
        attributes={str(k): str(v) for k, v in (attributes or {}).items()},
        limit=limit,
        cursor=here.token,
    )
    page: TracePage = ctx.sources.call(source.search_traces(q), ctx.sources.timeout_for(source))
    redact = redactor_for(ctx.settings)
    summaries = [_scrubbed_summary(t, redact) for t in page.traces[here.skip :]]
    budget = ctx.budget(max_tokens)
    kept = within_budget(summaries, lambda s: estimate_tokens(_trace_line(s)) + 10, budget, 80)
    notes = answer_notes(ctx, routing, page)
    if len(kept) < len(summaries):
        notes.append(f"cut to {len(kept)} of {len(summaries)} traces to fit ~{budget} tokens; use next_cursor")
    after = next_page(here, len(kept), len(summaries), page.next_cursor)
    res = SearchTracesResult(
        range=tr.describe(),
        total=page.total,
        returned=len(kept),
        truncated=after is not None,
        next_cursor=encode_remote_cursor(source.name, after, fp) if after else None,
        notes=notes,
        traces=kept,
    )
    counted = f"{page.total} matching traces" if page.total is not None else "traces (the backend gave no total)"
    head = (
        f"search_traces: {counted} from backend {source.name} in {res.range}; "
        f"showing {here.offset + 1 if kept else 0}-{here.offset + len(kept)}."
    )
    return res, _render_traces(res, head)


def _scrubbed_summary(t: TraceSummary, redact: Redactor | None) -> TraceSummary:
    return TraceSummary(
        trace_id=scrub(t.trace_id, redact_secrets=redact, max_chars=64),
        start=t.start,
        root=scrub(t.root, redact_secrets=redact, max_chars=200),
        duration_ms=t.duration_ms,
        spans=t.spans,
        errors=t.errors,
        services=[scrub(s, redact_secrets=redact, max_chars=120) for s in t.services],
    )


def _summaries(ctx: ToolContext, ids: list[str], tr: TimeRange) -> list[TraceSummary]:
    if not ids:
        return []
    placeholders = ", ".join("?" for _ in ids)
    # Spans of a trace may start before the window; widen by an hour for the aggregate.
    widened = Where(ctx.dialect).time("Timestamp", tr.start_ns - 3600 * 10**9, tr.end_ns + 3600 * 10**9)
    widened.add(f'"TraceId" IN ({placeholders})', *ids)
    root = ctx.dialect.arg_min(
        '"ServiceName" || \' \' || "SpanName"', "CASE WHEN \"ParentSpanId\" = '' THEN 0 ELSE 1 END"
    )
    _, rows = ctx.db.query(
        f'SELECT "TraceId", {ctx.dialect.epoch_ns("min(" + TS + ")")}, '
        f'max({ctx.dialect.epoch_ns(TS)} + "Duration") - {ctx.dialect.epoch_ns("min(" + TS + ")")}, '
        "count(*), count(*) FILTER (WHERE \"StatusCode\" = 'Error'), "
        f"{ctx.dialect.list_distinct_agg(col('ServiceName'), 12)}, "
        f"{root}, "
        'max(CASE WHEN "ParentSpanId" = \'\' THEN "Duration" ELSE 0 END) '
        f'FROM otel_traces WHERE {widened.sql()} GROUP BY "TraceId"',
        widened.params,
    )
    by_id: dict[str, TraceSummary] = {}
    for tid, t0, span_ns, n, errs, services, root, root_dur in rows:
        dur = int(root_dur) if root_dur else int(span_ns)
        by_id[str(tid)] = TraceSummary(
            trace_id=str(tid),
            start=format_ns(int(t0)),
            root=str(root),
            duration_ms=round(dur / 1e6, 3),
            spans=int(n),
            errors=int(errs),
            services=[str(s) for s in services],
        )
    return [by_id[i] for i in ids if i in by_id]


def _trace_line(s: TraceSummary) -> str:
    err = f" {s.errors} errors" if s.errors else ""
    return (
        f"{s.trace_id} {s.start} {format_duration(s.duration_ms * 1e6):>7} {s.root} "
        f"[{s.spans} spans{err}; {', '.join(s.services)}]"
    )


# -- get_trace ---------------------------------------------------------------------------------------


class SpanNode(BaseModel):
    span_id: str
    parent_id: str | None
    depth: int
    service: str
    operation: str
    kind: str
    start_offset_ms: float
    duration_ms: float
    self_ms: float
    status: str
    critical: bool = Field(description="on the critical path")
    critical_ms: float = 0.0
    error: str | None = Field(None, description="untrusted: status message or exception")
    collapsed: str | None = Field(None, description="siblings or subtree folded into this line")


class GetTraceResult(BaseModel):
    trace_id: str
    start: str
    duration_ms: float
    span_count: int
    services: list[str]
    error_count: int
    shown: int
    truncated: bool
    spans: list[SpanNode]
    errors: list[dict[str, str]] = Field(default_factory=list, description="error spans with exception events")
    notes: list[str] = Field(default_factory=list)


# A remote backend's own trace ids: hex (Tempo, Jaeger, OTel ids in Datadog) or decimal (Datadog's 64-bit ids).
_REMOTE_TRACE_ID = re.compile(r"[0-9a-fA-F]{1,32}|[0-9]{1,39}")


def get_trace(
    ctx: ToolContext,
    trace_id: str,
    max_spans: int = 100,
    max_tokens: int | None = None,
    backend: str | None = None,
) -> tuple[GetTraceResult, str]:
    if not 1 <= max_spans <= 2000:
        raise ToolInputError("max_spans must be within 1..2000")
    source, routing = source_for(ctx, "traces", backend)
    if source is not None:
        return _remote_get_trace(ctx, source, routing, trace_id, max_spans, max_tokens)
    tid = trace_id.strip().lower()
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise ToolInputError(
            f"trace_id {trace_id!r} is not a trace id: give the 32 hex characters from search_traces or a log"
        )
    spans = _load_trace(ctx, tid)
    if not spans:
        raise ToolInputError(
            f"no trace {tid} in the store (it may be older than the retention window or not yet received); "
            "find trace ids with search_traces or search_logs"
        )
    return _render_trace(ctx, tid, spans, max_spans, ctx.budget(max_tokens))


def _remote_get_trace(
    ctx: ToolContext, source: Source, routing: list[str], trace_id: str, max_spans: int, max_tokens: int | None
) -> tuple[GetTraceResult, str]:
    if not isinstance(source, TraceSource):
        raise ToolInputError(f"backend {source.name!r} ({source.kind}) cannot fetch traces")
    tid = trace_id.strip()
    if not _REMOTE_TRACE_ID.fullmatch(tid):
        raise ToolInputError(
            f"trace_id {trace_id[:80]!r} is not a trace id: give the id search_traces or a log record shows "
            "(hex, or a Datadog decimal id)"
        )
    spans = ctx.sources.call(source.get_trace(tid), ctx.sources.timeout_for(source))
    if not spans:
        raise ToolInputError(
            f"backend {source.name} has no trace {tid} (it may be older than its retention); "
            f"find trace ids with search_traces(backend={source.name!r}) or search_logs"
        )
    # A backend can return a span twice (pages that overlap while it indexes): one tree node per span id.
    unique = list({s.span_id: s for s in reversed(spans)}.values())[::-1]
    notes = list(routing)
    if len(unique) < len(spans):
        notes.append(f"{len(spans) - len(unique)} duplicate spans from backend {source.name} dropped")
    return _render_trace(
        ctx, unique[0].trace_id, unique, max_spans, ctx.budget(max_tokens), notes=notes, origin=f"backend {source.name}"
    )


def _load_trace(ctx: ToolContext, tid: str) -> list[Span]:
    d = ctx.dialect
    _, bounds = ctx.db.query(
        f'SELECT {d.epoch_ns(LOOKUP_MIN)}, {d.epoch_ns(LOOKUP_MAX)} FROM otel_traces_trace_id_ts WHERE "TraceId" = ?',
        [tid],
    )
    if not bounds or bounds[0][0] is None:
        return []
    # The exporter's lookup table holds whole seconds (DateTime): the last span may be up to 1 s after End.
    lo, hi = int(bounds[0][0]), int(bounds[0][1]) + 10**9
    where = Where(d).time("Timestamp", lo, hi).add('"TraceId" = ?', tid)
    _, rows = ctx.db.query(
        f'SELECT "SpanId", "ParentSpanId", "ServiceName", "SpanName", "SpanKind", {d.epoch_ns(TS)}, '
        '"Duration", "StatusCode", "StatusMessage", "SpanAttributes", '
        f'{d.epoch_ns_list(col("Events.Timestamp"))}, "Events.Name", "Events.Attributes" '
        f'FROM otel_traces WHERE {where.sql()} ORDER BY "Timestamp", "SpanId"',
        where.params,
    )
    spans = []
    for sid, pid, svc, name, kind, t0, dur, status, msg, attrs, ev_t, ev_n, ev_a in rows:
        events = [
            SpanEvent(int(t), str(n), attributes_dict(a))
            for t, n, a in zip(ev_t or [], ev_n or [], ev_a or [], strict=False)
        ]
        spans.append(
            Span(
                tid,
                str(sid),
                str(pid or ""),
                str(svc),
                str(name),
                str(kind),
                int(t0),
                int(dur),
                str(status),
                str(msg or ""),
                attributes_dict(attrs),
                events,
            )
        )
    return spans


def _render_trace(
    ctx: ToolContext,
    tid: str,
    spans: list[Span],
    max_spans: int,
    budget: int,
    *,
    notes: list[str] | None = None,
    origin: str = "the store",
) -> tuple[GetTraceResult, str]:
    """The compact tree of any trace's spans, from the store or a backend; `notes` lead the answer's notes."""
    redact = redactor_for(ctx.settings)
    tree = build_tree(spans)
    selft = self_times(tree)
    crit = critical_path(tree)
    t0 = min(s.start_ns for s in spans)
    t1 = max(s.end_ns for s in spans)
    main_root = max(tree.roots, key=lambda r: tree.spans[r].duration_ns)

    # Which spans must be shown: critical path and errors, with their ancestors.
    must: set[str] = set()
    for sid, span in tree.spans.items():
        if sid in crit or span.is_error:
            cur: str | None = sid
            while cur and cur in tree.spans and cur not in must:
                must.add(cur)
                p = tree.spans[cur].parent_id
                cur = p if p in tree.spans else None

    nodes: list[SpanNode] = []
    notes = list(notes or [])
    hidden = 0

    def node(span: Span, depth: int, collapsed: str | None = None) -> SpanNode:
        err = None
        if span.is_error:
            exc = next((e for e in span.events if e.name == "exception"), None)
            text = (
                f"{exc.attributes.get('exception.type', '')}: {exc.attributes.get('exception.message', '')}"
                if exc
                else span.status_message or "error"
            )
            err = scrub(text, redact_secrets=redact, max_chars=160)
        return SpanNode(
            span_id=span.span_id,
            parent_id=span.parent_id or None,
            depth=depth,
            service=scrub(span.service, redact_secrets=redact, max_chars=120),
            operation=scrub(span.name, redact_secrets=redact, max_chars=200),
            kind=scrub(span.kind, redact_secrets=redact, max_chars=20),
            start_offset_ms=round((span.start_ns - t0) / 1e6, 3),
            duration_ms=round(span.duration_ns / 1e6, 3),
            self_ms=round(selft.get(span.span_id, 0) / 1e6, 3),
            status=span.status,
            critical=span.span_id in crit,
            critical_ms=round(crit.get(span.span_id, 0) / 1e6, 3),
            error=err,
            collapsed=collapsed,
        )

    def subtree_size(sid: str) -> int:
        n, stack = 0, [sid]
        while stack:
            cur = stack.pop()
            n += 1
            stack.extend(tree.children.get(cur, ()))
        return n

    # Depth-first with sibling collapsing. The stack holds spans to render and ready-made folded lines,
    # so a "N more siblings" line lands right after the siblings that stayed.
    stack: list[tuple[str, int] | SpanNode] = [(r, 0) for r in reversed(tree.roots)]
    while stack:
        item = stack.pop()
        if isinstance(item, SpanNode):
            nodes.append(item)
            continue
        sid, depth = item
        span = tree.spans[sid]
        if len(nodes) >= max_spans and sid not in must:
            hidden += subtree_size(sid)
            continue
        nodes.append(node(span, depth))
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for k in tree.children.get(sid, []):
            groups[(tree.spans[k].service, tree.spans[k].name)].append(k)
        shown_kids: list[str] = []
        folded: list[SpanNode] = []
        for (svc, name), members in groups.items():
            if len(members) <= 3:
                shown_kids.extend(members)
                continue
            # Keep failing calls first, then the ones that cost the trace the most time.
            errs = [m for m in members if tree.spans[m].is_error][:3]
            costly = sorted((m for m in members if m in crit and m not in errs), key=lambda m: -crit[m])
            keep = (errs + costly)[:3] or members[:2]
            keep.sort(key=lambda m: tree.spans[m].start_ns)
            rest = [m for m in members if m not in keep]
            shown_kids.extend(keep)
            durs = [tree.spans[m].duration_ns for m in rest]
            rest_size = sum(subtree_size(m) for m in rest)
            hidden += rest_size
            summary = node(
                tree.spans[rest[0]],
                depth + 1,
                collapsed=f"{len(rest)} more {scrub(svc, redact_secrets=redact, max_chars=120)} "
                f"{scrub(name, redact_secrets=redact, max_chars=120)!r} siblings folded: total "
                f"{format_duration(sum(durs))}, max {format_duration(max(durs))} ({rest_size} spans)",
            )
            summary.critical = any(m in crit for m in rest)
            folded.append(summary)
        stack.extend(reversed(folded))
        stack.extend((k, depth + 1) for k in sorted(shown_kids, key=lambda k: -tree.spans[k].start_ns))

    if hidden:
        notes.append(f"{hidden} of {len(spans)} spans folded (repeated siblings or past max_spans={max_spans})")
    if len(tree.roots) > 1:
        notes.append(f"{len(tree.roots)} root spans: parents missing from {origin} (incomplete trace)")

    errors = []
    for span in spans:
        if not span.is_error:
            continue
        for ev in span.events:
            if ev.name == "exception":
                errors.append(
                    {
                        "span_id": span.span_id,
                        "service": scrub(span.service, redact_secrets=redact, max_chars=120),
                        "type": scrub(ev.attributes.get("exception.type", ""), redact_secrets=redact, max_chars=120),
                        "message": scrub(
                            ev.attributes.get("exception.message", ""), redact_secrets=redact, max_chars=300
                        ),
                        "stacktrace": scrub(
                            ev.attributes.get("exception.stacktrace", ""),
                            redact_secrets=redact,
                            max_chars=600,
                        ),
                    }
                )
    error_spans = sum(1 for s in spans if s.is_error)
    res = GetTraceResult(
        trace_id=tid,
        start=format_ns(t0),
        duration_ms=round((t1 - t0) / 1e6, 3),
        span_count=len(spans),
        services=sorted({scrub(s.service, redact_secrets=redact, max_chars=120) for s in spans}),
        error_count=error_spans,
        shown=len(nodes),
        truncated=hidden > 0,
        spans=nodes,
        errors=errors[:5],
        notes=notes,
    )
    if len(errors) > 5:
        res.notes.append(f"{len(errors)} exception events; 5 shown")
    root = tree.spans[main_root]
    text = _trace_text(res, root, redact)
    # Budget: fold the deepest non-critical lines first, then drop stack traces.
    while estimate_tokens(text) > budget and res.errors and any(e["stacktrace"] for e in res.errors):
        for e in res.errors:
            e["stacktrace"] = ""
        res.notes.append("stack traces omitted to fit the budget; get_error_details has them")
        text = _trace_text(res, root, redact)
    while estimate_tokens(text) > budget and len(res.spans) > 5:
        drop = max(range(len(res.spans)), key=lambda i: (not res.spans[i].critical, res.spans[i].depth, i))
        res.spans.pop(drop)
        res.shown = len(res.spans)
        res.truncated = True
        if not any("to fit the budget" in n for n in res.notes):
            res.notes.append(
                f"spans dropped to fit ~{budget} tokens (deepest non-critical first); "
                "raise max_tokens or query search_traces for detail"
            )
        text = _trace_text(res, root, redact)
    return res, text


def _trace_text(res: GetTraceResult, root: Span, redact: Redactor | None) -> str:
    # Outside the fence: observed text, so scrubbed and redacted.
    root_name = scrub(root.name, redact_secrets=redact, max_chars=120)
    root_service = scrub(root.service, redact_secrets=redact, max_chars=120)
    head = [
        f"trace {res.trace_id}: {format_duration(res.duration_ms * 1e6)} from {res.start}, {res.span_count} spans, "
        f"{len(res.services)} services, {res.error_count} error spans. Root: {root_service} {root_name}.",
        "columns: [*=critical path] service operation kind duration (self time) status",
    ]
    fence = Fence()
    lines = []
    for n in res.spans:
        mark = "*" if n.critical else " "
        indent = "  " * n.depth
        if n.collapsed:
            lines.append(f"{mark}{indent}… {n.collapsed}")
            continue
        err = f" ERROR {n.error}" if n.error else ""
        lines.append(
            f"{mark}{indent}{n.service} {n.operation} {n.kind.lower()} {format_duration(n.duration_ms * 1e6)} "
            f"(self {format_duration(n.self_ms * 1e6)}) @+{n.start_offset_ms:.0f}ms{err}"
        )
    out = [*head, fence.wrap(lines)]
    if res.errors:
        efence = Fence("exceptions")
        elines = []
        for e in res.errors:
            elines.append(f"{e['service']} span {e['span_id']}: {e['type']}: {e['message']}")
            if e["stacktrace"]:
                elines.append(f"  stack: {e['stacktrace']}")
        out.append(efence.wrap(elines))
    out.extend(res.notes)
    out.append(UNTRUSTED_NOTE)
    return "\n".join(out)
