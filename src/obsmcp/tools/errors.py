"""find_errors and get_error_details: errors grouped into issues, like an error tracker does.

A group is (exception type, normalized message, top stack frame) for error spans with an exception event,
(operation, normalized status message) for error spans without one, and the normalized body (plus the
`exception.type` attribute when present) for error logs. Normalizing replaces ids, numbers, addresses and
quoted values with placeholders, so "order 8812 failed" and "order 9123 failed" are one issue.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from pydantic import BaseModel, Field

from obsmcp.redaction import Redactor
from obsmcp.result import UNTRUSTED_NOTE, Fence, ListResult, estimate_tokens, redactor_for, scrub, within_budget
from obsmcp.sources.base import ErrorPage, ErrorQuery, ErrorSource, Source
from obsmcp.store.dialect import Dialect
from obsmcp.store.schema import attributes_dict
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_ns, resolve_range
from obsmcp.tools.context import ToolContext, ToolInputError
from obsmcp.tools.remote import answer_notes, source_for

VERSION_KEY = "'service.version'"
DETAIL_ROWS = 2_000

# Normalization, as RE2 patterns applied in order inside the engine (DuckDB regexp_replace, ClickHouse
# replaceRegexpAll), so grouping runs where the data is instead of shipping every error row to Python.
_NORMALIZERS = [
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<ip>"),
    (r"\b(?:0x)?[0-9a-fA-F]*\d[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b|\b[0-9a-fA-F]{16,}\b", "<hex>"),
    (r"'[^']*'", "'<*>'"),
    (r'"[^"]*"', '"<*>"'),
    (r"\d+(?:\.\d+)?", "<n>"),
]
# Top frame: Python's last `File "...", line N, in f` (most recent call last); Java's and JS's first `at`.
_PY_FRAME = r'File "(?:[^"]*/)?([^"/]+)", line \d+, in ([\w<>.]+)'
_JAVA_FRAME = r"(?m)^\s*at ([\w$.<>/]+)\("
_JS_FRAME = r"(?m)^\s*at (\S+) \("


def _normalized(d: Dialect, expr: str) -> str:
    out = f"trim({d.first_line(f'trim({expr})')})"
    for pattern, repl in _NORMALIZERS:
        out = d.regex_replace_all(out, pattern, repl)
    return d.substr(out, 1, 200)


_NORMALIZERS_PY = [(re.compile(p), r) for p, r in _NORMALIZERS]


def _display_message(raw: str, redactor: Redactor | None) -> str:
    """A group's message as shown: one raw message, redacted first and then normalized like the group key.

    Normalizing first would turn a secret into something no detector knows (`ghp_Z9y8...` -> `ghp_Z<n>y<n>...`)
    while leaving most of its characters visible.
    """
    text = redactor.redact(raw.strip()) if redactor is not None else raw.strip()
    text = text.split("\n", 1)[0].strip()
    for pattern, repl in _NORMALIZERS_PY:
        text = pattern.sub(repl, text)
    return text.strip()[:200]


def _frame(d: Dialect, expr: str) -> str:
    py_last = d.regex_last_match(expr, _PY_FRAME)
    return (
        f"CASE WHEN {expr} = '' THEN '' "
        f"WHEN {d.regex_match(expr, d.literal(_PY_FRAME))} THEN {d.regex_extract(py_last, _PY_FRAME, 1)} "
        f"|| ' in ' || {d.regex_extract(py_last, _PY_FRAME, 2)} "
        f"ELSE coalesce(nullif({d.regex_extract(expr, _JAVA_FRAME, 1)}, ''), "
        f"{d.regex_extract(expr, _JS_FRAME, 1)}) END"
    )


# What makes two occurrences one group: status-only span errors also by service and operation.
_GROUP_KEY = (
    "kind || '|' || CASE WHEN kind = 'span' THEN svc || '|' || op ELSE '' END "
    "|| '|' || etype || '|' || norm || '|' || frame"
)


def _occurrences(ctx: ToolContext, tr: TimeRange, service: str | None) -> tuple[str, list[Any]]:
    """A WITH query whose `keyed` relation has one row per error occurrence and its group id `gid`.

    Occurrences: error spans (kind 'exception' when they carry an exception event, else 'span') and
    error-level log records (kind 'log').
    """
    d = ctx.dialect
    span_where = Where(d).time("Timestamp", tr.start_ns, tr.end_ns).add("\"StatusCode\" = 'Error'")
    log_where = Where(d).log_time(tr.start_ns, tr.end_ns).add('"SeverityNumber" >= 17')
    if service:
        span_where.add('"ServiceName" = ?', service)
        log_where.add('"ServiceName" = ?', service)
    version = d.attr(col("ResourceAttributes"), VERSION_KEY)
    exc = '"Events.Attributes"[i]'
    status = d.attr("attrs", "'http.response.status_code'")
    sql = f"""
