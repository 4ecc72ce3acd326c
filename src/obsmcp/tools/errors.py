"""find_errors and get_error_details: errors grouped into issues, like an error tracker does.

A group is (exception type, normalized message, top stack frame) for error spans with an exception event,
(operation, normalized status message) for error spans without one, and the normalized body (plus the
`exception.type` attribute when present) for error logs. Normalizing replaces ids, numbers, addresses and
quoted values with placeholders, so "order 8812 failed" and "order 9123 failed" are one issue.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from obsmcp.result import UNTRUSTED_NOTE, Fence, ListResult, estimate_tokens, scrub, within_budget
from obsmcp.store.schema import attributes_dict
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_ns, resolve_range
from obsmcp.tools.context import ToolContext, ToolInputError

SCAN_CAP = 100_000
VERSION_KEY = "'service.version'"
_NORMALIZERS = [
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b(?:0x)?[0-9a-fA-F]*\d[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b|\b[0-9a-fA-F]{16,}\b"), "<hex>"),
    (re.compile(r"'[^']*'"), "'<*>'"),
    (re.compile(r'"[^"]*"'), '"<*>"'),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]
_PY_FRAME = re.compile(r'File "([^"]+)", line \d+, in ([\w<>.]+)')
_JAVA_FRAME = re.compile(r"^\s*at ([\w$.<>/]+)\(([^)]*)\)", re.M)
_GO_JS_FRAME = re.compile(r"^\s*at (\S+) \(", re.M)


def normalize_message(text: str) -> str:
    s = text.strip().splitlines()[0] if text.strip() else ""
    for pattern, repl in _NORMALIZERS:
        s = pattern.sub(repl, s)
    return s[:200]


def top_frame(stacktrace: str) -> str:
    """The frame where the exception was raised: Python's last frame, Java's/JS's first."""
    py = _PY_FRAME.findall(stacktrace)
    if py:
        path, func = py[-1]
        return f"{path.rsplit('/', 1)[-1]} in {func}"
    m = _JAVA_FRAME.search(stacktrace) or _GO_JS_FRAME.search(stacktrace)
    return m.group(1) if m else ""


@dataclass
class Occurrence:
    kind: str  # "exception" | "span" | "log"
    service: str
    time_ns: int
    trace_id: str
    error_type: str
    message: str
    stacktrace: str
    frame: str
    operation: str
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def group_key(self) -> str:
        if self.kind == "exception":
            key = f"exception|{self.error_type}|{normalize_message(self.message)}|{self.frame}"
        elif self.kind == "span":
            # Status-only errors carry little text: the service and operation are what tell them apart.
            key = f"span|{self.service}|{self.operation}|{normalize_message(self.message)}"
        else:
            key = f"log|{self.error_type}|{normalize_message(self.message)}"
        return hashlib.sha1(key.encode()).hexdigest()[:12]


def _scan(ctx: ToolContext, tr: TimeRange, service: str | None) -> tuple[list[Occurrence], list[str]]:
    d = ctx.dialect
    notes: list[str] = []
    span_where = Where(d).time("Timestamp", tr.start_ns, tr.end_ns).add("\"StatusCode\" = 'Error'")
    log_where = Where(d).time("Timestamp", tr.start_ns, tr.end_ns).add('"SeverityNumber" >= 17')
    if service:
        span_where.add('"ServiceName" = ?', service)
        log_where.add('"ServiceName" = ?', service)
    _, spans = ctx.db.query(
        f'SELECT "ServiceName", {d.epoch_ns(col("Timestamp"))}, "TraceId", "SpanName", '
        '"StatusMessage", "Events.Name", "Events.Attributes", "SpanAttributes", '
        f"{d.attr(col('ResourceAttributes'), VERSION_KEY)} "
        f'FROM otel_traces WHERE {span_where.sql()} ORDER BY "Timestamp" DESC LIMIT {SCAN_CAP}',
        span_where.params,
    )
    _, logs = ctx.db.query(
        f'SELECT "ServiceName", {d.epoch_ns(col("Timestamp"))}, "TraceId", "Body", '
        f'"LogAttributes", {d.attr(col("ResourceAttributes"), VERSION_KEY)} '
        f'FROM otel_logs WHERE {log_where.sql()} ORDER BY "Timestamp" DESC LIMIT {SCAN_CAP}',
        log_where.params,
    )
    if len(spans) >= SCAN_CAP or len(logs) >= SCAN_CAP:
        notes.append(
            f"more than {SCAN_CAP} errors in range: grouped the newest {SCAN_CAP} of each signal; "
            "counts are lower bounds — narrow the range for exact counts"
        )
    out: list[Occurrence] = []
    for svc, t, tid, op, smsg, ev_names, ev_attrs, attrs, version in spans:
        a = attributes_dict(attrs)
        if version:
            a["service.version"] = str(version)
        exc = None
        for n, ea in zip(ev_names or [], ev_attrs or [], strict=False):
            if n == "exception":
                exc = attributes_dict(ea)
                break
        if exc is not None:
            st = str(exc.get("exception.stacktrace", ""))
            out.append(
                Occurrence(
                    "exception",
                    str(svc),
                    int(t),
                    str(tid),
                    str(exc.get("exception.type", "")),
                    str(exc.get("exception.message", "")),
                    st,
                    top_frame(st),
                    str(op),
                    a,
                )
            )
        else:
            http_status = a.get("http.response.status_code") or a.get("http.status_code")
            message = str(smsg) if smsg else (f"HTTP {http_status}" if http_status else "error status")
            out.append(Occurrence("span", str(svc), int(t), str(tid), "", message, "", "", str(op), a))
    for svc, t, tid, body, attrs, version in logs:
        a = attributes_dict(attrs)
        if version:
            a["service.version"] = str(version)
        st = a.get("exception.stacktrace", "")
        out.append(
            Occurrence(
                "log",
                str(svc),
                int(t),
                str(tid or ""),
                a.get("exception.type", ""),
                str(body),
                st,
                top_frame(st) if st else "",
                "",
                a,
            )
        )
    return out, notes


