"""search_logs: newest-first log search with severity counts over the whole match."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from obsmcp.result import (
    UNTRUSTED_NOTE,
    Fence,
    ListResult,
    Redactor,
    encode_cursor,
    estimate_tokens,
    fingerprint,
    page_start,
    redactor_for,
    scrub,
    within_budget,
)
from obsmcp.sources.base import LogPage, LogQuery, LogSource, Source
from obsmcp.store.database import QUERY_ERRORS
from obsmcp.store.schema import attributes_dict
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_ns
from obsmcp.tools.context import ToolContext, ToolInputError, severity_floor
from obsmcp.tools.remote import (
    answer_notes,
    encode_remote_cursor,
    next_page,
    remote_cursor_backend,
    remote_page_start,
    source_for,
)

BODY_CHARS = 300
SAMPLE_ROWS = 500_000
TS = col("Timestamp")
MAX_LIMIT = 500


class LogRecord(BaseModel):
    time: str
    severity: str
    service: str
    body: str = Field(description="untrusted text from the observed system")
    trace_id: str | None = None
    span_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class SearchLogsResult(ListResult):
    range: str
    counts_estimated: bool = Field(False, description="total/by_severity come from a sample (see notes)")
    by_severity: dict[str, int] = Field(default_factory=dict, description="counts over the whole match")
    logs: list[LogRecord] = Field(default_factory=list)


def search_logs(
    ctx: ToolContext,
    query: str | None = None,
    service: str | None = None,
    min_severity: str | None = None,
    attributes: dict[str, str] | None = None,
    trace_id: str | None = None,
    regex: bool = False,
    start: str | None = None,
    end: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    max_tokens: int | None = None,
    exact_counts: bool = False,
    backend: str | None = None,
) -> tuple[SearchLogsResult, str]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ToolInputError(f"limit={limit} is out of range: use 1..{MAX_LIMIT}, and next_cursor for more")
    source, routing = source_for(ctx, "logs", backend)
    if source is not None:
        return _remote_search_logs(
            ctx, source, routing, query, service, min_severity, attributes, trace_id, regex, start, end, limit,
            cursor, max_tokens,
        )  # fmt: skip
    if (came_from := remote_cursor_backend(cursor)) is not None:
        raise ToolInputError(f"the cursor came from backend {came_from}: pass backend={came_from!r} with it")
    svc = ctx.resolve(service)
    floor = severity_floor(min_severity)
    fp = fingerprint("search_logs", query, svc, floor, attributes, trace_id, regex, start, end, limit)
    offset, tr = page_start(cursor, fp, start, end)

    where = Where(ctx.dialect).log_time(tr.start_ns, tr.end_ns)
    if svc:
        where.add('"ServiceName" = ?', svc)
    if floor is not None:
        where.add('"SeverityNumber" >= ?', floor)
    if trace_id:
        where.add('"TraceId" = ?', trace_id.strip().lower())
    for k, v in (attributes or {}).items():
        where.attribute(("LogAttributes", "ResourceAttributes"), k, str(v))
    if query:
        if regex:
            _check_regex(ctx, query)
            where.add(ctx.dialect.regex_match('"Body"'), query)
        else:
            where.contains("Body", query)

    _, rows = ctx.db.query(
        f'SELECT {ctx.dialect.epoch_ns(TS)}, "SeverityText", "ServiceName", '
        '"Body", "TraceId", "SpanId", "LogAttributes" '
        # Ties on the timestamp are broken by content, so pages never repeat or skip a record and every
        # engine returns the same order.
        f'FROM otel_logs WHERE {where.sql()} ORDER BY "Timestamp" DESC, "ServiceName", "Body" LIMIT ? OFFSET ?',
        [*where.params, limit + 1, offset],
    )
    has_more_rows = len(rows) > limit
    rows = rows[:limit]
    if offset == 0 and not has_more_rows:
        # The page holds every match: count it directly, no second scan.
        by_severity: dict[str, int] = {}
        for r in rows:
            key = str(r[1] or "UNSET")
            by_severity[key] = by_severity.get(key, 0) + 1
        by_severity = dict(sorted(by_severity.items(), key=lambda kv: -kv[1]))
        total, estimate_note = len(rows), None
    else:
        by_severity, total, estimate_note = _severity_counts(ctx, where, tr, exact_counts)
        # A sample can miss rare matches; what the pages have shown is a floor.
        total = max(total, offset + len(rows) + (1 if has_more_rows else 0))
    redact = redactor_for(ctx.settings)
    records = [_record(r, redact) for r in rows]

    notes: list[str] = []
    fitted = _fit(records, ctx.budget(max_tokens), notes)

    next_offset = offset + len(fitted)
    more = has_more_rows or len(fitted) < len(records)
    if estimate_note:
        notes.append(estimate_note)
    result = SearchLogsResult(
        range=tr.describe(),
        counts_estimated=estimate_note is not None,
        total=total,
        returned=len(fitted),
        truncated=more,
        next_cursor=encode_cursor(next_offset, tr.start_ns, tr.end_ns, fp) if more else None,
        notes=notes,
        by_severity=by_severity,
        logs=fitted,
    )
    if fitted:
        result.notes.append(UNTRUSTED_NOTE)
    return result, _render(result, offset)


def _fit(records: list[LogRecord], budget: int, notes: list[str]) -> list[LogRecord]:
    """The leading records that fit the budget; attributes go before rows do. Says what was cut in `notes`."""
    header_tokens = 120
    fitted = within_budget(records, lambda r: _cost(r, with_attributes=True), budget, header_tokens)
    if len(fitted) < len(records):
        # Degrade detail before rows: without attributes, more records fit.
        bare = within_budget(records, lambda r: _cost(r, with_attributes=False), budget, header_tokens)
        if len(bare) > len(fitted) and any(r.attributes for r in bare):
            for rec in bare:
                rec.attributes = {}
            fitted = bare
            notes.append("attributes omitted so more records fit; filter by trace_id or attributes for detail")
    if len(fitted) < len(records):
        notes.append(
            f"answer cut to {len(fitted)} of the {len(records)} requested rows to stay within "
            f"~{budget} tokens; use next_cursor, a narrower query, or max_tokens for more"
        )
    return fitted


# -- remote log sources (obsmcp.sources): the same answer, fetched from a backend ---------------------------


def _remote_search_logs(
    ctx: ToolContext,
    source: Source,
    routing: list[str],
    query: str | None,
    service: str | None,
    min_severity: str | None,
    attributes: dict[str, str] | None,
    trace_id: str | None,
    regex: bool,
    start: str | None,
    end: str | None,
    limit: int,
    cursor: str | None,
    max_tokens: int | None,
) -> tuple[SearchLogsResult, str]:
    if not isinstance(source, LogSource):
        raise ToolInputError(f"backend {source.name!r} ({source.kind}) cannot search logs")
    floor = severity_floor(min_severity)
    fp = fingerprint("search_logs", source.name, query, service, floor, attributes, trace_id, regex, start, end, limit)
    here = remote_page_start(source.name, cursor, fp, start, end)
    tr = here.range
    q = LogQuery(
        tr.start_ns,
        tr.end_ns,
        service=ctx.sources.resolve(source, service, tr.start_ns, tr.end_ns),
        text=query if query else None,
        regex=regex,
        min_severity=floor,
        trace_id=trace_id.strip() if trace_id and trace_id.strip() else None,
        attributes={str(k): str(v) for k, v in (attributes or {}).items()},
        limit=limit,
        cursor=here.token,
    )
    page: LogPage = ctx.sources.call(source.search_logs(q), ctx.sources.timeout_for(source))
    redact = redactor_for(ctx.settings)
    records = [_scrubbed(r, redact) for r in page.records[here.skip :]]
    notes = answer_notes(ctx, routing, page)
    fitted = _fit(records, ctx.budget(max_tokens), notes)
    by_severity = page.by_severity
    if not by_severity and records:
        # The backend does not count the whole match (Datadog's search does not): count what this page holds.
        for rec in records:
            by_severity[rec.severity] = by_severity.get(rec.severity, 0) + 1
        notes.append(f"by_severity counts this page only: backend {source.name} does not count the whole match")
    after = next_page(here, len(fitted), len(records), page.next_cursor)
    total = page.total
    if total is not None:
        # A count the backend makes separately can trail its search; what the pages have shown is a floor.
        total = max(total, here.offset + len(records) + (1 if page.next_cursor else 0))
    result = SearchLogsResult(
        range=tr.describe(),
        counts_estimated=page.total_estimated,
        total=total,
        returned=len(fitted),
        truncated=after is not None,
        next_cursor=encode_remote_cursor(source.name, after, fp) if after else None,
        notes=notes,
        by_severity=dict(sorted(by_severity.items(), key=lambda kv: -kv[1])),
        logs=fitted,
    )
    if fitted:
        result.notes.append(UNTRUSTED_NOTE)
    return result, _render(result, here.offset, origin=f"backend {source.name}")


def _scrubbed(rec: LogRecord, redact: Redactor | None) -> LogRecord:
    """A remote record made safe like a store row (`_record`): every string is observed text."""
    return LogRecord(
        time=rec.time,
        severity=scrub(rec.severity, redact_secrets=redact, max_chars=20),
        service=scrub(rec.service, redact_secrets=redact, max_chars=120),
        body=scrub(rec.body, redact_secrets=redact, max_chars=BODY_CHARS),
        trace_id=scrub(rec.trace_id, redact_secrets=redact, max_chars=64) if rec.trace_id else None,
        span_id=scrub(rec.span_id, redact_secrets=redact, max_chars=64) if rec.span_id else None,
        attributes={
            scrub(k, redact_secrets=redact, max_chars=80): scrub(v, redact_secrets=redact, max_chars=120)
            for k, v in rec.attributes.items()
        },
    )


def _severity_counts(
    ctx: ToolContext, where: Where, tr: TimeRange, exact: bool
) -> tuple[dict[str, int], int, str | None]:
    """Counts by severity over the whole match: exact, or estimated from a sample when the range is large.

    Counting a text match means reading every body in range (about 50-100 ns per row on 2 cores). Above
    `exact_count_max_rows` rows in range, a system sample that reads about SAMPLE_ROWS rows estimates the
    counts instead, and the answer says so; `exact_counts=true` forces the full scan.
    """
    cap = ctx.settings.exact_count_max_rows
    base = Where(ctx.dialect).log_time(tr.start_ns, tr.end_ns)
    _, n_rows = ctx.db.query(f"SELECT count(*) FROM otel_logs WHERE {base.sql()}", base.params)
    in_range = int(n_rows[0][0]) if n_rows else 0
    sample = ""
    pct = 100.0
    if not exact and in_range > cap:
        want = max(0.1, round(100.0 * SAMPLE_ROWS / in_range, 1))
        # None where the engine cannot sample the table (ClickHouse without SAMPLE BY): exact counts there.
        # Below SAMPLE_ROWS in range (exact_count_max_rows set lower) the "sample" would be everything.
        clause = ctx.dialect.table_sample(want) if want < 100 else None
        if clause:
            sample, pct = clause, want
    _, counts = ctx.db.query(
        f'SELECT "SeverityText", count(*) FROM otel_logs{sample} WHERE {where.sql()} GROUP BY 1 ORDER BY 2 DESC',
        where.params,
    )
    scale = 100.0 / pct
    by_severity = {str(sev or "UNSET"): round(int(n) * scale) for sev, n in counts}
    total = sum(by_severity.values())
    if not sample:
        return by_severity, total, None
    note = (
        f"total and by_severity are estimates from a {pct:g}% sample of the {in_range:,} records in range "
        "(pass exact_counts=true for exact counts, slower; or narrow the range)"
    )
    return by_severity, total, note


def _check_regex(ctx: ToolContext, pattern: str) -> None:
    try:
        ctx.db.query(f"SELECT {ctx.dialect.regex_match(repr(''))}", [pattern])
    except QUERY_ERRORS as e:
        msg = str(e).split("\n")[0]
        raise ToolInputError(
            f"regex {pattern!r} is invalid ({msg}); fix it (RE2 syntax) or search with regex=false"
        ) from None


def _record(row: tuple[Any, ...], redact: Redactor | None) -> LogRecord:
    ts, sev, svc, body, trace_id, span_id, attrs = row
    return LogRecord(
        time=format_ns(int(ts)),
        severity=str(sev or "UNSET"),
        service=str(svc),
        body=scrub(str(body), redact_secrets=redact, max_chars=BODY_CHARS),
        trace_id=trace_id or None,
        span_id=span_id or None,
        attributes={
            str(k): scrub(str(v), redact_secrets=redact, max_chars=120) for k, v in attributes_dict(attrs).items()
        },
    )


def _cost(rec: LogRecord, *, with_attributes: bool) -> int:
    attrs = sum(len(k) + len(v) + 3 for k, v in rec.attributes.items()) if with_attributes else 0
    return estimate_tokens(_line(rec)) + (attrs + 3) // 4 + 2


def _line(rec: LogRecord) -> str:
    trace = f" trace={rec.trace_id}" if rec.trace_id else ""
    return f"{rec.time} {rec.severity:<5} {rec.service}{trace} | {rec.body}"


def _render(res: SearchLogsResult, offset: int, origin: str | None = None) -> str:
    sev = ", ".join(f"{k} {v}" for k, v in res.by_severity.items()) or "none"
    matching = "matching log records" if res.total is not None else "log records (the backend gave no total)"
    head = [
        f"search_logs: {'' if res.total is None else f'{res.total} '}{matching}"
        + (f" from {origin}" if origin else "")
        + f" in {res.range}; showing {offset + 1 if res.returned else 0}-{offset + res.returned}, newest first.",
        f"by severity (whole match): {sev}" if res.total is not None else f"by severity: {sev}",
    ]
    if not res.logs:
        head.append("no log records match: widen the time range (start='6h') or loosen the filters")
        return "\n".join(head + res.notes)
    fence = Fence()
    lines = []
    for rec in res.logs:
        line = _line(rec)
        if rec.attributes:
            line += " {" + ", ".join(f"{k}={v}" for k, v in rec.attributes.items()) + "}"
        lines.append(line)
    out = [*head, fence.wrap(lines)]
    if res.truncated:
        out.append(f"more: pass cursor={res.next_cursor!r} for the next page")
    out.extend(n for n in res.notes if n != UNTRUSTED_NOTE)
    out.append(UNTRUSTED_NOTE)
    return "\n".join(out)