WITH span_err AS (
  SELECT "ServiceName" AS svc, "Timestamp" AS ts, "TraceId" AS tid, "SpanName" AS op,
         {d.list_position(col("Events.Name"), "'exception'")} AS i, "Events.Attributes", "StatusMessage" AS smsg,
         "SpanAttributes" AS attrs, {version} AS version
  FROM otel_traces WHERE {span_where.sql()}
), occ AS (
  SELECT CASE WHEN i > 0 THEN 'exception' ELSE 'span' END AS kind, svc, ts, tid, op,
         coalesce(CASE WHEN i > 0 THEN {d.attr(exc, "'exception.type'")} END, '') AS etype,
         CASE WHEN i > 0 THEN coalesce({d.attr(exc, "'exception.message'")}, '')
              WHEN smsg <> '' THEN smsg
              WHEN {status} IS NOT NULL THEN 'HTTP ' || {status}
              ELSE 'error status' END AS msg,
         coalesce(CASE WHEN i > 0 THEN {d.attr(exc, "'exception.stacktrace'")} END, '') AS st,
         attrs, version
  FROM span_err
  UNION ALL
  SELECT 'log', "ServiceName", "Timestamp", "TraceId", '',
         coalesce({d.attr(col("LogAttributes"), "'exception.type'")}, ''), "Body",
         coalesce({d.attr(col("LogAttributes"), "'exception.stacktrace'")}, ''), "LogAttributes", {version}
  FROM otel_logs WHERE {log_where.sql()}
), norms AS (
  -- The regexes run once per distinct message and stack trace, not once per occurrence.
  SELECT msg, {_normalized(d, "msg")} AS norm FROM (SELECT DISTINCT msg FROM occ)
), frames AS (
  SELECT st, {_frame(d, "st")} AS frame FROM (SELECT DISTINCT st FROM occ)
), normed AS (
  SELECT * FROM occ JOIN norms USING (msg) JOIN frames USING (st)
), keyed AS (
  -- Status-only span errors carry little text: their service and operation tell them apart.
  SELECT *, {d.substr(d.md5_hex(_GROUP_KEY), 1, 12)} AS gid
  FROM normed
)"""
    return sql, [*span_where.params, *log_where.params]


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
    backend: str | None = None,
) -> tuple[FindErrorsResult, str]:
    if sort not in ("count", "recent", "new"):
        raise ToolInputError(f"sort={sort!r} is unknown: use count, recent (last seen) or new (first seen)")
    if not 1 <= limit <= 200:
        raise ToolInputError("limit must be within 1..200")
    source, routing = source_for(ctx, "errors", backend)
    if source is not None:
        return _remote_find_errors(ctx, source, routing, service, start, end, sort, limit, max_tokens)
    svc = ctx.resolve(service)
    tr = resolve_range(start, end)
    with_sql, params = _occurrences(ctx, tr, svc)
    d = ctx.dialect
    _, rows = ctx.db.query(
        with_sql
        + f"""
SELECT gid, {d.any_value("kind")}, {d.any_value("etype")}, min(msg), {d.any_value("frame")}, count(*),
       {d.epoch_ns("min(ts)")}, {d.epoch_ns("max(ts)")}, {d.list_distinct_agg("svc", 1000)},
       {d.list_distinct_agg("op", 5, "op <> ''")},
       {d.newest_agg("tid", "ts", 6, "tid <> ''")}