class ErrorGroup(BaseModel):
    error_id: str
    kind: str = Field(description="exception (span event), span (error status), or log (error-level record)")
    type: str
    message: str = Field(description="normalized; untrusted text from the observed system")
    top_frame: str
    count: int
    first_seen: str
    last_seen: str
    services: list[str]
    operations: list[str]
    sample_trace_ids: list[str]


class FindErrorsResult(ListResult):
    range: str
    groups: list[ErrorGroup] = Field(default_factory=list)


def find_errors(
    ctx: ToolContext,
    service: str | None = None,
    start: str | None = None,
    end: str | None = None,
    sort: str = "count",
    limit: int = 20,
    max_tokens: int | None = None,
) -> tuple[FindErrorsResult, str]:
    if sort not in ("count", "recent", "new"):
        raise ToolInputError(f"sort={sort!r} is unknown: use count, recent (last seen) or new (first seen)")
    if not 1 <= limit <= 200:
        raise ToolInputError("limit must be within 1..200")
    svc = ctx.resolve(service)
    tr = resolve_range(start, end)
    occ, notes = _scan(ctx, tr, svc)
    groups: dict[str, list[Occurrence]] = defaultdict(list)
    for o in occ:
        groups[o.group_key].append(o)
    redact = ctx.settings.redact_secrets
    out = []
    for gid, items in groups.items():
        first = items[0]
        traces = list(dict.fromkeys(o.trace_id for o in items if o.trace_id))[:3]
        out.append(
            ErrorGroup(
                error_id=gid,
                kind=first.kind,
                type=first.error_type or first.kind,
                message=scrub(normalize_message(first.message), redact_secrets=redact, max_chars=200),
                top_frame=first.frame,
                count=len(items),
                first_seen=format_ns(min(o.time_ns for o in items)),
                last_seen=format_ns(max(o.time_ns for o in items)),
                services=sorted({o.service for o in items}),
                operations=sorted({o.operation for o in items if o.operation})[:5],
                sample_trace_ids=traces,
            )
        )
    key = {
        "count": lambda g: (-g.count, g.last_seen),
        "recent": lambda g: g.last_seen,
        "new": lambda g: g.first_seen,
    }[sort]
    out.sort(key=key, reverse=sort != "count")
    total = len(out)
    budget = ctx.budget(max_tokens)
    kept = within_budget(out[:limit], lambda g: estimate_tokens(_group_line(g)) + 10, budget, 100)
    if len(kept) < min(limit, total):
        notes.append(f"cut to {len(kept)} groups to fit ~{budget} tokens; filter by service or raise max_tokens")
    res = FindErrorsResult(
        range=tr.describe(),
        total=total,
        returned=len(kept),
        truncated=len(kept) < total,
        notes=notes,
        groups=kept,
    )
    head = f"find_errors: {len(occ)} errors in {total} groups over {tr.describe()}, sorted by {sort}."
    if not kept:
        return res, head + "\nno errors: no error spans or error-level logs in range" + "".join("\n" + n for n in notes)
    if kept:
        res.notes.append(UNTRUSTED_NOTE)
    lines = [_group_line(g) for g in kept]
    tail = [n for n in res.notes if n != UNTRUSTED_NOTE]
    if len(kept) < total:
        tail.append(f"{total - len(kept)} more groups not shown")
    tail.append("next: get_error_details(error_id) for the stack trace, attributes and timeline")
    return res, "\n".join([head, Fence().wrap(lines), *tail, UNTRUSTED_NOTE])


def _group_line(g: ErrorGroup) -> str:
    frame = f" at {g.top_frame}" if g.top_frame else ""
    ops = f" ops={','.join(g.operations[:2])}" if g.operations else ""
    return (
        f"[{g.error_id}] {g.count}x {g.type}: {g.message}{frame} | services={','.join(g.services)}{ops} "
        f"| {g.first_seen}..{g.last_seen} | traces={','.join(g.sample_trace_ids[:2])}"
    )


class ErrorDetails(BaseModel):
    error_id: str
    kind: str
    type: str
    message: str
    count: int
    first_seen: str
    last_seen: str
    services: list[str]
    stacktrace: str
    attributes: dict[str, dict[str, int]] = Field(description="attribute -> top values with counts")
    timeline: list[dict[str, Any]] = Field(description="occurrences per time bucket")
    samples: list[dict[str, str]]
    notes: list[str] = Field(default_factory=list)


def get_error_details(
    ctx: ToolContext,
    error_id: str,
    start: str | None = None,
    end: str | None = None,
    max_tokens: int | None = None,
) -> tuple[ErrorDetails, str]:
    eid = error_id.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{12}", eid):
        raise ToolInputError(f"error_id {error_id!r} is not an error id: use an id from find_errors")
    tr = resolve_range(start or "24h", end)
    occ, notes = _scan(ctx, tr, None)
    items = [o for o in occ if o.group_key == eid]
    if not items:
        raise ToolInputError(
            f"no error group {eid} in {tr.describe()}: ids come from find_errors over the same range; "
            "pass the same start/end, or a wider start"
        )
    redact = ctx.settings.redact_secrets
    first = items[0]
    attr_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for o in items:
        for k, v in o.attributes.items():
            if k in ("exception.stacktrace",):
                continue
            attr_counts[k][v] += 1
    attrs = {
        k: {scrub(v, redact_secrets=redact, max_chars=80): n for v, n in c.most_common(5)}
        for k, c in sorted(attr_counts.items(), key=lambda kv: -sum(kv[1].values()))[:15]
    }
    t0, t1 = min(o.time_ns for o in items), max(o.time_ns for o in items)
    n_buckets = 12
    width = max(1, (t1 - t0) // n_buckets + 1)
    buckets = Counter((o.time_ns - t0) // width for o in items)
    timeline = [{"start": format_ns(t0 + b * width), "count": buckets.get(b, 0)} for b in range(n_buckets)]
    samples = [
        {
            "time": format_ns(o.time_ns),
            "service": o.service,
            "trace_id": o.trace_id,
            "message": scrub(o.message, redact_secrets=redact, max_chars=200),
        }
        for o in items[:5]
    ]
    stack = next((o.stacktrace for o in items if o.stacktrace), "")
    res = ErrorDetails(
        error_id=eid,
        kind=first.kind,
        type=first.error_type or first.kind,
        message=scrub(first.message, redact_secrets=redact, max_chars=400),
        count=len(items),
        first_seen=format_ns(t0),
        last_seen=format_ns(t1),
        services=sorted({o.service for o in items}),
        stacktrace=scrub(stack, redact_secrets=redact, max_chars=3000).replace(" ⏎ ", "\n"),
        attributes=attrs,
        timeline=timeline,
        samples=samples,
        notes=notes,
    )
    text = _details_text(res)
    budget = ctx.budget(max_tokens)
    if estimate_tokens(text) > budget:
        res.stacktrace = res.stacktrace[: max(200, len(res.stacktrace) - (estimate_tokens(text) - budget) * 4)]
        res.notes.append("stack trace shortened to fit the budget; raise max_tokens for all of it")
        text = _details_text(res)
    return res, text


def _details_text(r: ErrorDetails) -> str:
    fence = Fence()
    body = [f"{r.type}: {r.message}"]
    if r.stacktrace:
        body += ["stack trace:", *r.stacktrace.splitlines()]
    body.append("attributes (top values):")
    for k, vals in r.attributes.items():
        body.append(f"  {k}: " + ", ".join(f"{v} ({n})" for v, n in vals.items()))
    body.append("samples:")
    body += [f"  {s['time']} {s['service']} trace={s['trace_id']} {s['message']}" for s in r.samples]
    timeline = " ".join(str(b["count"]) for b in r.timeline)
    return "\n".join(
        [
            f"error {r.error_id} ({r.kind}): {r.count} occurrences, {r.first_seen} .. {r.last_seen}, "
            f"services {', '.join(r.services)}",
            f"timeline ({len(r.timeline)} buckets from first to last seen): {timeline}",
            fence.wrap(body),
            *r.notes,
            UNTRUSTED_NOTE,
        ]
    )