FROM keyed GROUP BY gid""",
        params,
    )
    notes: list[str] = []
    redact = redactor_for(ctx.settings)
    out = [
        ErrorGroup(
            error_id=str(gid),
            kind=str(kind),
            type=str(etype or kind),
            message=scrub(_display_message(str(raw_msg), redact), redact_secrets=redact, max_chars=200),
            top_frame=str(frame or ""),
            count=int(n),
            first_seen=format_ns(int(lo)),
            last_seen=format_ns(int(hi)),
            services=[str(x) for x in services or []],
            operations=[str(x) for x in ops or []],
            sample_trace_ids=list(dict.fromkeys(str(t) for t in tids or []))[:3],
        )
        for gid, kind, etype, raw_msg, frame, n, lo, hi, services, ops, tids in rows
    ]
    occurrences = sum(g.count for g in out)
    # The error id breaks ties: the engine's GROUP BY order is not stable, and answers must not depend on it.
    key = {
        "count": lambda g: (-g.count, g.last_seen, g.error_id),
        "recent": lambda g: (g.last_seen, g.error_id),
        "new": lambda g: (g.first_seen, g.error_id),
    }[sort]
    out.sort(key=key, reverse=sort != "count")
    total = len(out)
    head = f"find_errors: {occurrences} errors in {total} groups over {tr.describe()}, sorted by {sort}."
    return _budgeted_groups(ctx, out[:limit], total, tr, notes, head, max_tokens)


def _budgeted_groups(
    ctx: ToolContext,
    groups: list[ErrorGroup],
    total: int | None,
    tr: TimeRange,
    notes: list[str],
    head: str,
    max_tokens: int | None,
) -> tuple[FindErrorsResult, str]:
    """The leading groups that fit the budget, and the answer's text; `total` None when the source has more
    than it returned and does not say how many."""
    budget = ctx.budget(max_tokens)
    kept = within_budget(groups, lambda g: estimate_tokens(_group_line(g)) + 10, budget, 100)
    if len(kept) < len(groups):
        notes.append(f"cut to {len(kept)} groups to fit ~{budget} tokens; filter by service or raise max_tokens")
    res = FindErrorsResult(
        range=tr.describe(),
        total=total,
        returned=len(kept),
        truncated=total is None or len(kept) < total,
        notes=notes,
        groups=kept,
    )
    if not kept:
        return res, head + "\nno errors: no error spans or error-level logs in range" + "".join("\n" + n for n in notes)
    if kept:
        res.notes.append(UNTRUSTED_NOTE)
    lines = [_group_line(g) for g in kept]
    tail = [n for n in res.notes if n != UNTRUSTED_NOTE]
    if total is not None and len(kept) < total:
        tail.append(f"{total - len(kept)} more groups not shown")
    tail.append("next: get_error_details(error_id) for the stack trace, attributes and timeline")
    return res, "\n".join([head, Fence().wrap(lines), *tail, UNTRUSTED_NOTE])


# -- remote error sources (obsmcp.sources): the same answers, fetched from a backend -------------------------


def _remote_find_errors(
    ctx: ToolContext,
    source: Source,
    routing: list[str],
    service: str | None,
    start: str | None,
    end: str | None,
    sort: str,
    limit: int,
    max_tokens: int | None,
) -> tuple[FindErrorsResult, str]:
    if not isinstance(source, ErrorSource):
        raise ToolInputError(f"backend {source.name!r} ({source.kind}) cannot list errors")
    tr = resolve_range(start, end)
    svc = ctx.sources.resolve(source, service, tr.start_ns, tr.end_ns)
    q = ErrorQuery(tr.start_ns, tr.end_ns, service=svc, sort=sort, limit=limit)
    page: ErrorPage = ctx.sources.call(source.find_errors(q), ctx.sources.timeout_for(source))
    redact = redactor_for(ctx.settings)
    groups = [_scrubbed_group(g, redact) for g in page.groups[:limit]]
    total = None if page.total is None else max(page.total, len(groups))
    counted = f"{total} groups" if total is not None else f"{len(groups)} groups (more match)"
    head = (
        f"find_errors: {sum(g.count for g in groups)} errors in {counted} from backend {source.name} over "
        f"{tr.describe()}, sorted by {sort}."
    )
    return _budgeted_groups(ctx, groups, total, tr, answer_notes(ctx, routing, page), head, max_tokens)


def _scrubbed_group(g: ErrorGroup, redact: Redactor | None) -> ErrorGroup:
    """A backend's issue made safe like a store group: every string in it is observed text."""

    def clean(text: str, chars: int) -> str:
        return scrub(text, redact_secrets=redact, max_chars=chars)

    return ErrorGroup(
        error_id=clean(g.error_id, 80),
        kind=clean(g.kind, 20),
        type=clean(g.type, 120),
        message=clean(g.message, 200),
        top_frame=clean(g.top_frame, 200),
        count=g.count,
        first_seen=g.first_seen,
        last_seen=g.last_seen,
        services=[clean(x, 120) for x in g.services],
        operations=[clean(x, 200) for x in g.operations],
        sample_trace_ids=[clean(x, 64) for x in g.sample_trace_ids],
    )


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
    backend: str | None = None,
) -> tuple[ErrorDetails, str]:
    source, routing = _details_source(ctx, error_id, backend)
    if source is not None:
        return _remote_error_details(ctx, source, routing, error_id, start, end, max_tokens)
    eid = error_id.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{12}", eid):
        raise ToolInputError(f"error_id {error_id!r} is not an error id: use an id from find_errors")
    tr = resolve_range(start or "24h", end)
    with_sql, params = _occurrences(ctx, tr, None)
    d = ctx.dialect
    # Two passes over the group's rows (grouping means normalizing every error message in range, the
    # costly part): every occurrence's time for the count and timeline, then the newest ones in detail.
    _, summary = ctx.db.query(
        with_sql
        + f" SELECT {d.agg_list(d.epoch_ns('ts'))}, {d.list_distinct_agg('svc', 1000)} FROM keyed WHERE gid = ?",
        [*params, eid],
    )
    times = [int(t) for t in (summary[0][0] or [])] if summary else []
    if not times:
        raise ToolInputError(
            f"no error group {eid} in {tr.describe()}: ids come from find_errors over the same range; "
            "pass the same start/end, or a wider start"
        )
    count, services = len(times), [str(x) for x in summary[0][1]]
    t0, t1 = min(times), max(times)
    n_buckets = 12
    width = max(1, (t1 - t0) // n_buckets + 1)
    buckets = Counter((t - t0) // width for t in times)
    timeline = [{"start": format_ns(t0 + b * width), "count": buckets.get(b, 0)} for b in range(n_buckets)]
    _, items = ctx.db.query(
        with_sql + f" SELECT kind, etype, msg, st, svc, {d.epoch_ns('ts')}, tid, attrs, version "
        f"FROM keyed WHERE gid = ? ORDER BY ts DESC LIMIT {DETAIL_ROWS}",
        [*params, eid],
    )
    notes = []
    if count > len(items):
        notes.append(f"attribute counts are over the newest {len(items)} of {count} occurrences")
    redact = redactor_for(ctx.settings)
    kind, etype, message = str(items[0][0]), str(items[0][1]), str(items[0][2])
    attr_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in items:
        attributes = attributes_dict(row[7])
        if row[8]:
            attributes["service.version"] = str(row[8])
        for k, v in attributes.items():
            if k != "exception.stacktrace":
                attr_counts[k][v] += 1
    attrs = {
        k: {scrub(v, redact_secrets=redact, max_chars=80): n for v, n in c.most_common(5)}
        for k, c in sorted(attr_counts.items(), key=lambda kv: -sum(kv[1].values()))[:15]
    }
    samples = [
        {
            "time": format_ns(int(row[5])),
            "service": str(row[4]),
            "trace_id": str(row[6] or ""),
            "message": scrub(str(row[2]), redact_secrets=redact, max_chars=200),
        }
        for row in items[:5]
    ]
    stack = next((str(row[3]) for row in items if row[3]), "")
    res = ErrorDetails(
        error_id=eid,
        kind=kind,
        type=etype or kind,
        message=scrub(message, redact_secrets=redact, max_chars=400),
        count=count,
        first_seen=format_ns(t0),
        last_seen=format_ns(t1),
        services=services,
        stacktrace=scrub(stack, redact_secrets=redact, max_chars=3000).replace(" ⏎ ", "\n"),
        attributes=attrs,
        timeline=timeline,
        samples=samples,
        notes=notes,
    )
    return _fit_details(ctx, res, max_tokens)


_STORE_ERROR_ID = re.compile(r"[0-9a-fA-F]{12}")


def _details_source(ctx: ToolContext, error_id: str, backend: str | None) -> tuple[Source | None, list[str]]:
    """Where an error id lives. Ids name their origin: `sentry:<id>` goes to a Sentry backend and a store id
    (12 hex) to the store, with or without `backend`; other ids follow the configured routing."""
    eid = error_id.strip()
    named = backend is not None and bool(backend.strip())
    kind, sep, _ = eid.partition(":")
    if sep and not named:
        of_kind = [s for s in ctx.sources.all() if s.kind == kind.lower()]
        if not of_kind:
            configured = ", ".join(f"{s.name} ({s.kind})" for s in ctx.sources.all()) or "none"
            raise ToolInputError(
                f"error_id {eid[:80]!r} comes from a {kind} backend and none is configured (configured backends: "
                f"{configured}): use an error_id from find_errors"
            )
        defaults = ctx.sources.for_signal("errors")
        source = next((s for s in defaults if s in of_kind), of_kind[0])
        note = f"answered by backend {source.name} ({source.kind})"
        if len(of_kind) > 1:
            others = ", ".join(s.name for s in of_kind if s is not source)
            note += f"; also {kind} backends: {others} (pass backend= to ask one)"
        return source, [note]
    if not named and _STORE_ERROR_ID.fullmatch(eid):
        return None, []
    return source_for(ctx, "errors", backend)


def _remote_error_details(
    ctx: ToolContext,
    source: Source,
    routing: list[str],
    error_id: str,
    start: str | None,
    end: str | None,
    max_tokens: int | None,
) -> tuple[ErrorDetails, str]:
    if not isinstance(source, ErrorSource):
        raise ToolInputError(f"backend {source.name!r} ({source.kind}) cannot read errors")
    tr = resolve_range(start or "24h", end)
    raw = ctx.sources.call(
        source.get_error_details(error_id.strip(), tr.start_ns, tr.end_ns), ctx.sources.timeout_for(source)
    )
    redact = redactor_for(ctx.settings)

    def clean(text: str, chars: int) -> str:
        return scrub(text, redact_secrets=redact, max_chars=chars)

    res = ErrorDetails(
        error_id=clean(raw.error_id, 80),
        kind=clean(raw.kind, 20),
        type=clean(raw.type, 120),
        message=clean(raw.message, 400),
        count=raw.count,
        first_seen=raw.first_seen,
        last_seen=raw.last_seen,
        services=[clean(x, 120) for x in raw.services],
        # One line per frame, as the store path shows it: scrub flattens line breaks, which come back here.
        stacktrace=clean(raw.stacktrace, 3000).replace(" ⏎ ", "\n"),
        attributes={clean(k, 80): {clean(v, 80): n for v, n in values.items()} for k, values in raw.attributes.items()},
        timeline=raw.timeline,
        samples=[{clean(k, 40): clean(str(v), 200) for k, v in sample.items()} for sample in raw.samples],
        notes=[*routing, *(clean(n, 600) for n in raw.notes)],
    )
    return _fit_details(ctx, res, max_tokens, origin=f"backend {source.name}")


def _fit_details(
    ctx: ToolContext, res: ErrorDetails, max_tokens: int | None, origin: str | None = None
) -> tuple[ErrorDetails, str]:
    text = _details_text(res, origin)
    budget = ctx.budget(max_tokens)
    if estimate_tokens(text) > budget:
        res.stacktrace = res.stacktrace[: max(200, len(res.stacktrace) - (estimate_tokens(text) - budget) * 4)]
        res.notes.append("stack trace shortened to fit the budget; raise max_tokens for all of it")
        text = _details_text(res, origin)
    return res, text


def _details_text(r: ErrorDetails, origin: str | None = None) -> str:
    fence = Fence()
    body = [f"{r.type}: {r.message}"]
    if r.stacktrace:
        body += ["stack trace:", *r.stacktrace.splitlines()]
    body.append("attributes (top values):")
    for k, vals in r.attributes.items():
        body.append(f"  {k}: " + ", ".join(f"{v} ({n})" for v, n in vals.items()))
    body.append("samples:")
    body += [
        f"  {s.get('time', '')} {s.get('service', '')} trace={s.get('trace_id', '')} {s.get('message', '')}"
        for s in r.samples
    ]
    timeline = " ".join(str(b["count"]) for b in r.timeline)
    span = "as the backend counts them" if origin else "from first to last seen"
    return "\n".join(
        [
            f"error {r.error_id} ({r.kind}): {r.count} occurrences, {r.first_seen} .. {r.last_seen}, "
            f"services {', '.join(r.services)}" + (f", from {origin}" if origin else ""),
            f"timeline ({len(r.timeline)} buckets {span}): {timeline}",
            fence.wrap(body),
            *r.notes,
            UNTRUSTED_NOTE,
        ]
    )
